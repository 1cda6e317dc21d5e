"""``struct zone`` assembled: the guest's single ZONE_NORMAL with everything it can do.

The kernel spreads a zone's functions over mm/page_alloc.c and friends; so does this package:

* :mod:`~actors.guest.mm.page_alloc` -- free lists, split/merge, watermarks (the core);
* :mod:`~actors.guest.mm.page_alloc_fallback` -- ``__rmqueue_fallback``, per kernel generation;
* :mod:`~actors.guest.mm.page_alloc_bulk` -- the batched alloc/free fast paths;
* :mod:`~actors.guest.mm.page_isolation` -- free blocks taken for compaction;
* :mod:`~actors.guest.mm.buddy_invariants` -- the debug walk of the whole buddy state.

Model decisions, all documented where they live:

* orders 0..MAX_ORDER-1 (0..10); per-order, per-migratetype free lists (``free_area``);
  boot puts every page on the MOVABLE order-10 lists in ascending PFN order (FPI_TO_TAIL);
* allocation: ``__rmqueue_smallest``, then ``__rmqueue_fallback`` with the kernel's fallbacks
  table and the Linux 4.13+ ``steal_suitable_fallback`` (claim a pageblock when at least half
  of it is free or of a compatible kind), or, with ``fallback="v3.6"``, the fallback of the
  balloon compaction series' kernels (2.6.24..3.18: a small-order fallback takes one block and
  leaves the rest of its pageblock alone); no per-cpu lists, no HIGHATOMIC reserves, no CMA;
* freeing: ``__free_one_page`` merging up to order 10 (no merge across an isolated pageblock
  boundary), onto the free list of the freed page's pageblock migratetype, with the 2.6.33..5.x
  "buddy of the next order is free: add to the tail" heuristic;
* watermarks: kernel ``min_free_kbytes`` sizing, ``__zone_watermark_ok``; no reclaim is
  modelled, see :meth:`Zone.alloc_pages` for how GFP flags pick the mark;
* MIGRATE_ISOLATE pageblocks are honoured minimally: pages freed there go on the ISOLATE
  lists, which are never allocated from, but they stay counted in ``free_pages``.
"""

from __future__ import annotations

from actors.guest.mm.buddy_invariants import ZoneInvariants
from actors.guest.mm.page_alloc_bulk import ZoneBulk
from actors.guest.mm.page_isolation import ZoneIsolation


class Zone(ZoneBulk, ZoneIsolation, ZoneInvariants):
    """A zone: :class:`~actors.guest.mm.page_alloc.ZoneCore` (see there for its state) with
    the bulk paths, the isolation helpers and the invariant walker."""

    __slots__ = ()
