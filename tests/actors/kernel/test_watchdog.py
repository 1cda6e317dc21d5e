"""Hung-task and soft-lockup watchdogs on virtual time."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
import trio

from actors.kernel import Mutex, SpinLock, WaitQueue, start_watchdogs
from actors.kernel.watchdog import HungTaskWatchdog, SoftLockupWatchdog
from actors.sim import schema
from actors.sim.costs import CostModel
from tests.actors.kernel.conftest import Rig, make_rig


async def test_self_deadlock_then_hung_task_after_120s(rig: Rig,
                                                       autojump_clock: trio.abc.Clock) -> None:
    """A mutex self-deadlock is reported as recursion, then hung-task fires at 121 s virtual."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")

    async def twice() -> None:
        await m.mutex_lock()
        await m.mutex_lock()

    with trio.fail_after(400):
        async with anyio.create_task_group() as tg:
            await start_watchdogs(tg, k)
            k.spawn(tg, "vballoon", twice)
            await anyio.sleep(120.5)
            assert rig.kinds() == ["recursion"]
            await anyio.sleep(200)  # one report per blocking episode
            tg.cancel_scope.cancel()
    assert rig.kinds() == ["recursion", "hung-task"]
    _, detail, fields = rig.reports[1]
    assert detail == ("INFO: task vballoon blocked for more than 120 seconds "
                      "(waiting on vb->balloon_lock)")
    (rec,) = rig.records(schema.HUNG_TASK)
    assert (rec["t"], rec["task"], rec["waiting_on"], rec["blocked_for"]) == (
        121.0, "vballoon", "vb->balloon_lock", pytest.approx(121.0 - k.costs.lock_op))
    assert rec["all_locks"] == [{"task": "vballoon", "state": "blocked",
                                 "waiting_on": "vb->balloon_lock",
                                 "held": ["vb->balloon_lock"]}]
    assert fields["all_locks"] == rec["all_locks"]


async def test_hung_task_names_waiter_and_holder(rig: Rig, autojump_clock: trio.abc.Clock
                                                 ) -> None:
    """A task stuck in wait_event past the timeout is reported once; a short sleeper is not."""
    k = rig.kernel
    q = WaitQueue(k, "vb->acked")
    m = Mutex(k, "vb->balloon_lock")

    async def tell_host() -> None:
        await m.mutex_lock()
        await q.wait_event(lambda: False)  # the host never acks

    async def stats() -> None:
        await m.mutex_lock()

    with trio.fail_after(100):
        async with anyio.create_task_group() as tg:
            await tg.start(HungTaskWatchdog(k, timeout=10.0, check_interval=0.5).run)
            k.spawn(tg, "vballoon", tell_host)
            await anyio.sleep(5)
            k.spawn(tg, "stats", stats)
            await anyio.sleep(30)
            tg.cancel_scope.cancel()
    recs = rig.records(schema.HUNG_TASK)
    assert [(r["t"], r["task"], r["waiting_on"]) for r in recs] == [
        (10.5, "vballoon", "vb->acked"), (15.5, "stats", "vb->balloon_lock")]
    assert recs[1]["all_locks"][0]["held"] == ["vb->balloon_lock"]


async def test_soft_lockup_for_spinner_on_lock_held_forever(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """A task spinning on a spinlock its holder never releases is a soft lockup at 21 s."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")

    async def holder() -> None:
        await s.spin_lock()
        await anyio.sleep_forever()

    async def spinner() -> None:
        await s.spin_lock()

    with trio.fail_after(200):
        async with anyio.create_task_group() as tg:
            await start_watchdogs(tg, k)
            k.spawn(tg, "holder", holder)
            await anyio.lowlevel.checkpoint()
            k.spawn(tg, "kcompactd", spinner)
            await anyio.sleep(100)
            tg.cancel_scope.cancel()
    assert rig.kinds() == ["soft-lockup"]  # not hung-task: spinning is not blocking
    (rec,) = rig.records(schema.SOFT_LOCKUP)
    assert (rec["t"], rec["task"], rec["spinning_on"], rec["stuck_for"]) == (
        21.0, "kcompactd", "vb->pages_lock", 21.0)
    assert rec["all_locks"] == [
        {"task": "holder", "state": "running", "waiting_on": None, "held": ["vb->pages_lock"]},
        {"task": "kcompactd", "state": "spinning", "waiting_on": "vb->pages_lock", "held": []},
    ]
    assert rig.reports[0][1] == (
        "BUG: soft lockup - task kcompactd stuck for 21s! (spinning on vb->pages_lock)")


async def test_soft_lockup_for_busy_loop_without_sleep(autojump_clock: trio.abc.Clock) -> None:
    """A task looping over lock operations without ever sleeping is a soft lockup; one that
    msleeps in its loop, or one parked outside the substrate, is not."""
    rig = make_rig(costs=CostModel(spin_relax=1e-3))
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")

    async def livelock() -> None:  # leak_balloon retrying a trylock that never succeeds
        while True:
            await s.spin_lock()
            s.spin_unlock()
            await k.cpu_relax()

    async def polite() -> None:
        while True:
            await s.spin_lock()
            s.spin_unlock()
            await k.msleep(0.2)

    async def parked() -> None:  # waiting on an inbox without kernel.sleeping()
        await s.spin_lock()
        s.spin_unlock()
        await anyio.sleep_forever()

    with trio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(SoftLockupWatchdog(k, threshold=2.0, check_interval=0.5).run)
            k.spawn(tg, "parked", parked)
            k.spawn(tg, "polite", polite)
            k.spawn(tg, "leak", livelock)
            await anyio.sleep(4)
            tg.cancel_scope.cancel()
    (rec,) = rig.records(schema.SOFT_LOCKUP)
    assert (rec["t"], rec["task"], rec["spinning_on"], rec["stuck_for"]) == (
        2.5, "leak", None, 2.5)
    assert rig.reports[0][1].endswith("(running without sleeping)")


async def test_sleeping_marks_voluntary_sleep(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """kernel.sleeping() shows an inbox wait as a sleep: state, wait target, last_sleep."""
    k = rig.kernel
    with trio.fail_after(10), k.task("vballoon") as t:
        with k.sleeping("config_change") as same:
            assert same is t and (t.state, t.waiting_on) == ("sleeping", "config_change")
            await anyio.sleep(3)
        assert (t.state, t.waiting_on, t.last_sleep) == ("running", None, 3.0)
