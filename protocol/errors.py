"""Errors raised by the virtio wire: each one names where, who, in what state, and what value.

Like h11's ``LocalProtocolError``/``RemoteProtocolError``, a protocol error is a statement about
the *peer or the caller* breaking the protocol, so its message must be enough to find the bug
from a log line: the queue (or register space) concerned, the role that broke the rule
("driver" or "device"), the state the object was in, and the offending value.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "FeatureError",
    "ProtocolError",
    "QueueFull",
    "VirtqueueError",
]


class ProtocolError(Exception):
    """A rule of the virtio wire was broken; carries ``queue``, ``role``, ``state``, ``value``.

    ``queue`` is the virtqueue name, or the register space for non-queue errors ("config",
    "features"), or "-" when the caller did not say.  ``role`` is "driver" or "device": the
    side whose action was rejected.  The message always ends with
    ``[queue=..., role=..., state=..., value=...]`` so log readers can grep for each field.
    """

    queue: str
    role: str
    state: str
    value: object
    reason: str

    def __init__(
        self,
        reason: str,
        *,
        role: str,
        state: str,
        value: object,
        queue: str | None = None,
    ) -> None:
        self.reason = reason
        self.role = role
        self.state = state
        self.value = value
        self.queue = queue if queue is not None else "-"
        super().__init__(
            f"{reason} [queue={self.queue}, role={role}, state={state}, value={value!r}]"
        )


class VirtqueueError(ProtocolError):
    """A virtqueue operation broke the ring's rules (bad head, token in flight, bad length)."""


class QueueFull(VirtqueueError):
    """``add_buf`` found too few free descriptors: the kernel's -ENOSPC, retry after reaping."""


class DecodeError(ProtocolError):
    """Bytes received from the peer do not form a valid balloon buffer or config image."""


class EncodeError(ProtocolError):
    """A value cannot be put on the wire (out of range for its field, empty or oversized)."""


class FeatureError(ProtocolError):
    """Feature negotiation was broken, e.g. the driver acked a bit the device never offered."""


class ConfigError(ProtocolError):
    """A config-space write was refused: value out of u32 range, bad offset, or wrong writer."""
