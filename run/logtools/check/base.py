"""The checker's shared state and the few steps every rule group uses: finding a record's
guest, filing a violation with the state of its pages and locks, the quiescent-point check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from actors.guest.balloon import DRIVERS, VirtioBalloon
from protocol.conformance import Rule
from protocol.pfns import show_pfns as show
from protocol.pfns import wire_to_guest_pfns

from .model import (
    ISOLATED,
    LISTED,
    PHASE_NAMES,
    STATE_NAMES,
    Guest,
    Record,
    guest_name,
)
from .report import MAX_KEPT, Report, Violation

Settle = Callable[[int, int], int]


def settle_rule(driver: object) -> Settle:
    """Where a driver variant's towards_target() steers for a host target (its own rule: the
    one fact about a driver the check needs that the log does not carry); a variant this
    build does not know steers to the target itself."""
    cls = DRIVERS.get(str(driver))
    return cls.settles_at if cls is not None else VirtioBalloon.settles_at


#: The monitor's page states as the check's reports name them.
VIRTIO_NAMES: dict[str, str] = {"not-in-balloon": "not in the balloon",
                                "inflating": "inflating", "inflated": "inflated",
                                "deflating": "deflating"}


class CheckerBase:
    """What every group of rules reads and writes; :class:`.checker.Checker` combines them."""

    def __init__(self) -> None:
        self.report = Report()
        self._seq = 0
        self._t = 0.0
        self._started = False
        self._ended = False
        self._end_reason = ""
        self._summary: Mapping[str, Any] = {}
        self._guests: dict[str, Guest] = {}
        self._by_actor: dict[str, Guest] = {}
        self.ppp = 1
        self._nr_pages = 0
        self._settles_at: Settle = settle_rule(None)
        #: guest name -> (pages, PAGES_PER_PAGE, its driver's settle rule), from [[guests]]
        self._shapes: dict[str, tuple[int, int, Settle]] = {}
        self._features = 0  # negotiated, for the conformance monitors
        self._hung = 120.0
        self._soft = 20.0
        self._saw_locks = False
        self._echo: Counter[str] = Counter()  # the session's copies of host.violation
        self._notes: Counter[str] = Counter()

    def _guest(self, rec: Record) -> Guest:
        """The guest a record's actor belongs to (created on first sight)."""
        actor = rec["actor"]
        g = self._by_actor.get(actor)
        if g is None:
            name = guest_name(actor)
            g = self._guests.get(name)
            if g is None:
                nr_pages, ppp, settles_at = self._shapes.get(
                    name, (self._nr_pages, self.ppp, self._settles_at))
                g = self._guests[name] = Guest(name, nr_pages, ppp, self._features,
                                               settles_at)
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
                window = min((g.locks[lock].seq for lock in locks if lock in g.locks),
                             default=0)
            r.violations.append(Violation(kind, source, seq, t, guest, detail, pfns, locks,
                                          tuple(dict.fromkeys(tasks)), tuple(hs), state,
                                          window))

    def _rule(self, g: Guest, rule: Rule, rec: Record, detail: str, pages: Sequence[int],
              hs: Iterable[int] = ()) -> None:
        """A virtio rule broken, under the conformance monitor's id (its logged copy, if the
        host's own monitor saw it too, is then not counted again)."""
        kind = f"virtio:{rule}"
        g.expected[kind] += 1
        self._violation(kind, rec, g.name, detail, pfns=pages, hs=hs)

    def _state(self, g: Guest, pfns: Sequence[int], locks: Sequence[str]) -> tuple[str, ...]:
        """What the log says about these pages and locks right now (for the report)."""
        out = []
        for p in pfns[:8]:
            if not 0 <= p < g.nr_pages:
                continue
            line = (f"page {p}: driver {STATE_NAMES[g.drv[p]]}; virtio "
                    f"{VIRTIO_NAMES[g.virtio.page_state(p)]}; "
                    f"host holds {g.hostcnt[p]}/{g.ppp} of its PFNs")
            if p in g.isolated_by:
                line += f"; isolated by {g.isolated_by[p].worker} (mid {g.isolated_by[p].mid})"
            wire = set(g.wire([p]))
            open_hs = [f"{h.queue} hs={hs} ({PHASE_NAMES[h.phase]})" for hs, h in g.hs.items()
                       if not wire.isdisjoint(h.pfns)]
            if open_hs:
                line += f"; in {', '.join(open_hs)}"
            out.append(line)
        for lock in locks[:8]:
            owner = g.locks.get(lock)
            waiters = [t for t, w in g.waiting.items() if w.who == lock]
            if owner is not None:
                line = f"{lock}: held by {owner.who} since t={owner.t:.6f} (seq {owner.seq})"
            elif self._saw_locks:
                line = f"{lock}: free"
            else:
                continue
            if waiters:
                line += f"; waiting: {', '.join(waiters)}"
            out.append(line)
        return tuple(out)

    def _pages(self, g: Guest, rec: Record, pfns: Sequence[int], wire: bool
               ) -> Sequence[int] | None:
        """Guest pages named by a record (wire PFNs converted; PFNs that are not whole guest
        pages are the monitor's to report); None if any is outside guest RAM."""
        pages = wire_to_guest_pfns(pfns, g.ppp)[0] if wire and g.ppp > 1 else pfns
        if pages and (min(pages) < 0 or max(pages) >= g.nr_pages):
            bad = [p for p in pages if not 0 <= p < g.nr_pages]
            self._violation("page-state", rec, g.name,
                            f"{rec['event']} names pages {show(bad)} outside guest RAM "
                            f"({g.nr_pages} pages)", pfns=bad)
            return None
        return pages

    def _quiescent(self, g: Guest, rec: Record) -> None:
        """At a quiescent point: host set == driver list + isolated, and the counts agree."""
        cnt = g.cnt
        if not g.quiet() or (not g.nbad
                             and (cnt[LISTED] + cnt[ISOLATED]) * g.ppp == g.num_pages):
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

    def _note(self, rec: Record) -> None:
        self._notes[rec["event"]] += 1
