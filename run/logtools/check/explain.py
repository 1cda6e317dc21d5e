"""Why the first violation happened: the faults injected before it, the waits-for chain at
that instant across locks *and* wait queues, and the task that last made progress.

An :class:`Explainer` is fed the records up to the first violation (the same pass that
collects its history) and keeps only the state the explanation needs: who holds each lock
and since when, who waits for which lock or sleeps on which wait queue, every handshake's
add/done/ack and the fault the device injected into it. At the violation, a watchdog
record's ``all_locks`` (the kernel's ``show_all_locks()``) is the authoritative list of task
states; otherwise the rebuilt one is. The chain starts at the reported task and follows what
each task waits for to the task holding it, until a wait on something outside the guest (a
wait queue the device must wake) or a task that is running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from actors.sim import schema

from .model import Record, guest_name

#: Faults shown in full (the count says how many there were).
FAULTS_SHOWN: Final = 6
_DONE: Final = frozenset((schema.HOST_INFLATE_DONE, schema.HOST_DEFLATE_DONE))
#: The reports (a watchdog, lockdep, a WARN): they say something stopped, not moved.
REPORTS: Final = frozenset((schema.LOCKDEP, schema.KERNEL_WARNING, schema.HUNG_TASK,
                            schema.SOFT_LOCKUP))
#: Records that are not progress: a task going to sleep, a retry loop's spinlock round trip,
#: a report.
_NOT_PROGRESS: Final = REPORTS | {schema.PREEMPT, schema.WAIT_SLEEP, schema.LOCK_CONTENDED,
                                  schema.LOCK_RELEASE}


@dataclass(slots=True)
class _Handshake:
    queue: str
    added: float
    done: float | None = None
    fault: Record | None = None


@dataclass
class Explainer:
    """The state the explanation needs, rebuilt record by record (pure, no I/O)."""

    guest: str
    #: The last faults injected (FAULTS_SHOWN of them), and how many there were.
    faults: deque[Record] = field(default_factory=lambda: deque(maxlen=FAULTS_SHOWN))
    fault_count: int = 0
    #: lock -> (holder task, since t).
    holders: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: task -> (what it waits for: a lock or a wait queue, since t, "lock" | "queue").
    waits: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    #: Handshakes added and not yet acked, by number (acked ones are dropped).
    handshakes: dict[int, _Handshake] = field(default_factory=dict)
    #: The handshake the device is working on (its last pop), which a fault it injects hits.
    popped: int | None = None
    #: The last record of a task doing something (not sleeping, not a spinlock round trip).
    last_progress: Record | None = None

    def feed(self, rec: Record) -> None:
        actor = str(rec.get("actor", ""))
        if self.guest and guest_name(actor) != self.guest:
            return
        event = rec.get("event")
        task = rec.get("task")
        if isinstance(task, str) and task in self.waits and event != schema.WAIT_SLEEP:
            what, _, how = self.waits[task]
            if how == "queue" or (event == schema.LOCK_ACQUIRE and rec.get("lock") == what):
                del self.waits[task]  # it runs again
        if event == schema.FAULT:
            self.faults.append(rec)
            self.fault_count += 1
            if actor.startswith("host.") and self.popped is not None:
                hs = self.handshakes.get(self.popped)
                if hs is not None and hs.fault is None:
                    hs.fault = rec
        elif event == schema.LOCK_ACQUIRE:
            self.holders[str(rec["lock"])] = (str(task), float(rec["t"]))
        elif event == schema.LOCK_RELEASE:
            self.holders.pop(str(rec["lock"]), None)
        elif event == schema.LOCK_CONTENDED:
            self.waits[str(task)] = (str(rec["lock"]), float(rec["t"]), "lock")
        elif event == schema.WAIT_SLEEP:
            self.waits[str(task)] = (str(rec["queue"]), float(rec["t"]), "queue")
        elif event == schema.VQ_ADD and rec.get("queue") != "statsq":
            # (a stats buffer is taken back without an ack record: never what vb->acked
            # waits for)
            self.handshakes[int(rec["hs"])] = _Handshake(str(rec["queue"]), float(rec["t"]))
        elif event == schema.HOST_POP:
            self.popped = int(rec["hs"])
        elif event in _DONE:
            hs = self.handshakes.get(int(rec["hs"]))
            if hs is not None:
                hs.done = float(rec["t"])
        elif event == schema.VQ_ACK:
            self.handshakes.pop(int(rec["hs"]), None)
        if isinstance(task, str) and event not in _NOT_PROGRESS and not (
                event == schema.LOCK_ACQUIRE and rec.get("kind") == "spin"):
            self.last_progress = rec

    # -- the explanation -----------------------------------------------------------------------
    def explain(self, violation: Record | None, tasks: Sequence[str], t: float) -> list[str]:
        """The lines of the explanation at the violation (its record, if it has one)."""
        lines = self._fault_lines()
        states = self._states(violation)
        start = tasks[0] if tasks else None
        if start is not None and start in states:
            lines.append(f"waits-for at t={t:.6f}:")
            lines += ["  " + line for line in self._chain(start, states, violation)]
        progress = self.last_progress
        if progress is not None:
            lines.append(f"last progress: {progress.get('task')} at t={float(progress['t']):.6f}"
                         f" (seq {progress.get('seq')}, {progress.get('event')}"
                         + (f" {progress['lock']}" if "lock" in progress else "")
                         + f"), {t - float(progress['t']):.6f} s before it")
        return lines

    def _fault_lines(self) -> list[str]:
        if not self.faults:
            return ["faults injected before it: none"]
        shown = list(self.faults)
        head = (f"faults injected before it: {self.fault_count}"
                + (f" (the last {len(shown)})" if len(shown) < self.fault_count else ""))
        return [head] + [f"  t={float(f['t']):.6f} seq {f.get('seq')} {f.get('site')}: "
                         f"{f.get('detail')}" for f in shown]

    def _states(self, violation: Record | None) -> dict[str, tuple[str, str | None, list[str]]]:
        """task -> (state, what it waits on, locks held): the watchdog's own list when the
        violation carries one, else the rebuilt state."""
        listed = violation.get("all_locks") if violation is not None else None
        if isinstance(listed, list):
            out = {}
            for e in listed:
                if isinstance(e, Mapping):
                    out[str(e.get("task"))] = (str(e.get("state")), e.get("waiting_on"),
                                               [str(h) for h in e.get("held") or ()])
            return out
        held: dict[str, list[str]] = {}
        for lock, (who, _) in self.holders.items():
            held.setdefault(who, []).append(lock)
        out = {who: ("running", None, locks) for who, locks in held.items()}
        for who, (what, _, how) in self.waits.items():
            out[who] = ("blocked" if how == "lock" else "sleeping", what, held.get(who, []))
        return out

    def _chain(self, task: str, states: Mapping[str, tuple[str, str | None, list[str]]],
               violation: Record | None) -> list[str]:
        lines: list[str] = []
        seen: set[str] = set()
        polling = violation.get("polling") if violation is not None else None
        while task not in seen:
            seen.add(task)
            state, waiting_on, held = states.get(task, ("running", None, []))
            holds = f"; holds {', '.join(held)}" if held else ""
            for lock in held:
                behind = sorted(w for w, s in states.items() if s[1] == lock)
                if behind:
                    holds += f" ({len(behind)} wait for {lock}: {', '.join(behind)})"
            what = waiting_on
            if what is None and len(seen) == 1 and isinstance(polling, str):
                what = polling
                doing = f"{task} ({state}) polls {what} in a retry loop"
            elif what is None:
                lines.append(f"{task} ({state}, waits on nothing){holds}")
                break
            else:
                since = self.waits.get(task)
                at = f" since t={since[1]:.6f}" if since is not None and since[0] == what else ""
                doing = f"{task} ({state}) waits on {what}{at}"
            holder = self.holders.get(what)
            if holder is not None:
                who: str | None = holder[0]
                doing += f"{holds} <- held by {who} since t={holder[1]:.6f}"
            else:  # no lock records (an info log): the watchdog's own list
                who = next((w for w, st in states.items() if what in st[2]), None)
                doing += f"{holds} <- held by {who}" if who is not None else holds
            if who is None:  # nobody holds it: a wait queue, or a lock seen free
                lines.append(doing + self._queue_cause(what))
                break
            lines.append(doing)
            task = who
        return lines

    def _queue_cause(self, queue: str) -> str:
        """For a wait on the device (vb->acked): the handshake not acked, and the fault that
        delayed it."""
        if queue != "vb->acked":
            return ""
        if not self.handshakes:
            return " (no handshake open)"
        n, hs = next(reversed(self.handshakes.items()))  # the newest one not acked
        done = (f"device done at t={hs.done:.6f}, no interrupt yet" if hs.done is not None
                else "not done by the device yet")
        out = f" -- for the ack of {hs.queue} hs={n} (added at t={hs.added:.6f}; {done})"
        if hs.fault is not None:
            f: Any = hs.fault
            out += (f"; injected {f.get('site')} at t={float(f['t']):.6f} (seq {f.get('seq')}): "
                    f"{f.get('detail')}")
        return out
