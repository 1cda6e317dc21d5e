"""Sizes and durations as scenario files and the CLI spell them."""

import pytest

from actors.sim.units import UnitError, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GiB", 4 << 30), ("512 MiB", 512 << 20), ("4096", 4096), (4096, 4096), ("64KiB", 65536),
     ("1.5GiB", 3 << 29), ("1GB", 10**9), ("0", 0), ("16k", 16384)],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    """Binary and decimal units, bare numbers and ints all parse to bytes."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1GiB", "4 parsecs", "GiB", "", True, 1.5, "1.3B", None])
def test_parse_size_rejects(text: object) -> None:
    """Negative, unit-less junk, fractional bytes and non-strings are errors, not guesses."""
    with pytest.raises(UnitError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30.0), ("200ms", 0.2), ("2min", 120.0), ("1h", 3600.0), (5, 5.0), ("0.5", 0.5),
     ("10us", 1e-5)],
)
def test_parse_duration_accepts(text: object, expected: float) -> None:
    """Durations in ns..h and bare numbers of seconds parse to seconds."""
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["-3s", "soon", "3 fortnights", False, [1]])
def test_parse_duration_rejects(text: object) -> None:
    """Negative or unparsable durations are errors."""
    with pytest.raises(UnitError):
        parse_duration(text)


def test_format_size_round_trips() -> None:
    """format_size picks the largest exact binary unit, and parse_size reads it back."""
    for n in (1 << 30, 3 << 20, 4096, 1000):
        assert parse_size(format_size(n)) == n
    assert format_size(1 << 30) == "1GiB"
