"""The driver before the seed patch (the patch's ``-`` lines, v3.6).

Balloon pages are ``GFP_HIGHUSER``: unmovable, so each pins the pageblock it landed in; there
are no locks and no isolation callbacks -- only the balloon kthread touches ``vb->pages``.
"""

from __future__ import annotations

from actors.guest.balloon.common import DEFLATEQ, INFLATEQ, VirtioBalloon
from actors.guest.mm import gfp as G
from actors.sim import schema
from protocol.balloon import VIRTIO_BALLOON_ARRAY_PFNS_MAX


class LegacyBalloon(VirtioBalloon):
    """virtio_balloon.c at v3.6."""

    gfp_mask = int(G.GFP_HIGHUSER | G.GFP.NORETRY | G.GFP.NOMEMALLOC | G.GFP.NOWARN)

    async def fill_balloon(self, num: int) -> None:
        """fill_balloon() (v3.6)."""
        ppp = self.PAGES_PER_PAGE
        # /* We can only do one array worth at a time. */
        # num = min(num, ARRAY_SIZE(vb->pfns));
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # struct page *page = alloc_page(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOMEMALLOC |
        #                                __GFP_NOWARN);   (the whole round, batched)
        got = await self.alloc_pages(-(-num // ppp), self.gfp_mask)
        i = 0
        # for (vb->num_pfns = 0; vb->num_pfns < num; vb->num_pfns += PAGES_PER_PAGE) {
        self.num_pfns = 0
        while self.num_pfns < num:
            if i == len(got):  # if (!page) {
                await self.puff(num)  # "Out of puff!"; msleep(200);
                break
            page = got[i]
            i += 1
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            self.num_pages.atomic_add(ppp)  # vb->num_pages += VIRTIO_BALLOON_PAGES_PER_PAGE;
            self.meminfo.totalram -= 1  # totalram_pages--;
            self.pages.list_add(page)  # list_add(&page->lru, &vb->pages);
            self.num_pfns += ppp
        # /* Didn't get any?  Oh well. */
        if self.num_pfns == 0:
            return
        self.count_inflated()
        self.log.info(schema.BALLOON_FILL, pfns=self.guest_pages(self.pfns, self.num_pfns),
                      num_pages=self.num_pages.atomic_read())
        await self.tell_host(INFLATEQ)

    async def leak_balloon(self, num: int) -> None:
        """leak_balloon() (v3.6)."""
        ppp = self.PAGES_PER_PAGE
        # num = min(num, ARRAY_SIZE(vb->pfns));
        num = min(num, VIRTIO_BALLOON_ARRAY_PFNS_MAX)
        # for (vb->num_pfns = 0; vb->num_pfns < num; vb->num_pfns += PAGES_PER_PAGE) {
        self.num_pfns = 0
        while self.num_pfns < num:
            page = self.pages.list_first_entry()  # page = list_first_entry(&vb->pages, ...);
            self.pages.list_del(page)  # list_del(&page->lru);
            self.set_page_pfns(self.pfns, self.num_pfns, page)
            self.num_pages.atomic_sub(ppp)  # vb->num_pages -= VIRTIO_BALLOON_PAGES_PER_PAGE;
            self.num_pfns += ppp
        self._leaked(self.pfns, self.num_pfns)
        # /* Note that if virtio_has_feature(vdev, VIRTIO_BALLOON_F_MUST_TELL_HOST);
        #  * is true, we *have* to do it in this order */
        await self.tell_host(DEFLATEQ)
        await self.release_pages_by_pfn(self.pfns, self.num_pfns)
