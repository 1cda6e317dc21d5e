"""Session time: virtual seconds since the session started, on any backend, and sleeping in it.

trio's MockClock starts at 0, but asyncio's loop clock does not; actors and the log read
time through one ``SessionClock`` so that schedules ("inflate at 5s"), phase times and log
``t`` mean the same on both backends. Outside the event loop it returns the last time seen.

Actors sleep with :func:`sleep`: ``anyio.sleep``, unless the run's clock has a cheaper sleep
of its own with the same semantics (``run.session.determinism.VirtualClock``: a timer heap
instead of a cancel scope per sleep), which ``SessionClock.start`` installs for the session's tasks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import anyio
import sniffio

_SLEEP: ContextVar[Callable[[float], Awaitable[None]]] = ContextVar(
    "vballoon_sleep", default=anyio.sleep)
_ADVANCE: ContextVar[Callable[[float], Awaitable[None]]] = ContextVar(
    "vballoon_advance", default=anyio.sleep)


def sleep(seconds: float) -> Awaitable[None]:
    """``anyio.sleep(seconds)``, through the run clock's own timer where it has one."""
    return _SLEEP.get()(seconds)


_NOTE_DEADLINE: ContextVar[Callable[[float], None] | None] = ContextVar(
    "vballoon_note_deadline", default=None)


def move_on_after(seconds: float) -> anyio.CancelScope:
    """``anyio.move_on_after(seconds)``, made known to the run clock (which must not let
    ``advance`` jump past a deadline it has not seen)."""
    scope = anyio.move_on_after(seconds)
    note = _NOTE_DEADLINE.get()
    if note is not None:
        note(scope.deadline)
    return scope


def _never(seconds: float) -> bool:
    return False


_TRY_ADVANCE: ContextVar[Callable[[float], bool]] = ContextVar(
    "vballoon_try_advance", default=_never)


def try_advance_fn() -> Callable[[float], bool]:
    """The run clock's ``try_advance(seconds)``: let ``seconds`` pass at once if provably
    nothing else can run meanwhile, else False and no time passed (a hot path binds it once
    per run; outside a run with such a clock it always says False)."""
    return _TRY_ADVANCE.get()


def advance(seconds: float) -> Awaitable[None]:
    """Let ``seconds`` of the calling task's CPU time pass: ``sleep(seconds)`` in effect.

    The run clock may do it without a scheduler pass when provably nothing else can run in
    between (``VirtualClock.advance``); the schedule is the same either way.
    """
    return _ADVANCE.get()(seconds)


class SessionClock:
    """Callable: seconds since ``start()`` (0 before the session runs)."""

    def __init__(self) -> None:
        self.epoch = 0.0
        self.last = 0.0
        self._now: Callable[[], float] = anyio.current_time

    def start(self) -> None:
        """Called first thing inside the event loop, before any actor task is started."""
        if sniffio.current_async_library() == "trio":
            import trio

            # The run's clock itself: this stamps every log record, and trio.current_time
            # reaches the same method through two calls more. It keeps its time once the run
            # is over, which is then the last time seen (the session reads it as it ends).
            clock = trio.lowlevel.current_clock()
            self._now = clock.current_time
            fast_sleep = getattr(clock, "sleep", None)
            if fast_sleep is not None:
                _SLEEP.set(fast_sleep)  # inherited by every task started from here on
                _ADVANCE.set(getattr(clock, "advance", fast_sleep))
                _NOTE_DEADLINE.set(getattr(clock, "note_deadline", None))
                _TRY_ADVANCE.set(getattr(clock, "try_advance", _never))
        self.epoch = self._now()
        self.last = 0.0

    def __call__(self) -> float:
        try:  # not contextlib.suppress: this stamps every log record, and try costs nothing
            self.last = self._now() - self.epoch
        except RuntimeError:  # no event loop: the last known time
            return self.last
        return self.last
