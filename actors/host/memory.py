"""The host's memory: one budget shared by every guest, RSS per guest in 4 KiB pages.

Guest RAM is populated lazily, as QEMU does without ``-mem-prealloc``: a page costs the host
nothing until the guest first touches it (``UNTOUCHED``); from then on it is *resident* until
the host discards it on inflate (madvise(DONTNEED)). A deflated page stays discarded until the
guest touches it again, when the host refaults it (RSS grows back). Host memory pressure
therefore follows what the guests really use, not what they were given. ``populated=True``
starts a guest fully resident (``-mem-prealloc``).

The host keeps this state itself, per 4 KiB PFN, in a bytearray: it never trusts the guest's
``actual``. States are bits so that "in the balloon" is one test (``state & BALLOONED``) while
a ballooned page remembers whether the guest had ever touched it: deflating a never-touched
page gives back nothing the host had to back, and touching it later is a first fault, not a
refault. Batches of PFNs are applied with numpy array operations on a view of that bytearray
(one buffer's 256 PFNs: a few calls, no Python loop per page); a migration's one-page buffers
take a plain loop, cheaper at that size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.pfns import Pfns, as_index

RESIDENT, BALLOONED, DISCARDED, UNTOUCHED = 0, 1, 2, 4
BALLOONED_UNTOUCHED = BALLOONED | UNTOUCHED
#: Batches smaller than this are applied page by page: array calls would cost more.
_BATCH_MIN = 8
#: Each state as one byte, to repeat into runs; state -> 1 if in the balloon, else 0.
_RUN = tuple(bytes((s,)) for s in range(256))
_IN_BALLOON = bytes(s & BALLOONED for s in range(256))
#: What inflate and deflate do to a page in each state they accept.
_INFLATE_MOVES = {UNTOUCHED: BALLOONED_UNTOUCHED, RESIDENT: BALLOONED, DISCARDED: BALLOONED}
_DEFLATE_MOVES = {BALLOONED_UNTOUCHED: UNTOUCHED, BALLOONED: DISCARDED}


@dataclass
class GuestMemory:
    """One guest's RAM as the host sees it (4 KiB units)."""

    name: str
    pages: int
    populated: bool = True
    state: bytearray = field(init=False)
    ballooned: int = 0
    ballooned_untouched: int = 0  # in the balloon, never touched by the guest
    discarded: int = 0  # deflated but not yet touched again
    untouched: int = 0  # never touched, not in the balloon
    refaults: int = 0
    first_touches: int = 0
    _st: npt.NDArray[np.uint8] = field(init=False, repr=False)  # numpy view of ``state``

    def __post_init__(self) -> None:
        if self.populated:
            self.state = bytearray(self.pages)
        else:
            self.state = bytearray((UNTOUCHED,)) * self.pages
            self.untouched = self.pages
        self._st = np.frombuffer(self.state, dtype=np.uint8)

    @property
    def rss(self) -> int:
        """Resident pages: touched by the guest and not discarded since."""
        return self.pages - self.ballooned - self.discarded - self.untouched

    @property
    def saved(self) -> int:
        """Pages the guest had touched that the host no longer backs (the balloon's gain)."""
        return self.ballooned - self.ballooned_untouched + self.discarded

    def split_ballooned(self, pfns: Pfns, span: range | None = None) -> tuple[Pfns, Pfns]:
        """(the PFNs in the balloon, the others), each in the order given. ``span``: the same
        pages as one range, if the caller knows they are (their states are then one slice)."""
        if span is not None and len(span) >= _BATCH_MIN:
            inside = self.state[span.start:span.stop].translate(_IN_BALLOON).count(1)
            if inside == 0 or inside == len(pfns):
                return (pfns[:0], pfns) if inside == 0 else (pfns, pfns[:0])
        if len(pfns) < _BATCH_MIN:
            st = self.state
            seq = pfns.tolist() if isinstance(pfns, np.ndarray) else pfns
            return ([p for p in seq if st[p] & BALLOONED],
                    [p for p in seq if not st[p] & BALLOONED])
        g = as_index(pfns)
        hit = self._st.take(g) & BALLOONED  # take: fancy indexing minus its dispatch cost
        n = np.count_nonzero(hit)
        if n == 0 or n == len(g):  # the usual cases: nothing or everything in the balloon
            return (g[:0], g) if n == 0 else (g, g[:0])
        in_balloon = hit.astype(np.bool_)
        return g[in_balloon], g[~in_balloon]

    def _move_run(self, span: range, moves: dict[int, int]) -> int | None:
        """If every page of ``span`` (a step-1 range) is in one state ``moves`` maps, move them
        all to its image -- a slice compare and a slice write -- and return that state."""
        st = self.state
        n = len(span)
        if span.step != 1 or n < _BATCH_MIN:
            return None
        was = st[span.start]
        new = moves.get(was)
        if new is None or st[span.start:span.stop] != _RUN[was] * n:
            return None
        st[span.start:span.stop] = _RUN[new] * n
        return was

    def inflate(self, pfns: Pfns | range) -> None:
        """Discard inflated pages (the caller validated them: in range, each once, not
        ballooned). A never-touched page had nothing to discard: it is remembered as such.
        A range of pages all never touched, or all resident, is one slice compare and write."""
        was = self._move_run(pfns, _INFLATE_MOVES) if isinstance(pfns, range) else None
        if was is not None:
            if was == UNTOUCHED:
                self.untouched -= len(pfns)
                self.ballooned_untouched += len(pfns)
            elif was == DISCARDED:
                self.discarded -= len(pfns)
            self.ballooned += len(pfns)
            return
        if len(pfns) < _BATCH_MIN:
            st = self.state
            for p in pfns:
                s = st[p]
                if s == DISCARDED:
                    self.discarded -= 1
                elif s == UNTOUCHED:
                    self.untouched -= 1
                    self.ballooned_untouched += 1
                st[p] = BALLOONED | (s & UNTOUCHED)
            self.ballooned += len(pfns)
            return
        g = as_index(pfns)
        st_ = self._st
        s_ = st_.take(g)
        untouched = int(np.count_nonzero(s_ == UNTOUCHED))
        if untouched == len(g):  # all never touched (a fresh guest): one value for all
            st_.put(g, BALLOONED_UNTOUCHED)
        else:
            self.discarded -= int(np.count_nonzero(s_ == DISCARDED))
            st_.put(g, BALLOONED | (s_ & UNTOUCHED) if untouched else BALLOONED)
        self.untouched -= untouched
        self.ballooned_untouched += untouched
        self.ballooned += len(g)

    def deflate(self, pfns: Pfns | range) -> None:
        """Pages leave the balloon (validated: ballooned, each once); they stay unbacked until
        the guest touches them. A range of pages all in one state is one slice compare and
        write."""
        was = self._move_run(pfns, _DEFLATE_MOVES) if isinstance(pfns, range) else None
        if was is not None:
            if was == BALLOONED_UNTOUCHED:
                self.ballooned_untouched -= len(pfns)
                self.untouched += len(pfns)
            else:
                self.discarded += len(pfns)
            self.ballooned -= len(pfns)
            return
        if len(pfns) < _BATCH_MIN:
            st = self.state
            n_untouched = 0
            for p in pfns:
                if st[p] == BALLOONED_UNTOUCHED:
                    st[p] = UNTOUCHED
                    n_untouched += 1
                else:
                    st[p] = DISCARDED
        else:
            g = as_index(pfns)
            st_ = self._st
            untouched = st_.take(g) == BALLOONED_UNTOUCHED
            n_untouched = int(np.count_nonzero(untouched))
            if n_untouched in (0, len(g)):  # the usual cases: one value for all
                st_.put(g, UNTOUCHED if n_untouched else DISCARDED)
            else:
                st_.put(g, np.where(untouched, UNTOUCHED, DISCARDED))
        self.ballooned_untouched -= n_untouched
        self.untouched += n_untouched
        self.discarded += len(pfns) - n_untouched
        self.ballooned -= len(pfns)

    def touch(self, pfns: Pfns) -> int:
        """The guest used these pages: fault in the unbacked ones; returns how many (a page
        named twice faults once)."""
        if len(pfns) < _BATCH_MIN:
            st = self.state
            refaults = firsts = 0
            for p in pfns:
                s = st[p]
                if s == DISCARDED:
                    refaults += 1
                elif s == UNTOUCHED:
                    firsts += 1
                else:
                    continue
                st[p] = RESIDENT  # a second mention finds it resident: counted once
        else:
            g = as_index(pfns)
            st_ = self._st
            s_ = st_[g]
            refault = g[s_ == DISCARDED]
            first = g[s_ == UNTOUCHED]
            if not len(refault) and not len(first):
                return 0
            st_[refault] = RESIDENT
            st_[first] = RESIDENT
            refaults = len(np.unique(refault)) if len(refault) else 0
            firsts = len(np.unique(first)) if len(first) else 0
        self.discarded -= refaults
        self.refaults += refaults
        self.untouched -= firsts
        self.first_touches += firsts
        return refaults + firsts

    @property
    def unbacked(self) -> int:
        """Pages a touch could fault in (0: touch() has nothing to do)."""
        return self.discarded + self.untouched


class HostMemory:
    """The host's budget and every guest's RSS."""

    def __init__(self, total_pages: int) -> None:
        self.total_pages = total_pages
        self.guests: dict[str, GuestMemory] = {}

    def add_guest(self, name: str, pages: int, *, populated: bool = True) -> GuestMemory:
        g = self.guests[name] = GuestMemory(name, pages, populated)
        return g

    @property
    def used_pages(self) -> int:
        return sum(g.rss for g in self.guests.values())

    @property
    def free_pages(self) -> int:
        """Host pages not backing any guest (negative when overcommitted)."""
        return self.total_pages - self.used_pages

    @property
    def saved_pages(self) -> int:
        """Pages the balloons took back from what the guests had touched."""
        return sum(g.saved for g in self.guests.values())
