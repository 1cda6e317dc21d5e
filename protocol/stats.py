"""Stats buffers: packed 10-byte entries of (le16 tag, le64 value).

The driver chooses which statistics it sends (always the same subset), in any order; the device
must ignore tags it does not know, so decoding keeps unknown tags and :func:`known_stats`
filters them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from enum import IntEnum

from .errors import DecodeError, EncodeError

__all__ = [
    "STAT_ENTRY_SIZE",
    "VIRTIO_BALLOON_S_NR",
    "StatTag",
    "decode_stats",
    "encode_stats",
    "implausible_stats",
    "known_stats",
    "stat_tags",
]


class StatTag(IntEnum):
    """Stat tags with the kernel's ``VIRTIO_BALLOON_S_*`` names (sizes in bytes)."""

    SWAP_IN = 0
    SWAP_OUT = 1
    MAJFLT = 2
    MINFLT = 3
    MEMFREE = 4
    MEMTOT = 5
    AVAIL = 6
    CACHES = 7
    HTLB_PGALLOC = 8
    HTLB_PGFAIL = 9
    OOM_KILLS = 10
    ALLOC_STALL = 11
    ASYNC_SCAN = 12
    DIRECT_SCAN = 13
    ASYNC_RECLAIM = 14
    DIRECT_RECLAIM = 15


#: Number of tags this side knows (the kernel's VIRTIO_BALLOON_S_NR).
VIRTIO_BALLOON_S_NR = 16

#: Bytes per entry: ``struct virtio_balloon_stat`` is packed (le16 tag, le64 val).
STAT_ENTRY_SIZE = 10

_ENTRY = struct.Struct("<HQ")
_TAGS = tuple(StatTag)


def encode_stats(
    entries: Mapping[StatTag, int] | Mapping[int, int] | Iterable[tuple[int, int]],
    *,
    queue: str = "statsq",
) -> bytes:
    """The wire bytes of a stats buffer, entries in the order given.

    Rejects a tag outside 0..0xFFFF or a value outside 0..2**64-1 with :class:`EncodeError`.
    """
    items = list(entries.items()) if isinstance(entries, Mapping) else list(entries)
    flat: list[int] = []
    for tag, value in items:
        flat.append(tag)
        flat.append(value)
    try:
        return struct.pack("<" + "HQ" * len(items), *flat)
    except struct.error:
        for tag, value in items:
            if not isinstance(tag, int) or not 0 <= tag <= 0xFFFF:
                bad, what = tag, "stat tag must be a u16"
                break
            if not isinstance(value, int) or not 0 <= value < 1 << 64:
                bad, what = (tag, value), "stat value must be a u64"
                break
        else:  # pragma: no cover - struct refused something the checks accept
            raise
        raise EncodeError(what, queue=queue, role="driver", state="encoding", value=bad) from None


def decode_stats(
    buf: bytes | bytearray | memoryview, *, queue: str = "statsq"
) -> list[tuple[int, int]]:
    """The ``(tag, value)`` entries of a received stats buffer, unknown tags included.

    Raises :class:`DecodeError` (role "driver") if the length is not a multiple of 10.
    """
    if len(buf) % STAT_ENTRY_SIZE:
        raise DecodeError(
            f"stats buffer length is not a multiple of {STAT_ENTRY_SIZE} bytes",
            queue=queue,
            role="driver",
            state="decoding",
            value=len(buf),
        )
    return list(_ENTRY.iter_unpack(buf))


def known_stats(entries: Iterable[tuple[int, int]]) -> dict[StatTag, int]:
    """The entries whose tags this side knows, as the device must treat them (later wins)."""
    tags = _TAGS
    nr = VIRTIO_BALLOON_S_NR
    return {tags[tag]: value for tag, value in entries if 0 <= tag < nr}


def stat_tags(entries: Iterable[tuple[int, int]]) -> frozenset[int]:
    """The set of tags present, to compare against the subset the driver sent before."""
    return frozenset(tag for tag, _ in entries)


#: The memory tags (bytes): none can exceed the guest's RAM.
_MEMORY_TAGS = ("memfree", "memtot", "avail", "caches")
_U64_MAX = (1 << 64) - 1


def implausible_stats(stats: Mapping[str, int], ram_bytes: int) -> list[str]:
    """Why a stats reading (tag name → value) cannot be true of a guest with ``ram_bytes``
    of RAM: a value of u64-max, a memory figure above RAM, free or available above total.
    Empty when nothing is impossible (a lying guest can still be consistent)."""
    why = [f"{tag}={value} is u64-max" for tag, value in stats.items() if value >= _U64_MAX]
    why += [f"{tag}={stats[tag]} bytes is above the guest's RAM ({ram_bytes} bytes)"
            for tag in _MEMORY_TAGS if tag in stats and ram_bytes < stats[tag] < _U64_MAX]
    total = stats.get("memtot")
    if total is not None:
        why += [f"{tag}={stats[tag]} is above memtot={total}" for tag in ("memfree", "avail")
                if tag in stats and total < stats[tag] <= ram_bytes]
    return why
