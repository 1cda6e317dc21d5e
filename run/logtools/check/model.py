"""One guest's balloon as rebuilt from the log: driver page states, handshakes, locks.

The virtio state of each page is not kept here but by the conformance monitor the checker
feeds (:mod:`.virtio`), so the spec's page rules exist once, in :mod:`protocol.conformance`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from protocol.conformance import Conformance

Record = Mapping[str, Any]

# Driver-side page states (one byte per guest PFN).
NONE, LISTED, ISOLATED, LEAKED, MIGRATING = 0, 1, 2, 3, 4
STATE_NAMES: Final = ("not ballooned", "on vb->pages", "isolated",
                      "leaked (off the list, not yet released)", "migrating out")
#: Driver states the host must hold at a quiescent point (list + isolated).
IN_BALLOON: Final = (False, True, True, False, False)

# Handshake phases.
ADDED, POPPED, DONE = 1, 2, 3
PHASE_NAMES: Final = ("", "added", "popped", "done")
INFLATEQ, DEFLATEQ, STATSQ = "inflateq", "deflateq", "statsq"


@dataclass(slots=True)
class Handshake:
    """An open buffer: its queue, the wire PFNs it named, how far it got, its vq.add record."""

    queue: str
    pfns: list[int]
    phase: int
    add: Record


@dataclass(slots=True)
class Migration:
    """virtballoon_migratepage in progress: the new page and its inflate, then the old page
    and its deflate (``old`` is -1 until that second buffer is added)."""

    new: int
    hs_inflate: int
    old: int = -1
    hs_deflate: int = 0


@dataclass(frozen=True, slots=True)
class Isolation:
    """Who isolated a page: the compaction worker and its migration id."""

    worker: str
    mid: int


@dataclass(slots=True)
class Hold:
    """A lock held (or waited for, in ``waiting``): the lock or the task, since when."""

    who: str
    t: float
    seq: int


@dataclass(slots=True)
class Since:
    """When something began: the record's seq and time."""

    seq: int
    t: float


def guest_name(actor: str) -> str:
    """The guest an actor belongs to: ``guest0.balloon`` and ``host.guest0`` are ``guest0``."""
    if actor.startswith("host."):
        return actor[5:]
    return actor.split(".", 1)[0]


class Guest:
    """One guest's state as rebuilt from the log."""

    __slots__ = (
        "actual",
        "actual_due",
        "bad",
        "cnt",
        "compaction",
        "drift",
        "drv",
        "expected",
        "filled",
        "hostcnt",
        "hs",
        "isolated_by",
        "isolations",
        "last_target",
        "leaked",
        "locks",
        "migration",
        "migrations",
        "n_hosted",
        "name",
        "nbad",
        "nr_pages",
        "num_pages",
        "open_hs",
        "pending_fill",
        "pending_leak",
        "ppp",
        "putbacks",
        "released",
        "removal",
        "settles_at",
        "spins",
        "totals",
        "virtio",
        "waiting",
    )

    def __init__(self, name: str, nr_pages: int, ppp: int, features: int,
                 settles_at: Callable[[int, int], int]) -> None:
        self.name = name
        self.nr_pages = nr_pages
        self.ppp = ppp
        #: Where the driver's towards_target() steers for a host target (its variant's rule)
        self.settles_at = settles_at
        self.drv = bytearray(nr_pages)  # driver state per guest page
        # Virtio state per guest page, as the spec sees it: the live monitor, fed from the log
        self.virtio = Conformance(features, ppp)
        self.hostcnt = bytearray(nr_pages)  # wire PFNs of each guest page the host holds
        self.bad = bytearray(nr_pages)  # 1: host and driver disagree on this page
        self.nbad = 0
        self.cnt = [0, 0, 0, 0, 0]  # pages per driver state (the NONE slot is unused)
        self.n_hosted = 0  # wire PFNs in the host's ballooned set
        self.totals = [0, 0]  # wire PFNs the host inflated / deflated
        self.num_pages = 0  # the driver's balloon size, 4 KiB units (fill/leak records)
        self.actual = 0
        self.actual_due: Since | None = None  # a change not yet reported in actual
        self.last_target = 0
        self.hs: dict[int, Handshake] = {}  # open handshakes by id
        self.open_hs = 0  # inflate/deflate handshakes added and not acked
        self.pending_fill: list[int] | None = None  # a fill's pages until its inflate add
        self.pending_leak: list[int] | None = None  # a leak's pages until its deflate add
        self.migration: Migration | None = None
        self.isolated_by: dict[int, Isolation] = {}
        self.compaction: dict[str, Since] = {}  # open compaction runs by worker
        self.expected: Counter[str] = Counter()  # kinds found, whose logged copy is dropped
        self.filled = self.released = self.leaked = 0  # guest pages, for totalram
        #: balloon.isolate / .migrate / .putback records seen (the compact_balloon_* counts)
        self.isolations = self.migrations = self.putbacks = 0
        #: Counter -> logged minus rebuilt, as last reported (each drift is reported once)
        self.drift: dict[str, int] = {}
        self.removal = ""  # balloon.remove's last phase: "start" (leaking all), "done"
        # locks (debug logs): lock -> its holder; task -> spinlocks held; task -> lock awaited
        self.locks: dict[str, Hold] = {}
        self.spins: dict[str, list[str]] = {}
        self.waiting: dict[str, Hold] = {}

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
            b = h != self.ppp if IN_BALLOON[new] else h != 0
            if b != self.bad[p]:
                self.bad[p] = b
                self.nbad += 1 if b else -1

    def quiet(self) -> bool:
        """Nothing in flight: the host's set and the driver's list + isolated must agree."""
        return (not self.open_hs and self.pending_fill is None and self.pending_leak is None
                and not self.cnt[LEAKED] and self.migration is None)

    def settled(self) -> bool:
        """Quiet, and nothing else of the balloon under way: no compaction run (isolation,
        putback and the release of migrated pages happen inside one), ``actual`` written, and
        the driver at the size its target steers to (a leak round takes pages off the list
        before its record) or removed: every counter is exact, and the records rebuild it."""
        return (self.quiet() and not self.compaction and not self.isolated_by
                and self.actual_due is None and self.actual == self.num_pages
                and (self.removal == "done" or (not self.removal
                     and self.num_pages == self.settles_at(self.last_target, self.ppp))))

    def wire(self, pages: Iterable[int]) -> list[int]:
        """Wire PFNs (4 KiB units) of guest pages."""
        ppp = self.ppp
        return list(pages) if ppp == 1 else [p * ppp + i for p in pages for i in range(ppp)]

    def carriers(self, pages: Iterable[int]) -> list[int]:
        """Open handshakes naming any of these guest pages (for the story of a violation)."""
        wire = set(self.wire(pages))
        return [hs for hs, h in self.hs.items() if not wire.isdisjoint(h.pfns)]
