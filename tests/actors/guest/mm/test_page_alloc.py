"""Tests for the zone core (mm/page_alloc.c): boot, watermarks, splitting, merging, freeing."""

from __future__ import annotations

from array import array

import pytest

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    ALLOC_HIGH,
    ALLOC_NO_WATERMARKS,
    GFP,
    GFP_ATOMIC,
    GFP_KERNEL,
    GFP_TRANSHUGE,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
)
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.page_alloc import BuddyError, default_min_free_kbytes
from actors.guest.mm.pages import PageFrames

from .buddy_helpers import (
    MEMALLOC,
    MOV,
    NORETRY,
    UNMOV,
    alloc_n,
    drain_to,
    info,
    make_zone,
    state,
    wm_zone,
)


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
