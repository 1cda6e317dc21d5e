"""The virtio transport between one guest and the host: shared rings plus two message streams.

In a real VM the rings live in guest memory that the device reads and writes, while
notifications (driver → device kicks, config writes) and interrupts (device → driver used
buffers, config changes) cross the VM boundary. The model keeps exactly that split: the
``protocol`` virtqueues are the shared ring memory; kicks, config writes, interrupts and
config-change notices are messages on bounded anyio streams. Config space is read
synchronously by the driver (a trapped MMIO read) and written by the device.

Every inflate/deflate/stats buffer is a *handshake* with an id, logged at each phase
(driver add+notify, device pop, device done, driver ack) so the log alone rebuilds both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocol import Virtqueue
from protocol import conformance as C
from protocol.balloon import BalloonConfig, BalloonFeature, BalloonQueue, has_feature

QUEUE_SIZE = 128  # QEMU's virtio-balloon queues have 128 descriptors


@dataclass(frozen=True, slots=True)
class Notify:
    """Driver → device: the driver kicked queue ``queue``."""

    queue: int


@dataclass(frozen=True, slots=True)
class ConfigWrite:
    """Driver → device: the driver wrote ``actual`` (4 KiB pages) to config space."""

    actual: int


@dataclass(frozen=True, slots=True)
class DeviceReset:
    """Driver → device: the driver wrote status 0 (``vdev->config->reset``) and deleted its
    queues; the device forgets its buffers and raises no more interrupts (QEMU sends none
    without DRIVER_OK)."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Device → driver: used buffers are waiting on queue ``queue``."""

    queue: int


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """Device → driver: config space changed (a new ``num_pages`` target)."""


ToDevice = Notify | ConfigWrite | DeviceReset
ToDriver = Interrupt | ConfigChanged


class Transport:
    """One guest's virtio-balloon transport: rings, config space and the two message streams."""

    def __init__(self, name: str, *, features: int, queue_size: int = QUEUE_SIZE) -> None:
        self.name = name
        self.features = features
        self.vqs: dict[int, Virtqueue[object]] = {
            q: Virtqueue(f"{name}.{BalloonQueue(q).queue_name}", q, queue_size)
            for q in (BalloonQueue.INFLATEQ, BalloonQueue.DEFLATEQ, BalloonQueue.STATSQ)
        }
        self.config = BalloonConfig()
        self.to_device: MemoryObjectSendStream[ToDevice]
        self.device_inbox: MemoryObjectReceiveStream[ToDevice]
        self.to_device, self.device_inbox = anyio.create_memory_object_stream[ToDevice](
            queue_size)
        self.to_driver: MemoryObjectSendStream[ToDriver]
        self.driver_inbox: MemoryObjectReceiveStream[ToDriver]
        self.to_driver, self.driver_inbox = anyio.create_memory_object_stream[ToDriver](
            queue_size)
        self.stats_vq = has_feature(features, BalloonFeature.STATS_VQ)
        self.must_tell_host = has_feature(features, BalloonFeature.MUST_TELL_HOST)
        self.deflate_on_oom = has_feature(features, BalloonFeature.DEFLATE_ON_OOM)
        # (queue, head) -> handshake id, so the device logs the id the driver logged.
        self.handshakes: dict[tuple[int, int], int] = {}
        self._next_handshake = 0
        # The conformance monitor's input (the device installs its own): the ring is shared
        # memory, so the driver's adds are visible to the host's monitor when they happen.
        self.observe: Callable[[C.Event], None] = lambda event: None

    def add_outbuf(self, queue: int, data: bytes, token: object) -> tuple[int, int]:
        """Driver side: add one driver→device buffer; returns (handshake id, head)."""
        head = self.vqs[queue].driver.add_buf((data,), (), token)
        self._next_handshake += 1
        self.handshakes[(queue, head)] = self._next_handshake
        return self._next_handshake, head
