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
- Trylocks never deadlock: they add no edge *to* the lock taken and are never recursion,
  though later acquisitions add edges *from* it (lockdep does the same).
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
from typing import Any, Protocol, TypeVar, cast

from actors.kernel.task import SPIN, HeldLock, KTask, current, held_name
from actors.sim import schema

F = TypeVar("F", bound=Callable[..., Any])


class Logger(Protocol):
    """The part of structlog's FilteringBoundLogger the kernel uses (tests may fake it)."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


ReportFn = Callable[..., None]


class Lockdep:
    """One guest kernel's lock validator: class graph, dedupe, and the reports."""

    __slots__ = ("_report", "graph", "log", "reported", "tasks")

    def __init__(self, log: Logger, report: ReportFn, tasks: dict[str, KTask]) -> None:
        """``report`` hands a finding to the kernel; ``tasks`` is its live task table."""
        self.log = log
        self._report = report
        self.tasks = tasks
        #: class → {class acquired after it: name of the task that first did so}.
        self.graph: dict[str, dict[str, str]] = {}
        #: Keys of problems already reported (membership only, never iterated).
        self.reported: set[tuple[object, ...]] = set()

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

    # -- context checks ------------------------------------------------------------------------
    def might_sleep(self, t: KTask, what: str, primitive: str) -> None:
        """Report a sleeping primitive called in atomic context (callers check ``t.atomic``)."""
        spins = [held_name(e) for e in t.held if e[2] == SPIN]
        self.report(
            "sleep-in-atomic", t, what,
            f"BUG: sleeping function called from invalid context: {primitive}({what}) in "
            f"{t.name} while holding spinlock {', '.join(spins)}",
            ("sleep-in-atomic", primitive, what, *spins))

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
