"""Tests for the zone's isolation helpers (split_page, isolate_free_block, split_free_page)."""

from __future__ import annotations

import pytest

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    GFP_TRANSHUGE,
    MIGRATE_MOVABLE,
    MIGRATE_UNMOVABLE,
)
from actors.guest.mm.page_alloc import BuddyError

from .buddy_helpers import (
    UNMOV,
    alloc_n,
    info,
    make_zone,
    state,
    wm_zone,
)


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
