"""The reverse map and the bookkeeping of LRU page migration.

Unit tests and a Hypothesis state machine for ``Rmap``; a Guest-less rig (zone, allocator
actor, one compactor, rmap holdings) on virtual time for ``Compactor``'s LRU path; and short
sessions whose apps run while compact_memory storms migrate their pages.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.guest.mm import pages as P
from actors.guest.mm.compaction import (
    COMPACT_COMPLETE,
    PAGEBLOCK,
    CompactControl,
)
from actors.guest.mm.rmap import Rmap
from actors.guest.mm.vmstat import free_blocks_at_least
from actors.guest.workload import put_pages
from run.session import scenario as scen
from run.session.session import run_session

from .compaction_helpers import LruRig, lru_problems, the_guest

# -- Rmap unit tests -----------------------------------------------------------------------------


def _consistent(rmap: Rmap) -> list[str]:
    """Every holding slot's page points back at it; every mapped page is in its holding."""
    out = []
    mapped = 0
    for hid in range(1, len(rmap.holdings) + 1):
        for i, p in enumerate(rmap.holding(hid)):
            if rmap.owner[p] != hid or rmap.slot[p] != i:
                out.append(f"{hid}[{i}] = {p}: owner {rmap.owner[p]} slot {rmap.slot[p]}")
        mapped += len(rmap.holding(hid))
    owned = sum(1 for o in rmap.owner if o)
    if owned != mapped:
        out.append(f"{owned} pages have an owner, holdings map {mapped}")
    return out


def test_register_gives_one_based_ids_up_to_255() -> None:
    """Holding ids start at 1 (0 means unmapped) and the 256th registration is refused."""
    rmap = Rmap(16)
    assert [rmap.register() for _ in range(255)] == list(range(1, 256))
    with pytest.raises(ValueError):
        rmap.register()


def test_add_take_migrate_keep_slots_and_owners() -> None:
    """add appends with owner/slot set, take swap-removes (the last page moves into the hole),
    migrate rewrites the one slot and moves owner/slot to the new page."""
    rmap = Rmap(32)
    a, b = rmap.register(), rmap.register()
    rmap.add(a, [3, 5, 7, 9])
    rmap.add(b, [11])
    assert list(rmap.holding(a)) == [3, 5, 7, 9]
    assert (rmap.owner[7], rmap.slot[7]) == (a, 2)
    assert rmap.take(a, 1) == 5  # 9 moves into slot 1
    assert list(rmap.holding(a)) == [3, 9, 7]
    assert (rmap.owner[5], rmap.owner[9], rmap.slot[9]) == (0, a, 1)
    assert rmap.take(a, 2) == 7  # the last slot: nothing moves
    assert list(rmap.holding(a)) == [3, 9]
    assert rmap.migrate(9, 20)
    assert list(rmap.holding(a)) == [3, 20]
    assert (rmap.owner[9], rmap.owner[20], rmap.slot[20]) == (0, a, 1)
    assert _consistent(rmap) == []


def test_migrate_of_an_unmapped_page_changes_nothing() -> None:
    """migrate returns False for a page no holding maps (taken meanwhile) and leaves both pages
    and every holding untouched."""
    rmap = Rmap(16)
    a = rmap.register()
    rmap.add(a, [1, 2])
    rmap.take(a, 0)  # page 1 unmapped; page 2 now in slot 0
    assert not rmap.migrate(1, 8)
    assert rmap.owner[8] == 0 and list(rmap.holding(a)) == [2]
    assert _consistent(rmap) == []


class RmapMachine(RuleBasedStateMachine):
    """Random add/take/migrate sequences against a dict model of who maps what."""

    N = 64

    def __init__(self) -> None:
        super().__init__()
        self.rmap = Rmap(self.N)
        self.hids = [self.rmap.register() for _ in range(3)]
        self.model: dict[int, list[int]] = {h: [] for h in self.hids}

    def unmapped(self) -> list[int]:
        used = {p for pages in self.model.values() for p in pages}
        return [p for p in range(self.N) if p not in used]

    @rule(h=st.integers(0, 2), data=st.data())
    def add(self, h: int, data: st.DataObject) -> None:
        free = self.unmapped()
        pfns = data.draw(st.lists(st.sampled_from(free), unique=True, max_size=6)) if free else []
        self.rmap.add(self.hids[h], pfns)
        self.model[self.hids[h]].extend(pfns)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        hid = data.draw(st.sampled_from([h for h in self.hids if self.model[h]]))
        i = data.draw(st.integers(0, len(self.model[hid]) - 1))
        pfn = self.rmap.take(hid, i)
        pages = self.model[hid]
        assert pfn == pages[i]
        last = pages.pop()  # swap-remove, as App.take_random relies on
        if i < len(pages):
            pages[i] = last
        assert self.rmap.owner[pfn] == 0

    @rule(data=st.data())
    def migrate(self, data: st.DataObject) -> None:
        free = self.unmapped()
        if not free:
            return
        old = data.draw(st.integers(0, self.N - 1))
        new = data.draw(st.sampled_from([p for p in free if p != old] or free))
        if new == old:
            return
        owner = next((h for h, pages in self.model.items() if old in pages), 0)
        assert self.rmap.migrate(old, new) == bool(owner)
        if owner:
            pages = self.model[owner]
            pages[pages.index(old)] = new

    @invariant()
    def matches_model(self) -> None:
        for hid in self.hids:
            assert list(self.rmap.holding(hid)) == self.model[hid]
        assert _consistent(self.rmap) == []


TestRmapMachine = RmapMachine.TestCase
TestRmapMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


def test_compact_zone_moves_lru_pages_and_keeps_rmap_consistent() -> None:
    """A full compaction of a fragmented zone migrates LRU pages up, builds free pageblocks,
    and leaves every mapped page with its owner, refcount 1, PG_lru and rmap pointing back;
    no page stays isolated or captured, and the buddy allocator's books balance."""
    rig = LruRig()
    held_before: list[int] = []
    result: list[str] = []

    async def body(rig: LruRig) -> None:
        await rig.fill_and_fragment()
        assert free_blocks_at_least(rig.zone, 9) == 0
        held_before.extend(len(rig.rmap.holding(h)) for h in (rig.anon, rig.cache))
        result.append(await rig.compactor.compact_zone(-1, "test", "compact_memory"))

    rig.run(body)
    assert result == [COMPACT_COMPLETE]
    assert [len(rig.rmap.holding(h)) for h in (rig.anon, rig.cache)] == held_before
    assert rig.vmstat.get("pgmigrate_success") > 200
    assert free_blocks_at_least(rig.zone, 9) >= 1
    assert rig.problems() == []
    assert rig.frames.mapping.count(P.OWNER_COMPACT_FREE) == 0
    assert rig.frames.mapping.count(P.OWNER_FREE) == rig.zone.free_pages
    rig.zone.check_invariants()


@pytest.mark.parametrize("put_before_migrate", [False, True])
def test_page_unmapped_while_isolated_is_not_migrated_or_double_freed(
        put_before_migrate: bool) -> None:
    """A page the app unmaps while compaction holds it isolated is not migrated: if the app
    already dropped its reference compaction frees it ("freed from under us"); if not, it is
    put back and freed once when the app drops that reference -- never migrated to a new page
    nobody maps while the old one is freed twice (regression: rmap.migrate's False ignored)."""
    rig = LruRig()

    async def body(rig: LruRig) -> None:
        await rig.fill_and_fragment()
        comp, f = rig.compactor, rig.frames
        cc = CompactControl(-1, 0, f.nr_pages - PAGEBLOCK, ignore_skip_hint=True)
        isolated: list[int] = []
        while len(isolated) < 16:
            isolated += await comp.isolate_migratepages(cc)
        assert all(f.flags[p] & P.PG_isolated and f.refcount[p] == 2 for p in isolated)
        # the app unmaps eight of them (take from its holding, as App.take_random does)
        victims = isolated[:8]
        taken = []
        for p in victims:
            hid = rig.rmap.owner[p]
            taken.append(rig.rmap.take(hid, rig.rmap.slot[p]))
        assert taken == victims
        if put_before_migrate:
            assert len(put_pages(f, taken)) == 0  # compaction still holds a reference
        await comp.migrate_pages(cc, isolated)
        if not put_before_migrate:
            freed = put_pages(f, taken)
            assert list(freed) == victims  # the app's reference was the last one
            await rig.client.free(freed, 0, dropped=True)
        await rig.client.free(cc.freepages, 0)  # release_freepages()
        cc.freepages = []
        assert all(f.mapping[p] == P.OWNER_FREE for p in victims)
        assert cc.migrated == len(isolated) - len(victims)

    rig.run(body)
    assert rig.problems() == []
    assert rig.frames.mapping.count(P.OWNER_COMPACT_FREE) == 0
    rig.zone.check_invariants()


# -- sessions ------------------------------------------------------------------------------------

#: Four apps on a 32 MiB guest (5 ms ticks) drop half their memory at 0.5 s while four
#: compact_memory storms (eight writers each) run around that instant; no kcompactd, no direct
#: compaction, no balloon moves, so nothing compacts when the session ends at 1 s.
DROP_STORM = [
    "guest.memory=32MiB", "duration=1s", "workload.apps=4", "workload.fill=0.8",
    "workload.drop_at=0.5", "workload.tick=5ms",
    'compaction.at=["0.49s", "0.5s", "0.505s", "0.53s"]', "compaction.workers=8",
    "compaction.kcompactd_interval=0", "compaction.direct=false",
    "host.policy.params.steps=[]",
]


@pytest.mark.parametrize(("seed", "preempt"), [(11, "0.0"), (12, "0.3"), (1, "0.3")])
def test_apps_pages_consistent_after_compaction_storms(seed: int, preempt: str) -> None:
    """After compaction storms racing the apps' unmapping, every page an app holds has its
    owner, refcount 1, PG_lru and rmap pointing back; nothing is left isolated; no page is
    orphaned or freed twice; the session (conservation, buddy walk) reports nothing.
    Seeds 11 and 12 migrate pages the apps unmapped but had not yet released, and crashed
    with a double free (BuddyError) before the rmap.migrate fix in Compactor.migrate_pages."""
    sc = scen.load("compact-storm", [*DROP_STORM, f"guest.preempt={preempt}"])
    out = run_session(sc, seed=seed)
    assert out.reason == "completed", out.error
    assert out.summary["violations"] == []
    vm = out.summary["vmstat"]
    assert vm["pgmigrate_success"] > 1000
    guest = the_guest(out)
    assert lru_problems(guest) == []
    assert guest.owner_counts()["compact_free"] == 0
