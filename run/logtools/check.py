"""``vballoon check LOG``: rebuild a session from its log alone and check the balloon's rules.

:class:`Checker` is a state machine fed one record at a time (no async, no I/O); ``check_log``
streams a log file into it (:mod:`run.logread`), ``check_records`` feeds in-memory records (a
flight recorder's). Per guest it rebuilds, from the records alone and in arrays by PFN:

- the driver's view of every page: not ballooned, on ``vb->pages``, isolated by compaction
  (which worker, which migration id), leaked (off the list, deflate and release to come), or
  the old page of a migration in progress;
- each page's virtio state as the spec sees it (inflating: in an inflate buffer the device has
  not used yet; inflated; deflating), and the host's ballooned set (its ``*.done`` records);
- every handshake's phases (driver add, device pop, device done, driver ack);
- from ``--level debug`` logs, who holds which lock and who waits for it.

What it checks, and the ``kind`` each problem is counted under:

- ``host-vs-driver``: at every quiescent point of a guest (no inflate/deflate handshake open,
  no fill waiting for its inflate, no leaked page unreleased, no migration in progress) the
  host's ballooned set equals the driver's list plus its isolated pages, page by page.
  ``num-pages``: each fill/leak record's ``num_pages`` follows from the previous one, and at
  quiescent points equals (list + isolated) x PAGES_PER_PAGE.
- Page moves: ``list-and-isolated`` (a page put on or taken off ``vb->pages`` while isolated,
  or put back while on the list); ``page-state`` (any other move from a state the page is not
  in: filled twice, isolated twice, released without a leak...); ``unexplained-inflate`` /
  ``unexplained-deflate`` (a buffer naming pages the driver did not take for that purpose);
  ``migration-mismatch`` (a balloon.migrate whose pages or handshakes are not the ones the log
  shows moving); ``isolated-at-run-end`` (a compaction run ended with pages still isolated).
- The virtio rules, under the conformance monitor's rule ids (:class:`protocol.conformance.
  Rule`): ``virtio:driver.deflate-unacked-inflate`` (a deflate naming a page whose inflate the
  device has not used), ``virtio:driver.inflate-in-balloon``, ``virtio:driver.deflate-not-in-
  balloon``, ``virtio:device.ack-without-request``, ``virtio:driver.split-guest-page`` and the
  use rules. From the log, a page is *used* once the driver hands it back to the guest's page
  allocator (``balloon.release``; the old page of ``balloon.migrate``): any task may touch it
  from then on. Used while inflating: ``use-before-inflate-ack``; while inflated:
  ``use-while-ballooned``; while deflating under MUST_TELL_HOST: ``use-before-deflate-ack``.
  (The host's live monitor also sees each allocation; what it finds is logged as
  ``host.violation`` and counted below.)
- ``actual-not-updated``: each ``config.actual`` the driver writes equals its balloon size
  (its latest fill/leak ``num_pages``); a change never reported is pending at the end.
- ``handshake-order``: pop, done and ack of each handshake come in that order, on the queue it
  was added to, each once, and the device acts only on PFNs the buffer named.
- Conservation, as far as the log carries it (``conservation``): at each ``mem.snapshot``,
  free == sum(buddyinfo[order] << order) and free + ballooned pages <= guest pages; at
  ``session.end``, the summary's page owners add up to the guest's pages and its free count
  agrees with its buddyinfo. ``summary-mismatch``: the summary's host ballooned count and
  inflate/deflate totals equal the rebuilt ones and, when the session ended settled (nothing
  in flight, no compaction running, actual == target), so do the driver's list, isolated
  count, ``actual``, totalram and the pages the balloon owns.
- Locks, from ``lock.*`` and ``wait.sleep`` records (``--level debug``): ``mutual-exclusion``
  (acquired while another task holds it), ``bad-unlock``, ``self-deadlock`` (waits for a lock
  it holds), ``sleep-in-atomic`` (sleeps, or blocks on a mutex or page lock, holding a
  spinlock). Lock-order inversions and context imbalance need what the log does not carry
  (trylock or lock, function boundaries); lockdep finds them live and its reports count.
- Pending at the end: handshakes not completed, locks held, a fill, leak or migration in
  progress, isolated pages, a stale ``actual``. Sessions stop mid-operation, so these are
  reported, and are violations (``handshake-stuck``, ``lock-held-at-end``,
  ``actual-not-updated``) only when older than the scenario's hung-task timeout (spinlocks:
  its soft-lockup threshold), the kernel's own measure of "never".
- What the run logged itself: ``lockdep.report`` (under lockdep's kind), ``watchdog.*``
  (``hung-task``, ``soft-lockup``), ``host.violation`` (``virtio:<rule>``),
  ``invariant.violation`` (its kind), ``session.error`` (``session-error``). A logged report of
  a rule this check already found is counted once.

A log that cannot be read -- bad JSON, a truncated final line, an unknown event, missing
fields, no header or no end, seq out of order -- raises :class:`LogError` naming the line.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from actors.sim import schema
from protocol.balloon import BalloonFeature, feature_mask, select_features
from protocol.conformance import Rule
from protocol.pfns import wire_to_guest_pfns
from run.logtools.logread import BadRecord, LogError, iter_log
from run.session.logs import dumps

__all__ = ["BadRecord", "Checker", "LogError", "Pending", "Report", "Violation", "check_log",
           "check_records"]

Record = Mapping[str, Any]

# Driver-side page states (one byte per guest PFN).
NONE, LISTED, ISOLATED, LEAKED, MIGRATING = 0, 1, 2, 3, 4
STATE_NAMES: Final = ("not ballooned", "on vb->pages", "isolated",
                      "leaked (off the list, not yet released)", "migrating out")
#: Driver states the host must hold at a quiescent point (list + isolated).
_IN_BALLOON: Final = (False, True, True, False, False)

# Virtio page states (one byte per guest PFN), as the conformance monitor names them.
OUT, INFLATING, INFLATED, DEFLATING = 0, 1, 2, 3
VIRTIO_NAMES: Final = ("not in the balloon", "inflating", "inflated", "deflating")

# Handshakes: [queue, pfns, phase, the vq.add record]
ADDED, POPPED, DONE = 1, 2, 3
_PHASE_NAMES: Final = ("", "added", "popped", "done")
_INFLATEQ, _DEFLATEQ, _STATSQ = "inflateq", "deflateq", "statsq"

_USE_RULES: Final = (None, Rule.USE_BEFORE_INFLATE_ACK, Rule.USE_WHILE_BALLOONED,
                     Rule.USE_BEFORE_DEFLATE_ACK)
_USE_WHY: Final = ("", "while inflating (the device has not acknowledged their inflate)",
                   "while inflated (never deflated)", "while deflating, with MUST_TELL_HOST "
                   "(the device has not acknowledged their deflate)")

MAX_KEPT: Final = 10_000  # violations kept in full (all are counted)


@dataclass(slots=True)
class Violation:
    """One problem: its kind, who found it (``check``, or the run's own ``log``), where."""

    kind: str
    source: str
    seq: int
    t: float
    guest: str
    detail: str
    pfns: tuple[int, ...] = ()
    locks: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    hs: tuple[int, ...] = ()
    #: The rebuilt state of its pages and locks at that moment, one line each.
    state: tuple[str, ...] = ()
    #: Seq since which one of its locks is held: every record of the guest from there on is
    #: part of its story (0: none held).
    window: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "seq": self.seq, "t": self.t,
                "guest": self.guest, "detail": self.detail, "pfns": list(self.pfns),
                "locks": list(self.locks), "tasks": list(self.tasks), "hs": list(self.hs),
                "state": list(self.state)}


@dataclass(slots=True)
class Pending:
    """Something still in progress when the session ended (not a violation by itself)."""

    what: str
    guest: str
    since: float
    seq: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "guest": self.guest, "since": self.since, "seq": self.seq,
                "detail": self.detail}


@dataclass
class Report:
    """The verdict on one log: violations in log order, counts per kind, what was pending."""

    records: int = 0
    session: dict[str, Any] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    by_source: dict[str, Counter[str]] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The records that led to the first violation (its pages', locks', handshakes' story).
    history: list[dict[str, Any]] = field(default_factory=list)
    history_skipped: int = 0

    @property
    def first(self) -> Violation | None:
        return self.violations[0] if self.violations else None

    @property
    def exit_code(self) -> int:
        return 1 if self.counts else 0

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {
            "verdict": "violations" if self.counts else "clean",
            "exit_code": self.exit_code,
            "records": self.records,
            "session": self.session,
            "first": None if first is None else {
                **first.as_dict(), "history": self.history,
                "history_skipped": self.history_skipped},
            "counts": dict(sorted(self.counts.items())),
            "by_source": {k: dict(sorted(v.items())) for k, v in sorted(self.by_source.items())},
            "violations": [v.as_dict() for v in self.violations[:100]],
            "pending": [p.as_dict() for p in self.pending],
            "checked": self.checked,
            "notes": self.notes,
        }


class _Guest:
    """One guest's state as rebuilt from the log."""

    __slots__ = (
        "actual", "actual_due", "bad", "cnt", "compaction", "drv", "expected", "filled",
        "hostcnt", "hs", "isolated_by", "last_target", "leaked", "locks", "migration",
        "n_hosted", "name", "nbad", "nr_pages", "num_pages", "open_hs", "pending_fill",
        "pending_leak", "ppp", "released", "spins", "totals", "vs", "waiting",
    )

    def __init__(self, name: str, nr_pages: int, ppp: int) -> None:
        self.name = name
        self.nr_pages = nr_pages
        self.ppp = ppp
        self.drv = bytearray(nr_pages)  # driver state per guest page
        self.vs = bytearray(nr_pages)  # virtio state per guest page
        self.hostcnt = bytearray(nr_pages)  # wire PFNs of each guest page the host holds
        self.bad = bytearray(nr_pages)  # 1: host and driver disagree on this page
        self.nbad = 0
        self.cnt = [0, 0, 0, 0, 0]  # pages per driver state (the NONE slot is unused)
        self.n_hosted = 0  # wire PFNs in the host's ballooned set
        self.totals = [0, 0]  # wire PFNs the host inflated / deflated
        self.num_pages = 0  # the driver's balloon size, 4 KiB units (fill/leak records)
        self.actual = 0
        self.actual_due: tuple[int, float] | None = None  # (seq, t): change not yet reported
        self.last_target = 0
        self.hs: dict[int, list[Any]] = {}  # open handshakes: [queue, pfns, phase, vq.add]
        self.open_hs = 0  # inflate/deflate handshakes added and not acked
        self.pending_fill: list[int] | None = None  # a fill's pages until its inflate add
        self.pending_leak: list[int] | None = None  # a leak's pages until its deflate add
        self.migration: list[int] | None = None  # [new, hs_inflate, old (-1: not yet), hs_def]
        self.isolated_by: dict[int, tuple[str, int]] = {}  # pfn -> (worker, mid)
        self.compaction: dict[str, tuple[int, float]] = {}  # open runs: worker -> (seq, t)
        self.expected: Counter[str] = Counter()  # kinds found, whose logged copy is dropped
        self.filled = self.released = self.leaked = 0  # guest pages, for totalram
        # locks (debug logs): lock -> (task, t, seq); task -> spinlocks held; waiters
        self.locks: dict[str, tuple[str, float, int]] = {}
        self.spins: dict[str, list[str]] = {}
        self.waiting: dict[str, tuple[str, float, int]] = {}

    def fix(self, p: int) -> None:
        """Recompute whether host and driver disagree on page ``p``: a page on the list or
        isolated must be held whole by the host, any other page not at all."""
        h = self.hostcnt[p]
        b = h != self.ppp if _IN_BALLOON[self.drv[p]] else h != 0
        if b != self.bad[p]:
            self.bad[p] = b
            self.nbad += 1 if b else -1

    def move(self, p: int, new: int) -> None:
        """Page ``p`` to driver state ``new``, keeping the counts and host agreement."""
        drv = self.drv
        old = drv[p]
        if old != new:
            cnt = self.cnt
            cnt[old] -= 1
            cnt[new] += 1
            drv[p] = new
            h = self.hostcnt[p]
            b = h != self.ppp if _IN_BALLOON[new] else h != 0
            if b != self.bad[p]:
                self.bad[p] = b
                self.nbad += 1 if b else -1

    def quiet(self) -> bool:
        """Nothing in flight: the host's set and the driver's list + isolated must agree."""
        return (not self.open_hs and self.pending_fill is None and self.pending_leak is None
                and not self.cnt[LEAKED] and self.migration is None)

    def wire(self, pages: Iterable[int]) -> list[int]:
        """Wire PFNs (4 KiB units) of guest pages."""
        ppp = self.ppp
        return list(pages) if ppp == 1 else [p * ppp + i for p in pages for i in range(ppp)]


def _guest_name(actor: str) -> str:
    """The guest an actor belongs to: ``guest0.balloon`` and ``host.guest0`` are ``guest0``."""
    if actor.startswith("host."):
        return actor[5:]
    return actor.split(".", 1)[0]


def _show(pfns: Sequence[int], limit: int = 8) -> str:
    head = ", ".join(str(p) for p in pfns[:limit])
    return f"[{head}, ... {len(pfns)} in all]" if len(pfns) > limit else f"[{head}]"


class Checker:
    """The state machine: ``feed`` every record in order, then ``finish`` for the report."""

    def __init__(self) -> None:
        self.report = Report()
        self._seq = 0
        self._t = 0.0
        self._started = False
        self._ended = False
        self._end_reason = ""
        self._summary: Mapping[str, Any] = {}
        self._guests: dict[str, _Guest] = {}
        self._by_actor: dict[str, _Guest] = {}
        self.ppp = 1
        self._nr_pages = 0
        self._shapes: dict[str, tuple[int, int]] = {}  # guest name -> (pages, PAGES_PER_PAGE)
        self._must_tell = False
        self._hung = 120.0
        self._soft = 20.0
        self._saw_locks = False
        self._echo: Counter[str] = Counter()  # the session's copies of host.violation
        self._notes: Counter[str] = Counter()
        handlers: dict[str, Callable[[Record], None]] = {
            schema.SESSION_START: self._session_start,
            schema.SESSION_END: self._session_end,
            schema.SESSION_ERROR: self._session_error,
            schema.VIOLATION: self._invariant,
            schema.MEM_SNAPSHOT: self._snapshot,
            schema.LOCK_ACQUIRE: self._lock_acquire,
            schema.LOCK_RELEASE: self._lock_release,
            schema.LOCK_CONTENDED: self._lock_contended,
            schema.WAIT_SLEEP: self._wait_sleep,
            schema.LOCKDEP: self._lockdep,
            schema.HUNG_TASK: self._watchdog,
            schema.SOFT_LOCKUP: self._watchdog,
            schema.VQ_ADD: self._vq_add,
            schema.HOST_POP: self._host_pop,
            schema.HOST_INFLATE_DONE: functools.partial(self._device_done, _INFLATEQ, INFLATING,
                                                        INFLATED, 1),
            schema.HOST_DEFLATE_DONE: functools.partial(self._device_done, _DEFLATEQ, DEFLATING,
                                                        OUT, -1),
            schema.HOST_STATS: self._host_stats,
            schema.VQ_ACK: self._vq_ack,
            schema.HOST_VIOLATION: self._host_violation,
            schema.CONFIG_TARGET: self._config_target,
            schema.CONFIG_ACTUAL: self._config_actual,
            schema.BALLOON_FILL: self._fill,
            schema.BALLOON_LEAK: self._leak,
            schema.BALLOON_RELEASE: self._release,
            schema.BALLOON_ISOLATE: self._isolate,
            schema.BALLOON_PUTBACK: self._putback,
            schema.BALLOON_MIGRATE: self._migrate,
            schema.COMPACT_START: self._compact_start,
            schema.COMPACT_END: self._compact_end,
            schema.BALLOON_PUFF: self._note,
            schema.POLICY_ERROR: self._note,
        }
        # Every declared event is accepted; an undeclared one makes the log unreadable.
        # Records of events without a rule here are checked for every declared field; the
        # others for the fields their rule reads (a missing one is reported the same way),
        # which keeps the check at one dict lookup per field it uses.
        # Before the header only session.start is in the table; after session.end nothing is.
        self._fields = {name: frozenset((*spec.fields, "actor"))
                        for name, spec in schema.EVENTS.items()}
        self._all: dict[str, Callable[[Record], None]] = {
            name: handlers.get(name) or functools.partial(self._validate, self._fields[name])
            for name in schema.EVENTS
        }
        self._table = {schema.SESSION_START: self._all[schema.SESSION_START]}

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, rec: Record) -> None:
        """Apply one record; BadRecord if it cannot be interpreted."""
        try:
            handler = self._table[rec["event"]]
            seq = rec["seq"]
            self._t = rec["t"]
        except (KeyError, TypeError):
            raise BadRecord(self._refused(rec)) from None
        if seq != self._seq + 1:
            raise BadRecord(f"seq {seq} after seq {self._seq}: records missing or out of order"
                            if self._seq else f"{rec['event']} has seq {seq}, not 1: the "
                            "log's head is missing")
        self._seq = seq
        try:
            handler(rec)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            event = rec["event"]
            if isinstance(e, KeyError) and self._fields[event] - rec.keys():
                raise BadRecord(self._lacks(rec, event)) from None
            raise BadRecord(f"{event} record has a field of the wrong type or value "
                            f"({type(e).__name__}: {e})") from None

    def _validate(self, fields: frozenset[str], rec: Record) -> None:
        """An event without a rule here: only check it carries its declared fields."""
        if not rec.keys() >= fields:
            raise BadRecord(self._lacks(rec, rec["event"]))

    def _lacks(self, rec: Record, event: str) -> str:
        missing = sorted(self._fields[event] - rec.keys())
        return f"{event} record lacks {', '.join(map(repr, missing))}"

    def _refused(self, rec: object) -> str:
        """Why a record has no handler: not an object, no event or seq, unknown event, or
        one out of place (before the header, after the end, a second header)."""
        if not isinstance(rec, Mapping):
            return f"not a JSON object but {type(rec).__name__}"
        for key in ("event", "seq", "t", "actor"):
            if key not in rec:
                return f"record lacks {key!r}"
        event = rec["event"]
        if not isinstance(event, str) or event not in schema.EVENTS:
            return f"unknown event {event!r} (not declared in actors/schema.py)"
        if not self._started:
            return (f"missing header: the first record is {event!r}, not "
                    f"{schema.SESSION_START!r}")
        if self._ended:
            return f"{event} record after session.end"
        return f"a second {event}"

    def _guest(self, rec: Record) -> _Guest:
        """The guest a record's actor belongs to (created on first sight)."""
        actor = rec["actor"]
        g = self._by_actor.get(actor)
        if g is None:
            name = _guest_name(actor)
            g = self._guests.get(name)
            if g is None:
                nr_pages, ppp = self._shapes.get(name, (self._nr_pages, self.ppp))
                g = self._guests[name] = _Guest(name, nr_pages, ppp)
            self._by_actor[actor] = g
        return g

    def _violation(self, kind: str, rec: Record | None, guest: str, detail: str, *,
                   source: str = "check", pfns: Iterable[int] = (), locks: Iterable[str] = (),
                   tasks: Iterable[str] = (), hs: Iterable[int] = ()) -> None:
        r = self.report
        r.counts[kind] += 1
        r.by_source.setdefault(source, Counter())[kind] += 1
        if len(r.violations) < MAX_KEPT:
            seq = self._seq if rec is None else int(rec["seq"])
            t = self._t if rec is None else float(rec["t"])
            pfns, locks = tuple(pfns), tuple(dict.fromkeys(locks))
            g = self._guests.get(guest)
            state: tuple[str, ...] = ()
            window = 0
            if g is not None and len(r.violations) < 100:
                state = self._state(g, pfns, locks)
                window = min((g.locks[lock][2] for lock in locks if lock in g.locks),
                             default=0)
            r.violations.append(Violation(kind, source, seq, t, guest, detail, pfns, locks,
                                          tuple(dict.fromkeys(tasks)), tuple(hs), state,
                                          window))

    def _state(self, g: _Guest, pfns: Sequence[int], locks: Sequence[str]) -> tuple[str, ...]:
        """What the log says about these pages and locks right now (for the report)."""
        out = []
        for p in pfns[:8]:
            if not 0 <= p < g.nr_pages:
                continue
            line = (f"page {p}: driver {STATE_NAMES[g.drv[p]]}; virtio {VIRTIO_NAMES[g.vs[p]]}; "
                    f"host holds {g.hostcnt[p]}/{g.ppp} of its PFNs")
            if p in g.isolated_by:
                line += f"; isolated by {g.isolated_by[p][0]} (mid {g.isolated_by[p][1]})"
            wire = set(g.wire([p]))
            open_hs = [f"{h[0]} hs={hs} ({_PHASE_NAMES[h[2]]})" for hs, h in g.hs.items()
                       if not wire.isdisjoint(h[1])]
            if open_hs:
                line += f"; in {', '.join(open_hs)}"
            out.append(line)
        for lock in locks[:8]:
            owner = g.locks.get(lock)
            waiters = [t for t, w in g.waiting.items() if w[0] == lock]
            if owner is not None:
                line = f"{lock}: held by {owner[0]} since t={owner[1]:.6f} (seq {owner[2]})"
            elif self._saw_locks:
                line = f"{lock}: free"
            else:
                continue
            if waiters:
                line += f"; waiting: {', '.join(waiters)}"
            out.append(line)
        return tuple(out)

    def _note(self, rec: Record) -> None:
        self._notes[rec["event"]] += 1

    # -- session -------------------------------------------------------------------------------
    def _session_start(self, rec: Record) -> None:
        self._started = True
        self._table = {k: v for k, v in self._all.items() if k != schema.SESSION_START}
        sc = rec["scenario"]
        try:
            guest, host = sc["guest"], sc["host"]
            page_size = int(guest["page_size"])
            self._nr_pages = int(guest["memory"]) // page_size
            self.ppp = max(1, page_size // 4096)
            for spec in sc.get("guests") or ():  # [[guests]]: each its own size and page size
                size = int(spec["page_size"])
                self._shapes[str(spec["name"])] = (int(spec["memory"]) // size,
                                                   max(1, size // 4096))
            offered = feature_mask(*(BalloonFeature[f] for f in host["features"]))
            accepted = feature_mask(*(BalloonFeature[f] for f in guest["features"]))
            features = select_features(offered, accepted)
            self._hung = float(guest.get("hung_task_timeout", 120.0))
            self._soft = float(guest.get("softlockup_thresh", 20.0))
        except (KeyError, TypeError, ValueError) as e:
            raise BadRecord(f"session.start: scenario lacks what the check needs ({e!r})"
                            ) from None
        self._must_tell = bool(features >> BalloonFeature.MUST_TELL_HOST & 1)
        self.report.session = {
            "scenario": sc.get("name"), "seed": rec["seed"], "driver": guest.get("driver"),
            "guest_pages": self._nr_pages, "page_size": page_size,
            "features": [f.name for f in BalloonFeature if features >> f & 1],
            "git": rec.get("git"),
        }

    def _session_end(self, rec: Record) -> None:
        self._ended = True
        self._table = {}
        self._end_reason = str(rec["reason"])
        s = rec["summary"]
        self._summary = s if isinstance(s, Mapping) else {}
        self.report.session["reason"] = self._end_reason
        self.report.session["end_t"] = rec["t"]

    def _session_error(self, rec: Record) -> None:
        self._violation("session-error", rec, "", f"{rec['error']} (in {rec['where']})",
                        source="log")

    def _invariant(self, rec: Record) -> None:
        kind = str(rec["kind"])
        if self._echo[kind]:
            self._echo[kind] -= 1  # the session's copy of a host.violation just seen
            return
        self._violation(kind, rec, "", str(rec["detail"]), source="log")

    def _lockdep(self, rec: Record) -> None:
        self._violation(str(rec["kind"]), rec, _guest_name(rec["actor"]), str(rec["detail"]),
                        source="log", locks=[str(rec["lock"]), *map(str, rec["held_locks"])],
                        tasks=[str(rec["task"])])

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
        self._violation("hung-task" if hung else "soft-lockup", rec, _guest_name(rec["actor"]),
                        f"task {rec['task']} {verb} for {took:.1f} s (on {what})", source="log",
                        locks=dict.fromkeys(locks), tasks=dict.fromkeys(tasks))

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

    def _rule(self, g: _Guest, rule: Rule, rec: Record, detail: str, pages: Sequence[int],
              hs: Iterable[int] = ()) -> None:
        """A virtio rule broken, under the conformance monitor's id."""
        kind = f"virtio:{rule}"
        g.expected[kind] += 1
        self._violation(kind, rec, g.name, detail, pfns=pages, hs=hs)

    # -- conservation --------------------------------------------------------------------------
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

    # -- locks (debug logs) --------------------------------------------------------------------
    def _lock_acquire(self, rec: Record) -> None:
        self._saw_locks = True
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        task, lock = rec["task"], rec["lock"]
        locks = g.locks
        owner = locks.get(lock)
        if owner is not None:
            self._violation(
                "mutual-exclusion", rec, g.name,
                f"{task} acquired {lock} while {owner[0]} holds it (since t={owner[1]:.6f}, "
                f"seq {owner[2]})", locks=[lock], tasks=[task, owner[0]])
        locks[lock] = (task, rec["t"], rec["seq"])
        if g.waiting:
            g.waiting.pop(task, None)
        if rec["kind"] == "spin":
            g.spins.setdefault(task, []).append(lock)

    def _lock_release(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        task, lock = rec["task"], rec["lock"]
        owner = g.locks.pop(lock, None)
        if owner is None or owner[0] != task:
            who = "nobody" if owner is None else owner[0]
            self._violation("bad-unlock", rec, g.name, f"{task} released {lock}, held by {who}",
                            locks=[lock], tasks=[task] if owner is None else [task, owner[0]])
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
        if owner is not None and owner[0] == task:
            self._violation("self-deadlock", rec, g.name,
                            f"{task} waits for {lock}, which it has held since "
                            f"t={owner[1]:.6f} (seq {owner[2]})", locks=[lock], tasks=[task])
        if kind != "spin":
            self._atomic_sleep(g, rec, f"blocks on {kind} {lock}")
        g.waiting[task] = (lock, rec["t"], rec["seq"])

    def _wait_sleep(self, rec: Record) -> None:
        self._atomic_sleep(self._guest(rec), rec, f"sleeps on wait queue {rec['queue']}")

    def _atomic_sleep(self, g: _Guest, rec: Record, what: str) -> None:
        task = rec["task"]
        spins = g.spins.get(task)
        if spins:
            self._violation("sleep-in-atomic", rec, g.name,
                            f"{task} {what} while holding spinlock {', '.join(spins)}",
                            locks=list(spins), tasks=[task])

    # -- handshakes ----------------------------------------------------------------------------
    def _pages(self, g: _Guest, rec: Record, pfns: Sequence[int], wire: bool
               ) -> Sequence[int] | None:
        """Guest pages named by a record (wire PFNs converted); None if any is out of range."""
        pages = pfns
        if wire and g.ppp > 1:
            pages, strays = wire_to_guest_pfns(pfns, g.ppp)
            if strays:
                self._rule(g, Rule.SPLIT_GUEST_PAGE, rec,
                           f"{rec['event']} names wire PFNs {_show(strays)} that do not form "
                           f"whole {g.ppp * 4} KiB guest pages", strays)
        if pages and (min(pages) < 0 or max(pages) >= g.nr_pages):
            bad = [p for p in pages if not 0 <= p < g.nr_pages]
            self._violation("page-state", rec, g.name,
                            f"{rec['event']} names pages {_show(bad)} outside guest RAM "
                            f"({g.nr_pages} pages)", pfns=bad)
            return None
        return pages

    def _vq_add(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs, queue, pfns = rec["hs"], rec["queue"], rec["pfns"]
        if hs in g.hs:
            self._violation("handshake-order", rec, g.name,
                            f"handshake id {hs} added again while still open", hs=[hs])
        g.hs[hs] = [queue, pfns, ADDED, rec]
        if queue == _STATSQ:
            return
        g.open_hs += 1
        if g.ppp == 1 and len(pfns) == 1 and 0 <= pfns[0] < g.nr_pages:
            pages = pfns
        else:
            pages = self._pages(g, rec, pfns, True)
            if pages is None:
                return
        drv, vs = g.drv, g.vs
        if queue == _INFLATEQ:
            fill = g.pending_fill
            if fill is not None and (pages == fill or sorted(pages) == sorted(fill)):
                g.pending_fill = None  # fill_balloon's tell_host
            elif (len(pages) == 1 and fill is None and g.migration is None
                  and g.cnt[ISOLATED] and drv[pages[0]] == NONE):
                # virtballoon_migratepage put newpage on the list and inflates it
                g.migration = [pages[0], hs, -1, 0]
                g.move(pages[0], LISTED)
            else:
                self._unexplained(g, rec, pages, hs, "while the pages of a fill wait for their "
                                  "inflate" if fill is not None else "neither the pages of a "
                                  "fill nor the new page of a migration")
            if len(pages) == 1 and not vs[pages[0]]:
                vs[pages[0]] = INFLATING
            else:
                self._inflating(g, rec, pages, hs)
        elif queue == _DEFLATEQ:
            leak, m = g.pending_leak, g.migration
            if leak is not None and (pages == leak or sorted(pages) == sorted(leak)):
                g.pending_leak = None  # leak_balloon's tell_host
            elif len(pages) == 1 and m is not None and m[2] < 0 and drv[pages[0]] == ISOLATED:
                m[2], m[3] = pages[0], hs  # virtballoon_migratepage's 2nd step: the old page
                g.move(pages[0], MIGRATING)
            else:
                self._unexplained(g, rec, pages, hs, f"the pages of the leak are {_show(leak)}"
                                  if leak is not None else "no leak is pending and it is not "
                                  "the old page of a migration")
            if len(pages) == 1 and vs[pages[0]] == INFLATED:
                vs[pages[0]] = DEFLATING
            else:
                self._deflating(g, rec, pages, hs)

    def _unexplained(self, g: _Guest, rec: Record, pages: Sequence[int], hs: int, why: str
                     ) -> None:
        queue = rec["queue"]
        states = ", ".join(sorted({STATE_NAMES[g.drv[p]] for p in pages}))
        self._violation(f"unexplained-{'inflate' if queue == _INFLATEQ else 'deflate'}", rec,
                        g.name, f"{queue} hs={hs} names pages {_show(pages)} (driver states: "
                        f"{states}): {why}", pfns=pages, hs=[hs])

    def _inflating(self, g: _Guest, rec: Record, pages: Sequence[int], hs: int) -> None:
        """Virtio state of an inflate buffer's pages: each must be out of the balloon."""
        vs = g.vs
        again = []
        for p in pages:
            if vs[p]:
                again.append(p)
            else:
                vs[p] = INFLATING
        if again:
            self._rule(g, Rule.INFLATE_IN_BALLOON, rec,
                       f"inflateq hs={hs}: pages {_show(again)} are already in the balloon "
                       f"({', '.join(sorted({VIRTIO_NAMES[vs[p]] for p in again}))})", again,
                       [hs])

    def _deflating(self, g: _Guest, rec: Record, pages: Sequence[int], hs: int) -> None:
        """Virtio state of a deflate buffer's pages: each must be inflated, and acked."""
        vs = g.vs
        unacked: list[int] = []
        absent: list[int] = []
        for p in pages:
            s = vs[p]
            if s == INFLATED:
                vs[p] = DEFLATING
            elif s == INFLATING:
                unacked.append(p)
            else:
                absent.append(p)
        if unacked:
            self._rule(g, Rule.DEFLATE_UNACKED_INFLATE, rec,
                       f"deflateq hs={hs} names pages {_show(unacked)} whose inflate the device "
                       "has not acknowledged", unacked, [hs, *self._carriers(g, unacked)])
        if absent:
            self._rule(g, Rule.DEFLATE_NOT_IN_BALLOON, rec,
                       f"deflateq hs={hs} names pages {_show(absent)} that are not in the "
                       "balloon (never inflated, or already being deflated)", absent, [hs])

    def _carriers(self, g: _Guest, pages: Sequence[int]) -> list[int]:
        """Open handshakes naming any of these guest pages (for the story of a violation)."""
        wire = set(g.wire(pages))
        return [hs for hs, h in g.hs.items() if not wire.isdisjoint(h[1])]

    def _order(self, g: _Guest, rec: Record, hs: int, h: list[Any] | None, verb: str,
               want: int, queue: str) -> None:
        if h is None:
            why = "it was never added (or is already complete)"
        elif h[0] != queue:
            why = f"it was added to {h[0]}"
        else:
            why = f"it is {_PHASE_NAMES[h[2]]}, not {_PHASE_NAMES[want]}"
        self._violation("handshake-order", rec, g.name, f"hs={hs} {verb}, but {why}", hs=[hs])

    def _host_pop(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h[2] != ADDED or h[0] != rec["queue"]:
            self._order(g, rec, hs, h, f"popped from {rec['queue']}", ADDED, rec["queue"])
        else:
            h[2] = POPPED

    def _device_done(self, queue: str, before: int, after: int, step: int, rec: Record
                     ) -> None:
        """The device used an inflate (step 1) or deflate (step -1) buffer: the pages move
        from virtio state ``before`` to ``after`` and into (out of) the host's set."""
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h[2] != POPPED or h[0] != queue:
            self._order(g, rec, hs, h, f"done on {queue}", POPPED, queue)
            return
        h[2] = DONE
        pfns = rec["pfns"]
        if pfns != h[1] and not set(pfns) <= set(h[1]):
            self._violation("handshake-order", rec, g.name,
                            f"hs={hs}: the device acted on PFNs "
                            f"{_show(sorted(set(pfns) - set(h[1])))} the buffer did not name",
                            hs=[hs])
            return
        ppp, hc, vs, drv, bad, nr = g.ppp, g.hostcnt, g.vs, g.drv, g.bad, g.nr_pages
        nbad = g.nbad
        moved = 0
        stray: list[int] | None = None
        for w in pfns:
            p = w // ppp
            if not 0 <= p < nr:
                continue
            s = vs[p]
            if s == before:
                vs[p] = after
            elif s == OUT:  # inflated or deflated without being asked
                stray = [*(stray or ()), p]
            n = hc[p] + step
            if 0 <= n <= ppp:
                hc[p] = n
                moved += step
                b = n != ppp if _IN_BALLOON[drv[p]] else n != 0
                if b != bad[p]:
                    bad[p] = b
                    nbad += 1 if b else -1
        g.nbad = nbad
        g.n_hosted += moved
        g.totals[step < 0] += len(pfns)
        if stray:
            self._rule(g, Rule.ACK_WITHOUT_REQUEST, rec, f"{queue} hs={hs} done names pages "
                       f"{_show(sorted(set(stray)))} no buffer asked to "
                       f"{'inflate' if step > 0 else 'deflate'}", stray, [hs])

    def _host_stats(self, rec: Record) -> None:
        g = self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h[2] != POPPED or h[0] != _STATSQ:
            self._order(g, rec, hs, h, "read as stats", POPPED, _STATSQ)
        else:
            del g.hs[hs]  # the device holds the buffer until it polls: the handshake is done

    def _vq_ack(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h[0] != rec["queue"]:
            self._order(g, rec, hs, h, f"acked on {rec['queue']}", DONE, rec["queue"])
            return
        if h[2] != DONE:
            self._order(g, rec, hs, h, "acked by the driver", DONE, h[0])
        del g.hs[hs]
        if h[0] != _STATSQ:
            g.open_hs -= 1
            if not g.open_hs and g.migration is None:
                self._quiescent(g, rec)

    def _quiescent(self, g: _Guest, rec: Record) -> None:
        """At a quiescent point: host set == driver list + isolated, and the counts agree."""
        cnt = g.cnt
        if (g.open_hs or g.migration is not None or g.pending_fill is not None
                or g.pending_leak is not None or cnt[LEAKED]
                or (not g.nbad and (cnt[LISTED] + cnt[ISOLATED]) * g.ppp == g.num_pages)):
            return  # not quiescent, or all is well
        if g.nbad:
            pages: list[int] = []
            i = g.bad.find(1)
            while i >= 0 and len(pages) < 8:
                pages.append(i)
                i = g.bad.find(1, i + 1)
            desc = "; ".join(f"page {p}: driver {STATE_NAMES[g.drv[p]]}, host holds "
                             f"{g.hostcnt[p]}/{g.ppp} PFNs" for p in pages)
            self._violation("host-vs-driver", rec, g.name,
                            f"{g.nbad} pages where the host's ballooned set and the driver's "
                            f"list + isolated disagree: {desc}", pfns=pages)
            g.bad = bytearray(g.nr_pages)  # reported once: take these pages as they are now
            g.nbad = 0
        held = (g.cnt[LISTED] + g.cnt[ISOLATED]) * g.ppp
        if held != g.num_pages:
            self._violation("num-pages", rec, g.name,
                            f"driver num_pages={g.num_pages} but {g.cnt[LISTED]} pages on the "
                            f"list + {g.cnt[ISOLATED]} isolated = {held} (4 KiB units)")
            g.num_pages = held

    # -- config --------------------------------------------------------------------------------
    def _config_target(self, rec: Record) -> None:
        self._guest(rec).last_target = int(rec["num_pages"])

    def _config_actual(self, rec: Record) -> None:
        g = self._guest(rec)
        g.actual = actual = int(rec["actual"])
        if actual != g.num_pages:
            self._violation("actual-not-updated", rec, g.name,
                            f"driver wrote actual={actual} but its balloon holds "
                            f"{g.num_pages} (4 KiB units, from its fill/leak records)")
        g.actual_due = None

    # -- the balloon list ----------------------------------------------------------------------
    def _num_pages(self, g: _Guest, rec: Record, change: int) -> None:
        want = g.num_pages + change
        got = int(rec["num_pages"])
        g.actual_due = g.actual_due or (int(rec["seq"]), float(rec["t"]))
        if got != want:
            self._violation("num-pages", rec, g.name,
                            f"{rec['event']} says num_pages={got}; the log's records add up "
                            f"to {want} (4 KiB units)")
        g.num_pages = got

    def _fill(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        if g.pending_fill is not None:
            self._violation("unexplained-inflate", rec, g.name,
                            f"a fill of {len(pages)} pages while the {len(g.pending_fill)} "
                            "pages of the previous fill were never inflated",
                            pfns=g.pending_fill[:8])
        self._move_all(g, rec, pages, NONE, LISTED, "fill_balloon put page {} on vb->pages")
        g.pending_fill = list(pages)
        g.filled += len(pages)
        self._num_pages(g, rec, len(pages) * g.ppp)

    def _leak(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        self._move_all(g, rec, pages, LISTED, LEAKED, "leak_balloon took page {} off vb->pages")
        g.pending_leak = list(pages)
        g.leaked += len(pages)
        self._num_pages(g, rec, -len(pages) * g.ppp)

    def _release(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        self._move_all(g, rec, pages, LEAKED, NONE, "release freed page {} to the page "
                       "allocator")
        self._use(g, rec, pages)
        g.released += len(pages)
        self._quiescent(g, rec)

    def _move_all(self, g: _Guest, rec: Record, pages: Sequence[int], old: int, new: int,
                  what: str) -> None:
        """Move a batch of pages from driver state ``old`` to ``new`` (``move`` inlined: the
        per-page loop of fills, leaks and releases); report each page in another state."""
        drv, hc, bad, ppp, cnt = g.drv, g.hostcnt, g.bad, g.ppp, g.cnt
        into = _IN_BALLOON[new]
        nbad = g.nbad
        moved = 0
        wrong: list[tuple[int, int]] | None = None
        for p in pages:
            s = drv[p]
            if s == old:
                moved += 1
            else:
                wrong = [*(wrong or ()), (p, s)]
                if s == new or (s == ISOLATED and new == LISTED):
                    continue  # (an isolated page stays where compaction will look for it)
                cnt[s] -= 1
                cnt[new] += 1
            drv[p] = new
            h = hc[p]
            b = h != ppp if into else h != 0
            if b != bad[p]:
                bad[p] = b
                nbad += 1 if b else -1
        cnt[old] -= moved
        cnt[new] += moved
        g.nbad = nbad
        for p, s in wrong or ():
            on_list = s == ISOLATED and new in (LISTED, LEAKED)
            self._violation("list-and-isolated" if on_list else "page-state", rec, g.name,
                            f"{what.format(p)}, but it is {STATE_NAMES[s]}", pfns=[p])
            if s == ISOLATED and new != LISTED:
                g.isolated_by.pop(p, None)

    def _use(self, g: _Guest, rec: Record, pages: Sequence[int]) -> None:
        """The driver handed these pages to the page allocator: any task may now use them."""
        vs = g.vs
        by: dict[int, list[int]] = {}
        for p in pages:
            s = vs[p]
            if s and (s != DEFLATING or self._must_tell):
                by.setdefault(s, []).append(p)
        for s, hit in sorted(by.items()):
            rule = _USE_RULES[s]
            assert rule is not None
            self._rule(g, rule, rec, f"{rec['event']}: pages {_show(hit)} handed back to the "
                       f"page allocator {_USE_WHY[s]}",
                       hit, self._carriers(g, hit))

    def _isolate(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        p, worker = rec["pfn"], rec["worker"]
        if not 0 <= p < g.nr_pages:
            self._pages(g, rec, [p], False)
            return
        if g.drv[p] != LISTED:
            self._violation("page-state", rec, g.name, f"{worker} isolated page {p}, but it "
                            f"is {STATE_NAMES[g.drv[p]]}", pfns=[p], tasks=[worker])
        g.move(p, ISOLATED)
        g.isolated_by[p] = (worker, rec["mid"])

    def _putback(self, rec: Record) -> None:
        g = self._guest(rec)
        p, worker = rec["pfn"], rec["worker"]
        if not 0 <= p < g.nr_pages:
            self._pages(g, rec, [p], False)
            return
        s = g.drv[p]
        if s != ISOLATED:
            kind = "list-and-isolated" if s == LISTED else "page-state"
            self._violation(kind, rec, g.name, f"{worker} put page {p} back on vb->pages, "
                            f"but it is {STATE_NAMES[s]}", pfns=[p], tasks=[worker])
        else:
            self._unisolate(g, rec, p, worker)
        g.move(p, LISTED)

    def _unisolate(self, g: _Guest, rec: Record, p: int, worker: str) -> None:
        """The worker that isolated ``p`` (with this migration id) is done with it."""
        owner = g.isolated_by.pop(p, None)
        mid = rec["mid"]
        if owner is not None and owner != (worker, mid):
            self._violation("migration-mismatch", rec, g.name,
                            f"{worker} (mid {mid}) finished with page {p}, which {owner[0]} "
                            f"isolated (mid {owner[1]})", pfns=[p], tasks=[worker, owner[0]])

    def _migrate(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        old, new, hi, hd = rec["old"], rec["new"], rec["hs_inflate"], rec["hs_deflate"]
        worker = rec["worker"]
        if not (0 <= old < g.nr_pages and 0 <= new < g.nr_pages):
            self._pages(g, rec, [old, new], False)
            return
        m = g.migration
        if m is None or m[0] != new or m[1] != hi or m[2] != old or m[3] != hd:
            shown = "none" if m is None else (f"new {m[0]} (hs {m[1]}), old "
                                              f"{m[2] if m[2] >= 0 else '?'} (hs {m[3]})")
            self._violation("migration-mismatch", rec, g.name,
                            f"{worker} migrated page {old} -> {new} (hs {hi}/{hd}); the log "
                            f"shows this migration in progress: {shown}", pfns=[old, new],
                            tasks=[worker], hs=[hi, hd])
            if g.drv[new] == NONE:
                g.move(new, LISTED)
            if g.drv[old] == ISOLATED:
                g.move(old, MIGRATING)
        if hi in g.hs or hd in g.hs:
            for h in (hi, hd):
                if h in g.hs:
                    self._violation("migration-mismatch", rec, g.name,
                                    f"{worker} reports page {old} migrated but hs {h} is "
                                    f"still {_PHASE_NAMES[g.hs[h][2]]}", pfns=[old, new],
                                    hs=[h])
        if g.drv[old] == MIGRATING:
            owner = g.isolated_by.pop(old, None)
            if owner is not None and (owner[0] != worker or owner[1] != rec["mid"]):
                g.isolated_by[old] = owner
                self._unisolate(g, rec, old, worker)
            g.move(old, NONE)
        g.migration = None
        if g.vs[old]:
            self._use(g, rec, [old])
        self._quiescent(g, rec)

    # -- compaction ----------------------------------------------------------------------------
    def _compact_start(self, rec: Record) -> None:
        self._guest(rec).compaction[str(rec["worker"])] = (int(rec["seq"]), float(rec["t"]))

    def _compact_end(self, rec: Record) -> None:
        g = self._guest(rec)
        worker = str(rec["worker"])
        g.compaction.pop(worker, None)
        left = sorted(p for p, (w, _) in g.isolated_by.items() if w == worker)
        if left:
            self._violation("isolated-at-run-end", rec, g.name,
                            f"{worker}'s compaction run ended with pages {_show(left)} still "
                            "isolated (neither migrated nor put back)", pfns=left,
                            tasks=[worker])
            for p in left:
                del g.isolated_by[p]

    # -- the end -------------------------------------------------------------------------------
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

    def _pending(self, g: _Guest) -> None:
        end = self._t

        def pending(what: str, since: float, seq: int, detail: str, kind: str | None = None,
                    limit: float = 0.0, **subjects: Any) -> None:
            if kind is not None and end - since > limit:
                self._violation(kind, None, g.name, f"{detail}; still so at the end, "
                                f"{end - since:.1f} s later (limit {limit:g} s)", **subjects)
            else:
                self.report.pending.append(Pending(what, g.name, since, seq, detail))

        for hs, (queue, pfns, phase, add) in sorted(g.hs.items()):
            seq, t = add["seq"], add["t"]
            if queue != _STATSQ:  # the device holds the stats buffer between polls
                pending("handshake", t, seq, f"{queue} hs={hs} ({len(pfns)} PFNs) added at "
                        f"t={t:.6f}, {_PHASE_NAMES[phase]}", "handshake-stuck", self._hung,
                        hs=[hs], pfns=[w // g.ppp for w in pfns[:8]])
        spins = {lock for held in g.spins.values() for lock in held}
        for lock, (task, t, seq) in sorted(g.locks.items()):
            pending("lock", t, seq, f"{task} holds {lock} since t={t:.6f}", "lock-held-at-end",
                    self._soft if lock in spins else self._hung, locks=[lock], tasks=[task])
        for task, (lock, t, seq) in sorted(g.waiting.items()):
            pending("waiter", t, seq, f"{task} waits for {lock} since t={t:.6f}")
        if g.actual_due is not None:
            seq, t = g.actual_due
            pending("actual", t, seq, f"the balloon changed at t={t:.6f} (to {g.num_pages} "
                    f"x 4 KiB) and actual is still {g.actual}", "actual-not-updated",
                    self._hung)
        now = (self._t, self._seq)
        if g.pending_fill is not None:
            pending("fill", *now, f"a fill of {len(g.pending_fill)} pages not yet inflated")
        if g.cnt[LEAKED]:
            pending("leak", *now, f"{g.cnt[LEAKED]} leaked pages not yet released")
        if g.migration is not None:
            new, hi, old, _ = g.migration
            pending("migration", *now, f"migration of page {old if old >= 0 else '?'} to page "
                    f"{new} (inflate hs {hi}) in progress")
        if g.isolated_by:
            pages = sorted(g.isolated_by)
            workers = ", ".join(sorted({w for w, _ in g.isolated_by.values()}))
            pending("isolated", *now, f"{len(pages)} pages isolated by {workers}: "
                    f"{_show(pages)}")
        for worker, (seq, t) in sorted(g.compaction.items()):
            pending("compaction", t, seq, f"{worker}'s compaction run, started at t={t:.6f}")

    def _summary_checks(self, g: _Guest) -> None:
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
        if not isinstance(balloon, Mapping) or not self._settled(g):
            return
        in_balloon = g.cnt[LISTED] + g.cnt[ISOLATED]
        self._compare(g, "driver pages on the list", balloon.get("pages_in_list"),
                      g.cnt[LISTED])
        self._compare(g, "driver isolated pages", balloon.get("isolated"), g.cnt[ISOLATED])
        self._compare(g, "driver actual (num_pages)", balloon.get("actual"), g.num_pages)
        self._compare(g, "driver pages inflated", balloon.get("inflated"), g.filled)
        self._compare(g, "driver pages deflated", balloon.get("deflated"), g.leaked)
        self._compare(g, "totalram", balloon.get("totalram"), g.nr_pages - g.filled + g.released)
        if isinstance(owners, Mapping):
            owned = sum(int(v) for k, v in owners.items() if str(k).startswith("balloon"))
            self._compare(g, "pages owned by the balloon", owned, in_balloon)

    def _settled(self, g: _Guest) -> bool:
        """The session ended with nothing of the balloon in flight: its counts are exact."""
        return (g.quiet() and not g.compaction and not g.isolated_by and g.actual_due is None
                and g.actual == g.num_pages == g.last_target)

    def _compare(self, g: _Guest, what: str, logged: object, rebuilt: int) -> None:
        if logged is not None and logged != rebuilt:
            self._violation("summary-mismatch", None, g.name, f"session.end summary: {what} = "
                            f"{logged}, rebuilt from the log: {rebuilt}")

    def _describe_checks(self) -> None:
        guests = [g for g in self._guests.values() if g.nr_pages]
        settled = [g.name for g in guests if self._settled(g)]
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
            "session.end summary: host ballooned/inflated/deflated"
            + (f"; driver list, isolated, actual, totalram, balloon-owned pages "
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


# -- entry points ----------------------------------------------------------------------------

def check_log(path: Path, *, history: int = 16) -> Report:
    """Check the log at ``path``; LogError if it cannot be read."""
    checker = Checker()
    report = _check(checker, iter_log(path), str(path))
    first = report.first
    if first is not None and history:
        _history(report, iter_log(path, stop_seq=first.seq), first, checker.ppp, history)
    return report


def check_records(records: Sequence[Record], *, history: int = 16) -> Report:
    """Check in-memory records (a flight recorder's, a test's); LogError names the record.

    Each record is read back as its log line would be: in-memory records hold PFN arrays
    where a log file has lists, and the checker must see one and the same thing.
    """
    records = [orjson.loads(dumps(dict(r))) for r in records]
    checker = Checker()
    report = _check(checker, records, None)
    first = report.first
    if first is not None and history:
        _history(report, records, first, checker.ppp, history)
    return report


def _check(checker: Checker, records: Iterable[Record], where: str | None) -> Report:
    """Feed every record, then finish; a record that cannot be read is a LogError naming its
    number (its line, in a file)."""
    feed = checker.feed
    for n, rec in enumerate(records, 1):
        try:
            feed(rec)
        except BadRecord as e:
            raise LogError(n, str(e), where) from None
    try:
        return checker.finish()
    except LogError as e:
        raise LogError(e.line, e.why, where) from None


# -- the first violation's story -------------------------------------------------------------

_HS_EVENTS: Final = frozenset((schema.VQ_ADD, schema.HOST_POP, schema.HOST_INFLATE_DONE,
                               schema.HOST_DEFLATE_DONE, schema.HOST_STATS, schema.VQ_ACK))
_WIRE_EVENTS: Final = frozenset((schema.VQ_ADD, schema.HOST_INFLATE_DONE,
                                 schema.HOST_DEFLATE_DONE, schema.HOST_VIOLATION))
_REPORTS: Final = frozenset((schema.LOCKDEP, schema.HUNG_TASK, schema.SOFT_LOCKUP))


def _history(report: Report, records: Iterable[Record], v: Violation, ppp: int,
             limit: int) -> None:
    """The records up to the first violation that concern its pages, locks, handshakes and
    tasks -- the page's or the lock's story, in log order -- the last ``limit`` of them."""
    pfns = set(v.pfns)
    locks = set(v.locks) | {f"page:{p}" for p in pfns}
    hs = set(v.hs)
    tasks = set(v.tasks)
    out: deque[dict[str, Any]] = deque(maxlen=limit)
    n = 0
    for rec in records:
        seq = rec.get("seq", 0)
        if seq > v.seq:
            break
        if _concerns(rec, v.guest, pfns, locks, hs, tasks, ppp) or (
                (seq == v.seq or 0 < v.window <= seq) and rec.get("event") != schema.SESSION_END
                and (not v.guest or _guest_name(str(rec.get("actor", ""))) == v.guest)):
            out.append(dict(rec))
            n += 1
    report.history_skipped = n - len(out)
    report.history = list(out)


def _concerns(rec: Record, guest: str, pfns: set[int], locks: set[str], hs: set[int],
              tasks: set[str], ppp: int) -> bool:
    """Whether ``rec`` is part of the story of these pages, locks, handshakes or tasks."""
    event = rec.get("event")
    if event in (schema.SESSION_START, schema.SESSION_END):
        return False
    if guest and _guest_name(str(rec.get("actor", ""))) != guest:
        return False
    if pfns:
        named: Iterable[int] = rec.get("pfns") or ()
        if ppp > 1 and event in _WIRE_EVENTS:
            named = (w // ppp for w in named)
        if (any(rec.get(k) in pfns for k in ("pfn", "old", "new"))
                or not pfns.isdisjoint(named)):
            for k in ("hs", "hs_inflate", "hs_deflate"):
                if k in rec:
                    hs.add(int(rec[k]))  # follow the handshakes that carried the page
            return True
    if hs and event in _HS_EVENTS and rec.get("hs") in hs:
        return True
    if locks and (rec.get("lock") in locks or rec.get("waiting_on") in locks):
        return True
    return bool(tasks and event in _REPORTS and rec.get("task") in tasks)
