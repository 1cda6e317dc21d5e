"""The determinism contract: trio internals present, seeded scheduling, named streams."""

import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
import trio
import trio.testing

from actors.sim import clock as actor_clock
from actors.sim.clock import SessionClock
from run.session import determinism
from tests.run.session.test_guests import records, strip_wall


def test_trio_internals_still_there() -> None:
    """Fails loudly if a trio upgrade removes the seeded-shuffle scheduler hook we rely on."""
    determinism.check_trio_internals()


def _schedule_order(seed: int) -> list[int]:
    order: list[int] = []

    async def worker(i: int) -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
            order.append(i)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(worker, i)

    determinism.seed_scheduler(seed)
    trio.run(main, clock=determinism.virtual_clock())
    return order


def test_same_seed_same_schedule() -> None:
    """Two runs with one seed interleave runnable tasks identically."""
    assert _schedule_order(3) == _schedule_order(3)


def test_different_seeds_different_schedules() -> None:
    """Different seeds shuffle runnable tasks differently."""
    orders = {tuple(_schedule_order(seed)) for seed in range(5)}
    assert len(orders) > 1


def test_named_streams_are_independent_and_stable() -> None:
    """A stream depends only on (seed, name): asking for another stream never shifts it."""
    a = determinism.RandomStreams(7)
    first = [a.get("workload").random() for _ in range(3)]
    b = determinism.RandomStreams(7)
    b.get("host").random()
    assert [b.get("workload").random() for _ in range(3)] == first
    assert determinism.RandomStreams(8).get("workload").random() != first[0]
    assert determinism.derive_seed(1, "x") == determinism.derive_seed(1, "x")


def test_virtual_clock_starts_at_zero_and_autojumps() -> None:
    """A session can sleep an hour of virtual time instantly."""

    async def main() -> float:
        await trio.sleep(3600)
        return trio.current_time()

    assert trio.run(main, clock=determinism.virtual_clock()) == 3600


Sleep = Callable[[float], Awaitable[None]]


def _timeline(clock: trio.abc.Clock, seed: int, sleep: Sleep = trio.sleep
              ) -> list[tuple[float, int, int]]:
    """(time, worker, step) for workers mixing sleeps, checkpoints and event hand-offs."""
    out: list[tuple[float, int, int]] = []

    async def worker(i: int, ev: trio.Event) -> None:
        for step in range(6):
            if (i + step) % 3 == 0:
                await sleep(0.001 * ((i * 7 + step) % 4))
            elif (i + step) % 3 == 1:
                await trio.lowlevel.checkpoint()
            else:
                ev.set()
            out.append((trio.current_time(), i, step))

    async def main() -> None:
        events = [trio.Event() for _ in range(6)]
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(worker, i, events[i])
                nursery.start_soon(events[(i + 1) % 6].wait)
            nursery.start_soon(trio.sleep, 0.0015)  # a trio deadline among the clock's timers

    determinism.seed_scheduler(seed)
    trio.run(main, clock=clock)
    return out


def test_virtual_clock_schedules_exactly_like_mockclock_autojump() -> None:
    """VirtualClock, with trio's sleep or its own, gives MockClock(autojump=0)'s timeline."""
    for seed in range(4):
        mock = _timeline(trio.testing.MockClock(autojump_threshold=0), seed)
        assert _timeline(determinism.virtual_clock(), seed) == mock
        clock = determinism.virtual_clock()
        assert _timeline(clock, seed, clock.sleep) == mock


def test_virtual_clock_sleep_errors_and_cancellation() -> None:
    """Its sleep rejects negative/NaN, and a cancelled sleeper leaves no timer behind."""
    clock = determinism.virtual_clock()

    async def main() -> float:
        for bad in (-1.0, math.nan):
            with pytest.raises(ValueError, match="non-negative"):
                await clock.sleep(bad)
        with trio.move_on_after(1):
            await clock.sleep(5)
        await clock.sleep(2)  # the cancelled 5 s timer must not wake anything at t=5
        return trio.current_time()

    assert trio.run(main, clock=clock) == 3.0


def test_session_actors_sleep_on_the_virtual_clock() -> None:
    """Inside a session's run, actors.sim.clock.sleep is the clock's; outside it is anyio's."""
    clock = determinism.virtual_clock()
    seen: list[object] = []

    async def main() -> None:
        SessionClock().start()

        async def actor() -> None:
            seen.append(actor_clock._SLEEP.get())
            await actor_clock.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor)

    trio.run(main, clock=clock)
    assert seen == [clock.sleep]
    assert actor_clock._SLEEP.get() is anyio.sleep


def test_log_is_independent_of_the_hash_seed(tmp_path: Path) -> None:
    """The same scenario and seed under two PYTHONHASHSEED values write the same log record
    for record (wall-clock fields aside): nothing in a session iterates in hash order."""
    logs = []
    for hash_seed in ("1", "2"):
        log = tmp_path / f"h{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "run", "run", "race", "--seed", "3",
                        "--duration", "4s", "--level", "debug", "--set", "guest.driver=v9",
                        "--set", "guest.preempt=0.05", "--set", "faults.enabled=true",
                        "--log", str(log)], env=env, capture_output=True, timeout=300,
                       check=False)
        logs.append(strip_wall(records(log)))
    assert len(logs[0]) > 1000
    assert logs[0] == logs[1]


def test_advancing_without_a_pass_is_the_sleep_it_replaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VirtualClock.advance moves time on without a scheduler pass only where the sleep it
    replaces would wake the task alone: the race log is the same record for record with
    every advance forced through the sleep (a test that fails if the shortcut were taken
    with another task runnable or a timer due first)."""
    from run.session import scenario as scen
    from run.session.session import run_session

    sc = scen.load("race", ["guest.driver=v9", "guest.preempt=0.05", "faults.enabled=true",
                            "duration=4s"])
    taken = 0
    shortcut = determinism.VirtualClock.try_advance

    def counting(self: determinism.VirtualClock, seconds: float) -> bool:
        nonlocal taken
        moved = shortcut(self, seconds)
        taken += moved
        return moved

    monkeypatch.setattr(determinism.VirtualClock, "try_advance", counting)
    fast = tmp_path / "fast.jsonl"
    run_session(sc, seed=3, log_path=fast)

    async def always_sleep(self: determinism.VirtualClock, seconds: float) -> None:
        await self.sleep(seconds)

    monkeypatch.setattr(determinism.VirtualClock, "advance", always_sleep)
    slow = tmp_path / "slow.jsonl"
    run_session(sc, seed=3, log_path=slow)
    assert taken > 1000
    assert strip_wall(records(fast)) == strip_wall(records(slow))
