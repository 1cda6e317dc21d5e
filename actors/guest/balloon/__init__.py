"""The virtio_balloon driver variants, registered by name (the scenario's ``guest.driver``).

This registry is the one list of variants: config validation, the CLI's choices and its help
read it. A new variant is a module here and one entry below.
"""

from __future__ import annotations

from actors.guest.balloon.common import VirtioBalloon
from actors.guest.balloon.fixed import FixedBalloon
from actors.guest.balloon.legacy import LegacyBalloon
from actors.guest.balloon.v9 import V9Balloon
from actors.guest.balloon.v38 import V38Balloon

#: Variant name → driver class, in the order help texts list them.
DRIVERS: dict[str, type[VirtioBalloon]] = {
    "legacy": LegacyBalloon,
    "v9": V9Balloon,
    "v3.8": V38Balloon,
    "fixed": FixedBalloon,
}


def driver_names() -> str:
    """The variant names as prose: ``legacy, v9, v3.8 or fixed``."""
    *rest, final = DRIVERS
    return f"{', '.join(rest)} or {final}" if rest else final


__all__ = ["DRIVERS", "FixedBalloon", "LegacyBalloon", "V9Balloon", "V38Balloon", "VirtioBalloon",
           "driver_names"]
