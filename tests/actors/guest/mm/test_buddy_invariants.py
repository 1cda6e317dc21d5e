"""Tests for the buddy invariant walker, and a state machine that keeps every invariant."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.guest.mm import pages as P
from actors.guest.mm.gfp import (
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    WMARK_LOW,
    WMARK_MIN,
)
from actors.guest.mm.page_alloc import BuddyError

from .buddy_helpers import (
    GFPS,
    MOV,
    NORETRY,
    OWNER_FOR,
    RECL,
    UNMOV,
    make_zone,
    order_frees,
)


def test_check_invariants_catches_corruption() -> None:
    """check_invariants notices stray flags, wrong counters and broken conservation."""
    z = make_zone(2)
    z.frames.flags[5] = P.PG_lru
    with pytest.raises(BuddyError, match="flagged tail pages"):
        z.check_invariants()
    z.frames.flags[5] = 0
    z.nr_free[3] += 1
    with pytest.raises(BuddyError, match=r"nr_free\[3\]"):
        z.check_invariants()
    z.nr_free[3] -= 1
    z.nr_allocated += 1
    with pytest.raises(BuddyError, match="managed"):
        z.check_invariants()
    z.nr_allocated -= 1
    z.frames.flags[600] = P.PG_buddy
    with pytest.raises(BuddyError):
        z.check_invariants()


class BuddyMachine(RuleBasedStateMachine):
    """Random alloc/free/isolate/retype sequences on a small zone keep every buddy invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.zone = make_zone(4)
        self.held: list[tuple[int, int]] = []  # (head pfn, order) of allocated blocks

    @initialize(pageblocks=st.integers(4, 16), marks=st.sampled_from([(0, 0, 0), (20, 40, 60),
                                                                      None]),
                fallback=st.sampled_from(["v4.13", "v3.6"]))
    def build(self, pageblocks: int, marks: tuple[int, int, int] | None, fallback: str) -> None:
        """Start from a fresh zone of 4-16 pageblocks (either fallback model)."""
        self.zone = make_zone(pageblocks, marks, fallback)
        self.held = []

    @rule(n=st.integers(1, 600), order=st.sampled_from([0, 0, 0, 1, 3, 5, 9, 10]),
          gfp=st.sampled_from(GFPS), bulk=st.booleans())
    def alloc(self, n: int, order: int, gfp: int, bulk: bool) -> None:
        """Allocate blocks; NORETRY never ends below low, normal requests never below min."""
        z = self.zone
        owner = OWNER_FOR.get(gfp, P.OWNER_KERNEL)
        if bulk:
            out: list[int] = []
            got = z.alloc_pages_bulk(n, order, gfp, owner, out)
        else:
            pfn = z.alloc_pages(order, gfp, owner)
            out = [pfn] if pfn >= 0 else []
            got = len(out)
        self.held.extend((pfn, order) for pfn in out)
        if got and gfp == NORETRY:
            assert z.free_pages >= z.watermark[WMARK_LOW]
        if got and gfp in (MOV, UNMOV, RECL):
            assert z.free_pages >= z.watermark[WMARK_MIN]

    @precondition(lambda self: bool(self.held))
    @rule(seed=st.integers(0, 2**32), how=st.sampled_from(["asc", "desc", "shuffle", "fifo"]),
          share=st.floats(0.0, 1.0))
    def free(self, seed: int, how: str, share: float) -> None:
        """Free a subset of the held blocks, in bulk per order."""
        chosen = order_frees(self.held, seed, how, share)
        for order in sorted({o for _, o in chosen}):
            pfns = [p for p, o in chosen if o == order]
            assert self.zone.free_pages_bulk(pfns, order) == len(pfns)
        gone = set(chosen)
        self.held = [b for b in self.held if b not in gone]

    @rule(index=st.integers(0, 10_000), split=st.booleans())
    def isolate(self, index: int, split: bool) -> None:
        """Take a free block as compaction's free scanner would."""
        z = self.zone
        heads = [p for p in range(z.frames.nr_pages) if z.frames.flags[p] & P.PG_buddy]
        if not heads:
            return
        pfn = heads[index % len(heads)]
        if split:
            n = z.split_free_page(pfn)
            self.held.extend((p, 0) for p in range(pfn, pfn + n))
        else:
            order = z.isolate_free_block(pfn)
            if order >= 0:
                self.held.append((pfn, order))

    @rule(block=st.integers(0, 15), mt=st.sampled_from(
        [MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE]))
    def retype(self, block: int, mt: int) -> None:
        """Change a pageblock's type and move its free pages, as a steal would."""
        z = self.zone
        pfn = (block % z.frames.nr_pageblocks) * 512
        z.frames.set_pageblock_migratetype(pfn, mt)
        z.move_freepages_block(pfn, mt)

    @invariant()
    def conserved(self) -> None:
        """Free + allocated == managed, and the held blocks account for every allocated page."""
        z = self.zone
        assert z.free_pages + z.nr_allocated == z.managed_pages
        assert sum(1 << o for _, o in self.held) == z.nr_allocated

    @invariant()
    def buddy_invariants(self) -> None:
        """Aligned, non-overlapping, fully merged, list-consistent free blocks."""
        self.zone.check_invariants()


BuddyMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


test_buddy_machine = BuddyMachine.TestCase
