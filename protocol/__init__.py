"""The virtio wire of the balloon, pure: no await, no I/O, no logging, no clock.

* :mod:`protocol.virtqueue` — split virtqueue state machines (driver and device ends).
* :mod:`protocol.balloon` — balloon device ids, features, config space, PFN and stats codecs
  (defined in :mod:`~protocol.features`, :mod:`~protocol.config`, :mod:`~protocol.pfns`,
  :mod:`~protocol.stats`).
* :mod:`protocol.conformance` — the spec's normative rules as a monitor.
* :mod:`protocol.errors` — the errors, each naming queue, role, state and offending value.
"""

from __future__ import annotations

from . import balloon, conformance
from .conformance import Conformance, Rule, Violation
from .errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    FeatureError,
    ProtocolError,
    QueueFull,
    VirtqueueError,
)
from .virtqueue import Chain, DeviceQueue, DriverQueue, Virtqueue, VirtqueueStatistics

__all__ = [
    "Chain",
    "ConfigError",
    "Conformance",
    "DecodeError",
    "DeviceQueue",
    "DriverQueue",
    "EncodeError",
    "FeatureError",
    "ProtocolError",
    "QueueFull",
    "Rule",
    "Violation",
    "Virtqueue",
    "VirtqueueError",
    "VirtqueueStatistics",
    "balloon",
    "conformance",
]
