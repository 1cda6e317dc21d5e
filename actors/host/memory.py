"""The host's memory: one budget shared by every guest, RSS per guest in 4 KiB pages.

A guest page is *resident* until the host discards it on inflate (madvise(DONTNEED)); a
deflated page stays discarded until the guest touches it again, when the host refaults it
(RSS grows back). The host keeps this state itself, per 4 KiB PFN, in a bytearray: it never
trusts the guest's ``actual``. Batches of PFNs are applied with numpy array operations on a
view of that bytearray (one buffer's 256 PFNs: a few calls, no Python loop per page; a
migration's one-page buffers take the plain loop, cheaper at that size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.pfns import Pfns, as_index

RESIDENT, BALLOONED, DISCARDED = 0, 1, 2
#: Batches smaller than this are applied page by page: array calls would cost more.
_BATCH_MIN = 8


@dataclass
class GuestMemory:
    """One guest's RAM as the host sees it (4 KiB units)."""

    name: str
    pages: int
    state: bytearray = field(init=False)
    ballooned: int = 0
    discarded: int = 0  # deflated but not yet touched again
    refaults: int = 0
    _st: npt.NDArray[np.uint8] = field(init=False, repr=False)  # numpy view of ``state``

    def __post_init__(self) -> None:
        self.state = bytearray(self.pages)
        self._st = np.frombuffer(self.state, dtype=np.uint8)

    @property
    def rss(self) -> int:
        """Resident pages: everything the host has not discarded."""
        return self.pages - self.ballooned - self.discarded

    def partition(self, pfns: Pfns, state: int) -> tuple[Pfns, Pfns]:
        """(the PFNs in ``state``, the others), each in the order given."""
        if len(pfns) < _BATCH_MIN:
            st = self.state
            seq = pfns.tolist() if isinstance(pfns, np.ndarray) else pfns
            return [p for p in seq if st[p] == state], [p for p in seq if st[p] != state]
        g = as_index(pfns)
        hit = self._st[g] == state
        n = np.count_nonzero(hit)
        if n == 0 or n == len(g):  # the usual cases: nothing or everything in ``state``
            return (g[:0], g) if n == 0 else (g, g[:0])
        return g[hit], g[~hit]

    def inflate(self, pfns: Pfns) -> None:
        """Discard inflated pages (the caller validated them: in range, each once, not
        ballooned)."""
        if len(pfns) < _BATCH_MIN:
            st = self.state
            for p in pfns:
                if st[p] == DISCARDED:
                    self.discarded -= 1
                st[p] = BALLOONED
        else:
            g = as_index(pfns)
            st_ = self._st
            self.discarded -= int(np.count_nonzero(st_[g] == DISCARDED))
            st_[g] = BALLOONED
        self.ballooned += len(pfns)

    def deflate(self, pfns: Pfns) -> None:
        """Pages leave the balloon (validated: ballooned, each once); they stay discarded
        until the guest touches them."""
        if len(pfns) < _BATCH_MIN:
            st = self.state
            for p in pfns:
                st[p] = DISCARDED
        else:
            self._st[as_index(pfns)] = DISCARDED
        self.ballooned -= len(pfns)
        self.discarded += len(pfns)

    def touch(self, pfns: Pfns) -> int:
        """The guest used these pages: refault the discarded ones; returns how many."""
        if len(pfns) < _BATCH_MIN:
            st = self.state
            n = 0
            for p in pfns:
                if st[p] == DISCARDED:
                    st[p] = RESIDENT
                    n += 1
        else:
            g = as_index(pfns)
            st_ = self._st
            hit = g[st_[g] == DISCARDED]
            if not len(hit):
                return 0
            st_[hit] = RESIDENT
            n = len(np.unique(hit))  # a page named twice refaults once
        self.discarded -= n
        self.refaults += n
        return n


class HostMemory:
    """The host's budget and every guest's RSS."""

    def __init__(self, total_pages: int) -> None:
        self.total_pages = total_pages
        self.guests: dict[str, GuestMemory] = {}

    def add_guest(self, name: str, pages: int) -> GuestMemory:
        g = self.guests[name] = GuestMemory(name, pages)
        return g

    @property
    def used_pages(self) -> int:
        return sum(g.rss for g in self.guests.values())

    @property
    def free_pages(self) -> int:
        """Host pages not backing any guest (negative when overcommitted)."""
        return self.total_pages - self.used_pages
