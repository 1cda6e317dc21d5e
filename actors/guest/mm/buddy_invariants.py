"""The buddy invariant walker: the whole free-list state checked page by page (debug/tests).

O(pages), so the session runs it at the end of small guests and the tests after every step;
the allocation paths never call it.
"""

from __future__ import annotations

from typing import Final

from actors.guest.mm.gfp import MAX_ORDER, MIGRATE_TYPES, MIGRATETYPE_NAMES, pageblock_order
from actors.guest.mm.page_alloc import BuddyError, ZoneCore
from actors.guest.mm.pages import OWNER_FREE, PG_buddy

_TOP: Final = MAX_ORDER - 1


class ZoneInvariants(ZoneCore):
    """``check_invariants`` of :class:`~actors.guest.mm.mmzone.Zone`."""

    __slots__ = ()

    def check_invariants(self) -> None:
        """Verify the whole buddy state (debug/test helper, O(pages)); raise BuddyError if broken.

        Every listed block is a PG_buddy head of the list's order and type, aligned, inside the
        zone, free-state (owner free, refcount 0, no tail flags), non-overlapping and fully
        merged; every PG_buddy page is listed; nr_free, free_pages, the owner bytes and
        free + allocated == managed all agree.
        """
        f = self.frames
        n = f.nr_pages
        flags, porder, bmt, refc, mapping = f.flags, f.order, f.buddy_mt, f.refcount, f.mapping
        covered = bytearray(n)
        heads = 0
        free = 0

        def fail(msg: str, pfn: int = -1) -> BuddyError:
            """Build the error naming the broken invariant and the page."""
            where = f"; {f.describe(pfn)}" if pfn >= 0 else ""
            return BuddyError(f"buddy invariant broken: {msg}{where}", pfn)

        for o in range(MAX_ORDER):
            size = 1 << o
            blocks = 0
            for mt in range(MIGRATE_TYPES):
                lst = self.free_area[o][mt]
                try:
                    lst.validate()
                except ValueError as err:
                    raise fail(f"free_area[{o}][{MIGRATETYPE_NAMES[mt]}]: {err}") from err
                for pfn in lst.pfns():
                    name = f"free_area[{o}][{MIGRATETYPE_NAMES[mt]}]"
                    if pfn & (size - 1) or pfn + size > n:
                        raise fail(f"{name} block misaligned or past the zone", pfn)
                    if flags[pfn] != PG_buddy or porder[pfn] != o or bmt[pfn] != mt:
                        raise fail(f"{name} entry is not a matching buddy head", pfn)
                    if covered.find(1, pfn, pfn + size) != -1:
                        raise fail(f"{name} block overlaps another free block", pfn)
                    covered[pfn : pfn + size] = b"\x01" * size
                    if mapping[pfn : pfn + size].count(OWNER_FREE) != size:
                        raise fail(f"{name} block has pages with an owner", pfn)
                    if refc[pfn : pfn + size].count(0) != size:
                        raise fail(f"{name} block has referenced pages", pfn)
                    if size > 1 and flags[pfn + 1 : pfn + size].count(0) != size - 1:
                        raise fail(f"{name} block has flagged tail pages", pfn)
                    if o < _TOP:
                        b = pfn ^ size
                        if (
                            b < n
                            and flags[b] & PG_buddy
                            and porder[b] == o
                            and (o < pageblock_order or self._may_merge_pageblocks(b, mt))
                        ):
                            raise fail(f"{name} block not merged with its free buddy {b}", pfn)
                    blocks += 1
                    heads += 1
                    free += size
            if blocks != self.nr_free[o]:
                raise fail(f"nr_free[{o}] is {self.nr_free[o]}, lists hold {blocks} blocks")
        nr_buddy = sum(1 for fl in flags if fl & PG_buddy)
        if nr_buddy != heads:
            raise fail(f"{nr_buddy} pages are PG_buddy but {heads} blocks are listed")
        if free != self.free_pages:
            raise fail(f"free_pages is {self.free_pages}, free lists hold {free}")
        owners_free = mapping.count(OWNER_FREE)
        if owners_free != free:
            raise fail(f"{owners_free} pages have owner free, free lists hold {free}")
        if self.free_pages + self.nr_allocated != self.managed_pages:
            raise fail(
                f"free {self.free_pages} + allocated {self.nr_allocated} != "
                f"managed {self.managed_pages}"
            )
