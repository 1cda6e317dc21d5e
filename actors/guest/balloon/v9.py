"""The seed patch, exactly as written, defects included: [PATCH v9 3/5] virtio_balloon.

Function by function, with the C lines each block models in comments. Nothing here is fixed:
its value is that it behaves like the patch (corrections live in ``fixed.py``). Preemption
points (``kernel.preempt``) mark where another CPU could interleave in the real kernel: every
blocking lock operation, and every read of shared state outside the lock that protects it
(named by its C function, before the read): besides the shared ones of ``common.py``,
``__wait_on_isolated_pages`` (its wait condition reads ``num_isolated_pages`` and
``num_pages`` after dropping ``pages_lock``). The list reads of ``leak_balloon`` are under
``pages_lock`` and have none.

``vb->pages_lock`` is a plain ``spin_lock`` everywhere, hardirqs on: compaction (3.6's
scanner) calls ``virtballoon_isolatepage`` with ``zone->lru_lock`` held, which end-I/O
completions take in hardirq context, so lockdep reports ``HARDIRQ-safe -> HARDIRQ-unsafe lock
order`` (``zone->lru_lock`` -> ``vb->pages_lock``): an interrupt on the CPU holding
``pages_lock`` can spin on ``lru_lock`` held by a compactor spinning on ``pages_lock``
(FIX(pages-lock-irq) in ``fixed.py``; 3.8 takes it with ``spin_lock_irqsave``).
"""

from __future__ import annotations

import array
from typing import ClassVar

import numpy as np

from actors.guest.balloon.common import DEFLATEQ, INFLATEQ, KernelBug, VirtioBalloon
from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm.balloon_compaction import (
    BALLOON_MIGRATION_RETURN,
    assign_balloon_mapping,
    clear_balloon_mapping,
)
from actors.kernel.lockdep import context
from actors.kernel.locks import Atomic, Mutex, SpinLock, trylock_page, unlock_page
from actors.sim import schema
from protocol.balloon import VIRTIO_BALLOON_ARRAY_PFNS_MAX
from protocol.pfns import as_index


class V9Balloon(VirtioBalloon):
    """virtio_balloon.c with [PATCH v9 3/5] applied."""

    # gfp_t vb_gfp_mask = mapping_gfp_mask(vb->mapping);  (balloon_mapping_gfp_mask())
    gfp_mask = int(G.GFP_HIGHUSER_MOVABLE)
    #: The series' isolate_balloon_page(): dump_page(); __WARN(); on a page that stopped being
    #: a balloon page between its reference and its lock (part of the patch series as posted).
    warn_on_lost_page: ClassVar[bool] = True

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        k = self.kernel
        # mutex_init(&vb->balloon_lock); spin_lock_init(&vb->pages_lock);
        self.balloon_lock = Mutex(k, "vb->balloon_lock")
        self.pages_lock = SpinLock(k, "vb->pages_lock")
        # atomic_set(&vb->num_pages, 0); atomic_set(&vb->num_isolated_pages, 0);
        self.num_pages = Atomic(0)
        self.num_isolated_pages = Atomic(0)
        #: page->flags as a numpy view, for the batched fast paths (not C).
        self._flags = np.frombuffer(self.frames.flags, dtype=np.uint16)
        # virtballoon_probe(): vb->mapping = alloc_balloon_mapping(vb, &virtio_balloon_aops);
        self.a_ops = self

    # ---------------------------------------------------------------- fill_balloon (@@ -122,13)
    @context()
    async def fill_balloon(self, num: int) -> None:
        """fill_balloon() as patched."""
        # /* Get the proper GFP alloc mask from vb->mapping flags */
        # gfp_t vb_gfp_mask = mapping_gfp_mask(vb->mapping);
        vb_gfp_mask = self.gfp_mask
        # /* We can only do one array worth at a time. */
        # num = min(num, ARRAY_SIZE(vb->pfns));
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        await self._fill_balloon_loop(num, vb_gfp_mask)
        # /* Didn't get any? Oh well. */
        # if (vb->num_pfns == 0)
        #         return;                       <- returns with balloon_lock held
        if self.num_pfns == 0:
            return
        # tell_host(vb, vb->inflate_vq);
        await self.tell_host(INFLATEQ)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()

    async def _fill_balloon_loop(self, num: int, vb_gfp_mask: int) -> None:
        """fill_balloon()'s for loop (split out so ``fixed`` reuses it verbatim)."""
        k, ppp, frames = self.kernel, self.PAGES_PER_PAGE, self.frames
        # struct page *page = alloc_page(vb_gfp_mask | __GFP_NORETRY | __GFP_NOWARN |
        #                                __GFP_NOMEMALLOC);   (the whole round, batched)
        got = await self.alloc_pages(
            -(-num // ppp),
            vb_gfp_mask | G.GFP_NORETRY_FLAG | G.GFP_NOWARN_FLAG | G.GFP_NOMEMALLOC_FLAG)
        if got:
            # Logged before the first page goes on vb->pages (the loop below puts every page
            # it got there): compaction may isolate them from then on, also while an "Out of
            # puff" round sleeps, and its records must not come before this one.
            self.log.info(schema.BALLOON_FILL, pfns=got,
                          num_pages=self.num_pages.atomic_read() + len(got) * ppp)
        i = 0
        # for (vb->num_pfns = 0; vb->num_pfns < num; vb->num_pfns += PAGES_PER_PAGE) {
        self.num_pfns = 0
        while self.num_pfns < num:
            if i == len(got):  # if (!page) {
                # if (printk_ratelimit()) dev_printk(KERN_INFO, &vb->vdev->dev,
                #     "Out of puff! Can't get %zu pages\n", num);  msleep(200);
                await self.puff(num)
                break
            page = got[i]
            i += 1
            # set_page_pfns(vb->pfns + vb->num_pfns, page);
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            # totalram_pages--;
            self.meminfo.totalram -= 1
            # BUG_ON(!trylock_page(page));
            if not trylock_page(k, frames, page):
                raise KernelBug(f"fill_balloon: trylock_page({page}) failed")
            # spin_lock(&vb->pages_lock);
            await self.pages_lock.spin_lock()
            # list_add(&page->lru, &vb->pages);
            self.pages.list_add(page)
            # assign_balloon_mapping(page, vb->mapping);
            assign_balloon_mapping(frames, page)
            # atomic_add(VIRTIO_BALLOON_PAGES_PER_PAGE, &vb->num_pages);
            self.num_pages.atomic_add(ppp)
            # spin_unlock(&vb->pages_lock);
            self.pages_lock.spin_unlock()
            # unlock_page(page);
            unlock_page(k, frames, page)
            self.num_pfns += ppp
            if self._uncontended():  # FAST PATH (not C): see _fill_batch
                i = self._fill_batch(got, i, num)
        if self.num_pfns:
            self.count_inflated()

    # ------------------------------------------------- fast paths (not in the C code)
    # When no other task can run between two iterations of a loop below -- no seeded
    # perturbation, no debug records to interleave, pages_lock free, so every lock operation
    # would succeed at once without a scheduling point -- the loop's remaining iterations are
    # executed in one batch. The resulting state is exactly what the per-page loop produces;
    # the first iteration always runs the translated code, so lockdep sees every lock order.
    def _uncontended(self) -> bool:
        k = self.kernel
        return not k.perturb.active and not k.debug and self.pages_lock.owner is None

    def _fill_batch(self, got: array.array[int], i: int, num: int) -> int:
        """The rest of fill_balloon's loop for pages got[i:]; returns the new index."""
        ppp = self.PAGES_PER_PAGE
        n = min(len(got) - i, -(-(num - self.num_pfns) // ppp))
        if n <= 0:
            return i
        flags = self._flags
        batch = got[i:i + n]
        g = as_index(batch)
        f = flags.take(g)  # take/put: fancy indexing without its dispatch cost
        locked = f & P.PG_locked
        ok = int(locked.argmax()) if np.count_nonzero(locked) else n  # pages before BUG_ON
        if ok < n:
            batch, g, f = batch[:ok], g[:ok], f[:ok]
        # assign_balloon_mapping(page, vb->mapping);  (the allocator set the owner code)
        flags.put(g, f | P.PG_balloon)
        self.pages.list_add_many(batch)  # list_add(&page->lru, &vb->pages);
        self._set_pfns_batch(self.pfns, self.num_pfns, batch)
        self.meminfo.totalram -= ok
        self.num_pages.atomic_add(ok * ppp)
        self.num_pfns += ok * ppp
        if ok < n:  # set_page_pfns; totalram--; BUG_ON(!trylock_page(page)) at the locked page
            page = got[i + ok]
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            self.meminfo.totalram -= 1
            raise KernelBug(f"fill_balloon: trylock_page({page}) failed")
        return i + n

    def _leak_batch(self, pfns: array.array[int], num_pfns: int, num: int) -> int:
        """The rest of leak_balloon's loop while nothing is isolated; returns num_pfns."""
        ppp, frames = self.PAGES_PER_PAGE, self.frames
        want = -(-(num - num_pfns) // ppp)
        # list_del(&page->lru) from the head, up to a page trylock_page() would fail on
        taken = self.pages.list_del_first_many(want, frames.flags, P.PG_locked)
        if taken:
            g, flags = as_index(taken), self._flags
            flags.put(g, flags.take(g) & (~P.PG_balloon & 0xFFFF))  # clear_balloon_mapping()
            self._set_pfns_batch(pfns, num_pfns, taken)
            self.num_pages.atomic_sub(len(taken) * ppp)
        return num_pfns + len(taken) * ppp

    # ------------------------------------------------- __wait_on_isolated_pages (@@ -162,19)
    def _pages_at_balloon_list(self) -> int:
        """__pages_at_balloon_list(): num_pages - num_isolated_pages (C name: leading __)."""
        # return atomic_read(&vb->num_pages) - atomic_read(&vb->num_isolated_pages);
        return self.num_pages.atomic_read() - self.num_isolated_pages.atomic_read()

    async def _wait_on_isolated_pages(self, leak_target: int) -> None:
        """__wait_on_isolated_pages(): called under spin_lock(&vb->pages_lock) (C name: __)."""
        # if (!atomic_read(&vb->num_isolated_pages) ||
        #     leak_target < __pages_at_balloon_list(vb))
        #         return;
        if (not self.num_isolated_pages.atomic_read()
                or leak_target < self._pages_at_balloon_list()):
            return
        # spin_unlock(&vb->pages_lock);
        self.pages_lock.spin_unlock()
        # wait_event(vb->config_change,
        #            (!atomic_read(&vb->num_isolated_pages) ||
        #             leak_target <= __pages_at_balloon_list(vb)));
        await self.config_change.wait_event(
            lambda: (not self.num_isolated_pages.atomic_read()
                     or leak_target <= self._pages_at_balloon_list()),
            reads="__wait_on_isolated_pages")  # the counters, read without pages_lock
        # spin_lock(&vb->pages_lock);
        await self.pages_lock.spin_lock()

    # ---------------------------------------------------------------- leak_balloon
    @context()
    async def leak_balloon(self, num: int) -> None:
        """leak_balloon() as patched."""
        k, ppp, frames = self.kernel, self.PAGES_PER_PAGE, self.frames
        # /* The array of pfns we tell the Host about. */
        # u32 pfns[VIRTIO_BALLOON_ARRAY_PFNS_MAX];
        pfns = array.array("I", bytes(4 * VIRTIO_BALLOON_ARRAY_PFNS_MAX))
        num_pfns = 0
        # /* We can only do one array worth at a time. */
        # size_t leak_target = num = min(num, ARRAY_SIZE(pfns));
        leak_target = num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # while (num_pfns < num) {
        while num_pfns < num:
            page = -1  # struct page *page = NULL;
            # spin_lock(&vb->pages_lock);
            await self.pages_lock.spin_lock()
            # __wait_on_isolated_pages(vb, leak_target);
            await self._wait_on_isolated_pages(leak_target)
            # if (!list_empty(&vb->pages))
            #         page = list_first_entry(&vb->pages, struct page, lru);
            if not self.pages.list_empty():
                page = self.pages.list_first_entry()
            # if (page && trylock_page(page)) {
            busy = page  # the head page, if its lock is the one this loop now polls
            if page >= 0 and trylock_page(k, frames, page):
                num_pfns = self._leak_page(pfns, num_pfns, page)
                # /* compensate leak_target for this released page */
                # leak_target--;
                leak_target -= 1
                busy = -1
            else:
                page = -1
            # spin_unlock(&vb->pages_lock);
            self.pages_lock.spin_unlock()
            if (page >= 0 and self._uncontended()
                    and not self.num_isolated_pages.atomic_read()):
                before = num_pfns  # FAST PATH (not C): see _leak_batch
                num_pfns = self._leak_batch(pfns, num_pfns, num)
                leak_target -= (num_pfns - before) // ppp
            if page < 0:  # no page taken this turn: the loop spins, and spinning costs time
                # (polling the head page's lock: it re-tries the moment that lock is free)
                await k.cpu_relax(page=busy if busy >= 0 else None)
        self._leaked(pfns, num_pfns)
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        await self._leak_balloon_tell(pfns, num_pfns, num)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()

    def _leak_page(self, pfns: array.array[int], num_pfns: int, page: int) -> int:
        """leak_balloon()'s body for a page it locked (``fixed`` reuses it); new num_pfns."""
        # clear_balloon_mapping(page);
        clear_balloon_mapping(self.frames, page)
        # list_del(&page->lru);
        self.pages.list_del(page)
        # set_page_pfns(pfns + num_pfns, page);
        self.set_page_pfns(pfns, num_pfns, page)
        # atomic_sub(VIRTIO_BALLOON_PAGES_PER_PAGE, &vb->num_pages);
        self.num_pages.atomic_sub(self.PAGES_PER_PAGE)
        # unlock_page(page);   (after num_pfns += VIRTIO_BALLOON_PAGES_PER_PAGE; no reader between)
        unlock_page(self.kernel, self.frames, page)
        # num_pfns += VIRTIO_BALLOON_PAGES_PER_PAGE;
        return num_pfns + self.PAGES_PER_PAGE

    async def _leak_balloon_tell(self, pfns: array.array[int], num_pfns: int, num: int) -> None:
        """leak_balloon()'s tail under balloon_lock (split out so ``fixed`` reuses it verbatim)."""
        # for (i = 0; i < num; i++)
        #         vb->pfns[i] = pfns[i];      (the same copy, as one slice assignment)
        self.pfns[:num] = pfns[:num]
        # vb->num_pfns = num_pfns;
        self.num_pfns = num_pfns
        # tell_host(vb, vb->deflate_vq);
        await self.tell_host(DEFLATEQ)
        # release_pages_by_pfn(pfns, num_pfns);
        await self.release_pages_by_pfn(pfns, num_pfns)

    # ---------------------------------------------------------------- stats_handle_request
    @context()
    async def stats_handle_request(self) -> None:
        """stats_handle_request() as patched: the body under balloon_lock."""
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        # vb->need_stats_update = 0; update_balloon_stats(vb);
        # vq = vb->stats_vq; if (!virtqueue_get_buf(vq, &len)) return;   <- balloon_lock held
        # sg_init_one(...); virtqueue_add_buf(...); virtqueue_kick(vq);
        if not await self._stats_handle_request_body():
            return
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()

    # towards_target(), update_balloon_size(): atomic_read(&vb->num_pages), as in common.py

    # ------------------------------------------------- compaction callbacks (@@ -339,9)
    @context()
    async def virtballoon_isolatepage(self, page: int, mode: int) -> None:
        """virtballoon_isolatepage(): must be called under page lock."""
        # struct virtio_balloon *vb = __page_balloon_device(page); BUG_ON(!vb);
        # spin_lock(&vb->pages_lock);
        await self.pages_lock.spin_lock()
        # list_del(&page->lru);
        self.pages.list_del(page)
        # atomic_inc(&vb->num_isolated_pages);
        self.num_isolated_pages.atomic_inc()
        # spin_unlock(&vb->pages_lock);
        self.pages_lock.spin_unlock()

    @context()
    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int:
        """virtballoon_migratepage(): must be called under page lock (old and new)."""
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        await self._virtballoon_migratepage_locked(newpage, page)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()
        # wake_up(&vb->config_change);
        self.config_change.wake_up()
        # return BALLOON_MIGRATION_RETURN;
        return BALLOON_MIGRATION_RETURN

    def migratepage_gives_up(self) -> bool:
        """FAST PATH (not in the C): never -- v9's migratepage sleeps on ``balloon_lock``."""
        return False

    async def _virtballoon_migratepage_locked(self, newpage: int, page: int) -> None:
        """virtballoon_migratepage()'s two steps under balloon_lock (``fixed`` reuses them)."""
        frames, ppp = self.frames, self.PAGES_PER_PAGE
        # /* balloon's page migration 1st step */
        # vb->num_pfns = VIRTIO_BALLOON_PAGES_PER_PAGE;
        self.num_pfns = ppp
        # spin_lock(&vb->pages_lock);
        await self.pages_lock.spin_lock()
        # list_add(&newpage->lru, &vb->pages);
        self.pages.list_add(newpage)
        # assign_balloon_mapping(newpage, mapping);
        assign_balloon_mapping(frames, newpage)
        # atomic_dec(&vb->num_isolated_pages);
        self.num_isolated_pages.atomic_dec()
        # spin_unlock(&vb->pages_lock);
        self.pages_lock.spin_unlock()
        # set_page_pfns(vb->pfns, newpage);
        self.set_page_pfns(self.pfns, 0, newpage)
        # tell_host(vb, vb->inflate_vq);
        await self.tell_host(INFLATEQ)
        # /* balloon's page migration 2nd step */
        # vb->num_pfns = VIRTIO_BALLOON_PAGES_PER_PAGE;
        self.num_pfns = ppp
        # clear_balloon_mapping(page);
        clear_balloon_mapping(frames, page)
        # set_page_pfns(vb->pfns, page);
        self.set_page_pfns(self.pfns, 0, page)
        # tell_host(vb, vb->deflate_vq);
        await self.tell_host(DEFLATEQ)

    @context()
    async def virtballoon_putbackpage(self, page: int) -> None:
        """virtballoon_putbackpage(): must be called under page lock."""
        # spin_lock(&vb->pages_lock);
        await self.pages_lock.spin_lock()
        # list_add(&page->lru, &vb->pages);
        self.pages.list_add(page)
        # atomic_dec(&vb->num_isolated_pages);
        self.num_isolated_pages.atomic_dec()
        # spin_unlock(&vb->pages_lock);
        self.pages_lock.spin_unlock()
        # wake_up(&vb->config_change);
        self.config_change.wake_up()

    def isolated(self) -> int:
        return self.num_isolated_pages.atomic_read()

    # ---------------------------------------------------------------- remove_common
    async def remove_common(self) -> None:
        """remove_common(): there might be pages left in the balloon: free them."""
        # while ((num_pages = atomic_read(&vb->num_pages)) > 0)
        #         leak_balloon(vb, num_pages);
        while (num_pages := self.num_pages.atomic_read()) > 0:
            await self.leak_balloon(num_pages)
        # update_balloon_size(vb);
        await self.update_balloon_size()
        await self.reset_device()
