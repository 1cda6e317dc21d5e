"""The first violation's story: the records before it that concern its pages, locks,
handshakes and tasks, in log order (following the handshakes that carried its pages)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from actors.sim import schema

from .explain import REPORTS, Explainer
from .model import Record, guest_name
from .report import Report, Violation

_HS_EVENTS: Final = frozenset((schema.VQ_ADD, schema.HOST_POP, schema.HOST_INFLATE_DONE,
                               schema.HOST_DEFLATE_DONE, schema.HOST_STATS, schema.VQ_ACK))
_WIRE_EVENTS: Final = frozenset((schema.VQ_ADD, schema.HOST_INFLATE_DONE,
                                 schema.HOST_DEFLATE_DONE, schema.HOST_VIOLATION))


def history(report: Report, records: Iterable[Record], v: Violation, ppp: int,
            limit: int, *, around: int | None = None, task: str | None = None) -> None:
    """The records up to the first violation that concern its pages, locks, handshakes and
    tasks -- the page's or the lock's story, in log order -- the last ``limit`` of them; with
    ``around``, the ``limit`` records centred on that seq instead; with ``task``, only that
    task's records. The same pass explains the violation (``report.why``)."""
    pfns = set(v.pfns)
    locks = set(v.locks) | {f"page:{p}" for p in pfns}
    hs = set(v.hs)
    tasks = set(v.tasks)
    explainer = Explainer(v.guest)
    at: Record | None = None
    out: deque[dict[str, Any]] = deque(maxlen=limit)
    lo, hi = window(v.seq, limit, around)
    n = 0
    for rec in records:
        seq = rec.get("seq", 0)
        if seq > max(v.seq, hi):
            break
        if seq <= v.seq:
            explainer.feed(rec)
            if seq == v.seq:
                at = rec
        if not lo <= seq <= hi:
            continue
        if task is not None:
            chosen = task in (rec.get("task"), rec.get("worker"))
        elif around is not None:
            chosen = rec.get("event") != schema.SESSION_END
        else:
            chosen = _concerns(rec, v.guest, pfns, locks, hs, tasks, ppp) or (
                (seq == v.seq or 0 < v.window <= seq) and rec.get("event") != schema.SESSION_END
                and (not v.guest or guest_name(str(rec.get("actor", ""))) == v.guest))
        if chosen:
            out.append(dict(rec))
            n += 1
    report.history_skipped = n - len(out)
    report.history = list(out)
    report.why = explainer.explain(at, v.tasks, v.t)


def window(seq: int, limit: int, around: int | None) -> tuple[int, int]:
    """The seqs a history may show: up to the violation's ``seq``, or the ``limit`` centred
    on ``around``."""
    if around is None:
        return 0, seq
    lo = around - limit // 2
    return lo, lo + limit - 1


def _concerns(rec: Record, guest: str, pfns: set[int], locks: set[str], hs: set[int],
              tasks: set[str], ppp: int) -> bool:
    """Whether ``rec`` is part of the story of these pages, locks, handshakes or tasks."""
    event = rec.get("event")
    if event in (schema.SESSION_START, schema.SESSION_END):
        return False
    if guest and guest_name(str(rec.get("actor", ""))) != guest:
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
    return bool(tasks and event in REPORTS and rec.get("task") in tasks)
