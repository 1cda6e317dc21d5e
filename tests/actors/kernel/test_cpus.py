"""Guest CPUs and the lock races they decide (actors.kernel.cpus, Kernel.woken_first)."""

from __future__ import annotations

import random

import anyio
import pytest
import trio

from actors.kernel import Kernel, Mutex, SpinLock
from actors.kernel.cpus import Cpus
from actors.kernel.task import KTask, current
from actors.sim.choices import Choice, Choices
from tests.actors.kernel.conftest import make_rig


async def _two_payers(k: Kernel, owed: float) -> list[float]:
    """Two tasks that each owe ``owed`` seconds of CPU time and then sleep: when each one's
    sleep began (the payment happens on a CPU first)."""
    done: list[float] = []

    async def payer() -> None:
        t = current()
        t.debt = owed
        await k.msleep(0.0)
        done.append(round(anyio.current_time(), 9))

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "a", payer)
        k.spawn(tg, "b", payer)
    return sorted(done)


@pytest.mark.parametrize(("cpus", "expected"), [(1, [1.0, 2.0]), (2, [1.0, 1.0])])
async def test_at_most_cpus_tasks_execute_at_once(autojump_clock: trio.abc.Clock, cpus: int,
                                                  expected: list[float]) -> None:
    """Two tasks owing a second of CPU each: on one CPU the second waits for the first."""
    k = make_rig(cpus=cpus).kernel
    with trio.fail_after(10):
        assert await _two_payers(k, 1.0) == expected
    assert k.cpus.free == cpus


@pytest.mark.parametrize(("cpus", "state"), [(1, "running"), (2, "spinning")])
async def test_a_spinlock_holder_keeps_its_cpu(autojump_clock: trio.abc.Clock, cpus: int,
                                               state: str) -> None:
    """A task holding a spinlock is atomic and never leaves its CPU: on a one-CPU guest a
    second task wanting the lock cannot even spin for it (it waits, runnable, for the CPU);
    on two it spins on the other CPU."""
    k = make_rig(cpus=cpus).kernel
    s = SpinLock(k, "vb->pages_lock")
    got: list[float] = []

    async def holder() -> None:
        await s.spin_lock()
        await anyio.sleep(1.0)  # a long critical section (atomic: on its CPU throughout)
        s.spin_unlock()

    async def contender() -> None:
        await anyio.sleep(0.1)
        await s.spin_lock()
        got.append(anyio.current_time())
        s.spin_unlock()

    with trio.fail_after(10):
        async with anyio.create_task_group() as tg:
            h = k.spawn(tg, "holder", holder)
            c = k.spawn(tg, "contender", contender)
            await anyio.sleep(0.5)
            assert h.on_cpu and c.state == state and c.on_cpu == (cpus == 2)
    assert got and got[0] == pytest.approx(1.0, abs=1e-5)
    assert k.cpus.free == cpus


def test_an_atomic_task_without_a_cpu_pins_one() -> None:
    """spin_trylock (or irqs off) at the instant a segment began takes a CPU at once, even
    past the count, for as long as the task stays atomic."""
    cpus = Cpus(1)
    k = make_rig().kernel
    a, b = KTask(k, "a", 0.0), KTask(k, "b", 0.0)
    cpus.pin(a)
    cpus.pin(b)
    assert (cpus.free, cpus.busy()) == (-1, 2)
    cpus.put(b)
    cpus.put(a)
    assert (cpus.free, a.on_cpu, b.on_cpu) == (1, False, False)
    with pytest.raises(ValueError, match="at least one CPU"):
        Cpus(0)


async def _relock(k: Kernel) -> str:
    """holder unlocks a mutex a sleeper waits on and re-locks it in the same instant: who
    got it next."""
    m = Mutex(k, "m")
    got: list[str] = []

    async def holder() -> None:
        await m.mutex_lock()
        await anyio.sleep(1.0)
        m.mutex_unlock()
        await m.mutex_lock()
        got.append("holder")
        m.mutex_unlock()

    async def sleeper() -> None:
        await anyio.sleep(0.5)
        await m.mutex_lock()
        got.append("sleeper")
        m.mutex_unlock()

    async with anyio.create_task_group() as tg:
        k.spawn(tg, "holder", holder)
        k.spawn(tg, "sleeper", sleeper)
    return got[0]


def _choices(forced: list[Choice] | None) -> Choices:
    return Choices(lambda name: random.Random(name), forced=forced, record=forced is None)


@pytest.mark.parametrize(("forced", "winner"), [([], "holder"),
                                                ([Choice("guest0:race:m", 1, 1.0)], "sleeper")])
async def test_who_takes_a_released_mutex_is_a_forceable_choice(
        autojump_clock: trio.abc.Clock, forced: list[Choice], winner: str) -> None:
    """The releaser re-locking at once meets the woken sleeper: the race:<lock> choice point
    decides; forced off the running task wins (it steals), forced on the sleeper does."""
    choices = _choices(forced)
    k = make_rig(choices=choices).kernel
    with trio.fail_after(10):
        assert await _relock(k) == winner
    assert [c.site for c in choices.recorded] == [c.site for c in forced]


async def test_the_lock_race_is_recorded_when_drawn(autojump_clock: trio.abc.Clock) -> None:
    """Seeded, the draw is recorded when it goes the sleeper's way, so replaying the recorded
    choices reproduces the winner (both winners appear across seeds)."""
    winners: dict[str, list[Choice]] = {}
    for seed in range(12):
        choices = _choices(None)
        rig = make_rig(seed=seed, choices=choices)
        w = await _relock(rig.kernel)
        winners.setdefault(w, list(choices.recorded))
    assert set(winners) == {"holder", "sleeper"}
    assert [c.site for c in winners["sleeper"]] == ["guest0:race:m"]
    assert winners["holder"] == []
