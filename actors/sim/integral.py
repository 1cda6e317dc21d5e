"""Time-weighted tallies of piecewise-constant signals, for the scores in a session summary.

A signal (host free pages, a guest's free pages, pages the balloon saved) changes at events;
between two events it is constant. ``Integral`` is told each new value with its time and keeps
the area under the signal, its minimum, and how long it stayed below a threshold -- exact, with
no sampling task and O(1) work per event.
"""

from __future__ import annotations

import math


class Integral:
    """∫ value dt since ``start``, the minimum value, and the time spent below ``threshold``."""

    __slots__ = ("area", "below", "minimum", "start", "t", "threshold", "value")

    def __init__(self, start: float, value: float, threshold: float = -math.inf) -> None:
        self.start = self.t = start
        self.value = value
        self.threshold = threshold
        self.area = 0.0
        self.below = 0.0
        self.minimum = value

    def set(self, t: float, value: float) -> None:
        """The signal takes ``value`` at time ``t`` (t never goes back)."""
        dt = t - self.t
        if dt > 0:
            self.area += self.value * dt
            if self.value < self.threshold:
                self.below += dt
            self.t = t
        self.value = value
        if value < self.minimum:
            self.minimum = value

    def mean(self, end: float) -> float:
        """The time-weighted mean from ``start`` to ``end`` (the current value if no time)."""
        span = end - self.start
        if span <= 0:
            return float(self.value)
        return (self.area + self.value * max(0.0, end - self.t)) / span

    def time_below(self, end: float) -> float:
        """Seconds spent below the threshold, up to ``end``."""
        tail = max(0.0, end - self.t) if self.value < self.threshold else 0.0
        return self.below + tail
