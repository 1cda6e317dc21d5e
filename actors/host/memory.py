"""The host's memory: one budget shared by every guest, RSS per guest in 4 KiB pages.

A guest page is *resident* until the host discards it on inflate (madvise(DONTNEED)); a
deflated page stays discarded until the guest touches it again, when the host refaults it
(RSS grows back). The host keeps this state itself, per 4 KiB PFN, in a bytearray: it never
trusts the guest's ``actual``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RESIDENT, BALLOONED, DISCARDED = 0, 1, 2


@dataclass
class GuestMemory:
    """One guest's RAM as the host sees it (4 KiB units)."""

    name: str
    pages: int
    state: bytearray = field(init=False)
    ballooned: int = 0
    discarded: int = 0  # deflated but not yet touched again
    refaults: int = 0

    def __post_init__(self) -> None:
        self.state = bytearray(self.pages)

    @property
    def rss(self) -> int:
        """Resident pages: everything the host has not discarded."""
        return self.pages - self.ballooned - self.discarded

    def inflate(self, pfns: Iterable[int]) -> None:
        """Discard inflated pages (the caller validated them: in range, not ballooned)."""
        st = self.state
        n = 0
        for p in pfns:
            if st[p] == DISCARDED:
                self.discarded -= 1
            st[p] = BALLOONED
            n += 1
        self.ballooned += n

    def deflate(self, pfns: Iterable[int]) -> None:
        """Pages leave the balloon; they stay discarded until the guest touches them."""
        st = self.state
        n = 0
        for p in pfns:
            st[p] = DISCARDED
            n += 1
        self.ballooned -= n
        self.discarded += n

    def touch(self, pfns: Iterable[int]) -> int:
        """The guest used these pages: refault the discarded ones; returns how many."""
        st = self.state
        n = 0
        for p in pfns:
            if st[p] == DISCARDED:
                st[p] = RESIDENT
                n += 1
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
