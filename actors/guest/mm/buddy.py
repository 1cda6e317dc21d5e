"""The buddy allocator of the guest's single ZONE_NORMAL (mm/page_alloc.c at simulator scale).

Pure and synchronous: the allocator actor wraps a :class:`Zone` and serves requests from it.
Function names follow mm/page_alloc.c (``__rmqueue_smallest`` is :meth:`Zone.rmqueue_smallest`,
``__free_one_page`` is :meth:`Zone.free_one_page`, ...), so the C can be read beside it.

Model decisions, all documented where they live:

* orders 0..MAX_ORDER-1 (0..10); per-order, per-migratetype free lists (``free_area``);
  boot puts every page on the MOVABLE order-10 lists in ascending PFN order (FPI_TO_TAIL);
* allocation: ``__rmqueue_smallest``, then ``__rmqueue_fallback`` with the kernel's fallbacks
  table and the Linux 4.13+ ``steal_suitable_fallback`` (claim a pageblock when at least half
  of it is free or of a compatible kind), or, with ``fallback="v3.6"``, the fallback of the
  balloon compaction series' kernels (2.6.24..3.18: a small-order fallback takes one block and
  leaves the rest of its pageblock alone); no per-cpu lists, no HIGHATOMIC reserves, no CMA;
* freeing: ``__free_one_page`` merging up to order 10 (no merge across an isolated pageblock
  boundary), onto the free list of the freed page's pageblock migratetype, with the 2.6.33..5.x
  "buddy of the next order is free: add to the tail" heuristic;
* watermarks: kernel ``min_free_kbytes`` sizing, ``__zone_watermark_ok``; no reclaim is
  modelled, see :meth:`Zone.alloc_pages` for how GFP flags pick the mark;
* MIGRATE_ISOLATE pageblocks are honoured minimally: pages freed there go on the ISOLATE
  lists, which are never allocated from, but they stay counted in ``free_pages``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass
from itertools import islice
from typing import Final

import numpy as np

from actors.guest.mm.gfp import (
    ALLOC_HARDER,
    ALLOC_HIGH,
    ALLOC_NO_WATERMARKS,
    GFP_ATOMIC_FLAG,
    GFP_COMP_FLAG,
    GFP_HIGH_FLAG,
    GFP_MEMALLOC_FLAG,
    GFP_MOVABLE_MASK,
    GFP_MOVABLE_SHIFT,
    GFP_NOMEMALLOC_FLAG,
    GFP_NORETRY_FLAG,
    MAX_ORDER,
    MIGRATE_HIGHATOMIC,
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_RECLAIMABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
    MIGRATETYPE_NAMES,
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    pageblock_nr_pages,
    pageblock_order,
)
from actors.guest.mm.pages import (
    NIL,
    NR_OWNERS,
    OWNER_ANON,
    OWNER_COMPACT_FREE,
    OWNER_FREE,
    OWNER_PAGE_FLAGS,
    OWNER_PAGECACHE,
    OWNER_THP,
    PAGE_FLAGS_CHECK_AT_FREE,
    PageFrames,
    PageList,
    PG_balloon,
    PG_buddy,
    PG_head,
    PG_lru,
    PG_movable,
    PG_tail,
    page_flag_names,
)

#: ``fallbacks[]`` of mm/page_alloc.c: where each type looks when its own lists are empty.
FALLBACKS: Final[tuple[tuple[int, ...], ...]] = (
    (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),  # MIGRATE_UNMOVABLE
    (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),  # MIGRATE_MOVABLE
    (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),  # MIGRATE_RECLAIMABLE
)

#: The ``__rmqueue_fallback`` generations modelled: "v4.13" (steal_suitable_fallback, the
#: default) and "v3.6" (the kernels the balloon compaction series was written against).
FALLBACK_MODELS: Final = ("v4.13", "v3.6")

MIN_FREE_KBYTES_MIN: Final = 128
#: Upper clamp of min_free_kbytes: 262144 KiB since Linux 5.x (65536 before).
MIN_FREE_KBYTES_MAX: Final = 262144

_TOP: Final = MAX_ORDER - 1
_UNLIMITED: Final = 1 << 62
_MOVABLE_OWNERS: Final = frozenset((OWNER_ANON, OWNER_PAGECACHE, OWNER_THP))
_MOVABLE_PAGE_FLAGS: Final = PG_lru | PG_movable | PG_balloon
# Constant runs of a pageblock's length, for _free_run's whole-block checks and writes.
_IOTA: Final = np.arange(pageblock_nr_pages, dtype=np.uint32)
_ONE_REF: Final = array("h", [1]) * pageblock_nr_pages
_NO_REF: Final = array("h", bytes(2 * pageblock_nr_pages))
_NO_FLAGS: Final = array("H", bytes(2 * pageblock_nr_pages))


class BuddyError(Exception):
    """A caller broke the allocator's contract (double free, bad page state, wrong order).

    ``pfn`` names the page; ``done`` is how many pages of a bulk call were processed before
    the bad one (those stay done; the bad page and the rest are untouched).
    """

    def __init__(self, message: str, pfn: int = -1, done: int = 0) -> None:
        super().__init__(message)
        self.pfn = pfn
        self.done = done


@dataclass(frozen=True, slots=True)
class ZoneStatistics:
    """A snapshot of a zone's counters (trio-style ``statistics()``)."""

    managed_pages: int
    free_pages: int
    nr_allocated: int
    pgalloc: int  # pages handed out by alloc_pages*
    pgfree: int  # pages given back by free_pages*
    alloc_success: int  # blocks allocated
    alloc_fail: int  # failed allocation attempts (a bulk call fails at most once)
    alloc_slowpath: int  # blocks allocated below the low watermark (slow path)
    fallback_steals: int  # __rmqueue_fallback events (mm_page_alloc_extfrag)
    pageblock_claims: int  # pageblocks whose migratetype a steal changed
    isolated_free_pages: int  # pages taken by isolate_free_block / split_free_page


def can_steal_fallback(order: int, start_mt: int) -> bool:
    """Tell whether a fallback of ``order`` may take the whole pageblock (can_steal_fallback)."""
    if order >= pageblock_order:
        return True
    return order >= pageblock_order // 2 or start_mt in (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE)


def default_min_free_kbytes(managed_kbytes: int) -> int:
    """Size min_free_kbytes like init_per_zone_wmark_min: int_sqrt(kbytes * 16), clamped."""
    value = math.isqrt(managed_kbytes * 16)
    return max(MIN_FREE_KBYTES_MIN, min(MIN_FREE_KBYTES_MAX, value))


class Zone:
    """ZONE_NORMAL covering every PFN of a :class:`PageFrames`, with the buddy free lists.

    ``free_area[order][migratetype]`` are :class:`PageList` s of free block heads,
    ``nr_free[order]`` counts blocks per order over all types, ``free_pages`` counts free
    pages (NR_FREE_PAGES) and ``nr_allocated`` pages handed out; their sum is always
    ``managed_pages``.  Freeing is ``free_pages_block``/``free_pages_bulk`` (the kernel's
    ``__free_pages``; ``free_pages`` is taken by the counter).
    ``watermark[WMARK_MIN/LOW/HIGH]`` are in pages.
    The frames must be fresh (never used by another zone).
    """

    __slots__ = (
        "_free_by_mt",
        "alloc_fail",
        "alloc_slowpath",
        "alloc_success",
        "fallback_36",
        "fallback_steals",
        "frames",
        "free_area",
        "free_pages",
        "isolated_free_pages",
        "managed_pages",
        "min_free_kbytes",
        "nr_allocated",
        "nr_free",
        "pageblock_claims",
        "pgalloc",
        "pgfree",
        "watermark",
    )

    def __init__(
        self,
        frames: PageFrames,
        *,
        min_free_kbytes: int | None = None,
        watermarks: tuple[int, int, int] | None = None,
        fallback: str = "v4.13",
    ) -> None:
        n = frames.nr_pages
        if fallback not in FALLBACK_MODELS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACK_MODELS)}, "
                             f"got {fallback!r}")
        #: Which kernel's __rmqueue_fallback this zone follows (see rmqueue_fallback_36).
        self.fallback_36: bool = fallback == "v3.6"
        if (
            frames.mapping.count(OWNER_FREE) != n
            or frames.flags.tobytes() != bytes(2 * n)
            or frames.pageblock_mt.count(MIGRATE_MOVABLE) != frames.nr_pageblocks
        ):
            raise ValueError("Zone needs fresh PageFrames (these already hold pages or state)")
        self.frames: PageFrames = frames
        self.managed_pages: int = n
        self.free_area: list[list[PageList]] = [
            [PageList(frames) for _ in range(MIGRATE_TYPES)] for _ in range(MAX_ORDER)
        ]
        # The same PageList objects indexed [migratetype][order], for the hot loops.
        self._free_by_mt: list[list[PageList]] = [
            [self.free_area[o][mt] for o in range(MAX_ORDER)] for mt in range(MIGRATE_TYPES)
        ]
        self.nr_free: list[int] = [0] * MAX_ORDER
        self.free_pages: int = 0
        self.nr_allocated: int = 0
        self.pgalloc = self.pgfree = 0
        self.alloc_success = self.alloc_fail = self.alloc_slowpath = 0
        self.fallback_steals = self.pageblock_claims = self.isolated_free_pages = 0
        self._boot_free_all()

        kib_per_page = frames.page_size // 1024
        if min_free_kbytes is None:
            min_free_kbytes = default_min_free_kbytes(n * kib_per_page)
        if min_free_kbytes < 0:
            raise ValueError(f"min_free_kbytes must be >= 0, got {min_free_kbytes}")
        self.min_free_kbytes: int = min_free_kbytes
        self.watermark: list[int] = [0, 0, 0]
        if watermarks is None:
            # __setup_per_zone_wmarks before watermark_scale_factor (Linux < 4.6).
            wmin = min_free_kbytes // kib_per_page
            self.set_watermarks(wmin, wmin + wmin // 4, wmin + wmin // 2)
        else:
            self.set_watermarks(*watermarks)

    def _boot_free_all(self) -> None:
        """Free every page to max-order MOVABLE blocks with bulk slices (memblock_free_all)."""
        f = self.frames
        n = f.nr_pages
        size = 1 << _TOP
        nbig = n >> _TOP
        end = nbig * size
        if nbig:
            lst = self.free_area[_TOP][MIGRATE_MOVABLE]
            f.flags[0:end:size] = array("H", [PG_buddy]) * nbig
            f.order[0:end:size] = bytes([_TOP]) * nbig
            f.buddy_mt[0:end:size] = bytes([MIGRATE_MOVABLE]) * nbig
            nxt = array("I", range(size, end + size, size))
            nxt[-1] = NIL
            f.lru_next[0:end:size] = nxt
            prv = array("I", [NIL])
            prv.extend(range(0, end - size, size))
            f.lru_prev[0:end:size] = prv
            lst.first, lst.last, lst.nr = 0, end - size, nbig
            self.nr_free[_TOP] = nbig
        if end < n:  # one trailing pageblock: an order-9 block
            f.flags[end] = PG_buddy
            f.order[end] = pageblock_order
            f.buddy_mt[end] = MIGRATE_MOVABLE
            self.free_area[pageblock_order][MIGRATE_MOVABLE].list_add(end)
            self.nr_free[pageblock_order] += 1
        self.free_pages = n

    # -----------------------------------------------------------------------------------------
    # Watermarks
    # -----------------------------------------------------------------------------------------
    def set_watermarks(self, wmin: int, low: int, high: int) -> None:
        """Override the min/low/high watermarks (pages); requires 0 <= min <= low <= high."""
        if not 0 <= wmin <= low <= high <= self.managed_pages:
            raise ValueError(
                f"watermarks must satisfy 0 <= min <= low <= high <= managed_pages "
                f"({self.managed_pages}); got min={wmin} low={low} high={high}"
            )
        self.watermark[WMARK_MIN] = wmin
        self.watermark[WMARK_LOW] = low
        self.watermark[WMARK_HIGH] = high

    @property
    def min_wmark_pages(self) -> int:
        """The min watermark in pages (min_wmark_pages)."""
        return self.watermark[WMARK_MIN]

    @property
    def low_wmark_pages(self) -> int:
        """The low watermark in pages (low_wmark_pages)."""
        return self.watermark[WMARK_LOW]

    @property
    def high_wmark_pages(self) -> int:
        """The high watermark in pages (high_wmark_pages)."""
        return self.watermark[WMARK_HIGH]

    def zone_watermark_ok(
        self, order: int, mark: int, alloc_flags: int = 0, free_pages: int | None = None
    ) -> bool:
        """Tell whether an ``order`` allocation keeps the zone above ``mark`` (__zone_watermark_ok).

        ``free_pages - (2^order - 1)`` must exceed the mark (halved for ALLOC_HIGH, then less a
        quarter for ALLOC_HARDER); for order > 0 a free block of at least ``order`` must also sit
        on an UNMOVABLE/MOVABLE/RECLAIMABLE list.  ALLOC_NO_WATERMARKS passes outright (the
        kernel skips the check).  ``free_pages`` defaults to the zone's count.
        """
        if alloc_flags & ALLOC_NO_WATERMARKS:
            return True
        free = self.free_pages if free_pages is None else free_pages
        free -= (1 << order) - 1
        m = mark
        if alloc_flags & ALLOC_HIGH:
            m -= m // 2
        if alloc_flags & ALLOC_HARDER:
            m -= m // 4
        if free <= m:
            return False
        if order == 0:
            return True
        return self.find_free_block_at_least(order)

    def _alloc_budget(self, order: int, g: int) -> tuple[int, int]:
        """Return (blocks the watermarks allow, of which above the low watermark) for ``g``.

        Block k (1-based) of a request passes mark m iff ``free - k*2^order + 1 > m``, i.e.
        ``k <= (free - m) >> order``; the free-block condition of order > 0 is the one
        ``rmqueue`` itself tests.
        """
        free = self.free_pages
        wm = self.watermark
        fast = max(0, (free - wm[WMARK_LOW]) >> order)
        if g & GFP_MEMALLOC_FLAG and not g & GFP_NOMEMALLOC_FLAG:
            return _UNLIMITED, fast
        if g & GFP_NORETRY_FLAG:
            return fast, fast
        m = wm[WMARK_MIN]
        if g & GFP_HIGH_FLAG:
            m -= m // 2
        if g & GFP_ATOMIC_FLAG and not g & GFP_NOMEMALLOC_FLAG:
            m -= m // 4
        return max(0, (free - m) >> order), fast

    # -----------------------------------------------------------------------------------------
    # Taking blocks off the free lists
    # -----------------------------------------------------------------------------------------
    def rmqueue_smallest(self, order: int, migratetype: int) -> int:
        """Take the smallest ``migratetype`` block >= ``order`` and split it (__rmqueue_smallest).

        Returns the PFN of an ``order`` block now off the free lists (head flags and order
        cleared), or -1.  Low level: no watermark check, ``free_pages`` not adjusted.
        """
        f = self.frames
        lists = self._free_by_mt[migratetype]
        for current in range(order, MAX_ORDER):
            lst = lists[current]
            pfn = lst.first
            if pfn == NIL:
                continue
            nxt = f.lru_next[pfn]
            lst.first = nxt
            if nxt == NIL:
                lst.last = NIL
            else:
                f.lru_prev[nxt] = NIL
            lst.nr -= 1
            self.nr_free[current] -= 1
            f.flags[pfn] = 0
            f.order[pfn] = 0
            if current > order:
                self.expand(pfn, order, current, migratetype)
            return pfn
        return -1

    def expand(self, pfn: int, low: int, high: int, migratetype: int) -> None:
        """Split a ``high`` block at ``pfn`` down to ``low``, freeing the upper halves (expand).

        Each upper half goes on the ``migratetype`` list of its order.
        """
        f = self.frames
        flags, porder, bmt = f.flags, f.order, f.buddy_mt
        lists = self._free_by_mt[migratetype]
        nr_free = self.nr_free
        size = 1 << high
        while high > low:
            high -= 1
            size >>= 1
            b = pfn + size
            lists[high].list_add(b)
            nr_free[high] += 1
            flags[b] = PG_buddy
            porder[b] = high
            bmt[b] = migratetype

    def find_suitable_fallback(
        self, order: int, migratetype: int, only_stealable: bool = False
    ) -> tuple[int, bool]:
        """Return (fallback migratetype or -1, can_steal) at ``order`` (find_suitable_fallback)."""
        if self.nr_free[order] == 0:
            return -1, False
        area = self.free_area[order]
        can_steal = False
        for fallback_mt in FALLBACKS[migratetype]:
            if area[fallback_mt].nr == 0:
                continue
            if can_steal_fallback(order, migratetype):
                can_steal = True
            if not only_stealable or can_steal:
                return fallback_mt, can_steal
        return -1, can_steal

    def rmqueue_fallback(self, order: int, start_migratetype: int) -> bool:
        """Steal a block for ``start_migratetype`` from another type (__rmqueue_fallback, 4.13+).

        Searches from the largest order down (the largest block approximates the emptiest
        pageblock); a MOVABLE request that may not claim the block takes the smallest suitable
        block instead.  Moves the stolen block (or its whole pageblock's free pages) onto the
        ``start_migratetype`` lists and returns True; the caller retries rmqueue_smallest.
        """
        if start_migratetype >= MIGRATE_PCPTYPES:
            return False
        current = _TOP
        found = -1
        can_steal = False
        while current >= order:
            found, can_steal = self.find_suitable_fallback(current, start_migratetype)
            if found >= 0:
                break
            current -= 1
        if found < 0:
            return False
        if not can_steal and start_migratetype == MIGRATE_MOVABLE and current > order:
            for current in range(order, MAX_ORDER):  # find_smallest
                found, can_steal = self.find_suitable_fallback(current, start_migratetype)
                if found >= 0:
                    break
        pfn = self.free_area[current][found].first
        self.steal_suitable_fallback(pfn, start_migratetype, can_steal)
        self.fallback_steals += 1
        return True

    def rmqueue_fallback_36(self, order: int, start_migratetype: int) -> int:
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
        f = self.frames
        for current in range(_TOP, order - 1, -1):
            if not self.nr_free[current]:
                continue
            area = self.free_area[current]
            for mt in FALLBACKS[start_migratetype]:
                pfn = area[mt].first
                if pfn == NIL:
                    continue
                if (current >= pageblock_order // 2
                        or start_migratetype == MIGRATE_RECLAIMABLE):
                    moved, _ = self.move_freepages_block(pfn, start_migratetype)
                    if moved >= 1 << (pageblock_order - 1):  # claim if over half is free
                        pb = pfn >> pageblock_order
                        if f.pageblock_mt[pb] != start_migratetype:
                            self.pageblock_claims += 1
                            f.pageblock_mt[pb] = start_migratetype
                    mt = start_migratetype
                area[mt].list_del(pfn)
                self.nr_free[current] -= 1
                f.flags[pfn] = 0
                f.order[pfn] = 0
                if current >= pageblock_order:
                    self.change_pageblock_range(pfn, current, start_migratetype)
                if current > order:
                    self.expand(pfn, order, current, mt)
                self.fallback_steals += 1
                return pfn
        return -1

    def steal_suitable_fallback(self, pfn: int, start_type: int, whole_block: bool) -> None:
        """Move a stolen free block, maybe claiming its pageblock (steal_suitable_fallback, 4.13+).

        Blocks of at least pageblock_order take their pageblocks outright.  Otherwise, when
        ``whole_block``, all free pages of the pageblock move to ``start_type``'s lists, and the
        pageblock changes type if free pages plus "alike" allocated pages (movable ones for a
        movable request; non-movable ones when an unmovable/reclaimable request raids a movable
        block) are at least half of it.  Else only this block moves.
        """
        f = self.frames
        current_order = f.order[pfn]
        old_block_type = f.pageblock_mt[pfn >> pageblock_order]
        if old_block_type != MIGRATE_HIGHATOMIC:
            if current_order >= pageblock_order:
                self.change_pageblock_range(pfn, current_order, start_type)
            elif whole_block:
                free_pages, movable_pages = self.move_freepages_block(pfn, start_type)
                if free_pages:
                    if start_type == MIGRATE_MOVABLE:
                        alike_pages = movable_pages
                    elif old_block_type == MIGRATE_MOVABLE:
                        alike_pages = pageblock_nr_pages - (free_pages + movable_pages)
                    else:
                        alike_pages = 0
                    if free_pages + alike_pages >= (1 << (pageblock_order - 1)):
                        if old_block_type != start_type:
                            self.pageblock_claims += 1
                        f.pageblock_mt[pfn >> pageblock_order] = start_type
                    return
        # single_page:
        cur = f.buddy_mt[pfn]
        if cur != start_type:
            self.free_area[current_order][cur].list_del(pfn)
            self.free_area[current_order][start_type].list_add(pfn)
            f.buddy_mt[pfn] = start_type

    def change_pageblock_range(self, pfn: int, order: int, migratetype: int) -> None:
        """Set the migratetype of every pageblock of an ``order`` block (change_pageblock_range)."""
        f = self.frames
        first = pfn >> pageblock_order
        count = max(1, 1 << (order - pageblock_order))
        for pb in range(first, first + count):
            if f.pageblock_mt[pb] != migratetype:
                self.pageblock_claims += 1
                f.pageblock_mt[pb] = migratetype

    def move_freepages_block(self, pfn: int, migratetype: int) -> tuple[int, int]:
        """Move the free blocks of ``pfn``'s pageblock to ``migratetype`` lists (move_freepages).

        Returns (pages moved, allocated movable pages seen).  Movable: PG_lru, PG_movable or
        PG_balloon, or owned by anon/pagecache/THP.  Does not change the pageblock type.
        Like the kernel, only heads inside the pageblock are seen: the tail half of a larger
        free block counts as neither.
        """
        f = self.frames
        flags, porder, bmt, mapping = f.flags, f.order, f.buddy_mt, f.mapping
        start = pfn & ~(pageblock_nr_pages - 1)
        end = start + pageblock_nr_pages
        free_area = self.free_area
        moved = movable = 0
        page = start
        while page < end:
            fl = flags[page]
            if not fl & PG_buddy:
                if mapping[page] != OWNER_FREE and (
                    fl & _MOVABLE_PAGE_FLAGS or mapping[page] in _MOVABLE_OWNERS
                ):
                    movable += 1
                page += 1
                continue
            o = porder[page]
            cur = bmt[page]
            if cur != migratetype:
                free_area[o][cur].list_del(page)
                free_area[o][migratetype].list_add(page)
                bmt[page] = migratetype
            moved += 1 << o
            page += 1 << o
        return moved, movable

    def rmqueue(self, order: int, migratetype: int) -> int:
        """Take an ``order`` block for ``migratetype``, falling back if needed (__rmqueue).

        Adjusts ``free_pages``; no watermark check, page state not prepared.  Returns -1 when
        no list of an allocatable type holds a block of at least ``order``.
        """
        while True:
            pfn = self.rmqueue_smallest(order, migratetype)
            if pfn < 0 and self.fallback_36:
                pfn = self.rmqueue_fallback_36(order, migratetype)
                if pfn < 0:
                    return -1
            if pfn >= 0:
                self.free_pages -= 1 << order
                return pfn
            if not self.rmqueue_fallback(order, migratetype):
                return -1

    # -----------------------------------------------------------------------------------------
    # Allocation API
    # -----------------------------------------------------------------------------------------
    def _check_request(self, order: int, owner: int) -> None:
        """Reject impossible orders and owner codes (cheap, once per call)."""
        if not 0 <= order < MAX_ORDER:
            raise ValueError(f"order {order} out of range 0..{MAX_ORDER - 1}")
        if not 0 < owner < NR_OWNERS:
            raise ValueError(f"owner code {owner} is not an allocated owner (1..{NR_OWNERS - 1})")

    def _prep_new_page(self, pfn: int, order: int, g: int, owner: int) -> None:
        """Give a block taken off the lists its allocated state (prep_new_page/prep_compound_page).

        The head gets refcount 1, the owner's flags and (order > 0) the order; every page gets
        the owner code; compound tails get PG_tail.  Tails keep refcount 0, as in the kernel.
        """
        f = self.frames
        fl = OWNER_PAGE_FLAGS[owner]
        f.refcount[pfn] = 1
        if order:
            size = 1 << order
            f.mapping[pfn : pfn + size] = bytes((owner,)) * size
            f.order[pfn] = order
            if g & GFP_COMP_FLAG:
                f.flags[pfn] = fl | PG_head
                f.flags[pfn + 1 : pfn + size] = array("H", (PG_tail,)) * (size - 1)
            else:
                f.flags[pfn] = fl
        else:
            f.mapping[pfn] = owner
            f.flags[pfn] = fl

    def alloc_pages(self, order: int, gfp: int, owner: int) -> int:
        """Allocate one ``order`` block for ``owner``; return its head PFN or -1.

        Watermark semantics (no reclaim is modelled):
        * the fast path succeeds while the zone stays above the LOW watermark;
        * otherwise, without ``__GFP_NORETRY``, the modelled slow path (kswapd/reclaim having
          done what they could) may go down to the MIN watermark, halved by ``__GFP_HIGH`` and
          less a quarter for ``__GFP_ATOMIC`` (ALLOC_HARDER) unless ``__GFP_NOMEMALLOC``;
        * ``__GFP_MEMALLOC`` ignores watermarks unless ``__GFP_NOMEMALLOC`` is also set.
        The migratetype comes from gfp_migratetype.  On success the head has refcount 1, all
        pages the owner code; with ``__GFP_COMP`` and order > 0 the head is PG_head and tails
        PG_tail.  Failures are counted in ``alloc_fail``.
        """
        self._check_request(order, owner)
        g = int(gfp)
        mt = (g & GFP_MOVABLE_MASK) >> GFP_MOVABLE_SHIFT
        if mt >= MIGRATE_PCPTYPES:
            raise ValueError(f"gfp {g:#x} has both __GFP_MOVABLE and __GFP_RECLAIMABLE set")
        budget, fast = self._alloc_budget(order, g)
        pfn = self.rmqueue(order, mt) if budget > 0 else -1
        if pfn < 0:
            self.alloc_fail += 1
            return -1
        self._prep_new_page(pfn, order, g, owner)
        size = 1 << order
        self.nr_allocated += size
        self.pgalloc += size
        self.alloc_success += 1
        if fast <= 0:
            self.alloc_slowpath += 1
        return pfn

    def alloc_pages_bulk(
        self, n: int, order: int, gfp: int, owner: int, out: MutableSequence[int]
    ) -> int:
        """Allocate up to ``n`` blocks like ``n`` alloc_pages calls; append head PFNs to ``out``.

        Returns how many were allocated; stops at the first failure (counted once in
        ``alloc_fail``).  Same watermark semantics as :meth:`alloc_pages`, evaluated per block.
        Order 0 is the hot path: it pops the order-0 list in one walk and, when that list is
        empty, takes the smallest larger block whole (handing out its pages in PFN order and
        freeing the tail pieces), which leaves exactly the state repeated ``__rmqueue`` calls
        would.
        """
        self._check_request(order, owner)
        if n <= 0:
            return 0
        g = int(gfp)
        mt = (g & GFP_MOVABLE_MASK) >> GFP_MOVABLE_SHIFT
        if mt >= MIGRATE_PCPTYPES:
            raise ValueError(f"gfp {g:#x} has both __GFP_MOVABLE and __GFP_RECLAIMABLE set")
        budget, fast = self._alloc_budget(order, g)
        want = n if n <= budget else budget
        if order == 0:
            got = self._alloc_bulk_order0(want, mt, owner, out)
            self.free_pages -= got
        else:
            got = 0
            append = out.append
            while got < want:
                pfn = self.rmqueue(order, mt)
                if pfn < 0:
                    break
                self._prep_new_page(pfn, order, g, owner)
                append(pfn)
                got += 1
        if got < n:
            self.alloc_fail += 1
        pages = got << order
        self.nr_allocated += pages
        self.pgalloc += pages
        self.alloc_success += got
        if got > fast:
            self.alloc_slowpath += got - fast
        return got

    def _alloc_bulk_order0(self, want: int, mt: int, owner: int, out: MutableSequence[int]) -> int:
        """Hand out up to ``want`` order-0 pages of ``mt`` (free_pages adjusted by caller)."""
        f = self.frames
        nxt, prv = f.lru_next, f.lru_prev
        flags, refc, mapping, porder, bmt = f.flags, f.refcount, f.mapping, f.order, f.buddy_mt
        lists = self._free_by_mt[mt]
        l0 = lists[0]
        nr_free = self.nr_free
        fl = OWNER_PAGE_FLAGS[owner]
        append = out.append
        got = 0
        while got < want:
            pfn = l0.first
            if pfn != NIL:
                taken = 0
                while pfn != NIL and got < want:
                    flags[pfn] = fl
                    refc[pfn] = 1
                    mapping[pfn] = owner
                    porder[pfn] = 0
                    append(pfn)
                    got += 1
                    taken += 1
                    pfn = nxt[pfn]
                l0.first = pfn
                if pfn == NIL:
                    l0.last = NIL
                else:
                    prv[pfn] = NIL
                l0.nr -= taken
                nr_free[0] -= taken
                continue
            # The order-0 list is empty: the smallest larger block of this type, whole.
            h = 1
            while h < MAX_ORDER:
                lst = lists[h]
                pfn = lst.first
                if pfn != NIL:
                    break
                h += 1
            else:
                if self.fallback_36:
                    pfn = self.rmqueue_fallback_36(0, mt)
                    if pfn < 0:
                        break
                    flags[pfn] = fl
                    refc[pfn] = 1
                    mapping[pfn] = owner
                    append(pfn)
                    got += 1
                    continue
                if self.rmqueue_fallback(0, mt):
                    continue
                break
            x = nxt[pfn]
            lst.first = x
            if x == NIL:
                lst.last = NIL
            else:
                prv[x] = NIL
            lst.nr -= 1
            nr_free[h] -= 1
            size = 1 << h
            take = want - got
            if take > size:
                take = size
            end = pfn + take
            porder[pfn] = 0
            flags[pfn:end] = array("H", (fl,)) * take
            refc[pfn:end] = array("h", (1,)) * take
            mapping[pfn:end] = bytes((owner,)) * take
            if isinstance(out, array) and out.typecode == "I":  # no int object per page
                out.frombytes(np.arange(pfn, end, dtype=np.uint32).tobytes())
            else:
                out.extend(range(pfn, end))
            got += take
            rem = size - take
            k = 0
            while rem:  # the untaken tail, as expand() would have left it: one block per bit
                if rem & 1:
                    lk = lists[k]
                    first = lk.first  # lists below h are empty, but stay general
                    nxt[end] = first
                    prv[end] = NIL
                    if first == NIL:
                        lk.last = end
                    else:
                        prv[first] = end
                    lk.first = end
                    lk.nr += 1
                    nr_free[k] += 1
                    flags[end] = PG_buddy
                    porder[end] = k
                    bmt[end] = mt
                    end += 1 << k
                rem >>= 1
                k += 1
        return got

    # -----------------------------------------------------------------------------------------
    # Freeing
    # -----------------------------------------------------------------------------------------
    def _bad_free(self, pfn: int, order: int, done: int) -> BuddyError:
        """Describe why freeing ``pfn`` at ``order`` is refused (free_pages_check / bad_page)."""
        f = self.frames
        if not 0 <= pfn < f.nr_pages:
            why = f"pfn outside guest RAM (0..{f.nr_pages - 1})"
        elif f.flags[pfn] & PG_buddy or f.mapping[pfn] == OWNER_FREE:
            why = "page is already free (double free)"
        elif f.refcount[pfn] != 1:
            why = (
                f"refcount is {f.refcount[pfn]}, the caller must hold the last reference "
                "(refcount 1)"
            )
        elif f.flags[pfn] & PAGE_FLAGS_CHECK_AT_FREE:
            bad = page_flag_names(f.flags[pfn] & PAGE_FLAGS_CHECK_AT_FREE)
            why = f"bad page state: flags {bad} still set"
        elif f.order[pfn] != order:
            why = f"freed as order {order} but allocated as order {f.order[pfn]}"
        elif pfn & ((1 << order) - 1):
            why = f"pfn not aligned to order {order}"
        else:
            why = "a tail page still holds a reference"
        msg = f"free_pages(pfn={pfn}, order={order}): {why}; {f.describe(pfn)}"
        return BuddyError(msg, pfn, done)

    def free_pages_block(self, pfn: int, order: int = 0) -> None:
        """Free an allocated ``order`` block whose head is ``pfn`` (__free_pages).

        The caller must hold the last reference: the head's refcount must be 1 (it drops to 0
        here).  Raises BuddyError, changing nothing, on a double free, a refcount other than 1,
        an order other than the allocated one, or a bad page state (PG_locked, PG_isolated,
        PG_balloon, PG_movable, PG_slab or PG_reserved still set: the kernel's "Bad page
        state").  Owner flags (PG_lru, PG_anon, PG_head, PG_tail) are cleared here.
        """
        if not 0 <= order < MAX_ORDER:
            raise ValueError(f"order {order} out of range 0..{MAX_ORDER - 1}")
        f = self.frames
        size = 1 << order
        if (
            not 0 <= pfn < f.nr_pages
            or pfn & (size - 1)
            or f.refcount[pfn] != 1
            or f.flags[pfn] & PAGE_FLAGS_CHECK_AT_FREE
            or f.order[pfn] != order
            or f.mapping[pfn] == OWNER_FREE
        ):
            raise self._bad_free(pfn, order, 0)
        if order:
            if f.refcount[pfn + 1 : pfn + size].count(0) != size - 1:
                raise self._bad_free(pfn, order, 0)
            f.flags[pfn : pfn + size] = array("H", bytes(2 * size))
            f.mapping[pfn : pfn + size] = bytes(size)
        else:
            f.flags[pfn] = 0
            f.mapping[pfn] = OWNER_FREE
        f.refcount[pfn] = 0
        f.order[pfn] = 0
        self.free_pages += size
        self.nr_allocated -= size
        self.pgfree += size
        self.free_one_page(pfn, order, f.pageblock_mt[pfn >> pageblock_order])

    def free_pages_bulk(self, pfns: Iterable[int], order: int = 0) -> int:
        """Free many ``order`` blocks (each as :meth:`free_pages_block`); return the count freed.

        Order 0 is the hot path (the merge loop is inlined).  On a bad page it raises
        BuddyError with ``done`` = blocks already freed; the bad one and the rest stay as they
        were.
        """
        if order:
            done = 0
            for pfn in pfns:
                try:
                    self.free_pages_block(pfn, order)
                except BuddyError as err:
                    err.done = done
                    raise
                done += 1
            return done
        f = self.frames
        nr = f.nr_pages
        flags, refc, mapping, porder, bmt = f.flags, f.refcount, f.mapping, f.order, f.buddy_mt
        nxt, prv = f.lru_next, f.lru_prev
        pbmt = f.pageblock_mt
        free_area = self.free_area
        nr_free = self.nr_free
        bad_flags = PAGE_FLAGS_CHECK_AT_FREE
        seq: list[int] | array[int] = pfns if isinstance(pfns, list | array) else list(pfns)
        head = self._free_runs_at_head(seq)  # a batch that is one block (balloon releases)
        if head:
            if head == len(seq):
                return head
            seq = seq[head:]
        nexts = list(seq[1:])
        nexts.append(-2)  # no successor for the last pfn
        steps = enumerate(zip(seq, nexts, strict=True))
        done = 0  # blocks freed, runs included
        single = 0  # of which freed by this loop (runs do their own accounting)
        try:
            for i, (pfn, nx) in steps:
                if (nx == pfn + 1 and not pfn & 1) or (nx == pfn - 1 and pfn & 1):
                    size = self._free_run(seq, i, pfn, nx > pfn)
                    if size:
                        next(islice(steps, size - 2, None), None)  # skip the rest of the run
                        done += size
                        continue
                # Free pages have refcount 0, so this also catches double frees.
                if refc[pfn] != 1 or pfn < 0 or flags[pfn] & bad_flags or porder[pfn]:
                    raise self._bad_free(pfn, 0, done)
                refc[pfn] = 0
                flags[pfn] = 0
                mapping[pfn] = OWNER_FREE
                mt = pbmt[pfn >> pageblock_order]
                o = 0
                while True:  # __free_one_page, inlined
                    b = pfn ^ (1 << o)
                    if not flags[b] & PG_buddy or porder[b] != o:
                        break
                    lst = free_area[o][bmt[b]]
                    p = prv[b]
                    x = nxt[b]
                    if p == NIL:
                        lst.first = x
                    else:
                        nxt[p] = x
                    if x == NIL:
                        lst.last = p
                    else:
                        prv[x] = p
                    lst.nr -= 1
                    nr_free[o] -= 1
                    flags[b] = 0
                    porder[b] = 0
                    pfn &= b
                    o += 1
                    if o == pageblock_order:
                        break
                if o == pageblock_order:  # merging across pageblocks: the general path
                    self.free_one_page(pfn, o, mt)
                    done += 1
                    single += 1
                    continue
                flags[pfn] = PG_buddy
                porder[pfn] = o
                bmt[pfn] = mt
                lst = free_area[o][mt]
                nr_free[o] += 1
                lst.nr += 1
                hb = (pfn & ~(1 << o)) ^ (2 << o)
                if hb < nr and flags[hb] & PG_buddy and porder[hb] == o + 1:
                    last = lst.last  # its parent's buddy is free: tail, to merge soon
                    prv[pfn] = last
                    nxt[pfn] = NIL
                    if last == NIL:
                        lst.first = pfn
                    else:
                        nxt[last] = pfn
                    lst.last = pfn
                else:
                    first = lst.first
                    nxt[pfn] = first
                    prv[pfn] = NIL
                    if first == NIL:
                        lst.last = pfn
                    else:
                        prv[first] = pfn
                    lst.first = pfn
                done += 1
                single += 1
        except IndexError:  # only ``pfn`` itself is unchecked: beyond the zone
            raise self._bad_free(pfn, 0, head + done) from None
        except BuddyError as err:
            err.done += head
            raise
        finally:
            self.free_pages += single
            self.nr_allocated -= single
            self.pgfree += single
        return head + done

    def _free_runs_at_head(self, seq: list[int] | array[int]) -> int:
        """Free the whole-block runs (see _free_run) that ``seq`` starts with; how many pages.

        The page loop of free_pages_bulk finds runs too, but skipping a run's pages there
        costs a step each; a batch that is one block, or starts with some, is freed here.
        """
        i, n = 0, len(seq)
        while i + 1 < n:
            pfn, nx = seq[i], seq[i + 1]
            if not ((nx == pfn + 1 and not pfn & 1) or (nx == pfn - 1 and pfn & 1)):
                break
            size = self._free_run(seq, i, pfn, nx > pfn)
            if not size:
                break
            i += size
        return i

    def _free_run(self, seq: list[int] | array[int], i: int, pfn: int, ascending: bool) -> int:
        """Free ``seq[i:i+size]`` at once if it is a whole aligned block in PFN order; return size.

        Freeing the pages of an aligned block (at most a pageblock) one by one, ascending or
        descending, only ever merges them with each other until the last one completes the
        block, which then merges on like ``__free_one_page(block, order)``: so validating every
        page and freeing the block whole leaves exactly the state the page-by-page loop would.
        Returns 0 (nothing done) when the run is not such a block or holds a bad page; the
        caller then takes the page-by-page path, which reports the bad page.
        """
        f = self.frames
        low = pfn if ascending else pfn + 1  # the block boundary the run starts from
        if pfn < 0 or low < 0:
            return 0
        align = (low & -low).bit_length() - 1 if low else pageblock_order
        size = 1 << min(align, pageblock_order)
        n = len(seq)
        while size >= 2:
            if i + size <= n and seq[i + size - 1] == (
                pfn + size - 1 if ascending else pfn + 1 - size
            ):
                break
            size >>= 1
        else:
            return 0
        start = pfn if ascending else pfn + 1 - size
        end = start + size
        if start < 0 or end > f.nr_pages:
            return 0
        chunk = seq[i : i + size]
        if isinstance(chunk, array) and chunk.typecode == "I":
            # page k of the run is pfn + k (ascending) or pfn - k: one array comparison
            c = np.frombuffer(chunk, dtype=np.uint32)
            if np.count_nonzero((c - _IOTA[:size] if ascending else c + _IOTA[:size]) != pfn):
                return 0
        elif list(chunk) != list(range(start, end) if ascending else range(end - 1, start - 1, -1)):
            return 0
        # Array comparisons with constant runs (a memcmp) where a test is one value for all.
        flags = f.flags[start:end]
        if (
            f.refcount[start:end] != _ONE_REF[:size]
            or f.order.count(0, start, end) != size
            or f.mapping.find(OWNER_FREE, start, end) != -1
            or (flags != _NO_FLAGS[:size]  # owner flags are fine; a bad one refuses the run
                and np.count_nonzero(np.frombuffer(flags, dtype=np.uint16)
                                     & PAGE_FLAGS_CHECK_AT_FREE))
        ):
            return 0
        f.refcount[start:end] = _NO_REF[:size]
        f.flags[start:end] = _NO_FLAGS[:size]
        f.mapping[start:end] = bytes(size)
        self.free_pages += size
        self.nr_allocated -= size
        self.pgfree += size
        self.free_one_page(start, size.bit_length() - 1, f.pageblock_mt[start >> pageblock_order])
        return size

    def _may_merge_pageblocks(self, buddy: int, migratetype: int) -> bool:
        """Tell whether a free block may merge across pageblocks with ``buddy`` (order >= 9).

        The buddy must be inside the zone, and an isolated pageblock never merges with a
        non-isolated one (the kernel's has_isolate_pageblock check).
        """
        f = self.frames
        if buddy >= f.nr_pages:
            return False
        buddy_mt = f.pageblock_mt[buddy >> pageblock_order]
        return buddy_mt == migratetype or (
            buddy_mt != MIGRATE_ISOLATE and migratetype != MIGRATE_ISOLATE
        )

    def free_one_page(self, pfn: int, order: int, migratetype: int) -> None:
        """Merge a free ``order`` block with its free buddies and list it (__free_one_page).

        Low level: the pages must already be in the free state (no flags, refcount 0, owner
        OWNER_FREE) and ``free_pages`` already counted.  The merged block goes on the
        ``migratetype`` list (the freed page's pageblock type); when the buddy of the merged
        block's parent is free it goes on the tail, to stay unallocated and merge soon.
        """
        f = self.frames
        flags, porder, bmt = f.flags, f.order, f.buddy_mt
        free_area = self.free_area
        nr_free = self.nr_free
        o = order
        while o < _TOP:
            b = pfn ^ (1 << o)
            if o >= pageblock_order and not self._may_merge_pageblocks(b, migratetype):
                break
            if not flags[b] & PG_buddy or porder[b] != o:
                break
            free_area[o][bmt[b]].list_del(b)
            nr_free[o] -= 1
            flags[b] = 0
            porder[b] = 0
            pfn &= b
            o += 1
        flags[pfn] = PG_buddy
        porder[pfn] = o
        bmt[pfn] = migratetype
        nr_free[o] += 1
        hb = (pfn & ~(1 << o)) ^ (2 << o)
        lst = free_area[o][migratetype]
        if o < _TOP - 1 and hb < f.nr_pages and flags[hb] & PG_buddy and porder[hb] == o + 1:
            lst.list_add_tail(pfn)
        else:
            lst.list_add(pfn)

    # -----------------------------------------------------------------------------------------
    # Helpers for compaction
    # -----------------------------------------------------------------------------------------
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

    def find_free_block_at_least(self, order: int, migratetype: int | None = None) -> bool:
        """Tell whether a free block of at least ``order`` sits on an allocatable list.

        With ``migratetype`` only that type's lists count; by default any of UNMOVABLE,
        MOVABLE, RECLAIMABLE (what a watermark check or compaction's finish test accepts).
        """
        fa = self.free_area
        types = range(MIGRATE_PCPTYPES) if migratetype is None else (migratetype,)
        for o in range(order, MAX_ORDER):
            if self.nr_free[o]:
                area = fa[o]
                for mt in types:
                    if area[mt].nr:
                        return True
        return False

    # -----------------------------------------------------------------------------------------
    # Introspection
    # -----------------------------------------------------------------------------------------
    def statistics(self) -> ZoneStatistics:
        """Return a snapshot of the zone's counters."""
        return ZoneStatistics(
            managed_pages=self.managed_pages,
            free_pages=self.free_pages,
            nr_allocated=self.nr_allocated,
            pgalloc=self.pgalloc,
            pgfree=self.pgfree,
            alloc_success=self.alloc_success,
            alloc_fail=self.alloc_fail,
            alloc_slowpath=self.alloc_slowpath,
            fallback_steals=self.fallback_steals,
            pageblock_claims=self.pageblock_claims,
            isolated_free_pages=self.isolated_free_pages,
        )

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
