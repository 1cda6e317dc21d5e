"""The running backend's cheapest ``Event``, for the waits on the actors' hot paths.

``anyio.Event()`` looks the backend up on every construction (sniffio, then anyio's backend
registry) and on trio wraps a ``trio.Event`` whose ``wait`` runs through a second coroutine
frame: about ten times the cost of ``trio.Event()``. Actors make one per message they wait for
and per sleep on a lock or wait queue, millions per session, so under trio they take trio's
own and elsewhere anyio's, which wraps the same thing: ``set`` wakes every waiter, and waiting
on a set event is a checkpoint.
"""

from __future__ import annotations

from typing import Protocol

import anyio
import sniffio
import trio


class Event(Protocol):
    """What actors use of an event (``anyio.Event`` and ``trio.Event`` both are one)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


def new_event() -> Event:
    """A fresh, unset event of the running backend (``trio.Event`` under trio)."""
    if sniffio.current_async_library() == "trio":
        return trio.Event()
    return anyio.Event()
