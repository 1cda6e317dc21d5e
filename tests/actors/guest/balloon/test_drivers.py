"""The three balloon driver variants end to end, through real sessions on virtual time."""

from __future__ import annotations

import array
from collections import Counter
from pathlib import Path

import pytest

from actors.guest import balloon
from actors.guest.balloon.common import KernelBug
from actors.guest.balloon.v9 import V9Balloon
from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.sim import schema
from actors.sim.clock import SessionClock
from run.session import scenario as scen
from run.session.logs import SessionLog
from run.session.session import Session, run_session

from .conftest import expected_findings, findings, read_log, small_session

DRIVERS = tuple(balloon.DRIVERS)


@pytest.mark.parametrize("driver", DRIVERS)
def test_inflate_deflate_round_trip(driver: str) -> None:
    """Inflate to 50 % then back to 0: actual == target, host set empty, MemTotal restored,
    no violations but v9's irq-safety finding (expected_findings), for every driver variant."""
    out, records = small_session(f"guest.driver={driver}")
    s = out.summary
    assert out.reason == "completed"
    assert findings(s["violations"]) == expected_findings(driver)
    half = (64 << 20) // 4096 // 2
    assert s["balloon"]["inflated"] == half and s["balloon"]["deflated"] == half
    assert s["balloon"]["target"] == s["balloon"]["actual"] == 0
    assert s["balloon"]["totalram"] == s["guest"]["pages"]
    host = s["host"]["guests"]["guest0"]
    migrated = s["vmstat"]["balloon_migrate"]  # each migration: inflate new + deflate old
    assert host["ballooned"] == 0
    assert host["inflated"] == host["deflated"] == half + migrated
    events = Counter(r["event"] for r in records if r.get("queue") != "statsq")
    assert events[schema.VQ_ADD] == events[schema.VQ_ACK] > 0
    assert events[schema.HOST_INFLATE_DONE] == events[schema.HOST_DEFLATE_DONE]


@pytest.mark.parametrize("driver", DRIVERS)
def test_host_set_equals_driver_list_while_inflated(driver: str) -> None:
    """Stopped while inflated and quiescent, the host's ballooned set equals the driver's list
    and MemTotal is reduced by exactly the balloon (checked by the session and here)."""
    out, _ = small_session(f"guest.driver={driver}",
                           'host.policy.params.steps=[["2s", "25%"]]', "duration=7s")
    assert out.summary["violations"] == []
    session = out.session
    assert session is not None
    guest = session.guests[0]
    assert guest.balloon is not None and session.quiescent(guest)
    device = session.host.devices["guest0"]
    assert guest.balloon_problems(device.memory.state) == []
    quarter = guest.frames.nr_pages // 4
    assert len(guest.balloon.pages) == quarter == device.memory.ballooned
    assert guest.meminfo.totalram == guest.frames.nr_pages - quarter


@pytest.mark.parametrize(("driver", "movable"), [("legacy", False), ("v9", True),
                                                  ("fixed", True)])
def test_balloon_pages_movable_only_with_the_patch(driver: str, movable: bool) -> None:
    """legacy allocates GFP_HIGHUSER (unmovable pageblocks); v9/fixed use the balloon
    mapping's GFP_HIGHUSER_MOVABLE and mark pages PG_balloon (movable balloon pages)."""
    out, _ = small_session(f"guest.driver={driver}", "workload.apps=0",
                           'host.policy.params.steps=[["1s", "25%"]]', "duration=4s")
    guest = out.session.guests[0] if out.session else None
    assert guest is not None and guest.balloon is not None
    pfns = list(guest.balloon.pages.pfns())
    assert pfns
    mts = {guest.frames.get_pageblock_migratetype(p) for p in pfns}
    flagged = all(guest.frames.flags[p] & P.PG_balloon for p in pfns)
    if movable:
        assert mts == {G.MIGRATE_MOVABLE} and flagged
    else:
        assert G.MIGRATE_UNMOVABLE in mts and not any(
            guest.frames.flags[p] & P.PG_balloon for p in pfns)


def _overcommit(driver: str) -> dict[str, object]:
    sc = scen.load("overcommit", [f"guest.driver={driver}", "guest.memory=64MiB",
                                  "duration=140s"])
    return run_session(sc, seed=0).summary


def test_overcommit_fixed_keeps_going() -> None:
    """fixed: the target cannot be met under __GFP_NORETRY; the driver reports Out of puff
    rounds and keeps retrying, with no lock problem."""
    s = _overcommit("fixed")
    b = s["balloon"]
    assert isinstance(b, dict)
    assert s["violations"] == []
    assert b["out_of_puff"] > 100 and 0 < b["actual"] < b["target"]


def test_overcommit_v9_deadlocks_on_balloon_lock() -> None:
    """FIX(fill-unlock) regression: v9 returns from fill_balloon holding balloon_lock when a
    round gets no page; lockdep reports the imbalance and the recursion, then the hung-task
    watchdog fires. The same scenario and seed pass on fixed (test above)."""
    s = _overcommit("v9")
    kinds = [v["kind"] for v in s["violations"]]  # type: ignore[attr-defined]
    assert kinds[:3] == ["imbalance", "recursion", "hung-task"]
    details = " ".join(v["detail"] for v in s["violations"])  # type: ignore[attr-defined]
    assert "fill_balloon" in details and "vb->balloon_lock" in details


def test_64k_pages_on_the_wire(tmp_path: Path) -> None:
    """With 64 KiB guest pages each guest page is 16 consecutive 4 KiB PFNs on the wire, and
    the round trip still balances."""
    log = tmp_path / "l.jsonl"
    out, _ = small_session("guest.page_size=64KiB", "guest.memory=128MiB", log_path=log)
    assert out.summary["violations"] == []
    adds = [r for r in read_log(log) if r["event"] == schema.VQ_ADD and r["pfns"]]
    assert adds
    for r in adds:
        pfns = r["pfns"]
        assert len(pfns) % 16 == 0
        for i in range(0, len(pfns), 16):
            assert pfns[i] % 16 == 0 and pfns[i:i + 16] == list(range(pfns[i], pfns[i] + 16))
    assert out.summary["balloon"]["totalram"] == out.summary["guest"]["pages"]


@pytest.mark.parametrize("preempt", ["0.0", "0.3"])
def test_determinism_with_balloon(tmp_path: Path, preempt: str) -> None:
    """Same seed ⇒ identical log with the balloon running (also with preemption on)."""
    logs = []
    for i in range(2):
        path = tmp_path / f"{i}.jsonl"
        small_session(f"guest.preempt={preempt}", "guest.driver=v9", log_path=path, seed=5,
                      level="debug")
        recs = read_log(path)
        for r in recs:
            r.pop("wall_start", None)
            r.pop("wall_end", None)
        logs.append(recs)
    assert logs[0] == logs[1]


def test_log_alone_rebuilds_host_set_and_driver_list(tmp_path: Path) -> None:
    """Replaying balloon.fill/leak and host.inflate/deflate.done records rebuilds the driver's
    list and the host's ballooned set exactly as the session ended."""
    log = tmp_path / "l.jsonl"
    out, _ = small_session('host.policy.params.steps=[["2s", "50%"], ["6s", "20%"]]',
                           "duration=10s", log_path=log)
    driver: set[int] = set()
    isolated: set[int] = set()
    host: set[int] = set()
    for r in read_log(log):
        if r["event"] == schema.BALLOON_FILL:
            driver.update(r["pfns"])
        elif r["event"] == schema.BALLOON_LEAK:
            driver.difference_update(r["pfns"])
        elif r["event"] == schema.BALLOON_ISOLATE:
            driver.remove(r["pfn"])
            isolated.add(r["pfn"])
        elif r["event"] == schema.BALLOON_PUTBACK:
            isolated.remove(r["pfn"])
            driver.add(r["pfn"])
        elif r["event"] == schema.BALLOON_MIGRATE:
            isolated.remove(r["old"])
            driver.add(r["new"])
        elif r["event"] == schema.HOST_INFLATE_DONE:
            host.update(r["pfns"])
        elif r["event"] == schema.HOST_DEFLATE_DONE:
            host.difference_update(r["pfns"])
    assert out.session is not None
    guest = out.session.guests[0]
    assert guest.balloon is not None
    assert driver == set(guest.balloon.pages.pfns())
    assert host == driver | isolated  # 4 KiB guest pages: wire PFNs are guest PFNs
    assert len(host) == out.summary["host"]["guests"]["guest0"]["ballooned"]


def test_v9_fill_fast_path_stops_where_the_loop_hits_bug_on() -> None:
    """fill_balloon's batched fast path leaves exactly the loop's state when a page it got is
    locked: the pages before it on the list and counted, set_page_pfns and totalram-- done for
    the locked page, then BUG_ON (KernelBug)."""
    sc = scen.load("inflate-deflate", ["guest.memory=16MiB", "guest.driver=v9"])
    session = Session(sc, log=SessionLog(clock=SessionClock()))
    b = session.guests[0].balloon
    assert isinstance(b, V9Balloon)
    got = array.array("I", [100, 101, 102, 103, 104])
    b.frames.flags[103] |= P.PG_locked
    totalram = b.meminfo.totalram
    b.num_pfns = 0
    with pytest.raises(KernelBug, match=r"trylock_page\(103\)"):
        b._fill_batch(got, 0, 5)
    assert list(b.pages.pfns()) == [102, 101, 100]  # list_add puts each at the head
    assert b.num_pages.atomic_read() == b.num_pfns == 3
    assert b.pfns[:4].tolist() == [100, 101, 102, 103]
    assert b.meminfo.totalram == totalram - 4
    assert all(b.frames.flags[p] & P.PG_balloon for p in (100, 101, 102))
    assert not b.frames.flags[103] & P.PG_balloon


@pytest.mark.parametrize("driver", DRIVERS)
def test_unplug_deflates_everything_and_resets_the_device(driver: str) -> None:
    """`guest.unplug_at` runs virtballoon_remove while the balloon is inflated: the kthread
    stops, remove_common leaks every page back (told to the host), writes actual 0 and resets
    the device, which raises no config interrupt afterwards; no violation (but v9's
    expected_findings), for every variant."""
    out, records = small_session(f"guest.driver={driver}", "guest.unplug_at=6s",
                                 'host.policy.params.steps=[["2s", "50%"], ["8s", "25%"]]')
    s = out.summary
    assert out.reason == "completed"
    assert findings(s["violations"]) == expected_findings(driver)
    half = (64 << 20) // 4096 // 2
    removes = [r for r in records if r["event"] == schema.BALLOON_REMOVE]
    assert [(r["phase"], r["num_pages"]) for r in removes] == [("start", half), ("done", 0)]
    assert removes[0]["t"] == 6.0
    resets = [r for r in records if r["event"] == schema.HOST_RESET]
    assert len(resets) == 1 and resets[0]["seq"] > removes[1]["seq"]
    # the host's 8 s target reaches config space, but nobody is left to act on it
    assert s["balloon"]["actual"] == 0 and s["balloon"]["pages_in_list"] == 0
    assert s["balloon"]["target"] == half // 2
    assert s["host"]["guests"]["guest0"]["ballooned"] == 0
    after = [r for r in records if r["t"] > removes[1]["t"]]
    assert not any(r["event"] in (schema.BALLOON_FILL, schema.BALLOON_LEAK) for r in after)
    session = out.session
    assert session is not None
    assert "vballoon" not in session.guests[0].kernel.tasks  # the kthread has exited


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("page_size", ["4KiB", "16KiB", "64KiB"])
def test_balloon_counters_agree_with_the_state_they_count(driver: str, page_size: str) -> None:
    """At a quiescent point the driver's inflated - deflated equals the pages in the balloon and
    the compaction counters balance (isolated = migrated + returned, migrated = released), for
    every page size; a counter that drifts is reported (the check can fail)."""
    out, _ = small_session(f"guest.driver={driver}", f"guest.page_size={page_size}",
                           'host.policy.params.steps=[["2s", "25%"]]', "duration=7s")
    assert out.summary["violations"] == []
    session = out.session
    assert session is not None
    guest = session.guests[0]
    assert guest.balloon is not None and session.quiescent(guest)
    device = session.host.devices["guest0"]
    assert guest.balloon_problems(device.memory.state) == []
    guest.balloon.inflated += 1
    guest.vmstat.inc("compact_balloon_released")
    kinds = [kind for kind, _ in guest.balloon_problems(device.memory.state)]
    assert kinds == ["counters", "counters"]
