"""The balloon compaction core as merged in Linux 3.8 (mm/balloon_compaction.c and
include/linux/balloon_compaction.h of 3.8.13), translated function by function and never fixed.

Where the merged code parts from the v9 series (:mod:`actors.guest.mm.balloon_compaction`):
- the page list, its ``pages_lock`` and the ``isolated_pages`` counter live in ``struct
  balloon_dev_info`` (:class:`BalloonDevInfo`), which mm owns; the driver's mapping keeps only
  ``.migratepage`` in its a_ops, and mm isolates and puts back pages itself;
- ``balloon_page_enqueue``/``balloon_page_dequeue`` do the list work for the driver; dequeue
  walks the list *without* ``pages_lock`` and takes an extra reference (``get_page``) that
  ``balloon_page_free`` drops;
- ``balloon_page_movable`` requires ``page_flags_cleared``, ``!page_mapped`` and
  ``page_count == 1``: false for a locked page and for an isolated one (refcount 2), which is
  what makes 3.8's ``__unmap_and_move`` and ``putback_movable_pages`` miss balloon pages
  (:mod:`actors.guest.mm.compaction_38` translates those callers);
- a migrated balloon page is announced by ``MIGRATEPAGE_BALLOON_SUCCESS``.

:class:`BalloonDevInfo` is also what mm calls for a 3.8 balloon (it implements
:class:`~actors.guest.mm.balloon_compaction.BalloonAops`): mm never imports the driver, the
driver hands its ``balloon_dev_info`` over as the mapping's owner, as 3.8 does with
``mapping->private_data``. ``pages_lock`` is taken with ``spin_lock_irqsave`` everywhere, as
the C does: compaction takes it under ``zone->lru_lock``, a lock interrupts take.

Preemption points before lockless reads: ``balloon_page_dequeue`` at every element of its
walk without ``pages_lock``; ``balloon_page_isolate`` before the reference it takes on the
caller's lockless movable test and before its ``page_count`` re-check (the page lock does not
protect the count: other compactors take references without it).
"""

from __future__ import annotations

from typing import Protocol

from actors.guest.mm import pages as P
from actors.guest.mm.balloon_compaction import (
    EAGAIN,
    BalloonAops,
    BalloonError,
    __is_movable_balloon_page,
    assign_balloon_mapping,
    clear_balloon_mapping,
    get_page_unless_zero,
    put_page,
)
from actors.guest.mm.pages import PageFrames, PageList
from actors.kernel.kernel import Kernel
from actors.kernel.locks import SpinLock, lock_page, trylock_page, unlock_page

# include/linux/migrate.h: return values from address_space_operations.migratepage()
MIGRATEPAGE_SUCCESS = 0
MIGRATEPAGE_BALLOON_SUCCESS = 1  # special ret code for balloon page successful migration

#: PAGE_FLAGS_CHECK_AT_PREP ((1 << NR_PAGEFLAGS) - 1): every real page flag of the model.
#: PG_balloon (page->mapping), PG_anon (a mapping bit), PG_isolated, PG_movable and PG_buddy
#: (3.8: _mapcount == -128) stand for state that is not in page->flags.
PAGE_FLAGS_CHECK_AT_PREP = P.PG_locked | P.PG_lru | P.PG_head | P.PG_tail | P.PG_slab | \
    P.PG_reserved


class MigratePage(Protocol):
    """The balloon mapping's a_ops in 3.8: only ``.migratepage`` (virtio_balloon_aops)."""

    @property
    def last_hs(self) -> dict[int, int]: ...

    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int: ...

    def migratepage_gives_up(self) -> bool:
        """FAST PATH (not in the C): whether migratepage would return -EAGAIN at once."""
        ...


# -- include/linux/balloon_compaction.h ------------------------------------------------------
def page_flags_cleared(frames: PageFrames, page: int) -> bool:
    """page_flags_cleared(): return !(page->flags & PAGE_FLAGS_CHECK_AT_PREP);"""
    return not frames.flags[page] & PAGE_FLAGS_CHECK_AT_PREP


def balloon_page_movable(frames: PageFrames, page: int, mapped: bool) -> bool:
    """balloon_page_movable(): the lockless test at compaction's isolation (and, in 3.8, at
    ``__unmap_and_move`` and ``putback_movable_pages``). ``mapped``: page_mapped(page)."""
    # if (page_flags_cleared(page) && !page_mapped(page) && page_count(page) == 1)
    #         return __is_movable_balloon_page(page);
    if page_flags_cleared(frames, page) and not mapped and frames.refcount[page] == 1:
        return __is_movable_balloon_page(frames, page)
    # return false;
    return False


def balloon_page_insert(frames: PageFrames, page: int, head: PageList) -> None:
    """balloon_page_insert(): page->mapping = mapping; list_add(&page->lru, head);"""
    assign_balloon_mapping(frames, page)
    head.list_add(page)


def balloon_page_delete(frames: PageFrames, page: int, head: PageList) -> None:
    """balloon_page_delete(): page->mapping = NULL; list_del(&page->lru);"""
    clear_balloon_mapping(frames, page)
    head.list_del(page)


def balloon_page_free(frames: PageFrames, page: int) -> None:
    """balloon_page_free()'s put_page(page): drop the extra reference dequeue or isolation
    took (the caller's ``__free_page`` is the allocator request)."""
    put_page(frames, page)


# -- mm/balloon_compaction.c -----------------------------------------------------------------
class BalloonDevInfo:
    """``struct balloon_dev_info`` (balloon_devinfo_alloc + balloon_mapping_alloc)."""

    #: 3.8's balloon_page_isolate() has no WARN for a page lost before its lock.
    warn_on_lost_page = False

    def __init__(self, kernel: Kernel, frames: PageFrames, pages: PageList,
                 a_ops: MigratePage) -> None:
        self.kernel = kernel
        self.frames = frames
        # b_dev_info->balloon_device = balloon_dev_descriptor; mapping->a_ops = a_ops;
        self.a_ops = a_ops
        # b_dev_info->isolated_pages = 0;
        self.isolated_pages = 0
        # spin_lock_init(&b_dev_info->pages_lock); INIT_LIST_HEAD(&b_dev_info->pages);
        self.pages_lock = SpinLock(kernel, "b_dev_info->pages_lock")
        self.pages = pages

    @property
    def last_hs(self) -> dict[int, int]:
        """The driver's latest tell_host handshakes (the protocol's log link, not C)."""
        return self.a_ops.last_hs

    async def balloon_page_enqueue(self, page: int) -> int:
        """balloon_page_enqueue() for a page the caller's alloc_page() got (the round's
        allocation is one batched request: see actors.guest.balloon.common)."""
        k, frames = self.kernel, self.frames
        # BUG_ON(!trylock_page(page));
        if not trylock_page(k, frames, page):
            raise BalloonError(f"balloon_page_enqueue: trylock_page({page}) failed")
        # spin_lock_irqsave(&b_dev_info->pages_lock, flags);
        flags = await self.pages_lock.spin_lock_irqsave()
        # balloon_page_insert(page, b_dev_info->mapping, &b_dev_info->pages);
        balloon_page_insert(frames, page, self.pages)
        # spin_unlock_irqrestore(&b_dev_info->pages_lock, flags);
        self.pages_lock.spin_unlock_irqrestore(flags)
        # unlock_page(page);
        unlock_page(k, frames, page)
        # return page;
        return page

    async def balloon_page_dequeue(self) -> int:
        """balloon_page_dequeue(): the first page on the list that can be locked (-1: none).

        The list is walked without ``pages_lock`` (list_for_each_entry_safe): every element
        read is a preemption point. A page taken off the list meanwhile has poisoned links in
        the kernel (list_del: LIST_POISON1/2): following them oopses, modelled as KernelBug.
        """
        k, frames, pages = self.kernel, self.frames, self.pages
        # dequeued_page = false;
        page = -1
        # list_for_each_entry_safe(page, tmp, &b_dev_info->pages, lru) {
        cur = pages.first
        while cur != P.NIL:
            if not pages.list_del_entry_valid(cur):  # a deleted entry: LIST_POISON1
                raise BalloonError(f"balloon_page_dequeue: page {cur} left the list under "
                                   "the lockless walk (LIST_POISON dereference)")
            tmp = pages.lru_next[cur]
            await k.preempt("balloon_page_dequeue")
            # if (trylock_page(page)) {
            if trylock_page(k, frames, cur):
                # spin_lock_irqsave(&b_dev_info->pages_lock, flags);
                flags = await self.pages_lock.spin_lock_irqsave()
                # get_page(page);
                frames.refcount[cur] += 1
                # balloon_page_delete(page);
                if not pages.list_del_entry_valid(cur):
                    raise BalloonError(f"balloon_page_dequeue: list_del corruption at page "
                                       f"{cur} (taken off the list under the walk)")
                balloon_page_delete(frames, cur, pages)
                # spin_unlock_irqrestore(&b_dev_info->pages_lock, flags);
                self.pages_lock.spin_unlock_irqrestore(flags)
                # unlock_page(page);
                unlock_page(k, frames, cur)
                # dequeued_page = true; break;
                page = cur
                break
            cur = tmp
        # if (!dequeued_page) {
        if page < 0:
            # spin_lock_irqsave(&b_dev_info->pages_lock, flags);
            flags = await self.pages_lock.spin_lock_irqsave()
            # if (unlikely(list_empty(&b_dev_info->pages) && !b_dev_info->isolated_pages))
            #         BUG();
            if pages.list_empty() and not self.isolated_pages:
                self.pages_lock.spin_unlock_irqrestore(flags)
                raise BalloonError("balloon_page_dequeue: list empty and nothing isolated: "
                                   "balloon pages lost")
            # spin_unlock_irqrestore(&b_dev_info->pages_lock, flags);
            self.pages_lock.spin_unlock_irqrestore(flags)
        # return page;
        return page

    # -- the protocol mm calls (BalloonAops): the static helpers of balloon_compaction.c --
    async def virtballoon_isolatepage(self, page: int, mode: int) -> None:
        """__isolate_balloon_page(): off the list, counted isolated (under pages_lock)."""
        # spin_lock_irqsave(&b_dev_info->pages_lock, flags);
        flags = await self.pages_lock.spin_lock_irqsave()
        # list_del(&page->lru);
        self.pages.list_del(page)
        # b_dev_info->isolated_pages++;
        self.isolated_pages += 1
        # spin_unlock_irqrestore(&b_dev_info->pages_lock, flags);
        self.pages_lock.spin_unlock_irqrestore(flags)

    async def virtballoon_putbackpage(self, page: int) -> None:
        """__putback_balloon_page(): back on the list, uncounted (under pages_lock)."""
        # spin_lock_irqsave(&b_dev_info->pages_lock, flags);
        flags = await self.pages_lock.spin_lock_irqsave()
        # list_add(&page->lru, &b_dev_info->pages);
        self.pages.list_add(page)
        # b_dev_info->isolated_pages--;
        self.isolated_pages -= 1
        # spin_unlock_irqrestore(&b_dev_info->pages_lock, flags);
        self.pages_lock.spin_unlock_irqrestore(flags)

    async def virtballoon_migratepage(self, newpage: int, page: int, mode: int) -> int:
        """__migrate_balloon_page(): page->mapping->a_ops->migratepage(...)."""
        return await self.a_ops.virtballoon_migratepage(newpage, page, mode)

    def migratepage_gives_up(self) -> bool:
        """FAST PATH (not in the C): the driver's migratepage would return -EAGAIN at once."""
        return self.a_ops.migratepage_gives_up()


async def balloon_page_isolate(kernel: Kernel, frames: PageFrames, b_dev_info: BalloonAops,
                               page: int) -> bool:
    """balloon_page_isolate(): __isolate_lru_page() counterpart for a ballooned page.

    Each step the C takes is separate here: another CPU may act between the caller's lockless
    test and the reference, the reference and the page lock, the lock and the re-check of the
    count (a preemption point before each)."""
    await kernel.preempt("balloon_page_isolate")  # after the caller's lockless movable test
    # if (likely(get_page_unless_zero(page))) {
    if get_page_unless_zero(frames, page):
        await kernel.preempt("balloon_page_isolate")
        # if (likely(trylock_page(page))) {
        if trylock_page(kernel, frames, page):
            await kernel.preempt("balloon_page_isolate")  # page_count(): not the lock's
            # if (__is_movable_balloon_page(page) && page_count(page) == 2) {
            if __is_movable_balloon_page(frames, page) and frames.refcount[page] == 2:
                # __isolate_balloon_page(page);
                await b_dev_info.virtballoon_isolatepage(page, 0)
                frames.flags[page] |= P.PG_isolated  # (model bookkeeping, not a 3.8 flag)
                # unlock_page(page); return true;
                unlock_page(kernel, frames, page)
                return True
            # unlock_page(page);
            unlock_page(kernel, frames, page)
        # put_page(page);
        put_page(frames, page)
    # return false;
    return False


async def balloon_page_putback(kernel: Kernel, frames: PageFrames, b_dev_info: BalloonAops,
                               page: int) -> bool:
    """balloon_page_putback(): putback_lru_page() counterpart; False where the C WARNs."""
    # lock_page(page);
    await lock_page(kernel, frames, page)
    ok = __is_movable_balloon_page(frames, page)
    # if (__is_movable_balloon_page(page)) {
    if ok:
        frames.flags[page] &= ~P.PG_isolated
        # __putback_balloon_page(page);
        await b_dev_info.virtballoon_putbackpage(page)
        # /* drop the extra ref count taken for page isolation */ put_page(page);
        put_page(frames, page)
    # } else { WARN_ON(1); dump_page(page); }   (the caller logs the warning)
    # unlock_page(page);
    unlock_page(kernel, frames, page)
    return ok


async def balloon_page_migrate(kernel: Kernel, frames: PageFrames, b_dev_info: BalloonAops,
                               newpage: int, page: int, mode: int = 0) -> int:
    """balloon_page_migrate(): move_to_new_page() counterpart for a ballooned page. In 3.8
    its only caller's test (``balloon_page_movable`` on a locked, isolated page) is never
    true, so it never runs; translated for completeness."""
    # int rc = -EAGAIN;
    rc = -EAGAIN
    # BUG_ON(!trylock_page(newpage));
    if not trylock_page(kernel, frames, newpage):
        raise BalloonError(f"balloon_page_migrate: newpage {newpage} already locked")
    # if (WARN_ON(!__is_movable_balloon_page(page))) { dump_page(page); unlock_page(newpage);
    #         return rc; }
    if not __is_movable_balloon_page(frames, page):
        unlock_page(kernel, frames, newpage)
        return rc
    # mapping = page->mapping; if (mapping) rc = __migrate_balloon_page(mapping, newpage, ...);
    rc = await b_dev_info.virtballoon_migratepage(newpage, page, mode)
    # unlock_page(newpage);
    unlock_page(kernel, frames, newpage)
    return rc
