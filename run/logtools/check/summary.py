"""Conservation and the end of the log: snapshots' free counts, what was still pending (and
when that is a violation: older than the kernel's own hung-task measure of "never"), and the
``session.end`` summary against the rebuilt counts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from protocol.pfns import show_pfns as show
from run.logtools.logread import LogError

from .base import CheckerBase
from .model import ISOLATED, LEAKED, LISTED, PHASE_NAMES, STATSQ, Guest, Record
from .report import Pending, Report

#: One counter: its section and key in a ``mem.snapshot`` and the summary, what the check calls
#: it, what the records rebuild it to, and whether it counts 4 KiB units or guest pages.
CounterSpec = tuple[str, str, str, Callable[[Guest], int], bool]


def _vmstat(key: str, rebuild: Callable[[Guest], int]) -> CounterSpec:
    """A /proc/vmstat counter of balloon pages (guest pages, whatever their size)."""
    return ("vmstat", key, f"vmstat {key}", rebuild, False)


#: The balloon's counters a ``mem.snapshot`` (and the ``session.end`` summary) carries.
COUNTERS: Final[tuple[CounterSpec, ...]] = (
    ("balloon", "pages_in_list", "driver pages on the list", lambda g: g.cnt[LISTED], False),
    ("balloon", "isolated", "driver isolated pages", lambda g: g.cnt[ISOLATED], False),
    ("balloon", "actual", "driver actual (num_pages)", lambda g: g.num_pages, True),
    ("balloon", "inflated", "driver pages inflated", lambda g: g.filled, False),
    ("balloon", "deflated", "driver pages deflated", lambda g: g.leaked, False),
    _vmstat("balloon_inflate", lambda g: g.filled),
    _vmstat("balloon_deflate", lambda g: g.leaked),
    _vmstat("balloon_migrate", lambda g: g.migrations),
    _vmstat("compact_balloon_isolated", lambda g: g.isolations),
    _vmstat("compact_balloon_migrated", lambda g: g.migrations),
    # released = migrated: an old page counts once __free_page() gave it back, which is
    # before its compaction run ends (settled() waits for that)
    _vmstat("compact_balloon_released", lambda g: g.migrations),
    _vmstat("compact_balloon_returned", lambda g: g.putbacks),
)


class SummaryChecks(CheckerBase):
    """``mem.snapshot`` records, and everything checked once the log has ended."""

    def _snapshot(self, rec: Record) -> None:
        g = self._guest(rec)
        free = int(rec["free"])
        buddy = sum(int(n) << order for order, n in enumerate(rec["buddyinfo"]))
        if buddy != free:
            self._violation("conservation", rec, g.name,
                            f"snapshot: free={free} but buddyinfo adds up to {buddy} pages")
        ballooned = sum(g.cnt[LISTED:])
        if free + ballooned > g.nr_pages:
            self._violation("conservation", rec, g.name,
                            f"snapshot: {free} free + {ballooned} ballooned pages > "
                            f"{g.nr_pages} guest pages")
        balloon, vmstat = rec["balloon"], rec["vmstat"]
        if g.settled():  # a quiescent point: every counter exact
            self._counters(g, rec, {"balloon": balloon or {}, "vmstat": vmstat},
                           "counters", f"mem.snapshot (seq {rec['seq']})")

    def _counters(self, g: Guest, rec: Record | None, sections: Mapping[str, Any], kind: str,
                  where: str) -> None:
        """Each counter of :data:`COUNTERS` the record carries against what the records
        rebuild, at a settled point (a snapshot, the end): one violation per drift, which is
        then taken as it is, so that later points report only a new one."""
        drift = g.drift
        self.report.counter_points += 1
        for section, key, what, rebuild, kib4 in COUNTERS:
            values = sections.get(section)
            logged = values.get(key) if isinstance(values, Mapping) else None
            if logged is None:
                continue
            rebuilt, known = rebuild(g), drift.get(what, 0)
            if int(logged) - rebuilt != known:
                unit = "4 KiB units" if kib4 else f"guest pages of {4 * g.ppp} KiB"
                before = f"; off by {known:+} at an earlier point" if known else ""
                self._violation(kind, rec, g.name, f"{where}: {what} = {logged}, rebuilt from "
                                f"the log: {rebuilt} ({unit}{before})")
                drift[what] = int(logged) - rebuilt

    def finish(self) -> Report:
        """End-of-log checks (pending work, the summary) and the report."""
        r = self.report
        r.records = self._seq
        if not self._started:
            raise LogError(0, "empty log: no session.start header")
        if not self._ended:
            raise LogError(self._seq, "the log ends without session.end (the session was "
                                      "killed, or the file is incomplete)")
        for g in self._guests.values():
            if g.nr_pages:
                self._pending(g)
                self._summary_checks(g)
        r.notes.extend(f"{n} {event} record(s)" for event, n in sorted(self._notes.items()))
        if self._end_reason != "completed":
            r.notes.append(f"the session ended: {self._end_reason}")
        self._describe_checks()
        r.violations.sort(key=lambda v: v.seq)
        return r

    def _pending(self, g: Guest) -> None:
        end = self._t

        def pending(what: str, since: float, seq: int, detail: str, kind: str | None = None,
                    limit: float = 0.0, **subjects: Any) -> None:
            if kind is not None and end - since > limit:
                self._violation(kind, None, g.name, f"{detail}; still so at the end, "
                                f"{end - since:.1f} s later (limit {limit:g} s)", **subjects)
            else:
                self.report.pending.append(Pending(what, g.name, since, seq, detail))

        for hs, h in sorted(g.hs.items()):
            seq, t = h.add["seq"], h.add["t"]
            if h.queue != STATSQ:  # the device holds the stats buffer between polls
                pending("handshake", t, seq, f"{h.queue} hs={hs} ({len(h.pfns)} PFNs) added "
                        f"at t={t:.6f}, {PHASE_NAMES[h.phase]}", "handshake-stuck", self._hung,
                        hs=[hs], pfns=[w // g.ppp for w in h.pfns[:8]])
        spins = {lock for held in g.spins.values() for lock in held}
        for lock, owner in sorted(g.locks.items()):
            pending("lock", owner.t, owner.seq, f"{owner.who} holds {lock} since "
                    f"t={owner.t:.6f}", "lock-held-at-end",
                    self._soft if lock in spins else self._hung, locks=[lock],
                    tasks=[owner.who])
        for task, w in sorted(g.waiting.items()):
            pending("waiter", w.t, w.seq, f"{task} waits for {w.who} since t={w.t:.6f}")
        if g.actual_due is not None:
            due = g.actual_due
            pending("actual", due.t, due.seq, f"the balloon changed at t={due.t:.6f} (to "
                    f"{g.num_pages} x 4 KiB) and actual is still {g.actual}",
                    "actual-not-updated", self._hung)
        now = (self._t, self._seq)
        if g.pending_fill is not None:
            pending("fill", *now, f"a fill of {len(g.pending_fill)} pages not yet inflated")
        if g.cnt[LEAKED]:
            pending("leak", *now, f"{g.cnt[LEAKED]} leaked pages not yet released")
        if g.migration is not None:
            m = g.migration
            pending("migration", *now, f"migration of page {m.old if m.old >= 0 else '?'} to "
                    f"page {m.new} (inflate hs {m.hs_inflate}) in progress")
        if g.isolated_by:
            pages = sorted(g.isolated_by)
            workers = ", ".join(sorted({i.worker for i in g.isolated_by.values()}))
            pending("isolated", *now, f"{len(pages)} pages isolated by {workers}: "
                    f"{show(pages)}")
        for worker, run in sorted(g.compaction.items()):
            pending("compaction", run.t, run.seq, f"{worker}'s compaction run, started at "
                    f"t={run.t:.6f}")

    def _summary_checks(self, g: Guest) -> None:
        host = self._summary.get("host")
        per_guest = self._summary.get("guests")  # several guests: each has its own sections
        s = per_guest.get(g.name, self._summary) if isinstance(per_guest, Mapping) \
            else self._summary
        guest = s.get("guest")
        owners = guest.get("owners") if isinstance(guest, Mapping) else None
        if isinstance(guest, Mapping):
            pages, free = guest.get("pages"), guest.get("free_pages")
            if isinstance(owners, Mapping) and pages is not None:
                total = sum(int(v) for v in owners.values())
                if total != pages:
                    self._violation("conservation", None, g.name, f"summary: page owners add "
                                    f"up to {total}, the guest has {pages} pages")
                if free is not None and owners.get("free") != free:
                    self._violation("conservation", None, g.name, f"summary: "
                                    f"{owners.get('free')} pages owned by 'free', zone free "
                                    f"count {free}")
            buddy = s.get("buddyinfo")
            if free is not None and isinstance(buddy, list):
                total = sum(int(n) << o for o, n in enumerate(buddy))
                if total != free:
                    self._violation("conservation", None, g.name,
                                    f"summary: free={free} but buddyinfo adds up to {total}")
        dev = host.get("guests", {}).get(g.name) if isinstance(host, Mapping) else None
        if isinstance(dev, Mapping):
            self._compare(g, "host ballooned (4 KiB pages)", dev.get("ballooned"), g.n_hosted)
            self._compare(g, "host inflated (4 KiB pages)", dev.get("inflated"), g.totals[0])
            self._compare(g, "host deflated (4 KiB pages)", dev.get("deflated"), g.totals[1])
            self._compare(g, "host target", dev.get("target"), g.last_target)
        balloon = s.get("balloon")
        if not isinstance(balloon, Mapping) or not g.settled():
            return
        self._counters(g, None, s, "summary-mismatch", "session.end summary")
        self._compare(g, "totalram", balloon.get("totalram"), g.nr_pages - g.filled + g.released)
        if isinstance(owners, Mapping):
            owned = sum(int(v) for k, v in owners.items() if str(k).startswith("balloon"))
            self._compare(g, "pages owned by the balloon", owned, g.cnt[LISTED] + g.cnt[ISOLATED])

    def _compare(self, g: Guest, what: str, logged: object, rebuilt: int) -> None:
        if logged is not None and logged != rebuilt:
            self._violation("summary-mismatch", None, g.name, f"session.end summary: {what} = "
                            f"{logged}, rebuilt from the log: {rebuilt}")

    def _describe_checks(self) -> None:
        guests = [g for g in self._guests.values() if g.nr_pages]
        settled = [g.name for g in guests if g.settled()]
        self.report.checked = [
            "handshakes: add, pop, done, ack in order, on one queue, device acting only on "
            "the PFNs named",
            "driver page moves: fill, leak, release, isolate, putback, migrate",
            "host ballooned set == driver list + isolated, at every quiescent point",
            "virtio rules: no deflate before the inflate ack; no use (release to the page "
            "allocator) before an inflate ack, while ballooned, or before the deflate ack "
            "under MUST_TELL_HOST",
            "config.actual == the driver's balloon size at every write",
            "conservation: snapshots' free vs buddyinfo and guest size; the summary's page "
            "owners and free count",
            f"the driver's and vmstat's balloon counters vs the records they count, at "
            f"{self.report.counter_points} settled point(s) (mem.snapshot records and the end)",
            "session.end summary: host ballooned/inflated/deflated"
            + (f"; totalram, balloon-owned pages and the counters above "
               f"({', '.join(settled)} settled at the end)" if settled else
               "; the driver's counts not compared (the session ended mid-operation)"),
            f"pending work at the end (a violation beyond {self._hung:g} s, spinlocks "
            f"{self._soft:g} s)",
            "violations the run logged: lockdep, watchdogs, host, invariants, errors",
            ("lock discipline from lock.* records: mutual exclusion, unlock by the owner, "
             "self-deadlock, sleep in atomic context, held at the end") if self._saw_locks else
            ("lock discipline: no lock.* records in this log (recorded at --level debug); "
             "lockdep's own reports are counted"),
        ]
