"""Tests for the buddy allocator: splitting, merging, fallback stealing, watermarks, helpers."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    ALLOC_HIGH,
    ALLOC_NO_WATERMARKS,
    GFP,
    GFP_ATOMIC,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_TRANSHUGE,
    MAX_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
    WMARK_LOW,
    WMARK_MIN,
)
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.page_alloc import BuddyError, default_min_free_kbytes
from actors.guest.mm.page_alloc_fallback import can_steal_fallback
from actors.guest.mm.pages import PageFrames

MOV = int(GFP_HIGHUSER_MOVABLE)
UNMOV = int(GFP_KERNEL)
RECL = int(GFP_KERNEL | GFP.RECLAIMABLE)
MEMALLOC = int(GFP_KERNEL | GFP.MEMALLOC)
NORETRY = int(GFP_HIGHUSER_MOVABLE | GFP.NORETRY)


def make_zone(pageblocks: int = 4, wmarks: tuple[int, int, int] | None = (0, 0, 0),
              fallback: str = "v4.13") -> Zone:
    """A zone of ``pageblocks`` pageblocks, watermarks zero unless asked."""
    return Zone(PageFrames(pageblocks * 512), watermarks=wmarks, fallback=fallback)


def info(zone: Zone) -> list[int]:
    """/proc/buddyinfo for the zone."""
    return list(zone.nr_free)


def alloc_n(zone: Zone, n: int, gfp: int = MOV, owner: int = P.OWNER_ANON) -> array[int]:
    """Allocate n order-0 pages, asserting they all came."""
    out: array[int] = array("I")
    assert zone.alloc_pages_bulk(n, 0, gfp, owner, out) == n
    return out


def drain_to(zone: Zone, free: int) -> array[int]:
    """Allocate (ignoring watermarks) until exactly ``free`` pages are left."""
    return alloc_n(zone, zone.free_pages - free, MEMALLOC, P.OWNER_KERNEL)


def state(zone: Zone) -> dict[str, Any]:
    """Everything observable about a zone, for equivalence checks."""
    f = zone.frames
    return {
        "flags": f.flags.tolist(),
        "refcount": f.refcount.tolist(),
        "mapping": bytes(f.mapping),
        "order": bytes(f.order),
        "pageblock_mt": bytes(f.pageblock_mt),
        "lists": [[list(zone.free_area[o][mt].pfns()) for mt in range(MIGRATE_TYPES)]
                  for o in range(MAX_ORDER)],
        "nr_free": list(zone.nr_free),
        "stats": zone.statistics(),
    }


# ---------------------------------------------------------------------------------------------
# Boot state and watermarks
# ---------------------------------------------------------------------------------------------
def test_boot_state_is_all_free_max_order_movable() -> None:
    """A new zone holds every page as order-10 MOVABLE blocks listed in ascending PFN order."""
    z = make_zone(8)
    assert info(z) == [0] * 10 + [4]
    assert list(z.free_area[10][MIGRATE_MOVABLE].pfns()) == [0, 1024, 2048, 3072]
    assert z.free_pages == z.managed_pages == 4096 and z.nr_allocated == 0
    z.check_invariants()


def test_odd_pageblock_count_ends_with_an_order9_block() -> None:
    """A zone of 3 pageblocks boots as one order-10 and one order-9 block."""
    z = make_zone(3)
    assert info(z) == [0] * 9 + [1, 1]
    assert z.free_area[9][MIGRATE_MOVABLE].first == 1024
    z.check_invariants()


@pytest.mark.parametrize(
    ("nr_pages", "page_size", "expected"),
    [
        (262144, 4096, (1024, 1280, 1536)),  # 1 GiB: sqrt(1 GiB in KiB * 16) = 4096 KiB
        (2048, 4096, (90, 112, 135)),  # 8 MiB: isqrt(131072) = 362 KiB
        (16384, 65536, (64, 80, 96)),  # 1 GiB of 64 KiB pages: 4096 KiB = 64 pages
    ],
)
def test_default_watermarks_follow_min_free_kbytes(
    nr_pages: int, page_size: int, expected: tuple[int, int, int]
) -> None:
    """min = isqrt(KiB*16) KiB in pages, low = min + min/4, high = min + min/2."""
    z = Zone(PageFrames(nr_pages, page_size))
    assert tuple(z.watermark) == expected
    assert (z.min_wmark_pages, z.low_wmark_pages, z.high_wmark_pages) == expected


@pytest.mark.parametrize(
    ("kbytes", "expected"), [(512, 128), (1 << 20, 4096), (1 << 34, 262144)]
)
def test_min_free_kbytes_clamps(kbytes: int, expected: int) -> None:
    """min_free_kbytes is clamped to [128, 262144] KiB."""
    assert default_min_free_kbytes(kbytes) == expected


def test_watermark_overrides_and_validation() -> None:
    """min_free_kbytes and explicit watermarks override the default; bad marks are refused."""
    z = Zone(PageFrames(2048), min_free_kbytes=400)
    assert tuple(z.watermark) == (100, 125, 150)
    z.set_watermarks(1, 2, 3)
    assert tuple(z.watermark) == (1, 2, 3)
    with pytest.raises(ValueError, match="min <= low <= high"):
        z.set_watermarks(5, 4, 6)
    with pytest.raises(ValueError, match="min_free_kbytes"):
        Zone(PageFrames(512), min_free_kbytes=-1)


def test_zone_needs_fresh_frames() -> None:
    """Building a second zone over used frames is refused."""
    f = PageFrames(512)
    Zone(f)
    with pytest.raises(ValueError, match="fresh PageFrames"):
        Zone(f)


# ---------------------------------------------------------------------------------------------
# Splitting and merging
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (0, [1] * 10 + [1]),
        (3, [0, 0, 0] + [1] * 7 + [1]),
        (9, [0] * 9 + [1, 1]),
        (10, [0] * 10 + [1]),
    ],
)
def test_split_leaves_one_block_per_lower_order(order: int, expected: list[int]) -> None:
    """Taking an order-o block from an order-10 block leaves one free block per order o..9."""
    z = make_zone(4)
    pfn = z.alloc_pages(order, MOV, P.OWNER_ANON)
    assert pfn == 0
    assert info(z) == expected
    assert z.free_pages == 2048 - (1 << order)
    z.check_invariants()
    z.free_pages_block(pfn, order)
    assert info(z) == [0] * 10 + [2]
    z.check_invariants()


def test_consecutive_allocations_walk_up_from_the_lowest_pfn() -> None:
    """Order-0 allocations from a fresh zone come out in ascending PFN order."""
    z = make_zone(4)
    assert list(alloc_n(z, 100)) == list(range(100))
    assert [z.alloc_pages(0, MOV, P.OWNER_ANON) for _ in range(3)] == [100, 101, 102]


@pytest.mark.parametrize(
    ("frees", "expected"),
    [
        ([0], [1, 0] + [1] * 7 + [0, 0]),
        ([0, 1], [0, 1] + [1] * 7 + [0, 0]),
        ([0, 2], [2, 0] + [1] * 7 + [0, 0]),
        ([1, 0, 3], [1, 1] + [1] * 7 + [0, 0]),
        ([3, 1, 2, 0], [0] * 9 + [1, 0]),
        ([0, 1, 2, 3], [0] * 9 + [1, 0]),
    ],
)
@pytest.mark.parametrize("bulk", [False, True])
def test_merging_table(frees: list[int], expected: list[int], bulk: bool) -> None:
    """Freed pages merge exactly with free buddies of equal order, whatever the free order."""
    z = make_zone(1)
    alloc_n(z, 4)
    assert info(z) == [0, 0] + [1] * 7 + [0, 0]
    if bulk:
        assert z.free_pages_bulk(frees) == len(frees)
    else:
        for pfn in frees:
            z.free_pages_block(pfn)
    assert info(z) == expected
    z.check_invariants()


def test_merge_uses_the_freed_pages_pageblock_type() -> None:
    """A freed page goes on the list of its pageblock's migratetype at the time of freeing."""
    z = make_zone(2)
    pages = alloc_n(z, 2)
    z.frames.set_pageblock_migratetype(0, MIGRATE_RECLAIMABLE)
    z.free_pages_block(pages[0])
    assert z.free_area[0][MIGRATE_RECLAIMABLE].first == 0
    z.check_invariants()


def test_freed_block_goes_to_the_tail_when_its_parent_buddy_is_free() -> None:
    """The 'buddy of the next order is free' heuristic adds the block at the list tail."""
    z = make_zone(1)
    pages = alloc_n(z, 8)  # 0..7; free blocks of order 3..8 remain
    z.free_pages_bulk([pages[6]])  # order-0 block at 6: its parent's buddy (4..5) is allocated
    z.free_pages_bulk([pages[0]])  # order-0 block at 0: parent's buddy (2..3) allocated
    assert list(z.free_area[0][MIGRATE_MOVABLE].pfns()) == [0, 6]
    z.free_pages_bulk([pages[2], pages[3]])  # order-1 block at 2, whose parent's buddy is 0..1
    z.free_pages_bulk([pages[4]])  # order 0 at 4; parent's buddy (6..7) is not an order-1 block
    assert list(z.free_area[0][MIGRATE_MOVABLE].pfns()) == [4, 0, 6]
    z.free_pages_bulk([pages[1]])  # 0+1 -> order 1 at 0 -> merges with 2..3 -> order 2 at 0
    assert list(z.free_area[2][MIGRATE_MOVABLE].pfns()) == [0]
    z.free_pages_bulk([pages[7]])  # 6+7 -> order 1 at 6; its parent's buddy 0..3 is order 2
    assert list(z.free_area[1][MIGRATE_MOVABLE].pfns()) == [6]
    z.free_pages_bulk([pages[5]])  # 4+5 -> 4..7 -> merges all the way up
    assert info(z) == [0] * 9 + [1, 0]
    z.check_invariants()


def test_compound_allocation_marks_head_and_tails() -> None:
    """A __GFP_COMP order-9 THP has PG_head + order on the head, PG_tail and refcount 0 on tails."""
    z = make_zone(2)
    pfn = z.alloc_pages(9, GFP_TRANSHUGE, P.OWNER_THP)
    f = z.frames
    assert pfn == 0
    assert f.flags[0] == P.PG_head | P.PG_anon | P.PG_lru
    assert set(f.flags[1:512]) == {P.PG_tail}
    assert f.order[0] == 9 and f.refcount[0] == 1 and set(f.refcount[1:512]) == {0}
    assert f.mapping[0:512] == bytes([P.OWNER_THP]) * 512
    z.check_invariants()
    z.free_pages_block(0, 9)
    assert info(z) == [0] * 10 + [1]
    z.check_invariants()


def test_split_page_makes_independent_pages() -> None:
    """split_page turns a non-compound block into order-0 pages that are freed one by one."""
    z = make_zone(1)
    pfn = z.alloc_pages(2, UNMOV, P.OWNER_KERNEL)
    z.split_page(pfn, 2)
    assert list(z.frames.refcount[pfn : pfn + 4]) == [1, 1, 1, 1]
    assert z.free_pages_bulk([pfn + 2, pfn, pfn + 3, pfn + 1]) == 4
    assert info(z) == [0] * 9 + [1, 0]
    z.check_invariants()
    thp = z.alloc_pages(9, GFP_TRANSHUGE, P.OWNER_THP)
    with pytest.raises(BuddyError, match="non-compound"):
        z.split_page(thp, 9)


# ---------------------------------------------------------------------------------------------
# Fallback stealing
# ---------------------------------------------------------------------------------------------
def test_can_steal_fallback_rule() -> None:
    """Whole-block stealing: always for unmovable/reclaimable, for movable from order 4 up."""
    assert can_steal_fallback(0, MIGRATE_UNMOVABLE)
    assert can_steal_fallback(0, MIGRATE_RECLAIMABLE)
    assert not can_steal_fallback(3, MIGRATE_MOVABLE)
    assert can_steal_fallback(4, MIGRATE_MOVABLE)
    assert can_steal_fallback(9, MIGRATE_MOVABLE)


def test_unmovable_steals_a_max_order_block_and_converts_its_pageblocks() -> None:
    """An unmovable request in an all-movable zone takes a max-order block and its pageblocks."""
    z = make_zone(4)
    pfn = z.alloc_pages(0, UNMOV, P.OWNER_KERNEL)
    assert pfn == 0
    assert list(z.frames.pageblock_mt) == [MIGRATE_UNMOVABLE] * 2 + [MIGRATE_MOVABLE] * 2
    s = z.statistics()
    assert (s.fallback_steals, s.pageblock_claims) == (1, 2)
    assert z.free_area[9][MIGRATE_UNMOVABLE].first == 512  # the split stays unmovable
    z.check_invariants()


@pytest.mark.parametrize(
    ("movable_allocated", "claimed", "first_pfn"),
    [
        (300, False, 300),  # 212 free + 0 alike < 256: pages move, the block stays movable
        (100, True, 100),  # 412 free >= 256: the pageblock becomes unmovable
    ],
)
def test_unmovable_steal_claims_only_a_mostly_free_block(
    movable_allocated: int, claimed: bool, first_pfn: int
) -> None:
    """steal_suitable_fallback moves the block's free pages and claims it iff half is free/alike."""
    z = make_zone(1)
    alloc_n(z, movable_allocated)
    pfn = z.alloc_pages(0, UNMOV, P.OWNER_KERNEL)
    assert pfn == first_pfn
    expected_mt = MIGRATE_UNMOVABLE if claimed else MIGRATE_MOVABLE
    assert z.frames.get_pageblock_migratetype(0) == expected_mt
    assert z.statistics().fallback_steals == 1
    assert z.statistics().pageblock_claims == int(claimed)
    # Either way, the remaining free pages of that pageblock now sit on unmovable lists.
    assert all(z.free_area[o][MIGRATE_MOVABLE].nr == 0 for o in range(MAX_ORDER))
    z.check_invariants()


def _unmovable_pageblock(frees: list[range]) -> Zone:
    """One unmovable pageblock, fully allocated, then the given ranges freed."""
    z = make_zone(1)
    z.frames.set_pageblock_migratetype(0, MIGRATE_UNMOVABLE)
    assert z.move_freepages_block(0, MIGRATE_UNMOVABLE) == (512, 0)
    alloc_n(z, 512, UNMOV, P.OWNER_KERNEL)
    for r in frees:
        z.free_pages_bulk(list(r))
    return z


def test_small_movable_fallback_takes_the_smallest_block_without_claiming() -> None:
    """A movable order-0 request that may not claim takes the smallest unmovable block alone."""
    z = _unmovable_pageblock([range(0, 4), range(100, 101)])
    assert info(z)[:3] == [1, 0, 1]
    pfn = z.alloc_pages(0, MOV, P.OWNER_ANON)
    assert pfn == 100
    assert z.frames.get_pageblock_migratetype(0) == MIGRATE_UNMOVABLE
    assert z.free_area[2][MIGRATE_UNMOVABLE].first == 0  # the order-2 block was left alone
    assert (z.statistics().fallback_steals, z.statistics().pageblock_claims) == (1, 0)
    z.check_invariants()


def test_large_movable_fallback_claims_a_half_free_block() -> None:
    """A movable request finding a free order-8 (>= pageblock_order/2) block claims its block."""
    z = _unmovable_pageblock([range(0, 256)])
    pfn = z.alloc_pages(0, MOV, P.OWNER_ANON)
    assert pfn == 0
    assert z.frames.get_pageblock_migratetype(0) == MIGRATE_MOVABLE
    assert z.statistics().pageblock_claims == 1
    z.check_invariants()


def _fragmented_movable(fallback: str, frees: list[range]) -> Zone:
    """Two MOVABLE pageblocks, fully allocated to anon pages, then the given ranges freed."""
    z = make_zone(2, fallback=fallback)
    alloc_n(z, 1024)
    for r in frees:
        z.free_pages_bulk(list(r))
    return z


@pytest.mark.parametrize(
    ("fallback", "first_two", "claims", "movable_left"),
    [
        # v3.6: each small unmovable request breaks the largest movable block left, in place:
        # one page in each pageblock, both stay MOVABLE, the split pieces stay movable.
        ("v3.6", [512, 0], 0, 14),
        # v4.13: the first steal moves its pageblock's free pages to the unmovable lists, so
        # the second request is served from the same pageblock.
        ("v4.13", [512, 513], 0, 8),
    ],
)
def test_small_unmovable_fallbacks_scatter_on_36_and_group_on_413(
    fallback: str, first_two: list[int], claims: int, movable_left: int
) -> None:
    """Two order-0 GFP_KERNEL requests in a guest whose free memory is one order-3 block per
    movable pageblock: 3.6 (the series' kernels) puts them in two pageblocks, 4.13 in one."""
    z = _fragmented_movable(fallback, [range(0, 8), range(512, 520)])
    got = [z.alloc_pages(0, UNMOV, P.OWNER_KERNEL) for _ in range(2)]
    assert got == first_two
    assert list(z.frames.pageblock_mt) == [MIGRATE_MOVABLE] * 2
    s = z.statistics()
    assert (s.pageblock_claims, s.fallback_steals) == (claims, 2 if fallback == "v3.6" else 1)
    free_movable = sum(z.free_area[o][MIGRATE_MOVABLE].nr << o for o in range(MAX_ORDER))
    assert free_movable == movable_left
    z.check_invariants()


@pytest.mark.parametrize(
    ("frees", "claimed", "next_pfn"),
    [
        ([range(0, 300)], True, 1),  # order >= 4 and 300 free >= 256: moved and claimed
        ([range(0, 16)], False, 1),  # order 4 but 16 free: moved to unmovable, not claimed
    ],
)
def test_36_large_fallback_moves_the_pageblock_and_claims_when_half_free(
    frees: list[range], claimed: bool, next_pfn: int
) -> None:
    """On 3.6 a fallback from a block of order >= pageblock_order/2 moves its pageblock's free
    pages to the requested type (claiming the pageblock if at least half was free), so the
    next unmovable request is served from the same pageblock."""
    z = _fragmented_movable("v3.6", frees)
    assert z.alloc_pages(0, UNMOV, P.OWNER_KERNEL) == 0
    mt = MIGRATE_UNMOVABLE if claimed else MIGRATE_MOVABLE
    assert z.frames.get_pageblock_migratetype(0) == mt
    assert z.statistics().pageblock_claims == int(claimed)
    assert all(z.free_area[o][MIGRATE_MOVABLE].nr == 0 for o in range(MAX_ORDER))
    assert z.alloc_pages(0, UNMOV, P.OWNER_KERNEL) == next_pfn
    z.check_invariants()


def test_zone_rejects_an_unknown_fallback_model() -> None:
    """Zone(fallback=...) names the models it knows."""
    with pytest.raises(ValueError, match=r"v4\.13, v3\.6"):
        Zone(PageFrames(512), fallback="v2.4")


def test_unmovable_prefers_reclaimable_over_movable() -> None:
    """The fallbacks table sends UNMOVABLE to RECLAIMABLE before MOVABLE."""
    z = make_zone(4)
    for pfn in (1024, 1536):
        z.frames.set_pageblock_migratetype(pfn, MIGRATE_RECLAIMABLE)
    z.move_freepages_block(1024, MIGRATE_RECLAIMABLE)
    assert z.free_area[10][MIGRATE_RECLAIMABLE].first == 1024
    assert z.alloc_pages(0, UNMOV, P.OWNER_KERNEL) == 1024
    z.check_invariants()


def test_allocation_fails_when_nothing_is_free() -> None:
    """With every page allocated, any request fails and is counted."""
    z = make_zone(1)
    drain_to(z, 0)
    fails = z.statistics().alloc_fail
    assert z.alloc_pages(0, MEMALLOC, P.OWNER_KERNEL) == -1
    out: list[int] = []
    assert z.alloc_pages_bulk(5, 0, MEMALLOC, P.OWNER_KERNEL, out) == 0 and out == []
    assert z.statistics().alloc_fail == fails + 2
    z.check_invariants()


# ---------------------------------------------------------------------------------------------
# Watermarks
# ---------------------------------------------------------------------------------------------
def wm_zone() -> Zone:
    """A 2048-page zone with min/low/high = 100/200/300."""
    return make_zone(4, (100, 200, 300))


def test_noretry_fails_below_low() -> None:
    """A __GFP_NORETRY allocation may not take the zone below the low watermark."""
    z = wm_zone()
    drain_to(z, 201)
    assert z.alloc_pages(0, NORETRY, P.OWNER_ANON) >= 0
    assert z.free_pages == 200
    assert z.alloc_pages(0, NORETRY, P.OWNER_ANON) == -1
    assert z.free_pages == 200


def test_normal_allocation_goes_down_to_min_then_fails() -> None:
    """Without NORETRY the modelled slow path reaches the min watermark and no further."""
    z = wm_zone()
    drain_to(z, 205)
    slow_before = z.statistics().alloc_slowpath
    got = alloc_n(z, 4)  # above low: fast path
    assert z.statistics().alloc_slowpath == slow_before  # above low: all fast path
    assert len(got) == 4 and z.free_pages == 201
    out: array[int] = array("I")
    assert z.alloc_pages_bulk(1000, 0, MOV, P.OWNER_ANON, out) == 101
    assert z.free_pages == 100
    assert z.alloc_pages(0, MOV, P.OWNER_ANON) == -1
    assert z.statistics().alloc_slowpath == slow_before + 100  # all but the first were slow


@pytest.mark.parametrize(
    ("gfp", "floor"),
    [
        (UNMOV, 100),  # min
        (int(GFP_KERNEL | GFP.HIGH), 50),  # ALLOC_HIGH: min - min/2
        (int(GFP_ATOMIC), 38),  # ALLOC_HIGH + ALLOC_HARDER: 50 - 50/4
        (int(GFP_ATOMIC | GFP.NOMEMALLOC), 50),  # NOMEMALLOC: no ALLOC_HARDER
        (int(GFP_KERNEL | GFP.MEMALLOC | GFP.NOMEMALLOC), 100),  # NOMEMALLOC wins
        (int(GFP_KERNEL | GFP.MEMALLOC), 0),  # no watermarks at all
        (int(GFP_KERNEL | GFP.MEMALLOC | GFP.NORETRY), 0),  # MEMALLOC beats NORETRY
        (int(GFP_KERNEL | GFP.HIGH | GFP.NORETRY), 200),  # NORETRY: low, no slow path
    ],
)
def test_watermark_floor_per_gfp(gfp: int, floor: int) -> None:
    """Each GFP mask can allocate order-0 pages down to its floor and no further."""
    z = wm_zone()
    drain_to(z, 300)
    out: array[int] = array("I")
    assert z.alloc_pages_bulk(10_000, 0, gfp, P.OWNER_KERNEL, out) == 300 - floor
    assert z.free_pages == floor
    z.check_invariants()


def test_high_order_watermark_needs_a_suitable_block() -> None:
    """zone_watermark_ok for order > 0 needs a free block of that order, not just enough pages."""
    z = make_zone(2)
    held = alloc_n(z, 1024)
    z.free_pages_bulk(held[::2])  # 512 free order-0 pages, no pairs
    assert z.zone_watermark_ok(0, 100)
    assert not z.zone_watermark_ok(1, 100)
    assert not z.zone_watermark_ok(0, 512)
    assert z.zone_watermark_ok(0, 511)
    assert z.alloc_pages(1, MEMALLOC, P.OWNER_KERNEL) == -1
    z.free_pages_bulk([held[1]])
    assert z.zone_watermark_ok(1, 100)


def test_order_watermark_arithmetic() -> None:
    """free - (2^order - 1) must exceed the mark, with ALLOC_HIGH halving it."""
    z = make_zone(1)
    assert z.zone_watermark_ok(9, 0)
    assert not z.zone_watermark_ok(9, 1)  # 512 - 511 = 1, not > 1
    assert z.zone_watermark_ok(4, 496)  # 512 - 15 = 497 > 496
    assert not z.zone_watermark_ok(4, 497)
    assert not z.zone_watermark_ok(4, 496, free_pages=511)
    assert z.zone_watermark_ok(0, 1000, ALLOC_HIGH)  # 512 > 1000 - 500
    assert not z.zone_watermark_ok(0, 1030, ALLOC_HIGH)  # 512 <= 1030 - 515
    assert z.zone_watermark_ok(0, 10**6, ALLOC_NO_WATERMARKS)


def test_noretry_bulk_stops_exactly_at_low() -> None:
    """A NORETRY bulk request stops at the low watermark and counts one failure."""
    z = wm_zone()
    out: array[int] = array("I")
    got = z.alloc_pages_bulk(5000, 0, NORETRY, P.OWNER_ANON, out)
    assert got == 2048 - 200 and z.free_pages == 200
    assert z.statistics().alloc_fail == 1
    assert z.statistics().alloc_slowpath == 0


# ---------------------------------------------------------------------------------------------
# Freeing errors
# ---------------------------------------------------------------------------------------------
def _bad(z: Zone, pfn: int, order: int, match: str) -> None:
    """Freeing (pfn, order) raises naming the problem and changes nothing."""
    before = state(z)
    with pytest.raises(BuddyError, match=match) as exc:
        z.free_pages_block(pfn, order)
    assert exc.value.pfn == pfn
    assert state(z) == before
    if order == 0:
        with pytest.raises(BuddyError, match=match):
            z.free_pages_bulk([pfn])
        assert state(z) == before


def test_double_free_is_refused() -> None:
    """Freeing a page twice raises BuddyError naming the pfn."""
    z = make_zone(1)
    pfn = z.alloc_pages(0, MOV, P.OWNER_ANON)
    z.free_pages_block(pfn)
    _bad(z, pfn, 0, "already free")
    _bad(z, 7, 0, "already free")


def test_free_requires_the_last_reference() -> None:
    """A refcount other than 1 (someone else holds the page) refuses the free."""
    z = make_zone(1)
    pfn = z.alloc_pages(0, MOV, P.OWNER_ANON)
    z.frames.refcount[pfn] = 2
    _bad(z, pfn, 0, "refcount is 2")
    block = z.alloc_pages(2, UNMOV, P.OWNER_KERNEL)
    _bad(z, block + 1, 0, "refcount is 0")


def test_free_with_wrong_order_or_bad_flags_is_refused() -> None:
    """Wrong order, PG_locked/PG_isolated/PG_balloon still set, or a bad pfn are refused."""
    z = make_zone(1)
    block = z.alloc_pages(2, UNMOV, P.OWNER_KERNEL)
    _bad(z, block, 1, "allocated as order 2")
    pfn = z.alloc_pages(0, MOV, P.OWNER_ANON)
    for flag, name in [(P.PG_locked, "locked"), (P.PG_isolated, "isolated"),
                       (P.PG_balloon, "balloon")]:
        z.frames.flags[pfn] |= flag
        _bad(z, pfn, 0, f"bad page state: flags {name}")
        z.frames.flags[pfn] &= ~flag
    _bad(z, -1, 0, "outside guest RAM")
    _bad(z, 512, 0, "outside guest RAM")
    with pytest.raises(ValueError, match="order 11"):
        z.free_pages_block(pfn, 11)
    z.free_pages_block(pfn)
    z.free_pages_block(block, 2)
    z.check_invariants()


def test_bulk_free_stops_at_the_bad_page() -> None:
    """A bulk free frees the pages before a bad one, reports how many, and leaves the rest."""
    z = make_zone(1)
    a, b, c = alloc_n(z, 3)
    d = z.alloc_pages(0, MOV, P.OWNER_ANON)
    z.free_pages_block(c)
    with pytest.raises(BuddyError, match="already free") as exc:
        z.free_pages_bulk([a, b, c, d])
    assert exc.value.done == 2 and exc.value.pfn == c
    assert z.frames.refcount[d] == 1 and z.frames.mapping[a] == P.OWNER_FREE
    z.check_invariants()


@pytest.mark.parametrize("n", [1, 3, 256, 700])
def test_bulk_alloc_into_an_array_equals_into_a_list(n: int) -> None:
    """Pages handed out from a split block are the same PFNs, in the same order, whether the
    caller collects them in a PFN array (written as one block of bytes) or a list."""
    a, b = make_zone(4), make_zone(4)
    alloc_n(a, 5)  # an order-0 page on the free list first, then split blocks
    alloc_n(b, 5)
    out_array: array[int] = array("I")
    out_list: list[int] = []
    assert a.alloc_pages_bulk(n, 0, MOV, P.OWNER_ANON, out_array) == n
    assert b.alloc_pages_bulk(n, 0, MOV, P.OWNER_ANON, out_list) == n
    assert out_array.tolist() == out_list
    assert state(a) == state(b)


def test_bulk_free_counts_a_leading_whole_block_before_the_bad_page() -> None:
    """A batch starting with a whole aligned block (freed at once) and then a bad page reports
    the block's pages as done and leaves the bad page and the rest alone."""
    z = make_zone(1)
    pages = alloc_n(z, 8)
    assert pages.tolist() == list(range(8))
    z.free_pages_block(5)
    with pytest.raises(BuddyError, match="already free") as exc:
        z.free_pages_bulk(array("I", [3, 2, 1, 0, 5, 6]))
    assert exc.value.done == 4 and exc.value.pfn == 5
    assert z.frames.refcount[6] == 1 and z.frames.mapping[0] == P.OWNER_FREE
    z.check_invariants()


# ---------------------------------------------------------------------------------------------
# Helpers for compaction
# ---------------------------------------------------------------------------------------------
def test_free_block_queries() -> None:
    """is_free_buddy_head/page_order/find_free_block_at_least describe the free lists."""
    z = make_zone(4)
    assert z.is_free_buddy_head(0) and z.page_order(0) == 10
    assert not z.is_free_buddy_head(1)
    assert not z.is_free_buddy_head(-1) and not z.is_free_buddy_head(2048)
    assert z.find_free_block_at_least(10)
    assert not z.find_free_block_at_least(10, MIGRATE_UNMOVABLE)
    held = alloc_n(z, 2048)
    z.free_pages_bulk(held[::2])
    assert z.find_free_block_at_least(0) and not z.find_free_block_at_least(1)


def test_isolate_free_block_takes_a_block_and_respects_min() -> None:
    """isolate_free_block hands a block to compaction unless it would breach min + 2^order."""
    z = wm_zone()
    z.frames.set_pageblock_migratetype(0, MIGRATE_UNMOVABLE)
    assert z.isolate_free_block(0) == 10
    f = z.frames
    assert f.mapping[0:1024] == bytes([P.OWNER_COMPACT_FREE]) * 1024
    assert f.refcount[0] == 1 and f.order[0] == 10 and not f.flags[0]
    assert f.get_pageblock_migratetype(0) == MIGRATE_MOVABLE  # >= half a pageblock
    assert z.free_pages == 1024 and z.statistics().isolated_free_pages == 1024
    z.check_invariants()
    assert z.isolate_free_block(1024) == -1  # 1024 free is not > 100 + 1024
    assert z.is_free_buddy_head(1024)
    with pytest.raises(BuddyError, match="not a free block head"):
        z.isolate_free_block(1)
    z.free_pages_block(0, 10)
    assert info(z) == [0] * 10 + [2]
    z.check_invariants()


def test_split_free_page_yields_order0_pages() -> None:
    """split_free_page isolates a free block as refcounted order-0 pages that free back whole."""
    z = make_zone(4)
    assert z.split_free_page(0) == 1024
    f = z.frames
    assert set(f.refcount[0:1024]) == {1} and f.order[0] == 0
    assert z.free_pages == 1024
    assert z.split_free_page(1024) == 0  # the last 1024 free pages: not > min (0) + 1024
    z.check_invariants()
    with pytest.raises(BuddyError, match="not a free block head"):
        z.split_free_page(0, P.OWNER_KERNEL)
    assert z.free_pages_bulk(range(1023, -1, -1)) == 1024
    assert info(z) == [0] * 10 + [2]
    z.check_invariants()


def test_split_free_page_refused_by_watermark() -> None:
    """split_free_page returns 0 and changes nothing when the watermark check refuses."""
    z = make_zone(2, (600, 700, 800))
    before = state(z)
    assert z.split_free_page(0) == 0
    assert state(z) == before


def test_check_invariants_catches_corruption() -> None:
    """check_invariants notices stray flags, wrong counters and broken conservation."""
    z = make_zone(2)
    z.frames.flags[5] = P.PG_lru
    with pytest.raises(BuddyError, match="flagged tail pages"):
        z.check_invariants()
    z.frames.flags[5] = 0
    z.nr_free[3] += 1
    with pytest.raises(BuddyError, match=r"nr_free\[3\]"):
        z.check_invariants()
    z.nr_free[3] -= 1
    z.nr_allocated += 1
    with pytest.raises(BuddyError, match="managed"):
        z.check_invariants()
    z.nr_allocated -= 1
    z.frames.flags[600] = P.PG_buddy
    with pytest.raises(BuddyError):
        z.check_invariants()


def test_bad_requests_are_refused() -> None:
    """Out-of-range orders, the free owner code and contradictory GFP masks are ValueErrors."""
    z = make_zone(1)
    with pytest.raises(ValueError, match="order 11"):
        z.alloc_pages(11, MOV, P.OWNER_ANON)
    with pytest.raises(ValueError, match="owner code 0"):
        z.alloc_pages(0, MOV, P.OWNER_FREE)
    with pytest.raises(ValueError, match="both"):
        z.alloc_pages_bulk(1, 0, int(GFP.MOVABLE | GFP.RECLAIMABLE), P.OWNER_ANON, [])
    assert z.alloc_pages_bulk(0, 0, MOV, P.OWNER_ANON, []) == 0


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
GFPS = [MOV, UNMOV, RECL, NORETRY, int(GFP_TRANSHUGE), int(GFP_ATOMIC), MEMALLOC]
OWNER_FOR = {MOV: P.OWNER_ANON, NORETRY: P.OWNER_ANON, int(GFP_TRANSHUGE): P.OWNER_THP}

op_strategy = st.one_of(
    st.tuples(
        st.just("alloc"),
        st.integers(1, 300),
        st.sampled_from([0, 0, 0, 1, 2, 3, 4, 9, 10]),
        st.sampled_from(GFPS),
    ),
    st.tuples(
        st.just("free"),
        st.integers(0, 2**32),
        st.sampled_from(["asc", "desc", "shuffle", "fifo"]),
        st.floats(0.0, 1.0),
    ),
)


def _order_frees(held: list[tuple[int, int]], seed: int, how: str, share: float
                 ) -> list[tuple[int, int]]:
    """Pick a deterministic subset of held blocks in a given order."""
    import random

    rng = random.Random(seed)
    chosen = [b for b in held if rng.random() < share]
    if how == "asc":
        chosen.sort()
    elif how == "desc":
        chosen.sort(reverse=True)
    elif how == "shuffle":
        rng.shuffle(chosen)
    return chosen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pageblocks=st.integers(4, 16), ops=st.lists(op_strategy, max_size=25),
       fallback=st.sampled_from(["v4.13", "v3.6"]))
def test_bulk_calls_equal_repeated_single_calls(
    pageblocks: int, ops: list[tuple[Any, ...]], fallback: str
) -> None:
    """alloc_pages_bulk/free_pages_bulk leave exactly the state of repeated single calls
    (with either fallback model)."""
    a = make_zone(pageblocks, (8, 16, 24), fallback)
    b = make_zone(pageblocks, (8, 16, 24), fallback)
    held: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "alloc":
            _, n, order, gfp = op
            owner = OWNER_FOR.get(gfp, P.OWNER_KERNEL)
            out: list[int] = []
            got = a.alloc_pages_bulk(n, order, gfp, owner, out)
            singles = []
            for _ in range(n):
                pfn = b.alloc_pages(order, gfp, owner)
                if pfn < 0:
                    break
                singles.append(pfn)
            assert out == singles and got == len(out)
            held.extend((pfn, order) for pfn in out)
        else:
            _, seed, how, share = op
            chosen = _order_frees(held, seed, how, share)
            for order in sorted({o for _, o in chosen}):
                pfns = [p for p, o in chosen if o == order]
                assert a.free_pages_bulk(array("I", pfns), order) == len(pfns)
                for pfn in pfns:
                    b.free_pages_block(pfn, order)
            gone = set(chosen)
            held = [blk for blk in held if blk not in gone]
        assert state(a) == state(b)
    a.check_invariants()


class BuddyMachine(RuleBasedStateMachine):
    """Random alloc/free/isolate/retype sequences on a small zone keep every buddy invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.zone = make_zone(4)
        self.held: list[tuple[int, int]] = []  # (head pfn, order) of allocated blocks

    @initialize(pageblocks=st.integers(4, 16), marks=st.sampled_from([(0, 0, 0), (20, 40, 60),
                                                                      None]),
                fallback=st.sampled_from(["v4.13", "v3.6"]))
    def build(self, pageblocks: int, marks: tuple[int, int, int] | None, fallback: str) -> None:
        """Start from a fresh zone of 4-16 pageblocks (either fallback model)."""
        self.zone = make_zone(pageblocks, marks, fallback)
        self.held = []

    @rule(n=st.integers(1, 600), order=st.sampled_from([0, 0, 0, 1, 3, 5, 9, 10]),
          gfp=st.sampled_from(GFPS), bulk=st.booleans())
    def alloc(self, n: int, order: int, gfp: int, bulk: bool) -> None:
        """Allocate blocks; NORETRY never ends below low, normal requests never below min."""
        z = self.zone
        owner = OWNER_FOR.get(gfp, P.OWNER_KERNEL)
        if bulk:
            out: list[int] = []
            got = z.alloc_pages_bulk(n, order, gfp, owner, out)
        else:
            pfn = z.alloc_pages(order, gfp, owner)
            out = [pfn] if pfn >= 0 else []
            got = len(out)
        self.held.extend((pfn, order) for pfn in out)
        if got and gfp == NORETRY:
            assert z.free_pages >= z.watermark[WMARK_LOW]
        if got and gfp in (MOV, UNMOV, RECL):
            assert z.free_pages >= z.watermark[WMARK_MIN]

    @precondition(lambda self: bool(self.held))
    @rule(seed=st.integers(0, 2**32), how=st.sampled_from(["asc", "desc", "shuffle", "fifo"]),
          share=st.floats(0.0, 1.0))
    def free(self, seed: int, how: str, share: float) -> None:
        """Free a subset of the held blocks, in bulk per order."""
        chosen = _order_frees(self.held, seed, how, share)
        for order in sorted({o for _, o in chosen}):
            pfns = [p for p, o in chosen if o == order]
            assert self.zone.free_pages_bulk(pfns, order) == len(pfns)
        gone = set(chosen)
        self.held = [b for b in self.held if b not in gone]

    @rule(index=st.integers(0, 10_000), split=st.booleans())
    def isolate(self, index: int, split: bool) -> None:
        """Take a free block as compaction's free scanner would."""
        z = self.zone
        heads = [p for p in range(z.frames.nr_pages) if z.frames.flags[p] & P.PG_buddy]
        if not heads:
            return
        pfn = heads[index % len(heads)]
        if split:
            n = z.split_free_page(pfn)
            self.held.extend((p, 0) for p in range(pfn, pfn + n))
        else:
            order = z.isolate_free_block(pfn)
            if order >= 0:
                self.held.append((pfn, order))

    @rule(block=st.integers(0, 15), mt=st.sampled_from(
        [MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE]))
    def retype(self, block: int, mt: int) -> None:
        """Change a pageblock's type and move its free pages, as a steal would."""
        z = self.zone
        pfn = (block % z.frames.nr_pageblocks) * 512
        z.frames.set_pageblock_migratetype(pfn, mt)
        z.move_freepages_block(pfn, mt)

    @invariant()
    def conserved(self) -> None:
        """Free + allocated == managed, and the held blocks account for every allocated page."""
        z = self.zone
        assert z.free_pages + z.nr_allocated == z.managed_pages
        assert sum(1 << o for _, o in self.held) == z.nr_allocated

    @invariant()
    def buddy_invariants(self) -> None:
        """Aligned, non-overlapping, fully merged, list-consistent free blocks."""
        self.zone.check_invariants()


BuddyMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_buddy_machine = BuddyMachine.TestCase


@pytest.mark.parametrize("descending", [False, True])
def test_bulk_free_run_with_a_bad_page_inside(descending: bool) -> None:
    """A PFN run holding a bad page is freed page by page up to the bad one."""
    z = make_zone(1)
    pages = list(alloc_n(z, 4))
    z.frames.flags[2] |= P.PG_locked
    order = pages[::-1] if descending else pages
    with pytest.raises(BuddyError, match="locked") as exc:
        z.free_pages_bulk(order)
    assert exc.value.pfn == 2 and exc.value.done == (1 if descending else 2)
    z.frames.flags[2] &= ~P.PG_locked
    z.check_invariants()
    rest = [p for p in pages if z.frames.refcount[p] == 1]
    assert z.free_pages_bulk(rest) == len(rest)
    assert info(z) == [0] * 9 + [1, 0]


def test_bulk_free_of_whole_pageblocks_in_both_directions() -> None:
    """Freeing two pageblocks' pages in ascending then descending order merges to order 10."""
    z = make_zone(2)
    pages = alloc_n(z, 1024)
    assert z.free_pages_bulk(pages[:512]) == 512
    assert z.free_pages_bulk(pages[512:][::-1]) == 512
    assert info(z) == [0] * 10 + [1]
    z.check_invariants()
