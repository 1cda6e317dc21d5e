"""The per-guest kernel context shared by all of that guest's kernel tasks.

A ``Kernel`` holds what every primitive needs and nothing else: the logger, the cost model, the
seeded perturbation policy, the seeded lock races, the CPUs, lockdep, the task table, the
clock, and the session's ``report`` callback. Every lockdep or watchdog finding is both an
error-level log record and a ``report(kind, detail, **fields)`` call, so the session can count
it as a violation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from actors.kernel.cpus import Cpus
from actors.kernel.lockdep import ALL_USAGE, Lockdep, Logger, ReportFn
from actors.kernel.preempt import Pct, Perturbation, Pos
from actors.kernel.task import (
    _CURRENT,
    DEAD,
    ENABLED_HARDIRQ,
    SLEEPING,
    KTask,
    TaskScope,
    current,
    current_name,
    current_or_none,
)
from actors.sim import schema
from actors.sim.choices import Choices
from actors.sim.clock import advance, move_on_after, sleep, try_advance_fn
from actors.sim.costs import CostModel
from actors.sim.events import Event, new_event


@dataclass(frozen=True, slots=True)
class KernelReport:
    """One lockdep or watchdog finding, as handed to the session."""

    kind: str
    detail: str
    fields: dict[str, Any] = field(default_factory=dict)


def _ignore(kind: str, detail: str, **fields: Any) -> None:
    return None


class Kernel:
    """One guest kernel: the context shared by its tasks, locks and watchdogs."""

    def __init__(
        self,
        *,
        log: Logger,
        costs: CostModel | None = None,
        rng: random.Random | None = None,
        report: ReportFn = _ignore,
        strength: float = 0.0,
        max_delay: float = 1e-6,
        perturb: Perturbation | None = None,
        clock: Callable[[], float] = anyio.current_time,
        name: str = "kernel",
        choices: Choices | None = None,
        cpus: int = 2,
        race_rng: random.Random | None = None,
        strategy: str = "random",
        depth: int = 3,
        steps: int = 0,
    ) -> None:
        self.name = name
        self.log = log
        self.costs = CostModel() if costs is None else costs
        self.rng = random.Random(0) if rng is None else rng
        #: Live kernel tasks by name, in creation order (show_all_locks order).
        self.tasks: dict[str, KTask] = {}
        if perturb is None:
            if strategy == "pct":
                perturb = Pct(self.rng, max_delay, self.tasks, depth=depth, steps=steps,
                              choices=choices, prefix=name)
            elif strategy == "pos":
                perturb = Pos(self.rng, max_delay, self.tasks, choices=choices, prefix=name)
            else:
                perturb = Perturbation(self.rng, strength, max_delay, choices=choices,
                                       prefix=name)
        self.perturb = perturb
        #: The session's choice points (fault sites consult it); None: no faults.
        self.choices = choices
        #: Who runs first when a woken or spinning task and a running one race for a lock
        #: released at this instant (``woken_first``): its own stream, so that the draws
        #: shift nothing else.
        self.race_rng = random.Random(f"{name}.races") if race_rng is None else race_rng
        self.cpus = Cpus(cpus)
        self._try_advance: Callable[[float], bool] | None = None
        #: ``costs.lock_op``, read on every lock operation.
        self.lock_cost = self.costs.lock_op
        self.now = clock
        self._report = report
        #: Every finding so far, in order (the callback sees the same).
        self.reports: list[KernelReport] = []
        self._names_used: set[str] = set()
        #: Whether debug records are kept: guards building their fields on hot paths.
        enabled = getattr(log, "is_enabled_for", None)
        self.debug: bool = bool(enabled(logging.DEBUG)) if callable(enabled) else True
        self.lockdep = Lockdep(log, self.report, self.tasks)
        #: Page lock bookkeeping (one PageFrames per kernel): owner and sleepers by PFN (in
        #: queue order: a woken sleeper that loses the race re-queues at the tail), and the
        #: usage bits lockdep has not yet recorded for class ``page`` (a fast-path cache).
        self.page_owner: dict[int, KTask] = {}
        self.page_waiters: dict[int, list[tuple[KTask, Event]]] = {}
        #: Tasks polling a page lock in a retry loop (``cpu_relax(page=...)``), by PFN.
        self.page_spinners: dict[int, list[tuple[KTask, Event]]] = {}
        #: Pages a released spinner re-tests first (``woken_first`` said so): PFN -> (spinner,
        #: instant of the release). Until the spinner polls, at that instant, a trylock by
        #: anyone else fails as if the spinner had set the bit first.
        self.page_first: dict[int, tuple[KTask, float]] = {}
        self.page_unmarked = ALL_USAGE
        self.page_try_unmarked = ENABLED_HARDIRQ

    # -- findings ------------------------------------------------------------------------------
    def report(self, kind: str, detail: str, **fields: Any) -> None:
        """Record a finding and pass it to the session's callback."""
        self.reports.append(KernelReport(kind, detail, fields))
        self._report(kind, detail, **fields)

    def warn(self, where: str, detail: str, dump_page: dict[str, Any]) -> None:
        """``dump_page(page); __WARN();``: a kernel warning, logged and handed to the session
        (the kernel carries on, as after a WARN)."""
        task = current_name()
        self.log.error(schema.KERNEL_WARNING, task=task, where=where, detail=detail,
                       dump_page=dump_page)
        self.report("warning", f"WARNING in {where}: {detail}", task=task, dump_page=dump_page)

    def show_all_locks(self) -> list[dict[str, Any]]:
        """Every task's state, wait target and held locks (lockdep's show_all_locks)."""
        return self.lockdep.show_all_locks()

    # -- tasks ---------------------------------------------------------------------------------
    def new_task(self, name: str) -> KTask:
        """Create and register a kernel task; a taken name gets a ``-N`` suffix."""
        unique = name
        n = 1
        while unique in self._names_used:
            unique = f"{name}-{n}"
            n += 1
        self._names_used.add(unique)
        t = KTask(self, unique, self.now())
        self.tasks[unique] = t
        return t

    def task(self, name: str) -> TaskScope:
        """``with kernel.task("vballoon"):`` makes the enclosing coroutine that kernel task."""
        return TaskScope(self.new_task(name))

    def task_exit(self, t: KTask, *, clean: bool) -> None:
        """A task's scope ended: check held locks (on a clean exit) and unregister it."""
        if clean:
            self.lockdep.held_at_exit(t)
        if t.on_cpu:
            self.cpus.put(t)
        t.state = DEAD
        self.tasks.pop(t.name, None)

    def spawn(
        self, tg: TaskGroup, name: str, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> KTask:
        """Start ``fn(*args)`` in ``tg`` as a new kernel task, named now (not when it runs)."""
        t = self.new_task(name)

        async def body() -> None:
            with TaskScope(t):
                await fn(*args)

        tg.start_soon(body, name=t.name)
        return t

    async def start(
        self, tg: TaskGroup, name: str, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        """``tg.start(fn, *args)`` as a new kernel task: fn calls ``task_status.started()``."""
        t = self.new_task(name)

        async def body(*, task_status: TaskStatus[Any]) -> None:
            with TaskScope(t):
                await fn(*args, task_status=task_status)

        return await tg.start(body, name=t.name)

    # -- scheduling ----------------------------------------------------------------------------
    async def schedule(self, t: KTask) -> None:
        """Pay, on a CPU, the time ``t``'s code has cost since its last payment.

        Code between two scheduling points runs at one virtual instant, and what it cost
        (``t.debt``, charged by the primitives: ``costs.lock_op`` and the like) is paid
        here, so the window a preemption point opens has the width of the work before it.
        An atomic task already holds its CPU; any other takes one (queueing if all are
        held) for the payment and leaves it after.
        """
        debt = t.debt
        if not debt:
            return
        t.debt = 0.0
        async with self.on_a_cpu(t):
            await advance(debt)

    @asynccontextmanager
    async def on_a_cpu(self, t: KTask) -> AsyncIterator[None]:
        """Hold a CPU for the enclosed time (``actors.kernel.cpus``): take one unless ``t``
        holds one already, and leave it after unless ``t`` is atomic by then."""
        held = t.on_cpu
        if not held:
            await self.cpus.get(t)
        try:
            yield
        finally:
            if not held and not t.atomic:
                self.cpus.put(t)

    def charge(self, seconds: float) -> None:
        """Charge ``seconds`` of CPU time to the current kernel task (paid like a lock's:
        ``schedule``/``settle``); nothing outside a kernel task."""
        t = current_or_none()
        if t is not None:
            t.debt += seconds

    def settle(self, t: KTask) -> None:
        """A scheduling point the perturbation leaves closed: pay ``t``'s debt here if that
        needs no scheduler pass (a CPU is free, or held, and nothing else can run before it
        is paid: ``try_advance``), else carry it to the task's next suspension -- a wait,
        a sleep, a relax or an open preemption point -- which pays it. Time is conserved
        either way, and a closed point never costs a pass of the scheduler."""
        if t.on_cpu or self.cpus.free > 0:
            fn = self._try_advance
            if fn is None:  # bound on first use, inside the run whose clock it is
                fn = self._try_advance = try_advance_fn()
            if fn(t.debt):
                t.debt = 0.0

    async def preempt(self, site: str) -> None:
        """A point where another CPU could interleave: maybe yield or delay (seeded); an
        open point pays the task's CPU time first, a closed one settles it (``settle``)."""
        t = _CURRENT.get()
        p = self.perturb
        if not p.active:
            delay = None
        elif p.direct:  # neither recording nor forcing: the draw itself (millions of points)
            delay = p._draw()
        else:
            delay = p.decide(site)
        if delay is None:
            if t is not None and t.debt:
                self.settle(t)
            return
        spin = False
        if t is not None:
            # a priority strategy's step-aside at a retry loop's point between two relaxes
            # is part of the spin, so the relax backoff goes on (``cpu_relax``); without
            # this, a low-priority task polling at 1 µs resolution costs millions of points
            spin = p.steps_aside and t.relax_end == self.now()
            if t.debt:
                await self.schedule(t)
        if self.debug:
            self.log.debug(schema.PREEMPT, task=current_name(), site=site, delay=delay)
        await sleep(delay)
        if spin and t is not None:
            t.relax_end = self.now()

    def woken_first(self, site: str) -> bool:
        """A lock came free at this instant with a woken sleeper or a spinner about to
        re-test it, and a running task wants it now: does the woken one test first?

        On a real CPU the two are microseconds apart either way; here they meet at one
        virtual instant, and this seeded choice (recorded and forceable like a preemption
        point, site ``race:<lock>``) decides. None from the choice: the running task wins.
        """
        choices = self.choices
        if choices is not None and choices.recording:
            return choices.decide(site, self._race_draw, self.name) is not None
        return self._race_draw() is not None

    def _race_draw(self) -> float | None:
        return 1.0 if self.race_rng.random() < 0.5 else None

    async def wake(self, t: KTask) -> None:
        """A task woken from a sleep re-tests what it slept for only once it is on a CPU
        again: it waits for one, then pays the wake-up (``costs.wakeup``) on it. Meanwhile a
        running task may take what it was woken for (``woken_first`` decides a tie)."""
        async with self.on_a_cpu(t):
            debt, t.debt = t.debt, 0.0  # what it did before it slept, carried (``settle``)
            await advance(self.costs.wakeup + debt)

    async def cpu_relax(self, *, page: int | None = None) -> None:
        """One busy-wait iteration of a retry loop: costs virtual time on a CPU, is not a sleep.

        Back-to-back relaxes (nothing else took virtual time in between: the loop made no
        progress) double the next one, up to ``costs.spin_backoff_max``. What the loop polls
        can only change when another task acts, so a spin that has lasted S re-checks at most
        about S later: a short spin is simulated at full resolution, and a livelock advances
        the clock in big steps -- the soft-lockup watchdog still sees it (the task never
        sleeps), but it costs O(S / max) wall iterations instead of S / 50 ns.

        ``page``: the loop polls that page's lock (a ``trylock_page`` retry loop). A real CPU
        sees the bit clear within one poll, so the relax also ends when the page is unlocked:
        the spinner is runnable at the instant of the release, and whether it or a running
        task takes the page first is a seeded choice (``woken_first``) -- never a window of
        zero width that the backoff sleeps through.
        """
        t = current_or_none()
        step = self.costs.spin_relax
        debt = 0.0
        if t is not None:
            t.ops += 1
            if t.relax_end == self.now():  # only the loop's own polls since the last relax
                step = min(2 * t.relax_step, max(self.costs.spin_backoff_max, step))
            t.relax_step = step
            debt, t.debt = t.debt, 0.0  # the loop's polls are CPU time of the spin too
            if self.page_first:
                lift_page_first(self, t)  # polling again: it took no page it was first for
        # a spinning CPU is a busy CPU
        async with self.on_a_cpu(t) if t is not None else nullcontext():
            start = self.now()
            if t is not None:
                t.relaxing, t.relax_page = True, -1 if page is None else page
            try:
                if page is None:
                    await sleep(step + debt)
                else:
                    assert t is not None, "cpu_relax(page=) polls a page lock: a kernel task's"
                    released = new_event()
                    entry = (t, released)
                    self.page_spinners.setdefault(page, []).append(entry)
                    with move_on_after(step + debt):
                        await released.wait()
                    if released.is_set():  # the lock came free: the next poll is a fresh one
                        t.relax_step, t.relax_end = self.costs.spin_relax, -1.0
                        t.debt += max(0.0, debt - (self.now() - start))  # unpaid: carried
                        return
                    spinners = self.page_spinners.get(page)
                    if spinners is not None:
                        spinners.remove(entry)
                        if not spinners:
                            del self.page_spinners[page]
                if t is not None:
                    t.relax_end = self.now()
            finally:
                if t is not None:
                    t.relaxing = False

    async def msleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (a sleeping primitive: atomic context is a bug)."""
        t = current()
        if t.atomic:
            self.lockdep.might_sleep(t, "msleep", "msleep")
        await self.schedule(t)  # the code before it, on a CPU (carried: ``settle``)
        t.wait(SLEEPING, "msleep", self.now())
        try:
            await sleep(seconds)
        finally:
            t.run(self.now(), slept=True)

    @contextmanager
    def sleeping(self, what: str) -> Iterator[KTask]:
        """Mark a wait outside the substrate (an inbox, an interrupt) as a voluntary sleep."""
        t = current()
        if t.atomic:
            self.lockdep.might_sleep(t, what, "schedule")
        t.wait(SLEEPING, what, self.now())
        try:
            yield t
        finally:
            t.run(self.now(), slept=True)


def lift_page_first(kernel: Kernel, t: KTask) -> None:
    """Drop the ``page_first`` entries that no longer hold: made at an earlier instant, or
    ``t``'s own (the spinner is polling again, or taking a page, now)."""
    now = kernel.now()
    first = kernel.page_first
    for pfn, (spinner, when) in list(first.items()):
        if when != now or spinner is t:
            del first[pfn]


async def msleep(kernel: Kernel, seconds: float) -> None:
    """``msleep`` in C argument order (but in seconds, like every duration here)."""
    await kernel.msleep(seconds)
