"""Cheaper sends and receives on anyio memory object streams.

anyio's ``send``/``receive`` always take a full scheduling checkpoint first, even when the
item can go or come at once. Actors exchange millions of messages, so where a bounded stream
has room (or an item is waiting) we hand it over directly and only fall back to the awaiting
call when it would block. Every actor still yields at its own modelled cost (``anyio.sleep``),
so no task can starve others; the schedule stays a deterministic function of the seed.
"""

from __future__ import annotations

from typing import TypeVar

from anyio import WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


async def send(stream: MemoryObjectSendStream[T], item: T) -> None:
    """``stream.send(item)`` without the checkpoint when the buffer has room."""
    try:
        stream.send_nowait(item)
    except WouldBlock:
        await stream.send(item)


async def receive(stream: MemoryObjectReceiveStream[T]) -> T:
    """``stream.receive()`` without the checkpoint when an item is already waiting."""
    try:
        return stream.receive_nowait()
    except WouldBlock:
        return await stream.receive()
