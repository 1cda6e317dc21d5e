"""Tests for the page-frame arrays, pageblocks and PageList (struct list_head)."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    MIGRATE_ISOLATE,
    MIGRATE_MOVABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
)
from actors.guest.mm.pages import NIL, PageFrames, PageList, PageListError, PG_locked


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_supported_page_sizes(page_size: int) -> None:
    """4, 16 and 64 KiB pages are accepted and the balloon sees PAGE_SIZE/4096 frames per page."""
    f = PageFrames(1024, page_size)
    assert f.page_size == page_size
    assert 1 << f.page_shift == page_size
    assert f.virtio_balloon_pages_per_page == page_size // 4096
    assert f.mem_bytes == 1024 * page_size


@pytest.mark.parametrize("page_size", [0, 512, 8192, 4095, 1 << 20])
def test_unsupported_page_size_is_named(page_size: int) -> None:
    """Any other page size is refused with a message naming the value."""
    with pytest.raises(ValueError, match=f"page_size {page_size} is not supported"):
        PageFrames(1024, page_size)


@pytest.mark.parametrize(
    ("nr_pages", "message"),
    [
        (0, "must be positive"),
        (-512, "must be positive"),
        (511, "smaller than one pageblock"),
        (1, "smaller than one pageblock"),
        (1000, "not a multiple of pageblock_nr_pages"),
    ],
)
def test_bad_page_counts_are_explained(nr_pages: int, message: str) -> None:
    """Guests that are empty, smaller than a pageblock or not whole pageblocks are refused."""
    with pytest.raises(ValueError, match=message):
        PageFrames(nr_pages)


def test_for_memory_and_its_errors() -> None:
    """for_memory converts bytes to pages and refuses sizes that are not whole pages."""
    assert PageFrames.for_memory(8 << 20).nr_pages == 2048
    assert PageFrames.for_memory(64 << 20, 65536).nr_pages == 1024
    with pytest.raises(ValueError, match="not a multiple of page_size"):
        PageFrames.for_memory((8 << 20) + 1)


def test_fresh_frames_are_zeroed_and_movable() -> None:
    """New frames have no flags, refcount 0, owner free, NIL links and movable pageblocks."""
    f = PageFrames(1536)
    assert f.nr_pageblocks == 3
    assert set(f.flags) == {0} and set(f.refcount) == {0}
    assert f.mapping.count(P.OWNER_FREE) == 1536
    assert set(f.lru_next) == {NIL} and set(f.lru_prev) == {NIL}
    assert list(f.pageblock_mt) == [MIGRATE_MOVABLE] * 3


def test_bytes_per_page_within_budget() -> None:
    """The per-page arrays cost at most 20 bytes per guest page (15 plus the pageblock byte)."""
    f = PageFrames(512)
    assert f.bytes_per_page() <= 20
    assert f.bytes_per_page() == pytest.approx(15 + 1 / 512)


def test_pageblock_migratetype_get_set() -> None:
    """Pageblock types are per 512 pages and validated on set."""
    f = PageFrames(2048)
    f.set_pageblock_migratetype(700, MIGRATE_UNMOVABLE)
    assert f.get_pageblock_migratetype(512) == MIGRATE_UNMOVABLE
    assert f.get_pageblock_migratetype(1023) == MIGRATE_UNMOVABLE
    assert f.get_pageblock_migratetype(1024) == MIGRATE_MOVABLE
    assert f.get_pageblock_migratetype(511) == MIGRATE_MOVABLE
    f.set_pageblock_migratetype(0, MIGRATE_ISOLATE)
    assert f.pageblock_mt[0] == MIGRATE_ISOLATE
    with pytest.raises(ValueError, match="migratetype 5 out of range"):
        f.set_pageblock_migratetype(0, MIGRATE_TYPES)
    with pytest.raises(ValueError, match="outside guest RAM"):
        f.set_pageblock_migratetype(2048, MIGRATE_MOVABLE)


def test_owner_codes_and_names_line_up() -> None:
    """Every owner code has a name and an implied-flags entry; balloon devices map to codes."""
    assert len(P.OWNER_NAMES) == P.NR_OWNERS == len(P.OWNER_PAGE_FLAGS)
    assert P.OWNER_NAMES[P.OWNER_BALLOON] == "balloon"
    assert P.balloon_owner(0) == P.OWNER_BALLOON
    codes = [P.balloon_owner(d) for d in range(P.MAX_BALLOON_DEVICES)]
    assert len(set(codes)) == P.MAX_BALLOON_DEVICES
    assert all(P.is_balloon_owner(c) for c in codes)
    assert not P.is_balloon_owner(P.OWNER_ANON)
    assert P.OWNER_NAMES[P.balloon_owner(7)] == "balloon7"
    with pytest.raises(ValueError, match="balloon device 8"):
        P.balloon_owner(8)


def test_describe_and_flag_names() -> None:
    """describe() renders a page's flags, refcount, owner and pageblock for error messages."""
    f = PageFrames(512)
    f.flags[3] = P.PG_lru | P.PG_anon
    f.refcount[3] = 1
    f.mapping[3] = P.OWNER_ANON
    text = f.describe(3)
    assert "pfn 3" in text and "lru|anon" in text and "owner=anon" in text
    assert "refcount=1" in text and "Movable" in text
    assert "outside guest RAM" in f.describe(512)
    assert P.page_flag_names(0) == "none"


def _frames() -> PageFrames:
    """Small frames for list tests."""
    return PageFrames(512)


def test_pagelist_add_and_add_tail_order() -> None:
    """list_add inserts at the head, list_add_tail at the tail, pfns() walks head to tail."""
    lst = PageList(_frames())
    assert lst.list_empty() and len(lst) == 0
    assert lst.list_first_entry() == NIL and lst.list_last_entry() == NIL
    lst.list_add(5)
    lst.list_add(6)
    lst.list_add_tail(7)
    assert list(lst.pfns()) == [6, 5, 7]
    assert lst.list_first_entry() == 6 and lst.list_last_entry() == 7
    assert len(lst) == 3 and not lst.list_empty()
    lst.validate()


@pytest.mark.parametrize(
    ("victim", "left"),
    [(6, [5, 7]), (5, [6, 7]), (7, [6, 5])],
)
def test_pagelist_del_head_middle_tail(victim: int, left: list[int]) -> None:
    """list_del unlinks a page wherever it sits and keeps first/last/nr right."""
    lst = PageList(_frames())
    for pfn in (7, 5):
        lst.list_add(pfn)
    lst.list_add(6)
    lst.list_del(victim)
    assert list(lst.pfns()) == left
    assert lst.first == left[0] and lst.last == left[-1] and lst.nr == 2
    lst.validate()


def test_pagelist_del_last_entry_empties() -> None:
    """Deleting the only page leaves an empty list with NIL ends."""
    lst = PageList(_frames())
    lst.list_add_tail(9)
    lst.list_del(9)
    assert lst.list_empty() and lst.first == NIL and lst.last == NIL


def test_lists_share_links_but_not_heads() -> None:
    """Two lists on one PageFrames are independent; list_move carries a page across."""
    f = _frames()
    a, b = PageList(f), PageList(f)
    for pfn in (1, 2, 3):
        a.list_add_tail(pfn)
    b.list_add_tail(10)
    a.list_move(2, b)
    a.list_move_tail(1, b)
    assert list(a.pfns()) == [3]
    assert list(b.pfns()) == [2, 10, 1]
    assert 2 in b and 2 not in a
    a.validate()
    b.validate()


def test_list_del_checked_catches_double_delete() -> None:
    """The CONFIG_DEBUG_LIST-style check refuses deleting a page twice or from the wrong list."""
    f = _frames()
    a, b = PageList(f), PageList(f)
    for pfn in (1, 2, 3):
        a.list_add_tail(pfn)
    b.list_add(8)
    a.list_del_checked(1)
    assert not a.list_del_entry_valid(1)
    with pytest.raises(PageListError, match="pfn 1"):
        a.list_del_checked(1)
    with pytest.raises(PageListError):
        a.list_del_checked(8)  # on b, not a
    assert list(a.pfns()) == [2, 3]


def test_validate_detects_bad_count() -> None:
    """validate() notices a list whose nr disagrees with its links."""
    lst = PageList(_frames())
    lst.list_add(1)
    lst.list_add(2)
    lst.nr = 3
    with pytest.raises(PageListError, match="walked 2 entries"):
        lst.validate()


@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "add_tail", "del"]), st.integers(0, 40)),
        max_size=80,
    )
)
def test_pagelist_matches_python_list(ops: list[tuple[str, int]]) -> None:
    """Any sequence of add/add_tail/del keeps PageList equal to a plain Python list model."""
    lst = PageList(PageFrames(512))
    model: list[int] = []
    for op, pfn in ops:
        if op == "del":
            if pfn in model:
                lst.list_del(pfn)
                model.remove(pfn)
        elif pfn not in model:
            if op == "add":
                lst.list_add(pfn)
                model.insert(0, pfn)
            else:
                lst.list_add_tail(pfn)
                model.append(pfn)
    assert list(lst.pfns()) == model
    assert len(lst) == len(model)
    lst.validate()


@given(st.lists(st.integers(0, 1023), unique=True, min_size=1, max_size=80),
       st.lists(st.integers(1024, 2047), unique=True, max_size=5))
def test_list_add_many_batch_matches_list_add(pfns: list[int], before: list[int]) -> None:
    """list_add_many (array batches go through numpy) links pages exactly as list_add does."""
    one, many = PageFrames(2048), PageFrames(2048)
    a, b = PageList(one), PageList(many)
    for p in before:
        a.list_add(p)
        b.list_add(p)
    for p in pfns:
        a.list_add(p)
    b.list_add_many(array("I", pfns))
    b.validate()
    assert list(b.pfns()) == list(a.pfns())
    assert (b.first, b.last, b.nr) == (a.first, a.last, a.nr)
    taken = b.list_del_first_many(len(pfns))
    assert taken.tolist() == pfns[::-1]


def _step_by_step(lst: PageList, n: int, flags: array[int] | None, mask: int) -> list[int]:
    """The head pages list_del_first_many must take: the plain walk, one link at a time."""
    out: list[int] = []
    p = lst.first
    while len(out) < n and p != NIL and not (flags is not None and flags[p] & mask):
        out.append(p)
        p = lst.lru_next[p]
    return out


@given(st.lists(st.tuples(st.integers(0, 2047), st.integers(1, 80), st.sampled_from([1, -1, 3])),
                max_size=8),
       st.integers(0, 300), st.lists(st.integers(0, 400), max_size=3))
def test_list_del_first_many_matches_the_step_by_step_walk(
        runs: list[tuple[int, int, int]], n: int, locked: list[int]) -> None:
    """Taking pages off the head (runs of constant stride are guessed and link-checked in
    batches) takes exactly the pages, in the order, the one-link-at-a-time walk would, stopping
    at the first page with a stop flag, and leaves the rest of the list intact."""
    frames = PageFrames(2048)
    lst = PageList(frames)
    seen: set[int] = set()
    for start, length, stride in runs:  # each run added as a batch: a strided stretch
        run = [p for p in range(start, start + stride * length, stride)
               if 0 <= p < 2048 and p not in seen]
        seen.update(run)
        lst.list_add_many(array("I", run))
    before = list(lst.pfns())
    for i in locked:  # positions on the list (most inside a run the walk guesses)
        if i < len(before):
            frames.flags[before[i]] |= PG_locked
    want = _step_by_step(lst, n, frames.flags, PG_locked)
    taken = lst.list_del_first_many(n, frames.flags, PG_locked)
    assert taken.tolist() == want
    assert list(lst.pfns()) == before[len(want):]
    lst.validate()


@pytest.mark.parametrize("stride", [1, -1, 3])
def test_list_del_first_many_stops_at_a_locked_page_anywhere_in_a_run(stride: int) -> None:
    """In a run of pages the walk takes in one guess, a stop page at any position (first,
    last, or the last of the pages wanted) ends the walk just before it."""
    for locked_at in range(40):
        for n in (40, locked_at + 1, 100):
            frames = PageFrames(2048)
            lst = PageList(frames)
            lst.list_add_many(array("I", range(1000, 1000 - 40 * stride, -stride)))
            before = list(lst.pfns())
            frames.flags[before[locked_at]] |= PG_locked
            want = _step_by_step(lst, n, frames.flags, PG_locked)
            assert lst.list_del_first_many(n, frames.flags, PG_locked).tolist() == want
            assert list(lst.pfns()) == before[len(want):]
