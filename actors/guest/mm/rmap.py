"""The reverse map: which application holding maps each page (the model's anon_vma/i_mmap).

Compaction moves pages; the applications keep PFNs in compact arrays. When a page migrates,
``migrate`` rewrites the one slot that maps it, as ``remove_migration_ptes`` rewrites the
page tables. Two small per-PFN arrays (owner holding id, slot index) keep it O(1) and
object-free.
"""

from __future__ import annotations

import array
from collections.abc import Iterable

#: Holding ids are one byte per PFN (0: unmapped).
MAX_HOLDINGS = 255


class Rmap:
    """Per-PFN owner holding and slot, plus the holdings themselves."""

    def __init__(self, nr_pages: int) -> None:
        self.owner = bytearray(nr_pages)  # 0: unmapped; else holding id (1-based)
        self.slot: array.array[int] = array.array("I", bytes(4 * nr_pages))
        self.holdings: list[array.array[int]] = []

    def register(self) -> int:
        """A new, empty holding (an app's anon or page-cache pages); returns its id."""
        if len(self.holdings) >= MAX_HOLDINGS:
            raise ValueError(f"at most {MAX_HOLDINGS} rmap holdings")
        self.holdings.append(array.array("I"))
        return len(self.holdings)

    def holding(self, hid: int) -> array.array[int]:
        return self.holdings[hid - 1]

    def add(self, hid: int, pfns: Iterable[int]) -> None:
        """Map freshly allocated pages into holding ``hid``."""
        holding = self.holdings[hid - 1]
        owner, slot = self.owner, self.slot
        i = len(holding)
        holding.extend(pfns)
        for p in holding[i:]:
            owner[p] = hid
            slot[p] = i
            i += 1

    def take(self, hid: int, i: int) -> int:
        """Unmap the page at slot ``i`` of holding ``hid`` (swap-remove); returns its PFN."""
        holding = self.holdings[hid - 1]
        pfn = holding[i]
        last = holding.pop()
        if i < len(holding):
            holding[i] = last
            self.slot[last] = i
        self.owner[pfn] = 0
        return pfn

    def migrate(self, old: int, new: int) -> bool:
        """Point the slot mapping ``old`` at ``new``; False if ``old`` was unmapped meanwhile."""
        hid = self.owner[old]
        if not hid:
            return False
        i = self.slot[old]
        self.holdings[hid - 1][i] = new
        self.owner[new] = hid
        self.slot[new] = i
        self.owner[old] = 0
        return True
