"""Everything that makes a session reproducible from one seed, in one place.

- trio's scheduler: trio only orders simultaneously-runnable tasks with the module-level
  ``random.Random`` in ``trio._core._run``; with ``_ALLOW_DETERMINISTIC_SCHEDULING`` set it sorts
  each batch by task creation order and shuffles it with that generator. We set the flag and
  seed the generator. These are trio internals: ``check_trio_internals`` fails loudly (and a
  test calls it) if a trio upgrade removes them.
- named random streams: every consumer of randomness asks for ``streams.get("workload")`` etc.,
  each derived from the session seed and its name, so adding a consumer never shifts another.
- virtual time: ``VirtualClock`` jumps to the next deadline as soon as every task is blocked,
  like ``MockClock(autojump_threshold=0)`` but without its idle pass of the run loop.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import math
import random
from typing import Any

import trio


class DeterminismUnavailable(RuntimeError):
    """The trio internals we rely on for seeded scheduling are gone or changed."""


def derive_seed(seed: int, name: str) -> int:
    """A 64-bit seed for stream ``name``, stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class RandomStreams:
    """Named, independent ``random.Random`` streams derived from one session seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def get(self, name: str) -> random.Random:
        """The stream for ``name`` (created on first use, then shared)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = random.Random(derive_seed(self.seed, name))
        return stream


def _run_module() -> Any:
    from trio._core import _run

    return _run


def check_trio_internals() -> None:
    """Raise DeterminismUnavailable unless trio still has the seeded-shuffle scheduler hook."""
    run_mod = _run_module()
    if not isinstance(getattr(run_mod, "_r", None), random.Random):
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: trio._core._run._r is no longer a random.Random"
        )
    if not hasattr(run_mod, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone"
        )
    source = inspect.getsource(run_mod)
    if "_ALLOW_DETERMINISTIC_SCHEDULING" not in source or "_r.shuffle" not in source:
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: the run loop no longer shuffles batches with _r"
        )


def seed_scheduler(seed: int) -> None:
    """Make trio's choice among runnable tasks a pure function of ``seed``."""
    check_trio_internals()
    run_mod = _run_module()
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_mod._r.seed(derive_seed(seed, "scheduler"))


class VirtualClock(trio.abc.Clock, trio.abc.Instrument):
    """Virtual seconds from 0 that jump to the next deadline the moment every task blocks.

    Same times and same schedule as ``MockClock(autojump_threshold=0)``, at less cost. trio
    asks a clock how long to sleep only when no task is runnable; MockClock answers "forever",
    lets the run loop make an idle pass (an I/O poll, no task runs), jumps, and expires the
    deadline on the pass after. This clock jumps when asked and answers "no wait", so the
    deadline expires in that same pass. The idle pass runs no task and draws nothing from the
    scheduler's seeded generator (it shuffles an empty batch), so every batch -- and hence
    the log -- is exactly what MockClock gives; every simulated sleep costs one pass, not two.
    It also reads time without MockClock's real-clock call.

    ``sleep`` is ``trio.sleep`` on a timer heap the clock keeps itself. trio's own sleep is a
    cancel scope whose deadline *cancels* the sleeper: a Cancelled exception raised through
    the task and caught again, about five times the cost of a scheduler pass. Here the sleeper
    parks with ``wait_task_rescheduled`` and the clock reschedules it when time reaches its
    deadline -- in the same pass, and so in the same batch, where trio would have expired it
    (both wake every sleeper whose deadline is the new time). Actors reach it through
    ``actors.sim.clock.sleep``; cancelling a sleeper works as for any trio wait.

    It is also an instrument (install it with ``instruments=[clock]``) that counts the tasks
    scheduled and not yet stepped, which ``advance`` needs; without it, advance is sleep.
    """

    __slots__ = ("_deadline", "_hints", "_monitor", "_now", "_pending", "_seq", "_stop_at",
                 "_timers")

    def __init__(self) -> None:
        self._now = 0.0
        self._seq = 0
        #: Heap of [deadline, sequence, task]; the task is None once its sleep was cancelled.
        self._timers: list[list[Any]] = []
        #: Tasks made runnable and not yet run (trio's run queue and the rest of the current
        #: batch); -1 until the run starts with this clock as an instrument.
        self._pending = -1
        #: trio's next deadline (cancel scopes) as of the last idle pass, which is when trio
        #: tells a clock (-inf until the run starts). Deadlines made since are the actors',
        #: made with ``actors.sim.clock.move_on_after``, which notes them here; one made
        #: otherwise and jumped past is caught loudly at the next idle pass.
        self._deadline = -math.inf
        self._hints: list[float] = []
        #: The monitor task parked in ``pause`` (a console, the scenario's actions), and
        #: when it is to be woken: at the idle pass that would take time past ``_stop_at``
        #: (which ``stop_soon`` brings back to now). Time never passes it, not even by
        #: ``advance``; inf when no monitor waits.
        self._monitor: trio.lowlevel.Task | None = None
        self._stop_at = math.inf

    # -- instrument hooks: every task made runnable runs exactly once after -----------------
    def before_run(self) -> None:
        self._pending = 0
        self._deadline = math.inf  # none yet; one made unnoted is caught at the next idle pass

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self._pending += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._pending -= 1

    async def advance(self, seconds: float) -> None:
        """``sleep(seconds)`` without a scheduler pass when nothing else can run meanwhile.

        Exactly what the sleep would do when no other task is runnable (in the run queue or
        later in the current batch) and neither a timer nor a trio deadline falls at or
        before the wake-up: the sleeper would be the only task of the pass that wakes it, a
        batch of one that the seeded shuffle draws nothing for. Time then just moves on.
        """
        if not self.try_advance(seconds):
            await self.sleep(seconds)

    def try_advance(self, seconds: float) -> bool:
        """``advance``'s shortcut alone: move time on and True, or False if it cannot."""
        if self._pending != 0 or not seconds > 0:
            return False
        now = self._now
        wake = now + seconds
        timers, hints = self._timers, self._hints
        while timers and timers[0][2] is None:  # cancelled sleeps
            heapq.heappop(timers)
        while hints and hints[0] <= now:  # passed, or expired already
            heapq.heappop(hints)
        if ((not timers or wake < timers[0][0]) and (not hints or wake < hints[0])
                and now < wake < self._deadline and wake < self._stop_at):
            self._now = wake
            return True
        return False

    def note_deadline(self, when: float) -> None:
        """A cancel scope with deadline ``when`` was made: ``advance`` must not jump past it."""
        heapq.heappush(self._hints, when)

    def start_clock(self) -> None:
        return None

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline < self._now:
            raise DeterminismUnavailable(
                f"a trio deadline ({deadline}) fell before virtual time {self._now} unseen: "
                f"actors must make timeouts with actors.sim.clock.move_on_after")
        self._deadline = deadline
        timers = self._timers
        while timers and timers[0][2] is None:  # cancelled sleeps
            heapq.heappop(timers)
        if timers and timers[0][0] < deadline:
            deadline = timers[0][0]
        if deadline > self._now:
            if self._monitor is not None and (deadline > self._stop_at
                                              or deadline == math.inf):
                return self._wake_monitor()
            if deadline == math.inf:  # nothing will ever wake: wait for I/O (there is none)
                return math.inf
            self._now = deadline
        while timers and timers[0][0] <= deadline:
            task = heapq.heappop(timers)[2]
            if task is not None:
                trio.lowlevel.reschedule(task)
        return 0.0

    # -- the monitor: virtual time that stops where it is told --------------------------------
    async def pause(self, until: float = math.inf) -> float:
        """Park the calling task (the session's monitor) until the session is idle at
        ``until`` -- every task blocked, nothing left to run at that instant -- or at the
        instant ``stop_soon`` was called in, or when nothing is left that could ever run,
        whichever is first; returns that instant.

        The monitor wakes alone, in a pass that expires no timer and runs no other task:
        a batch of one, which draws nothing from the seeded scheduler. So where a monitor
        pauses leaves the schedule unchanged, and what it does there happens at a point
        that re-running the session reproduces (``vballoon replay`` of a console log). Time
        never moves past ``until``, not even by ``advance``.
        """
        if self._monitor is not None:
            raise RuntimeError("the clock has a monitor already")
        if until < self._now:
            raise ValueError(f"cannot pause at {until}: virtual time is {self._now} already")
        self._stop_at = until
        self._monitor = trio.lowlevel.current_task()

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self._monitor, self._stop_at = None, math.inf
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self._now

    def next_wakeup(self) -> float:
        """The earliest time after now at which a sleeper or a trio deadline is due."""
        timers = self._timers
        while timers and timers[0][2] is None:  # cancelled sleeps
            heapq.heappop(timers)
        due = [d for d in (timers[0][0] if timers else math.inf, self._deadline)
               if d > self._now]
        return min(due, default=math.inf)

    def stop_soon(self) -> None:
        """Wake the parked monitor at the end of the current instant (once every task has
        blocked); safe from a signal handler or a log sink: it only lowers a float."""
        self._stop_at = min(self._stop_at, self._now)

    def _wake_monitor(self) -> float:
        """An idle pass that wakes the monitor instead of moving time past its stop."""
        if self._now < self._stop_at < math.inf:
            self._now = self._stop_at  # nothing happens before it: jump, but not past
        task, self._monitor = self._monitor, None
        self._stop_at = math.inf
        assert task is not None  # only called with a monitor parked
        trio.lowlevel.reschedule(task)
        return 0.0

    async def sleep(self, seconds: float) -> None:
        """``trio.sleep(seconds)``: same errors, same wake-up pass, no cancellation."""
        if not seconds >= 0:
            raise ValueError("delay must be a non-negative number")
        deadline = self._now + seconds
        if deadline <= self._now:  # zero (or below the clock's resolution): a checkpoint
            await trio.lowlevel.checkpoint()
            return
        entry = [deadline, self._seq, trio.lowlevel.current_task()]
        self._seq += 1
        heapq.heappush(self._timers, entry)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            entry[2] = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


def virtual_clock() -> VirtualClock:
    """A clock that starts at 0 and jumps to the next deadline when all tasks block."""
    return VirtualClock()
