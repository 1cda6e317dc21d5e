"""The buddy allocator of the guest's single ZONE_NORMAL (mm/page_alloc.c at simulator scale).

Pure and synchronous: the allocator actor wraps a zone and serves requests from it.  This is
the core of :class:`~actors.guest.mm.mmzone.Zone`: the free lists, splitting and merging,
watermarks, one block at a time.  Function names follow mm/page_alloc.c
(``__rmqueue_smallest`` is :meth:`ZoneCore.rmqueue_smallest`, ``__free_one_page`` is
:meth:`ZoneCore.free_one_page`, ...), so the C can be read beside it.  The rest of the zone:
the modules :mod:`~actors.guest.mm.mmzone` lists; the model decisions are listed there.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

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
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    MIGRATE_PCPTYPES,
    MIGRATE_TYPES,
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    pageblock_nr_pages,
    pageblock_order,
)
from actors.guest.mm.page_alloc_fallback import FALLBACK_MODELS, FALLBACK_RETRY
from actors.guest.mm.pages import (
    NIL,
    NR_OWNERS,
    OWNER_ANON,
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

MIN_FREE_KBYTES_MIN: Final = 128
#: Upper clamp of min_free_kbytes: 262144 KiB since Linux 5.x (65536 before).
MIN_FREE_KBYTES_MAX: Final = 262144

_TOP: Final = MAX_ORDER - 1
_UNLIMITED: Final = 1 << 62
_MOVABLE_OWNERS: Final = frozenset((OWNER_ANON, OWNER_PAGECACHE, OWNER_THP))
_MOVABLE_PAGE_FLAGS: Final = PG_lru | PG_movable | PG_balloon


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


def default_min_free_kbytes(managed_kbytes: int) -> int:
    """Size min_free_kbytes like init_per_zone_wmark_min: int_sqrt(kbytes * 16), clamped."""
    value = math.isqrt(managed_kbytes * 16)
    return max(MIN_FREE_KBYTES_MIN, min(MIN_FREE_KBYTES_MAX, value))


class ZoneCore:
    """ZONE_NORMAL covering every PFN of a :class:`PageFrames`, with the buddy free lists.

    ``free_area[order][migratetype]`` are :class:`PageList` s of free block heads,
    ``nr_free[order]`` counts blocks per order over all types, ``free_pages`` counts free
    pages (NR_FREE_PAGES) and ``nr_allocated`` pages handed out; their sum is always
    ``managed_pages``.  Freeing is ``free_pages_block``/``free_pages_bulk`` (the kernel's
    ``__free_pages``; ``free_pages`` is taken by the counter).
    ``watermark[WMARK_MIN/LOW/HIGH]`` are in pages.
    ``fallback`` names the ``__rmqueue_fallback`` generation (a key of FALLBACK_MODELS).
    The frames must be fresh (never used by another zone).  :class:`Zone
    <actors.guest.mm.mmzone.Zone>` adds the bulk paths, isolation helpers and checks.
    """

    __slots__ = (
        "_free_by_mt",
        "_rmqueue_fallback",
        "alloc_fail",
        "alloc_slowpath",
        "alloc_success",
        "fallback",
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
        #: Which kernel's __rmqueue_fallback this zone follows (page_alloc_fallback.py).
        self.fallback: str = fallback
        # Bound once: the allocation paths call it only when their own lists are empty.
        self._rmqueue_fallback: Callable[[ZoneCore, int, int], int] = (
            FALLBACK_MODELS[fallback].rmqueue_fallback)
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
        pfn = self.rmqueue_smallest(order, migratetype)
        while pfn < 0:
            pfn = self._rmqueue_fallback(self, order, migratetype)
            if pfn == FALLBACK_RETRY:  # 4.13+: a block moved to our lists; goto retry
                pfn = self.rmqueue_smallest(order, migratetype)
            elif pfn < 0:
                return -1
        self.free_pages -= 1 << order
        return pfn

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

