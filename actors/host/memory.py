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
refault.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RESIDENT, BALLOONED, DISCARDED, UNTOUCHED = 0, 1, 2, 4
BALLOONED_UNTOUCHED = BALLOONED | UNTOUCHED


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

    def __post_init__(self) -> None:
        if self.populated:
            self.state = bytearray(self.pages)
        else:
            self.state = bytearray((UNTOUCHED,)) * self.pages
            self.untouched = self.pages

    @property
    def rss(self) -> int:
        """Resident pages: touched by the guest and not discarded since."""
        return self.pages - self.ballooned - self.discarded - self.untouched

    @property
    def saved(self) -> int:
        """Pages the guest had touched that the host no longer backs (the balloon's gain)."""
        return self.ballooned - self.ballooned_untouched + self.discarded

    def ballooned_pfns(self) -> set[int]:
        """The host's own ballooned set."""
        return {p for p, st in enumerate(self.state) if st & BALLOONED}

    def inflate(self, pfns: Iterable[int]) -> None:
        """Discard inflated pages (the caller validated them: in range, not ballooned)."""
        st = self.state
        n = 0
        for p in pfns:
            s = st[p]
            if s == RESIDENT:
                st[p] = BALLOONED
            elif s == DISCARDED:
                self.discarded -= 1
                st[p] = BALLOONED
            else:  # UNTOUCHED: nothing to discard, remember it was never backed
                self.untouched -= 1
                self.ballooned_untouched += 1
                st[p] = BALLOONED_UNTOUCHED
            n += 1
        self.ballooned += n

    def deflate(self, pfns: Iterable[int]) -> None:
        """Pages leave the balloon; they stay unbacked until the guest touches them."""
        st = self.state
        n = 0
        for p in pfns:
            if st[p] == BALLOONED_UNTOUCHED:
                st[p] = UNTOUCHED
                self.ballooned_untouched -= 1
                self.untouched += 1
            else:
                st[p] = DISCARDED
                self.discarded += 1
            n += 1
        self.ballooned -= n

    def touch(self, pfns: Iterable[int]) -> int:
        """The guest used these pages: fault in the unbacked ones; returns how many."""
        st = self.state
        refaults = first = 0
        for p in pfns:
            s = st[p]
            if s == DISCARDED:
                st[p] = RESIDENT
                refaults += 1
            elif s == UNTOUCHED:
                st[p] = RESIDENT
                first += 1
        self.discarded -= refaults
        self.refaults += refaults
        self.untouched -= first
        self.first_touches += first
        return refaults + first

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
