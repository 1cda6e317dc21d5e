"""Tests for the GFP flags, migratetypes and buddy constants."""

from __future__ import annotations

import pytest

from actors.guest.mm import gfp as G


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (G.GFP_KERNEL, G.MIGRATE_UNMOVABLE),
        (G.GFP_ATOMIC, G.MIGRATE_UNMOVABLE),
        (G.GFP_HIGHUSER, G.MIGRATE_UNMOVABLE),
        (G.GFP_HIGHUSER_MOVABLE, G.MIGRATE_MOVABLE),
        (G.GFP_TRANSHUGE, G.MIGRATE_MOVABLE),
        (G.GFP_KERNEL | G.GFP.RECLAIMABLE, G.MIGRATE_RECLAIMABLE),
        (int(G.GFP_HIGHUSER_MOVABLE), G.MIGRATE_MOVABLE),
    ],
)
def test_gfp_migratetype_table(mask: int, expected: int) -> None:
    """gfp_migratetype maps __GFP_MOVABLE/__GFP_RECLAIMABLE to their types, else UNMOVABLE."""
    assert G.gfp_migratetype(mask) == expected


def test_gfp_migratetype_rejects_movable_and_reclaimable() -> None:
    """Asking for both movable and reclaimable is a bug that names the mask."""
    with pytest.raises(ValueError, match="both __GFP_MOVABLE and __GFP_RECLAIMABLE"):
        G.gfp_migratetype(G.GFP.MOVABLE | G.GFP.RECLAIMABLE)


def test_transhuge_is_movable_compound_fail_fast() -> None:
    """GFP_TRANSHUGE is a movable compound request that fails fast and avoids reserves."""
    for flag in (G.GFP.MOVABLE, G.GFP.COMP, G.GFP.NORETRY, G.GFP.NOMEMALLOC, G.GFP.NOWARN):
        assert G.GFP_TRANSHUGE & flag
    assert not G.GFP_TRANSHUGE & G.GFP.MEMALLOC


def test_plain_int_twins_match_flags() -> None:
    """The hot-path int constants equal their IntFlag members."""
    assert G.GFP_MOVABLE_FLAG == G.GFP.MOVABLE
    assert G.GFP_NORETRY_FLAG == G.GFP.NORETRY
    assert G.GFP_COMP_FLAG == G.GFP.COMP
    assert G.GFP_MOVABLE_MASK == G.GFP.MOVABLE | G.GFP.RECLAIMABLE
    assert type(G.GFP_NORETRY_FLAG) is int


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (G.GFP_KERNEL, G.ALLOC_WMARK_MIN),
        (G.GFP_KERNEL | G.GFP.HIGH, G.ALLOC_WMARK_MIN | G.ALLOC_HIGH),
        (G.GFP_ATOMIC, G.ALLOC_WMARK_MIN | G.ALLOC_HIGH | G.ALLOC_HARDER),
        (G.GFP_ATOMIC | G.GFP.NOMEMALLOC, G.ALLOC_WMARK_MIN | G.ALLOC_HIGH),
        (G.GFP_KERNEL | G.GFP.MEMALLOC, G.ALLOC_WMARK_MIN | G.ALLOC_NO_WATERMARKS),
        (G.GFP_KERNEL | G.GFP.MEMALLOC | G.GFP.NOMEMALLOC, G.ALLOC_WMARK_MIN),
    ],
)
def test_gfp_to_alloc_flags_table(mask: int, expected: int) -> None:
    """gfp_to_alloc_flags derives HIGH/HARDER/NO_WATERMARKS as the kernel's slow path does."""
    assert G.gfp_to_alloc_flags(mask) == expected


def test_buddy_geometry_constants() -> None:
    """Orders run 0..10, pageblocks are order 9 = 512 pages, and every migratetype has a name."""
    assert G.MAX_ORDER == 11
    assert G.pageblock_order == 9
    assert G.pageblock_nr_pages == 512
    assert G.MIGRATE_PCPTYPES == 3
    assert len(G.MIGRATETYPE_NAMES) == G.MIGRATE_TYPES
    assert (G.MIGRATE_UNMOVABLE, G.MIGRATE_MOVABLE, G.MIGRATE_RECLAIMABLE) == (0, 1, 2)
    assert (G.MIGRATE_HIGHATOMIC, G.MIGRATE_ISOLATE) == (3, 4)


GFP_NAMES: list[tuple[int, str]] = [
    (0, "0"),
    (int(G.GFP_TRANSHUGE), "GFP_TRANSHUGE"),
    (int(G.GFP_HIGHUSER_MOVABLE | G.GFP.NOWARN), "GFP_HIGHUSER_MOVABLE|__GFP_NOWARN"),
    # the 2012 driver's balloon page: GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOMEMALLOC | ...
    (int(G.GFP_HIGHUSER | G.GFP.NORETRY | G.GFP.NOMEMALLOC | G.GFP.NOWARN),
     "GFP_HIGHUSER|__GFP_NOWARN|__GFP_NORETRY|__GFP_NOMEMALLOC"),
    (int(G.GFP_ATOMIC), "GFP_ATOMIC"),
    (int(G.GFP.MOVABLE | G.GFP.COMP), "__GFP_MOVABLE|__GFP_COMP"),
    (int(G.GFP_KERNEL) | 1 << 30, "GFP_KERNEL|0x40000000"),
]


@pytest.mark.parametrize(("mask", "names"), GFP_NAMES, ids=[n for _, n in GFP_NAMES])
def test_gfp_names_print_as_the_kernel_does(mask: int, names: str) -> None:
    """Composite names first, widest first, then the __GFP_ flags, then unknown bits."""
    assert G.gfp_names(mask) == names
