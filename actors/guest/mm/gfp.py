"""GFP flags, migratetypes, allocation flags and buddy constants (include/linux/gfp.h, mmzone.h).

Pure constants and one helper, so the page-frame model, the buddy allocator and the drivers
share one vocabulary.  Values follow Linux 4.x ``gfp.h`` (where ``__GFP_MOVABLE`` and
``__GFP_RECLAIMABLE`` sit next to each other so that ``gfp_migratetype`` is a mask and a shift).
Hot paths should use the plain ``int`` constants (``GFP_MOVABLE_FLAG`` ...) rather than the
``GFP`` IntFlag members, whose operators allocate new enum objects.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Final

# ---------------------------------------------------------------------------------------------
# Migratetypes (include/linux/mmzone.h).  Plain ints: they index arrays in the hot path.
# MIGRATE_CMA is not modelled, so MIGRATE_ISOLATE is 4 here (the kernel's value depends on
# CONFIG_CMA anyway).
# ---------------------------------------------------------------------------------------------
MIGRATE_UNMOVABLE: Final = 0
MIGRATE_MOVABLE: Final = 1
MIGRATE_RECLAIMABLE: Final = 2
MIGRATE_PCPTYPES: Final = 3  # the number of types on the per-cpu lists (and with fallbacks)
MIGRATE_HIGHATOMIC: Final = MIGRATE_PCPTYPES  # 3: reserve never created by this model
MIGRATE_ISOLATE: Final = 4  # pageblocks isolated for offlining: never allocated from
MIGRATE_TYPES: Final = 5

#: ``migratetype_names[]`` of mm/vmstat.c (as printed by /proc/pagetypeinfo), CMA omitted.
MIGRATETYPE_NAMES: Final[tuple[str, ...]] = (
    "Unmovable",
    "Movable",
    "Reclaimable",
    "HighAtomic",
    "Isolate",
)

# ---------------------------------------------------------------------------------------------
# Buddy geometry (include/linux/mmzone.h, pageblock-flags.h).
# MAX_ORDER = 11 is the pre-6.4 meaning: orders 0..MAX_ORDER-1 = 0..10.
# pageblock_order stays 9 *guest pages* whatever the page size; with 64 KiB pages a real arm64
# kernel uses a different pageblock_order (and THP size), but the simulator keeps pageblocks
# and THPs at 512 pages so scenarios behave alike across page sizes.
# ---------------------------------------------------------------------------------------------
MAX_ORDER: Final = 11
pageblock_order: Final = 9
pageblock_nr_pages: Final = 1 << pageblock_order
HPAGE_PMD_ORDER: Final = pageblock_order  # a transparent huge page is one pageblock
PAGE_ALLOC_COSTLY_ORDER: Final = 3


class GFP(IntFlag):
    """The ``__GFP_*`` bits (Linux 4.x values); each member names its kernel flag."""

    HIGHMEM = 0x02  # __GFP_HIGHMEM
    MOVABLE = 0x08  # __GFP_MOVABLE
    RECLAIMABLE = 0x10  # __GFP_RECLAIMABLE
    HIGH = 0x20  # __GFP_HIGH: may use part of the min reserve (ALLOC_HIGH)
    IO = 0x40  # __GFP_IO
    FS = 0x80  # __GFP_FS
    ZERO = 0x100  # __GFP_ZERO (no effect in the model: page contents are not modelled)
    ATOMIC = 0x200  # __GFP_ATOMIC: cannot sleep, high priority (ALLOC_HARDER)
    DIRECT_RECLAIM = 0x400  # __GFP_DIRECT_RECLAIM (2012: __GFP_WAIT)
    KSWAPD_RECLAIM = 0x800  # __GFP_KSWAPD_RECLAIM
    NOWARN = 0x2000  # __GFP_NOWARN
    NOFAIL = 0x8000  # __GFP_NOFAIL (accepted, not honoured: no reclaim is modelled)
    NORETRY = 0x10000  # __GFP_NORETRY: fail fast, never below the low watermark here
    MEMALLOC = 0x20000  # __GFP_MEMALLOC: ignore watermarks (unless NOMEMALLOC)
    COMP = 0x40000  # __GFP_COMP: make a compound page (PG_head + stored order)
    NOMEMALLOC = 0x80000  # __GFP_NOMEMALLOC: never dip into emergency reserves
    HARDWALL = 0x100000  # __GFP_HARDWALL (cpuset; no effect in the model)

    RECLAIM = DIRECT_RECLAIM | KSWAPD_RECLAIM  # __GFP_RECLAIM


# Plain-int twins of the flags for hot paths (kernel name in the comment).
GFP_HIGHMEM_FLAG: Final = int(GFP.HIGHMEM)  # __GFP_HIGHMEM
GFP_MOVABLE_FLAG: Final = int(GFP.MOVABLE)  # __GFP_MOVABLE
GFP_RECLAIMABLE_FLAG: Final = int(GFP.RECLAIMABLE)  # __GFP_RECLAIMABLE
GFP_HIGH_FLAG: Final = int(GFP.HIGH)  # __GFP_HIGH
GFP_ATOMIC_FLAG: Final = int(GFP.ATOMIC)  # __GFP_ATOMIC
GFP_DIRECT_RECLAIM_FLAG: Final = int(GFP.DIRECT_RECLAIM)  # __GFP_DIRECT_RECLAIM
GFP_NOWARN_FLAG: Final = int(GFP.NOWARN)  # __GFP_NOWARN
GFP_NORETRY_FLAG: Final = int(GFP.NORETRY)  # __GFP_NORETRY
GFP_MEMALLOC_FLAG: Final = int(GFP.MEMALLOC)  # __GFP_MEMALLOC
GFP_COMP_FLAG: Final = int(GFP.COMP)  # __GFP_COMP
GFP_NOMEMALLOC_FLAG: Final = int(GFP.NOMEMALLOC)  # __GFP_NOMEMALLOC

GFP_MOVABLE_MASK: Final = GFP_MOVABLE_FLAG | GFP_RECLAIMABLE_FLAG
GFP_MOVABLE_SHIFT: Final = 3

# Composite masks (include/linux/gfp.h, Linux 4.x).
GFP_ATOMIC: Final = GFP.HIGH | GFP.ATOMIC | GFP.KSWAPD_RECLAIM
GFP_KERNEL: Final = GFP.RECLAIM | GFP.IO | GFP.FS
GFP_NOWAIT: Final = GFP.KSWAPD_RECLAIM
GFP_USER: Final = GFP.RECLAIM | GFP.IO | GFP.FS | GFP.HARDWALL
GFP_HIGHUSER: Final = GFP_USER | GFP.HIGHMEM
GFP_HIGHUSER_MOVABLE: Final = GFP_HIGHUSER | GFP.MOVABLE
#: The 2012 definition (include/linux/gfp.h at v3.7), minus __GFP_NO_KSWAPD which is not
#: modelled: THP faults are movable compound pages that fail fast (NORETRY: never below the low
#: watermark here), quietly, and never touch the emergency reserves; callers fall back to 4 KiB.
GFP_TRANSHUGE: Final = GFP_HIGHUSER_MOVABLE | GFP.COMP | GFP.NOMEMALLOC | GFP.NORETRY | GFP.NOWARN

#: The composite names show_gfp_flags() prints first (%pGg), the widest first.
_COMPOSITES: Final = (("GFP_TRANSHUGE", GFP_TRANSHUGE), ("GFP_HIGHUSER_MOVABLE",
                      GFP_HIGHUSER_MOVABLE), ("GFP_HIGHUSER", GFP_HIGHUSER),
                      ("GFP_USER", GFP_USER), ("GFP_KERNEL", GFP_KERNEL),
                      ("GFP_ATOMIC", GFP_ATOMIC), ("GFP_NOWAIT", GFP_NOWAIT))


def gfp_names(mask: int) -> str:
    """A gfp mask as the kernel prints it (%pGg): composite names, then the remaining
    ``__GFP_*`` flags, then unknown bits in hex; ``0`` for none."""
    parts, rest = [], int(mask)
    for name, composite in _COMPOSITES:
        m = int(composite)  # plain ints: an IntFlag's ~ would drop unknown bits
        if rest & m == m:
            parts.append(name)
            rest &= ~m
    for flag in GFP:  # the single-bit members, lowest first
        if rest & int(flag):
            parts.append(f"__GFP_{flag.name}")
            rest &= ~int(flag)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


# ---------------------------------------------------------------------------------------------
# Allocation flags (mm/internal.h), the allocator's internal view of a request.
# The low two bits select the watermark, as in the kernel.
# ---------------------------------------------------------------------------------------------
WMARK_MIN: Final = 0
WMARK_LOW: Final = 1
WMARK_HIGH: Final = 2

ALLOC_WMARK_MIN: Final = WMARK_MIN
ALLOC_WMARK_LOW: Final = WMARK_LOW
ALLOC_WMARK_HIGH: Final = WMARK_HIGH
ALLOC_NO_WATERMARKS: Final = 0x04
ALLOC_WMARK_MASK: Final = ALLOC_NO_WATERMARKS - 1
ALLOC_HARDER: Final = 0x10  # __GFP_ATOMIC without __GFP_NOMEMALLOC: min -= min/4
ALLOC_HIGH: Final = 0x20  # __GFP_HIGH: min -= min/2


def gfp_migratetype(gfp: int) -> int:
    """Return the migratetype a GFP mask asks for, exactly like the kernel's gfp_migratetype().

    ``__GFP_MOVABLE`` gives MIGRATE_MOVABLE, ``__GFP_RECLAIMABLE`` gives MIGRATE_RECLAIMABLE,
    neither gives MIGRATE_UNMOVABLE.  Both at once is a kernel bug (VM_WARN_ON); here it raises.
    """
    mt = (int(gfp) & GFP_MOVABLE_MASK) >> GFP_MOVABLE_SHIFT
    if mt == MIGRATE_HIGHATOMIC:
        raise ValueError(f"gfp {int(gfp):#x} has both __GFP_MOVABLE and __GFP_RECLAIMABLE set")
    return mt


def gfp_to_alloc_flags(gfp: int) -> int:
    """Return the slow-path ALLOC_* flags for a GFP mask (gfp_to_alloc_flags, simplified).

    The min watermark, plus ALLOC_HIGH for ``__GFP_HIGH``, ALLOC_HARDER for ``__GFP_ATOMIC``
    without ``__GFP_NOMEMALLOC``, and ALLOC_NO_WATERMARKS for ``__GFP_MEMALLOC`` without
    ``__GFP_NOMEMALLOC``.  Whether the slow path is entered at all is the allocator's decision.
    """
    g = int(gfp)
    flags = ALLOC_WMARK_MIN
    if g & GFP_HIGH_FLAG:
        flags |= ALLOC_HIGH
    if g & GFP_ATOMIC_FLAG and not g & GFP_NOMEMALLOC_FLAG:
        flags |= ALLOC_HARDER
    if g & GFP_MEMALLOC_FLAG and not g & GFP_NOMEMALLOC_FLAG:
        flags |= ALLOC_NO_WATERMARKS
    return flags
