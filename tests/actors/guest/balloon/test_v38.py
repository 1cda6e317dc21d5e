"""The ``v3.8`` variant (drivers/virtio/virtio_balloon.c and the balloon compaction core of
Linux 3.8.13) through real sessions: it runs every built-in scenario, inflates and deflates,
and its compaction migrates balloon pages the way 3.8 does -- the new page losing its mapping
(``move_to_new_page`` treats MIGRATEPAGE_BALLOON_SUCCESS as a failure), balloon pages isolated
only under ``zone->lru_lock``. Nothing here fixes 3.8; the tests pin what it does."""

from __future__ import annotations

import pytest

from actors.guest.balloon.v38 import V38Balloon
from actors.guest.mm import pages as P
from actors.guest.mm.compaction_38 import Compactor38
from actors.sim import schema
from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import Session, run_session

from ..mm.compaction_helpers import LOST_ISOLATED, small_storm, the_guest
from .conftest import small_session


@pytest.mark.parametrize("name", scen.builtin_names())
def test_runs_every_builtin_scenario(name: str) -> None:
    """Each built-in scenario, as shipped, runs under v3.8 to its end or to its first
    violation, and that violation is the lost isolated pages (LOST_ISOLATED)."""
    sc = scen.load(name, ["guest.driver=v3.8"])
    out = run_session(sc, seed=0, recorder=FlightRecorder(capacity=64), fail_fast=True)
    assert "balloon" in out.summary  # (``default``'s host never asks for pages)
    assert out.reason in ("completed", "first-violation"), out.error
    assert all(LOST_ISOLATED in v.detail for v in out.violations), out.violations


def test_isolated_pages_put_on_the_lru_are_lost_and_leak_sends_empty_deflates() -> None:
    """race, seed 0: compaction puts isolated balloon pages back with putback_lru_page, the
    session reports them lost at the next snapshot, and from then on leak_balloon() finds no
    page and calls tell_host() with an empty deflate buffer, which the host acks with nothing
    to do, as QEMU does."""
    rec = FlightRecorder()
    out = run_session(scen.load("race", ["guest.driver=v3.8", "duration=9.1s"]), seed=0,
                      recorder=rec)
    assert out.reason == "completed"
    assert [v.kind for v in out.violations] == ["balloon"]
    lost = out.violations[0]
    lru = [r["pfn"] for r in rec.records
           if r["event"] == schema.BALLOON_PUTBACK_LRU and r["t"] <= lost.t]
    assert f"{len(lru)} {LOST_ISOLATED}" in lost.detail
    empty = [r["hs"] for r in rec.records if r["event"] == schema.VQ_ADD
             and r["queue"] == "deflateq" and not r["pfns"]]
    acked = {r["hs"] for r in rec.records if r["event"] == schema.VQ_ACK
             and r["queue"] == "deflateq"}
    assert len(empty) > 100 and set(empty[:-1]) <= acked  # (the last may be in flight)


def test_round_trip_leaves_nothing_behind() -> None:
    """Inflate to 50 % and back: the whole balloon goes through enqueue and dequeue, each
    dequeued page's extra reference dropped by balloon_page_free (the allocator took them)."""
    out, records = small_session("guest.driver=v3.8")
    s = out.summary
    assert out.reason == "completed" and s["violations"] == []
    assert s["balloon"]["actual"] == 0 and s["balloon"]["pages_in_list"] == 0
    assert s["balloon"]["isolated"] == 0
    guest = the_guest(out)
    assert isinstance(guest.balloon, V38Balloon)
    assert guest.owner_counts()["balloon"] == 0
    assert any(r["event"] == schema.BALLOON_LEAK for r in records)


def test_compact_storm_migrates_balloon_pages_which_then_lose_their_mapping() -> None:
    """compact-storm: 3.8's compactors isolate and migrate balloon pages; each new page ends up
    on the balloon list without the balloon mapping (3.8's move_to_new_page sets
    newpage->mapping = NULL on any rc but MIGRATEPAGE_SUCCESS), so it can never move again."""
    rec = FlightRecorder()
    seen: list[int] = []  # new pages of earlier migrations found on the list at a snapshot

    def snapshot(session: Session) -> None:
        guest = session.guests[0]
        assert guest.balloon is not None
        listed = set(guest.balloon.pages.pfns())
        flags = guest.frames.flags
        came_by_migration: dict[int, bool] = {}  # pfn -> its last arrival was a migration
        for r in rec.records:
            if r["event"] == schema.BALLOON_MIGRATE:
                came_by_migration[r["new"]] = True
            elif r["event"] == schema.BALLOON_FILL:
                came_by_migration.update(dict.fromkeys(r["pfns"], False))
        for p, migrated in came_by_migration.items():
            if migrated and p in listed:
                assert not flags[p] & P.PG_balloon
                seen.append(p)

    out = small_storm("v3.8", recorder=rec, on_snapshot=snapshot)
    assert out.reason == "completed", out.error
    assert isinstance(the_guest(out).compactor(), Compactor38)
    migrations = [r for r in rec.records if r["event"] == schema.BALLOON_MIGRATE]
    assert migrations and out.summary["vmstat"]["compact_balloon_migrated"] == len(migrations)
    assert seen
