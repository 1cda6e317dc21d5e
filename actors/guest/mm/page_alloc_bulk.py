"""The batched fast paths of the zone: many blocks per call, one walk of the free lists.

Not in the kernel (its nearest are ``alloc_pages_bulk`` of 5.13+ and ``free_pcppages_bulk``):
the allocator actor serves batched requests, and a balloon inflates or deflates thousands of
pages at a time.  Each call leaves exactly the state the same sequence of single-block calls
(:meth:`ZoneCore.rmqueue` / :meth:`ZoneCore.free_pages_block`) would; the tests compare them.
Hot paths: arrays by PFN, slices and numpy where a run of pages is one value, no Python object
per page.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, MutableSequence
from itertools import islice
from typing import Final

import numpy as np

from actors.guest.mm.gfp import (
    GFP_MOVABLE_MASK,
    GFP_MOVABLE_SHIFT,
    MAX_ORDER,
    MIGRATE_PCPTYPES,
    pageblock_nr_pages,
    pageblock_order,
)
from actors.guest.mm.page_alloc import BuddyError, ZoneCore
from actors.guest.mm.page_alloc_fallback import FALLBACK_RETRY
from actors.guest.mm.pages import (
    NIL,
    OWNER_FREE,
    OWNER_PAGE_FLAGS,
    PAGE_FLAGS_CHECK_AT_FREE,
    PG_buddy,
)

# Constant runs of a pageblock's length, for _free_run's whole-block checks and writes.
_IOTA: Final = np.arange(pageblock_nr_pages, dtype=np.uint32)
_ONE_REF: Final = array("h", [1]) * pageblock_nr_pages
_NO_REF: Final = array("h", bytes(2 * pageblock_nr_pages))
_NO_FLAGS: Final = array("H", bytes(2 * pageblock_nr_pages))


class ZoneBulk(ZoneCore):
    """``alloc_pages_bulk`` and ``free_pages_bulk`` of :class:`~actors.guest.mm.mmzone.Zone`."""

    __slots__ = ()

    def alloc_pages_bulk(
        self, n: int, order: int, gfp: int, owner: int, out: MutableSequence[int]
    ) -> int:
        """Allocate up to ``n`` blocks like ``n`` alloc_pages calls; append head PFNs to ``out``.

        Returns how many were allocated; stops at the first failure (counted once in
        ``alloc_fail``).  Same watermark semantics as :meth:`alloc_pages`, evaluated per block.
        Order 0 is the hot path: it pops the order-0 list in one walk and, when that list is
        empty, takes the smallest larger block whole (handing out its pages in PFN order and
        freeing the tail pieces), which leaves exactly the state repeated ``__rmqueue`` calls
        would.
        """
        self._check_request(order, owner)
        if n <= 0:
            return 0
        g = int(gfp)
        mt = (g & GFP_MOVABLE_MASK) >> GFP_MOVABLE_SHIFT
        if mt >= MIGRATE_PCPTYPES:
            raise ValueError(f"gfp {g:#x} has both __GFP_MOVABLE and __GFP_RECLAIMABLE set")
        budget, fast = self._alloc_budget(order, g)
        want = n if n <= budget else budget
        if order == 0:
            got = self._alloc_bulk_order0(want, mt, owner, out)
            self.free_pages -= got
        else:
            got = 0
            append = out.append
            while got < want:
                pfn = self.rmqueue(order, mt)
                if pfn < 0:
                    break
                self._prep_new_page(pfn, order, g, owner)
                append(pfn)
                got += 1
        if got < n:
            self.alloc_fail += 1
        pages = got << order
        self.nr_allocated += pages
        self.pgalloc += pages
        self.alloc_success += got
        if got > fast:
            self.alloc_slowpath += got - fast
        return got

    def _alloc_bulk_order0(self, want: int, mt: int, owner: int, out: MutableSequence[int]) -> int:
        """Hand out up to ``want`` order-0 pages of ``mt`` (free_pages adjusted by caller)."""
        f = self.frames
        nxt, prv = f.lru_next, f.lru_prev
        flags, refc, mapping, porder, bmt = f.flags, f.refcount, f.mapping, f.order, f.buddy_mt
        lists = self._free_by_mt[mt]
        l0 = lists[0]
        nr_free = self.nr_free
        fl = OWNER_PAGE_FLAGS[owner]
        append = out.append
        got = 0
        while got < want:
            pfn = l0.first
            if pfn != NIL:
                taken = 0
                while pfn != NIL and got < want:
                    flags[pfn] = fl
                    refc[pfn] = 1
                    mapping[pfn] = owner
                    porder[pfn] = 0
                    append(pfn)
                    got += 1
                    taken += 1
                    pfn = nxt[pfn]
                l0.first = pfn
                if pfn == NIL:
                    l0.last = NIL
                else:
                    prv[pfn] = NIL
                l0.nr -= taken
                nr_free[0] -= taken
                continue
            # The order-0 list is empty: the smallest larger block of this type, whole.
            h = 1
            while h < MAX_ORDER:
                lst = lists[h]
                pfn = lst.first
                if pfn != NIL:
                    break
                h += 1
            else:
                pfn = self._rmqueue_fallback(self, 0, mt)
                if pfn == FALLBACK_RETRY:  # 4.13+: a block moved to our lists
                    continue
                if pfn < 0:
                    break
                flags[pfn] = fl  # 3.6: a page taken off the fallback type's lists
                refc[pfn] = 1
                mapping[pfn] = owner
                append(pfn)
                got += 1
                continue
            x = nxt[pfn]
            lst.first = x
            if x == NIL:
                lst.last = NIL
            else:
                prv[x] = NIL
            lst.nr -= 1
            nr_free[h] -= 1
            size = 1 << h
            take = want - got
            if take > size:
                take = size
            end = pfn + take
            porder[pfn] = 0
            flags[pfn:end] = array("H", (fl,)) * take
            refc[pfn:end] = array("h", (1,)) * take
            mapping[pfn:end] = bytes((owner,)) * take
            if isinstance(out, array) and out.typecode == "I":  # no int object per page
                out.frombytes(np.arange(pfn, end, dtype=np.uint32).tobytes())
            else:
                out.extend(range(pfn, end))
            got += take
            rem = size - take
            k = 0
            while rem:  # the untaken tail, as expand() would have left it: one block per bit
                if rem & 1:
                    lk = lists[k]
                    first = lk.first  # lists below h are empty, but stay general
                    nxt[end] = first
                    prv[end] = NIL
                    if first == NIL:
                        lk.last = end
                    else:
                        prv[first] = end
                    lk.first = end
                    lk.nr += 1
                    nr_free[k] += 1
                    flags[end] = PG_buddy
                    porder[end] = k
                    bmt[end] = mt
                    end += 1 << k
                rem >>= 1
                k += 1
        return got

    def free_pages_bulk(self, pfns: Iterable[int], order: int = 0) -> int:
        """Free many ``order`` blocks (each as :meth:`free_pages_block`); return the count freed.

        Order 0 is the hot path (the merge loop is inlined).  On a bad page it raises
        BuddyError with ``done`` = blocks already freed; the bad one and the rest stay as they
        were.
        """
        if order:
            done = 0
            for pfn in pfns:
                try:
                    self.free_pages_block(pfn, order)
                except BuddyError as err:
                    err.done = done
                    raise
                done += 1
            return done
        f = self.frames
        nr = f.nr_pages
        flags, refc, mapping, porder, bmt = f.flags, f.refcount, f.mapping, f.order, f.buddy_mt
        nxt, prv = f.lru_next, f.lru_prev
        pbmt = f.pageblock_mt
        free_area = self.free_area
        nr_free = self.nr_free
        bad_flags = PAGE_FLAGS_CHECK_AT_FREE
        seq: list[int] | array[int] = pfns if isinstance(pfns, list | array) else list(pfns)
        head = self._free_runs_at_head(seq)  # a batch that is one block (balloon releases)
        if head:
            if head == len(seq):
                return head
            seq = seq[head:]
        nexts = list(seq[1:])
        nexts.append(-2)  # no successor for the last pfn
        steps = enumerate(zip(seq, nexts, strict=True))
        done = 0  # blocks freed, runs included
        single = 0  # of which freed by this loop (runs do their own accounting)
        try:
            for i, (pfn, nx) in steps:
                if (nx == pfn + 1 and not pfn & 1) or (nx == pfn - 1 and pfn & 1):
                    size = self._free_run(seq, i, pfn, nx > pfn)
                    if size:
                        next(islice(steps, size - 2, None), None)  # skip the rest of the run
                        done += size
                        continue
                # Free pages have refcount 0, so this also catches double frees.
                if refc[pfn] != 1 or pfn < 0 or flags[pfn] & bad_flags or porder[pfn]:
                    raise self._bad_free(pfn, 0, done)
                refc[pfn] = 0
                flags[pfn] = 0
                mapping[pfn] = OWNER_FREE
                mt = pbmt[pfn >> pageblock_order]
                o = 0
                while True:  # __free_one_page, inlined
                    b = pfn ^ (1 << o)
                    if not flags[b] & PG_buddy or porder[b] != o:
                        break
                    lst = free_area[o][bmt[b]]
                    p = prv[b]
                    x = nxt[b]
                    if p == NIL:
                        lst.first = x
                    else:
                        nxt[p] = x
                    if x == NIL:
                        lst.last = p
                    else:
                        prv[x] = p
                    lst.nr -= 1
                    nr_free[o] -= 1
                    flags[b] = 0
                    porder[b] = 0
                    pfn &= b
                    o += 1
                    if o == pageblock_order:
                        break
                if o == pageblock_order:  # merging across pageblocks: the general path
                    self.free_one_page(pfn, o, mt)
                    done += 1
                    single += 1
                    continue
                flags[pfn] = PG_buddy
                porder[pfn] = o
                bmt[pfn] = mt
                lst = free_area[o][mt]
                nr_free[o] += 1
                lst.nr += 1
                hb = (pfn & ~(1 << o)) ^ (2 << o)
                if hb < nr and flags[hb] & PG_buddy and porder[hb] == o + 1:
                    last = lst.last  # its parent's buddy is free: tail, to merge soon
                    prv[pfn] = last
                    nxt[pfn] = NIL
                    if last == NIL:
                        lst.first = pfn
                    else:
                        nxt[last] = pfn
                    lst.last = pfn
                else:
                    first = lst.first
                    nxt[pfn] = first
                    prv[pfn] = NIL
                    if first == NIL:
                        lst.last = pfn
                    else:
                        prv[first] = pfn
                    lst.first = pfn
                done += 1
                single += 1
        except IndexError:  # only ``pfn`` itself is unchecked: beyond the zone
            raise self._bad_free(pfn, 0, head + done) from None
        except BuddyError as err:
            err.done += head
            raise
        finally:
            self.free_pages += single
            self.nr_allocated -= single
            self.pgfree += single
        return head + done

    def _free_runs_at_head(self, seq: list[int] | array[int]) -> int:
        """Free the whole-block runs (see _free_run) that ``seq`` starts with; how many pages.

        The page loop of free_pages_bulk finds runs too, but skipping a run's pages there
        costs a step each; a batch that is one block, or starts with some, is freed here.
        """
        i, n = 0, len(seq)
        while i + 1 < n:
            pfn, nx = seq[i], seq[i + 1]
            if not ((nx == pfn + 1 and not pfn & 1) or (nx == pfn - 1 and pfn & 1)):
                break
            size = self._free_run(seq, i, pfn, nx > pfn)
            if not size:
                break
            i += size
        return i

    def _free_run(self, seq: list[int] | array[int], i: int, pfn: int, ascending: bool) -> int:
        """Free ``seq[i:i+size]`` at once if it is a whole aligned block in PFN order; return size.

        Freeing the pages of an aligned block (at most a pageblock) one by one, ascending or
        descending, only ever merges them with each other until the last one completes the
        block, which then merges on like ``__free_one_page(block, order)``: so validating every
        page and freeing the block whole leaves exactly the state the page-by-page loop would.
        Returns 0 (nothing done) when the run is not such a block or holds a bad page; the
        caller then takes the page-by-page path, which reports the bad page.
        """
        f = self.frames
        low = pfn if ascending else pfn + 1  # the block boundary the run starts from
        if pfn < 0 or low < 0:
            return 0
        align = (low & -low).bit_length() - 1 if low else pageblock_order
        size = 1 << min(align, pageblock_order)
        n = len(seq)
        while size >= 2:
            if i + size <= n and seq[i + size - 1] == (
                pfn + size - 1 if ascending else pfn + 1 - size
            ):
                break
            size >>= 1
        else:
            return 0
        start = pfn if ascending else pfn + 1 - size
        end = start + size
        if start < 0 or end > f.nr_pages:
            return 0
        chunk = seq[i : i + size]
        if isinstance(chunk, array) and chunk.typecode == "I":
            # page k of the run is pfn + k (ascending) or pfn - k: one array comparison
            c = np.frombuffer(chunk, dtype=np.uint32)
            if np.count_nonzero((c - _IOTA[:size] if ascending else c + _IOTA[:size]) != pfn):
                return 0
        elif list(chunk) != list(range(start, end) if ascending else range(end - 1, start - 1, -1)):
            return 0
        # Array comparisons with constant runs (a memcmp) where a test is one value for all.
        flags = f.flags[start:end]
        if (
            f.refcount[start:end] != _ONE_REF[:size]
            or f.order.count(0, start, end) != size
            or f.mapping.find(OWNER_FREE, start, end) != -1
            or (flags != _NO_FLAGS[:size]  # owner flags are fine; a bad one refuses the run
                and np.count_nonzero(np.frombuffer(flags, dtype=np.uint16)
                                     & PAGE_FLAGS_CHECK_AT_FREE))
        ):
            return 0
        f.refcount[start:end] = _NO_REF[:size]
        f.flags[start:end] = _NO_FLAGS[:size]
        f.mapping[start:end] = bytes(size)
        self.free_pages += size
        self.nr_allocated -= size
        self.pgfree += size
        self.free_one_page(start, size.bit_length() - 1, f.pageblock_mt[start >> pageblock_order])
        return size

