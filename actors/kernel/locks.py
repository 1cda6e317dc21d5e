"""Kernel locking primitives with kernel names and semantics, instrumented for lockdep.

- ``Mutex``: sleeping, non-recursive, FIFO hand-off to the first waiter on unlock.
- ``SpinLock``: a ticket lock (FIFO); the holder is atomic, so any sleeping primitive under it
  is reported. A spinner waits for the hand-off and then pays ``costs.spin_relax``: the same
  virtual time as polling every ``cpu_relax`` but one wake-up instead of one per 50 ns, so a
  lock held for 20 virtual seconds (a soft lockup) costs nothing to simulate.
- Page lock: the ``PG_locked`` bit of ``frames.flags[pfn]`` (``trylock_page``/``lock_page``/
  ``unlock_page``); lockdep sees every page lock as class ``page``, shown as ``page:<pfn>``.
- ``WaitQueue``: ``wait_event`` (uninterruptible), ``wait_event_interruptible``, ``wake_up``.
- ``Atomic``: ``atomic_t`` as a plain int (atomic because the scheduler is cooperative).

Acquisitions that may block (``mutex_lock``, ``spin_lock``, ``lock_page``, ``wait_event``) are
preemption points: they call ``kernel.preempt`` first. The uncontended path at strength 0 never
suspends — a few attribute updates, like the kernel's fast path. Releases and trylocks are
synchronous like their C call sites and are *not* preemption points: translated code that
reads shared state between an unlock and its next lock operation calls ``kernel.preempt``.

Self-deadlock is modelled like the kernel: a task re-acquiring its own mutex or page lock is
reported (``recursion``) and then sleeps forever, so the hung-task watchdog names it; spinning
on its own spinlock spins forever, so the soft-lockup watchdog does. Releasing a lock the task
does not hold is reported (``imbalance``) and raises ``BadUnlockError``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import anyio

from actors.kernel.kernel import Kernel
from actors.kernel.task import (
    _CURRENT,
    BLOCKED,
    MUTEX,
    PAGE,
    SLEEPING,
    SPIN,
    SPINNING,
    KTask,
    State,
    current,
    current_name,
)
from actors.sim import schema
from actors.sim.clock import sleep
from actors.sim.events import Event, new_event

#: ``PG_locked`` as a mask in ``frames.flags``; equals ``actors.guest.mm.pages.PG_locked``.
PG_LOCKED: Final = 1 << 0


class BadUnlockError(RuntimeError):
    """A task released a lock it does not hold (the kernel would WARN and corrupt state)."""


class Frames(Protocol):
    """What the page lock needs of ``PageFrames``: the per-PFN flags array."""

    @property
    def flags(self) -> Any: ...


def _missing() -> KTask:
    return current()  # raises NoKernelTaskError with the how-to message


def _pop_held(t: KTask, key: object) -> float:
    """Remove ``key``'s entry from below the top of the held stack; its acquire time."""
    held = t.held
    for i in range(len(held) - 1, -1, -1):
        if held[i][0] == key:
            return held.pop(i)[3]
    raise AssertionError(f"{key!r} not on {t.name}'s held stack")


async def _sleep_forever(t: KTask, state: State, what: str, now: float) -> None:
    """A self-deadlock: leave the CPU for good (cancellable, so sessions can end)."""
    t.wait(state, what, now)
    try:
        await anyio.sleep_forever()
    finally:
        t.run(t.kernel.now(), slept=state != SPINNING)


class _OwnedLock:
    """What a mutex and a spinlock share: an owner, a FIFO of waiters, hand-off, bad unlocks."""

    __slots__ = ("_site", "_waiters", "kernel", "lock_class", "name", "owner")

    KIND = MUTEX
    #: How a waiter waits: sleeping (blocked) for a mutex, busy (spinning) for a spinlock.
    WAIT_STATE: State = BLOCKED

    def __init__(self, kernel: Kernel, name: str, lock_class: str | None = None) -> None:
        self.kernel = kernel
        self.name = name
        self.lock_class = name if lock_class is None else lock_class
        self.owner: KTask | None = None
        self._waiters: deque[tuple[KTask, Event]] = deque()
        self._site = f"{self.KIND}_lock({name})"

    async def _wait_turn(self, t: KTask) -> float:
        """Queue behind the owner until handed the lock; the virtual time waited."""
        k = self.kernel
        owner = self.owner
        assert owner is not None
        start = k.now()
        if k.debug:
            k.log.debug(schema.LOCK_CONTENDED, task=t.name, lock=self.name, kind=self.KIND,
                        owner=owner.name)
        state = self.WAIT_STATE
        if owner is t:  # recursion already reported by lockdep: hang like the kernel
            await _sleep_forever(t, state, self.name, start)
        ev = new_event()
        entry = (t, ev)
        self._waiters.append(entry)
        t.wait(state, self.name, start)
        try:
            await ev.wait()
            if state == SPINNING:
                await sleep(k.costs.spin_relax)  # the cpu_relax() that sees our ticket
        except BaseException:
            if self.owner is t:  # handed to us as we were cancelled: pass it on
                self._release()
            else:
                self._waiters.remove(entry)
            raise
        finally:
            t.run(k.now(), slept=state != SPINNING)
        now = k.now()
        t.held.append((self, self.lock_class, self.KIND, now))
        if k.debug:
            k.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=self.name, kind=self.KIND,
                        waited=now - start)
        return now - start

    def _trylock(self) -> bool:
        if self.owner is not None:
            return False
        t = _CURRENT.get() or _missing()
        t.ops += 1
        self._take(t)
        return True

    async def _acquire(self, t: KTask, nested: bool) -> None:
        """A preemption point, lockdep's ordering check, then the lock (or a wait for it)."""
        k = self.kernel
        if k.perturb.active:
            await k.preempt(self._site)
        if t.held:
            k.lockdep.acquire(t, self, self.lock_class, self.name, nested=nested)
        t.ops += 1
        if self.owner is None:
            self._take(t)
            return
        await self._wait_turn(t)
        if self.KIND == SPIN:
            t.atomic += 1

    def _take(self, t: KTask) -> None:
        """Make ``t`` the owner of the free lock: the uncontended path of every acquire."""
        k = self.kernel
        self.owner = t
        if self.KIND == SPIN:
            t.atomic += 1
        if k.debug:
            t.held.append((self, self.lock_class, self.KIND, k.now()))
            k.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=self.name, kind=self.KIND,
                        waited=0.0)
        else:
            t.held.append((self, self.lock_class, self.KIND, 0.0))

    def _unlock(self) -> None:
        """Release by the current task, handing the lock to the first waiter if any."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if self.owner is not t:
            raise self._bad_unlock(t)
        held = t.held
        t0 = held.pop()[3] if held[-1][0] is self else _pop_held(t, self)
        if self.KIND == SPIN:
            t.atomic -= 1
        if k.debug:
            k.log.debug(schema.LOCK_RELEASE, task=t.name, lock=self.name, kind=self.KIND,
                        held=k.now() - t0)
        self._release()

    def _bad_unlock(self, t: KTask) -> BadUnlockError:
        owner = None if self.owner is None else self.owner.name
        self.kernel.lockdep.bad_unlock(t, self.name, self.lock_class, owner)
        return BadUnlockError(f"{t.name} released {self.KIND} {self.name} held by "
                              f"{'nobody' if owner is None else owner}")

    def _release(self) -> None:
        if self._waiters:
            nxt, ev = self._waiters.popleft()
            self.owner = nxt
            ev.set()
        else:
            self.owner = None

    def __repr__(self) -> str:
        owner = None if self.owner is None else self.owner.name
        return (f"<{type(self).__name__} {self.name} owner={owner} "
                f"waiters={len(self._waiters)}>")


class Mutex(_OwnedLock):
    """``struct mutex``: sleeping, non-recursive, FIFO hand-off."""

    __slots__ = ()

    def mutex_is_locked(self) -> bool:
        """Whether some task holds the mutex."""
        return self.owner is not None

    async def mutex_lock(self, *, nested: bool = False) -> None:
        """Take the mutex, sleeping while another task holds it."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.atomic:
            k.lockdep.might_sleep(t, self.name, "mutex_lock")
        await self._acquire(t, nested)

    def mutex_trylock(self) -> bool:
        """Take the mutex if free; never sleeps, never deadlocks (so no lockdep ordering)."""
        return self._trylock()

    def mutex_unlock(self) -> None:
        """Release the mutex, handing it to the first waiter if any."""
        self._unlock()


class SpinLock(_OwnedLock):
    """``spinlock_t``: a FIFO ticket lock; holding it makes the task atomic."""

    __slots__ = ()

    KIND = SPIN
    WAIT_STATE = SPINNING

    async def spin_lock(self, *, nested: bool = False) -> None:
        """Take the lock, busy-waiting (virtual time passes) while another task holds it."""
        await self._acquire(_CURRENT.get() or _missing(), nested)

    def spin_trylock(self) -> bool:
        """Take the lock if free; never spins."""
        return self._trylock()

    def spin_unlock(self) -> None:
        """Release the lock to the next ticket, if any; the task leaves atomic context."""
        self._unlock()

    def spin_is_contended(self) -> bool:
        """Whether another task waits for the lock (compaction's should_release_lock)."""
        return bool(self._waiters)


# -- page lock ---------------------------------------------------------------------------------
def trylock_page(kernel: Kernel, frames: Frames, pfn: int) -> bool:
    """Set PG_locked if clear; never sleeps (so no lockdep ordering, no recursion)."""
    flags = frames.flags
    f = flags[pfn]
    if f & PG_LOCKED:
        return False
    flags[pfn] = f | PG_LOCKED
    t = _CURRENT.get() or _missing()
    kernel.page_owner[pfn] = t
    t.ops += 1
    if kernel.debug:
        t.held.append((pfn, PAGE, PAGE, kernel.now()))
        kernel.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=f"page:{pfn}", kind=PAGE,
                         waited=0.0)
    else:
        t.held.append((pfn, PAGE, PAGE, 0.0))
    return True


async def lock_page(kernel: Kernel, frames: Frames, pfn: int, *, nested: bool = False) -> None:
    """Take the page lock, sleeping (uninterruptibly) until its holder unlocks it."""
    t = _CURRENT.get() or _missing()
    if t.atomic:
        kernel.lockdep.might_sleep(t, f"page:{pfn}", "lock_page")
    if kernel.perturb.active:
        await kernel.preempt("lock_page")
    if t.held:
        kernel.lockdep.acquire(t, pfn, PAGE, f"page:{pfn}", nested=nested)
    t.ops += 1
    flags = frames.flags
    f = flags[pfn]
    if not f & PG_LOCKED:
        flags[pfn] = f | PG_LOCKED
        kernel.page_owner[pfn] = t
        if kernel.debug:
            t.held.append((pfn, PAGE, PAGE, kernel.now()))
            kernel.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=f"page:{pfn}", kind=PAGE,
                             waited=0.0)
        else:
            t.held.append((pfn, PAGE, PAGE, 0.0))
        return
    await _lock_page_slow(kernel, frames, t, pfn)


async def _lock_page_slow(kernel: Kernel, frames: Frames, t: KTask, pfn: int) -> None:
    name = f"page:{pfn}"
    start = kernel.now()
    owner = kernel.page_owner.get(pfn)
    if kernel.debug:
        kernel.log.debug(schema.LOCK_CONTENDED, task=t.name, lock=name, kind=PAGE,
                         owner="-" if owner is None else owner.name)
    if owner is t:  # recursion already reported by lockdep
        await _sleep_forever(t, BLOCKED, name, start)
    ev = new_event()
    entry = (t, ev)
    waiters = kernel.page_waiters.setdefault(pfn, [])
    waiters.append(entry)
    t.wait(BLOCKED, name, start)
    try:
        await ev.wait()
    except BaseException:
        if kernel.page_owner.get(pfn) is t:  # handed over as we were cancelled
            _page_release(kernel, frames, pfn)
        else:
            waiters.remove(entry)
            if not waiters:
                del kernel.page_waiters[pfn]
        raise
    finally:
        t.run(kernel.now(), slept=True)
    now = kernel.now()
    t.held.append((pfn, PAGE, PAGE, now))
    if kernel.debug:
        kernel.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=name, kind=PAGE,
                         waited=now - start)


def unlock_page(kernel: Kernel, frames: Frames, pfn: int) -> None:
    """Clear PG_locked, or hand the lock to the first sleeper in ``lock_page``."""
    t = _CURRENT.get() or _missing()
    flags = frames.flags
    owner = kernel.page_owner.get(pfn)
    if owner is not t:
        if owner is None and flags[pfn] & PG_LOCKED:
            flags[pfn] &= ~PG_LOCKED  # locked outside the substrate: nothing to account
            return
        name = f"page:{pfn}"
        kernel.lockdep.bad_unlock(t, name, PAGE, None if owner is None else owner.name)
        raise BadUnlockError(f"{t.name} unlocked {name} held by "
                             f"{'nobody' if owner is None else owner.name}")
    held = t.held
    t0 = held.pop()[3] if held[-1][0] == pfn else _pop_held(t, pfn)
    if kernel.debug:
        kernel.log.debug(schema.LOCK_RELEASE, task=t.name, lock=f"page:{pfn}", kind=PAGE,
                         held=kernel.now() - t0)
    if pfn in kernel.page_waiters:
        _page_release(kernel, frames, pfn)
    else:
        del kernel.page_owner[pfn]
        flags[pfn] &= ~PG_LOCKED


def _page_release(kernel: Kernel, frames: Frames, pfn: int) -> None:
    """Hand a page lock (PG_locked stays set) to its first sleeper, or clear PG_locked."""
    waiters = kernel.page_waiters.get(pfn)
    if waiters is None:
        del kernel.page_owner[pfn]
        frames.flags[pfn] &= ~PG_LOCKED
        return
    nxt, ev = waiters.pop(0)
    if not waiters:
        del kernel.page_waiters[pfn]
    kernel.page_owner[pfn] = nxt
    ev.set()


# -- wait queues -------------------------------------------------------------------------------
class WaitQueue:
    """``wait_queue_head_t``: tasks sleep until a condition holds; ``wake_up`` re-checks all."""

    __slots__ = ("_site", "_waiters", "kernel", "name")

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name
        self._waiters: list[Event] = []
        self._site = f"wait_event({name})"

    async def wait_event(self, condition: Callable[[], bool]) -> None:
        """Sleep uninterruptibly (hung-task watched) until ``condition()`` is true."""
        await self._wait(condition, BLOCKED, "wait_event")

    async def wait_event_interruptible(self, condition: Callable[[], bool]) -> None:
        """Sleep interruptibly (not hung-task watched) until ``condition()`` is true."""
        await self._wait(condition, SLEEPING, "wait_event_interruptible")

    async def _wait(self, condition: Callable[[], bool], state: State, primitive: str) -> None:
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.atomic:
            k.lockdep.might_sleep(t, self.name, primitive)
        if k.perturb.active:
            await k.preempt(self._site)
        t.ops += 1
        if condition():
            return
        t.wait(state, self.name, k.now())
        try:
            while not condition():
                ev = new_event()
                self._waiters.append(ev)
                if k.debug:
                    k.log.debug(schema.WAIT_SLEEP, task=t.name, queue=self.name)
                try:
                    await ev.wait()
                finally:
                    if not ev.is_set():
                        self._waiters.remove(ev)
        finally:
            t.run(k.now(), slept=True)

    def wake_up(self) -> int:
        """Wake every sleeper to re-check its condition; how many were woken."""
        waiters = self._waiters
        k = self.kernel
        if k.debug:
            k.log.debug(schema.WAIT_WAKE, task=current_name(), queue=self.name,
                        woken=len(waiters))
        if not waiters:
            return 0
        self._waiters = []
        for ev in waiters:
            ev.set()
        return len(waiters)


class Atomic:
    """``atomic_t``: an int whose operations cannot interleave (no await inside them)."""

    __slots__ = ("counter",)

    def __init__(self, value: int = 0) -> None:
        self.counter = value

    def atomic_read(self) -> int:
        """The current value."""
        return self.counter

    def atomic_set(self, i: int) -> None:
        """Set the value."""
        self.counter = i

    def atomic_add(self, i: int) -> None:
        """Add ``i``."""
        self.counter += i

    def atomic_sub(self, i: int) -> None:
        """Subtract ``i``."""
        self.counter -= i

    def atomic_inc(self) -> None:
        """Add one."""
        self.counter += 1

    def atomic_dec(self) -> None:
        """Subtract one."""
        self.counter -= 1

    def atomic_dec_and_test(self) -> bool:
        """Subtract one; whether the result is zero."""
        self.counter -= 1
        return self.counter == 0

    def __repr__(self) -> str:
        return f"Atomic({self.counter})"


# C-style spellings: ``await mutex_lock(vb.balloon_lock)`` reads like the patch, at no cost.
mutex_lock = Mutex.mutex_lock
mutex_trylock = Mutex.mutex_trylock
mutex_unlock = Mutex.mutex_unlock
spin_lock = SpinLock.spin_lock
spin_trylock = SpinLock.spin_trylock
spin_unlock = SpinLock.spin_unlock
wait_event = WaitQueue.wait_event
wait_event_interruptible = WaitQueue.wait_event_interruptible
wake_up = WaitQueue.wake_up

__all__ = [
    "PG_LOCKED",
    "Atomic",
    "BadUnlockError",
    "Frames",
    "Mutex",
    "SpinLock",
    "WaitQueue",
    "lock_page",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "trylock_page",
    "unlock_page",
    "wait_event",
    "wait_event_interruptible",
    "wake_up",
]
