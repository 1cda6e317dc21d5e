"""Preemption points: seeded, reproducible, and free at strength 0."""

from __future__ import annotations

import random

import anyio
import pytest
import trio
import trio.testing

from actors.kernel import Kernel, Mutex, Perturbation, SpinLock, WaitQueue
from actors.kernel.preempt import Priorities
from actors.sim import schema
from actors.sim.clock import SessionClock
from actors.sim.costs import CostModel
from run.session import determinism
from tests.actors.kernel.conftest import Rig, make_rig


def _interleaving(seed: int) -> list[str]:
    """One fresh run of three tasks through locks and preemption points: the event order."""
    order: list[str] = []

    async def main() -> None:
        rig = make_rig(strength=0.5, seed=seed)
        k = rig.kernel
        m = Mutex(k, "m")
        s = SpinLock(k, "s")

        async def worker(name: str) -> None:
            for i in range(6):
                await k.preempt("top")
                order.append(f"{name}{i}")
                await m.mutex_lock()
                await k.preempt("inside")
                order.append(f"{name}{i}m")
                m.mutex_unlock()
                await s.spin_lock()
                order.append(f"{name}{i}s")
                s.spin_unlock()

        with trio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name in "abc":
                    k.spawn(tg, name, worker, name)

    determinism.seed_scheduler(1)  # trio's own choices fixed: only the perturbation varies
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return order


def test_same_seed_same_interleaving() -> None:
    """Two runs with one perturbation seed interleave the tasks identically."""
    assert _interleaving(11) == _interleaving(11)


def test_different_seeds_different_interleavings() -> None:
    """Different perturbation seeds (same scheduler seed) interleave the tasks differently."""
    assert _interleaving(11) != _interleaving(12)


async def _rounds(k: Kernel, n: int) -> None:
    """n rounds of five lock operations and a preemption point, all uncontended."""
    m, s, q = Mutex(k, "m"), SpinLock(k, "s"), WaitQueue(k, "q")
    for _ in range(n):
        await k.preempt("anywhere")
        await m.mutex_lock()
        await s.spin_lock()
        s.spin_unlock()
        m.mutex_unlock()
        await q.wait_event(lambda: True)


async def test_strength_zero_never_yields(autojump_clock: trio.abc.Clock) -> None:
    """At strength 0 and with free lock operations, preempt and uncontended lock operations
    never checkpoint nor take time."""
    rig = make_rig(costs=CostModel(lock_op=0.0))
    k = rig.kernel
    state = k.rng.getstate()
    with trio.fail_after(10), k.task("t"), trio.testing.assert_no_checkpoints():
        await _rounds(k, 100)
    assert anyio.current_time() == 0.0
    assert k.rng.getstate() == state  # not even a random draw
    assert rig.records(schema.PREEMPT) == []


async def test_closed_points_carry_the_cost_to_the_next_suspension(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Each lock operation charges costs.lock_op to its task. Points the perturbation leaves
    closed never cost a scheduler pass: on a clock that cannot move time without one (trio's
    MockClock), the debt is carried, and the next suspension (msleep here) pays all of it."""
    k = rig.kernel
    with trio.fail_after(10), k.task("t") as t:
        with trio.testing.assert_no_checkpoints():
            await _rounds(k, 100)
        assert t.debt == pytest.approx(500 * k.costs.lock_op)
        assert anyio.current_time() == 0.0
        await k.msleep(1.0)
        assert t.debt == 0.0
    assert anyio.current_time() == pytest.approx(1.0 + 500 * k.costs.lock_op, abs=1e-12)


def test_a_task_alone_pays_at_every_point_without_a_pass() -> None:
    """Under the session's VirtualClock a task that nothing else can preempt pays its debt at
    each closed point (the clock just moves on), so time is exact at every point: 100 rounds
    of five lock operations leave only wait_event's own owed, and no pass was made."""
    rig = make_rig()
    k = rig.kernel

    async def main() -> tuple[float, float]:
        SessionClock().start()  # binds the clock's advance for this run, as a session does
        await trio.lowlevel.checkpoint()  # trio's own system task takes its first step
        with k.task("t") as t, trio.testing.assert_no_checkpoints():
            await _rounds(k, 100)
        return trio.current_time(), t.debt

    clock = determinism.virtual_clock()
    now, debt = trio.run(main, clock=clock, instruments=[clock])
    assert now == pytest.approx(499 * CostModel().lock_op, rel=1e-9)
    assert debt == pytest.approx(CostModel().lock_op)


async def test_full_strength_preempts_every_point(autojump_clock: trio.abc.Clock) -> None:
    """At strength 1, every preemption point yields or delays, and is logged."""
    rig = make_rig(strength=1.0, seed=3, max_delay=1e-3)
    k = rig.kernel
    with trio.fail_after(10), k.task("t"):
        for _ in range(50):
            with trio.testing.assert_checkpoints():
                await k.preempt("p")
    recs = rig.records(schema.PREEMPT)
    assert len(recs) == 50 and {r["site"] for r in recs} == {"p"}
    delays = [r["delay"] for r in recs]
    assert any(d == 0.0 for d in delays) and any(d > 0.0 for d in delays)
    assert all(0.0 <= d <= 1e-3 for d in delays)
    assert anyio.current_time() == pytest.approx(sum(delays))


def test_decide_is_seeded_and_bounded() -> None:
    """decide() draws one number per point: same seed, same choices; rates follow strength."""
    a = Perturbation(random.Random(5), strength=0.3, max_delay=2e-6)
    b = Perturbation(random.Random(5), strength=0.3, max_delay=2e-6)
    da = [a.decide("x") for _ in range(2000)]
    assert da == [b.decide("x") for _ in range(2000)]
    fired = [d for d in da if d is not None]
    assert 0.25 < len(fired) / len(da) < 0.35
    assert all(0.0 <= d < 2e-6 for d in fired)
    assert not Perturbation(random.Random(0)).active


def test_decide_can_be_overridden_to_force_choices() -> None:
    """A subclass overriding decide() sees every point and forces the choice."""

    class Forced(Perturbation):
        def __init__(self) -> None:
            super().__init__(random.Random(0))
            self.active = True
            self.sites: list[str] = []

        def decide(self, site: str) -> float | None:
            self.sites.append(site)
            return 0.5

    async def main() -> float:
        rig = make_rig()
        k = rig.kernel
        k.perturb = Forced()
        with k.task("t"):
            m = Mutex(k, "vb->balloon_lock")
            await m.mutex_lock()
            m.mutex_unlock()
            await k.preempt("leak_balloon:after-list_first_entry")
        assert isinstance(k.perturb, Forced)
        assert k.perturb.sites == ["mutex_lock(vb->balloon_lock)",
                                   "leak_balloon:after-list_first_entry"]
        return trio.current_time()

    # two forced 0.5 s delays, and the lock and unlock paid at the second point
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == \
        pytest.approx(1.0 + 2 * CostModel().lock_op, abs=1e-15)


def test_bad_strength_rejected() -> None:
    """A strength outside [0, 1] is an error naming the value."""
    with pytest.raises(ValueError, match=r"strength 1\.5 not in"):
        Perturbation(random.Random(0), strength=1.5)


async def test_a_task_steps_aside_only_for_a_runnable_higher_priority_task(
        autojump_clock: trio.abc.Clock) -> None:
    """Priorities (PCT, POS): the running task's point is a step-aside of ``max_delay``
    exactly while a task ranked above it is runnable -- not while that task sleeps, or polls
    in a cpu_relax retry loop (it waits for another task, as a spinner does)."""
    rig = make_rig()
    k = rig.kernel
    p = Priorities(random.Random(0), 1e-6, k.tasks)
    p.prio.update(hi=2.0, lo=1.0)
    seen: list[tuple[str, float | None]] = []

    async def hi() -> None:
        await anyio.sleep(1.0)  # running (not a kernel sleep) until t=1
        await k.msleep(1.0)

    async def lo() -> None:
        await anyio.sleep(0.5)
        seen.append(("hi running", p.decide("site")))
        k.tasks["hi"].relaxing = True
        seen.append(("hi polling", p.decide("site")))
        k.tasks["hi"].relaxing = False
        await anyio.sleep(1.0)
        seen.append(("hi asleep", p.decide("site")))

    async def top() -> None:
        await anyio.sleep(0.5)
        p.prio["top"] = 3.0
        seen.append(("top, hi running", p.decide("site")))

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            k.spawn(tg, "hi", hi)
            k.spawn(tg, "lo", lo)
            k.spawn(tg, "top", top)
    assert sorted(seen) == sorted([("hi running", 1e-6), ("hi polling", None),
                                   ("hi asleep", None), ("top, hi running", None)])
