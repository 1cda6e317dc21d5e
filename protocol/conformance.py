"""The balloon spec's normative rules as a pure monitor: feed events, get violations back.

Nothing here raises on a broken rule: the monitor reports, as the host's conformance checker
and the log tools want, and keeps going.  Events are frozen dataclasses; PFN-carrying events
take whole batches (a buffer's worth) so a session feeds one event per virtqueue buffer.

Units: inflate/deflate events carry **wire PFNs** (4 KiB units, exactly what the buffer holds);
:class:`PageUsed` carries **guest PFNs** (what the guest touched).  ``num_pages`` and ``actual``
are in 4 KiB units, as in config space.  The monitor tracks guest pages; a buffer that names only
part of a guest page is reported (``driver.split-guest-page``) and that part is ignored.

Rules checked (ids are stable; see :class:`Rule`):

* ``driver.use-before-inflate-ack`` — a page used between its inflate buffer and the ack.
* ``driver.use-while-ballooned`` — a page used while in the balloon and never deflated.
* ``driver.use-before-deflate-ack`` — with MUST_TELL_HOST, a page used before its deflate ack.
* ``driver.deflate-unacked-inflate`` — a page deflated before its inflate was acknowledged.
* ``driver.deflate-not-in-balloon`` — a page deflated that is not in the balloon.
* ``driver.deflate-below-target`` — without DEFLATE_ON_OOM, a deflate that takes the balloon
  below every target the device set since the driver last reported ``actual`` (so a target
  raised while the driver was already leaking is not blamed on it). A deflate that only
  returns pages inflated since ``actual`` was last written (a migration's swap: inflate the
  new page, deflate the old) does not shrink the balloon and is not blamed either.
* ``driver.inflate-in-balloon`` — a page inflated again while in the balloon.
* ``driver.split-guest-page`` — a buffer that names part of a guest page.
* ``driver.actual-not-updated`` — at :class:`Quiescent`, ``actual`` differs from the pages the
  device holds.
* ``driver.stats-without-feature`` / ``driver.stats-second-buffer`` /
  ``driver.stats-tags-changed`` / ``driver.stats-no-buffer`` (at :class:`Quiescent`).
* ``device.ack-without-request`` — an inflate/deflate ack naming a page nobody asked about.
* ``device.stats-used-without-buffer`` — the device used a stats buffer it did not hold.

The device files its own buffer checks under the same enumeration (``device.bad-direction``,
``device.bad-buffer``, ``device.pfn-out-of-range``, ``device.duplicate-pfn``,
``device.double-inflate``, ``device.deflate-not-ballooned``, ``device.bad-queue``): the
driver broke those, and :attr:`Rule.role` says so, but their logged ids name the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np

from .errors import ProtocolError
from .features import BalloonFeature
from .pfns import PfnIndex, Pfns, as_index, wire_to_guest_pfns
from .pfns import show_pfns as _show
from .rules import (
    ActualWritten,
    ConfigTarget,
    DeflateAcked,
    DeflateAdded,
    DriverRemoving,
    Event,
    InflateAcked,
    InflateAdded,
    PageUsed,
    Quiescent,
    Reset,
    Rule,
    StatsBufferAdded,
    StatsBufferUsed,
    StatsTags,
    Violation,
)

__all__ = [
    "ActualWritten",
    "ConfigTarget",
    "Conformance",
    "DeflateAcked",
    "DeflateAdded",
    "DriverRemoving",
    "Event",
    "InflateAcked",
    "InflateAdded",
    "PageUsed",
    "Quiescent",
    "Reset",
    "Rule",
    "StatsBufferAdded",
    "StatsBufferUsed",
    "StatsTags",
    "Violation",
]


# ------------------------------------------------------------------------------------- monitor

#: Page states are dense bytes below this guest PFN (256 GiB of 4 KiB pages, 64 MiB of
#: states at most); PFNs above it (only a hostile driver names them) live in a dict.
_DENSE_MAX: Final = 1 << 26
#: Below this many pages, array calls cost more than the page-by-page loop they replace.
_BATCH_MIN: Final = 8
_INFLATING: Final = 1
_INFLATED: Final = 2
_DEFLATING: Final = 3
_PAGE_STATE_NAMES: Final = ("not-in-balloon", "inflating", "inflated", "deflating")


def span_and_unique(g: PfnIndex) -> tuple[int, int, bool]:
    """The lowest and highest PFN of a non-empty batch, and whether no PFN is in it twice
    (one sort; with no repeat, ``high - low == len - 1`` means the batch is that range)."""
    s = g.copy()
    s.sort()  # (np.sort: the same two steps behind a Python-level wrapper)
    return int(s[0]), int(s[-1]), not np.count_nonzero(s[1:] == s[:-1])


class _Pages:
    """Page states by guest PFN across the dense bytes and the dict of far pages."""

    __slots__ = ("dense", "far")

    def __init__(self, dense: memoryview, far: dict[int, int]) -> None:
        self.dense = dense
        self.far = far

    def __getitem__(self, pfn: int) -> int:
        dense = self.dense
        return int(dense[pfn]) if 0 <= pfn < len(dense) else self.far.get(pfn, 0)

    def __setitem__(self, pfn: int, state: int) -> None:
        if 0 <= pfn < len(self.dense):
            self.dense[pfn] = state
        elif state:
            self.far[pfn] = state
        else:
            self.far.pop(pfn, None)


class Conformance:
    """A pure monitor of the balloon's normative rules for one device instance.

    ``features`` is the negotiated feature bitmask; ``pages_per_page`` the wire PFNs per guest
    page (1 for 4 KiB guest pages).  Call :meth:`feed` with each event, in the order the system
    performed them; it returns the violations that event revealed (usually none).

    Page states live in a byte array indexed by guest PFN (grown on demand). A batch in which
    every page is where a conforming driver and device leave it (each page once, in the state
    the event expects) is applied with a few array operations; any other batch takes the
    page-by-page path, which defines the semantics (``vectorised=False`` forces it, and a test
    checks both paths agree on arbitrary event sequences).
    """

    __slots__ = (
        "_actual",
        "_deflate_on_oom",
        "_far",
        "_floor",
        "_must_tell_host",
        "_n_deflating",
        "_n_inflated",
        "_n_inflating",
        "_num_pages",
        "_ppp",
        "_removing",
        "_st",
        "_st_view",
        "_stats_outstanding",
        "_stats_tags",
        "_stats_vq",
        "_swap_credit",
        "_vectorised",
        "features",
    )

    def __init__(self, features: int, pages_per_page: int = 1, *,
                 vectorised: bool = True) -> None:
        if not isinstance(pages_per_page, int) or pages_per_page < 1:
            raise ProtocolError(
                "pages_per_page must be a positive int",
                queue="config",
                role="driver",
                state="monitor setup",
                value=pages_per_page,
            )
        self.features = features
        self._ppp = pages_per_page
        self._must_tell_host = bool(features >> BalloonFeature.MUST_TELL_HOST & 1)
        self._deflate_on_oom = bool(features >> BalloonFeature.DEFLATE_ON_OOM & 1)
        self._stats_vq = bool(features >> BalloonFeature.STATS_VQ & 1)
        self._vectorised = vectorised
        self._reset()

    def _reset(self) -> None:
        # Guest pfn -> 0/_INFLATING/_INFLATED/_DEFLATING: a numpy array for batches and a
        # memoryview of it for single pages (as cheap to index as a bytearray). np.zeros
        # maps zero pages lazily, so a hostile PFN near 2**32 costs address space, not RAM.
        self._st_view = np.zeros(0, dtype=np.uint8)
        self._st = self._st_view.data
        self._far: dict[int, int] = {}  # pages at or above _DENSE_MAX (hostile PFNs)
        self._n_inflating = 0
        self._n_inflated = 0
        self._n_deflating = 0
        self._num_pages = 0
        self._actual = 0
        self._floor = 0  # lowest target since the driver last wrote actual
        self._swap_credit = 0  # pages inflated since actual was last written (a swap's half)
        self._stats_outstanding = False
        self._stats_tags: frozenset[int] | None = None
        self._removing = False

    # -- introspection ---------------------------------------------------------------------

    @property
    def num_pages(self) -> int:
        """The latest target the device set (4 KiB units)."""
        return self._num_pages

    @property
    def actual(self) -> int:
        """The latest ``actual`` the driver wrote (4 KiB units)."""
        return self._actual

    @property
    def device_pages(self) -> int:
        """Pages the device holds: inflate acked, deflate not yet acked (4 KiB units)."""
        return (self._n_inflated + self._n_deflating) * self._ppp

    def page_state(self, guest_pfn: int) -> str:
        """A guest page's balloon state: not-in-balloon, inflating, inflated or deflating."""
        st = self._st
        if 0 <= guest_pfn < len(st):
            return _PAGE_STATE_NAMES[st[guest_pfn]]
        return _PAGE_STATE_NAMES[self._far.get(guest_pfn, 0)]

    def _states(self, top: int) -> memoryview | _Pages:
        """Page states indexable by guest PFN up to ``top``: the dense bytes, grown if need be
        (up to _DENSE_MAX pages), or, past that, a view that also reaches the far pages."""
        old = self._st_view
        if top >= len(old) < _DENSE_MAX:
            # Past _DENSE_MAX, the dense part covers every PFN below it: a batch may mix both.
            size = _DENSE_MAX if top >= _DENSE_MAX else min(max(top + 1, 2 * len(old)),
                                                             _DENSE_MAX)
            grown = np.zeros(size, dtype=np.uint8)
            grown[: len(old)] = old
            self._st_view = grown
            self._st = grown.data
        if top >= _DENSE_MAX or self._far:
            return _Pages(self._st, self._far)
        return self._st

    def _batch(self, pfns: Pfns, expect: int, new: int) -> int:
        """The fast path, for 4 KiB guest pages: if every page of the batch is in state
        ``expect``, each once, move them all to ``new`` and return how many; else change
        nothing and return -1. Small batches return -1: the loop is cheaper for them."""
        if not self._vectorised or self._ppp != 1 or len(pfns) < _BATCH_MIN:
            return -1
        g = as_index(pfns)
        low, top, unique = span_and_unique(g)
        if top >= _DENSE_MAX or not unique:
            return -1
        if top >= len(self._st_view):
            self._states(top)
        st = self._st_view
        run = top - low == len(g) - 1  # the pages low..top, in some order: slices will do
        now = st[low:top + 1] if run else st.take(g)  # take/put: no fancy-indexing dispatch
        # count_nonzero, not .any()/.all(): no Python-level wrapper per call
        if np.count_nonzero(now != expect if expect else now):
            return -1
        if run:
            now[:] = new
        else:
            st.put(g, new)
        return len(g)

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Violation]:
        """Apply one event; return the violations it reveals, in rule order."""
        if isinstance(event, PageUsed):
            return self._page_used(event)
        if isinstance(event, InflateAdded):
            return self._inflate_added(event)
        if isinstance(event, InflateAcked):
            return self._inflate_acked(event)
        if isinstance(event, DeflateAdded):
            return self._deflate_added(event)
        if isinstance(event, DeflateAcked):
            return self._deflate_acked(event)
        if isinstance(event, ConfigTarget):
            self._num_pages = event.num_pages
            self._floor = min(self._floor, event.num_pages)
            return []
        if isinstance(event, ActualWritten):
            self._actual = event.actual
            self._floor = self._num_pages
            self._swap_credit = 0
            return []
        if isinstance(event, StatsBufferAdded):
            return self._stats_added(event)
        if isinstance(event, StatsBufferUsed):
            return self._stats_used(event)
        if isinstance(event, StatsTags):
            return self._stats_tags_seen(event.tags, event)
        if isinstance(event, Quiescent):
            return self._quiescent(event)
        if isinstance(event, DriverRemoving):
            self._removing = True
            return []
        if isinstance(event, Reset):
            self._reset()
            self._stats_vq = False  # a reset device has no queues until a driver sets it up
            return []
        raise TypeError(f"not a conformance event: {event!r}")

    def feed_all(self, events: Iterable[Event]) -> list[Violation]:
        """Feed events in order; all violations, in order."""
        out: list[Violation] = []
        for event in events:
            out.extend(self.feed(event))
        return out

    # -- rules -----------------------------------------------------------------------------

    def _guests(self, pfns: Pfns, event: Event, out: list[Violation]) -> list[int]:
        wire = pfns.tolist() if isinstance(pfns, np.ndarray) else pfns
        if self._ppp == 1:
            return list(wire)
        guests, strays = wire_to_guest_pfns(wire, self._ppp)
        if strays:
            out.append(
                Violation.of(
                    Rule.SPLIT_GUEST_PAGE,
                    f"buffer names wire PFNs {_show(strays)} that do not form whole "
                    f"{self._ppp * 4} KiB guest pages",
                    strays,
                    event,
                )
            )
        return guests

    def _inflate_added(self, event: InflateAdded) -> list[Violation]:
        n = self._batch(event.pfns, 0, _INFLATING)
        if n >= 0:
            self._n_inflating += n
            self._swap_credit += n
            return []
        out: list[Violation] = []
        guests = self._guests(event.pfns, event, out)
        st = self._states(max(guests, default=0))
        again: list[int] = []
        for p in guests:
            if st[p]:
                again.append(p)
            else:
                st[p] = _INFLATING
        self._n_inflating += len(guests) - len(again)
        self._swap_credit += len(guests) - len(again)
        if again:
            again.sort()
            states = sorted({self.page_state(g) for g in again})
            out.append(
                Violation.of(
                    Rule.INFLATE_IN_BALLOON,
                    f"inflate of guest pages {_show(again)} already in the balloon "
                    f"(state {', '.join(states)})",
                    again,
                    event,
                )
            )
        return out

    def _inflate_acked(self, event: InflateAcked) -> list[Violation]:
        n = self._batch(event.pfns, _INFLATING, _INFLATED)
        if n >= 0:
            self._n_inflating -= n
            self._n_inflated += n
            return []
        out: list[Violation] = []
        guests = self._guests(event.pfns, event, out)
        st = self._states(max(guests, default=0))
        unknown: list[int] = []
        acked = 0
        for p in guests:
            state = st[p]
            if state == _INFLATING:
                st[p] = _INFLATED
                acked += 1
            elif not state:
                unknown.append(p)
            # inflated/deflating: a re-inflate already reported against the driver
        self._n_inflating -= acked
        self._n_inflated += acked
        if unknown:
            unknown.sort()
            out.append(
                Violation.of(
                    Rule.ACK_WITHOUT_REQUEST,
                    f"inflate ack names guest pages {_show(unknown)} no inflate buffer asked for",
                    unknown,
                    event,
                )
            )
        return out

    def _deflate_added(self, event: DeflateAdded) -> list[Violation]:
        out: list[Violation] = []
        unacked: list[int] = []
        absent: list[int] = []
        moved = self._batch(event.pfns, _INFLATED, _DEFLATING)
        if moved < 0:
            guests = self._guests(event.pfns, event, out)
            st = self._states(max(guests, default=0))
            moved = 0
            for p in guests:
                state = st[p]
                if state == _INFLATED:
                    st[p] = _DEFLATING
                    moved += 1
                elif state == _INFLATING:
                    unacked.append(p)
                else:
                    absent.append(p)
        self._n_inflated -= moved
        self._n_deflating += moved
        if unacked:
            unacked.sort()
            out.append(
                Violation.of(
                    Rule.DEFLATE_UNACKED_INFLATE,
                    f"deflate of guest pages {_show(unacked)} whose inflate is not acknowledged",
                    unacked,
                    event,
                )
            )
        if absent:
            absent.sort()
            out.append(
                Violation.of(
                    Rule.DEFLATE_NOT_IN_BALLOON,
                    f"deflate of guest pages {_show(absent)} that are not in the balloon "
                    "(never inflated, or already being deflated)",
                    absent,
                    event,
                )
            )
        # A deflate that only gives back what was just inflated (balloon page migration: the
        # new page is inflated, then the old one deflated) does not shrink the balloon.
        swapped = min(moved, self._swap_credit)
        self._swap_credit -= swapped
        if moved > swapped and not self._deflate_on_oom and not self._removing:
            left = (self._n_inflating + self._n_inflated) * self._ppp
            if left < self._floor:
                out.append(
                    Violation.of(
                        Rule.DEFLATE_BELOW_TARGET,
                        f"without DEFLATE_ON_OOM, deflate leaves {left} pages in the balloon, "
                        f"below target {self._floor} (num_pages={self._num_pages})",
                        event=event,
                    )
                )
        return out

    def _deflate_acked(self, event: DeflateAcked) -> list[Violation]:
        n = self._batch(event.pfns, _DEFLATING, 0)
        if n >= 0:
            self._n_deflating -= n
            return []
        out: list[Violation] = []
        guests = self._guests(event.pfns, event, out)
        st = self._states(max(guests, default=0))
        unknown: list[int] = []
        acked = 0
        for p in guests:
            state = st[p]
            if state == _DEFLATING:
                st[p] = 0
                acked += 1
            elif not state:
                unknown.append(p)
            # inflating/inflated: a bad deflate already reported against the driver
        self._n_deflating -= acked
        if unknown:
            unknown.sort()
            out.append(
                Violation.of(
                    Rule.ACK_WITHOUT_REQUEST,
                    f"deflate ack names guest pages {_show(unknown)} no deflate buffer asked for",
                    unknown,
                    event,
                )
            )
        return out

    def _page_used(self, event: PageUsed) -> list[Violation]:
        if not self._n_inflating + self._n_inflated + self._n_deflating:
            return []  # no page is in the balloon
        st = self._states(0)
        used = event.guest_pfns
        top = len(self._st)
        if len(used) >= _BATCH_MIN and not self._far:
            g = as_index(used)
            g = g[g < top]
            touched = g[self._st_view[g] != 0]
            if not len(touched):
                return []
            hits = sorted(set(touched.tolist()))
        else:
            hits = sorted({p for p in used if (p < top or self._far) and st[p]})
            if not hits:
                return []
        inflating: list[int] = []
        inflated: list[int] = []
        deflating: list[int] = []
        for p in hits:
            state = st[p]
            if state == _INFLATING:
                inflating.append(p)
            elif state == _INFLATED:
                inflated.append(p)
            else:
                deflating.append(p)
        out: list[Violation] = []
        if inflating:
            out.append(
                Violation.of(
                    Rule.USE_BEFORE_INFLATE_ACK,
                    f"guest pages {_show(inflating)} used after being added to an inflate "
                    "buffer and before the device acknowledged it",
                    inflating,
                    event,
                )
            )
        if inflated:
            out.append(
                Violation.of(
                    Rule.USE_WHILE_BALLOONED,
                    f"guest pages {_show(inflated)} used while in the balloon, never deflated",
                    inflated,
                    event,
                )
            )
        if deflating and self._must_tell_host:
            out.append(
                Violation.of(
                    Rule.USE_BEFORE_DEFLATE_ACK,
                    f"with MUST_TELL_HOST, guest pages {_show(deflating)} used before the "
                    "device acknowledged their deflate",
                    deflating,
                    event,
                )
            )
        return out

    def _stats_added(self, event: StatsBufferAdded) -> list[Violation]:
        out: list[Violation] = []
        if not self._stats_vq:
            out.append(
                Violation.of(
                    Rule.STATS_WITHOUT_FEATURE,
                    "stats buffer added but STATS_VQ was not negotiated",
                    event=event,
                )
            )
        if self._stats_outstanding:
            out.append(
                Violation.of(
                    Rule.STATS_SECOND_BUFFER,
                    "a second stats buffer was made available while the device holds one",
                    event=event,
                )
            )
        self._stats_outstanding = True
        if event.tags is not None:
            out.extend(self._stats_tags_seen(event.tags, event))
        return out

    def _stats_used(self, event: StatsBufferUsed) -> list[Violation]:
        if self._stats_outstanding:
            self._stats_outstanding = False
            return []
        return [
            Violation.of(
                Rule.STATS_USED_WITHOUT_BUFFER,
                "device used a stats buffer while none was available",
                event=event,
            )
        ]

    def _stats_tags_seen(self, tags: frozenset[int], event: Event) -> list[Violation]:
        tags = frozenset(tags)
        first = self._stats_tags
        if first is None:
            self._stats_tags = tags
            return []
        if tags == first:
            return []
        added = sorted(tags - first)
        missing = sorted(first - tags)
        return [
            Violation.of(
                Rule.STATS_TAGS_CHANGED,
                f"stats buffer carries a different subset of tags: added {added}, "
                f"missing {missing} (first buffer had {sorted(first)})",
                event=event,
            )
        ]

    def _quiescent(self, event: Quiescent) -> list[Violation]:
        out: list[Violation] = []
        held = self.device_pages
        if self._actual != held:
            out.append(
                Violation.of(
                    Rule.ACTUAL_NOT_UPDATED,
                    f"actual={self._actual} but the device holds {held} pages (4 KiB units)",
                    event=event,
                )
            )
        if self._stats_vq and not self._stats_outstanding:
            out.append(
                Violation.of(
                    Rule.STATS_NO_BUFFER,
                    "STATS_VQ negotiated but no stats buffer is available to the device",
                    event=event,
                )
            )
        self._floor = self._num_pages
        return out
