"""Tests of the inflate/deflate PFN buffer codec and the guest-page <-> wire-PFN mapping."""

from __future__ import annotations

import struct
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import given

from protocol import DecodeError, EncodeError
from protocol.balloon import (
    PFN_MAX,
    VIRTIO_BALLOON_ARRAY_PFNS_MAX,
    decode_pfns,
    encode_pfns,
    guest_pfn_to_wire,
    guest_pfns_to_wire,
    wire_to_guest_pfns,
)

NamesFn = Callable[..., None]


def test_encode_is_little_endian_u32() -> None:
    """PFNs go on the wire as consecutive little-endian u32s."""
    assert encode_pfns([1, 0x01020304, PFN_MAX]) == struct.pack("<3I", 1, 0x01020304, PFN_MAX)


def test_decode_returns_the_pfns() -> None:
    """decode_pfns reads back the u32s, accepting bytes, bytearray and memoryview."""
    raw = struct.pack("<2I", 7, 0xFFFFFFFF)
    for buf in (raw, bytearray(raw), memoryview(raw)):
        assert list(decode_pfns(buf)) == [7, 0xFFFFFFFF]


@given(st.lists(st.integers(0, PFN_MAX), max_size=VIRTIO_BALLOON_ARRAY_PFNS_MAX))
def test_pfn_round_trip(pfns: list[int]) -> None:
    """Any 0..256 u32 PFNs survive encode then decode unchanged (3.8 sends empty deflates)."""
    buf = encode_pfns(pfns)
    assert len(buf) == 4 * len(pfns)
    assert list(decode_pfns(buf)) == pfns


ENCODE_ERRORS: list[tuple[str, list[int], object]] = [
    ("too-many", list(range(257)), 257),
    ("negative", [1, -1, 2], -1),
    ("too-big", [1, PFN_MAX + 1], PFN_MAX + 1),
]


@pytest.mark.parametrize(
    ("case", "pfns", "value"), ENCODE_ERRORS, ids=[c[0] for c in ENCODE_ERRORS]
)
def test_encode_errors(names: NamesFn, case: str, pfns: list[int], value: object) -> None:
    """encode_pfns refuses oversized buffers and PFNs that are not u32s."""
    with pytest.raises(EncodeError) as err:
        encode_pfns(pfns, queue="inflateq")
    names(err, queue="inflateq", role="driver", state="encoding", value=value)


DECODE_ERRORS: list[tuple[str, bytes, object]] = [
    ("ragged-3", b"\x00" * 3, 3),
    ("ragged-5", b"\x00" * 5, 5),
    ("too-many", b"\x00" * (4 * 257), 257),
]


@pytest.mark.parametrize(("case", "buf", "value"), DECODE_ERRORS, ids=[c[0] for c in DECODE_ERRORS])
def test_decode_errors(names: NamesFn, case: str, buf: bytes, value: object) -> None:
    """decode_pfns refuses ragged lengths and more than max_pfns entries."""
    with pytest.raises(DecodeError) as err:
        decode_pfns(buf, queue="deflateq")
    names(err, queue="deflateq", role="driver", state="decoding", value=value)


def test_max_pfns_is_adjustable() -> None:
    """A device may accept buffers of another size limit than Linux's 256."""
    buf = encode_pfns(list(range(300)), max_pfns=512)
    assert len(decode_pfns(buf, max_pfns=512)) == 300


@pytest.mark.parametrize(
    ("guest", "ppp", "wire"),
    [(5, 1, [5]), (5, 4, [20, 21, 22, 23]), (1, 16, list(range(16, 32)))],
)
def test_guest_pfn_to_wire_is_set_page_pfns(guest: int, ppp: int, wire: list[int]) -> None:
    """A guest page is named by pages_per_page consecutive PFNs from guest_pfn * ppp."""
    assert list(guest_pfn_to_wire(guest, ppp)) == wire


@pytest.mark.parametrize(("guest", "ppp"), [(-1, 1), (PFN_MAX + 1, 1), (PFN_MAX // 4 + 1, 4)])
def test_guest_pfn_beyond_32_bits_is_refused(names: NamesFn, guest: int, ppp: int) -> None:
    """A guest page whose wire PFNs would not fit 32 bits is refused."""
    with pytest.raises(EncodeError) as err:
        guest_pfn_to_wire(guest, ppp)
    names(err, queue="-", role="driver", state=f"encoding (pages_per_page={ppp})", value=guest)
    with pytest.raises(EncodeError) as err:
        guest_pfns_to_wire([0, guest], ppp, queue="inflateq")
    assert err.value.value == guest and err.value.queue == "inflateq"


@given(
    st.sampled_from([1, 4, 16]).flatmap(
        lambda ppp: st.tuples(
            st.just(ppp), st.lists(st.integers(0, PFN_MAX // ppp), min_size=0, max_size=64)
        )
    )
)
def test_guest_wire_round_trip(case: tuple[int, list[int]]) -> None:
    """Wire PFNs built from guest pages group back into the same guest pages, no strays."""
    ppp, guests = case
    wire = guest_pfns_to_wire(guests, ppp)
    assert len(wire) == ppp * len(guests)
    assert wire_to_guest_pfns(wire, ppp) == (guests, [])
    if guests:
        buf = encode_pfns(wire, max_pfns=1 << 16)
        assert list(decode_pfns(buf, max_pfns=1 << 16)) == list(wire)


@pytest.mark.parametrize(
    ("wire", "guests", "strays"),
    [
        ([0, 1, 2, 3, 8, 9, 10, 11], [0, 2], []),
        ([1, 2, 3, 4, 8, 9, 10, 11], [2], [1, 2, 3, 4]),  # misaligned start
        ([0, 1, 3, 2, 4, 5, 6, 7], [1], [0, 1, 3, 2]),  # out of order
        ([0, 1, 2, 3, 4, 5], [0], [4, 5]),  # short tail
        ([0, 1, 2, 3, 0, 1, 2, 3], [0, 0], []),  # duplicate page: reported by the monitor
    ],
)
def test_wire_to_guest_reports_pages_not_sent_whole(
    wire: list[int], guests: list[int], strays: list[int]
) -> None:
    """Runs of PFNs that do not name one whole aligned guest page come back as strays."""
    assert wire_to_guest_pfns(wire, 4) == (guests, strays)
