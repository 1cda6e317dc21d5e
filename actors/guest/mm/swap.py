"""mm/swap.c's LRU rotation at the end of writeback: what an end-I/O interrupt does to the LRU.

When writeback of a page that reclaim marked ``PG_reclaim`` completes, ``end_page_writeback``
calls ``rotate_reclaimable_page``: the page goes to the tail of its inactive list, the next
to be reclaimed. The bio completion runs in interrupt context, so the per-CPU pagevec is
drained -- ``pagevec_move_tail`` -- under ``spin_lock_irqsave(&zone->lru_lock)`` from a
hardirq handler: this is what makes ``zone->lru_lock`` a HARDIRQ-safe lock, and every lock
taken with it held (compaction's balloon isolation) must be HARDIRQ-safe too.

What is modelled (``LruRotate``; the guest's ``irq/end_io`` task raises the interrupts): the
per-CPU pagevec of ``PAGEVEC_SIZE`` pages, the lock taken once per full pagevec in the
handler's context, the ``PageLRU`` re-check under it, ``pgrotated``. What is not: the model
has no LRU lists, so a rotation changes no page state; the pagevec's page reference
(``page_cache_get`` ... ``release_pages``) is left out, as it would outlive the interrupt and
stand in for no reference the rest of the model knows (a page freed or migrated meanwhile
fails the re-check, or is counted as a rotation of the page now at that PFN: harmless, it
only counts).
"""

from __future__ import annotations

from typing import Final

from actors.guest.mm import pages as P
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.vmstat import VmStat
from actors.kernel.irq import local_irq_restore, local_irq_save
from actors.kernel.kernel import Kernel
from actors.kernel.locks import SpinLock

#: include/linux/pagevec.h: 14 pointers make the struct 128 bytes.
PAGEVEC_SIZE: Final = 14


class LruRotate:
    """``lru_rotate_pvecs`` (one CPU) and the functions of mm/swap.c that fill and drain it."""

    __slots__ = ("frames", "kernel", "lru_lock", "pvec", "vmstat")

    def __init__(self, kernel: Kernel, frames: PageFrames, lru_lock: SpinLock,
                 vmstat: VmStat) -> None:
        self.kernel = kernel
        self.frames = frames
        self.lru_lock = lru_lock
        self.vmstat = vmstat
        #: The per-CPU pagevec: pages waiting for the next ``pagevec_move_tail``.
        self.pvec: list[int] = []

    async def rotate_reclaimable_page(self, page: int) -> None:
        """rotate_reclaimable_page(): queue a written-back page for the LRU tail; a full
        pagevec is moved at once, under ``zone->lru_lock``."""
        k = self.kernel
        fl = self.frames.flags[page]
        # if (!PageLocked(page) && !PageDirty(page) && !PageActive(page) &&
        #     !PageUnevictable(page) && PageLRU(page)) {   (no dirty/active/unevictable here)
        if fl & P.PG_locked or not fl & P.PG_lru:
            return
        # page_cache_get(page);   (not modelled: see the module doc)
        # local_irq_save(flags);
        flags = local_irq_save(k)
        # pvec = &__get_cpu_var(lru_rotate_pvecs);
        # if (!pagevec_add(pvec, page)) pagevec_move_tail(pvec);
        self.pvec.append(page)
        if len(self.pvec) == PAGEVEC_SIZE:
            await self.pagevec_move_tail()
        # local_irq_restore(flags);
        local_irq_restore(k, flags)

    async def pagevec_move_tail(self) -> None:
        """pagevec_move_tail(): pagevec_lru_move_fn(pvec, pagevec_move_tail_fn, &pgmoved)
        over the model's one zone, then count PGROTATED."""
        flags_of = self.frames.flags
        pgmoved = 0
        # (pagevec_lru_move_fn) if (pagezone != zone) { ...;
        #         spin_lock_irqsave(&zone->lru_lock, flags); }   (one zone: once)
        flags = await self.lru_lock.spin_lock_irqsave()
        for page in self.pvec:
            # pagevec_move_tail_fn(): if (PageLRU(page) && !PageActive(page) &&
            #     !PageUnevictable(page)) { list_move_tail(...); (*pgmoved)++; }
            if flags_of[page] & P.PG_lru:
                pgmoved += 1
        # if (zone) spin_unlock_irqrestore(&zone->lru_lock, flags);
        self.lru_lock.spin_unlock_irqrestore(flags)
        # release_pages(pvec->pages, pvec->nr, pvec->cold); pagevec_reinit(pvec);
        self.pvec.clear()
        # __count_vm_events(PGROTATED, pgmoved);
        self.vmstat.inc("pgrotated", pgmoved)
