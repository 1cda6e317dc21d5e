"""A split virtqueue as two pure state machines sharing one ring.

The real ring lives in guest memory and both ends touch it; here one :class:`Virtqueue` object
plays that memory, and two views enforce each end's rules:

* :class:`DriverQueue` (``vq.driver``) — the guest: ``add_buf`` / ``kick`` / ``get_buf``, like
  the kernel's ``virtqueue_add_sgs`` / ``virtqueue_kick`` / ``virtqueue_get_buf``.
* :class:`DeviceQueue` (``vq.device``) — the host: ``pop`` / ``push_used``, like QEMU's
  ``virtqueue_pop`` / ``virtqueue_push`` + ``virtio_notify``.

Nothing here awaits, sleeps or logs: notifications are return values and flags (``kick()``
says whether to notify the device, ``take_interrupt()`` whether to interrupt the driver), and
the async shell that owns the queue turns them into messages.  Per-operation work is O(segments)
and never looks inside the bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import QueueFull, VirtqueueError

__all__ = [
    "MAX_QUEUE_SIZE",
    "Chain",
    "DeviceQueue",
    "DriverQueue",
    "Virtqueue",
    "VirtqueueStatistics",
]

#: Largest split-ring size the virtio spec allows (Queue Size is a 16-bit power of two).
MAX_QUEUE_SIZE = 32768

TokenT = TypeVar("TokenT")

# Per-descriptor state, stored in one bytearray.  Only heads take AVAIL/POPPED/USED; the other
# descriptors of a multi-segment chain are CHAINED while it is in flight.
_FREE = 0
_AVAIL = 1
_POPPED = 2
_USED = 3
_CHAINED = 4
_STATE_NAMES = ("free", "available", "popped", "used", "chained")

# Slot tuple stored at the head index: (token, out, in_lens, in_total, descs-or-None).
_Slot = tuple[object, tuple[bytes, ...], tuple[int, ...], int, list[int] | None]


@dataclass(frozen=True, slots=True)
class Chain:
    """A descriptor chain as the device sees it after ``pop()``: what to read, what it may write.

    ``out`` are the driver→device segments, ``in_lens`` the lengths of the device-writable
    segments; ``head`` is the id to hand back to ``push_used``.
    """

    head: int
    out: tuple[bytes, ...]
    in_lens: tuple[int, ...]

    @property
    def out_data(self) -> bytes:
        """All driver→device bytes of the chain, joined (no copy for a single segment)."""
        out = self.out
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def in_total(self) -> int:
        """How many bytes the device may report as written in ``push_used``."""
        return sum(self.in_lens)


@dataclass(frozen=True, slots=True)
class VirtqueueStatistics:
    """A snapshot of a queue's occupancy and lifetime counters (trio ``statistics()`` style).

    ``num_free`` counts free descriptors; ``in_flight`` counts chains added and not yet reaped,
    split into ``available`` (not popped), ``in_device`` (popped, not used) and ``used_pending``
    (used, not yet reaped by ``get_buf``).
    """

    name: str
    index: int
    size: int
    num_free: int
    in_flight: int
    available: int
    in_device: int
    used_pending: int
    added: int
    popped: int
    used: int
    reaped: int
    detached: int
    notifications: int
    interrupts: int


class Virtqueue(Generic[TokenT]):
    """One split virtqueue: descriptor table with free list, available ring and used ring.

    Shared by both ends, as the real ring is shared memory; use ``vq.driver`` on the guest side
    and ``vq.device`` on the host side.  ``size`` must be a power of two up to 32768.
    """

    __slots__ = (
        "_avail",
        "_cb_enabled",
        "_free",
        "_in_device",
        "_inflight",
        "_irq_pending",
        "_no_notify",
        "_notify_pending",
        "_num_added",
        "_slot",
        "_state",
        "_used",
        "added",
        "detached",
        "device",
        "driver",
        "index",
        "interrupts",
        "name",
        "notifications",
        "popped",
        "reaped",
        "size",
        "used",
    )

    name: str
    index: int
    size: int
    driver: DriverQueue[TokenT]
    device: DeviceQueue

    def __init__(self, name: str, index: int, size: int) -> None:
        if (
            not isinstance(size, int)
            or size <= 0
            or size > MAX_QUEUE_SIZE
            or size & (size - 1) != 0
        ):
            raise VirtqueueError(
                f"queue size must be a power of two in 1..{MAX_QUEUE_SIZE}",
                queue=name,
                role="device",
                state="setup",
                value=size,
            )
        self.name = name
        self.index = index
        self.size = size
        # Free descriptors as a stack: like the kernel's free_head list, a freed chain is reused
        # first.  Initial order makes the first add use descriptor 0.
        self._free: list[int] = list(range(size - 1, -1, -1))
        self._avail: deque[int] = deque()
        self._used: deque[tuple[int, int]] = deque()
        self._state = bytearray(size)
        self._slot: list[_Slot | None] = [None] * size
        self._inflight: dict[int, int] = {}  # id(token) -> head
        self._num_added = 0  # added since the last kick
        self._in_device = 0
        self._no_notify = False
        self._notify_pending = False
        self._cb_enabled = True
        self._irq_pending = False
        self.added = 0
        self.popped = 0
        self.used = 0
        self.reaped = 0
        self.detached = 0
        self.notifications = 0
        self.interrupts = 0
        self.driver = DriverQueue(self)
        self.device = DeviceQueue(self)

    def __repr__(self) -> str:
        return (
            f"<Virtqueue {self.name!r} index={self.index} size={self.size} "
            f"free={len(self._free)} in_flight={len(self._inflight)}>"
        )

    @property
    def num_free(self) -> int:
        """Free descriptors (each segment of a chain uses one)."""
        return len(self._free)

    def head_state(self, head: int) -> str:
        """Name of a descriptor's state: free, available, popped, used or chained."""
        if not 0 <= head < self.size:
            return "out-of-range"
        return _STATE_NAMES[self._state[head]]

    def statistics(self) -> VirtqueueStatistics:
        """Snapshot of occupancy and counters, for benches, logs and invariant checks."""
        return VirtqueueStatistics(
            name=self.name,
            index=self.index,
            size=self.size,
            num_free=len(self._free),
            in_flight=len(self._inflight),
            available=len(self._avail),
            in_device=self._in_device,
            used_pending=len(self._used),
            added=self.added,
            popped=self.popped,
            used=self.used,
            reaped=self.reaped,
            detached=self.detached,
            notifications=self.notifications,
            interrupts=self.interrupts,
        )

    def _token_state(self, token: object) -> str:
        head = self._inflight[id(token)]
        return f"{_STATE_NAMES[self._state[head]]} (head {head})"


class DriverQueue(Generic[TokenT]):
    """The guest's end of a virtqueue: expose buffers, notify, reap what the device used.

    Tokens are the driver's per-buffer cookies (the kernel's ``data`` argument); a token is
    identified by object identity and may be in flight at most once.
    """

    __slots__ = ("_q",)

    def __init__(self, vq: Virtqueue[TokenT]) -> None:
        self._q = vq

    @property
    def vq(self) -> Virtqueue[TokenT]:
        """The shared ring."""
        return self._q

    @property
    def num_free(self) -> int:
        """Free descriptors; ``add_buf`` needs ``len(out) + len(in_lens)`` of them."""
        return len(self._q._free)

    @property
    def in_flight(self) -> int:
        """Chains added and not yet reaped by ``get_buf`` (or detached)."""
        return len(self._q._inflight)

    def add_buf(self, out: Sequence[bytes], in_lens: Sequence[int], token: TokenT) -> int:
        """Expose a chain to the device; returns its head id.

        Each out segment (driver→device bytes) and each in length (device-writable bytes) uses
        one descriptor.  Raises :class:`QueueFull` when too few descriptors are free (reap with
        ``get_buf`` and retry) and :class:`VirtqueueError` for a ``None`` token, a token
        already in flight, an empty chain, a chain longer than the ring or a negative length.
        """
        q = self._q
        if token is None:
            raise VirtqueueError(
                "add_buf needs a token to hand back from get_buf (got None)",
                queue=q.name,
                role="driver",
                state=f"num_free={len(q._free)}",
                value=token,
            )
        tid = id(token)
        if tid in q._inflight:
            raise VirtqueueError(
                "add_buf of a token that is already in flight",
                queue=q.name,
                role="driver",
                state=q._token_state(token),
                value=token,
            )
        n = len(out) + len(in_lens)
        free = q._free
        if n > len(free) or n == 0:
            if n == 0:
                raise VirtqueueError(
                    "add_buf of an empty chain (no out segments, no in lengths)",
                    queue=q.name,
                    role="driver",
                    state=f"num_free={len(free)}",
                    value=n,
                )
            if n > q.size:
                raise VirtqueueError(
                    f"chain of {n} segments can never fit a ring of {q.size} descriptors",
                    queue=q.name,
                    role="driver",
                    state=f"size={q.size}",
                    value=n,
                )
            raise QueueFull(
                f"add_buf needs {n} descriptors, {len(free)} free",
                queue=q.name,
                role="driver",
                state=f"num_free={len(free)}",
                value=n,
            )
        in_total = 0
        for ln in in_lens:
            if ln < 0:
                raise VirtqueueError(
                    "negative device-writable length",
                    queue=q.name,
                    role="driver",
                    state=f"num_free={len(free)}",
                    value=ln,
                )
            in_total += ln
        if n == 1:
            head = free.pop()
            descs = None
        else:
            descs = free[: -n - 1 : -1]  # in allocation order: head first
            del free[-n:]
            head = descs[0]
            state = q._state
            for d in descs[1:]:
                state[d] = _CHAINED
        q._slot[head] = (token, tuple(out), tuple(in_lens), in_total, descs)
        q._state[head] = _AVAIL
        q._inflight[tid] = head
        q._avail.append(head)
        q._num_added += 1
        q.added += 1
        return head

    def kick(self) -> bool:
        """Publish what was added; return True if the caller must notify the device.

        False when nothing was added since the last kick or the device suppressed
        notifications (``DeviceQueue.disable_notify``).  Like ``virtqueue_kick_prepare``.
        """
        q = self._q
        if q._num_added == 0:
            return False
        q._num_added = 0
        if q._no_notify:
            return False
        q._notify_pending = True
        q.notifications += 1
        return True

    def get_buf(self) -> tuple[TokenT, int] | None:
        """Reap the oldest used chain: ``(token, written_len)``, or None if nothing is used.

        Frees the chain's descriptors.  Used chains come back in the order the device pushed
        them.
        """
        q = self._q
        used = q._used
        if not used:
            return None
        head, written = used.popleft()
        slot = q._slot[head]
        assert slot is not None
        q._slot[head] = None
        token = slot[0]
        descs = slot[4]
        state = q._state
        state[head] = _FREE
        if descs is None:
            q._free.append(head)
        else:
            for d in descs[1:]:
                state[d] = _FREE
            q._free.extend(reversed(descs))
        del q._inflight[id(token)]
        q.reaped += 1
        return token, written  # type: ignore[return-value]

    def more_used(self) -> bool:
        """Whether ``get_buf`` would return something (the kernel's ``more_used``)."""
        return bool(self._q._used)

    def disable_cb(self) -> None:
        """Ask the device not to interrupt on used buffers (``virtqueue_disable_cb``)."""
        self._q._cb_enabled = False

    def enable_cb(self) -> bool:
        """Re-enable used-buffer interrupts; False if used buffers are already pending.

        Like ``virtqueue_enable_cb``: on False the caller must reap before sleeping, or it
        would wait for an interrupt that already happened.
        """
        q = self._q
        q._cb_enabled = True
        return not q._used

    def detach_unused_buf(self) -> TokenT | None:
        """Take back one chain the device has not used yet; its token, or None if none left.

        Only valid once the device has stopped (after reset), as in the kernel: a later
        ``push_used`` of that head is rejected because the head is free again.
        """
        q = self._q
        state = q._state
        for head in q._inflight.values():
            st = state[head]
            if st in (_AVAIL, _POPPED):
                break
        else:
            return None
        if st == _AVAIL:
            q._avail.remove(head)
        else:
            q._in_device -= 1
        slot = q._slot[head]
        assert slot is not None
        q._slot[head] = None
        del q._inflight[id(slot[0])]
        state[head] = _FREE
        descs = slot[4]
        if descs is None:
            q._free.append(head)
        else:
            for d in descs[1:]:
                state[d] = _FREE
            q._free.extend(reversed(descs))
        q.detached += 1
        return slot[0]  # type: ignore[return-value]

    def statistics(self) -> VirtqueueStatistics:
        """Same snapshot as ``Virtqueue.statistics``."""
        return self._q.statistics()


class DeviceQueue:
    """The host's end of a virtqueue: take available chains, return them used.

    Holds no data of its own; every rule is checked against the shared ring so a bad head from
    a buggy device model is caught at the call, naming queue, role, state and head.
    """

    __slots__ = ("_q",)

    def __init__(self, vq: Virtqueue[Any]) -> None:
        self._q = vq

    @property
    def vq(self) -> Virtqueue[Any]:
        """The shared ring."""
        return self._q

    @property
    def available(self) -> int:
        """Chains the driver exposed that the device has not popped yet."""
        return len(self._q._avail)

    @property
    def held(self) -> int:
        """Chains popped and not yet used (e.g. the stats buffer the device keeps)."""
        return self._q._in_device

    def pop(self) -> Chain | None:
        """Take the next available chain, or None if the available ring is empty."""
        q = self._q
        avail = q._avail
        if not avail:
            return None
        head = avail.popleft()
        q._state[head] = _POPPED
        q._in_device += 1
        q.popped += 1
        slot = q._slot[head]
        assert slot is not None
        return Chain(head, slot[1], slot[2])

    def push_used(self, head: int, written: int) -> None:
        """Return a popped chain to the driver, having written ``written`` bytes into it.

        Rejects a head out of range, one not the head of a popped chain (free, still
        available, already used, or the body of another chain), and a length that is negative
        or exceeds the chain's device-writable total.  Sets ``needs_interrupt`` unless the
        driver disabled callbacks.
        """
        q = self._q
        if not 0 <= head < q.size:
            raise VirtqueueError(
                f"push_used of a head outside the ring (size {q.size})",
                queue=q.name,
                role="device",
                state="out-of-range",
                value=head,
            )
        st = q._state[head]
        if st != _POPPED:
            reason = {
                _FREE: "push_used of a head that is not in flight",
                _AVAIL: "push_used of a head the device has not popped",
                _USED: "push_used of a head that was already returned",
                _CHAINED: "push_used of a descriptor that is not the head of its chain",
            }[st]
            raise VirtqueueError(
                reason, queue=q.name, role="device", state=_STATE_NAMES[st], value=head
            )
        slot = q._slot[head]
        assert slot is not None
        if not 0 <= written <= slot[3]:
            raise VirtqueueError(
                f"push_used(head={head}) length outside 0..{slot[3]} (device-writable bytes)",
                queue=q.name,
                role="device",
                state="popped",
                value=written,
            )
        q._state[head] = _USED
        q._used.append((head, written))
        q._in_device -= 1
        q.used += 1
        if q._cb_enabled:
            q._irq_pending = True

    @property
    def needs_interrupt(self) -> bool:
        """Whether a used-buffer interrupt is owed to the driver."""
        return self._q._irq_pending

    def take_interrupt(self) -> bool:
        """Consume the owed interrupt: True means "send the driver a used-buffer interrupt"."""
        q = self._q
        if not q._irq_pending:
            return False
        q._irq_pending = False
        q.interrupts += 1
        return True

    def take_notify(self) -> bool:
        """Consume a pending driver notification (set when ``kick()`` returned True)."""
        q = self._q
        pending = q._notify_pending
        q._notify_pending = False
        return pending

    def disable_notify(self) -> None:
        """Tell the driver not to kick (VRING_USED_F_NO_NOTIFY) while the device polls."""
        self._q._no_notify = True

    def enable_notify(self) -> bool:
        """Re-enable kicks; True if chains are already available (poll once more first)."""
        q = self._q
        q._no_notify = False
        return bool(q._avail)

    def statistics(self) -> VirtqueueStatistics:
        """Same snapshot as ``Virtqueue.statistics``."""
        return self._q.statistics()
