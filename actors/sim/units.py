"""Human-friendly sizes and durations for scenario files and the CLI.

Scenarios say ``"4GiB"`` and ``"30s"``; the simulator wants bytes and virtual seconds.
Parsing is strict so that a typo is an error, not a silently different experiment.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

_NUMBER = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([A-Za-zµ]*)\s*$")


#: The largest size anything here holds (a u64 of bytes).
MAX_SIZE = (1 << 64) - 1


class UnitError(ValueError):
    """A size or duration that cannot be parsed; the message says what was expected."""


def parse_size(value: object) -> int:
    """Bytes from ``"4GiB"``, ``"512 MiB"``, ``"4096"`` or an int; rejects negatives and junk."""
    if isinstance(value, bool):
        raise UnitError(f"expected a size like '4GiB', got {value!r}")
    if isinstance(value, int):
        number: float = value
        unit = ""
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise UnitError(f"expected a size like '4GiB', got {value!r}")
        number, unit = float(m.group(1)), m.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise UnitError(
                f"unknown size unit {m.group(2)!r} in {value!r} (use B, KiB, MiB, GiB, TiB)")
    else:
        raise UnitError(f"expected a size like '4GiB', got {value!r}")
    size = number * _SIZE_UNITS[unit]
    if size > MAX_SIZE:
        raise UnitError(f"size beyond 16 EiB (64 bits), got {value!r}")
    if size < 0:
        raise UnitError(f"size must not be negative, got {value!r}")
    if size != int(size):
        raise UnitError(f"size must be a whole number of bytes, got {value!r}")
    return int(size)


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"200ms"``, ``"2min"`` or a number; rejects negatives and junk."""
    if isinstance(value, bool):
        raise UnitError(f"expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m or m.group(2) not in _DURATION_UNITS:
            raise UnitError(f"expected a duration like '30s' or '200ms', got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise UnitError(f"expected a duration like '30s', got {value!r}")
    if not math.isfinite(seconds):
        raise UnitError(f"duration must be a finite number, got {value!r}")
    if seconds < 0:
        raise UnitError(f"duration must not be negative, got {value!r}")
    return seconds


def format_size(nbytes: int) -> str:
    """The shortest exact binary-unit spelling of a size (``1073741824`` → ``"1GiB"``)."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return f"{nbytes}B"
