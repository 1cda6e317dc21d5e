"""Tests for __rmqueue_fallback: the v4.13 and v3.6 fallback models, stealing and claiming."""

from __future__ import annotations

import pytest

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    MAX_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
)
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.page_alloc_fallback import can_steal_fallback
from actors.guest.mm.pages import PageFrames

from .buddy_helpers import (
    MEMALLOC,
    MOV,
    UNMOV,
    alloc_n,
    drain_to,
    info,
    make_zone,
)


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
