"""Kernel locking primitives with kernel names and the semantics of Linux 3.6-3.8.

- ``Mutex``: sleeping, non-recursive, and *woken, not handed over* (``__mutex_lock_common`` /
  ``__mutex_unlock_slowpath`` of 3.x): unlock marks the mutex free and wakes the first waiter,
  which stays first in the queue. Until that waiter runs, any running task that calls
  ``mutex_lock`` (or ``mutex_trylock``) takes the free mutex -- it *steals* it -- and the
  waiter, finding it taken again, goes back to sleep. Who wins is the seeded scheduler's
  choice among the tasks runnable at that instant: a ``mutex_lock`` that finds the mutex free
  with a woken sleeper yields first, so that even the releaser re-locking at once (a window
  of zero width in virtual time, microseconds on a CPU) does not always win. The 3.x owner-spinning
  (``mutex_optimistic_spin``: a contender spins while the owner runs, instead of sleeping)
  is not modelled apart from this: it only widens the stealing window, which a task that is
  runnable at the unlock already has.
- ``SpinLock``: an x86 ticket lock, FIFO: unlock hands the lock to the next ticket, so no
  newcomer (``spin_lock`` or ``spin_trylock``) can overtake a queued spinner. The holder is
  atomic, so any sleeping primitive under it is reported. A spinner waits for the hand-off
  and then pays ``costs.spin_relax``: the same virtual time as polling every ``cpu_relax`` but
  one wake-up instead of one per 50 ns, so a lock held for 20 virtual seconds (a soft lockup)
  costs nothing to simulate. ``spin_lock_irq``/``spin_lock_irqsave`` and their unlocks also
  set the hardirq state (``actors.kernel.irq``).
- Page lock: the ``PG_locked`` bit of ``frames.flags[pfn]`` (``trylock_page``/``lock_page``/
  ``unlock_page``); lockdep sees every page lock as class ``page``, shown as ``page:<pfn>``.
  ``unlock_page`` clears the bit and then wakes one sleeper (``clear_bit_unlock`` then
  ``wake_up_page``): any ``trylock_page`` or ``lock_page`` that runs first takes the page
  (``lock_page`` yields to the woken sleeper first, as ``mutex_lock`` does),
  and the woken sleeper re-tests the bit and, if it lost, queues again at the tail
  (``__wait_on_bit_lock``'s exclusive wait).
- ``WaitQueue``: ``wait_event`` (uninterruptible), ``wait_event_interruptible``, ``wake_up``,
  which wakes every (non-exclusive) sleeper to re-check its condition. A condition that reads
  shared state without a lock names its read (``reads="towards_target"``): every evaluation,
  the first and each after a wake-up, is then preceded by a preemption point of that name.
- ``IrqsaveSpinLock``: a ``SpinLock`` whose ``spin_lock``/``spin_unlock`` are
  ``spin_lock_irqsave``/``spin_unlock_irqrestore``, the saved flags kept with the lock (its
  one holder's local): a correction that turns every plain ``spin_lock`` of a lock into the
  irqsave form without rewriting the translated call sites.
- ``Atomic``: ``atomic_t`` as a plain int (atomic because the scheduler is cooperative).

Acquisitions that may block (``mutex_lock``, ``spin_lock``, ``lock_page``, ``wait_event``) are
preemption points: they call ``kernel.preempt`` first. The uncontended path at strength 0 never
suspends -- a few attribute updates, like the kernel's fast path, and one test of the task's
irq usage bits against the lock's cached ones for lockdep. Releases and trylocks are
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

from actors.kernel.irq import (
    local_irq_disable,
    local_irq_enable,
    local_irq_restore,
    local_irq_save,
)
from actors.kernel.kernel import Kernel, lift_page_first
from actors.kernel.lockdep import ALL_USAGE
from actors.kernel.task import (
    _CURRENT,
    BLOCKED,
    ENABLED_HARDIRQ,
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


def _requeue(t: KTask, what: str, now: float) -> None:
    """A woken sleeper lost the race for its lock: it ran, and now sleeps again.

    Like the kernel's context-switch count, which khungtaskd compares, this starts a new
    blocking episode: a task that keeps losing is not hung, it is starved.
    """
    t.run(now, slept=True)
    t.wait(BLOCKED, what, now)


def _acquired(k: Kernel, t: KTask, key: object, cls: str, kind: str, name: str,
              start: float) -> None:
    """Bookkeeping of an acquisition that had to wait: held stack and the debug record."""
    now = k.now()
    t.held.append((key, cls, kind, now))
    if k.debug:
        k.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=name, kind=kind, waited=now - start)


class _MutexWaiter:
    """A sleeper in ``mutex_lock`` (``struct mutex_waiter``): its task and current wake-up."""

    __slots__ = ("ev", "task")

    def __init__(self, task: KTask) -> None:
        self.task = task
        self.ev = new_event()


class _OwnedLock:
    """What a mutex and a spinlock share: an owner, a queue of waiters, lockdep, bad unlocks.

    The subclasses differ in what a release does (``_release``) and so in how a waiter gets
    the lock: handed over (the ticket spinlock) or woken to try again (the mutex).
    """

    __slots__ = ("_race", "_site", "_waiters", "kernel", "lock_class", "name", "owner",
                 "unmarked")

    KIND = MUTEX

    def __init__(self, kernel: Kernel, name: str, lock_class: str | None = None) -> None:
        self.kernel = kernel
        self.name = name
        self.lock_class = name if lock_class is None else lock_class
        self.owner: KTask | None = None
        self._waiters: deque[Any] = deque()
        self._site = f"{self.KIND}_lock({name})"
        self._race = f"race:{name}"
        #: The usage bits lockdep has not recorded for this lock's class (as far as this lock
        #: knows: bits only grow, so a stale cache costs one redundant call, never a miss).
        self.unmarked = ALL_USAGE

    def _validate(self, t: KTask, nested: bool) -> None:
        """Lockdep on a blocking acquisition: mark the irq usage, then check the ordering."""
        lockdep = self.kernel.lockdep
        if t.irq_usage & self.unmarked:
            self.unmarked = lockdep.mark(t, self.lock_class, self.name, t.irq_usage)
        if t.held:
            lockdep.acquire(t, self, self.lock_class, self.name, nested=nested)

    def _contended(self, t: KTask) -> float:
        """Log the contention; the time the wait starts."""
        k = self.kernel
        owner = self.owner  # None: free, with a woken waiter that re-tests first
        if k.debug:
            k.log.debug(schema.LOCK_CONTENDED, task=t.name, lock=self.name, kind=self.KIND,
                        owner="-" if owner is None else owner.name)
        return k.now()

    def _trylock(self) -> bool:
        """``mutex_trylock``/``spin_trylock`` (the methods are this function, saving a call
        on a hot path): take the lock if free; a trylock never waits, so it adds no lockdep
        ordering, though locks taken while holding it are ordered after it."""
        t = _CURRENT.get() or _missing()
        t.ops += 1
        t.debt += self.kernel.lock_cost  # an atomic operation, whether it takes the lock or not
        if self.owner is not None:
            return False
        if t.irq_tryusage & self.unmarked:  # a trylock marks HARDIRQ-ON-W, never IN-HARDIRQ
            self.unmarked = self.kernel.lockdep.mark(t, self.lock_class, self.name,
                                                     t.irq_tryusage)
        self._take(t)
        return True

    def _take(self, t: KTask) -> None:
        """Make ``t`` the owner of the free lock: the uncontended path of every acquire."""
        k = self.kernel
        self.owner = t
        if self.KIND == SPIN:
            t.atomic += 1
            if not t.on_cpu:  # a spin_trylock at the instant its segment began
                k.cpus.pin(t)
        if k.debug:
            t.held.append((self, self.lock_class, self.KIND, k.now()))
            k.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=self.name, kind=self.KIND,
                        waited=0.0)
        else:
            t.held.append((self, self.lock_class, self.KIND, 0.0))

    def _unlock(self) -> None:
        """``mutex_unlock``/``spin_unlock`` (the methods are this function): release by the
        current task, then let a waiter have the lock as the subclass does (``_release``)."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if self.owner is not t:
            raise self._bad_unlock(t)
        held = t.held
        t0 = held.pop()[3] if held[-1][0] is self else _pop_held(t, self)
        t.debt += k.lock_cost
        if self.KIND == SPIN:
            t.atomic -= 1
            if not t.atomic and t.on_cpu:  # preemptible again: off the CPU until it runs
                k.cpus.put(t)
        if k.debug:
            k.log.debug(schema.LOCK_RELEASE, task=t.name, lock=self.name, kind=self.KIND,
                        held=k.now() - t0)
        self._release()

    def _release(self) -> None:
        raise NotImplementedError

    def _bad_unlock(self, t: KTask) -> BadUnlockError:
        owner = None if self.owner is None else self.owner.name
        self.kernel.lockdep.bad_unlock(t, self.name, self.lock_class, owner)
        return BadUnlockError(f"{t.name} released {self.KIND} {self.name} held by "
                              f"{'nobody' if owner is None else owner}")

    def __repr__(self) -> str:
        owner = None if self.owner is None else self.owner.name
        return (f"<{type(self).__name__} {self.name} owner={owner} "
                f"waiters={len(self._waiters)}>")


class Mutex(_OwnedLock):
    """``struct mutex`` of 3.x: sleeping, non-recursive; unlock wakes, a running task may steal.

    Waiters queue in FIFO order and stay queued until they own the mutex, so a waiter that
    lost a race is still the first one the next unlock wakes.
    """

    __slots__ = ()

    def mutex_is_locked(self) -> bool:
        """Whether some task holds the mutex."""
        return self.owner is not None

    async def mutex_lock(self, *, nested: bool = False) -> None:
        """Take the mutex if free (even with sleepers queued), else sleep until it is free
        when woken; a sleeper that finds it taken again sleeps again, first in the queue."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.atomic:
            k.lockdep.might_sleep(t, self.name, "mutex_lock")
        if t.debt:
            k.settle(t)
        if k.perturb.active:
            await k.preempt(self._site)
        if t.held or t.irq_usage & self.unmarked:
            self._validate(t, nested)
        t.ops += 1
        t.debt += k.lock_cost
        # Free, perhaps with a sleeper woken and not yet run: both race for it, and which
        # tests first is a seeded choice (the releaser re-locking at once must not always
        # win by running on: the window has width on a real CPU).
        if self.owner is None and (not self._waiters or not k.woken_first(self._race)):
            self._take(t)  # stolen, if a sleeper was woken: it will find it taken
            return
        await self._sleep(t)

    async def _sleep(self, t: KTask) -> None:
        """``__mutex_lock_common``'s slow path: queue, sleep, re-try when woken."""
        start = self._contended(t)
        if self.owner is t:  # recursion already reported by lockdep: hang like the kernel
            await _sleep_forever(t, BLOCKED, self.name, start)
        entry = _MutexWaiter(t)
        waiters = self._waiters
        waiters.append(entry)
        t.wait(BLOCKED, self.name, start)
        try:
            while True:
                await entry.ev.wait()
                await self.kernel.wake(t)
                if self.owner is None:
                    break
                entry.ev = new_event()  # stolen by a running task: sleep again, still first
                _requeue(t, self.name, self.kernel.now())
        except BaseException:
            waiters.remove(entry)
            if entry.ev.is_set() and self.owner is None and waiters:
                # woken, then cancelled before running (asyncio can; a trio task that was
                # rescheduled always resumes): the wake-up was ours, pass it on
                waiters[0].ev.set()
            raise
        finally:
            t.run(self.kernel.now(), slept=True)
        waiters.remove(entry)
        self.owner = t
        _acquired(self.kernel, t, self, self.lock_class, MUTEX, self.name, start)

    #: Take the mutex if free, sleepers queued or not; never sleeps, so no lockdep ordering.
    mutex_trylock = _OwnedLock._trylock
    #: Release the mutex and wake the first waiter, if any, to try for it (``_release``).
    mutex_unlock = _OwnedLock._unlock

    def _release(self) -> None:
        self.owner = None
        if self._waiters:
            self._waiters[0].ev.set()


class SpinLock(_OwnedLock):
    """``spinlock_t``: a FIFO ticket lock; holding it makes the task atomic."""

    __slots__ = ()

    KIND = SPIN

    async def spin_lock(self, *, nested: bool = False) -> None:
        """Take the lock, busy-waiting (virtual time passes) while another task holds it."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.debt:
            k.settle(t)
        if k.perturb.active:
            await k.preempt(self._site)
        if not t.on_cpu:  # taken, or spun for, on a CPU, kept while the lock is held
            await k.cpus.get(t)
        if t.held or t.irq_usage & self.unmarked:
            self._validate(t, nested)
        t.ops += 1
        t.debt += k.lock_cost
        if self.owner is None:
            self._take(t)
            return
        await self._spin(t)

    async def _spin(self, t: KTask) -> None:
        """Take a ticket and spin until the releaser hands the lock over at our turn."""
        k = self.kernel
        start = self._contended(t)
        if self.owner is t:  # recursion already reported by lockdep: spin forever
            await _sleep_forever(t, SPINNING, self.name, start)
        ev = new_event()
        entry = (t, ev)
        self._waiters.append(entry)
        t.wait(SPINNING, self.name, start)
        try:
            await ev.wait()
            debt, t.debt = t.debt, 0.0  # carried into the spin (``Kernel.settle``)
            await sleep(k.costs.spin_relax + debt)  # the cpu_relax() that sees our ticket
        except BaseException:
            if self.owner is t:  # handed to us as we were cancelled: pass it on
                self._release()
            else:
                self._waiters.remove(entry)
            if not t.atomic and t.on_cpu:
                k.cpus.put(t)
            raise
        finally:
            t.run(k.now(), slept=False)
        _acquired(k, t, self, self.lock_class, SPIN, self.name, start)
        t.atomic += 1

    #: Take the lock if free (no ticket queued); never spins, so no lockdep ordering.
    spin_trylock = _OwnedLock._trylock
    #: Release the lock to the next ticket, if any; the task leaves atomic context.
    spin_unlock = _OwnedLock._unlock

    def _release(self) -> None:
        if self._waiters:
            nxt, ev = self._waiters.popleft()
            self.owner = nxt
            ev.set()
        else:
            self.owner = None

    async def _cpu_first(self) -> None:
        """Pay what the code before cost and be on a CPU *before* turning hardirqs off: a
        task with hardirqs off holds its CPU, and must not take one the others hold."""
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.debt:
            k.settle(t)
        if not t.on_cpu:
            await k.cpus.get(t)

    async def spin_lock_irq(self, *, nested: bool = False) -> None:
        """``spin_lock_irq``: disable hardirqs, then take the lock."""
        await self._cpu_first()
        local_irq_disable(self.kernel)
        await self.spin_lock(nested=nested)

    def spin_unlock_irq(self) -> None:
        """``spin_unlock_irq``: release the lock, then enable hardirqs."""
        self._unlock()
        local_irq_enable(self.kernel)

    async def spin_lock_irqsave(self, *, nested: bool = False) -> int:
        """``spin_lock_irqsave(lock, flags)``: save and disable hardirqs, take the lock;
        the flags to give ``spin_unlock_irqrestore``."""
        await self._cpu_first()
        flags = local_irq_save(self.kernel)
        await self.spin_lock(nested=nested)
        return flags

    def spin_unlock_irqrestore(self, flags: int) -> None:
        """``spin_unlock_irqrestore(lock, flags)``: release, then restore the hardirq state."""
        self._unlock()
        local_irq_restore(self.kernel, flags)

    def spin_is_contended(self) -> bool:
        """Whether another task waits for the lock (compaction's should_release_lock)."""
        return bool(self._waiters)


class IrqsaveSpinLock(SpinLock):
    """A spinlock every acquisition of which is ``spin_lock_irqsave`` (see module doc).

    The flags live on the lock, as the C keeps them in the holder's local ``flags``: only the
    owner reads them, so a release in another function than the acquisition (a helper that
    drops and re-takes its caller's lock) restores what that acquisition saved.
    """

    __slots__ = ("_flags",)

    def __init__(self, kernel: Kernel, name: str, lock_class: str | None = None) -> None:
        super().__init__(kernel, name, lock_class)
        self._flags = 0

    async def spin_lock(self, *, nested: bool = False) -> None:
        """``spin_lock_irqsave(lock, flags)``, the flags kept for ``spin_unlock``."""
        await self._cpu_first()
        flags = local_irq_save(self.kernel)
        await SpinLock.spin_lock(self, nested=nested)
        self._flags = flags

    def spin_unlock(self) -> None:
        """``spin_unlock_irqrestore(lock, flags)`` with the flags its acquisition saved."""
        flags = self._flags
        self._unlock()
        local_irq_restore(self.kernel, flags)


# -- page lock ---------------------------------------------------------------------------------
def _page_mark(kernel: Kernel, t: KTask, pfn: int, usage: int) -> None:
    """Lockdep's usage marks for class ``page``; callers test the kernel's caches first."""
    unmarked = kernel.page_unmarked = kernel.lockdep.mark(t, PAGE, f"page:{pfn}", usage)
    kernel.page_try_unmarked = unmarked & ENABLED_HARDIRQ


def trylock_page(kernel: Kernel, frames: Frames, pfn: int) -> bool:
    """Set PG_locked if clear; never sleeps (so no lockdep ordering, no recursion)."""
    flags = frames.flags
    f = flags[pfn]
    t = _CURRENT.get() or _missing()
    t.ops += 1
    t.debt += kernel.lock_cost
    if kernel.page_first and _spinner_first(kernel, t, pfn):
        return False  # a released spinner re-tested the bit first and set it
    if f & PG_LOCKED:
        return False
    flags[pfn] = f | PG_LOCKED
    kernel.page_owner[pfn] = t
    if kernel.page_try_unmarked:  # the one bit a trylock marks, until class page has it
        _page_mark(kernel, t, pfn, t.irq_tryusage)
    if kernel.debug:
        t.held.append((pfn, PAGE, PAGE, kernel.now()))
        kernel.log.debug(schema.LOCK_ACQUIRE, task=t.name, lock=f"page:{pfn}", kind=PAGE,
                         waited=0.0)
    else:
        t.held.append((pfn, PAGE, PAGE, 0.0))
    return True


async def lock_page(kernel: Kernel, frames: Frames, pfn: int, *, nested: bool = False) -> None:
    """Take the page lock, sleeping (uninterruptibly) until it is clear when woken."""
    t = _CURRENT.get() or _missing()
    if t.atomic:  # also when hardirqs are off: then class page may become IN-HARDIRQ-W
        kernel.lockdep.might_sleep(t, f"page:{pfn}", "lock_page")
        if t.irq_usage & kernel.page_unmarked:
            _page_mark(kernel, t, pfn, t.irq_usage)
    elif kernel.page_try_unmarked:  # not atomic: hardirqs on, the usage is HARDIRQ-ON-W
        _page_mark(kernel, t, pfn, t.irq_usage)
    if t.debt:
        kernel.settle(t)
    if kernel.perturb.active:
        await kernel.preempt("lock_page")
    if t.held:
        kernel.lockdep.acquire(t, pfn, PAGE, f"page:{pfn}", nested=nested)
    t.ops += 1
    t.debt += kernel.lock_cost
    flags = frames.flags
    while kernel.page_first and _spinner_first(kernel, t, pfn):
        await sleep(0.0)  # a released spinner tests the bit first: let it (it is runnable)
    if (pfn in kernel.page_waiters and not flags[pfn] & PG_LOCKED
            and any(ev.is_set() for _, ev in kernel.page_waiters[pfn])
            and kernel.woken_first("race:page")):
        # a woken sleeper re-tests the bit first and takes the page: sleep behind it
        await _lock_page_slow(kernel, frames, t, pfn)
        return
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
    """``__lock_page``: sleep at the tail of the page's queue; woken, test-and-set the bit."""
    name = f"page:{pfn}"
    start = kernel.now()
    owner = kernel.page_owner.get(pfn)
    if kernel.debug:
        kernel.log.debug(schema.LOCK_CONTENDED, task=t.name, lock=name, kind=PAGE,
                         owner="-" if owner is None else owner.name)
    if owner is t:  # recursion already reported by lockdep
        await _sleep_forever(t, BLOCKED, name, start)
    flags = frames.flags
    t.wait(BLOCKED, name, start)
    try:
        while True:
            ev = new_event()
            entry = (t, ev)
            kernel.page_waiters.setdefault(pfn, []).append(entry)
            await ev.wait()
            await kernel.wake(t)
            _page_dequeue(kernel, pfn, entry)  # wake_bit_function's list_del_init, once we run
            f = flags[pfn]
            if not f & PG_LOCKED:
                flags[pfn] = f | PG_LOCKED
                break
            _requeue(t, name, kernel.now())  # another task locked it first: to the tail
    except BaseException:
        if pfn in kernel.page_waiters and entry in kernel.page_waiters[pfn]:
            _page_dequeue(kernel, pfn, entry)
            if ev.is_set() and not flags[pfn] & PG_LOCKED and pfn in kernel.page_waiters:
                _wake_page(kernel, pfn)  # abort_exclusive_wait: pass our wake-up on (as above)
        raise
    finally:
        t.run(kernel.now(), slept=True)
    kernel.page_owner[pfn] = t
    _acquired(kernel, t, pfn, PAGE, PAGE, name, start)


def unlock_page(kernel: Kernel, frames: Frames, pfn: int) -> None:
    """Clear PG_locked, then wake the first sleeper in ``lock_page`` to try for it."""
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
    del kernel.page_owner[pfn]
    t.debt += kernel.lock_cost
    flags[pfn] &= ~PG_LOCKED  # clear_bit_unlock(PG_locked, &page->flags)
    if pfn in kernel.page_waiters:  # wake_up_page(page, PG_locked)
        _wake_page(kernel, pfn)
    if pfn in kernel.page_spinners:  # a CPU polling the bit sees it clear
        spinners = kernel.page_spinners.pop(pfn)
        for _, released in spinners:
            released.set()
        if kernel.woken_first("race:page"):  # ... and re-tests it before anyone else
            kernel.page_first[pfn] = (spinners[0][0], kernel.now())


def _spinner_first(kernel: Kernel, t: KTask, pfn: int) -> bool:
    """Whether a released spinner other than ``t`` tests ``pfn``'s bit first, at this
    instant (``Kernel.page_first``); stale entries, and ``t``'s own, are dropped."""
    lift_page_first(kernel, t)
    return pfn in kernel.page_first


def _wake_page(kernel: Kernel, pfn: int) -> None:
    """Wake the first sleeper on a page not woken yet (``__wake_up_bit``, one exclusive).

    A woken sleeper leaves the queue when it runs, not here, so that a ``lock_page`` meeting
    a clear bit can tell that a woken sleeper is about to re-test it.
    """
    for _, ev in kernel.page_waiters[pfn]:
        if not ev.is_set():
            ev.set()
            return


def _page_dequeue(kernel: Kernel, pfn: int, entry: tuple[KTask, Event]) -> None:
    waiters = kernel.page_waiters[pfn]
    waiters.remove(entry)
    if not waiters:
        del kernel.page_waiters[pfn]


# -- wait queues -------------------------------------------------------------------------------
class WaitQueue:
    """``wait_queue_head_t``: tasks sleep until a condition holds; ``wake_up`` re-checks all."""

    __slots__ = ("_site", "_waiters", "kernel", "name")

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name
        self._waiters: list[Event] = []
        self._site = f"wait_event({name})"

    async def wait_event(self, condition: Callable[[], bool], *,
                         reads: str | None = None) -> None:
        """Sleep uninterruptibly (hung-task watched) until ``condition()`` is true;
        ``reads``: the preemption point before each evaluation (a lockless read)."""
        await self._wait(condition, BLOCKED, "wait_event", reads)

    async def wait_event_interruptible(self, condition: Callable[[], bool], *,
                                       reads: str | None = None) -> None:
        """Sleep interruptibly (not hung-task watched) until ``condition()`` is true;
        ``reads`` as for ``wait_event``."""
        await self._wait(condition, SLEEPING, "wait_event_interruptible", reads)

    async def _wait(self, condition: Callable[[], bool], state: State, primitive: str,
                    reads: str | None) -> None:
        k = self.kernel
        t = _CURRENT.get() or _missing()
        if t.atomic:
            k.lockdep.might_sleep(t, self.name, primitive)
        if t.debt:
            k.settle(t)
        if k.perturb.active:
            await k.preempt(self._site)
            if reads is not None:
                await k.preempt(reads)
        t.ops += 1
        t.debt += k.lock_cost
        if condition():
            return
        t.wait(state, self.name, k.now())
        try:
            while True:
                ev = new_event()
                self._waiters.append(ev)
                if k.debug:
                    k.log.debug(schema.WAIT_SLEEP, task=t.name, queue=self.name)
                try:
                    await ev.wait()
                finally:
                    if not ev.is_set():
                        self._waiters.remove(ev)
                await k.wake(t)  # woken: re-checks the condition once on a CPU
                # the condition is read again, and another CPU may act first
                if reads is not None and k.perturb.active:
                    await k.preempt(reads)
                if condition():
                    break
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
spin_lock_irq = SpinLock.spin_lock_irq
spin_unlock_irq = SpinLock.spin_unlock_irq
spin_lock_irqsave = SpinLock.spin_lock_irqsave
spin_unlock_irqrestore = SpinLock.spin_unlock_irqrestore
wait_event = WaitQueue.wait_event
wait_event_interruptible = WaitQueue.wait_event_interruptible
wake_up = WaitQueue.wake_up

__all__ = [
    "PG_LOCKED",
    "Atomic",
    "BadUnlockError",
    "Frames",
    "IrqsaveSpinLock",
    "Mutex",
    "SpinLock",
    "WaitQueue",
    "lock_page",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "spin_lock",
    "spin_lock_irq",
    "spin_lock_irqsave",
    "spin_trylock",
    "spin_unlock",
    "spin_unlock_irq",
    "spin_unlock_irqrestore",
    "trylock_page",
    "unlock_page",
    "wait_event",
    "wait_event_interruptible",
    "wake_up",
]
