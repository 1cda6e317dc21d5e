"""Lockdep: inversion, recursion, sleep-in-atomic, context imbalance, held-at-exit, dumps."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

import anyio
import pytest
import trio

from actors.kernel import (
    Mutex,
    SpinLock,
    WaitQueue,
    context,
    lock_page,
    msleep,
    trylock_page,
    unlock_page,
)
from actors.sim import schema
from tests.actors.kernel.conftest import Rig


async def test_abba_inversion_reported_with_both_classes(rig: Rig,
                                                         autojump_clock: trio.abc.Clock) -> None:
    """balloon_lock→page in one task and page→balloon_lock in another is one inversion report."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")
    frames = SimpleNamespace(flags=array("H", bytes(16)))
    with trio.fail_after(10):
        with k.task("vballoon"):
            await m.mutex_lock()
            await lock_page(k, frames, 1)
            unlock_page(k, frames, 1)
            m.mutex_unlock()
        assert rig.reports == []
        with k.task("kcompactd"):
            for pfn in (2, 3):  # the same class cycle again: no second report
                await lock_page(k, frames, pfn)
                await m.mutex_lock()
                m.mutex_unlock()
                unlock_page(k, frames, pfn)
    (kind, detail, fields), = rig.reports
    assert kind == "inversion"
    assert (fields["task"], fields["lock"], fields["held_locks"]) == (
        "kcompactd", "vb->balloon_lock", ["page:2"])
    assert fields["cycle"] == ["page", "vb->balloon_lock", "page"]
    assert "vb->balloon_lock -> page (first in vballoon)" in detail
    assert len(rig.records(schema.LOCKDEP)) == 1


async def test_inversion_names_the_cycle(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """ABBA on two mutexes reports 'inversion' naming both classes and the cycle path."""
    k = rig.kernel
    a = Mutex(k, "A")
    b = Mutex(k, "B")
    with trio.fail_after(10):
        with k.task("t1"):
            await a.mutex_lock()
            await b.mutex_lock()
            b.mutex_unlock()
            a.mutex_unlock()
        with k.task("t2"):
            for _ in range(2):
                await b.mutex_lock()
                await a.mutex_lock()
                a.mutex_unlock()
                b.mutex_unlock()
    (kind, detail, fields), = rig.reports
    assert kind == "inversion"
    assert fields["task"] == "t2" and fields["lock"] == "A" and fields["held_locks"] == ["B"]
    assert fields["cycle"] == ["B", "A", "B"]
    assert "possible circular locking dependency detected" in detail
    assert "A -> B (first in t1)" in detail
    (rec,) = rig.records(schema.LOCKDEP)
    assert (rec["level"], rec["kind"], rec["task"], rec["lock"]) == ("error", "inversion", "t2",
                                                                     "A")
    assert k.lockdep.graph == {"A": {"B": "t1"}, "B": {"A": "t2"}}


async def test_three_class_cycle_found_transitively(rig: Rig,
                                                    autojump_clock: trio.abc.Clock) -> None:
    """A→B, B→C, then C→A closes a cycle through a path, not just a direct edge."""
    k = rig.kernel
    a, b, c = Mutex(k, "A"), Mutex(k, "B"), Mutex(k, "C")
    with trio.fail_after(10), k.task("t"):
        for first, second in ((a, b), (b, c), (c, a)):
            await first.mutex_lock()
            await second.mutex_lock()
            second.mutex_unlock()
            first.mutex_unlock()
    assert rig.kinds() == ["inversion"]
    assert rig.reports[0][2]["cycle"] == ["C", "A", "B", "C"]


async def test_trylock_adds_no_ordering(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """A trylock cannot deadlock: B-then-trylock(A) after A-then-B is not an inversion."""
    k = rig.kernel
    a, b = Mutex(k, "A"), Mutex(k, "B")
    with trio.fail_after(10), k.task("t"):
        await a.mutex_lock()
        await b.mutex_lock()
        b.mutex_unlock()
        a.mutex_unlock()
        await b.mutex_lock()
        assert a.mutex_trylock()
        a.mutex_unlock()
        b.mutex_unlock()
    assert rig.reports == []
    assert k.lockdep.graph == {"A": {"B": "t"}}


async def test_trylocked_lock_orders_what_is_taken_under_it(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """The trylock rule's other half: A trylocked then B locked records A→B (a trylocked lock
    is on the held stack), so B held then A locked elsewhere is an inversion."""
    k = rig.kernel
    a, b = Mutex(k, "A"), Mutex(k, "B")
    with trio.fail_after(10):
        with k.task("t1"):
            assert a.mutex_trylock()
            await b.mutex_lock()
            b.mutex_unlock()
            a.mutex_unlock()
        assert k.lockdep.graph == {"A": {"B": "t1"}} and rig.reports == []
        with k.task("t2"):
            await b.mutex_lock()
            await a.mutex_lock()
            a.mutex_unlock()
            b.mutex_unlock()
    (kind, detail, fields), = rig.reports
    assert kind == "inversion" and fields["cycle"] == ["B", "A", "B"]
    assert "A -> B (first in t1)" in detail


async def test_trylock_page_under_a_lock_adds_no_edge(rig: Rig, autojump_clock: trio.abc.Clock
                                                      ) -> None:
    """trylock_page and spin_trylock while holding B add no B→page or B→S edge; a page
    trylocked first still orders the lock taken under it (page→B)."""
    k = rig.kernel
    b, sl = Mutex(k, "B"), SpinLock(k, "S")
    frames = SimpleNamespace(flags=array("H", bytes(16)))
    with trio.fail_after(10), k.task("t"):
        await b.mutex_lock()
        assert trylock_page(k, frames, 1)
        assert sl.spin_trylock()
        sl.spin_unlock()
        unlock_page(k, frames, 1)
        b.mutex_unlock()
        assert k.lockdep.graph == {}
        assert trylock_page(k, frames, 2)
        await b.mutex_lock()
        b.mutex_unlock()
        unlock_page(k, frames, 2)
    assert k.lockdep.graph == {"page": {"B": "t"}} and rig.reports == []


async def test_mutex_self_deadlock_reported_as_recursion(rig: Rig,
                                                         autojump_clock: trio.abc.Clock) -> None:
    """Re-taking one's own mutex reports 'recursion' at once and then sleeps for good."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")

    async def twice() -> None:
        await m.mutex_lock()
        await m.mutex_lock()

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            t = k.spawn(tg, "vballoon", twice)
            await anyio.sleep(5)
            # blocked at once: the first mutex_lock's cost is carried, to be paid on waking
            assert (t.state, t.waiting_on, t.since) == ("blocked", "vb->balloon_lock", 0.0)
            assert t.debt == pytest.approx(2 * k.costs.lock_op)
            tg.cancel_scope.cancel()
    (kind, detail, fields), = rig.reports
    assert kind == "recursion" and fields["lock"] == "vb->balloon_lock"
    assert fields["held_locks"] == ["vb->balloon_lock"]
    assert "self-deadlock" in detail


async def test_nested_page_locks_need_annotation(rig: Rig, autojump_clock: trio.abc.Clock
                                                 ) -> None:
    """Two blocking lock_page calls nest only when annotated; trylock of a second page is fine."""
    k = rig.kernel
    frames = SimpleNamespace(flags=array("H", bytes(16)))
    with trio.fail_after(10), k.task("migrate") as t:
        await lock_page(k, frames, 1)
        assert trylock_page(k, frames, 2)  # migration's trylock of newpage: no report
        unlock_page(k, frames, 2)
        await lock_page(k, frames, 3, nested=True)
        assert t.held_names() == ["page:1", "page:3"]
        unlock_page(k, frames, 1)  # out of order is allowed
        unlock_page(k, frames, 3)
        assert rig.reports == []
        await lock_page(k, frames, 1)
        await lock_page(k, frames, 4)
        unlock_page(k, frames, 4)
        unlock_page(k, frames, 1)
    (kind, detail, fields), = rig.reports
    assert (kind, fields["lock"], fields["held_locks"]) == ("recursion", "page:4", ["page:1"])
    assert "same class page" in detail


@pytest.mark.parametrize("primitive", ["mutex_lock", "wait_event", "msleep", "lock_page"])
async def test_sleep_in_atomic(rig: Rig, autojump_clock: trio.abc.Clock, primitive: str) -> None:
    """Any sleeping primitive under a spinlock is reported, even when it need not sleep."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")
    m = Mutex(k, "vb->balloon_lock")
    q = WaitQueue(k, "vb->config_change")
    frames = SimpleNamespace(flags=array("H", bytes(16)))
    with trio.fail_after(10), k.task("vballoon"):
        await s.spin_lock()
        if primitive == "mutex_lock":
            await m.mutex_lock()
            m.mutex_unlock()
            what = "vb->balloon_lock"
        elif primitive == "wait_event":
            await q.wait_event(lambda: True)
            what = "vb->config_change"
        elif primitive == "msleep":
            await msleep(k, 0.2)
            what = "msleep"
        else:
            await lock_page(k, frames, 7)
            unlock_page(k, frames, 7)
            what = "page:7"
        s.spin_unlock()
    (kind, detail, fields), = rig.reports
    assert kind == "sleep-in-atomic"
    assert fields["lock"] == what and fields["held_locks"] == ["vb->pages_lock"]
    assert detail.startswith(f"BUG: sleeping function called from invalid context: {primitive}(")
    assert "holding spinlock vb->pages_lock" in detail


async def test_sleep_after_spin_unlock_is_fine(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """__wait_on_isolated_pages' pattern (unlock, wait_event, relock) reports nothing."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")
    q = WaitQueue(k, "vb->config_change")
    with trio.fail_after(10), k.task("vballoon"):
        await s.spin_lock()
        s.spin_unlock()
        await q.wait_event(lambda: True)
        await s.spin_lock()
        s.spin_unlock()
    assert rig.reports == []


async def test_context_catches_undeclared_lock_held_at_return(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """A function returning with a lock it did not declare (fill_balloon's early return) is
    an imbalance naming the function and the lock; a declaring twin passes."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")

    @context()
    async def fill_balloon(num: int) -> int:
        await m.mutex_lock()
        if num == 0:
            return 0  # "Didn't get any? Oh well." — returns with balloon_lock held
        m.mutex_unlock()
        return num

    @context(acquires=("vb->balloon_lock",))
    async def grab() -> None:
        await m.mutex_lock()

    @context(releases=("vb->balloon_lock",))
    def drop() -> None:
        m.mutex_unlock()

    with trio.fail_after(10), k.task("vballoon"):
        assert await fill_balloon(3) == 3
        assert rig.reports == []
        await grab()
        drop()
        assert rig.reports == []
        assert await fill_balloon(0) == 0
    kinds = rig.kinds()
    assert kinds == ["imbalance", "held-at-exit"]
    _, detail, fields = rig.reports[0]
    assert fields["function"].endswith("fill_balloon") and fields["lock"] == "vb->balloon_lock"
    assert "context imbalance in '" in detail
    assert "returns holding vb->balloon_lock, not declared in acquires" in detail


async def test_context_declared_release_still_held(rig: Rig, autojump_clock: trio.abc.Clock
                                                   ) -> None:
    """A function declaring it releases a lock but returning with it held is an imbalance."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")

    @context(releases=("vb->pages_lock",))
    def forgets() -> None:
        pass

    with trio.fail_after(10), k.task("t"):
        await s.spin_lock()
        forgets()
        s.spin_unlock()
    (kind, detail, _), = rig.reports
    assert kind == "imbalance"
    assert "declared to release vb->pages_lock but returns still holding it" in detail


async def test_held_at_exit(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """A kernel task that ends holding a lock is reported; the task leaves the task table."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")
    with trio.fail_after(10):
        with k.task("vballoon"):
            await m.mutex_lock()
        assert k.tasks == {}
    (kind, detail, fields), = rig.reports
    assert (kind, fields["task"], fields["held_locks"]) == (
        "held-at-exit", "vballoon", ["vb->balloon_lock"])
    assert "exited holding vb->balloon_lock" in detail


async def test_show_all_locks(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """show_all_locks lists every task in creation order with state, wait target and locks."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")
    s = SpinLock(k, "vb->pages_lock")

    async def blocker() -> None:
        await m.mutex_lock()
        m.mutex_unlock()

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with k.task("vballoon"):
                await m.mutex_lock()
                await s.spin_lock()
                k.spawn(tg, "kcompactd", blocker)
                k.spawn(tg, "idle", anyio.sleep, 0)
                await anyio.sleep(1)
                assert k.show_all_locks() == [
                    {"task": "vballoon", "state": "running", "waiting_on": None,
                     "held": ["vb->balloon_lock", "vb->pages_lock"]},
                    {"task": "kcompactd", "state": "blocked", "waiting_on": "vb->balloon_lock",
                     "held": []},
                ]
                s.spin_unlock()
                m.mutex_unlock()
    assert rig.reports == []
