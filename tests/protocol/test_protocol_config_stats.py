"""Tests of the config-space image and the stats buffer codec."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import given

from protocol import ConfigError, DecodeError, EncodeError
from protocol.balloon import (
    CONFIG_SIZE,
    OFFSET_ACTUAL,
    OFFSET_FREE_PAGE_HINT_CMD_ID,
    OFFSET_NUM_PAGES,
    OFFSET_POISON_VAL,
    STAT_ENTRY_SIZE,
    U32_MAX,
    BalloonConfig,
    StatTag,
    decode_stats,
    encode_stats,
    known_stats,
    stat_tags,
)

NamesFn = Callable[..., None]
u32 = st.integers(0, U32_MAX)

# ------------------------------------------------------------------------------------- config


def test_config_layout_is_four_le_u32s() -> None:
    """num_pages, actual, free_page_hint_cmd_id, poison_val at offsets 0, 4, 8, 12, LE."""
    cfg = BalloonConfig(num_pages=1, actual=2, free_page_hint_cmd_id=3, poison_val=0xAABBCCDD)
    assert (OFFSET_NUM_PAGES, OFFSET_ACTUAL, OFFSET_FREE_PAGE_HINT_CMD_ID) == (0, 4, 8)
    assert OFFSET_POISON_VAL == 12 and CONFIG_SIZE == 16
    assert cfg.encode() == struct.pack("<4I", 1, 2, 3, 0xAABBCCDD)


@given(u32, u32, u32, u32)
def test_config_round_trip(a: int, b: int, c: int, d: int) -> None:
    """Any four u32s survive encode then decode."""
    cfg = BalloonConfig(a, b, c, d)
    assert BalloonConfig.decode(cfg.encode()) == cfg


@pytest.mark.parametrize(
    ("field", "value", "role"),
    [
        ("num_pages", -1, "device"),
        ("num_pages", U32_MAX + 1, "device"),
        ("actual", -5, "driver"),
        ("actual", 1 << 40, "driver"),
        ("free_page_hint_cmd_id", U32_MAX + 1, "device"),
        ("poison_val", -1, "driver"),
    ],
)
def test_out_of_range_config_values_are_refused(
    names: NamesFn, field: str, value: int, role: str
) -> None:
    """A config field outside 0..2**32-1 is refused on construction or update, naming its writer."""
    with pytest.raises(ConfigError) as err:
        BalloonConfig(**{field: value})
    names(err, queue="config", role=role, state=f"writing {field}", value=value)
    with pytest.raises(ConfigError):
        dataclasses.replace(BalloonConfig(), **{field: value})  # as with_actual/with_num_pages


@pytest.mark.parametrize("size", [0, 8, 15, 17])
def test_config_decode_needs_exactly_16_bytes(names: NamesFn, size: int) -> None:
    """Decoding a config image of any length other than 16 bytes fails."""
    with pytest.raises(DecodeError) as err:
        BalloonConfig.decode(b"\x00" * size)
    names(err, queue="config", role="device", state="decoding", value=size)


def test_config_writes_by_their_owners() -> None:
    """The device writes num_pages and the hint id; the driver writes actual and poison_val."""
    cfg = BalloonConfig().write(OFFSET_NUM_PAGES, struct.pack("<I", 1000), role="device")
    cfg = cfg.write(OFFSET_ACTUAL, struct.pack("<I", 600), role="driver")
    cfg = cfg.write(OFFSET_POISON_VAL, b"\xaa" * 4, role="driver")
    cfg = cfg.write(OFFSET_FREE_PAGE_HINT_CMD_ID, struct.pack("<I", 9), role="device")
    assert cfg == BalloonConfig(1000, 600, 9, 0xAAAAAAAA)
    assert cfg.with_num_pages(5).with_actual(4) == BalloonConfig(5, 4, 9, 0xAAAAAAAA)


@pytest.mark.parametrize(
    ("offset", "data", "role", "state", "value"),
    [
        (OFFSET_ACTUAL, b"\x01\x00\x00\x00", "device", "writing actual", 1),
        (OFFSET_NUM_PAGES, b"\x02\x00\x00\x00", "driver", "writing num_pages", 2),
        (OFFSET_ACTUAL, b"\x01", "driver", "writing actual", 1),
        (2, b"\x00" * 4, "driver", "writing", 2),
        (16, b"\x00" * 4, "device", "writing", 16),
    ],
)
def test_bad_config_writes_are_refused(
    names: NamesFn, offset: int, data: bytes, role: str, state: str, value: object
) -> None:
    """Writes by the wrong role, of a partial register, or off a field are refused."""
    with pytest.raises(ConfigError) as err:
        BalloonConfig().write(offset, data, role=role)
    names(err, queue="config", role=role, state=state, value=value)


# -------------------------------------------------------------------------------------- stats


def test_stat_tags_have_kernel_numbers() -> None:
    """Stat tags 0..15 carry the kernel's VIRTIO_BALLOON_S_* numbers."""
    assert [t.value for t in StatTag] == list(range(16))
    assert (StatTag.MEMFREE.value, StatTag.HTLB_PGFAIL.value, StatTag.DIRECT_RECLAIM.value) == (
        4,
        9,
        15,
    )


def test_stats_entry_is_packed_le16_le64() -> None:
    """Each entry is 10 packed bytes: le16 tag then le64 value."""
    buf = encode_stats({StatTag.MEMFREE: 0x0102030405060708})
    assert STAT_ENTRY_SIZE == 10
    assert buf == b"\x04\x00" + (0x0102030405060708).to_bytes(8, "little")


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, (1 << 64) - 1)), max_size=40))
def test_stats_round_trip(entries: list[tuple[int, int]]) -> None:
    """Any (u16, u64) entries survive encode then decode, in order, unknown tags included."""
    buf = encode_stats(entries)
    assert len(buf) == STAT_ENTRY_SIZE * len(entries)
    assert decode_stats(buf) == entries


def test_known_stats_drops_unknown_tags_in_any_order() -> None:
    """The device ignores tags it does not know and accepts entries in any order."""
    entries = decode_stats(encode_stats([(99, 1), (StatTag.MEMTOT, 8), (StatTag.SWAP_IN, 3)]))
    assert known_stats(entries) == {StatTag.MEMTOT: 8, StatTag.SWAP_IN: 3}
    assert all(type(t) is StatTag for t in known_stats(entries))
    assert stat_tags(entries) == {99, 5, 0}


@pytest.mark.parametrize(
    ("entries", "value"),
    [
        ([(0x10000, 1)], 0x10000),
        ([(-1, 1)], -1),
        ([(4, 1 << 64)], (4, 1 << 64)),
        ([(4, -2)], (4, -2)),
    ],
)
def test_stats_encode_errors(names: NamesFn, entries: list[tuple[int, int]], value: object) -> None:
    """A tag that is not a u16 or a value that is not a u64 is refused."""
    with pytest.raises(EncodeError) as err:
        encode_stats(entries)
    names(err, queue="statsq", role="driver", state="encoding", value=value)


@pytest.mark.parametrize("size", [1, 9, 11, 25])
def test_stats_decode_needs_whole_entries(names: NamesFn, size: int) -> None:
    """A stats buffer whose length is not a multiple of 10 bytes is refused."""
    with pytest.raises(DecodeError) as err:
        decode_stats(b"\x00" * size)
    names(err, queue="statsq", role="driver", state="decoding", value=size)


def test_empty_stats_buffer_decodes_to_nothing() -> None:
    """A driver that supports no statistics sends an empty buffer, which is valid."""
    assert decode_stats(b"") == [] and encode_stats({}) == b""
