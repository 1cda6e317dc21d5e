"""Memory compaction (mm/compaction.c, 2012): migrate scanner up, free scanner down.

``Compactor.compact_zone`` runs in the calling kernel task -- a ``compact_memory`` writer,
kcompactd, or a faulting application (direct compaction) -- so balloon pages are isolated and
migrated through the driver's callbacks concurrently with the balloon kthread, which is what
the seed patch's locks are for. Several compactors may run at once; they share the per-
pageblock skip hints.

Scanning reads the page-frame arrays locklessly, as the kernel's scanners read struct pages;
taking free pages goes through the allocator actor (the zone lock). The isolated pages go to
``migrate_pages`` (mm/migrate.c: :mod:`actors.guest.mm.migrate`, a mixin of the compactor):
LRU pages are copied, balloon pages go through ``balloon_page_migrate`` (the driver inflates
the new page and deflates the old one).

``zone->lru_lock`` is one ``SpinLock`` per zone (``CompactionState.zone_lru_lock``), taken
where 3.6 and 3.8 take it: by the migrate scanner (``spin_lock_irqsave``, dropped when
contended by ``compact_checklock_irqsave``) and, in hardirq context, by the end-I/O
completions that rotate written-back pages (:mod:`actors.guest.mm.swap`). The model's LRU
adds and removes (allocation, freeing, migration) do not take it: it has no LRU lists.
:class:`Compactor` is the v9 series' compactor: 3.6's ``isolate_migratepages_range``, which
holds the lock across the whole scan, so the series isolates balloon pages under it, hardirqs
off, whatever ``locked`` says (3.8's tests ``locked``: :mod:`actors.guest.mm.compaction_38`).

Preemption points: a read of shared state outside the lock that protects it is one, named by
its C function and placed before the read: ``compact_finished`` and ``compaction_suitable``
(the zone's free counts, read without ``zone->lock``) and ``balloon_page_movable`` (the
lockless movable test, before it for each page that looks like a balloon page: the model
looks at the flags first, without a point, since a page that is no balloon page is skipped
whatever another CPU does, unless it is freed and ballooned within the window). The LRU
isolation test is under ``zone->lru_lock`` and has none.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm import vmstat as views
from actors.guest.mm.allocator import AllocatorClient
from actors.guest.mm.balloon_compaction import BalloonAops, isolate_balloon_page
from actors.guest.mm.migrate import Migrator
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.rmap import Rmap
from actors.guest.mm.vmstat import VmStat
from actors.kernel.kernel import Kernel
from actors.kernel.locks import SpinLock
from actors.sim import schema
from actors.sim.costs import CostModel
from actors.sim.units import UnitError, parse_duration

COMPACT_CLUSTER_MAX = 32
SWAP_CLUSTER_MAX = 32
PAGEBLOCK = G.pageblock_nr_pages

COMPACT_COMPLETE = "complete"  # the scanners met
COMPACT_SUCCESS = "success"  # a free block of the requested order exists
COMPACT_SKIPPED = "skipped"  # not enough free memory to compact with
COMPACT_PARTIAL = "partial"  # migration ran out of free target pages (-ENOMEM)


@dataclass(frozen=True, slots=True)
class CompactionConfig:
    """Scenario table ``[compaction]``: triggers and concurrency."""

    workers: int = field(default=1, metadata={
        "doc": "compact_memory writers started together at each `at` time"})
    at: list[str] = field(default_factory=list, metadata={
        "doc": "virtual times at which compact_memory is written, e.g. ['10s', '20s']"})
    kcompactd_interval: float = field(default=0.0, metadata={
        "unit": "duration", "doc": "background compaction period (0: off)"})
    direct: bool = field(default=True, metadata={
        "doc": "direct compaction when a THP fault fails because of fragmentation"})
    extfrag_threshold: int = field(default=500, metadata={
        "doc": "vm.extfrag_threshold: compact only above this fragmentation index"})

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not 0 <= self.workers <= 64:
            problems.append(("workers", f"must be between 0 and 64, got {self.workers}"))
        for i, t in enumerate(self.at):
            try:
                parse_duration(t)
            except UnitError as e:
                problems.append((f"at[{i}]", str(e)))
        if not -1000 <= self.extfrag_threshold <= 1000:
            problems.append(("extfrag_threshold", "must be between -1000 and 1000"))
        return problems


@dataclass
class CompactionState:
    """What a guest's compactors share: per-pageblock skip hints and migration ids."""

    skip: bytearray
    mids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: ``zone->lru_lock``, made by its first taker (``zone_lru_lock``); None until then.
    lru_lock: SpinLock | None = None
    #: compact_zone() runs in progress: while one is, balloon pages may be in flight between
    #: the list, isolation and release, so the balloon's counters are not at rest.
    running: int = 0

    @classmethod
    def for_zone(cls, zone: Zone) -> CompactionState:
        return cls(bytearray(zone.frames.nr_pages // PAGEBLOCK))

    def zone_lru_lock(self, kernel: Kernel) -> SpinLock:
        """``zone->lru_lock``: one per zone, shared by every compactor and the end-I/O
        interrupt (spin_lock_init(&zone->lru_lock) at the first use)."""
        if self.lru_lock is None:
            self.lru_lock = SpinLock(kernel, "zone->lru_lock")
        return self.lru_lock


@dataclass
class CompactControl:
    """struct compact_control: one compaction run's scanners and page lists."""

    order: int
    migrate_pfn: int
    free_pfn: int
    ignore_skip_hint: bool
    worker: str = "-"  # the kernel task running it (for the log)
    freepages: list[int] = field(default_factory=list)
    migrated: int = 0
    failed: int = 0
    balloon_migrated: int = 0


class Compactor(Migrator):
    """Everything compaction needs of one guest; ``compact_zone`` is called per run."""

    def __init__(self, *, kernel: Kernel, zone: Zone, allocator: AllocatorClient, rmap: Rmap,
                 balloon: BalloonAops | None, vmstat: VmStat, costs: CostModel,
                 log: FilteringBoundLogger, config: CompactionConfig,
                 shared: CompactionState | None = None,
                 touched: Callable[[array.array[int]], None] | None = None) -> None:
        self.kernel = kernel
        self.zone = zone
        self.frames = zone.frames
        self.allocator = allocator
        self.rmap = rmap
        self.balloon = balloon
        self.vmstat = vmstat
        self.costs = costs
        self.log = log
        self.config = config
        self.shared = shared if shared is not None else CompactionState.for_zone(zone)
        self.skip = self.shared.skip
        self.lru_lock = self.shared.zone_lru_lock(kernel)
        self.touched = touched
        #: Free order->=9 blocks when this compactor's last run ended.
        self.last_free_order9 = 0
        self._mids = {}

    # -- the run -------------------------------------------------------------------------------
    async def compact_zone(self, order: int, worker: str, trigger: str) -> str:
        """compact_zone(): migrate movable pages from the bottom of the zone to free pages at
        the top until the scanners meet (or, for ``order`` >= 0, a block of it is free)."""
        self.shared.running += 1
        try:
            return await self._compact_zone(order, worker, trigger)
        finally:
            self.shared.running -= 1

    async def _compact_zone(self, order: int, worker: str, trigger: str) -> str:
        nr_pages = self.frames.nr_pages
        full = order < 0
        if full:
            self.skip[:] = bytes(len(self.skip))  # __reset_isolation_suitable
        cc = CompactControl(order, 0, nr_pages - PAGEBLOCK, ignore_skip_hint=full,
                            worker=worker)
        self.log.info(schema.COMPACT_START, worker=worker, order=order, trigger=trigger)
        # compaction_suitable(): below the order-0 watermark there is nothing to migrate into
        if not full:
            await self.kernel.preempt("compaction_suitable")  # zone_page_state(), lockless
        result = COMPACT_COMPLETE if full or self.compaction_suitable(order) else COMPACT_SKIPPED
        while result != COMPACT_SKIPPED:
            # compact_finished()
            if cc.free_pfn <= cc.migrate_pfn:
                result = COMPACT_COMPLETE
                break
            if not full:
                # zone->free_area[order].nr_free, read without zone->lock
                await self.kernel.preempt("compact_finished")
                if self.zone.find_free_block_at_least(order):
                    result = COMPACT_SUCCESS
                    break
            isolated = await self.isolate_migratepages(cc)
            if self.kernel.debug:
                self.log.debug(schema.COMPACT_SCAN, worker=worker, migrate_pfn=cc.migrate_pfn,
                               free_pfn=cc.free_pfn, isolated=len(isolated))
            if isolated:
                if not await self.migrate_pages(cc, isolated):
                    result = COMPACT_PARTIAL  # migrate_pages() returned -ENOMEM
                    break
            else:
                await self.kernel.preempt("compact_zone")
        if cc.free_pfn <= cc.migrate_pfn and not full:
            # The scanners met (COMPACT_COMPLETE, or the free scanner ran down to the migrate
            # scanner and migration then failed with -ENOMEM: the kernel's next run starts
            # from those cached positions and completes at once): the next run starts with
            # fresh skip hints, as kswapd's __reset_isolation_suitable() does once
            # compact_blockskip_flush is set.
            self.skip[:] = bytes(len(self.skip))
        if cc.freepages:  # release_freepages()
            await self.allocator.free(cc.freepages, 0)
            cc.freepages = []
        self.last_free_order9 = views.free_blocks_at_least(self.zone, 9)
        self.log.info(schema.COMPACT_END, worker=worker, order=order, result=result,
                      migrated=cc.migrated, failed=cc.failed,
                      balloon_migrated=cc.balloon_migrated, free_order9=self.last_free_order9)
        return result

    # -- zone->lru_lock (mm/compaction.c of 3.6 and 3.8 alike) -------------------------------
    def should_release_lock(self, lock: SpinLock) -> bool:
        """should_release_lock(): need_resched() || spin_is_contended(lock). The model has no
        need_resched(): a contended lock is the only reason."""
        return lock.spin_is_contended()

    async def compact_checklock_irqsave(self, lock: SpinLock, flags: int, locked: bool
                                        ) -> int:
        """compact_checklock_irqsave() for sync compaction (every compaction of the model):
        the lock is held on return; the flags its ``spin_lock_irqsave`` saved."""
        # if (should_release_lock(lock)) {
        if self.should_release_lock(lock):
            # if (locked) { spin_unlock_irqrestore(lock, *flags); locked = false; }
            if locked:
                lock.spin_unlock_irqrestore(flags)
                locked = False
            # cond_resched();
            await self.kernel.preempt("compact_checklock_irqsave")
        # if (!locked) spin_lock_irqsave(lock, *flags);
        if not locked:
            flags = await lock.spin_lock_irqsave()
        # return true;
        return flags

    # -- migrate scanner -----------------------------------------------------------------------
    async def isolate_migratepages(self, cc: CompactControl) -> list[int]:
        """isolate_migratepages_range() of 3.6 with the v9 series' balloon hunk, over one
        pageblock from migrate_pfn (or up to COMPACT_CLUSTER_MAX pages): ``zone->lru_lock``
        held across the scan, dropped every SWAP_CLUSTER_MAX pages and when contended, so a
        balloon page is isolated with it held and hardirqs off. Free blocks and THPs are
        stepped over whole; the skip hints are the model's (3.7's), not 3.6's."""
        k, f, vm, lru_lock = self.kernel, self.frames, self.vmstat, self.lru_lock
        flags, mapping, refcount, order_of = f.flags, f.mapping, f.refcount, f.order
        rmap_owner = self.rmap.owner
        pfn = cc.migrate_pfn
        block_end = (pfn // PAGEBLOCK + 1) * PAGEBLOCK
        pb = pfn // PAGEBLOCK
        if not cc.ignore_skip_hint and self.skip[pb]:
            cc.migrate_pfn = block_end
            return []
        isolated: list[int] = []
        lru, balloon_owner = P.PG_lru, P.OWNER_BALLOON
        scanned = 0
        # /* Time to isolate some pages for migration */
        # cond_resched();
        await k.preempt("isolate_migratepages_range")
        # spin_lock_irqsave(&zone->lru_lock, flags); locked = true;
        irqflags = await lru_lock.spin_lock_irqsave()
        locked = True
        # for (; low_pfn < end_pfn; low_pfn++) {
        while pfn < block_end and len(isolated) < COMPACT_CLUSTER_MAX:
            # /* give a chance to irqs before checking need_resched() */
            # if (!((low_pfn+1) % SWAP_CLUSTER_MAX)) {
            #         spin_unlock_irqrestore(&zone->lru_lock, flags); locked = false; }
            if not (pfn + 1) % SWAP_CLUSTER_MAX:
                lru_lock.spin_unlock_irqrestore(irqflags)
                locked = False
            # /* Check if it is ok to still hold the lock */
            # locked = compact_checklock_irqsave(&zone->lru_lock, &flags, locked, cc);
            # if (!locked) break;      (sync: never; its common case inline, not C)
            if not locked or self.should_release_lock(lru_lock):
                irqflags = await self.compact_checklock_irqsave(lru_lock, irqflags, locked)
                locked = True
            fl = flags[pfn]
            scanned += 1
            if fl & P.PG_buddy:  # a free block: skip it whole
                pfn += 1 << order_of[pfn]
                continue
            if fl & P.PG_head:  # a THP: 2012 compaction does not migrate it
                pfn += 1 << order_of[pfn]
                continue
            if fl & lru and refcount[pfn] == 1 and rmap_owner[pfn]:
                # __isolate_lru_page(); del_page_from_lru_list(): off the LRU, our reference
                flags[pfn] = (fl & ~lru) | P.PG_isolated
                refcount[pfn] = 2
                isolated.append(pfn)
            elif fl & P.PG_balloon and self.balloon is not None:
                # } else if (unlikely(balloon_page_movable(page))) {   (no `locked` test)
                #         if (!isolate_balloon_page(page)) continue;
                if k.perturb.active:
                    await k.preempt("balloon_page_movable")  # the lockless read, below
                if (flags[pfn] & P.PG_balloon and mapping[pfn] == balloon_owner
                        and await isolate_balloon_page(k, f, self.balloon, pfn)):
                    isolated.append(pfn)
                    vm.inc("compact_balloon_isolated")
                    mid = self._mids[pfn] = next(self.shared.mids)
                    self.log.info(schema.BALLOON_ISOLATE, worker=cc.worker, mid=mid, pfn=pfn)
            pfn += 1
        # acct_isolated(zone, locked, cc);
        vm.inc("compact_migrate_scanned", scanned)
        vm.inc("compact_isolated", len(isolated))
        # if (locked) spin_unlock_irqrestore(&zone->lru_lock, flags);
        if locked:
            lru_lock.spin_unlock_irqrestore(irqflags)
        if not isolated and pfn >= block_end and not cc.ignore_skip_hint:
            self.skip[pb] = 1  # update_pageblock_skip()
        cc.migrate_pfn = pfn
        return isolated

    # -- free scanner --------------------------------------------------------------------------
    async def isolate_freepages(self, cc: CompactControl, want: int) -> None:
        """isolate_freepages(): under the zone lock, take free pages from MOVABLE pageblocks
        scanning down from free_pfn, split to order 0, until ``want`` are held."""
        skip = self.skip
        ignore = cc.ignore_skip_hint

        def scan(zone: Zone) -> tuple[list[int], int, int]:
            f = zone.frames
            flags, order_of, pbmt = f.flags, f.order, f.pageblock_mt
            got: list[int] = []
            scanned = 0
            block = cc.free_pfn
            low = cc.migrate_pfn
            while block > low and len(got) < want:
                pb = block // PAGEBLOCK
                if (ignore or not skip[pb]) and (pbmt[pb] == G.MIGRATE_MOVABLE or (
                        flags[block] & P.PG_buddy and order_of[block] >= G.pageblock_order)):
                    pfn, end, before = block, block + PAGEBLOCK, len(got)
                    while pfn < end:
                        scanned += 1
                        if flags[pfn] & P.PG_buddy:
                            order = order_of[pfn]
                            n = zone.split_free_page(pfn)
                            if not n:  # watermark: stop taking free pages
                                return got, block, scanned
                            got.extend(range(pfn, pfn + n))
                            pfn += 1 << order
                        else:
                            pfn += 1
                    if len(got) == before and not ignore:
                        skip[pb] = 1
                block -= PAGEBLOCK
            return got, block, scanned

        got, free_pfn, scanned = await self.allocator.call(scan, cost=0.0)
        cc.free_pfn = free_pfn
        cc.freepages.extend(got)
        self.vmstat.inc("compact_free_scanned", scanned)
        self.vmstat.inc("compact_isolated", len(got))

    # -- triggers ------------------------------------------------------------------------------
    def compaction_suitable(self, order: int) -> bool:
        """compaction_suitable()'s watermark test: the zone must stay above the low watermark
        plus twice the requested block while pages are copied (else COMPACT_SKIPPED)."""
        return self.zone.zone_watermark_ok(0, self.zone.low_wmark_pages + (2 << order))

    def fragmentation_says_compact(self, order: int) -> bool:
        """Direct compaction only when fragmentation, not lack of memory, is the cause."""
        return views.fragmentation_index(self.zone, order) > self.config.extfrag_threshold
