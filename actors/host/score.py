"""How well a policy did for one guest, tallied by the host as events happen.

What a policy author asks of a run: how much memory the balloon withheld from the guest
(``ballooned``, time-weighted), how much of it the host really got back (``saved``: pages the
guest had touched that the host no longer backs -- ballooning memory the guest never touched
caps the guest but frees nothing), how long
the guest was kept below its floor, how often its target moved (changes, total movement, and
oscillation: reversals of direction), how long the guest took to reach each target, and how
often it stalled. The guest's own suffering (allocation failures, THP fallbacks, time below
its low watermark) is counted in the guest's summary, where it happens.
"""

from __future__ import annotations

import statistics
from typing import Any

from actors.host.view import MIB
from actors.sim.integral import Integral

#: A target counts as reached when actual is this close (4 KiB pages): the largest guest page
#: (64 KiB), since a driver moves the balloon in whole guest pages.
SETTLED = 16


class GuestScore:
    """Per-guest outcome counters, updated by the balloon device."""

    def __init__(self, ram_pages: int, floor_pages: int) -> None:
        self.ram_pages = ram_pages
        self.floor_pages = floor_pages
        self.saved = Integral(0.0, 0)
        self.ballooned = Integral(0.0, 0)
        self.memory = Integral(0.0, ram_pages, threshold=floor_pages)  # ram - actual
        self.target_changes = 0
        self.churn_pages = 0
        self.reversals = 0
        self._direction = 0
        self._pending: float | None = None  # when the unreached target was set
        self._target = 0
        self.settle_times: list[float] = []
        self.unreached = 0
        self.stalls = 0

    def target_set(self, t: float, previous: int, target: int, actual: int) -> None:
        """The host wrote a new target."""
        direction = (target > previous) - (target < previous)
        if not direction:
            return
        self.target_changes += 1
        self.churn_pages += abs(target - previous)
        if self._direction and direction != self._direction:
            self.reversals += 1
        self._direction = direction
        if self._pending is not None:
            self.unreached += 1  # superseded before the guest got there
        self._target = target
        self._pending = t
        self.actual_changed(t, actual)

    def actual_changed(self, t: float, actual: int) -> None:
        """The driver wrote ``actual``."""
        self.memory.set(t, self.ram_pages - actual)
        if self._pending is not None and abs(actual - self._target) < SETTLED:
            self.settle_times.append(t - self._pending)
            self._pending = None

    def summary(self, end: float) -> dict[str, Any]:
        settle = self.settle_times
        return {
            "ballooned_mib_avg": round(self.ballooned.mean(end) / MIB, 3),
            "saved_mib_avg": round(self.saved.mean(end) / MIB, 3),
            "below_floor_seconds": round(self.memory.time_below(end), 6),
            "target_changes": self.target_changes,
            "churn_mib": round(self.churn_pages / MIB, 3),
            "reversals": self.reversals,
            "settle_seconds_mean": round(statistics.fmean(settle), 6) if settle else 0.0,
            "settle_seconds_max": round(max(settle), 6) if settle else 0.0,
            # a target still pending at the end counts, unless it was set at the very end
            "targets_unreached": self.unreached + (self._pending is not None
                                                   and self._pending < end),
            "stalls": self.stalls,
        }


def host_score(guests: list[GuestScore], free: Integral, end: float) -> dict[str, Any]:
    """The host-level score: its free memory over time, and the guests' tallies combined."""
    per = [g.summary(end) for g in guests]
    settle = [t for g in guests for t in g.settle_times]
    return {
        "ballooned_mib_avg": round(sum(g.ballooned.mean(end) for g in guests) / MIB, 3),
        "saved_mib_avg": round(sum(g.saved.mean(end) for g in guests) / MIB, 3),
        "free_mib_avg": round(free.mean(end) / MIB, 3),
        "free_mib_min": round(free.minimum / MIB, 3),
        "overcommitted_seconds": round(free.time_below(end), 6),
        "below_floor_seconds": round(sum(s["below_floor_seconds"] for s in per), 6),
        "target_changes": sum(g.target_changes for g in guests),
        "churn_mib": round(sum(g.churn_pages for g in guests) / MIB, 3),
        "reversals": sum(g.reversals for g in guests),
        "settle_seconds_mean": round(statistics.fmean(settle), 6) if settle else 0.0,
        "settle_seconds_max": round(max(settle), 6) if settle else 0.0,
        "targets_unreached": sum(s["targets_unreached"] for s in per),
        "stalls": sum(g.stalls for g in guests),
    }
