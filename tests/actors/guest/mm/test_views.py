"""Tests for the zone views (buddyinfo, pagetypeinfo, extfrag indices) and VmStat."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.guest.mm import pages as P
from actors.guest.mm import vmstat as views
from actors.guest.mm.gfp import GFP, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, MAX_ORDER, MIGRATETYPE_NAMES
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.pages import PageFrames

MEMALLOC = int(GFP_KERNEL | GFP.MEMALLOC)
MOV = int(GFP_HIGHUSER_MOVABLE)


def zone_with_free(pageblocks: int, free: list[int]) -> Zone:
    """A zone with every page allocated except the listed pfns (freed one by one)."""
    z = Zone(PageFrames(pageblocks * 512), watermarks=(0, 0, 0))
    out: array[int] = array("I")
    assert z.alloc_pages_bulk(z.managed_pages, 0, MEMALLOC, P.OWNER_KERNEL, out) == len(out)
    for pfn in free:
        z.free_pages_block(pfn)
    return z


def test_buddyinfo_of_a_fresh_zone() -> None:
    """A fresh 8 MiB zone shows two order-10 blocks and nothing else."""
    z = Zone(PageFrames(2048))
    assert views.buddyinfo(z) == [0] * 10 + [2]
    assert views.pageblock_counts(z)["Movable"] == 4


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from([0, 0, 1, 3, 9])), max_size=12))
def test_buddyinfo_and_pagetypeinfo_sum_to_free_pages(allocs: list[tuple[int, int]]) -> None:
    """sum(count << order) over buddyinfo is the free page count; pagetypeinfo sums to buddyinfo."""
    z = Zone(PageFrames(4096), watermarks=(0, 0, 0))
    held: list[tuple[int, int]] = []
    for n, order in allocs:
        out: list[int] = []
        gfp = MOV if n % 2 else MEMALLOC
        z.alloc_pages_bulk(n, order, gfp, P.OWNER_KERNEL, out)
        held.extend((p, order) for p in out)
        for p, o in held[::3]:
            z.free_pages_block(p, o)
        held = [b for i, b in enumerate(held) if i % 3]
    info = views.buddyinfo(z)
    assert len(info) == MAX_ORDER
    assert sum(c << o for o, c in enumerate(info)) == z.free_pages
    pti = views.pagetypeinfo(z)
    assert list(pti) == list(MIGRATETYPE_NAMES)
    assert [sum(pti[name][o] for name in pti) for o in range(MAX_ORDER)] == info
    assert sum(views.pageblock_counts(z).values()) == z.frames.nr_pageblocks


def test_fragmentation_index_nothing_free_is_zero() -> None:
    """With no free memory the index is 0 (failure from lack of memory)."""
    z = zone_with_free(1, [])
    assert views.fragmentation_index(z, 9) == 0
    assert views.unusable_free_index(z, 9) == 1000


def test_fragmentation_index_with_a_suitable_block_is_minus_1000() -> None:
    """A free block of at least the requested order gives -1000 (the request would succeed)."""
    z = Zone(PageFrames(1024), watermarks=(0, 0, 0))
    assert views.fragmentation_index(z, 9) == -1000
    assert views.fragmentation_index(z, 10) == -1000
    assert views.unusable_free_index(z, 9) == 0


def test_fragmentation_index_scattered_order0_pages_near_1000() -> None:
    """1024 scattered free pages: 1000 - (1000 + 1024*1000/512) / 1024 = 998."""
    z = zone_with_free(4, list(range(0, 2048, 2)))
    assert views.buddyinfo(z)[0] == 1024
    assert views.fragmentation_index(z, 9) == 998
    assert views.unusable_free_index(z, 9) == 1000
    assert views.unusable_free_index(z, 0) == 0


def test_fragmentation_index_hand_computed_mixed_case() -> None:
    """Three order-0 blocks and one order-2 block (7 pages, 4 blocks), checked by hand."""
    z = zone_with_free(1, [0, 2, 4, 8, 9, 10, 11])
    assert views.buddyinfo(z)[:3] == [3, 0, 1]
    info = views.fill_contig_page_info(z, 3)
    assert (info.free_pages, info.free_blocks_total, info.free_blocks_suitable) == (7, 4, 0)
    # 1000 - (1000 + 7000 // 8) // 4 = 1000 - 1875 // 4 = 1000 - 468
    assert views.fragmentation_index(z, 3) == 532
    assert views.fragmentation_index(z, 2) == -1000
    # order 2: one suitable block of 4 pages -> (7 - 4) * 1000 // 7
    assert views.unusable_free_index(z, 2) == 428
    assert views.free_blocks_at_least(z, 0) == 4
    assert views.free_blocks_at_least(z, 1) == 1
    assert views.free_blocks_at_least(z, 3) == 0


def test_views_reject_bad_orders() -> None:
    """Orders outside 0..10 are refused by the index functions."""
    z = Zone(PageFrames(512))
    for fn in (views.fragmentation_index, views.unusable_free_index, views.free_blocks_at_least):
        with pytest.raises(ValueError, match="order 11"):
            fn(z, 11)


def test_vmstat_counts_named_events_in_fixed_order() -> None:
    """VmStat adds to known counters and reports them all in VMSTAT_NAMES order."""
    vm = views.VmStat()
    vm.inc("pgalloc", 256)
    vm.inc("pgalloc")
    vm.inc("compact_balloon_migrated", 3)
    assert vm.get("pgalloc") == 257 and vm["compact_balloon_migrated"] == 3
    d = vm.as_dict()
    assert list(d) == list(views.VMSTAT_NAMES)
    assert d["balloon_inflate"] == 0
    assert "pgalloc=257" in repr(vm)
    for name in ("thp_fault_alloc", "thp_fault_fallback", "allocstall", "alloc_fail",
                 "balloon_inflate", "balloon_deflate", "balloon_migrate",
                 "compact_balloon_isolated", "compact_balloon_released",
                 "compact_balloon_returned", "pgmigrate_success", "pgmigrate_fail",
                 "compact_stall", "compact_success", "compact_fail"):
        assert name in d


def test_vmstat_rejects_unknown_names() -> None:
    """A misspelt counter is a KeyError naming it, for inc and get alike."""
    vm = views.VmStat()
    with pytest.raises(KeyError, match="pg_alloc"):
        vm.inc("pg_alloc")
    with pytest.raises(KeyError, match="nope"):
        vm.get("nope")
