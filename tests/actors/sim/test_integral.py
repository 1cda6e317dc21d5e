"""Time-weighted tallies: area, mean, minimum and time below a threshold, hand-computed."""

from __future__ import annotations

import pytest

from actors.sim.integral import Integral

# (changes as (t, value) after starting at (0, 10), end, mean, minimum, time below 5)
CASES: list[tuple[str, list[tuple[float, float]], float, float, float, float]] = [
    ("constant", [], 4.0, 10.0, 10.0, 0.0),
    ("one step down", [(2.0, 4.0)], 4.0, (2 * 10 + 2 * 4) / 4, 4.0, 2.0),
    ("down and up", [(1.0, 0.0), (3.0, 10.0)], 4.0, (10 + 0 + 10) / 4, 0.0, 2.0),
    ("two changes at one time", [(1.0, 2.0), (1.0, 6.0)], 2.0, (10 + 6) / 2, 2.0, 0.0),
    ("negative values", [(1.0, -5.0)], 3.0, (10 - 10) / 3, -5.0, 2.0),
]


@pytest.mark.parametrize(("changes", "end", "mean", "minimum", "below"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_integral_hand_computed(changes: list[tuple[float, float]], end: float, mean: float,
                                minimum: float, below: float) -> None:
    """A piecewise-constant signal's mean, minimum and time below 5, up to ``end``."""
    i = Integral(0.0, 10.0, threshold=5.0)
    for t, v in changes:
        i.set(t, v)
    assert i.mean(end) == pytest.approx(mean)
    assert i.minimum == minimum
    assert i.time_below(end) == pytest.approx(below)


def test_mean_with_no_elapsed_time_is_the_value() -> None:
    """Before any time has passed the mean is the current value."""
    assert Integral(3.0, 7.0).mean(3.0) == 7.0
