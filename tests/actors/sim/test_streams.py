"""Checkpoint-free sends and receives: same messages, same errors, one scheduler pass less."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
import trio

from actors.sim import streams


def test_anyio_internals_still_there() -> None:
    """Fails loudly if an anyio upgrade changes the receive path streams.receive copies."""
    streams.check_anyio_internals()


def _steps_of_waiting_receive(use_ours: bool) -> int:
    """Scheduler steps the receiving task takes to get one item it had to wait for."""
    steps = 0

    class Count(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            if task.name == "receiver":
                steps += 1

    async def main() -> None:
        send, recv = anyio.create_memory_object_stream[int](1)

        async def receiver() -> None:
            got = await (streams.receive(recv) if use_ours else recv.receive())
            assert got == 7

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver, name="receiver")
            await anyio.sleep(1)
            await streams.send(send, 7)

    trio.run(main, instruments=[Count()])
    return steps


def test_waiting_receive_skips_the_leading_checkpoint() -> None:
    """A receive that must wait takes one step fewer than anyio's (no yield before waiting)."""
    assert _steps_of_waiting_receive(True) == _steps_of_waiting_receive(False) - 1


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_items_in_order_then_end_of_stream(backend: str) -> None:
    """Items come out in send order, waiting or not, then EndOfStream once senders close."""

    async def main() -> list[int]:
        send, recv = anyio.create_memory_object_stream[int](2)
        got: list[int] = []

        async def consumer() -> None:
            while True:
                try:
                    got.append(await streams.receive(recv))
                except anyio.EndOfStream:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            async with send:
                for i in range(10):
                    await streams.send(send, i)
                    if i % 3 == 0:
                        await anyio.sleep(0.001)
        return got

    assert anyio.run(main, backend=backend) == list(range(10))


def test_cancelled_waiting_receive_loses_nothing() -> None:
    """A receiver cancelled while waiting leaves the stream intact for the next one."""

    async def main() -> int:
        send, recv = anyio.create_memory_object_stream[int](1)
        with anyio.move_on_after(1):
            await streams.receive(recv)
        await streams.send(send, 5)
        return await streams.receive(recv)

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 5


def test_receive_on_a_closed_receiver_raises() -> None:
    """Closing the receiving end while a task waits on it ends that wait with an error."""

    async def main() -> None:
        _send, recv = anyio.create_memory_object_stream[int](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(streams.receive, recv)
            await anyio.lowlevel.checkpoint()
            recv.close()

    with pytest.raises(BaseExceptionGroup) as info:
        trio.run(main)
    assert info.group_contains(anyio.ClosedResourceError)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_item_sent_to_a_receiver_being_cancelled_stays_in_the_stream(backend: str) -> None:
    """A send finds the only waiting receiver being cancelled: the item is buffered, not lost."""

    async def main() -> tuple[bool, int]:
        send, recv = anyio.create_memory_object_stream[int](1)
        scope = anyio.CancelScope()
        got_one = False

        async def waiter() -> None:
            nonlocal got_one
            with scope:
                await streams.receive(recv)
                got_one = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()  # the waiter is now waiting
            await anyio.lowlevel.checkpoint()
            scope.cancel()
            await streams.send(send, 5)  # before the waiter runs its cancellation
        with anyio.fail_after(5):  # a lost item would leave this waiting for ever
            return got_one, await streams.receive(recv)

    assert anyio.run(main, backend=backend) == (False, 5)
