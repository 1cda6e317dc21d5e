"""Inflate/deflate buffers: arrays of little-endian u32 PFNs in 4 KiB units.

The driver fills at most 256 PFNs per buffer (``VIRTIO_BALLOON_ARRAY_PFNS_MAX``); a guest page
larger than 4 KiB appears as ``pages_per_page`` consecutive PFNs starting at
``guest_pfn * pages_per_page`` (the kernel's ``set_page_pfns``).  Encoding and decoding are one
``array('I')`` call each, never a Python loop per PFN.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .errors import DecodeError, EncodeError

__all__ = [
    "PFN_MAX",
    "VIRTIO_BALLOON_ARRAY_PFNS_MAX",
    "PfnIndex",
    "Pfns",
    "as_index",
    "decode_pfns",
    "encode_pfns",
    "guest_pfn_to_wire",
    "guest_pfns_to_wire",
    "show_pfns",
    "wire_to_guest_pfns",
]

#: Most PFNs the Linux driver puts in one inflate or deflate buffer.
VIRTIO_BALLOON_ARRAY_PFNS_MAX = 256

#: Largest PFN the 32-bit wire format can carry (16 TiB of guest memory).
PFN_MAX = 0xFFFF_FFFF

if array("I").itemsize != 4:  # pragma: no cover - every supported CPython platform
    raise ImportError("protocol.pfns needs a 4-byte array('I')")
_SWAP = sys.byteorder == "big"


PfnIndex = npt.NDArray[np.integer]
#: A batch of PFNs: any sequence of ints, or an index array.
Pfns = Sequence[int] | PfnIndex


def as_index(pfns: Pfns) -> PfnIndex:
    """PFNs as a numpy index array, for batch work on per-PFN state: no copy for an
    ``array('I')`` (a decoded buffer) or an ndarray; other sequences are converted."""
    if isinstance(pfns, np.ndarray):
        return pfns
    if isinstance(pfns, array) and pfns.typecode == "I":
        return np.frombuffer(pfns, dtype=np.uint32)
    return np.array(pfns, dtype=np.int64)


def _bad_pfn(values: Iterable[object]) -> object:
    for v in values:
        if not isinstance(v, int) or not 0 <= v <= PFN_MAX:
            return v
    return None  # pragma: no cover - only called after array() refused a value


def _u32_array(values: Iterable[int], *, what: str, queue: str | None) -> array[int]:
    try:
        return array("I", values)
    except (OverflowError, TypeError):
        raise EncodeError(
            f"{what} does not fit a 32-bit wire PFN",
            queue=queue,
            role="driver",
            state="encoding",
            value=_bad_pfn(values),
        ) from None


def encode_pfns(
    pfns: Sequence[int],
    *,
    max_pfns: int = VIRTIO_BALLOON_ARRAY_PFNS_MAX,
    queue: str | None = None,
) -> bytes:
    """The wire bytes of an inflate/deflate buffer: le32 PFNs, 0..``max_pfns`` of them.

    An empty buffer is valid: 3.8's ``leak_balloon`` tells the host even when it dequeued no
    page (``sg_init_one`` of 0 bytes), and QEMU pops, reads no PFN and acks it. Rejects more
    than ``max_pfns`` entries and any PFN that is not an int in 0..2**32-1.
    """
    n = len(pfns)
    if n > max_pfns:
        raise EncodeError(
            f"a PFN buffer holds 0..{max_pfns} PFNs",
            queue=queue,
            role="driver",
            state="encoding",
            value=n,
        )
    a = _u32_array(pfns, what="PFN", queue=queue)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a.byteswap()
    return a.tobytes()


def decode_pfns(
    buf: bytes | bytearray | memoryview,
    *,
    max_pfns: int = VIRTIO_BALLOON_ARRAY_PFNS_MAX,
    queue: str | None = None,
) -> array[int]:
    """The PFNs of a received inflate/deflate buffer, strictly checked.

    Raises :class:`DecodeError` (role "driver", who wrote the buffer) if the length is not a
    multiple of 4 or it carries more than ``max_pfns`` PFNs (an empty one is valid:
    ``encode_pfns``).
    """
    size = len(buf)
    n, rem = divmod(size, 4)
    if rem:
        raise DecodeError(
            "PFN buffer length is not a multiple of 4 bytes",
            queue=queue,
            role="driver",
            state="decoding",
            value=size,
        )
    if n > max_pfns:
        raise DecodeError(
            f"a PFN buffer holds 0..{max_pfns} PFNs",
            queue=queue,
            role="driver",
            state="decoding",
            value=n,
        )
    a = array("I")
    a.frombytes(buf)
    if _SWAP:  # pragma: no cover - big-endian hosts only
        a.byteswap()
    return a


def guest_pfn_to_wire(guest_pfn: int, pages_per_page: int) -> range:
    """The ``pages_per_page`` consecutive 4 KiB PFNs naming one guest page on the wire."""
    base = guest_pfn * pages_per_page
    if guest_pfn < 0 or base + pages_per_page - 1 > PFN_MAX:
        raise EncodeError(
            "guest page lies outside what a 32-bit wire PFN can name",
            role="driver",
            state=f"encoding (pages_per_page={pages_per_page})",
            value=guest_pfn,
        )
    return range(base, base + pages_per_page)


def guest_pfns_to_wire(
    guest_pfns: Sequence[int], pages_per_page: int, *, queue: str | None = None
) -> array[int]:
    """Wire PFNs for a batch of guest pages, in order (``set_page_pfns`` for each page)."""
    if pages_per_page == 1:
        return _u32_array(guest_pfns, what="guest PFN", queue=queue)
    wire = [b + i for g in guest_pfns for b in (g * pages_per_page,) for i in range(pages_per_page)]
    try:
        return array("I", wire)
    except (OverflowError, TypeError):
        bad = next(g for g in guest_pfns if g < 0 or (g + 1) * pages_per_page - 1 > PFN_MAX)
        raise EncodeError(
            "guest page lies outside what a 32-bit wire PFN can name",
            queue=queue,
            role="driver",
            state=f"encoding (pages_per_page={pages_per_page})",
            value=bad,
        ) from None


def wire_to_guest_pfns(pfns: Sequence[int], pages_per_page: int) -> tuple[list[int], list[int]]:
    """Group wire PFNs back into guest pages: ``(guest_pfns, strays)``.

    The buffer is read in runs of ``pages_per_page`` entries, as ``set_page_pfns`` writes them;
    a run naming one whole guest page (aligned start, consecutive PFNs) yields that guest PFN,
    any other run — and a short tail — lands in ``strays`` as wire PFNs, for the device to
    reject or report.  With 4 KiB guest pages every PFN is its own guest page.
    """
    if pages_per_page == 1:
        return list(pfns), []
    ppp = pages_per_page
    n = len(pfns)
    whole = n - n % ppp
    starts = list(pfns[0:whole:ppp])
    expected = [s + i for s in starts for i in range(ppp)]
    if whole == n and list(pfns) == expected and all(s % ppp == 0 for s in starts):
        return [s // ppp for s in starts], []
    guests: list[int] = []
    strays: list[int] = []
    for k, s in enumerate(starts):
        run = list(pfns[k * ppp : (k + 1) * ppp])
        if s % ppp == 0 and run == list(range(s, s + ppp)):
            guests.append(s // ppp)
        else:
            strays.extend(run)
    strays.extend(pfns[whole:])
    return guests, strays


def show_pfns(pfns: Sequence[int], limit: int = 8) -> str:
    """PFNs for a message: the first ``limit``, then how many in all (buffers run to 256)."""
    head = ", ".join(str(p) for p in pfns[:limit])
    return f"[{head}, ... {len(pfns)} in all]" if len(pfns) > limit else f"[{head}]"
