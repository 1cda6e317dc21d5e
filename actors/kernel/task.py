"""Kernel task identity: which simulated ``task_struct`` the running anyio task is.

Every anyio task that runs kernel code declares itself a named kernel task at the top of its
coroutine (``with kernel.task("vballoon"):``, or ``kernel.spawn``/``kernel.start``). The
``KTask`` lives in a ``contextvars.ContextVar``, so the locks find their caller without it being
passed around, and it carries what lockdep and the watchdogs read: scheduler state, what the
task waits on and since when, its held-lock stack and its preempt count (spinlocks held).

A child anyio task inherits its parent's context, hence its kernel task: a child that runs
kernel code must declare its own. Two anyio tasks sharing one ``KTask`` are caught the first
time one of them would block while the other is already blocked (``TaskSharingError``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final, Literal, Protocol

State = Literal["running", "blocked", "spinning", "sleeping", "dead"]

#: On a CPU (or runnable): executing kernel code.
RUNNING: Final = "running"
#: TASK_UNINTERRUPTIBLE ("D"): sleeping on a mutex, page lock or ``wait_event``; hung-task watched.
BLOCKED: Final = "blocked"
#: Busy-waiting on a spinlock with preemption off; soft-lockup watched.
SPINNING: Final = "spinning"
#: TASK_INTERRUPTIBLE ("S") or a timed sleep: ``msleep``, ``wait_event_interruptible``, inbox.
SLEEPING: Final = "sleeping"
#: The task's coroutine left its ``kernel.task()`` block.
DEAD: Final = "dead"

# Lock kinds, as logged in lock.* records.
MUTEX: Final = "mutex"
SPIN: Final = "spin"
PAGE: Final = "page"

# Lock usage bits (lockdep's LOCK_USED_IN_HARDIRQ, LOCK_ENABLED_HARDIRQ), as masks.
#: Taken in hardirq context: the class is HARDIRQ-safe ("IN-HARDIRQ-W").
USED_IN_HARDIRQ: Final = 1 << 0
#: Taken with hardirqs enabled: the class is HARDIRQ-unsafe ("HARDIRQ-ON-W").
ENABLED_HARDIRQ: Final = 1 << 1

#: One held-lock stack entry: (key, lock class, kind, virtual time acquired or 0.0).
#: ``key`` is the lock object for mutexes and spinlocks and the PFN (int) for page locks.
HeldLock = tuple[object, str, str, float]


def held_name(entry: HeldLock) -> str:
    """How a held lock is shown in reports: the lock's name, or ``page:<pfn>``."""
    key = entry[0]
    if isinstance(key, int):
        return f"page:{key}"
    name: str = getattr(key, "name", entry[1])
    return name


class ContextChecker(Protocol):
    """The lockdep check a ``@context`` function runs at exit (``Lockdep`` is one)."""

    def check_context(
        self, t: KTask, fn: str, before: list[str], acquires: tuple[str, ...],
        releases: tuple[str, ...],
    ) -> None: ...


class CpuSet(Protocol):
    """What a task needs of its guest's CPUs (``actors.kernel.cpus.Cpus`` is one)."""

    def pin(self, t: KTask) -> None: ...

    def put(self, t: KTask) -> None: ...


class TaskOwner(Protocol):
    """The kernel a task runs in, as tasks and locks see it (``Kernel`` is one).

    A protocol, so that this bottom module of the kernel substrate imports none above it.
    """

    now: Callable[[], float]

    @property
    def cpus(self) -> CpuSet: ...

    @property
    def lockdep(self) -> ContextChecker: ...

    def task_exit(self, t: KTask, *, clean: bool) -> None: ...


class NoKernelTaskError(RuntimeError):
    """Kernel code ran in an anyio task that never declared itself a kernel task."""


class TaskSharingError(RuntimeError):
    """Two anyio tasks run as one kernel task (a child forgot to declare its own)."""


class KTask:
    """One simulated kernel task: identity by name, state, and its held-lock stack."""

    __slots__ = (
        "atomic",
        "debt",
        "episode",
        "hardirq_context",
        "hardirqs_enabled",
        "held",
        "irq_tryusage",
        "irq_usage",
        "kernel",
        "last_sleep",
        "name",
        "on_cpu",
        "ops",
        "relax_end",
        "relax_page",
        "relax_step",
        "relaxing",
        "since",
        "state",
        "waiting_on",
    )

    def __init__(self, kernel: TaskOwner, name: str, now: float) -> None:
        self.kernel = kernel
        self.name = name
        self.state: State = RUNNING
        #: What a blocked/spinning/sleeping task waits on (lock name, ``page:<pfn>``, queue).
        self.waiting_on: str | None = None
        #: Virtual time of the last state change (start of the current blocking episode).
        self.since = now
        #: Virtual time the last voluntary sleep ended (task start if it never slept).
        self.last_sleep = now
        #: Locks held, in acquisition order (lockdep's ``held_locks``).
        self.held: list[HeldLock] = []
        #: Spinlocks held, plus one while hardirqs are disabled: non-zero means atomic
        #: context (the kernel's ``preempt_count() || irqs_disabled()``).
        self.atomic = 0
        #: The irq state of the CPU the task runs on (kept per task: an atomic task never
        #: leaves its CPU, so the two agree): hardirqs on, and interrupt nesting depth.
        self.hardirqs_enabled = True
        self.hardirq_context = 0
        #: Usage bits an acquisition in this state marks (lockdep's mark_irqflags), for a
        #: blocking acquire and for a trylock (a trylock is never USED_IN): kept in step with
        #: the two fields above by ``actors.kernel.irq``, so a lock's fast path reads one int.
        self.irq_usage = ENABLED_HARDIRQ
        self.irq_tryusage = ENABLED_HARDIRQ
        #: Blocking/spinning episodes so far: watchdogs report each episode once.
        self.episode = 0
        #: Lock operations so far: the soft-lockup watchdog's evidence that the task is on-CPU.
        self.ops = 0
        #: Virtual seconds of CPU time the task's code has cost since its last scheduling
        #: point, paid at the next one (``Kernel.schedule``), on a CPU.
        self.debt = 0.0
        #: Whether the task holds one of its guest's CPUs (``actors.kernel.cpus``).
        self.on_cpu = False
        #: Busy-wait backoff (``Kernel.cpu_relax``): when the last relax ended, and its length.
        self.relax_end = -1.0
        self.relax_step = 0.0
        #: Inside a ``cpu_relax``: polling for another task to act, so not a task that a
        #: priority strategy lets run ahead (``actors.kernel.preempt.Priorities``).
        self.relaxing = False
        #: The page whose lock the current or last relax polls (-1: none): what a busy
        #: retry loop waits for, for the soft-lockup report.
        self.relax_page = -1

    @property
    def spinning_on(self) -> str | None:
        """The spinlock this task busy-waits on, if it is spinning."""
        return self.waiting_on if self.state == SPINNING else None

    def wait(self, state: State, what: str, now: float) -> None:
        """Leave the CPU (block, spin or sleep) on ``what``: one new watchdog episode."""
        if self.state != RUNNING:
            raise TaskSharingError(
                f"kernel task {self.name!r} is already {self.state} on {self.waiting_on!r}, in "
                f"another anyio task (declare each anyio task with kernel.task() or "
                f"kernel.spawn()) or inside kernel.sleeping() (leave it before blocking)"
            )
        self.state = state
        self.waiting_on = what
        self.since = now
        self.episode += 1
        if self.on_cpu and state != SPINNING:  # a sleeper leaves its CPU (a spinner keeps it)
            self.kernel.cpus.put(self)

    def run(self, now: float, *, slept: bool) -> None:
        """Back on the CPU; ``slept`` marks a voluntary sleep (resets the soft-lockup clock)."""
        self.state = RUNNING
        self.waiting_on = None
        self.since = now
        if slept:
            self.last_sleep = now

    def held_names(self) -> list[str]:
        """The held-lock stack as shown in reports, oldest first."""
        return [held_name(e) for e in self.held]

    def __repr__(self) -> str:
        return f"<KTask {self.name} {self.state} held={self.held_names()}>"


_CURRENT: ContextVar[KTask | None] = ContextVar("vballoon_kernel_task", default=None)


def current() -> KTask:
    """The kernel task the calling anyio task runs as (the kernel's ``current``)."""
    t = _CURRENT.get()
    if t is None:
        raise NoKernelTaskError(
            "no kernel task: wrap the actor's coroutine in `with kernel.task(name):` "
            "or start it with kernel.spawn()/kernel.start()"
        )
    return t


def current_or_none() -> KTask | None:
    """The current kernel task, or None in code outside any (interrupt-like callers)."""
    return _CURRENT.get()


def current_name() -> str:
    """The current kernel task's name for log records; ``-`` outside any kernel task."""
    t = _CURRENT.get()
    return "-" if t is None else t.name


class TaskScope:
    """``with kernel.task(name):`` — run the enclosed code as kernel task ``name``."""

    __slots__ = ("_token", "task")

    def __init__(self, task: KTask) -> None:
        self.task = task
        self._token: Token[KTask | None] | None = None

    def __enter__(self) -> KTask:
        self._token = _CURRENT.set(self.task)
        return self.task

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _CURRENT.reset(self._token)
        self._token = None
        self.task.kernel.task_exit(self.task, clean=exc_type is None)
