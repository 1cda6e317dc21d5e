"""The compaction and migration hooks of balloon pages as merged in Linux 3.8 (mm/compaction.c
``isolate_migratepages_range``, mm/migrate.c ``unmap_and_move``/``__unmap_and_move``/
``move_to_new_page``/``putback_movable_pages`` of 3.8.13), never fixed.

:class:`Compactor38` is the compactor a 3.8 balloon runs with (the driver names it: mm never
imports a driver). It differs from the v9 series' hooks where the merged C does:
- a balloon page is isolated only while the scanner holds ``zone->lru_lock``, which it takes
  (``spin_lock_irqsave``, through ``compact_checklock_irqsave``) for an LRU page met earlier
  in the same scan and drops when contended (the ``locked && balloon_page_isolate(page)``
  test); the lock is the zone's one, shared with the v9 scanner and the end-I/O interrupt
  (:mod:`actors.guest.mm.compaction`, :mod:`actors.guest.mm.swap`);
- ``__unmap_and_move`` tests ``balloon_page_movable`` on a page it has locked and holds a
  second reference to, so the test fails and the page takes the common path:
  ``move_to_new_page`` calls the mapping's ``migratepage`` and, as the driver's
  ``MIGRATEPAGE_BALLOON_SUCCESS`` is not ``MIGRATEPAGE_SUCCESS``, sets ``newpage->mapping =
  NULL``: the new page stays on the balloon list but is no longer movable;
- ``putback_movable_pages`` makes the same test on an isolated page (refcount 2), fails it, and
  puts the balloon page on the LRU (``putback_lru_page``).

Preemption points before lockless reads (the rule of :mod:`actors.guest.mm.compaction`):
``balloon_page_movable`` in the scanner and ``putback_movable_pages`` before theirs; the test
in ``__unmap_and_move`` has none, as its outcome is fixed by the page lock the caller holds
(``page_flags_cleared`` sees PG_locked).
"""

from __future__ import annotations

import array

from actors.guest.mm import pages as P
from actors.guest.mm.balloon_compaction import EAGAIN, ENOMEM, clear_balloon_mapping
from actors.guest.mm.balloon_compaction_38 import (
    MIGRATEPAGE_BALLOON_SUCCESS,
    MIGRATEPAGE_SUCCESS,
    balloon_page_free,
    balloon_page_isolate,
    balloon_page_migrate,
    balloon_page_movable,
    balloon_page_putback,
)
from actors.guest.mm.compaction import (
    COMPACT_CLUSTER_MAX,
    PAGEBLOCK,
    SWAP_CLUSTER_MAX,
    CompactControl,
    Compactor,
)
from actors.kernel.locks import lock_page, trylock_page, unlock_page
from actors.sim import schema


class Compactor38(Compactor):
    """compact_zone() with the balloon hooks of 3.8."""

    # -- mm/compaction.c (should_release_lock, compact_checklock_irqsave: as in 3.6) ----------
    async def isolate_migratepages(self, cc: CompactControl) -> list[int]:
        """isolate_migratepages_range() over one pageblock from ``cc.migrate_pfn`` (or up to
        COMPACT_CLUSTER_MAX pages). Free blocks are stepped over whole, as the model's v9
        scanner does, instead of page by page (their tails match nothing)."""
        k, f, vm, lru_lock = self.kernel, self.frames, self.vmstat, self.lru_lock
        flags, refcount, order_of = f.flags, f.refcount, f.order
        rmap_owner = self.rmap.owner
        low_pfn = cc.migrate_pfn
        end_pfn = (low_pfn // PAGEBLOCK + 1) * PAGEBLOCK
        pb = low_pfn // PAGEBLOCK
        isolated: list[int] = []
        locked = False
        irqflags = 0  # unsigned long flags;
        nr_scanned = 0
        # /* If isolation recently failed, do not retry */
        # if (!isolation_suitable(cc, page)) goto next_pageblock;
        if not cc.ignore_skip_hint and self.skip[pb]:
            cc.migrate_pfn = end_pfn
            return []
        # cond_resched(); for (; low_pfn < end_pfn; low_pfn++) {
        await k.preempt("isolate_migratepages_range")
        while low_pfn < end_pfn:
            # /* give a chance to irqs before checking need_resched() */
            # if (locked && !((low_pfn+1) % SWAP_CLUSTER_MAX)) {
            #         if (should_release_lock(&zone->lru_lock)) {
            #                 spin_unlock_irqrestore(&zone->lru_lock, flags); locked = false;
            if (locked and not (low_pfn + 1) % SWAP_CLUSTER_MAX
                    and self.should_release_lock(lru_lock)):
                lru_lock.spin_unlock_irqrestore(irqflags)
                locked = False
            nr_scanned += 1
            fl = flags[low_pfn]
            # /* Skip if free */ if (PageBuddy(page)) continue;
            if fl & P.PG_buddy:
                low_pfn += 1 << order_of[low_pfn]
                continue
            # if (!PageLRU(page)) {
            if not fl & P.PG_lru:
                # if (unlikely(balloon_page_movable(page))) {
                #         if (locked && balloon_page_isolate(page)) {
                if fl & P.PG_balloon and k.perturb.active:
                    await k.preempt("balloon_page_movable")  # the lockless read, below
                if (balloon_page_movable(f, low_pfn, rmap_owner[low_pfn] != 0) and locked
                        and self.balloon is not None
                        and await balloon_page_isolate(self.kernel, f, self.balloon,
                                                       low_pfn)):
                    # list_add(&page->lru, migratelist); cc->nr_migratepages++;
                    isolated.append(low_pfn)
                    vm.inc("compact_balloon_isolated")
                    mid = self._mids[low_pfn] = next(self.shared.mids)
                    self.log.info(schema.BALLOON_ISOLATE, worker=cc.worker, mid=mid,
                                  pfn=low_pfn)
                    # goto check_compact_cluster;
                    if len(isolated) == COMPACT_CLUSTER_MAX:
                        low_pfn += 1
                        break
                low_pfn += 1  # continue;
                continue
            # if (PageTransHuge(page)) { if (!locked) goto next_pageblock;
            #         low_pfn += (1 << compound_order(page)) - 1; continue; }
            if fl & P.PG_head:
                if not locked:
                    low_pfn = end_pfn  # next_pageblock
                    break
                low_pfn += 1 << order_of[low_pfn]
                continue
            # /* Check if it is ok to still hold the lock */
            # locked = compact_checklock_irqsave(&zone->lru_lock, &flags, locked, cc);
            irqflags = await self.compact_checklock_irqsave(lru_lock, irqflags, locked)
            locked = True  # (sync compaction: if (!locked || ...) break; never breaks)
            # /* Recheck PageLRU and PageTransHuge under lock */
            fl = flags[low_pfn]
            if not fl & P.PG_lru:
                low_pfn += 1
                continue
            if fl & P.PG_head:
                low_pfn += 1 << order_of[low_pfn]
                continue
            # /* Try isolate the page */ if (__isolate_lru_page(page, mode) != 0) continue;
            if refcount[low_pfn] == 1 and rmap_owner[low_pfn]:
                # del_page_from_lru_list(page, lruvec, page_lru(page));
                flags[low_pfn] = (fl & ~P.PG_lru) | P.PG_isolated
                refcount[low_pfn] = 2
                isolated.append(low_pfn)
                # check_compact_cluster: if (cc->nr_migratepages == COMPACT_CLUSTER_MAX)
                #         { ++low_pfn; break; }
                if len(isolated) == COMPACT_CLUSTER_MAX:
                    low_pfn += 1
                    break
            low_pfn += 1
        # if (locked) spin_unlock_irqrestore(&zone->lru_lock, flags);
        if locked:
            lru_lock.spin_unlock_irqrestore(irqflags)
        vm.inc("compact_migrate_scanned", nr_scanned)
        vm.inc("compact_isolated", len(isolated))
        # /* Update the pageblock-skip if the whole pageblock was scanned */
        # if (low_pfn == end_pfn) update_pageblock_skip(cc, valid_page, nr_isolated, true);
        if not isolated and low_pfn >= end_pfn and not cc.ignore_skip_hint:
            self.skip[pb] = 1
        cc.migrate_pfn = low_pfn
        return isolated

    # -- mm/migrate.c --------------------------------------------------------------------------
    async def _migrate_balloon_page(self, cc: CompactControl, old: int,
                                    to_free: array.array[int], *, force: bool) -> int:
        """unmap_and_move() of an isolated balloon page, 3.8's path through it."""
        assert self.balloon is not None
        k, f = self.kernel, self.frames
        # struct page *newpage = get_new_page(page, private, &result);
        if not cc.freepages:
            await self.isolate_freepages(cc, 1)
        if not cc.freepages:  # if (!newpage) return -ENOMEM;
            return -ENOMEM
        new = cc.freepages.pop()
        # rc = __unmap_and_move(page, newpage, force, offlining, mode):
        # if (!trylock_page(page)) { if (!force || mode == MIGRATE_ASYNC) goto out;
        #         lock_page(page); }
        if not trylock_page(k, f, old):
            if not force:
                cc.freepages.append(new)  # putback_lru_page(newpage): frees it
                return -EAGAIN
            await lock_page(k, f, old)
        if self._injected_migrate_failure(old):
            rc = -EAGAIN
        # if (unlikely(balloon_page_movable(page))) {   never: locked, refcount 2 (no
        #         preemption point: our own page lock fixes the outcome)
        elif balloon_page_movable(f, old, False):
            rc = await balloon_page_migrate(k, f, self.balloon, new, old)
        else:
            # skip_unmap: if (!page_mapped(page)) rc = move_to_new_page(newpage, page, ...);
            rc = await self.move_to_new_page(new, old)
        hs = self.balloon.last_hs
        # unlock: unlock_page(page);
        unlock_page(k, f, old)
        # if (unlikely(rc == MIGRATEPAGE_BALLOON_SUCCESS)) {
        if rc == MIGRATEPAGE_BALLOON_SUCCESS:
            # dec_zone_page_state(...); balloon_page_free(page); return MIGRATEPAGE_SUCCESS;
            f.flags[old] &= ~P.PG_isolated
            balloon_page_free(f, old)
            self._balloon_migrated(cc, old, new, to_free, hs)
            return MIGRATEPAGE_SUCCESS
        # out: (rc == -EAGAIN: the page stays on the list) putback_lru_page(newpage);
        cc.freepages.append(new)
        return rc

    async def move_to_new_page(self, newpage: int, page: int) -> int:
        """move_to_new_page() for a page with a mapping whose a_ops has ``migratepage``."""
        assert self.balloon is not None
        k, f = self.kernel, self.frames
        # if (!trylock_page(newpage)) BUG();
        if not trylock_page(k, f, newpage):
            raise RuntimeError(f"move_to_new_page: newpage {newpage} already locked")
        # newpage->mapping = page->mapping;
        if f.flags[page] & P.PG_balloon:
            f.flags[newpage] |= P.PG_balloon
        # rc = mapping->a_ops->migratepage(mapping, newpage, page, mode);
        rc = await self.balloon.virtballoon_migratepage(newpage, page, 0)
        # if (rc != MIGRATEPAGE_SUCCESS) newpage->mapping = NULL;
        if rc != MIGRATEPAGE_SUCCESS:
            clear_balloon_mapping(f, newpage)
        # else { ...; page->mapping = NULL; }   (never for a balloon page)
        # unlock_page(newpage);
        unlock_page(k, f, newpage)
        return rc

    def _balloon_migrate_fails(self, old: int) -> bool:
        """FAST PATH (not in the C): the driver's migratepage would return -EAGAIN at once."""
        assert self.balloon is not None
        return self.balloon.migratepage_gives_up()

    async def _putback_balloon_page(self, cc: CompactControl, old: int) -> None:
        """putback_movable_pages() for an isolated balloon page that was not migrated."""
        assert self.balloon is not None
        f = self.frames
        mid = self._mids.pop(old, 0)
        # list_del(&page->lru); dec_zone_page_state(page, NR_ISOLATED_ANON + ...);
        # if (unlikely(balloon_page_movable(page))) balloon_page_putback(page);
        await self.kernel.preempt("putback_movable_pages")  # the lockless test, below
        if balloon_page_movable(f, old, self.rmap.owner[old] != 0):
            if await balloon_page_putback(self.kernel, f, self.balloon, old):
                self.vmstat.inc("compact_balloon_returned")
                self.log.info(schema.BALLOON_PUTBACK, worker=cc.worker, mid=mid, pfn=old)
        else:
            # putback_lru_page(page): SetPageLRU, lru_cache_add, put_page (the isolation's)
            f.flags[old] = (f.flags[old] & ~P.PG_isolated) | P.PG_lru
            f.refcount[old] -= 1
            self.log.warning(schema.BALLOON_PUTBACK_LRU, worker=cc.worker, mid=mid, pfn=old)
        self._not_migrated(cc)
