"""Host memory accounting: per-page state of each guest, RSS, and the shared budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.host.memory import (
    BALLOONED,
    BALLOONED_UNTOUCHED,
    DISCARDED,
    RESIDENT,
    UNTOUCHED,
    GuestMemory,
    HostMemory,
)

# (name, operations on a 16-page guest, expected (ballooned, discarded, rss, refaults))
CASES: list[tuple[str, list[tuple[str, list[int]]], tuple[int, int, int, int]]] = [
    ("fresh guest is all resident", [], (0, 0, 16, 0)),
    ("inflate discards", [("inflate", [0, 1, 2])], (3, 0, 13, 0)),
    ("deflate keeps pages discarded", [("inflate", [0, 1, 2]), ("deflate", [1, 2])],
     (1, 2, 13, 0)),
    ("touch refaults discarded pages only",
     [("inflate", [0, 1, 2]), ("deflate", [1, 2]), ("touch", [0, 2, 5])], (1, 1, 14, 1)),
    ("re-inflating a discarded page moves it back into the balloon",
     [("inflate", [3]), ("deflate", [3]), ("inflate", [3])], (1, 0, 15, 0)),
    ("touch of resident pages refaults nothing", [("touch", [0, 1, 15])], (0, 0, 16, 0)),
    ("everything ballooned", [("inflate", list(range(16)))], (16, 0, 0, 0)),
]


@pytest.mark.parametrize(("ops", "expected"), [(ops, exp) for _, ops, exp in CASES],
                         ids=[name for name, _, _ in CASES])
def test_guest_memory_accounting(ops: list[tuple[str, list[int]]],
                                 expected: tuple[int, int, int, int]) -> None:
    """Each operation sequence leaves the hand-computed ballooned/discarded/rss/refaults."""
    g = GuestMemory("g", 16)
    for op, pfns in ops:
        getattr(g, op)(pfns)
    assert (g.ballooned, g.discarded, g.rss, g.refaults) == expected


def test_touch_returns_the_number_refaulted() -> None:
    """touch() returns how many discarded pages it faulted back in, and only those change."""
    g = GuestMemory("g", 8)
    g.inflate([1, 2, 3])
    g.deflate([1, 2])
    assert g.touch([1, 3, 4]) == 1
    assert list(g.state) == [RESIDENT, RESIDENT, DISCARDED, BALLOONED] + [RESIDENT] * 4
    assert g.touch([1]) == 0


def test_host_memory_free_pages_follow_guest_rss() -> None:
    """Host free pages are the budget minus every guest's RSS, negative when overcommitted."""
    host = HostMemory(total_pages=100)
    a = host.add_guest("a", 60)
    b = host.add_guest("b", 60)
    assert host.guests == {"a": a, "b": b}
    assert (host.used_pages, host.free_pages) == (120, -20)
    a.inflate(range(30))
    assert (host.used_pages, host.free_pages) == (90, 10)
    a.deflate(range(10))  # deflated but untouched: still not resident
    assert host.free_pages == 10
    a.touch(range(5))
    assert (host.used_pages, host.free_pages) == (95, 5)
    b.inflate(range(60))
    assert host.free_pages == 65


# Lazily populated RAM (the session default): (name, ops on a 16-page guest, expected
# (ballooned, discarded, untouched, rss, saved, refaults, first touches))
LAZY: list[tuple[str, list[tuple[str, list[int]]], tuple[int, ...]]] = [
    ("fresh guest costs nothing", [], (0, 0, 16, 0, 0, 0, 0)),
    ("first touch populates", [("touch", [0, 1, 1])], (0, 0, 14, 2, 0, 0, 2)),
    ("inflating untouched pages saves nothing", [("inflate", [0, 1])],
     (2, 0, 14, 0, 0, 0, 0)),
    ("inflating touched pages saves them", [("touch", [0, 1]), ("inflate", [0, 1, 2])],
     (3, 0, 13, 0, 2, 0, 2)),
    ("deflated untouched page is untouched again, touching it is a first touch",
     [("inflate", [0]), ("deflate", [0]), ("touch", [0])], (0, 0, 15, 1, 0, 0, 1)),
    ("deflated touched page is discarded, touching it is a refault",
     [("touch", [0]), ("inflate", [0]), ("deflate", [0])], (0, 1, 15, 0, 1, 0, 1)),
    ("refault", [("touch", [0]), ("inflate", [0]), ("deflate", [0]), ("touch", [0])],
     (0, 0, 15, 1, 0, 1, 1)),
]


@pytest.mark.parametrize(("ops", "expected"), [(ops, exp) for _, ops, exp in LAZY],
                         ids=[name for name, _, _ in LAZY])
def test_lazily_populated_guest_accounting(ops: list[tuple[str, list[int]]],
                                           expected: tuple[int, ...]) -> None:
    """RSS grows on first touch; only pages the guest had touched count as saved."""
    g = GuestMemory("g", 16, populated=False)
    for op, pfns in ops:
        getattr(g, op)(pfns)
    assert (g.ballooned, g.discarded, g.untouched, g.rss, g.saved, g.refaults,
            g.first_touches) == expected


PAGES = 24
_ops = st.lists(st.tuples(st.sampled_from(["inflate", "deflate", "touch"]),
                          st.lists(st.integers(0, PAGES - 1), max_size=PAGES)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, populated=st.booleans())
def test_valid_operation_sequences_keep_counts_equal_to_page_state(
        ops: list[tuple[str, list[int]]], populated: bool) -> None:
    """After valid inflate/deflate/touch, counters equal the bytearray's state counts, against
    a model that tracks (in balloon, ever touched, resident) per page."""
    g = GuestMemory("g", PAGES, populated)
    ballooned = [False] * PAGES
    touched = [populated] * PAGES  # touched since the last deflate of a never-touched page
    resident = [populated] * PAGES
    refaults = first = 0
    for op, raw in ops:
        pfns = list(dict.fromkeys(raw))  # the device de-duplicates before calling in
        if op == "inflate":
            pfns = [p for p in pfns if not ballooned[p]]
            g.inflate(pfns)
            for p in pfns:
                ballooned[p], resident[p] = True, False
        elif op == "deflate":
            pfns = [p for p in pfns if ballooned[p]]
            g.deflate(pfns)
            for p in pfns:
                ballooned[p] = False
        else:
            n = g.touch(raw)  # any page may be touched, duplicates included
            back = [p for p in pfns if not ballooned[p] and not resident[p]]
            assert n == len(back)
            refaults += sum(touched[p] for p in back)
            first += sum(not touched[p] for p in back)
            for p in back:
                resident[p] = touched[p] = True
        expect = [(BALLOONED if touched[p] else BALLOONED_UNTOUCHED) if ballooned[p]
                  else RESIDENT if resident[p] else DISCARDED if touched[p] else UNTOUCHED
                  for p in range(PAGES)]
        assert list(g.state) == expect
        assert g.ballooned + g.discarded + g.untouched + g.rss == g.pages
        assert g.ballooned == sum(ballooned)
        assert g.rss == sum(resident)
        assert g.saved == sum(touched[p] and not resident[p] for p in range(PAGES))
        assert (g.refaults, g.first_touches) == (refaults, first)


@pytest.mark.parametrize("pfns", [[5, 0, 3], list(range(12))[::-1]], ids=["small", "batch"])
@pytest.mark.parametrize("as_array", [False, True], ids=["list", "array"])
def test_split_ballooned_keeps_order_on_both_paths(pfns: list[int], as_array: bool) -> None:
    """split_ballooned gives (in balloon, others) in the order given, untouched-ballooned
    pages included, whether the batch takes the plain loop (< 8) or the array path."""
    g = GuestMemory("g", 16, populated=False)
    g.touch([0, 1, 2])
    g.inflate([0, 1, 3, 5])  # 3 and 5 were never touched
    given_pfns = np.array(pfns, dtype=np.uint32) if as_array else pfns
    inside, outside = g.split_ballooned(given_pfns)
    assert [int(p) for p in inside] == [p for p in pfns if p in (0, 1, 3, 5)]
    assert [int(p) for p in outside] == [p for p in pfns if p not in (0, 1, 3, 5)]


def _snapshot(g: GuestMemory) -> tuple[object, ...]:
    return (bytes(g.state), g.ballooned, g.ballooned_untouched, g.discarded, g.untouched,
            g.refaults, g.first_touches)


_range_ops = st.lists(st.tuples(st.sampled_from(["inflate", "deflate", "touch"]),
                               st.integers(0, 24), st.integers(1, 12)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(populated=st.booleans(), setup=_range_ops, low=st.integers(0, 20), n=st.integers(1, 12),
       down=st.booleans())
def test_a_range_of_pages_equals_the_same_pages_listed(
        populated: bool, setup: list[tuple[str, int, int]], low: int, n: int,
        down: bool) -> None:
    """split_ballooned with the batch's range, and inflate/deflate given a range, leave the
    states and counters (and split the batch) exactly as the page list does, from states set
    up by whole runs (so that runs of one state, where slices are used, are common)."""
    a, b = GuestMemory("a", 32, populated), GuestMemory("b", 32, populated)
    for op, start, length in setup:  # valid operations on runs of pages, applied to both
        run = range(start, min(start + length, 32))
        for g in (a, b):
            inside, outside = g.split_ballooned(list(run))
            if op == "inflate":
                g.inflate(list(outside))
            elif op == "deflate":
                g.deflate(list(inside))
            else:
                g.touch(list(run))
    span = range(low, low + n)
    pfns = np.array(span[::-1] if down else span, dtype=np.uint32)
    inside, outside = a.split_ballooned(pfns, span)
    want_in, want_out = b.split_ballooned(pfns)
    assert ([int(p) for p in inside], [int(p) for p in outside]) == (
        [int(p) for p in want_in], [int(p) for p in want_out])
    if not len(inside):
        a.inflate(span)
        b.inflate(pfns)
    elif not len(outside):
        a.deflate(span)
        b.deflate(pfns)
    assert _snapshot(a) == _snapshot(b)


@pytest.mark.parametrize(("populated", "before", "op"), [
    (False, [], "inflate"),  # never touched
    (True, [], "inflate"),  # resident
    (True, ["inflate", "deflate"], "inflate"),  # discarded
    (False, ["inflate"], "deflate"),  # ballooned, never touched
    (True, ["inflate"], "deflate"),  # ballooned
])
def test_each_run_state_moves_as_page_by_page(populated: bool, before: list[str],
                                              op: str) -> None:
    """A range of pages all in one state inflates or deflates (slice path) to the states and
    counters the same pages given one by one reach."""
    a, b = GuestMemory("a", 32, populated), GuestMemory("b", 32, populated)
    for g in (a, b):
        for step in before:
            getattr(g, step)(list(range(32)))
    getattr(a, op)(range(4, 20))
    getattr(b, op)(list(range(4, 20)))
    assert _snapshot(a) == _snapshot(b)
