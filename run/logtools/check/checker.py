"""The state machine that reads a log: one handler per event, in a table built once; records
out of place, out of order or missing a field make the log unreadable (:class:`BadRecord`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from actors.sim import schema
from protocol.balloon import BalloonFeature, feature_mask, select_features
from run.logtools.logread import BadRecord

from .balloon import BalloonRules
from .base import settle_rule
from .handshakes import HandshakeRules
from .locks import LockRules
from .logged import LoggedReports
from .model import DEFLATEQ, INFLATEQ, Record
from .summary import SummaryChecks


class Checker(HandshakeRules, BalloonRules, LockRules, LoggedReports, SummaryChecks):
    """The state machine: ``feed`` every record in order, then ``finish`` for the report."""

    def __init__(self) -> None:
        super().__init__()
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
            schema.KERNEL_WARNING: self._kernel_warning,
            schema.HUNG_TASK: self._watchdog,
            schema.SOFT_LOCKUP: self._watchdog,
            schema.VQ_ADD: self._vq_add,
            schema.HOST_POP: self._host_pop,
            schema.HOST_INFLATE_DONE: functools.partial(self._device_done, INFLATEQ, 1),
            schema.HOST_DEFLATE_DONE: functools.partial(self._device_done, DEFLATEQ, -1),
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
            schema.BALLOON_PUTBACK_LRU: self._putback_lru,
            schema.BALLOON_REMOVE: self._remove,
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
            self._settles_at = settle_rule(guest.get("driver"))
            for spec in sc.get("guests") or ():  # [[guests]]: each its own size and driver
                size = int(spec["page_size"])
                self._shapes[str(spec["name"])] = (int(spec["memory"]) // size,
                                                   max(1, size // 4096),
                                                   settle_rule(spec.get("driver")))
            offered = feature_mask(*(BalloonFeature[f] for f in host["features"]))
            accepted = feature_mask(*(BalloonFeature[f] for f in guest["features"]))
            features = select_features(offered, accepted)
            self._hung = float(guest.get("hung_task_timeout", 120.0))
            self._soft = float(guest.get("softlockup_thresh", 20.0))
        except (KeyError, TypeError, ValueError) as e:
            raise BadRecord(f"session.start: scenario lacks what the check needs ({e!r})"
                            ) from None
        self._features = features  # each guest's conformance monitor checks under them
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
