"""Session time: virtual seconds since the session started, on any backend.

trio's MockClock starts at 0, but asyncio's loop clock does not; actors and the log read
time through one ``SessionClock`` so that schedules ("inflate at 5s"), phase times and log
``t`` mean the same on both backends. Outside the event loop it returns the last time seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
import sniffio


class SessionClock:
    """Callable: seconds since ``start()`` (0 before the session runs)."""

    def __init__(self) -> None:
        self.epoch = 0.0
        self.last = 0.0
        self._now: Callable[[], float] = anyio.current_time

    def start(self) -> None:
        """Called first thing inside the event loop."""
        if sniffio.current_async_library() == "trio":
            import trio  # the direct call: this clock stamps every log record

            self._now = trio.current_time
        self.epoch = self._now()
        self.last = 0.0

    def __call__(self) -> float:
        with contextlib.suppress(RuntimeError):  # no event loop: the last known time
            self.last = self._now() - self.epoch
        return self.last
