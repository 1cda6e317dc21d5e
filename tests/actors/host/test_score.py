"""Per-guest policy scores: target churn, oscillation, time to reach targets, floor time."""

from __future__ import annotations

import pytest

from actors.host.score import GuestScore, host_score
from actors.sim.integral import Integral


def test_changes_churn_and_reversals() -> None:
    """Each target change counts, its size adds to the churn, a change of direction is a
    reversal; a write of the same target is no change."""
    s = GuestScore(1000, 100)
    for t, prev, new in [(0, 0, 200), (1, 200, 300), (2, 300, 300), (3, 300, 100),
                         (4, 100, 400), (5, 400, 500)]:
        s.target_set(float(t), prev, new, actual=new)
    out = s.summary(6.0)
    assert (out["target_changes"], out["reversals"]) == (5, 2)
    assert out["churn_mib"] == pytest.approx((200 + 100 + 200 + 300 + 100) / 256, abs=1e-3)


def test_time_to_reach_and_unreached_targets() -> None:
    """A target is reached when actual gets within 16 pages; one superseded before that, or
    still pending at the end, is unreached."""
    s = GuestScore(1000, 0)
    s.target_set(0.0, 0, 500, actual=0)
    s.actual_changed(0.5, 250)
    s.actual_changed(2.0, 490)  # within 16 pages: reached after 2 s
    s.target_set(3.0, 500, 800, actual=490)
    s.target_set(4.0, 800, 100, actual=600)  # 800 never reached
    s.actual_changed(4.25, 100)  # reached after 0.25 s
    s.target_set(5.0, 100, 900, actual=100)  # pending at the end
    out = s.summary(6.0)
    assert s.settle_times == [2.0, 0.25]
    assert out["settle_seconds_mean"] == pytest.approx(1.125)
    assert out["settle_seconds_max"] == 2.0
    assert out["targets_unreached"] == 2


def test_time_below_floor_and_saved() -> None:
    """Guest memory (RAM - actual) under the floor is counted in seconds; saved is the
    time-weighted mean of the host's saved pages."""
    s = GuestScore(1000, 400)
    s.actual_changed(1.0, 700)  # memory 300 < 400 from t=1
    s.actual_changed(3.0, 500)  # memory 500 from t=3
    s.saved.set(2.0, 512)
    out = s.summary(4.0)
    assert out["below_floor_seconds"] == 2.0
    assert out["saved_mib_avg"] == pytest.approx(512 * 2 / 4 / 256, abs=1e-3)


def test_host_score_adds_guests_and_tracks_free() -> None:
    """The host score sums the guests' tallies and reads its free-memory integral."""
    a, b = GuestScore(1000, 0), GuestScore(1000, 0)
    a.target_set(0.0, 0, 100, actual=0)
    a.actual_changed(1.0, 100)
    b.target_set(0.0, 0, 200, actual=0)
    b.actual_changed(3.0, 200)
    free = Integral(0.0, 100, threshold=0)
    free.set(1.0, -50)
    free.set(2.0, 100)
    out = host_score([a, b], free, 4.0)
    assert out["target_changes"] == 2 and out["settle_seconds_mean"] == 2.0
    assert out["free_mib_min"] == pytest.approx(-50 / 256, abs=1e-3)
    assert out["overcommitted_seconds"] == 1.0

