"""``__rmqueue_fallback`` of mm/page_alloc.c, one object per kernel generation modelled.

When the free lists of the requested migratetype hold no block large enough, ``__rmqueue``
takes one from another type.  How much of the donor's pageblock goes with it changed over the
years, and that decides how fast small unmovable requests (a GFP_HIGHUSER balloon inflating)
fragment the movable pageblocks THP needs:

* :class:`Fallback413` -- Linux 4.13+ ``steal_suitable_fallback``: claim a pageblock when at
  least half of it is free or of a compatible kind (the default, "v4.13");
* :class:`Fallback36` -- 2.6.24..3.18, the kernels the balloon compaction series was written
  against ("v3.6"): a small-order fallback takes one block and leaves its pageblock alone.

A zone picks one at construction (``Zone(..., fallback=...)``) and binds its
``rmqueue_fallback``; the allocation paths call it only when their own lists are empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from actors.guest.mm.gfp import (
    MAX_ORDER,
    MIGRATE_HIGHATOMIC,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    pageblock_nr_pages,
    pageblock_order,
)
from actors.guest.mm.pages import NIL

if TYPE_CHECKING:
    from actors.guest.mm.page_alloc import ZoneCore

#: ``fallbacks[]`` of mm/page_alloc.c: where each type looks when its own lists are empty.
FALLBACKS: Final[tuple[tuple[int, ...], ...]] = (
    (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),  # MIGRATE_UNMOVABLE
    (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),  # MIGRATE_MOVABLE
    (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),  # MIGRATE_RECLAIMABLE
)

#: What :meth:`FallbackModel.rmqueue_fallback` returns when it moved a block onto the
#: requested type's lists instead of taking one (4.13+'s ``true``: retry __rmqueue_smallest).
FALLBACK_RETRY: Final = -2

_TOP: Final = MAX_ORDER - 1


def can_steal_fallback(order: int, start_mt: int) -> bool:
    """Tell whether a fallback of ``order`` may take the whole pageblock (can_steal_fallback)."""
    if order >= pageblock_order:
        return True
    return order >= pageblock_order // 2 or start_mt in (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE)


class FallbackModel(Protocol):
    """One generation of ``__rmqueue_fallback``; stateless, shared by every zone using it."""

    @property
    def name(self) -> str:
        """The generation's name, as ``[guest] fallback`` spells it."""
        ...

    def rmqueue_fallback(self, zone: ZoneCore, order: int, start_migratetype: int) -> int:
        """Serve ``start_migratetype`` at ``order`` from another type's lists.

        Returns the PFN of an ``order`` block now off the lists (head flags and order
        cleared, ``free_pages`` not adjusted), FALLBACK_RETRY when a block was moved onto
        ``start_migratetype``'s lists for the caller to take, or -1.
        """
        ...


class Fallback413:
    """__rmqueue_fallback of Linux 4.13+ (find_suitable_fallback, steal_suitable_fallback)."""

    __slots__ = ()
    name: Final = "v4.13"

    def find_suitable_fallback(
        self, zone: ZoneCore, order: int, migratetype: int, only_stealable: bool = False
    ) -> tuple[int, bool]:
        """Return (fallback migratetype or -1, can_steal) at ``order`` (find_suitable_fallback)."""
        if zone.nr_free[order] == 0:
            return -1, False
        area = zone.free_area[order]
        can_steal = False
        for fallback_mt in FALLBACKS[migratetype]:
            if area[fallback_mt].nr == 0:
                continue
            if can_steal_fallback(order, migratetype):
                can_steal = True
            if not only_stealable or can_steal:
                return fallback_mt, can_steal
        return -1, can_steal

    def rmqueue_fallback(self, zone: ZoneCore, order: int, start_migratetype: int) -> int:
        """Steal a block for ``start_migratetype`` from another type (__rmqueue_fallback, 4.13+).

        Searches from the largest order down (the largest block approximates the emptiest
        pageblock); a MOVABLE request that may not claim the block takes the smallest suitable
        block instead.  Moves the stolen block (or its whole pageblock's free pages) onto the
        ``start_migratetype`` lists and returns FALLBACK_RETRY (the kernel's true; -1 for
        false); the caller retries rmqueue_smallest.
        """
        if start_migratetype >= MIGRATE_PCPTYPES:
            return -1
        current = _TOP
        found = -1
        can_steal = False
        while current >= order:
            found, can_steal = self.find_suitable_fallback(zone, current, start_migratetype)
            if found >= 0:
                break
            current -= 1
        if found < 0:
            return -1
        if not can_steal and start_migratetype == MIGRATE_MOVABLE and current > order:
            for current in range(order, MAX_ORDER):  # find_smallest
                found, can_steal = self.find_suitable_fallback(zone, current, start_migratetype)
                if found >= 0:
                    break
        pfn = zone.free_area[current][found].first
        self.steal_suitable_fallback(zone, pfn, start_migratetype, can_steal)
        zone.fallback_steals += 1
        return FALLBACK_RETRY

    def steal_suitable_fallback(
        self, zone: ZoneCore, pfn: int, start_type: int, whole_block: bool
    ) -> None:
        """Move a stolen free block, maybe claiming its pageblock (steal_suitable_fallback, 4.13+).

        Blocks of at least pageblock_order take their pageblocks outright.  Otherwise, when
        ``whole_block``, all free pages of the pageblock move to ``start_type``'s lists, and the
        pageblock changes type if free pages plus "alike" allocated pages (movable ones for a
        movable request; non-movable ones when an unmovable/reclaimable request raids a movable
        block) are at least half of it.  Else only this block moves.
        """
        f = zone.frames
        current_order = f.order[pfn]
        old_block_type = f.pageblock_mt[pfn >> pageblock_order]
        if old_block_type != MIGRATE_HIGHATOMIC:
            if current_order >= pageblock_order:
                zone.change_pageblock_range(pfn, current_order, start_type)
            elif whole_block:
                free_pages, movable_pages = zone.move_freepages_block(pfn, start_type)
                if free_pages:
                    if start_type == MIGRATE_MOVABLE:
                        alike_pages = movable_pages
                    elif old_block_type == MIGRATE_MOVABLE:
                        alike_pages = pageblock_nr_pages - (free_pages + movable_pages)
                    else:
                        alike_pages = 0
                    if free_pages + alike_pages >= (1 << (pageblock_order - 1)):
                        if old_block_type != start_type:
                            zone.pageblock_claims += 1
                        f.pageblock_mt[pfn >> pageblock_order] = start_type
                    return
        # single_page:
        cur = f.buddy_mt[pfn]
        if cur != start_type:
            zone.free_area[current_order][cur].list_del(pfn)
            zone.free_area[current_order][start_type].list_add(pfn)
            f.buddy_mt[pfn] = start_type


class Fallback36:
    """__rmqueue_fallback of Linux 2.6.24..3.18 (as in 3.6)."""

    __slots__ = ()
    name: Final = "v3.6"

    def rmqueue_fallback(self, zone: ZoneCore, order: int, start_migratetype: int) -> int:
        """Take an ``order`` block for ``start_migratetype`` from another type, as Linux
        2.6.24..3.18 did (__rmqueue_fallback of 3.6); return its PFN (off the lists) or -1.

        The largest block of a fallback type is taken.  Only when it is large (order >=
        pageblock_order/2) or the request is reclaimable are the free pages of its pageblock
        moved to the requested type (and the pageblock claimed if at least half of it was
        free); otherwise the block is split where it is and the pieces stay on the fallback
        type's lists.  So repeated small unmovable requests -- a GFP_HIGHUSER balloon inflating
        in a fragmented guest -- each break the largest movable block left, one pageblock
        after another, instead of filling one claimed pageblock as 4.13+ does.
        """
        if start_migratetype >= MIGRATE_PCPTYPES:
            return -1
        f = zone.frames
        for current in range(_TOP, order - 1, -1):
            if not zone.nr_free[current]:
                continue
            area = zone.free_area[current]
            for mt in FALLBACKS[start_migratetype]:
                pfn = area[mt].first
                if pfn == NIL:
                    continue
                if (current >= pageblock_order // 2
                        or start_migratetype == MIGRATE_RECLAIMABLE):
                    moved, _ = zone.move_freepages_block(pfn, start_migratetype)
                    if moved >= 1 << (pageblock_order - 1):  # claim if over half is free
                        pb = pfn >> pageblock_order
                        if f.pageblock_mt[pb] != start_migratetype:
                            zone.pageblock_claims += 1
                            f.pageblock_mt[pb] = start_migratetype
                    mt = start_migratetype
                area[mt].list_del(pfn)
                zone.nr_free[current] -= 1
                f.flags[pfn] = 0
                f.order[pfn] = 0
                if current >= pageblock_order:
                    zone.change_pageblock_range(pfn, current, start_migratetype)
                if current > order:
                    zone.expand(pfn, order, current, mt)
                zone.fallback_steals += 1
                return pfn
        return -1


#: The ``__rmqueue_fallback`` generations modelled, by name: "v4.13" (the default) and "v3.6".
FALLBACK_MODELS: Final[dict[str, FallbackModel]] = {
    m.name: m for m in (Fallback413(), Fallback36())
}
