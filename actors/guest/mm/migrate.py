"""Page migration (mm/migrate.c, 3.8): ``migrate_pages`` and ``unmap_and_move``.

Compaction isolates pages and hands them here with the free pages its free scanner took
(``compaction_alloc``, the kernel's ``get_new_page`` callback: :meth:`Migrator.isolate_freepages`).
LRU pages are migrated by copying (virtual time) and rewriting the rmap slot that maps them;
balloon pages go through ``balloon_page_migrate`` (mm/balloon_compaction.c), which calls the
driver's ``migratepage`` callback -- the only way mm reaches a driver.

Preemption points: ``migrate_pages`` before each balloon page's attempt (``cond_resched``)
and before an LRU batch's copy. The balloon path reads its page's state under the page lock
(``__is_movable_balloon_page``: the mapping changes only under it), so it has no other. One
exception to the rule that every lockless read is a point: the model migrates LRU pages as a
batch, whose one point and copy time stand for each page's ``page_count(page) == 1`` test
("freed from under us") in ``unmap_and_move``; the apps' unmaps land before or after the
batch, not between two of its pages (the LRU is not what this model studies).
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from actors.guest.mm import pages as P
from actors.guest.mm.allocator import AllocatorClient
from actors.guest.mm.balloon_compaction import (
    BALLOON_MIGRATION_RETURN,
    EAGAIN,
    ENOMEM,
    BalloonAops,
    balloon_page_migrate,
    balloon_page_migrate_fail_ops,
    balloon_page_migrate_fails,
    putback_balloon_page,
)
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.rmap import Rmap
from actors.guest.mm.vmstat import VmStat
from actors.kernel.kernel import Kernel
from actors.kernel.locks import lock_page, trylock_page, unlock_page
from actors.kernel.task import current
from actors.sim import schema
from actors.sim.clock import sleep
from actors.sim.costs import CostModel

if TYPE_CHECKING:
    from actors.guest.mm.compaction import CompactControl

MIGRATE_PASSES = 10  # migrate_pages(): for (pass = 0; pass < 10 && retry; pass++)


class Migrator:
    """migrate_pages() and its helpers, for the compactor that isolated the pages (a mixin of
    :class:`~actors.guest.mm.compaction.Compactor`, which sets these attributes)."""

    kernel: Kernel
    frames: PageFrames
    allocator: AllocatorClient
    rmap: Rmap
    balloon: BalloonAops | None
    vmstat: VmStat
    costs: CostModel
    log: FilteringBoundLogger
    #: Told the PFNs a migration wrote (the host backs the copies' new pages).
    touched: Callable[[array.array[int]], None] | None
    #: Migration handshake ids of the balloon pages this compactor holds isolated.
    _mids: dict[int, int]

    async def isolate_freepages(self, cc: CompactControl, want: int) -> None:
        """compaction_alloc()'s refill: take ``want`` more free target pages into
        ``cc.freepages`` (the compactor's free scanner)."""
        raise NotImplementedError

    async def migrate_pages(self, cc: CompactControl, pages: list[int]) -> bool:
        """migrate_pages(): move each isolated page to a free page; put back what cannot move.

        Balloon pages that fail with -EAGAIN (page lock or ``balloon_lock`` busy) stay
        isolated and are retried in up to ten passes, the page lock taken by force from the
        fourth (``for (pass = 0; pass < 10 && retry; pass++)``, ``force = pass > 2``); what
        still fails is put back.

        Returns False (-ENOMEM) when the free scanner found no target for some page: the
        kernel's migrate_pages() stops at the first page compaction_alloc() cannot serve, the
        rest are put back, and compact_zone() ends (COMPACT_PARTIAL) instead of isolating
        pages it has nowhere to put.
        """
        migrated_before = cc.balloon_migrated
        if len(cc.freepages) < len(pages):
            await self.isolate_freepages(cc, len(pages) - len(cc.freepages))
        f, vm, rmap = self.frames, self.vmstat, self.rmap
        flags, mapping, refcount = f.flags, f.mapping, f.refcount
        lru_pages = [p for p in pages if not flags[p] & P.PG_balloon]
        balloon_pages = [p for p in pages if flags[p] & P.PG_balloon]
        to_free: array.array[int] = array.array("I")
        # LRU pages: unmap, copy, remap (one batch of copies in virtual time)
        moving = lru_pages[:len(cc.freepages)]
        if moving:
            await self.kernel.preempt("migrate_pages")
            await sleep(self.costs.page_copy * len(moving) * (f.page_size // 4096))
        putback = 0
        written: array.array[int] = array.array("I")
        for old in moving:
            if refcount[old] == 1:  # the app unmapped it meanwhile: freed from under us
                flags[old] &= ~P.PG_isolated
                to_free.append(old)
                continue
            new = cc.freepages.pop()
            if not rmap.migrate(old, new):
                # Unmapped meanwhile, but the app has not dropped its reference yet (it frees
                # the PFN it took): keep ``new``, put ``old`` back with only the app's reference.
                cc.freepages.append(new)
                flags[old] = (flags[old] & ~P.PG_isolated) | P.PG_lru
                refcount[old] -= 1
                putback += 1
                cc.failed += 1
                vm.inc("pgmigrate_fail")
                continue
            mapping[new] = mapping[old]
            flags[new] = (flags[old] & ~P.PG_isolated) | P.PG_lru
            refcount[new] = 1
            flags[old] = 0
            refcount[old] = 1  # drop the mapping's reference; ours goes with the free
            to_free.append(old)
            written.append(new)
            cc.migrated += 1
        if written and self.touched is not None:
            self.touched(written)
        vm.inc("pgmigrate_success", len(moving) - putback)
        for old in lru_pages[len(moving):]:  # no target page: putback_lru_page()
            flags[old] = (flags[old] & ~P.PG_isolated) | P.PG_lru
            refcount[old] -= 1
            if refcount[old] == 0:  # unmapped while isolated: we held the last reference
                refcount[old] = 1
                flags[old] = 0
                to_free.append(old)
            cc.failed += 1
            vm.inc("pgmigrate_fail")
        enomem = len(moving) < len(lru_pages)
        fast = not self.kernel.debug  # debug logs show the lock operations the fast path skips
        retry = balloon_pages  # all put back at once if the LRU pages already hit -ENOMEM
        for pass_ in range(0 if enomem else MIGRATE_PASSES):
            again: list[int] = []
            for i, old in enumerate(retry):
                await self.kernel.preempt("migrate_pages")  # cond_resched();
                if fast and cc.freepages and self._attempt_fails_at_once(old):
                    rc = -EAGAIN
                else:
                    rc = await self._migrate_balloon_page(cc, old, to_free, force=pass_ > 2)
                if rc == -EAGAIN:
                    again.append(old)
                elif rc == -ENOMEM:  # goto out: the caller puts back what is left
                    enomem = True
                    again.extend(retry[i:])
                    break
            retry = again
            if enomem or not retry:
                break
            # the failed attempts took CPU time: let the lock holders run meanwhile
            await sleep(self.costs.migrate_attempt * len(retry))
        for old in retry:  # putback_movable_pages()
            await self._putback_balloon_page(cc, old)
        if to_free:
            await self.allocator.free(to_free, 0)
        # COMPACTBALLOONRELEASED: an old balloon page counts as released once __free_page()
        # gave it back to the buddy allocator, not when its migration succeeded.
        if released := cc.balloon_migrated - migrated_before:
            vm.inc("compact_balloon_released", released)
        return not enomem

    async def _putback_balloon_page(self, cc: CompactControl, old: int) -> None:
        """putback_balloon_page() of an isolated page that was not migrated."""
        assert self.balloon is not None
        await putback_balloon_page(self.kernel, self.frames, self.balloon, old)
        self.vmstat.inc("compact_balloon_returned")
        self.log.info(schema.BALLOON_PUTBACK, worker=cc.worker, mid=self._mids.pop(old, 0),
                      pfn=old)
        self._not_migrated(cc)

    def _not_migrated(self, cc: CompactControl) -> None:
        """An isolated balloon page left migrate_pages() unmigrated: count the failure."""
        # Counted as later kernels do (the model uses their vmstat names): pages still -EAGAIN
        # after the last pass are failures. 3.8's migrate_pages() left them out of
        # PGMIGRATE_FAIL (nr_failed counted only permanent failures, not ``retry``).
        self.vmstat.inc("pgmigrate_fail")
        cc.failed += 1

    async def _migrate_balloon_page(self, cc: CompactControl, old: int,
                                    to_free: array.array[int], *, force: bool) -> int:
        """unmap_and_move() for a balloon page: the driver's migratepage under the page lock.

        Returns 0 (migrated: ``old`` queued in ``to_free``), -EAGAIN (``old`` stays isolated
        for the next pass) or -ENOMEM (compaction_alloc() found no target page). Only the
        fourth and later passes wait for a busy page lock (``force``), as in the kernel.
        """
        assert self.balloon is not None
        k, f = self.kernel, self.frames
        if not cc.freepages:
            await self.isolate_freepages(cc, 1)
        if not cc.freepages:  # newpage = get_new_page(...); if (!newpage) return -ENOMEM;
            return -ENOMEM
        new = cc.freepages.pop()
        # if (!trylock_page(page)) { if (!force) goto out; lock_page(page); }
        if not trylock_page(k, f, old):
            if not force:
                cc.freepages.append(new)
                return -EAGAIN
            await lock_page(k, f, old)
        if self._injected_migrate_failure(old):
            rc = -EAGAIN
        else:
            rc = await balloon_page_migrate(k, f, self.balloon, new, old)
        hs = self.balloon.last_hs
        unlock_page(k, f, old)
        if rc != BALLOON_MIGRATION_RETURN:  # -EAGAIN: the new page goes back, retry later
            cc.freepages.append(new)
            return rc
        # list_del(&page->lru); put_page(page); __free_page(page);
        f.flags[old] &= ~(P.PG_isolated | P.PG_balloon)
        f.refcount[old] = 1
        self._balloon_migrated(cc, old, new, to_free, hs)
        return 0

    def _balloon_migrated(self, cc: CompactControl, old: int, new: int,
                          to_free: array.array[int], hs: dict[int, int]) -> None:
        """A balloon page migrated: queue the old page's free, count, log (every core)."""
        vm = self.vmstat
        to_free.append(old)
        cc.migrated += 1
        cc.balloon_migrated += 1
        vm.inc("pgmigrate_success")
        vm.inc("balloon_migrate")
        vm.inc("compact_balloon_migrated")
        self.log.info(schema.BALLOON_MIGRATE, worker=cc.worker, mid=self._mids.pop(old, 0),
                      old=old, new=new, hs_inflate=hs.get(0, 0), hs_deflate=hs.get(1, 0))

    def _attempt_fails_at_once(self, old: int) -> bool:
        """FAST PATH (not in the C): whether ``_migrate_balloon_page`` would end in -EAGAIN
        having changed nothing but its lock operations -- and if so, its draw, log and lock
        accounting. Against a busy ``balloon_lock`` every page of every pass fails this way,
        thousands of times a run; this skips the coroutines. Same draws, same log."""
        assert self.balloon is not None
        f, k = self.frames, self.kernel
        if (f.flags[old] & P.PG_locked or old in k.page_first
                or not self._balloon_migrate_fails(old)):
            return False
        t = current()
        lock = k.lock_cost
        t.ops += 1  # trylock_page(page) ... unlock_page(page)
        t.debt += 2 * lock
        if not self._injected_migrate_failure(old):
            ops = balloon_page_migrate_fail_ops(f, old)  # balloon_page_migrate()'s
            t.ops += ops - 1  # trylocks (the unlock of the new page counts no op)
            t.debt += ops * lock
        return True

    def _balloon_migrate_fails(self, old: int) -> bool:
        """FAST PATH (not in the C): the balloon core's migration of the locked ``old`` would
        return -EAGAIN at once (the v9 series: ``balloon_page_migrate_fails``)."""
        assert self.balloon is not None
        return balloon_page_migrate_fails(self.frames, self.balloon, old)

    def _injected_migrate_failure(self, old: int) -> bool:
        """The ``compaction.migrate_fail`` fault site: this attempt fails with -EAGAIN."""
        k = self.kernel
        if k.choices is None or k.choices.fault("compaction.migrate_fail", k.name) is None:
            return False
        self.log.info(schema.FAULT, site="compaction.migrate_fail",
                      detail=f"migration of balloon pfn {old} failed with -EAGAIN")
        return True
