"""What ``vballoon check`` hands back: the violations, what was pending, the verdict."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

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
    #: Settled points (``mem.snapshot`` records and the end) whose counters were compared.
    counter_points: int = 0
    notes: list[str] = field(default_factory=list)
    #: The records that led to the first violation (its pages', locks', handshakes' story).
    history: list[dict[str, Any]] = field(default_factory=list)
    history_skipped: int = 0
    #: Why the first violation happened: its faults, waits-for chain, last progress.
    why: list[str] = field(default_factory=list)

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
                **first.as_dict(), "why": self.why, "history": self.history,
                "history_skipped": self.history_skipped},
            "counts": dict(sorted(self.counts.items())),
            "by_source": {k: dict(sorted(v.items())) for k, v in sorted(self.by_source.items())},
            "violations": [v.as_dict() for v in self.violations[:100]],
            "pending": [p.as_dict() for p in self.pending],
            "checked": self.checked,
            "counter_points": self.counter_points,
            "notes": self.notes,
        }
