"""Lockdep: the runtime lock validator, checking what the patch's locking scheme promises.

What it tracks, like ``kernel/locking/lockdep.c``:

- a held-lock stack per task (``KTask.held``), pushed on acquire, popped on release;
- lock *classes* (``"vb->balloon_lock"``, ``"vb->pages_lock"``, ``"page"``) and their ordering
  graph: an edge A→B is recorded when B is acquired (blocking) while A is held. Adjacency is
  insertion-ordered dicts, so reports name paths deterministically. A new edge that closes a
  cycle is an **inversion** ("possible circular locking dependency detected").
- **recursion**: a blocking acquisition of a class the task already holds. The same lock
  (or the same page) is a real self-deadlock; another lock of the same class is what lockdep
  reports as "possible recursive locking" unless the acquisition is annotated ``nested=True``
  (``mutex_lock_nested``/``spin_lock_nested`` subclasses). All page locks are one class,
  ``page``: nesting two blocking ``lock_page`` calls is reported unless annotated.
- **the trylock rule**: a trylock never deadlocks, so it adds no edge *to* the lock tried and
  is never recursion; but it is on the held stack, so locks acquired while holding it get
  edges *from* it (``check_prevs_add`` walks trylocked entries too).
- **irq safety** (``mark_irqflags``, ``mark_lock``, ``check_usage``): each class collects usage
  bits, ``IN-HARDIRQ-W`` (taken in hardirq context, see ``actors.kernel.irq``; trylocks do not
  count) and ``HARDIRQ-ON-W`` (taken, or held when hardirqs were enabled, with hardirqs on;
  trylocks count). A class with both is an **irq-inconsistent** report ("inconsistent
  {HARDIRQ-ON-W} -> {IN-HARDIRQ-W} usage"): the interrupt can arrive on the CPU that holds it.
  A new edge that makes a HARDIRQ-safe class (reaching the held lock backwards) precede a
  HARDIRQ-unsafe one (reached forwards from the lock taken) is an **irq-order** report
  ("HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"), and a new usage bit that closes
  the same shape through existing edges is an **irq-inversion** report ("possible irq lock
  inversion dependency detected"). Each report carries the lock acquisitions that registered
  the usage states, as the kernel prints their stack traces: task, held-lock stack, time.
- **sleep-in-atomic**: a sleeping primitive called with a spinlock held ("BUG: sleeping
  function called from invalid context" / "scheduling while atomic").
- **imbalance**: releasing a lock the task does not hold ("bad unlock balance detected"), and
  a function decorated with ``@context(acquires=..., releases=...)`` — the runtime twin of
  sparse's ``__acquires``/``__releases`` — whose net change in held lock classes differs from
  its declaration ("context imbalance in 'fill_balloon' - wrong count at exit").
- **held-at-exit**: a kernel task that ends holding locks.

Each distinct problem is reported once (dedupe by kind and lock classes): an error-level
``lockdep.report`` record and a call to ``Kernel.report`` so the session records a violation.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, TypeVar, cast

from actors.kernel.task import (
    ENABLED_HARDIRQ,
    SPIN,
    USED_IN_HARDIRQ,
    HeldLock,
    KTask,
    current,
    held_name,
)
from actors.sim import schema

F = TypeVar("F", bound=Callable[..., Any])


class Logger(Protocol):
    """The part of structlog's FilteringBoundLogger the kernel uses (tests may fake it)."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


ReportFn = Callable[..., None]

#: Usage bits as lockdep prints them (``usage_str[]``), and the bit each one excludes.
USAGE_STR: dict[int, str] = {USED_IN_HARDIRQ: "IN-HARDIRQ-W", ENABLED_HARDIRQ: "HARDIRQ-ON-W"}
_EXCLUSIVE: dict[int, int] = {USED_IN_HARDIRQ: ENABLED_HARDIRQ, ENABLED_HARDIRQ: USED_IN_HARDIRQ}
#: Every usage bit: a lock's cache of bits its class has not recorded starts as all of them.
ALL_USAGE: Final = USED_IN_HARDIRQ | ENABLED_HARDIRQ

#: Where a usage state was registered: the acquisition's task, its lock stack (oldest first,
#: the lock taken last) and virtual time -- what the kernel prints as a stack trace.
UsageTrace = dict[str, Any]


def _trace_text(trace: UsageTrace) -> str:
    return f"{trace['task']} at t={trace['t']:.6f} taking {' -> '.join(trace['locks'])}"


class Lockdep:
    """One guest kernel's lock validator: class graph, usage bits, dedupe, and the reports."""

    __slots__ = ("_report", "graph", "irq_safe", "log", "reported", "rgraph", "tasks",
                 "usage", "usage_traces")

    def __init__(self, log: Logger, report: ReportFn, tasks: dict[str, KTask]) -> None:
        """``report`` hands a finding to the kernel; ``tasks`` is its live task table."""
        self.log = log
        self._report = report
        self.tasks = tasks
        #: class → {class acquired after it: name of the task that first did so}.
        self.graph: dict[str, dict[str, str]] = {}
        #: The same edges reversed: class → {class held when it was acquired: task name}.
        self.rgraph: dict[str, dict[str, str]] = {}
        #: Keys of problems already reported (membership only, never iterated).
        self.reported: set[tuple[object, ...]] = set()
        #: class → its usage bits (USED_IN_HARDIRQ, ENABLED_HARDIRQ).
        self.usage: dict[str, int] = {}
        #: (class, bit) → where that usage state was first registered.
        self.usage_traces: dict[tuple[str, int], UsageTrace] = {}
        #: Whether any class is HARDIRQ-safe yet: until one is, no irq check can fail.
        self.irq_safe = False

    # -- reporting -----------------------------------------------------------------------------
    def report(
        self, kind: str, t: KTask, lock: str, detail: str, key: tuple[object, ...],
        **extra: Any,
    ) -> bool:
        """Log and hand one problem to the session unless already reported; True if new."""
        if key in self.reported:
            return False
        self.reported.add(key)
        held = t.held_names()
        self.log.error(schema.LOCKDEP, kind=kind, task=t.name, lock=lock, detail=detail,
                       held_locks=held, **extra)
        self._report(kind, detail, task=t.name, lock=lock, held_locks=held, **extra)
        return True

    # -- acquisition ---------------------------------------------------------------------------
    def acquire(self, t: KTask, key: object, cls: str, name: str, *, nested: bool = False) -> None:
        """Check a blocking acquisition against the task's held locks (callers skip it if none)."""
        graph = self.graph
        for entry in t.held:
            hcls = entry[1]
            if hcls == cls:
                if entry[0] == key:
                    self.report(
                        "recursion", t, name,
                        f"possible recursive locking detected: {t.name} is trying to acquire "
                        f"{name} which it already holds (self-deadlock)",
                        ("recursion", cls))
                elif not nested:
                    self.report(
                        "recursion", t, name,
                        f"possible recursive locking detected: {t.name} is trying to acquire "
                        f"{name} while holding {held_name(entry)} of the same class {cls} "
                        f"(no nesting annotation)",
                        ("recursion", cls))
                continue
            succ = graph.get(hcls)
            if succ is None:
                succ = graph[hcls] = {}
            if cls not in succ:
                self._new_edge(t, entry, hcls, cls, name)
                succ[cls] = t.name
                self.rgraph.setdefault(cls, {})[hcls] = t.name
                if self.irq_safe:
                    self._check_irq_usage(t, entry, hcls, cls, name)

    def _new_edge(self, t: KTask, entry: HeldLock, held: str, cls: str, name: str) -> None:
        """Record held→cls; report an inversion if cls already (transitively) precedes held."""
        path = self.path(cls, held)
        if path is None:
            return
        cycle = [held, *path]
        chain = ", ".join(
            f"{a} -> {b} (first in {self.graph[a][b]})" for a, b in itertools.pairwise(path))
        self.report(
            "inversion", t, name,
            f"possible circular locking dependency detected: {t.name} is trying to acquire "
            f"{name} ({cls}) while holding {held_name(entry)} ({held}); existing dependency "
            f"chain {chain}; cycle {' -> '.join(cycle)}",
            ("inversion", *sorted(set(cycle))),
            cycle=cycle)

    def path(self, src: str, dst: str) -> list[str] | None:
        """A path of classes src ⇝ dst in the ordering graph (depth-first, insertion order)."""
        graph = self.graph
        if src == dst:
            return [src]
        seen = {src}
        stack: list[tuple[str, list[str]]] = [(src, [src])]
        while stack:
            node, path = stack.pop()
            for nxt in reversed(graph.get(node, {})):
                if nxt == dst:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    # -- irq safety ----------------------------------------------------------------------------
    def mark(self, t: KTask, cls: str, name: str, bits: int) -> int:
        """``mark_lock`` for each of ``bits`` new to ``cls``; the bits ``cls`` still lacks.

        Locks cache the result, so that an acquisition whose usage its class already has
        costs one test (``t.irq_usage & lock.unmarked``) and no call.
        """
        new = bits & ~self.usage.get(cls, 0)
        if new & USED_IN_HARDIRQ:
            self._mark_one(t, cls, name, USED_IN_HARDIRQ)
        if new & ENABLED_HARDIRQ:
            self._mark_one(t, cls, name, ENABLED_HARDIRQ)
        return ALL_USAGE & ~self.usage.get(cls, 0)

    def mark_held_locks(self, t: KTask) -> None:
        """Hardirqs were enabled: every lock the task holds is now HARDIRQ-ON-W."""
        for entry in t.held:
            self.mark(t, entry[1], held_name(entry), ENABLED_HARDIRQ)

    def _trace(self, t: KTask, name: str) -> UsageTrace:
        locks = t.held_names()
        if not locks or locks[-1] != name:
            locks.append(name)
        return {"task": t.name, "locks": locks, "t": t.kernel.now()}

    def _mark_one(self, t: KTask, cls: str, name: str, bit: int) -> None:
        """Set one usage bit; check it against the class's other bit and its dependencies."""
        usage = self.usage.get(cls, 0)
        self.usage[cls] = usage | bit
        trace = self.usage_traces[(cls, bit)] = self._trace(t, name)
        excl = _EXCLUSIVE[bit]
        if usage & excl:  # valid_state() -> print_usage_bug()
            was = self.usage_traces[(cls, excl)]
            self.report(
                "irq-inconsistent", t, name,
                f"inconsistent {{{USAGE_STR[excl]}}} -> {{{USAGE_STR[bit]}}} usage: {t.name} "
                f"({_irq_context(t)}) takes {name} ({cls}); {{{USAGE_STR[excl]}}} state was "
                f"registered at: {_trace_text(was)}",
                ("irq-inconsistent", cls),
                usage=[USAGE_STR[excl], USAGE_STR[bit]], registered=was, trace=trace)
            return
        if bit == USED_IN_HARDIRQ:  # check_usage_forwards: no HARDIRQ-unsafe lock after it
            self.irq_safe = True
            path = self._find_usage(cls, self.graph, ENABLED_HARDIRQ)
        elif self.irq_safe:  # check_usage_backwards: no HARDIRQ-safe lock before it
            path = self._find_usage(cls, self.rgraph, USED_IN_HARDIRQ)
        else:
            return
        if path is not None:
            self._irq_inversion(t, name, cls, bit, path, trace)

    def _find_usage(self, src: str, graph: dict[str, dict[str, str]], bit: int
                    ) -> list[str] | None:
        """The shortest path from ``src`` (itself included) to a class with ``bit``, in
        ``graph`` (forwards) or ``rgraph`` (backwards): breadth first, insertion order."""
        usage = self.usage
        if usage.get(src, 0) & bit:
            return [src]
        parent: dict[str, str] = {src: src}
        frontier = [src]
        while frontier:
            nxt_frontier: list[str] = []
            for node in frontier:
                for nxt in graph.get(node, {}):
                    if nxt in parent:
                        continue
                    parent[nxt] = node
                    if usage.get(nxt, 0) & bit:
                        path = [nxt]
                        while path[-1] != src:
                            path.append(parent[path[-1]])
                        return path[::-1]
                    nxt_frontier.append(nxt)
            frontier = nxt_frontier
        return None

    def _check_irq_usage(self, t: KTask, entry: HeldLock, held: str, cls: str, name: str
                         ) -> None:
        """``check_usage`` on the new edge held→cls: a HARDIRQ-safe class at or before held,
        a HARDIRQ-unsafe one at or after cls, is ``print_bad_irq_dependency``."""
        back = self._find_usage(held, self.rgraph, USED_IN_HARDIRQ)
        if back is None:
            return
        fwd = self._find_usage(cls, self.graph, ENABLED_HARDIRQ)
        if fwd is None:
            return
        safe, unsafe = back[-1], fwd[-1]
        safe_at = self.usage_traces[(safe, USED_IN_HARDIRQ)]
        unsafe_at = self.usage_traces[(unsafe, ENABLED_HARDIRQ)]
        self.report(
            "irq-order", t, name,
            f"HARDIRQ-safe -> HARDIRQ-unsafe lock order detected: {t.name} "
            f"({_irq_context(t)}) is trying to acquire {name} ({cls}) while holding "
            f"{held_name(entry)} ({held}), which would create a new lock dependency {held} -> "
            f"{cls}; but this new dependency connects a HARDIRQ-irq-safe lock {safe}, which "
            f"became HARDIRQ-irq-safe at: {_trace_text(safe_at)}; to a HARDIRQ-irq-unsafe lock "
            f"{unsafe}, which became HARDIRQ-irq-unsafe at: {_trace_text(unsafe_at)}",
            ("irq-order", safe, unsafe),
            edge=[held, cls], safe=safe, unsafe=unsafe, safe_path=back[::-1],
            unsafe_path=fwd, safe_at=safe_at, unsafe_at=unsafe_at)

    def _irq_inversion(self, t: KTask, name: str, cls: str, bit: int, path: list[str],
                       trace: UsageTrace) -> None:
        """``print_irq_inversion_bug``: a new usage bit meets the other one along ``path``."""
        other = path[-1]
        excl = _EXCLUSIVE[bit]
        other_at = self.usage_traces[(other, excl)]
        if bit == USED_IN_HARDIRQ:
            how = f"but this lock took another, HARDIRQ-unsafe lock in the past: {other}"
            safe, unsafe, chain = cls, other, path
        else:
            how = f"but this lock was taken by another, HARDIRQ-safe lock in the past: {other}"
            safe, unsafe, chain = other, cls, path[::-1]
        self.report(
            "irq-inversion", t, name,
            f"possible irq lock inversion dependency detected: {t.name} ({_irq_context(t)}) "
            f"just changed the state of lock {name} ({cls}) to {USAGE_STR[bit]}, {how} "
            f"(dependency chain {' -> '.join(chain)}; {{{USAGE_STR[excl]}}} of {other} "
            f"registered at: {_trace_text(other_at)}), and interrupts could create inverse "
            f"lock ordering between them",
            ("irq-order", safe, unsafe),
            safe=safe, unsafe=unsafe, chain=chain, trace=trace, registered=other_at)

    def irqs_on_in_irq(self, t: KTask) -> None:
        """Report an interrupt handler enabling hardirqs (the kernel WARNs and ignores it)."""
        self.report(
            "irq-state", t, "-",
            f"WARNING: {t.name} enables hardirqs in hardirq context (ignored)",
            ("irq-state", t.name))

    # -- context checks ------------------------------------------------------------------------
    def might_sleep(self, t: KTask, what: str, primitive: str) -> None:
        """Report a sleeping primitive called in atomic context (callers check ``t.atomic``)."""
        spins = [held_name(e) for e in t.held if e[2] == SPIN]
        why = [f"holding spinlock {', '.join(spins)}"] if spins else []
        if not t.hardirqs_enabled:
            why.append(_irq_context(t))
        self.report(
            "sleep-in-atomic", t, what,
            f"BUG: sleeping function called from invalid context: {primitive}({what}) in "
            f"{t.name} while {' and '.join(why)}",
            ("sleep-in-atomic", primitive, what, *spins, t.hardirq_context))

    def bad_unlock(self, t: KTask, name: str, cls: str, owner: str | None) -> None:
        """Report a release of a lock the task does not hold."""
        who = "nobody" if owner is None else owner
        self.report(
            "imbalance", t, name,
            f"bad unlock balance detected: {t.name} is trying to release {name} "
            f"but it is held by {who}",
            ("imbalance", "unlock", cls))

    def held_at_exit(self, t: KTask) -> None:
        """Report a kernel task that ends with locks still held."""
        if not t.held:
            return
        names = t.held_names()
        self.report(
            "held-at-exit", t, names[-1],
            f"lock held when task exits: {t.name} exited holding {', '.join(names)}",
            ("held-at-exit", *[e[1] for e in t.held]))

    def check_context(
        self, t: KTask, fn: str, before: list[str], acquires: tuple[str, ...],
        releases: tuple[str, ...],
    ) -> None:
        """Compare the net change in held classes over a call with its declaration."""
        after = [e[1] for e in t.held]
        if after == before and not acquires and not releases:
            return
        classes = dict.fromkeys([*before, *after, *acquires, *releases])
        for cls in classes:
            want = acquires.count(cls) - releases.count(cls)
            got = after.count(cls) - before.count(cls)
            if got == want:
                continue
            if want == 0 and got > 0:
                why = f"returns holding {cls}, not declared in acquires"
            elif want == 0:
                why = f"unexpected unlock of {cls}, not declared in releases"
            elif want > 0:
                why = f"declared to acquire {cls} but returns without it"
            else:
                why = f"declared to release {cls} but returns still holding it"
            self.report(
                "imbalance", t, cls,
                f"context imbalance in '{fn}' - wrong count at exit: {why}",
                ("imbalance", fn, cls), function=fn)

    # -- dumps ---------------------------------------------------------------------------------
    def show_all_locks(self) -> list[dict[str, Any]]:
        """Every kernel task's state, wait target and held locks, in task-table order."""
        return [
            {"task": t.name, "state": t.state, "waiting_on": t.waiting_on,
             "held": t.held_names()}
            for t in self.tasks.values()
        ]


def _irq_context(t: KTask) -> str:
    """The task's irq state as reports name it."""
    if t.hardirq_context:
        return "in hardirq context"
    return "hardirqs enabled" if t.hardirqs_enabled else "hardirqs disabled"


def context(
    *, acquires: Iterable[str] = (), releases: Iterable[str] = ()
) -> Callable[[F], F]:
    """Declare a kernel function's net lock effect, like sparse's __acquires/__releases."""
    acq = tuple(acquires)
    rel = tuple(releases)
    balanced = not acq and not rel

    def check(t: KTask, name: str, before: list[HeldLock]) -> None:
        # held only grows by appending a fresh entry: the same length and the same top entry
        # mean the same stack, so a balanced function needs no class-by-class comparison.
        held = t.held
        if balanced and len(held) == len(before) and (not before or held[-1] is before[-1]):
            return
        t.kernel.lockdep.check_context(t, name, [e[1] for e in before], acq, rel)

    def decorate(fn: F) -> F:
        name = fn.__qualname__
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_checked(*args: Any, **kwargs: Any) -> Any:
                t = current()
                before = t.held[:]
                result = await fn(*args, **kwargs)
                check(t, name, before)
                return result

            return cast(F, async_checked)

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            t = current()
            before = t.held[:]
            result = fn(*args, **kwargs)
            check(t, name, before)
            return result

        return cast(F, checked)

    return decorate
