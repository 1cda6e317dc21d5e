"""The ``struct page`` model: compact per-PFN arrays, pageblocks and ``list_head`` lists.

There is no Python object per page.  Every field of ``struct page`` the simulator needs is an
``array.array``/``bytearray`` indexed by PFN, so a 64 GiB guest (16 Mi pages of 4 KiB) costs
about 15 bytes per page and builds in a fraction of a second with bulk operations.

Per-PFN arrays of :class:`PageFrames` (bytes per page):

========== ===== ===============================================================================
``flags``     2  ``page->flags`` bits (``PG_*`` below)
``refcount``  2  ``page->_refcount`` (0 for free pages and for tails of high-order blocks)
``mapping``   1  owner code (``OWNER_*``): who the page belongs to; stands for ``page->mapping``
``order``     1  ``page_private``: order of a free buddy block or of an allocated block, on its
                 head page only; 0 everywhere else
``buddy_mt``  1  the free list (migratetype) a free buddy head sits on.  The kernel keeps this
                 implicit in its circular ``list_head``; :class:`PageList` keeps ``first``/
                 ``last``/``nr`` so deleting needs to know the list.  Stale on other pages.
``lru_next``  4  ``page->lru.next`` as a PFN (``NIL`` = end of list)
``lru_prev``  4  ``page->lru.prev`` as a PFN
========== ===== ===============================================================================

plus one byte per pageblock (``pageblock_mt``).  A page is on at most one list at a time (buddy
free list, the balloon's ``vb->pages``, an LRU list ...), like the kernel's ``page->lru``.
The links of a page that is on no list are stale (the kernel poisons them); never read them.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from actors.guest.mm.gfp import (
    MIGRATE_MOVABLE,
    MIGRATE_TYPES,
    MIGRATETYPE_NAMES,
    pageblock_nr_pages,
    pageblock_order,
)

NIL: Final = 0xFFFFFFFF  # "no page" in lru links; also what an empty list's first/last hold
#: A walk guesses constant-stride runs of pages (PageList._walk) while they are this long.
_RUN_MIN: Final = 16

SUPPORTED_PAGE_SIZES: Final[tuple[int, ...]] = (4096, 16384, 65536)
VIRTIO_BALLOON_PFN_SHIFT: Final = 12  # the balloon wire always speaks 4 KiB frames

# ---------------------------------------------------------------------------------------------
# Page flags (include/linux/page-flags.h names; bit positions are the model's own).
# ---------------------------------------------------------------------------------------------
PG_locked: Final = 1 << 0  # lock_page()/trylock_page() hold it
PG_lru: Final = 1 << 1  # an LRU (user, migratable) page; see OWNER_PAGE_FLAGS
PG_buddy: Final = 1 << 2  # head of a free buddy block (PageBuddy); only on the head
PG_isolated: Final = 1 << 3  # isolated for migration (PageIsolated)
PG_balloon: Final = 1 << 4  # a movable balloon page (2012: page->mapping == balloon mapping)
PG_head: Final = 1 << 5  # head of a compound page (__GFP_COMP)
PG_slab: Final = 1 << 6  # owned by the slab allocator
PG_reserved: Final = 1 << 7  # never freed to the buddy
PG_anon: Final = 1 << 8  # anonymous memory (PageAnon: mapping low bit in the kernel)
PG_movable: Final = 1 << 9  # non-LRU movable page (__PageMovable)
PG_tail: Final = 1 << 10  # tail of a compound page (the 2012 kernel's PG_tail)

PAGE_FLAG_NAMES: Final[tuple[tuple[int, str], ...]] = (
    (PG_locked, "locked"),
    (PG_lru, "lru"),
    (PG_buddy, "buddy"),
    (PG_isolated, "isolated"),
    (PG_balloon, "balloon"),
    (PG_head, "head"),
    (PG_slab, "slab"),
    (PG_reserved, "reserved"),
    (PG_anon, "anon"),
    (PG_movable, "movable"),
    (PG_tail, "tail"),
)

#: Flags that make freeing a page a bug (the kernel's PAGE_FLAGS_CHECK_AT_FREE, "Bad page
#: state"): still locked, isolated, on the balloon, slab or reserved, or already free.
PAGE_FLAGS_CHECK_AT_FREE: Final = (
    PG_locked | PG_buddy | PG_isolated | PG_balloon | PG_slab | PG_reserved | PG_movable
)

# ---------------------------------------------------------------------------------------------
# Owner codes stored in ``mapping`` (one byte per page).
# ---------------------------------------------------------------------------------------------
OWNER_FREE: Final = 0  # in the buddy allocator
OWNER_KERNEL: Final = 1  # unmovable kernel memory (slab, page tables, ...)
OWNER_ANON: Final = 2  # anonymous user memory (LRU, migratable)
OWNER_PAGECACHE: Final = 3  # file pages (LRU, migratable)
OWNER_BALLOON: Final = 4  # in balloon device 0's ``vb->pages`` (the usual, only balloon)
OWNER_THP: Final = 5  # a transparent huge page (anonymous, compound)
OWNER_COMPACT_FREE: Final = 6  # free page captured by a compaction free scanner (cc->freepages)
OWNER_BALLOON_EXTRA: Final = 7  # balloon devices 1..7 use codes 7..13 (see balloon_owner)
MAX_BALLOON_DEVICES: Final = 8
NR_OWNERS: Final = OWNER_BALLOON_EXTRA + MAX_BALLOON_DEVICES - 1

OWNER_NAMES: Final[tuple[str, ...]] = (
    "free",
    "kernel",
    "anon",
    "pagecache",
    "balloon",
    "thp",
    "compact_free",
    *(f"balloon{i}" for i in range(1, MAX_BALLOON_DEVICES)),
)

#: Flags an allocation for each owner sets on the (head) page.  There is no separate
#: ``lru_cache_add`` step in the model: user pages are born PG_lru ("would be on an LRU list",
#: i.e. migratable); the allocator does not link them on any list.  Balloon owners get no flag:
#: the driver sets PG_balloon/PG_movable itself when the page becomes movable.
OWNER_PAGE_FLAGS: Final[tuple[int, ...]] = (
    0,  # free
    0,  # kernel
    PG_anon | PG_lru,  # anon
    PG_lru,  # pagecache
    0,  # balloon
    PG_anon | PG_lru,  # thp
    0,  # compact_free
    *(0 for _ in range(1, MAX_BALLOON_DEVICES)),
)


def balloon_owner(device: int) -> int:
    """Return the owner code for balloon device ``device`` (0 is OWNER_BALLOON)."""
    if not 0 <= device < MAX_BALLOON_DEVICES:
        raise ValueError(f"balloon device {device} out of range 0..{MAX_BALLOON_DEVICES - 1}")
    return OWNER_BALLOON if device == 0 else OWNER_BALLOON_EXTRA + device - 1


def is_balloon_owner(code: int) -> bool:
    """Tell whether an owner code belongs to any balloon device."""
    return code == OWNER_BALLOON or OWNER_BALLOON_EXTRA <= code < NR_OWNERS


def page_flag_names(flags: int) -> str:
    """Render a flags word like the kernel's ``%pGp`` (``buddy|head``), for error messages."""
    names = [name for bit, name in PAGE_FLAG_NAMES if flags & bit]
    return "|".join(names) if names else "none"


class PageListError(ValueError):
    """A ``list_head`` operation found the links inconsistent (CONFIG_DEBUG_LIST's report)."""


class PageFrames:
    """The guest's ``mem_map``: per-PFN arrays plus pageblock migratetypes.

    Pages start all zero: no flags, refcount 0, owner OWNER_FREE, order 0, links NIL; every
    pageblock MIGRATE_MOVABLE (as at boot).  The buddy allocator (``Zone``) then puts the
    pages on its free lists.  ``nr_pages`` must be a positive multiple of pageblock_nr_pages.
    """

    __slots__ = (
        "buddy_mt",
        "flags",
        "lru_next",
        "lru_prev",
        "mapping",
        "nr_pageblocks",
        "nr_pages",
        "order",
        "page_shift",
        "page_size",
        "pageblock_mt",
        "refcount",
    )

    def __init__(self, nr_pages: int, page_size: int = 4096) -> None:
        if page_size not in SUPPORTED_PAGE_SIZES:
            raise ValueError(
                f"page_size {page_size} is not supported; use one of "
                + ", ".join(str(s) for s in SUPPORTED_PAGE_SIZES)
            )
        if nr_pages <= 0:
            raise ValueError(f"nr_pages must be positive, got {nr_pages}")
        if nr_pages < pageblock_nr_pages:
            raise ValueError(
                f"guest smaller than one pageblock: {nr_pages} pages < "
                f"pageblock_nr_pages ({pageblock_nr_pages})"
            )
        if nr_pages % pageblock_nr_pages:
            raise ValueError(
                f"nr_pages {nr_pages} is not a multiple of pageblock_nr_pages "
                f"({pageblock_nr_pages}); the model has no partial pageblocks"
            )
        if nr_pages >= NIL:
            raise ValueError(f"nr_pages {nr_pages} does not fit 32-bit PFN links")
        self.nr_pages: int = nr_pages
        self.page_size: int = page_size
        self.page_shift: int = page_size.bit_length() - 1
        self.nr_pageblocks: int = nr_pages >> pageblock_order
        self.flags: array[int] = array("H", bytes(2 * nr_pages))
        self.refcount: array[int] = array("h", bytes(2 * nr_pages))
        self.mapping: bytearray = bytearray(nr_pages)
        self.order: bytearray = bytearray(nr_pages)
        self.buddy_mt: bytearray = bytearray(nr_pages)
        nil_bytes = b"\xff" * (4 * nr_pages)
        self.lru_next: array[int] = array("I", nil_bytes)
        self.lru_prev: array[int] = array("I", nil_bytes)
        self.pageblock_mt: bytearray = bytearray([MIGRATE_MOVABLE]) * self.nr_pageblocks

    @classmethod
    def for_memory(cls, mem_bytes: int, page_size: int = 4096) -> PageFrames:
        """Build the frames for a guest of ``mem_bytes`` bytes of RAM."""
        if mem_bytes % page_size:
            raise ValueError(f"memory size {mem_bytes} is not a multiple of page_size {page_size}")
        return cls(mem_bytes // page_size, page_size)

    @property
    def mem_bytes(self) -> int:
        """Guest RAM in bytes."""
        return self.nr_pages * self.page_size

    @property
    def virtio_balloon_pages_per_page(self) -> int:
        """VIRTIO_BALLOON_PAGES_PER_PAGE: 4 KiB balloon PFNs per guest page."""
        return self.page_size >> VIRTIO_BALLOON_PFN_SHIFT

    def bytes_per_page(self) -> float:
        """Return what the per-page arrays cost per guest page, pageblock bytes included."""
        per_page = (
            self.flags.itemsize
            + self.refcount.itemsize
            + 1  # mapping
            + 1  # order
            + 1  # buddy_mt
            + self.lru_next.itemsize
            + self.lru_prev.itemsize
        )
        return per_page + len(self.pageblock_mt) / self.nr_pages

    def get_pageblock_migratetype(self, pfn: int) -> int:
        """Return the migratetype of the pageblock holding ``pfn``."""
        return self.pageblock_mt[pfn >> pageblock_order]

    def set_pageblock_migratetype(self, pfn: int, migratetype: int) -> None:
        """Set the migratetype of the pageblock holding ``pfn`` (free lists are not touched)."""
        if not 0 <= migratetype < MIGRATE_TYPES:
            raise ValueError(f"migratetype {migratetype} out of range 0..{MIGRATE_TYPES - 1}")
        if not 0 <= pfn < self.nr_pages:
            raise ValueError(f"pfn {pfn} outside guest RAM (0..{self.nr_pages - 1})")
        self.pageblock_mt[pfn >> pageblock_order] = migratetype

    def describe(self, pfn: int) -> str:
        """Render one page's state for error messages (dump_page)."""
        if not 0 <= pfn < self.nr_pages:
            return f"pfn {pfn} (outside guest RAM 0..{self.nr_pages - 1})"
        owner = self.mapping[pfn]
        owner_name = OWNER_NAMES[owner] if owner < len(OWNER_NAMES) else f"owner{owner}"
        mt = self.pageblock_mt[pfn >> pageblock_order]
        return (
            f"pfn {pfn}: flags={page_flag_names(self.flags[pfn])} refcount={self.refcount[pfn]} "
            f"owner={owner_name} order={self.order[pfn]} pageblock={MIGRATETYPE_NAMES[mt]}"
        )


class PageList:
    """A ``struct list_head`` of pages linked through ``page->lru`` (the frames' lru arrays).

    ``first``/``last`` are PFNs (``NIL`` when empty) and ``nr`` the length, all plain
    attributes so hot loops can read them directly.  ``list_add`` inserts at the head,
    ``list_add_tail`` at the tail, ``list_del`` unlinks in O(1).  Deleting a page that is not
    on this list corrupts both lists: it is the caller's bug, checked only by
    :meth:`list_del_entry_valid` / :meth:`validate` (debug helpers, not the hot path).
    """

    __slots__ = ("_links", "first", "last", "lru_next", "lru_prev", "nr")

    def __init__(self, frames: PageFrames) -> None:
        self.lru_next: array[int] = frames.lru_next
        self.lru_prev: array[int] = frames.lru_prev
        self.first: int = NIL
        self.last: int = NIL
        self.nr: int = 0
        #: numpy views of lru_next/lru_prev, made on the first batch that needs them.
        self._links: tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]] | None = None

    def __len__(self) -> int:
        """Return the number of pages on the list (O(1))."""
        return self.nr

    def __repr__(self) -> str:
        """Show the list's length and ends, for error messages."""
        return f"PageList(nr={self.nr}, first={self.first:#x}, last={self.last:#x})"

    def list_empty(self) -> bool:
        """Tell whether the list holds no page."""
        return self.nr == 0

    def list_add(self, pfn: int) -> None:
        """Insert ``pfn`` at the head (LIFO use: the next list_first_entry returns it)."""
        first = self.first
        self.lru_next[pfn] = first
        self.lru_prev[pfn] = NIL
        if first == NIL:
            self.last = pfn
        else:
            self.lru_prev[first] = pfn
        self.first = pfn
        self.nr += 1

    def list_add_many(self, pfns: Sequence[int]) -> None:
        """``list_add`` of each page in turn (the last ends up first), in one pass."""
        n = len(pfns)
        if not n:
            return
        if n >= 16 and isinstance(pfns, array) and pfns.typecode == "I":
            self._list_add_batch(pfns)
            return
        nxt, prv = self.lru_next, self.lru_prev
        follow = self.first
        for p in pfns:  # each new page goes in front of the previous one
            nxt[p] = follow
            if follow != NIL:
                prv[follow] = p
            follow = p
        prv[follow] = NIL
        if self.first == NIL:
            self.last = pfns[0]
        self.first = follow
        self.nr += n

    def _list_add_batch(self, pfns: array[int]) -> None:
        """list_add_many's links written with array operations (same links, same order)."""
        nxt, prv = self._views()
        g = np.frombuffer(pfns, dtype=np.uint32)
        first = self.first
        nxt[g[0]] = first  # each page points at the one added before it
        nxt.put(g[1:], g[:-1])  # (put: fancy assignment without its dispatch cost)
        prv.put(g[:-1], g[1:])  # ... which points back at it
        prv[g[-1]] = NIL
        if first == NIL:
            self.last = pfns[0]
        else:
            prv[first] = pfns[0]
        self.first = pfns[-1]
        self.nr += len(pfns)

    def _views(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """numpy views of lru_next/lru_prev (made once, on the first batch that needs them)."""
        if self._links is None:
            self._links = (np.frombuffer(self.lru_next, dtype=np.uint32),
                           np.frombuffer(self.lru_prev, dtype=np.uint32))
        return self._links

    def list_del_first_many(self, n: int, stop_flags: array[int] | None = None,
                            stop_mask: int = 0) -> array[int]:
        """Unlink up to ``n`` pages from the head, in order; stop early at a page whose
        ``stop_flags`` has a bit of ``stop_mask`` (it stays on the list)."""
        out = self._walk(self.first, min(n, self.nr),
                         stop_flags if stop_mask else None, stop_mask)
        if out:
            p = self.lru_next[out[-1]]
            self.first = p
            if p == NIL:
                self.last = NIL
            else:
                self.lru_prev[p] = NIL
            self.nr -= len(out)
        return out

    def _walk(self, p: int, n: int, stop_flags: array[int] | None, stop_mask: int
              ) -> array[int]:
        """The ``n`` pages from ``p`` on along the next links (fewer if the list ends first),
        up to the first whose ``stop_flags`` has a bit of ``stop_mask``.

        Following links is one page per step, so where the list runs through memory with a
        constant stride (pages allocated from one block and added in a batch: the balloon's
        list, mostly) the walk guesses the next pages ``p, p+d, p+2d, ...`` and checks every
        link and stop flag of the guess at once; the pages up to the first wrong link or stop
        flag are exactly the ones the step-by-step walk would visit. A guess that gets fewer
        than ``_RUN_MIN`` pages right ends the guessing (a scattered list costs one guess).
        """
        nxt = self.lru_next
        out: array[int] = array("I")
        limit = len(nxt)
        flags: npt.NDArray[np.integer] | None = None
        while n >= _RUN_MIN and p != NIL:
            q = nxt[p]
            if q in (NIL, p):  # the end, or a self-link (a corrupt list: walk it as is)
                break
            d = q - p
            k = min(n, (limit - 1 - p) // d + 1 if d > 0 else p // -d + 1)  # stay in the array
            pages, m = self._guess(p, d, k)
            if stop_flags is not None:
                if flags is None:
                    flags = np.frombuffer(stop_flags, dtype=stop_flags.typecode)
                stop = (flags[p:p + m] if d == 1 else flags[p - m + 1:p + 1][::-1] if d == -1
                        else flags.take(pages[:m])) & stop_mask
                if np.count_nonzero(stop):
                    out.frombytes(pages[:int(stop.argmax())].tobytes())
                    return out
            out.frombytes(pages[:m].tobytes())
            n -= m
            p = nxt[pages[m - 1]]
            if m < _RUN_MIN:
                break
        while n > 0 and p != NIL and not (stop_flags is not None and stop_flags[p] & stop_mask):
            out.append(p)
            p = nxt[p]
            n -= 1
        return out

    def _guess(self, p: int, d: int, k: int) -> tuple[npt.NDArray[np.uint32], int]:
        """The pages ``p, p+d, ...`` (``k`` of them, in walk order, all inside the arrays) and
        how many of them the next links confirm. Strides of one page compare slices of the
        links; others gather them."""
        links = self._views()[0]
        if d == 1:
            pages = np.arange(p, p + k, dtype=np.uint32)
            wrong = links[p:p + k - 1] != pages[1:]
        elif d == -1:
            pages = np.arange(p - k + 1, p + 1, dtype=np.uint32)[::-1]
            wrong = links[p - k + 2:p + 1][::-1] != pages[1:]
        else:
            pages = np.arange(p, p + d * k, d, dtype=np.int64).astype(np.uint32)
            wrong = links.take(pages[:-1]) != pages[1:]
        return pages, int(wrong.argmax()) + 1 if np.count_nonzero(wrong) else k

    def list_add_tail(self, pfn: int) -> None:
        """Insert ``pfn`` at the tail (FIFO use)."""
        last = self.last
        self.lru_prev[pfn] = last
        self.lru_next[pfn] = NIL
        if last == NIL:
            self.first = pfn
        else:
            self.lru_next[last] = pfn
        self.last = pfn
        self.nr += 1

    def list_del(self, pfn: int) -> None:
        """Unlink ``pfn``, which must be on this list (not checked: see list_del_entry_valid)."""
        nxt = self.lru_next[pfn]
        prev = self.lru_prev[pfn]
        if prev == NIL:
            self.first = nxt
        else:
            self.lru_next[prev] = nxt
        if nxt == NIL:
            self.last = prev
        else:
            self.lru_prev[nxt] = prev
        self.nr -= 1

    def list_first_entry(self) -> int:
        """Return the PFN at the head, or ``NIL`` if the list is empty (never raises)."""
        return self.first

    def list_last_entry(self) -> int:
        """Return the PFN at the tail, or ``NIL`` if the list is empty (never raises)."""
        return self.last

    def list_move(self, pfn: int, other: PageList) -> None:
        """Move ``pfn`` from this list to the head of ``other`` (list_move)."""
        self.list_del(pfn)
        other.list_add(pfn)

    def list_move_tail(self, pfn: int, other: PageList) -> None:
        """Move ``pfn`` from this list to the tail of ``other`` (list_move_tail)."""
        self.list_del(pfn)
        other.list_add_tail(pfn)

    def pfns(self) -> Iterator[int]:
        """Iterate the PFNs head to tail (tests and debugging; do not mutate meanwhile)."""
        nxt = self.lru_next
        pfn = self.first
        while pfn != NIL:
            yield pfn
            pfn = nxt[pfn]

    def list_del_entry_valid(self, pfn: int) -> bool:
        """O(1) check that ``pfn``'s links are consistent with this list (__list_del_entry_valid).

        Catches deleting a page twice and most "wrong list" bugs; a page in the middle of
        another list passes, which only :meth:`validate`/``in`` can tell.
        """
        if not 0 <= pfn < len(self.lru_next) or self.nr == 0:
            return False
        nxt = self.lru_next[pfn]
        prev = self.lru_prev[pfn]
        if prev == NIL:
            if self.first != pfn:
                return False
        elif not 0 <= prev < len(self.lru_next) or self.lru_next[prev] != pfn:
            return False
        if nxt == NIL:
            return self.last == pfn
        return 0 <= nxt < len(self.lru_prev) and self.lru_prev[nxt] == pfn

    def list_del_checked(self, pfn: int) -> None:
        """list_del with the O(1) CONFIG_DEBUG_LIST check; raises PageListError on corruption."""
        if not self.list_del_entry_valid(pfn):
            raise PageListError(f"list_del corruption: pfn {pfn} is not on {self!r}")
        self.list_del(pfn)

    def __contains__(self, pfn: object) -> bool:
        """O(n) membership test, for tests and debugging."""
        return any(p == pfn for p in self.pfns())

    def validate(self) -> None:
        """Walk the whole list and check every back link and the count (O(n), debug only)."""
        nxt, prv = self.lru_next, self.lru_prev
        prev = NIL
        pfn = self.first
        count = 0
        limit = len(nxt)
        while pfn != NIL:
            if not 0 <= pfn < limit:
                raise PageListError(f"{self!r}: link to pfn {pfn} outside guest RAM")
            if prv[pfn] != prev:
                raise PageListError(f"{self!r}: pfn {pfn}.prev is {prv[pfn]}, expected {prev}")
            count += 1
            if count > self.nr:
                raise PageListError(f"{self!r}: more than nr={self.nr} entries (cycle?)")
            prev = pfn
            pfn = nxt[pfn]
        if prev != self.last:
            raise PageListError(f"{self!r}: walk ended at {prev}, last is {self.last}")
        if count != self.nr:
            raise PageListError(f"{self!r}: walked {count} entries, nr is {self.nr}")


class CostedPageList(PageList):
    """A ``PageList`` whose operations cost the calling kernel task CPU time (``charge``,
    ``per_page`` seconds for each page linked or unlinked): the balloon's ``vb->pages``,
    whose every list operation goes with a page-flag or mapping update in the driver, so
    ``per_page`` is ``costs.list_op + costs.page_flag_op``. The buddy allocator's lists stay
    plain: its costs are the allocator's own (``costs.alloc_page``, ``free_page``)."""

    __slots__ = ("_charge", "_per_page")

    def __init__(self, frames: PageFrames, charge: Callable[[float], None],
                 per_page: float) -> None:
        super().__init__(frames)
        self._charge = charge
        self._per_page = per_page

    def list_add(self, pfn: int) -> None:
        self._charge(self._per_page)
        super().list_add(pfn)

    def list_add_tail(self, pfn: int) -> None:
        self._charge(self._per_page)
        super().list_add_tail(pfn)

    def list_add_many(self, pfns: Sequence[int]) -> None:
        self._charge(self._per_page * len(pfns))
        super().list_add_many(pfns)

    def list_del(self, pfn: int) -> None:
        self._charge(self._per_page)
        super().list_del(pfn)

    def list_del_first_many(self, n: int, stop_flags: array[int] | None = None,
                            stop_mask: int = 0) -> array[int]:
        out = super().list_del_first_many(n, stop_flags, stop_mask)
        self._charge(self._per_page * len(out))
        return out
