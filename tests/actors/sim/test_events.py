"""The backend's cheapest one-waiter event: OneShot under trio, anyio's elsewhere."""

from __future__ import annotations

import anyio
import pytest
import trio

from actors.sim.events import OneShot, new_event


def test_trio_gets_a_one_shot() -> None:
    """Under trio the event is a OneShot (no anyio wrapper, no waiter set)."""

    async def main() -> object:
        return new_event()

    assert type(trio.run(main)) is OneShot


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_set_wakes_the_waiter_and_a_set_event_does_not_block(backend: str) -> None:
    """set() wakes the task waiting on the event; waiting on it afterwards returns at once."""

    async def main() -> list[str]:
        ev = new_event()
        seen: list[str] = []

        async def waiter() -> None:
            await ev.wait()
            seen.append("woken")

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.01)
            assert not ev.is_set() and seen == []
            ev.set()
        await ev.wait()
        return seen

    assert anyio.run(main, backend=backend) == ["woken"]


def test_cancelled_waiter_is_forgotten() -> None:
    """A waiter cancelled while parked leaves; a later set() is harmless and wakes nobody."""

    async def main() -> bool:
        ev = OneShot()
        with trio.move_on_after(1) as scope:
            await ev.wait()
        ev.set()  # must not reschedule the task that left
        await trio.lowlevel.checkpoint()
        return scope.cancelled_caught and ev.is_set()

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
