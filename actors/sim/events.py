"""The running backend's cheapest event, for the waits on the actors' hot paths.

``anyio.Event()`` looks the backend up on every construction (sniffio, then anyio's backend
registry) and on trio wraps a ``trio.Event`` whose ``wait`` runs through a second coroutine
frame. Actors make one event per message they wait for and per sleep on a lock or wait queue,
millions per session, and each has exactly one waiter: the task that made it. Under trio they
get a ``OneShot``, which parks that task with trio's low-level wait and reschedules it on
``set`` (a ``trio.Event`` for one waiter, minus its waiter set and abort closure); elsewhere
anyio's event. Either way ``set`` wakes the waiter and waiting on a set event is a checkpoint.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import sniffio
import trio


class Event(Protocol):
    """What actors use of an event (``anyio.Event`` and ``OneShot`` both are one)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


class OneShot:
    """A trio event with one waiter at most (the task that made it): ``trio.Event``'s
    semantics for that case. ``set`` reschedules the parked waiter, once; a waiter cancelled
    while parked is forgotten (its abort), so a later ``set`` wakes nobody."""

    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._flag = False
        self._task: trio.lowlevel.Task | None = None  # parked in wait(), not yet woken

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            task = self._task
            if task is not None:
                self._task = None
                trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self._flag:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


def new_event() -> Event:
    """A fresh, unset event for one waiter under the running backend (``OneShot`` on trio)."""
    if sniffio.current_async_library() == "trio":
        return OneShot()
    return anyio.Event()
