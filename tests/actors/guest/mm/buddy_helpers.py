"""Zones and helpers shared by the buddy allocator tests (page_alloc*, isolation, invariants)."""

from __future__ import annotations

from array import array
from typing import Any

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    GFP,
    GFP_ATOMIC,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_TRANSHUGE,
    MAX_ORDER,
    MIGRATE_TYPES,
)
from actors.guest.mm.mmzone import Zone
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


GFPS = [MOV, UNMOV, RECL, NORETRY, int(GFP_TRANSHUGE), int(GFP_ATOMIC), MEMALLOC]


OWNER_FOR = {MOV: P.OWNER_ANON, NORETRY: P.OWNER_ANON, int(GFP_TRANSHUGE): P.OWNER_THP}


def wm_zone() -> Zone:
    """A 2048-page zone with min/low/high = 100/200/300."""
    return make_zone(4, (100, 200, 300))


def order_frees(held: list[tuple[int, int]], seed: int, how: str, share: float
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
