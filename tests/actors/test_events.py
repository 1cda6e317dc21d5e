"""The backend's cheapest event: trio's own under trio, anyio's elsewhere, same behaviour."""

from __future__ import annotations

import anyio
import pytest
import trio

from actors.events import new_event


def test_trio_gets_trio_event() -> None:
    """Under trio the event is a bare trio.Event (no anyio wrapper to construct and await)."""

    async def main() -> object:
        return new_event()

    assert type(trio.run(main)) is trio.Event


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_set_wakes_every_waiter(backend: str) -> None:
    """set() wakes all waiters; a set event does not block."""

    async def main() -> list[int]:
        ev = new_event()
        woken: list[int] = []

        async def waiter(i: int) -> None:
            await ev.wait()
            woken.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(waiter, i)
                await anyio.sleep(0.01)
            assert not ev.is_set()
            ev.set()
        await ev.wait()
        return woken

    assert sorted(anyio.run(main, backend=backend)) == [0, 1, 2]
