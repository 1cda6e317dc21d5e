"""How a compaction run ends when it has nothing to migrate into (mm/compaction.c, 3.x).

compaction_suitable() skips a directed run below the order-0 watermark; migrate_pages()
returning -ENOMEM (no free target page) ends the run with COMPACT_PARTIAL after putting the
batch back; and when the free scanner has run down to the migrate scanner the skip hints are
reset, as they are when the scanners meet.  On the Guest-less rig of compaction_helpers.
"""

from __future__ import annotations

from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm.compaction import (
    COMPACT_PARTIAL,
    COMPACT_SKIPPED,
    COMPACT_SUCCESS,
    PAGEBLOCK,
)
from actors.guest.mm.vmstat import free_blocks_at_least

from .compaction_helpers import LruRig

MEMALLOC = int(G.GFP_HIGHUSER_MOVABLE | G.GFP.MEMALLOC)


async def _drain_to(rig: LruRig, free: int) -> None:
    """Map more anonymous pages (ignoring watermarks) until ``free`` pages are left."""
    rig.rmap.add(rig.anon, await rig.client.alloc(rig.zone.free_pages - free, 0, MEMALLOC,
                                                  P.OWNER_ANON))
    assert rig.zone.free_pages == free


def test_directed_compaction_below_the_watermark_is_skipped() -> None:
    """An order-9 request with fewer free pages than the low watermark plus two order-9 blocks
    is COMPACT_SKIPPED without scanning a page (compaction_suitable)."""
    rig = LruRig(8 * PAGEBLOCK, watermarks=(50, 100, 150))
    result: list[str] = []

    async def body(rig: LruRig) -> None:
        await rig.fill_and_fragment()
        await _drain_to(rig, 100 + 1024)  # free - 0 must exceed low + 2 << 9
        result.append(await rig.compactor.compact_zone(9, "test", "direct"))

    rig.run(body)
    assert result == [COMPACT_SKIPPED]
    assert rig.vmstat.get("compact_migrate_scanned") == 0
    assert rig.vmstat.get("compact_free_scanned") == 0
    assert rig.problems() == []


def test_enomem_ends_the_run_after_one_batch() -> None:
    """With free pages only at the min watermark (the free scanner may not take any), a
    compact_memory run isolates one batch of 32, finds no target, puts the batch back and ends
    COMPACT_PARTIAL -- instead of isolating and putting back every movable page of the zone."""
    rig = LruRig(8 * PAGEBLOCK, watermarks=(50, 100, 150))
    result: list[str] = []

    async def body(rig: LruRig) -> None:
        await rig.fill_and_fragment()
        await _drain_to(rig, 50)
        result.append(await rig.compactor.compact_zone(-1, "test", "compact_memory"))

    rig.run(body)
    assert result == [COMPACT_PARTIAL]
    vm = rig.vmstat
    assert vm.get("compact_isolated") == vm.get("pgmigrate_fail") == 32
    assert vm.get("pgmigrate_success") == 0
    assert rig.problems() == []  # every isolated page back on its LRU, mapped, refcount 1
    assert rig.frames.mapping.count(P.OWNER_COMPACT_FREE) == 0
    rig.zone.check_invariants()


def test_free_scanner_meeting_the_migrate_scanner_resets_skip_hints() -> None:
    """When every pageblock above the migrate scanner is marked skip, the free scanner runs
    down to it empty-handed and migration fails with -ENOMEM; the run ends COMPACT_PARTIAL and
    resets the skip hints (the scanners met), so the next order-9 request finds the free pages
    those stale hints hid and succeeds."""
    rig = LruRig(8 * PAGEBLOCK)
    results: list[str] = []

    async def body(rig: LruRig) -> None:
        await rig.fill_and_fragment()
        comp = rig.compactor
        comp.skip[1:] = b"\x01" * (len(comp.skip) - 1)  # stale: blocks 1.. "had no pages"
        results.append(await comp.compact_zone(9, "test", "direct"))
        assert comp.skip == bytearray(len(comp.skip))
        results.append(await comp.compact_zone(9, "test", "direct"))

    rig.run(body)
    assert results == [COMPACT_PARTIAL, COMPACT_SUCCESS]
    assert free_blocks_at_least(rig.zone, 9) >= 1
    assert rig.problems() == []
    rig.zone.check_invariants()
