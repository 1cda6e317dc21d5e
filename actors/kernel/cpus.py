"""The guest's CPUs: at most ``guest.cpus`` kernel tasks execute at once.

Kernel code between two scheduling points runs at one virtual instant and its cost is paid at
the next point (``Kernel.schedule``): a task owes ``KTask.debt`` for the lock, list, page-flag
and PFN operations it did, and pays it *on a CPU*. So a CPU is held:

- while a task pays its debt (the instructions since its last scheduling point execute);
- while it spins: waiting for a ticket spinlock, or in a ``cpu_relax`` retry loop;
- for as long as it is atomic (a spinlock held, or hardirqs off): preemption is disabled, the
  task cannot leave its CPU, and a second task wanting a spinlock it holds must find another;
- while a task woken from a sleep re-tests what it slept for (a woken task needs a CPU first).

A task that needs a CPU while all are held queues for one (FIFO, like a run queue of equal
priorities) and runs when a holder leaves. Sleeping, blocking and waiting on things outside
the kernel (an inbox, the allocator) hold none. An interrupt handler runs on the CPU it
interrupted; because its task may hold none at that instant, becoming atomic without a CPU
*pins* one at once (``pin``), even if that over-commits the set for the zero-width moment the
handler runs. The same happens when a task becomes atomic synchronously (``spin_trylock``,
``local_irq_disable``) at the instant its previous segment ended: its code ran on a CPU there.
"""

from __future__ import annotations

from collections import deque

from actors.kernel.task import KTask
from actors.sim.events import Event, new_event


class Cpus:
    """A guest's CPUs as a count of free ones and a FIFO of tasks waiting for one."""

    __slots__ = ("free", "n", "waiting")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"a guest needs at least one CPU, got {n}")
        self.n = n
        #: CPUs nobody holds; below zero while atomic tasks over-commit the set (see module).
        self.free = n
        #: Tasks waiting for a CPU, first come first served (never non-empty with ``free > 0``).
        self.waiting: deque[tuple[KTask, Event]] = deque()

    async def get(self, t: KTask) -> None:
        """Take a CPU for ``t``, waiting for one if all are held."""
        if self.free > 0:
            self.free -= 1
            t.on_cpu = True
            return
        entry = (t, new_event())
        self.waiting.append(entry)
        try:
            await entry[1].wait()
        except BaseException:
            if t.on_cpu:  # handed to us as we were cancelled: pass it on
                self.put(t)
            else:
                self.waiting.remove(entry)
            raise

    def pin(self, t: KTask) -> None:
        """``t`` became atomic without holding a CPU: it holds one from now on (see module)."""
        self.free -= 1
        t.on_cpu = True

    def put(self, t: KTask) -> None:
        """``t`` leaves its CPU: to the first waiter, or back to the free ones."""
        t.on_cpu = False
        if self.free == 0 and self.waiting:
            nxt, ev = self.waiting.popleft()
            nxt.on_cpu = True
            ev.set()
        else:
            self.free += 1

    def busy(self) -> int:
        """CPUs held now (more than ``n`` while over-committed)."""
        return self.n - self.free

    def __repr__(self) -> str:
        return f"<Cpus {self.busy()}/{self.n} busy, {len(self.waiting)} waiting>"
