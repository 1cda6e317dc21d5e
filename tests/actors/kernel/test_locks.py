"""Mutex, spinlock, page lock, wait queue and atomic semantics on virtual time."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from actors.kernel import (
    PG_LOCKED,
    Atomic,
    BadUnlockError,
    Mutex,
    SpinLock,
    WaitQueue,
    lock_page,
    mutex_lock,
    mutex_unlock,
    spin_lock,
    spin_unlock,
    trylock_page,
    unlock_page,
    wait_event,
    wake_up,
)
from actors.kernel.task import current_name
from actors.sim import schema
from actors.sim.costs import CostModel
from tests.actors.kernel.conftest import Rig, make_rig, outcomes

N_TASKS, ROUNDS = 8, 20


def _when() -> float:
    """Virtual time to 0.1 ms: these tests pin who gets a lock, at which step of the story;
    the microseconds that lock operations and wake-ups cost are pinned in test_cpus.py."""
    return round(anyio.current_time(), 4)


def _frames(n: int = 16) -> SimpleNamespace:
    return SimpleNamespace(flags=array("H", bytes(2 * n)))


async def _increment_all(rig: Rig, *, locked: bool) -> int:
    """N tasks each do ROUNDS read-preempt-write increments of one shared counter."""
    k = rig.kernel
    m = Mutex(k, "counter_lock")
    box = [0]

    async def worker() -> None:
        for _ in range(ROUNDS):
            if locked:
                await m.mutex_lock()
            v = box[0]
            await k.preempt("between read and write")
            box[0] = v + 1
            if locked:
                m.mutex_unlock()

    async with anyio.create_task_group() as tg:
        for i in range(N_TASKS):
            k.spawn(tg, f"worker{i}", worker)
    return box[0]


async def test_mutex_excludes_under_full_perturbation(autojump_clock: trio.abc.Clock) -> None:
    """With a preemption point inside the critical section, the mutex loses no update."""
    with trio.fail_after(60):
        rig = make_rig(strength=1.0, seed=7)
        assert await _increment_all(rig, locked=True) == N_TASKS * ROUNDS
        assert rig.records(schema.LOCK_CONTENDED)  # the perturbation made them contend
        assert rig.reports == []


async def test_unlocked_counter_loses_updates_when_perturbed(autojump_clock: trio.abc.Clock
                                                             ) -> None:
    """Without the lock, strength 1.0 preemption between read and write loses updates."""
    with trio.fail_after(60):
        rig = make_rig(strength=1.0, seed=7)
        assert await _increment_all(rig, locked=False) < N_TASKS * ROUNDS
        assert rig.records(schema.PREEMPT)


async def test_unlocked_counter_is_atomic_at_strength_zero(autojump_clock: trio.abc.Clock
                                                           ) -> None:
    """At strength 0 a read-preempt-write never interleaves: no update is lost."""
    with trio.fail_after(60):
        rig = make_rig(strength=0.0)
        assert await _increment_all(rig, locked=False) == N_TASKS * ROUNDS
        assert rig.records(schema.PREEMPT) == []


async def test_mutex_wakes_waiters_fifo(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """With no running task to steal it, sleepers get a contended mutex in arrival order, each
    woken by the previous owner's unlock (was test_mutex_hands_off_fifo: hand-off is gone)."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")
    got: list[tuple[str, float]] = []

    async def holder() -> None:
        await mutex_lock(m)
        await anyio.sleep(1.0)
        mutex_unlock(m)

    async def waiter(delay: float) -> None:
        await anyio.sleep(delay)
        await m.mutex_lock()
        got.append((current_name(), _when()))
        await anyio.sleep(0.5)
        m.mutex_unlock()

    with trio.fail_after(60):
        async with anyio.create_task_group() as tg:
            k.spawn(tg, "holder", holder)
            for name, delay in (("w1", 0.1), ("w2", 0.2), ("w3", 0.3)):
                k.spawn(tg, name, waiter, delay)
            await anyio.sleep(0.5)
            assert [(t.name, t.state, t.waiting_on) for t in k.tasks.values()][1:] == [
                ("w1", "blocked", "vb->balloon_lock"),
                ("w2", "blocked", "vb->balloon_lock"),
                ("w3", "blocked", "vb->balloon_lock"),
            ]
    assert got == [("w1", 1.0), ("w2", 1.5), ("w3", 2.0)]
    acquires = [(r["task"], r["waited"]) for r in rig.records(schema.LOCK_ACQUIRE)]
    assert acquires == [("holder", 0.0), ("w1", pytest.approx(0.9, abs=1e-4)),
                        ("w2", pytest.approx(1.3, abs=1e-4)), ("w3", pytest.approx(1.7, abs=1e-4))]
    contended = rig.records(schema.LOCK_CONTENDED)
    assert [(r["task"], r["owner"]) for r in contended] == [
        ("w1", "holder"), ("w2", "holder"), ("w3", "holder")]
    assert [r["held"] for r in rig.records(schema.LOCK_RELEASE)] == [
        1.0, pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5)]
    assert rig.reports == [] and m.owner is None


async def test_cancelled_waiter_does_not_lose_the_mutex(rig: Rig,
                                                        autojump_clock: trio.abc.Clock) -> None:
    """A waiter cancelled while queued leaves the queue; the next waiter still gets the lock."""
    k = rig.kernel
    m = Mutex(k, "m")
    order: list[str] = []

    async def holder() -> None:
        await m.mutex_lock()
        await anyio.sleep(2.0)
        m.mutex_unlock()

    async def waiter(name: str) -> None:
        await m.mutex_lock()
        order.append(name)
        m.mutex_unlock()

    with trio.fail_after(60):
        async with anyio.create_task_group() as tg:
            k.spawn(tg, "holder", holder)
            await anyio.sleep(0.1)
            with anyio.CancelScope() as doomed:
                async with anyio.create_task_group() as inner:
                    k.spawn(inner, "doomed", waiter, "doomed")
                    await anyio.sleep(0.1)
                    k.spawn(tg, "patient", waiter, "patient")
                    await anyio.sleep(0.1)
                    doomed.cancel()
    assert order == ["patient"]
    assert m.owner is None and not m._waiters


async def test_mutex_trylock(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """mutex_trylock takes a free mutex and fails, without sleeping, on a held one."""
    k = rig.kernel
    m = Mutex(k, "m")
    with k.task("a"):  # no await: cannot hang
        assert m.mutex_trylock()
        assert not m.mutex_trylock()  # own mutex: trylock fails, it is not a deadlock
        m.mutex_unlock()
        assert not m.mutex_is_locked()
    assert rig.reports == []


async def test_unlock_of_unheld_mutex_reports_and_raises(rig: Rig,
                                                         autojump_clock: trio.abc.Clock) -> None:
    """Releasing a mutex the task does not hold is an imbalance report and a BadUnlockError."""
    k = rig.kernel
    m = Mutex(k, "vb->balloon_lock")
    with k.task("vballoon"), pytest.raises(BadUnlockError, match="held by nobody"):
        m.mutex_unlock()
    (kind, detail, fields), = rig.reports
    assert kind == "imbalance" and fields["lock"] == "vb->balloon_lock"
    assert detail.startswith("bad unlock balance detected: vballoon")


async def test_uncontended_spin_lock_costs_no_time(rig: Rig, autojump_clock: trio.abc.Clock
                                                   ) -> None:
    """An uncontended spin_lock/spin_unlock pair takes no virtual time and makes the task atomic."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")
    with trio.fail_after(10), k.task("a") as t:
        await spin_lock(s)
        assert t.atomic == 1 and t.held_names() == ["vb->pages_lock"]
        spin_unlock(s)
        assert t.atomic == 0 and t.held == []
        assert anyio.current_time() == 0.0


async def test_spin_contention_advances_virtual_time(rig: Rig, autojump_clock: trio.abc.Clock
                                                     ) -> None:
    """A contended spinner spins (state spinning) until release, then pays one spin_relax
    and the lock operation it carried (its debt: nothing else was paid in between)."""
    k = rig.kernel
    s = SpinLock(k, "vb->pages_lock")
    relax = k.costs.spin_relax
    acquired: list[float] = []

    async def holder() -> None:
        await s.spin_lock()
        await anyio.sleep(1e-6)  # work inside the critical section
        s.spin_unlock()

    async def spinner() -> None:
        await s.spin_lock()
        acquired.append(anyio.current_time())
        s.spin_unlock()

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            k.spawn(tg, "holder", holder)
            await anyio.lowlevel.checkpoint()
            sp = k.spawn(tg, "spinner", spinner)
            await anyio.sleep(0.5e-6)
            assert (sp.state, sp.spinning_on, sp.atomic) == ("spinning", "vb->pages_lock", 0)
    spun = 1e-6 + relax + k.costs.lock_op
    assert acquired == [pytest.approx(spun, abs=1e-12)]
    waited = [r["waited"] for r in rig.records(schema.LOCK_ACQUIRE) if r["task"] == "spinner"]
    assert waited == [pytest.approx(spun, abs=1e-12)]
    assert rig.records(schema.LOCK_CONTENDED)[0]["kind"] == "spin"


async def test_spin_costs_follow_the_cost_model(autojump_clock: trio.abc.Clock) -> None:
    """The spin cost is the scenario's spin_relax: three spinners queue, each paying it."""
    rig = make_rig(costs=CostModel(spin_relax=0.25))
    k = rig.kernel
    s = SpinLock(k, "l")
    times: list[tuple[str, float]] = []

    async def spinner(name: str) -> None:
        await s.spin_lock()
        times.append((name, _when()))
        s.spin_unlock()

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with k.task("holder"):
                await s.spin_lock()
                for name in ("a", "b", "c"):  # arrive 0.1 s apart: tickets a, b, c
                    k.spawn(tg, name, spinner, name)
                    await anyio.sleep(0.1)
                await anyio.sleep(0.7)
                s.spin_unlock()
    assert times == [("a", 1.25), ("b", 1.5), ("c", 1.75)]


async def test_page_lock_semantics(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """trylock_page sets PG_locked once; a second trylock fails; lock_page sleeps until unlock,
    which clears PG_locked and wakes the sleeper (3.x: no hand-off), and the sleeper takes it."""
    k = rig.kernel
    frames = _frames()
    got: list[float] = []

    async def locker() -> None:
        assert not trylock_page(k, frames, 5)
        await lock_page(k, frames, 5)
        got.append(_when())
        unlock_page(k, frames, 5)

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with k.task("compaction") as t:
                assert trylock_page(k, frames, 5)
                assert frames.flags[5] == PG_LOCKED
                assert not trylock_page(k, frames, 5)  # not even its holder can retake it
                assert t.held_names() == ["page:5"]
                lk = k.spawn(tg, "leak", locker)
                await anyio.sleep(3.0)
                assert (lk.state, lk.waiting_on) == ("blocked", "page:5")
                assert k.page_waiters == {5: [(lk, k.page_waiters[5][0][1])]}
                unlock_page(k, frames, 5)
                assert frames.flags[5] == 0  # cleared, the sleeper only woken: it leaves
                assert k.page_owner == {} and k.page_waiters[5][0][1].is_set()  # when it runs
                assert t.held == []
    assert got == [3.0]
    assert frames.flags[5] == 0 and k.page_owner == {} and k.page_waiters == {}
    assert [(r["task"], r["lock"], r["kind"]) for r in rig.records(schema.LOCK_ACQUIRE)] == [
        ("compaction", "page:5", "page"), ("leak", "page:5", "page")]
    assert rig.reports == []


async def test_unlock_page_not_locked_reports_and_raises(rig: Rig,
                                                         autojump_clock: trio.abc.Clock) -> None:
    """unlock_page on an unlocked page is an imbalance report and a BadUnlockError."""
    k = rig.kernel
    with k.task("a"), pytest.raises(BadUnlockError):
        unlock_page(k, _frames(), 3)
    assert rig.kinds() == ["imbalance"] and rig.reports[0][2]["lock"] == "page:3"


async def test_pg_locked_matches_page_frames(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """The substrate's PG_LOCKED is the page model's PG_locked bit, set on real PageFrames."""
    pages = pytest.importorskip("actors.guest.mm.pages")
    assert pages.PG_locked == PG_LOCKED
    frames = pages.PageFrames(1024, 4096)
    with rig.kernel.task("a"):
        assert trylock_page(rig.kernel, frames, 700)
        assert frames.flags[700] & pages.PG_locked
        unlock_page(rig.kernel, frames, 700)
        assert not frames.flags[700] & pages.PG_locked


async def test_wait_event_wakes_only_when_condition_true(rig: Rig,
                                                         autojump_clock: trio.abc.Clock) -> None:
    """wait_event sleeps through a wake_up while the condition is false, returns once it holds."""
    k = rig.kernel
    q = WaitQueue(k, "vb->config_change")
    flag = [False]
    woke: list[float] = []

    async def sleeper() -> None:
        await wait_event(q, lambda: flag[0])
        woke.append(_when())

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with k.task("host-irq"):
                s = k.spawn(tg, "leak", sleeper)
                await anyio.sleep(1.0)
                assert wake_up(q) == 1  # condition still false
                await anyio.sleep(1.0)
                assert (s.state, s.waiting_on, woke) == ("blocked", "vb->config_change", [])
                flag[0] = True
                await anyio.sleep(1.0)
                assert woke == []  # a true condition alone wakes nobody
                assert q.wake_up() == 1
    assert woke == [3.0]
    assert [r["woken"] for r in rig.records(schema.WAIT_WAKE)] == [1, 1]
    assert len(rig.records(schema.WAIT_SLEEP)) == 2  # slept, re-checked, slept again
    assert s.last_sleep == 3.0 + k.costs.wakeup  # woken at 3, on its CPU after the wake-up


def test_wait_event_reads_site_precedes_every_evaluation() -> None:
    """A condition declared a lockless read (``reads=``) gets its preemption point before
    the first evaluation and before each after a wake-up; the entry point stays."""
    rig = make_rig(strength=1.0)
    k = rig.kernel
    q = WaitQueue(k, "vb->config_change")
    flag = [False]
    sites: list[str] = []
    preempt = k.preempt

    async def recorded(site: str) -> None:
        sites.append(site)
        await preempt(site)

    k.preempt = recorded  # type: ignore[method-assign]

    async def waiter() -> None:
        await q.wait_event_interruptible(lambda: flag[0], reads="towards_target")

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            k.spawn(tg, "vballoon", waiter)
            with k.task("irq"):
                await anyio.sleep(1.0)
                q.wake_up()  # still false: sleeps again
                await anyio.sleep(1.0)
                flag[0] = True
                q.wake_up()

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sites == ["wait_event(vb->config_change)", "towards_target", "towards_target",
                     "towards_target"]


async def test_wait_event_true_condition_does_not_sleep(rig: Rig,
                                                        autojump_clock: trio.abc.Clock) -> None:
    """wait_event on a condition already true returns at once without sleeping."""
    k = rig.kernel
    q = WaitQueue(k, "q")
    with trio.fail_after(10), k.task("a"), trio.testing.assert_no_checkpoints():
        await q.wait_event(lambda: True)
    assert rig.records(schema.WAIT_SLEEP) == []


async def test_wake_up_outside_kernel_task(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """wake_up works from code that is no kernel task (an interrupt), logged as task '-'."""
    q = WaitQueue(rig.kernel, "vb->acked")
    assert q.wake_up() == 0
    assert rig.records(schema.WAIT_WAKE)[0]["task"] == "-"


def test_atomic_ops() -> None:
    """atomic_t operations with kernel names act on a plain int."""
    a = Atomic()
    a.atomic_set(5)
    a.atomic_add(3)
    a.atomic_sub(2)
    a.atomic_inc()
    a.atomic_dec()
    assert a.atomic_read() == 6 and a.counter == 6
    assert not a.atomic_dec_and_test()
    a.atomic_set(1)
    assert a.atomic_dec_and_test()


async def test_cancelled_page_waiter_leaves_the_queue(rig: Rig, autojump_clock: trio.abc.Clock
                                                      ) -> None:
    """A lock_page sleeper cancelled before its turn leaves; the page unlocks cleanly after."""
    k = rig.kernel
    frames = _frames()
    order: list[str] = []

    async def waiter(name: str) -> None:
        await lock_page(k, frames, 9)
        order.append(name)
        unlock_page(k, frames, 9)

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with k.task("holder"):
                assert trylock_page(k, frames, 9)
                with anyio.CancelScope() as doomed:
                    async with anyio.create_task_group() as inner:
                        k.spawn(inner, "doomed", waiter, "doomed")
                        await anyio.sleep(0.1)
                        k.spawn(tg, "patient", waiter, "patient")
                        await anyio.sleep(0.1)
                        doomed.cancel()
                assert [w.name for w, _ in k.page_waiters[9]] == ["patient"]
                unlock_page(k, frames, 9)
    assert order == ["patient"]
    assert frames.flags[9] == 0 and k.page_owner == {} and k.page_waiters == {}


# -- the semantics of 3.x, each outcome reached by some scheduler seed ----------------------------
async def _mutex_race(rig: Rig) -> tuple[tuple[str, float], ...]:
    """holder unlocks at t=1 while ``runner`` calls mutex_lock at t=1 (the same batch) and two
    sleepers wait: (task, time it got the mutex) in order, and each sleeper's sleeps."""
    k = rig.kernel
    m = Mutex(k, "m")
    got: list[tuple[str, float]] = []

    async def holder() -> None:
        await m.mutex_lock()
        await anyio.sleep(1.0)
        m.mutex_unlock()
        assert m.owner is None  # woken, not handed over: the mutex is free until someone runs

    async def taker(delay: float) -> None:
        await anyio.sleep(delay)
        await m.mutex_lock()
        got.append((current_name(), _when()))
        await anyio.sleep(0.5)
        m.mutex_unlock()

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        w1 = k.spawn(tg, "w1", taker, 0.1)
        w2 = k.spawn(tg, "w2", taker, 0.2)
        k.spawn(tg, "runner", taker, 1.0)
    return (*got, ("w1 sleeps", w1.episode), ("w2 sleeps", w2.episode))


def test_mutex_unlock_wakes_and_a_running_task_may_steal() -> None:
    """3.x mutex_unlock frees the mutex and wakes the first sleeper: under some seeds the
    sleeper runs first and takes it; under others a task already running takes it first (a
    steal), and the woken sleeper sleeps again, still first in the queue (so w1 before w2)."""
    seen = outcomes(_mutex_race)
    assert set(seen) == {
        (("w1", 1.0), ("w2", 1.5), ("runner", 2.0), ("w1 sleeps", 1), ("w2 sleeps", 1)),
        (("runner", 1.0), ("w1", 1.5), ("w2", 2.0), ("w1 sleeps", 2), ("w2 sleeps", 1)),
    }, seen


async def _page_race(rig: Rig) -> tuple[tuple[str, float], ...]:
    """holder unlocks page 4 at t=1 while ``trier`` calls trylock_page at t=1 and two tasks
    sleep in lock_page: (task, time it got the page) in order, and each sleeper's sleeps."""
    k = rig.kernel
    frames = _frames()
    got: list[tuple[str, float]] = []

    async def holder() -> None:
        assert trylock_page(k, frames, 4)
        await anyio.sleep(1.0)
        unlock_page(k, frames, 4)
        assert frames.flags[4] == 0 and 4 not in k.page_owner  # cleared, then woken

    async def sleeper(delay: float) -> None:
        await anyio.sleep(delay)
        await lock_page(k, frames, 4)
        got.append((current_name(), _when()))
        await anyio.sleep(0.5)
        unlock_page(k, frames, 4)

    async def trier() -> None:
        await anyio.sleep(1.0)
        if trylock_page(k, frames, 4):
            got.append(("trier", _when()))
            await anyio.sleep(0.5)
            unlock_page(k, frames, 4)

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        s1 = k.spawn(tg, "s1", sleeper, 0.1)
        s2 = k.spawn(tg, "s2", sleeper, 0.2)
        k.spawn(tg, "trier", trier)
    assert frames.flags[4] == 0 and k.page_waiters == {} and k.page_owner == {}
    return (*got, ("s1 sleeps", s1.episode), ("s2 sleeps", s2.episode))


def test_unlock_page_clears_then_wakes_and_trylock_may_win() -> None:
    """3.x unlock_page clears PG_locked and then wakes the first sleeper: under some seeds the
    sleeper re-tests first and takes the page (the trylock fails); under others trylock_page
    wins the window, and the woken sleeper, finding it locked, queues again at the tail (so s2
    before s1: an exclusive bit wait, unlike the mutex queue)."""
    seen = outcomes(_page_race)
    assert set(seen) == {
        (("s1", 1.0), ("s2", 1.5), ("s1 sleeps", 1), ("s2 sleeps", 1)),
        (("trier", 1.0), ("s2", 1.5), ("s1", 2.0), ("s1 sleeps", 2), ("s2 sleeps", 1)),
    }, seen


async def _spin_race(rig: Rig) -> tuple[object, ...]:
    """holder releases at t=1 while ``late`` calls spin_trylock then spin_lock at t=1 and
    ``early`` has spun since t=0.1: whether late came before the release, and who got it."""
    k = rig.kernel
    s = SpinLock(k, "s")
    got: list[str] = []
    late_saw: list[str | None] = []

    async def holder() -> None:
        await s.spin_lock()
        await anyio.sleep(1.0)
        s.spin_unlock()

    async def spinner(delay: float) -> None:
        await anyio.sleep(delay)
        if current_name() == "late":
            late_saw.append(None if s.owner is None else s.owner.name)
            assert not s.spin_trylock()  # held, or handed to early's ticket: never free
        await s.spin_lock()
        got.append(current_name())
        s.spin_unlock()

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        k.spawn(tg, "early", spinner, 0.1)
        k.spawn(tg, "late", spinner, 1.0)
    return (*late_saw, *got)


def test_ticket_spinlock_is_fifo_whatever_the_schedule() -> None:
    """An x86 ticket lock is fair: whether the newcomer arrives just before the release (the
    holder still owns it) or just after (already handed to the queued spinner's ticket), it
    can neither trylock nor overtake; the earlier spinner always gets the lock first."""
    seen = outcomes(_spin_race)
    assert set(seen) == {("holder", "early", "late"), ("early", "early", "late")}, seen


async def _wake_all_race(rig: Rig) -> tuple[object, ...]:
    """Two tasks wait for a token; one token is posted and wake_up called at t=1, another at
    t=2: how many the first wake_up woke, and who got a token when."""
    k = rig.kernel
    q = WaitQueue(k, "q")
    tokens = [0]
    got: list[tuple[str, float]] = []
    woken: list[int] = []

    async def consumer() -> None:
        await q.wait_event(lambda: tokens[0] > 0)
        tokens[0] -= 1  # no await between the re-check and the take: atomic
        got.append((current_name(), _when()))

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "c1", consumer)
        k.spawn(tg, "c2", consumer)
        with k.task("poster"):
            for when in (1.0, 2.0):
                await anyio.sleep(when - anyio.current_time())
                tokens[0] += 1
                woken.append(q.wake_up())
    sleeps = len(rig.records(schema.WAIT_SLEEP))
    return (*woken, *got, ("sleeps", sleeps))


def test_wake_up_wakes_every_waiter_each_rechecks() -> None:
    """wake_up wakes every non-exclusive sleeper (2), each re-checks its condition: whichever
    the seed runs first takes the one token, the other finds it false and sleeps again."""
    seen = outcomes(_wake_all_race)
    assert set(seen) == {
        (2, 1, ("c1", 1.0), ("c2", 2.0), ("sleeps", 3)),
        (2, 1, ("c2", 1.0), ("c1", 2.0), ("sleeps", 3)),
    }, seen



async def _relock_race(rig: Rig) -> tuple[str, ...]:
    """A holder unlocks a mutex and a page and re-locks both at once (no time passes) while
    a sleeper waits on each: who got each one next."""
    k = rig.kernel
    m = Mutex(k, "m")
    frames = _frames()
    got: list[str] = []

    async def holder() -> None:
        await m.mutex_lock()
        await lock_page(k, frames, 3)
        await anyio.sleep(1.0)
        m.mutex_unlock()
        await m.mutex_lock()  # straight back: a zero-width window in virtual time
        got.append(f"m:{current_name()}")
        m.mutex_unlock()
        unlock_page(k, frames, 3)
        await lock_page(k, frames, 3)
        got.append(f"page:{current_name()}")
        unlock_page(k, frames, 3)

    async def mutex_sleeper() -> None:
        await anyio.sleep(0.1)
        await m.mutex_lock()
        got.append(f"m:{current_name()}")
        m.mutex_unlock()

    async def page_sleeper() -> None:
        await anyio.sleep(0.1)
        await lock_page(k, frames, 3)
        got.append(f"page:{current_name()}")
        unlock_page(k, frames, 3)

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        k.spawn(tg, "ms", mutex_sleeper)
        k.spawn(tg, "ps", page_sleeper)
    return tuple(got[:1] + [g for g in got if g.startswith("page")][:1])


def test_releaser_relocking_at_once_races_the_woken_sleeper() -> None:
    """mutex_lock and lock_page finding the lock free with a woken sleeper yield once, so
    even the releaser re-locking in the same step wins only when the seed runs it first."""
    seen = outcomes(_relock_race)
    assert {m for m, _ in seen} == {"m:holder", "m:ms"}, seen
    assert {p for _, p in seen} == {"page:holder", "page:ps"}, seen


async def _poll_race(rig: Rig) -> tuple[tuple[str, float], ...]:
    """holder unlocks page 4 at t=1; ``poller`` has polled it with trylock_page and
    cpu_relax(page=4) since t=0.1 (its backoff long past 1 ms); ``trier`` tries it at t=1:
    who got the page, and when."""
    k = rig.kernel
    frames = _frames()
    got: list[tuple[str, float]] = []

    async def holder() -> None:
        assert trylock_page(k, frames, 4)
        await anyio.sleep(1.0)
        unlock_page(k, frames, 4)

    async def poller() -> None:
        await anyio.sleep(0.1)
        while not trylock_page(k, frames, 4):
            await k.cpu_relax(page=4)
        got.append(("poller", _when()))
        unlock_page(k, frames, 4)

    async def trier() -> None:
        await anyio.sleep(1.0)
        if trylock_page(k, frames, 4):
            got.append(("trier", _when()))
            unlock_page(k, frames, 4)

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        k.spawn(tg, "poller", poller)
        k.spawn(tg, "trier", trier)
    return tuple(got)


def test_a_page_poller_is_runnable_the_instant_the_lock_is_released() -> None:
    """A trylock_page retry loop sees the bit clear at once, as a polling CPU does: with its
    backoff at the 1 ms maximum it still takes the page at t=1 exactly under some seeds;
    under others a third task's trylock wins that instant and the poller gets it right after
    (never a zero-width window slept through)."""
    seen = outcomes(_poll_race)
    assert set(seen) == {
        (("poller", 1.0),),
        (("trier", 1.0), ("poller", 1.0)),
    }, seen
