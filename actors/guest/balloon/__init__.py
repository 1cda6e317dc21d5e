"""The virtio_balloon driver in three variants: ``legacy``, ``v9`` (the seed) and ``fixed``."""

from __future__ import annotations

from actors.guest.balloon.common import VirtioBalloon
from actors.guest.balloon.fixed import FixedBalloon
from actors.guest.balloon.legacy import LegacyBalloon
from actors.guest.balloon.v9 import V9Balloon

DRIVERS: dict[str, type[VirtioBalloon]] = {
    "legacy": LegacyBalloon,
    "v9": V9Balloon,
    "fixed": FixedBalloon,
}

__all__ = ["DRIVERS", "FixedBalloon", "LegacyBalloon", "V9Balloon", "VirtioBalloon"]
