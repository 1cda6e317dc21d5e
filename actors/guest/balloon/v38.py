"""The driver as merged in Linux 3.8 (drivers/virtio/virtio_balloon.c of 3.8.13), never fixed.

Function by function, the C lines beside the Python. The balloon's list, ``pages_lock`` and
``isolated_pages`` are in mm's ``struct balloon_dev_info``
(:class:`~actors.guest.mm.balloon_compaction_38.BalloonDevInfo`), which the driver fills and
drains through ``balloon_page_enqueue``/``balloon_page_dequeue``; ``num_pages`` is a plain
``unsigned int`` (an ``Atomic`` here only for the shared views: the model's atomics are plain
integers, so the two behave alike). The mapping's a_ops have only ``migratepage``; compaction
runs 3.8's hooks (:class:`~actors.guest.mm.compaction_38.Compactor38`).

Where 3.8 reads shared state outside the lock that protects it there is a preemption point,
named by its C function, before the read: besides the shared ones of ``common.py``
(``towards_target``, ...), ``release_pages_by_pfn`` (between ``leak_balloon``'s
``mutex_unlock`` and its ``release_pages_by_pfn(vb->pfns, ...)``, which reads the shared
``vb->pfns`` without ``balloon_lock``) and mm's (``balloon_page_dequeue`` at each element of
its lockless walk, ``balloon_page_isolate``, ``balloon_page_movable``,
``putback_movable_pages``). ``pages_lock`` is taken with ``spin_lock_irqsave``, as merged.
"""

from __future__ import annotations

import array
from typing import ClassVar

from actors.guest.balloon.common import DEFLATEQ, INFLATEQ, VirtioBalloon
from actors.guest.mm import gfp as G
from actors.guest.mm.balloon_compaction import EAGAIN, clear_balloon_mapping
from actors.guest.mm.balloon_compaction_38 import (
    MIGRATEPAGE_BALLOON_SUCCESS,
    BalloonDevInfo,
    balloon_page_free,
    balloon_page_insert,
)
from actors.guest.mm.compaction import Compactor
from actors.guest.mm.compaction_38 import Compactor38
from actors.kernel.lockdep import context
from actors.kernel.locks import Mutex
from actors.sim import schema
from protocol.balloon import VIRTIO_BALLOON_ARRAY_PFNS_MAX


class V38Balloon(VirtioBalloon):
    """virtio_balloon.c of Linux 3.8.13 (CONFIG_BALLOON_COMPACTION=y)."""

    # balloon_mapping_gfp_mask(): GFP_HIGHUSER_MOVABLE
    gfp_mask = int(G.GFP_HIGHUSER_MOVABLE)
    compactor_class: ClassVar[type[Compactor]] = Compactor38

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        # vb->num_pages = 0; mutex_init(&vb->balloon_lock);
        self.balloon_lock = Mutex(self.kernel, "vb->balloon_lock")
        # vb_devinfo = balloon_devinfo_alloc(vb);
        # vb_mapping = balloon_mapping_alloc(vb_devinfo, &virtio_balloon_aops);
        # vb->vb_dev_info = vb_devinfo;   (its list is the one the views read: self.pages)
        self.vb_dev_info = BalloonDevInfo(self.kernel, self.frames, self.pages, self)
        # page->mapping->private_data: what mm reaches for a balloon page
        self.a_ops = self.vb_dev_info

    # ---------------------------------------------------------------- fill_balloon
    @context()
    async def fill_balloon(self, num: int) -> None:
        """fill_balloon(): enqueue pages under balloon_lock; tell the host if we got any."""
        ppp = self.PAGES_PER_PAGE
        # struct balloon_dev_info *vb_dev_info = vb->vb_dev_info;
        vb_dev_info = self.vb_dev_info
        # /* We can only do one array worth at a time. */
        # num = min(num, ARRAY_SIZE(vb->pfns));
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        # balloon_page_enqueue(): alloc_page(balloon_mapping_gfp_mask() | __GFP_NOMEMALLOC |
        #                                   __GFP_NORETRY);   (the whole round, batched)
        got = await self.alloc_pages(-(-num // ppp),
                                     self.gfp_mask | G.GFP_NOMEMALLOC_FLAG | G.GFP_NORETRY_FLAG)
        if got:  # logged before the first page goes on the list (see schema.BALLOON_FILL)
            self.log.info(schema.BALLOON_FILL, pfns=got,
                          num_pages=self.num_pages.atomic_read() + len(got) * ppp)
        i = 0
        # for (vb->num_pfns = 0; vb->num_pfns < num;
        #      vb->num_pfns += VIRTIO_BALLOON_PAGES_PER_PAGE) {
        self.num_pfns = 0
        while self.num_pfns < num:
            # struct page *page = balloon_page_enqueue(vb_dev_info);
            # if (!page) { dev_info_ratelimited(&vb->vdev->dev, "Out of puff! Can't get %u
            #         pages\n", VIRTIO_BALLOON_PAGES_PER_PAGE); msleep(200); break; }
            if i == len(got):
                await self.puff(ppp)
                break
            page = await vb_dev_info.balloon_page_enqueue(got[i])
            i += 1
            # set_page_pfns(vb->pfns + vb->num_pfns, page);
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            # vb->num_pages += VIRTIO_BALLOON_PAGES_PER_PAGE;
            self.num_pages.atomic_add(ppp)
            # totalram_pages--;
            self.meminfo.totalram -= 1
            self.num_pfns += ppp
        # /* Did we get any? */
        # if (vb->num_pfns != 0)
        #         tell_host(vb, vb->inflate_vq);
        if self.num_pfns != 0:
            self.count_inflated()
            await self.tell_host(INFLATEQ)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()

    # ---------------------------------------------------------------- leak_balloon
    @context()
    async def leak_balloon(self, num: int) -> None:
        """leak_balloon(): dequeue under balloon_lock, tell the host (even of no page), then
        release ``vb->pfns`` after the unlock."""
        ppp = self.PAGES_PER_PAGE
        vb_dev_info = self.vb_dev_info
        # /* We can only do one array worth at a time. */
        # num = min(num, ARRAY_SIZE(vb->pfns));
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # mutex_lock(&vb->balloon_lock);
        await self.balloon_lock.mutex_lock()
        # for (vb->num_pfns = 0; vb->num_pfns < num;
        #      vb->num_pfns += VIRTIO_BALLOON_PAGES_PER_PAGE) {
        self.num_pfns = 0
        while self.num_pfns < num:
            # page = balloon_page_dequeue(vb_dev_info);
            page = await vb_dev_info.balloon_page_dequeue()
            # if (!page) break;
            if page < 0:
                break
            # set_page_pfns(vb->pfns + vb->num_pfns, page);
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            # vb->num_pages -= VIRTIO_BALLOON_PAGES_PER_PAGE;
            self.num_pages.atomic_sub(ppp)
            self.num_pfns += ppp
        self._leaked(self.pfns, self.num_pfns)
        # /* Note that if virtio_has_feature(vdev, VIRTIO_BALLOON_F_MUST_TELL_HOST);
        #  * is true, we *have* to do it in this order */
        # tell_host(vb, vb->deflate_vq);
        await self.tell_host(DEFLATEQ)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()
        # release_pages_by_pfn(vb->pfns, vb->num_pfns);   (vb->pfns read without the lock)
        await self.kernel.preempt("release_pages_by_pfn")
        await self.release_pages_by_pfn(self.pfns, self.num_pfns)

    async def release_pages_by_pfn(self, pfns: array.array[int], num: int) -> None:
        """release_pages_by_pfn(): balloon_page_free() each page: put_page, __free_page."""
        # for (i = 0; i < num; i += VIRTIO_BALLOON_PAGES_PER_PAGE)
        #         balloon_page_free(balloon_pfn_to_page(pfns[i]));  (its put_page here)
        for page in self.guest_pages(pfns, num):
            balloon_page_free(self.frames, page)
        await super().release_pages_by_pfn(pfns, num)

    # ---------------------------------------------------------------- virtballoon_migratepage
    @context()
    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int:
        """virtballoon_migratepage(): called under both page locks; gives up (-EAGAIN) if
        balloon_lock is busy."""
        frames, ppp = self.frames, self.PAGES_PER_PAGE
        # struct balloon_dev_info *vb_dev_info = balloon_page_device(page); BUG_ON(!vb_dev_info);
        vb_dev_info = self.vb_dev_info
        # if (!mutex_trylock(&vb->balloon_lock))
        #         return -EAGAIN;
        if not self.balloon_lock.mutex_trylock():
            return -EAGAIN
        # /* balloon's page migration 1st step  -- inflate "newpage" */
        # spin_lock_irqsave(&vb_dev_info->pages_lock, flags);
        flags = await vb_dev_info.pages_lock.spin_lock_irqsave()
        # balloon_page_insert(newpage, mapping, &vb_dev_info->pages);
        balloon_page_insert(frames, newpage, vb_dev_info.pages)
        # vb_dev_info->isolated_pages--;
        vb_dev_info.isolated_pages -= 1
        # spin_unlock_irqrestore(&vb_dev_info->pages_lock, flags);
        vb_dev_info.pages_lock.spin_unlock_irqrestore(flags)
        # vb->num_pfns = VIRTIO_BALLOON_PAGES_PER_PAGE;
        self.num_pfns = ppp
        # set_page_pfns(vb->pfns, newpage);
        self.set_page_pfns(self.pfns, 0, newpage)
        # tell_host(vb, vb->inflate_vq);
        await self.tell_host(INFLATEQ)
        # /* balloon's page migration 2nd step -- deflate "page" */
        # balloon_page_delete(page);   (its list_del takes it off compaction's migratepages
        #                               list, a Python list in the model: the mapping only)
        clear_balloon_mapping(frames, page)
        # vb->num_pfns = VIRTIO_BALLOON_PAGES_PER_PAGE;
        self.num_pfns = ppp
        # set_page_pfns(vb->pfns, page);
        self.set_page_pfns(self.pfns, 0, page)
        # tell_host(vb, vb->deflate_vq);
        await self.tell_host(DEFLATEQ)
        # mutex_unlock(&vb->balloon_lock);
        self.balloon_lock.mutex_unlock()
        # return MIGRATEPAGE_BALLOON_SUCCESS;
        return MIGRATEPAGE_BALLOON_SUCCESS

    def migratepage_gives_up(self) -> bool:
        """FAST PATH (not in the C): the mutex_trylock above would fail."""
        return self.balloon_lock.mutex_is_locked()

    def isolated(self) -> int:
        return self.vb_dev_info.isolated_pages
