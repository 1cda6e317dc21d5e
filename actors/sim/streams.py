"""Cheaper sends and receives on anyio memory object streams.

anyio's ``send``/``receive`` always take a full scheduling checkpoint first, even when the
item can go or come at once, and ``receive`` takes it even when it is about to wait anyway.
Actors exchange millions of messages, so where a bounded stream has room (or an item is
waiting) we hand it over directly, and a receive that must wait goes straight to waiting
(anyio's own wait, minus the checkpoint before it: that yield models nothing, it only costs a
pass of the scheduler per message). Every actor still yields at its own modelled cost
(``actors.sim.clock.sleep``), so no task can starve others; the schedule stays a deterministic
function of the seed.

The waiting receive uses anyio's stream internals (``_state.waiting_receivers``, the
receiver record); ``check_anyio_internals`` fails loudly, and a test calls it, if an anyio
upgrade changes them. Under trio the event and the receiver record are one object of our
own: a one-waiter event (``actors.sim.events.OneShot``) that also answers the sender's one
question about the waiting task (is it being cancelled?) without anyio's ``TaskInfo``.
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, TypeVar

import sniffio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, Event, WouldBlock
from anyio._backends._trio import TrioTaskInfo
from anyio.lowlevel import checkpoint
from anyio.streams import memory as _memory
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.sim.events import OneShot

T = TypeVar("T")


class StreamInternalsChanged(RuntimeError):
    """The anyio internals the checkpoint-free receive relies on are gone or changed."""


def check_anyio_internals() -> None:
    """Raise StreamInternalsChanged unless anyio's receive still waits the way we copy."""
    receiver = getattr(_memory, "_MemoryObjectItemReceiver", None)
    source = inspect.getsource(MemoryObjectReceiveStream.receive)
    needed = ("await checkpoint()", "self._waiters.add(receive_event)",
              "self._state.waiting_receivers[receive_event] = receiver",
              "await receive_event.wait()", "return receiver.item")
    missing = [s for s in needed if s not in source]
    # _TrioReceiver stands in for the receiver record: the sender's one question, answered
    # as anyio's TrioTaskInfo answers it.
    sender = inspect.getsource(MemoryObjectSendStream.send_nowait)
    if "receiver.task_info.has_pending_cancellation()" not in sender:
        missing.append("send_nowait: receiver.task_info.has_pending_cancellation()")
    if "self._task._cancel_status.effectively_cancelled" not in inspect.getsource(
            TrioTaskInfo.has_pending_cancellation):
        missing.append("TrioTaskInfo.has_pending_cancellation: _cancel_status")
    # receive() waits without asking receive_nowait when it could only raise WouldBlock.
    nowait = inspect.getsource(MemoryObjectReceiveStream.receive_nowait)
    missing += [f"receive_nowait: {s}" for s in (
        "if self._closed:", "if self._state.waiting_senders:", "if self._state.buffer:",
        "elif not self._state.open_send_channels:", "raise WouldBlock") if s not in nowait]
    if receiver is None or missing:
        raise StreamInternalsChanged(
            f"anyio's MemoryObjectReceiveStream.receive changed (missing: "
            f"{missing or ['_MemoryObjectItemReceiver']}): update actors/streams.py")


class _TrioReceiver(OneShot, Generic[T]):
    """A waiting trio receive's event and its receiver record in one object: anyio's
    ``send_nowait`` takes a waiting receiver's (event, record) pair, asks the record whether
    the task is being cancelled, stores the item in it and sets the event. It stands in for
    anyio's ``_MemoryObjectItemReceiver`` minus the ``TaskInfo`` that builds (task name,
    parent, coroutine, a weak proxy): it is its own ``task_info`` and answers the one question
    as ``TrioTaskInfo`` does (a waiter whose wait was aborted is being cancelled)."""

    __slots__ = ("item",)
    item: T

    @property
    def task_info(self) -> _TrioReceiver[T]:
        return self

    def has_pending_cancellation(self) -> bool:
        task = self._task
        if task is None:  # no longer parked: its cancellation was delivered (or it was set)
            return True
        status = task._cancel_status
        return status is not None and status.effectively_cancelled


async def send(stream: MemoryObjectSendStream[T], item: T) -> None:
    """``stream.send(item)`` without the checkpoint when the buffer has room.

    A receiver that is gone because the session is being cancelled must surface as the
    cancellation (anyio's checkpoint would have raised it first), not as BrokenResourceError.
    """
    try:
        stream.send_nowait(item)
    except WouldBlock:
        await stream.send(item)
    except BrokenResourceError:
        await checkpoint()  # raises Cancelled if that is why the receiver went away
        raise


async def receive(stream: MemoryObjectReceiveStream[T]) -> T:
    """``stream.receive()`` without its leading checkpoint: take a waiting item, or wait."""
    state = stream._state
    if state.buffer or state.waiting_senders or stream._closed or not state.open_send_channels:
        return stream.receive_nowait()  # an item, or the error it raises (closed, ended)
    # receive_nowait would raise WouldBlock (an exception per wait): wait at once.
    # anyio's MemoryObjectReceiveStream.receive after its checkpoint, with the backend's
    # cheapest event and (under trio) receiver record.
    if stream._waiters is None:
        stream._waiters = set()
    receive_event: Any  # the stream only calls its set()
    receiver: _TrioReceiver[T] | _memory._MemoryObjectItemReceiver[T]
    if sniffio.current_async_library() == "trio":
        receive_event = receiver = _TrioReceiver()
    else:
        receive_event = Event()
        receiver = _memory._MemoryObjectItemReceiver()
    stream._waiters.add(receive_event)
    stream._state.waiting_receivers[receive_event] = receiver  # type: ignore[assignment]
    try:
        await receive_event.wait()
    finally:
        stream._state.waiting_receivers.pop(receive_event, None)
        if stream._waiters is not None:
            stream._waiters.remove(receive_event)
    try:
        return receiver.item
    except AttributeError:
        if stream._closed:
            raise ClosedResourceError from None
        raise EndOfStream from None
