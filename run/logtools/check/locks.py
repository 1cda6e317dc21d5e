"""Lock discipline from ``lock.*`` and ``wait.sleep`` records (``--level debug`` logs): mutual
exclusion, unlock by the owner, no waiting for a lock one holds, no sleeping under a spinlock.
Lock-order inversions need what the log does not carry; lockdep reports those live."""

from __future__ import annotations

from .base import CheckerBase
from .model import Guest, Hold, Record


class LockRules(CheckerBase):
    """``lock.acquire``, ``lock.release``, ``lock.contended`` and ``wait.sleep`` records."""

    def _lock_acquire(self, rec: Record) -> None:
        self._saw_locks = True
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        task, lock = rec["task"], rec["lock"]
        locks = g.locks
        owner = locks.get(lock)
        if owner is not None:
            self._violation(
                "mutual-exclusion", rec, g.name,
                f"{task} acquired {lock} while {owner.who} holds it (since t={owner.t:.6f}, "
                f"seq {owner.seq})", locks=[lock], tasks=[task, owner.who])
        locks[lock] = Hold(task, rec["t"], rec["seq"])
        if g.waiting:
            g.waiting.pop(task, None)
        if rec["kind"] == "spin":
            g.spins.setdefault(task, []).append(lock)

    def _lock_release(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        task, lock = rec["task"], rec["lock"]
        owner = g.locks.pop(lock, None)
        if owner is None or owner.who != task:
            who = "nobody" if owner is None else owner.who
            self._violation("bad-unlock", rec, g.name, f"{task} released {lock}, held by {who}",
                            locks=[lock], tasks=[task] if owner is None else [task, owner.who])
            if owner is not None:
                g.locks[lock] = owner
            return
        if rec["kind"] == "spin":
            held = g.spins.get(task)
            if held and lock in held:
                held.remove(lock)

    def _lock_contended(self, rec: Record) -> None:
        g = self._guest(rec)
        task, lock, kind = rec["task"], rec["lock"], rec["kind"]
        owner = g.locks.get(lock)
        if owner is not None and owner.who == task:
            self._violation("self-deadlock", rec, g.name,
                            f"{task} waits for {lock}, which it has held since "
                            f"t={owner.t:.6f} (seq {owner.seq})", locks=[lock], tasks=[task])
        if kind != "spin":
            self._atomic_sleep(g, rec, f"blocks on {kind} {lock}")
        g.waiting[task] = Hold(lock, rec["t"], rec["seq"])

    def _wait_sleep(self, rec: Record) -> None:
        self._atomic_sleep(self._guest(rec), rec, f"sleeps on wait queue {rec['queue']}")

    def _atomic_sleep(self, g: Guest, rec: Record, what: str) -> None:
        task = rec["task"]
        spins = g.spins.get(task)
        if spins:
            self._violation("sleep-in-atomic", rec, g.name,
                            f"{task} {what} while holding spinlock {', '.join(spins)}",
                            locks=list(spins), tasks=[task])
