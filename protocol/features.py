"""Balloon device identity: device id, virtqueue indexes, feature bits and their negotiation.

Feature sets travel as plain ``int`` bitmasks (bit ``n`` set means feature ``n`` is offered or
accepted), exactly as the transport's feature registers hold them; :class:`BalloonFeature`
names the bit *numbers*, like the kernel's ``VIRTIO_BALLOON_F_*`` macros.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from .errors import FeatureError, ProtocolError

__all__ = [
    "DEFLATEQ",
    "FREE_PAGE_VQ",
    "INFLATEQ",
    "QUEUE_NAMES",
    "REPORTING_VQ",
    "STATSQ",
    "VIRTIO_BALLOON_F_DEFLATE_ON_OOM",
    "VIRTIO_BALLOON_F_FREE_PAGE_HINT",
    "VIRTIO_BALLOON_F_MUST_TELL_HOST",
    "VIRTIO_BALLOON_F_PAGE_POISON",
    "VIRTIO_BALLOON_F_PAGE_REPORTING",
    "VIRTIO_BALLOON_F_STATS_VQ",
    "VIRTIO_BALLOON_PFN_SHIFT",
    "VIRTIO_F_VERSION_1",
    "VIRTIO_ID_BALLOON",
    "BalloonFeature",
    "BalloonQueue",
    "feature_mask",
    "feature_names",
    "has_feature",
    "negotiate",
    "pages_per_page",
    "queues_for",
    "select_features",
    "transport_index",
]

#: Virtio device id of the traditional memory balloon.
VIRTIO_ID_BALLOON = 5

#: PFNs on the balloon wire are in 4 KiB units whatever the guest page size.
VIRTIO_BALLOON_PFN_SHIFT = 12

_FEATURE_BITS = 64


class BalloonQueue(IntEnum):
    """Virtqueue numbers as the spec lists them (see :func:`transport_index` for the wire)."""

    INFLATEQ = 0
    DEFLATEQ = 1
    STATSQ = 2
    FREE_PAGE_VQ = 3
    REPORTING_VQ = 4

    @property
    def queue_name(self) -> str:
        """The spec's name for the queue ("inflateq", "statsq", "free_page_vq", ...)."""
        return self.name.lower()


INFLATEQ = BalloonQueue.INFLATEQ
DEFLATEQ = BalloonQueue.DEFLATEQ
STATSQ = BalloonQueue.STATSQ
FREE_PAGE_VQ = BalloonQueue.FREE_PAGE_VQ
REPORTING_VQ = BalloonQueue.REPORTING_VQ

#: Queue number -> spec name, for hot paths (``BalloonQueue(q)`` is an enum lookup per call).
QUEUE_NAMES: Final[dict[int, str]] = {int(q): q.queue_name for q in BalloonQueue}


class BalloonFeature(IntEnum):
    """Feature bit numbers of the balloon device, plus the transport's VERSION_1 (bit 32)."""

    MUST_TELL_HOST = 0
    STATS_VQ = 1
    DEFLATE_ON_OOM = 2
    FREE_PAGE_HINT = 3
    PAGE_POISON = 4
    PAGE_REPORTING = 5
    VERSION_1 = 32

    @property
    def mask(self) -> int:
        """This feature as a bitmask (``1 << bit``)."""
        return 1 << self.value


VIRTIO_BALLOON_F_MUST_TELL_HOST = BalloonFeature.MUST_TELL_HOST
VIRTIO_BALLOON_F_STATS_VQ = BalloonFeature.STATS_VQ
VIRTIO_BALLOON_F_DEFLATE_ON_OOM = BalloonFeature.DEFLATE_ON_OOM
VIRTIO_BALLOON_F_FREE_PAGE_HINT = BalloonFeature.FREE_PAGE_HINT
VIRTIO_BALLOON_F_PAGE_POISON = BalloonFeature.PAGE_POISON
VIRTIO_BALLOON_F_PAGE_REPORTING = BalloonFeature.PAGE_REPORTING
VIRTIO_F_VERSION_1 = BalloonFeature.VERSION_1

# Which feature makes each optional queue exist.
_QUEUE_FEATURE = (
    (BalloonQueue.STATSQ, BalloonFeature.STATS_VQ),
    (BalloonQueue.FREE_PAGE_VQ, BalloonFeature.FREE_PAGE_HINT),
    (BalloonQueue.REPORTING_VQ, BalloonFeature.PAGE_REPORTING),
)


def feature_mask(*bits: int) -> int:
    """Bitmask with the given feature bit numbers set: ``feature_mask(STATS_VQ, ...)``."""
    mask = 0
    for bit in bits:
        mask |= 1 << bit
    return mask


def has_feature(features: int, bit: int) -> bool:
    """Whether feature bit number ``bit`` is set in the bitmask ``features``."""
    return (features >> bit) & 1 == 1


def feature_names(features: int) -> list[str]:
    """Names of the set bits, known ones by name and others as ``bit<n>``, for messages."""
    names = []
    for bit in range(features.bit_length()):
        if (features >> bit) & 1:
            try:
                names.append(BalloonFeature(bit).name)
            except ValueError:
                names.append(f"bit{bit}")
    return names


def _check_mask(features: int, *, role: str, what: str) -> None:
    if not isinstance(features, int) or not 0 <= features < 1 << _FEATURE_BITS:
        raise FeatureError(
            f"{what} is not a {_FEATURE_BITS}-bit feature mask",
            queue="features",
            role=role,
            state="negotiating",
            value=features,
        )


def select_features(device_features: int, driver_supported: int) -> int:
    """What a driver should accept: the bits both the device offers and it supports."""
    _check_mask(device_features, role="device", what="device features")
    _check_mask(driver_supported, role="driver", what="driver features")
    return device_features & driver_supported


def negotiate(device_features: int, driver_features: int, *, required: int = 0) -> int:
    """Check the driver's accepted bits against the device's offer; return the negotiated set.

    Raises :class:`FeatureError` (role "driver") if the driver accepted a bit the device did not
    offer, and (role "driver") if it left out a bit in ``required`` — the device's right to
    fail FEATURES_OK, e.g. when it insists on MUST_TELL_HOST.
    """
    _check_mask(device_features, role="device", what="device features")
    _check_mask(driver_features, role="driver", what="driver features")
    extra = driver_features & ~device_features
    if extra:
        raise FeatureError(
            "driver accepted features the device did not offer",
            queue="features",
            role="driver",
            state=f"offered={feature_names(device_features)}",
            value=feature_names(extra),
        )
    missing = required & ~driver_features
    if missing:
        raise FeatureError(
            "driver did not accept features the device requires (FEATURES_OK refused)",
            queue="features",
            role="driver",
            state=f"accepted={feature_names(driver_features)}",
            value=feature_names(missing),
        )
    return device_features & driver_features


def queues_for(features: int) -> tuple[BalloonQueue, ...]:
    """The queues that exist under the negotiated features, in spec order."""
    queues = [BalloonQueue.INFLATEQ, BalloonQueue.DEFLATEQ]
    for queue, bit in _QUEUE_FEATURE:
        if (features >> bit) & 1:
            queues.append(queue)
    return tuple(queues)


def transport_index(queue: BalloonQueue, features: int) -> int:
    """The queue's index on the transport: queues that do not exist take no index.

    Linux's ``find_vqs`` skips absent queues, so e.g. reporting_vq is index 2 when neither
    STATS_VQ nor FREE_PAGE_HINT is negotiated; hypervisors follow the driver.  Raises
    :class:`FeatureError` if the queue does not exist under ``features``.
    """
    queues = queues_for(features)
    if queue not in queues:
        raise FeatureError(
            "queue does not exist under the negotiated features",
            queue=BalloonQueue(queue).queue_name,
            role="driver",
            state=f"negotiated={feature_names(features)}",
            value=int(queue),
        )
    return queues.index(queue)


def pages_per_page(page_size: int) -> int:
    """4 KiB wire PFNs per guest page (the kernel's VIRTIO_BALLOON_PAGES_PER_PAGE).

    Only the page sizes Linux supports with the balloon are accepted: 4, 16 and 64 KiB.
    """
    if page_size not in (4096, 16384, 65536):
        raise ProtocolError(
            "guest page size must be 4096, 16384 or 65536 bytes",
            queue="config",
            role="driver",
            state="probe",
            value=page_size,
        )
    return page_size >> VIRTIO_BALLOON_PFN_SHIFT
