"""Taking free blocks out of the buddy for compaction's free scanner.

The 2012 compaction of the balloon series took free pages with ``split_free_page``
(mm/page_alloc.c, later ``__isolate_free_page`` + ``split_page``), called from
``isolate_freepages_block`` (mm/compaction.c) under the zone lock; the kernel keeps the
pageblock side of isolation in mm/page_isolation.c.  These are the zone's half of that: the
scanner itself is :meth:`actors.guest.mm.compaction.Compactor.isolate_freepages`.
"""

from __future__ import annotations

from array import array

from actors.guest.mm.gfp import (
    MIGRATE_HIGHATOMIC,
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    WMARK_MIN,
    pageblock_order,
)
from actors.guest.mm.page_alloc import BuddyError, ZoneCore
from actors.guest.mm.pages import (
    NR_OWNERS,
    OWNER_COMPACT_FREE,
    OWNER_FREE,
    PG_buddy,
    PG_head,
)


class ZoneIsolation(ZoneCore):
    """The isolation helpers of :class:`~actors.guest.mm.mmzone.Zone`."""

    __slots__ = ()

    def is_free_buddy_head(self, pfn: int) -> bool:
        """Tell whether ``pfn`` heads a free buddy block (PageBuddy)."""
        return 0 <= pfn < self.frames.nr_pages and bool(self.frames.flags[pfn] & PG_buddy)

    def page_order(self, pfn: int) -> int:
        """Return the order stored on ``pfn`` (page_order); meaningful on free/allocated heads."""
        return self.frames.order[pfn]

    def isolate_free_block(self, pfn: int, owner: int = OWNER_COMPACT_FREE) -> int:
        """Take the free block headed by ``pfn`` off its list for ``owner`` (__isolate_free_page).

        Returns its order, or -1 when taking it would leave the zone at or below
        ``min + 2^order`` free pages (the kernel's order-0 check with a raised mark; not
        applied in isolated pageblocks).  The block becomes an allocated, non-compound block
        of that order (head refcount 1, order on the head, ``owner`` on every page), freeable
        with free_pages_block(pfn, order) or splittable with split_page.  When it covers at least
        half a pageblock, its pageblocks become MOVABLE (unless isolated or highatomic).
        ``pfn`` must be a free head (check is_free_buddy_head under the same zone lock).
        """
        f = self.frames
        if not self.is_free_buddy_head(pfn):
            raise BuddyError(f"isolate_free_block: not a free block head; {f.describe(pfn)}", pfn)
        if not 0 < owner < NR_OWNERS:
            raise ValueError(f"owner code {owner} is not an allocated owner (1..{NR_OWNERS - 1})")
        order = f.order[pfn]
        size = 1 << order
        mt = f.pageblock_mt[pfn >> pageblock_order]
        if mt != MIGRATE_ISOLATE and not self.zone_watermark_ok(
            0, self.watermark[WMARK_MIN] + size
        ):
            return -1
        self.free_area[order][f.buddy_mt[pfn]].list_del(pfn)
        self.nr_free[order] -= 1
        self.free_pages -= size
        self.nr_allocated += size
        self.isolated_free_pages += size
        f.flags[pfn] = 0
        f.refcount[pfn] = 1
        f.mapping[pfn : pfn + size] = bytes((owner,)) * size
        if order >= pageblock_order - 1:
            first = pfn >> pageblock_order
            for pb in range(first, first + max(1, size >> pageblock_order)):
                if f.pageblock_mt[pb] not in (MIGRATE_ISOLATE, MIGRATE_HIGHATOMIC):
                    f.pageblock_mt[pb] = MIGRATE_MOVABLE
        return order

    def split_page(self, pfn: int, order: int) -> None:
        """Turn an allocated non-compound ``order`` block into order-0 pages (split_page).

        Every page gets refcount 1 and the head's flags and owner; each is then freed alone.
        """
        f = self.frames
        size = 1 << order
        if (
            not 0 <= pfn < f.nr_pages
            or f.refcount[pfn] != 1
            or f.order[pfn] != order
            or f.flags[pfn] & (PG_head | PG_buddy)
            or f.mapping[pfn] == OWNER_FREE
        ):
            raise BuddyError(
                f"split_page(pfn={pfn}, order={order}): not an allocated non-compound block of "
                f"that order; {f.describe(pfn)}",
                pfn,
            )
        if order:
            f.order[pfn] = 0
            f.refcount[pfn + 1 : pfn + size] = array("h", (1,)) * (size - 1)
            f.flags[pfn + 1 : pfn + size] = array("H", (f.flags[pfn],)) * (size - 1)

    def split_free_page(self, pfn: int, owner: int = OWNER_COMPACT_FREE) -> int:
        """Isolate the free block at ``pfn`` and split it to order 0 (2012's split_free_page).

        Returns the number of pages taken (each refcount 1, owned by ``owner``), 0 if the
        watermark check refused.
        """
        order = self.isolate_free_block(pfn, owner)
        if order < 0:
            return 0
        self.split_page(pfn, order)
        return 1 << order

