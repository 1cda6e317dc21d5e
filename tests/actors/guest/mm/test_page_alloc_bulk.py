"""Tests for the bulk fast paths: each leaves the state of the same single-block calls."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.guest.mm import pages as P
from actors.guest.mm.page_alloc import BuddyError

from .buddy_helpers import (
    GFPS,
    MOV,
    OWNER_FOR,
    alloc_n,
    info,
    make_zone,
    order_frees,
    state,
)


def test_bulk_free_stops_at_the_bad_page() -> None:
    """A bulk free frees the pages before a bad one, reports how many, and leaves the rest."""
    z = make_zone(1)
    a, b, c = alloc_n(z, 3)
    d = z.alloc_pages(0, MOV, P.OWNER_ANON)
    z.free_pages_block(c)
    with pytest.raises(BuddyError, match="already free") as exc:
        z.free_pages_bulk([a, b, c, d])
    assert exc.value.done == 2 and exc.value.pfn == c
    assert z.frames.refcount[d] == 1 and z.frames.mapping[a] == P.OWNER_FREE
    z.check_invariants()


@pytest.mark.parametrize("n", [1, 3, 256, 700])
def test_bulk_alloc_into_an_array_equals_into_a_list(n: int) -> None:
    """Pages handed out from a split block are the same PFNs, in the same order, whether the
    caller collects them in a PFN array (written as one block of bytes) or a list."""
    a, b = make_zone(4), make_zone(4)
    alloc_n(a, 5)  # an order-0 page on the free list first, then split blocks
    alloc_n(b, 5)
    out_array: array[int] = array("I")
    out_list: list[int] = []
    assert a.alloc_pages_bulk(n, 0, MOV, P.OWNER_ANON, out_array) == n
    assert b.alloc_pages_bulk(n, 0, MOV, P.OWNER_ANON, out_list) == n
    assert out_array.tolist() == out_list
    assert state(a) == state(b)


def test_bulk_free_counts_a_leading_whole_block_before_the_bad_page() -> None:
    """A batch starting with a whole aligned block (freed at once) and then a bad page reports
    the block's pages as done and leaves the bad page and the rest alone."""
    z = make_zone(1)
    pages = alloc_n(z, 8)
    assert pages.tolist() == list(range(8))
    z.free_pages_block(5)
    with pytest.raises(BuddyError, match="already free") as exc:
        z.free_pages_bulk(array("I", [3, 2, 1, 0, 5, 6]))
    assert exc.value.done == 4 and exc.value.pfn == 5
    assert z.frames.refcount[6] == 1 and z.frames.mapping[0] == P.OWNER_FREE
    z.check_invariants()


op_strategy = st.one_of(
    st.tuples(
        st.just("alloc"),
        st.integers(1, 300),
        st.sampled_from([0, 0, 0, 1, 2, 3, 4, 9, 10]),
        st.sampled_from(GFPS),
    ),
    st.tuples(
        st.just("free"),
        st.integers(0, 2**32),
        st.sampled_from(["asc", "desc", "shuffle", "fifo"]),
        st.floats(0.0, 1.0),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pageblocks=st.integers(4, 16), ops=st.lists(op_strategy, max_size=25),
       fallback=st.sampled_from(["v4.13", "v3.6"]))
def test_bulk_calls_equal_repeated_single_calls(
    pageblocks: int, ops: list[tuple[Any, ...]], fallback: str
) -> None:
    """alloc_pages_bulk/free_pages_bulk leave exactly the state of repeated single calls
    (with either fallback model)."""
    a = make_zone(pageblocks, (8, 16, 24), fallback)
    b = make_zone(pageblocks, (8, 16, 24), fallback)
    held: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "alloc":
            _, n, order, gfp = op
            owner = OWNER_FOR.get(gfp, P.OWNER_KERNEL)
            out: list[int] = []
            got = a.alloc_pages_bulk(n, order, gfp, owner, out)
            singles = []
            for _ in range(n):
                pfn = b.alloc_pages(order, gfp, owner)
                if pfn < 0:
                    break
                singles.append(pfn)
            assert out == singles and got == len(out)
            held.extend((pfn, order) for pfn in out)
        else:
            _, seed, how, share = op
            chosen = order_frees(held, seed, how, share)
            for order in sorted({o for _, o in chosen}):
                pfns = [p for p, o in chosen if o == order]
                assert a.free_pages_bulk(array("I", pfns), order) == len(pfns)
                for pfn in pfns:
                    b.free_pages_block(pfn, order)
            gone = set(chosen)
            held = [blk for blk in held if blk not in gone]
        assert state(a) == state(b)
    a.check_invariants()


@pytest.mark.parametrize("descending", [False, True])
def test_bulk_free_run_with_a_bad_page_inside(descending: bool) -> None:
    """A PFN run holding a bad page is freed page by page up to the bad one."""
    z = make_zone(1)
    pages = list(alloc_n(z, 4))
    z.frames.flags[2] |= P.PG_locked
    order = pages[::-1] if descending else pages
    with pytest.raises(BuddyError, match="locked") as exc:
        z.free_pages_bulk(order)
    assert exc.value.pfn == 2 and exc.value.done == (1 if descending else 2)
    z.frames.flags[2] &= ~P.PG_locked
    z.check_invariants()
    rest = [p for p in pages if z.frames.refcount[p] == 1]
    assert z.free_pages_bulk(rest) == len(rest)
    assert info(z) == [0] * 9 + [1, 0]


def test_bulk_free_of_whole_pageblocks_in_both_directions() -> None:
    """Freeing two pageblocks' pages in ascending then descending order merges to order 10."""
    z = make_zone(2)
    pages = alloc_n(z, 1024)
    assert z.free_pages_bulk(pages[:512]) == 512
    assert z.free_pages_bulk(pages[512:][::-1]) == 512
    assert info(z) == [0] * 10 + [1]
    z.check_invariants()
