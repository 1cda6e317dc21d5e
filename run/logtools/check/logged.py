"""What the run reported itself: session errors, invariant violations, the host's live
conformance monitor, lockdep and the watchdogs. A report of a rule this check already found
(or of a host violation the session copied) is counted once."""

from __future__ import annotations

from collections.abc import Mapping

from actors.sim import schema

from .base import CheckerBase
from .model import Record, guest_name


class LoggedReports(CheckerBase):
    """``session.error``, ``invariant.violation``, ``host.violation``, ``lockdep.report`` and
    the ``watchdog.*`` records."""

    def _session_error(self, rec: Record) -> None:
        self._violation("session-error", rec, "", f"{rec['error']} (in {rec['where']})",
                        source="log")

    def _invariant(self, rec: Record) -> None:
        kind = str(rec["kind"])
        if self._echo[kind]:
            self._echo[kind] -= 1  # the session's copy of a host.violation just seen
            return
        self._violation(kind, rec, "", str(rec["detail"]), source="log")

    def _host_violation(self, rec: Record) -> None:
        g = self._guest(rec)
        kind = f"virtio:{rec['rule']}"
        self._echo[kind] += 1
        if g.expected[kind]:
            g.expected[kind] -= 1  # this check found it already
            return
        pfns = rec["pfns"]
        self._violation(kind, rec, g.name, str(rec["detail"]), source="log",
                        pfns=pfns if g.ppp == 1 else sorted({w // g.ppp for w in pfns}))

    def _lockdep(self, rec: Record) -> None:
        self._violation(str(rec["kind"]), rec, guest_name(rec["actor"]), str(rec["detail"]),
                        source="log", locks=[str(rec["lock"]), *map(str, rec["held_locks"])],
                        tasks=[str(rec["task"])])

    def _kernel_warning(self, rec: Record) -> None:
        dump = rec["dump_page"]
        pfns = [int(dump["pfn"])] if isinstance(dump, Mapping) and "pfn" in dump else []
        self._violation("warning", rec, guest_name(rec["actor"]),
                        f"WARNING in {rec['where']}: {rec['detail']} ({dump})", source="log",
                        pfns=pfns, tasks=[str(rec["task"])])

    def _watchdog(self, rec: Record) -> None:
        hung = rec["event"] == schema.HUNG_TASK
        what = rec["waiting_on"] if hung else rec["spinning_on"]
        took = float(rec["blocked_for"] if hung else rec["stuck_for"])
        locks: list[str] = [] if what is None else [str(what)]
        tasks = [str(rec["task"])]
        for entry in rec["all_locks"]:
            if isinstance(entry, Mapping) and entry.get("held"):
                tasks.append(str(entry.get("task")))
                locks.extend(map(str, entry["held"]))
        verb = "was blocked" if hung else "ran without sleeping"
        # a busy task (a retry loop) spins on no lock: say what it polls, never "None"
        polling = rec.get("polling")
        on = (f"on {what}" if what is not None
              else f"busy on a CPU, polling {polling}" if polling is not None
              else "busy on a CPU, spinning on no lock")
        self._violation("hung-task" if hung else "soft-lockup", rec, guest_name(rec["actor"]),
                        f"task {rec['task']} {verb} for {took:.1f} s ({on})", source="log",
                        locks=dict.fromkeys(locks), tasks=dict.fromkeys(tasks))
