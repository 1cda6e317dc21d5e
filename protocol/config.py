"""The balloon's config space: four little-endian u32 registers and who may write each.

``num_pages`` (the target) and ``free_page_hint_cmd_id`` belong to the device; ``actual``
(pages in the balloon, in 4 KiB units) and ``poison_val`` belong to the driver.  A config image
is immutable; a write returns a new image, so a session can log every value the guest saw.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Final

from .errors import ConfigError, DecodeError

__all__ = [
    "CONFIG_FIELDS",
    "CONFIG_SIZE",
    "OFFSET_ACTUAL",
    "OFFSET_FREE_PAGE_HINT_CMD_ID",
    "OFFSET_NUM_PAGES",
    "OFFSET_POISON_VAL",
    "U32_MAX",
    "VIRTIO_BALLOON_CMD_ID_DONE",
    "VIRTIO_BALLOON_CMD_ID_STOP",
    "BalloonConfig",
]

U32_MAX: Final = 0xFFFF_FFFF

OFFSET_NUM_PAGES: Final = 0
OFFSET_ACTUAL: Final = 4
OFFSET_FREE_PAGE_HINT_CMD_ID: Final = 8
OFFSET_POISON_VAL: Final = 12
#: Size of ``struct virtio_balloon_config`` with every optional field present.
CONFIG_SIZE: Final = 16

#: Reserved ``free_page_hint_cmd_id`` values: stop hinting / hinting done.
VIRTIO_BALLOON_CMD_ID_STOP: Final = 0
VIRTIO_BALLOON_CMD_ID_DONE: Final = 1

#: offset -> (field name, role allowed to write it).
CONFIG_FIELDS: Final[dict[int, tuple[str, str]]] = {
    OFFSET_NUM_PAGES: ("num_pages", "device"),
    OFFSET_ACTUAL: ("actual", "driver"),
    OFFSET_FREE_PAGE_HINT_CMD_ID: ("free_page_hint_cmd_id", "device"),
    OFFSET_POISON_VAL: ("poison_val", "driver"),
}
_WRITER = {name: role for name, role in CONFIG_FIELDS.values()}

_LAYOUT = struct.Struct("<4I")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class BalloonConfig:
    """An image of ``struct virtio_balloon_config``; every field is checked to be a u32.

    Constructing with an out-of-range value raises :class:`ConfigError` naming the field's
    writer as the role at fault.
    """

    num_pages: int = 0
    actual: int = 0
    free_page_hint_cmd_id: int = 0
    poison_val: int = 0

    def __post_init__(self) -> None:
        for name in ("num_pages", "actual", "free_page_hint_cmd_id", "poison_val"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= U32_MAX:
                raise ConfigError(
                    f"config field {name} must be a u32 (0..{U32_MAX})",
                    queue="config",
                    role=_WRITER[name],
                    state=f"writing {name}",
                    value=value,
                )

    def encode(self) -> bytes:
        """The 16 little-endian bytes of the config space."""
        return _LAYOUT.pack(
            self.num_pages, self.actual, self.free_page_hint_cmd_id, self.poison_val
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> BalloonConfig:
        """Parse exactly 16 bytes of config space; any other length is a :class:`DecodeError`."""
        if len(data) != CONFIG_SIZE:
            raise DecodeError(
                f"config space image must be {CONFIG_SIZE} bytes",
                queue="config",
                role="device",
                state="decoding",
                value=len(data),
            )
        return cls(*_LAYOUT.unpack(data))

    def write(
        self, offset: int, data: bytes | bytearray | memoryview, *, role: str
    ) -> BalloonConfig:
        """Apply one 4-byte register write by ``role``; return the new image.

        Refuses a write at an offset that is not a field, of a length other than 4 (the spec
        asks for one atomic 32-bit write), or by the role that does not own the field.
        """
        field = CONFIG_FIELDS.get(offset)
        if field is None:
            raise ConfigError(
                "config write at an offset that is not a field",
                queue="config",
                role=role,
                state="writing",
                value=offset,
            )
        name, owner = field
        if len(data) != 4:
            raise ConfigError(
                f"config write to {name} must be 4 bytes at once",
                queue="config",
                role=role,
                state=f"writing {name}",
                value=len(data),
            )
        if role != owner:
            raise ConfigError(
                f"{name} is written by the {owner}, not the {role}",
                queue="config",
                role=role,
                state=f"writing {name}",
                value=_U32.unpack(data)[0],
            )
        return replace(self, **{name: _U32.unpack(data)[0]})

    def with_num_pages(self, num_pages: int) -> BalloonConfig:
        """The device sets a new balloon target (4 KiB pages)."""
        return replace(self, num_pages=num_pages)

    def with_actual(self, actual: int) -> BalloonConfig:
        """The driver reports how many 4 KiB pages are in the balloon."""
        return replace(self, actual=actual)
