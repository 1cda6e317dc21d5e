"""Pure read-only views of a zone (/proc/buddyinfo, /proc/pagetypeinfo, extfrag) and vmstat.

Nothing here changes the zone.  Index arithmetic follows mm/vmstat.c (fill_contig_page_info,
__fragmentation_index, unusable_free_index) with the kernel's integer divisions, so a number
printed here can be checked against a hand computation or a real kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from actors.guest.mm.gfp import MAX_ORDER, MIGRATE_TYPES, MIGRATETYPE_NAMES
from actors.guest.mm.mmzone import Zone


def buddyinfo(zone: Zone) -> list[int]:
    """Return the free block count per order 0..10, as one /proc/buddyinfo line."""
    return list(zone.nr_free)


def pagetypeinfo(zone: Zone) -> dict[str, list[int]]:
    """Return free block counts per migratetype per order (/proc/pagetypeinfo, first table)."""
    return {
        MIGRATETYPE_NAMES[mt]: [zone.free_area[o][mt].nr for o in range(MAX_ORDER)]
        for mt in range(MIGRATE_TYPES)
    }


def pageblock_counts(zone: Zone) -> dict[str, int]:
    """Return pageblocks per migratetype ("Number of blocks type" in /proc/pagetypeinfo)."""
    pbmt = zone.frames.pageblock_mt
    return {MIGRATETYPE_NAMES[mt]: pbmt.count(mt) for mt in range(MIGRATE_TYPES)}


@dataclass(frozen=True, slots=True)
class ContigPageInfo:
    """``struct contig_page_info``: free memory as seen by an ``order`` request."""

    free_pages: int
    free_blocks_total: int
    free_blocks_suitable: int  # in units of order-``order`` blocks


def fill_contig_page_info(zone: Zone, order: int) -> ContigPageInfo:
    """Summarise the free lists for a ``suitable_order`` request (fill_contig_page_info)."""
    _check_order(order)
    free_pages = total = suitable = 0
    for o, blocks in enumerate(zone.nr_free):
        total += blocks
        free_pages += blocks << o
        if o >= order:
            suitable += blocks << (o - order)
    return ContigPageInfo(free_pages, total, suitable)


def fragmentation_index(zone: Zone, order: int) -> int:
    """Return the extfrag index of an ``order`` request in thousandths (__fragmentation_index).

    0 when nothing is free; -1000 when a block of at least ``order`` is free (the request
    would succeed); otherwise ``1000 - (1000 + free_pages*1000 // 2^order) // free_blocks``:
    near 0 the failure is lack of memory, near 1000 fragmentation.
    """
    info = fill_contig_page_info(zone, order)
    if not info.free_blocks_total:
        return 0
    if info.free_blocks_suitable:
        return -1000
    requested = 1 << order
    return 1000 - (1000 + info.free_pages * 1000 // requested) // info.free_blocks_total


def unusable_free_index(zone: Zone, order: int) -> int:
    """Return the share of free memory unusable for ``order``, in thousandths (unusable_free_index).

    1000 when nothing is free (all free memory counts as unusable), else
    ``(free_pages - suitable_blocks * 2^order) * 1000 // free_pages``.
    """
    info = fill_contig_page_info(zone, order)
    if info.free_pages == 0:
        return 1000
    return (info.free_pages - (info.free_blocks_suitable << order)) * 1000 // info.free_pages


def free_blocks_at_least(zone: Zone, order: int) -> int:
    """Return how many free blocks of order >= ``order`` exist (any migratetype)."""
    _check_order(order)
    return sum(zone.nr_free[order:])


def _check_order(order: int) -> None:
    """Reject orders outside 0..MAX_ORDER-1."""
    if not 0 <= order < MAX_ORDER:
        raise ValueError(f"order {order} out of range 0..{MAX_ORDER - 1}")


#: Every vmstat counter the simulator keeps, in the order as_dict() reports them.
VMSTAT_NAMES: Final[tuple[str, ...]] = (
    "pgalloc",
    "pgfree",
    "pgrotated",
    "alloc_fail",
    "allocstall",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_split_page",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "compact_migrate_scanned",
    "compact_free_scanned",
    "compact_isolated",
    "compact_daemon_wake",
    "pgmigrate_success",
    "pgmigrate_fail",
    "balloon_inflate",
    "balloon_deflate",
    "balloon_migrate",
    "compact_balloon_isolated",
    "compact_balloon_migrated",
    "compact_balloon_released",
    "compact_balloon_returned",
)

_VMSTAT_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(VMSTAT_NAMES)}


class VmStat:
    """Named event counters (/proc/vmstat): a fixed set, so typos fail and output is ordered.

    ``inc(name, n)`` adds, ``get(name)``/``vmstat[name]`` reads, ``as_dict()`` lists every
    counter in VMSTAT_NAMES order.  Unknown names raise KeyError naming the known ones.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: list[int] = [0] * len(VMSTAT_NAMES)

    @staticmethod
    def _index(name: str) -> int:
        """Map a counter name to its slot, rejecting unknown names."""
        try:
            return _VMSTAT_INDEX[name]
        except KeyError:
            raise KeyError(
                f"unknown vmstat counter {name!r}; known: {', '.join(VMSTAT_NAMES)}"
            ) from None

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` (default 1) to counter ``name`` (count_vm_events)."""
        self._values[self._index(name)] += n

    def get(self, name: str) -> int:
        """Return counter ``name``."""
        return self._values[self._index(name)]

    def __getitem__(self, name: str) -> int:
        """Return counter ``name`` (same as get)."""
        return self._values[self._index(name)]

    def as_dict(self) -> dict[str, int]:
        """Return every counter, in the fixed VMSTAT_NAMES order."""
        return dict(zip(VMSTAT_NAMES, self._values, strict=True))

    def __repr__(self) -> str:
        """Show the non-zero counters."""
        nonzero = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"VmStat({nonzero})"
