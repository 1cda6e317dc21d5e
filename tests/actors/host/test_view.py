"""The policy's view: memory vs balloon conversions and moving averages over its history."""

from __future__ import annotations

import pytest

from actors.host.view import GuestSample, GuestView, HostSample, HostView


def test_guest_sizes() -> None:
    """Memory is RAM minus actual; balloon_for truncates memory to a page; max defaults to
    RAM; the largest balloon leaves the floor."""
    g = GuestView("a", 1000, 300, 200, {"memfree": 40960}, 1.0, floor_pages=250)
    assert (g.memory, g.max_memory, g.max_balloon, g.free_pages) == (800, 1000, 750, 10)
    assert g.balloon_for(700.9) == 300
    assert GuestView("a", 1000, 0, 0, {}, None, max_pages=600).max_memory == 600
    assert GuestView("a", 1000, 0, 0, {}, None).free_pages is None


def test_moving_averages() -> None:
    """mean() averages a field over the last N readings, skipping readings without it."""
    samples = tuple(GuestSample(float(t), 0, mem, free, None, 0) for t, mem, free in
                    [(0, 1000, 100), (1, 900, None), (2, 800, 300)])
    g = GuestView("a", 1000, 0, 0, {}, None, history=samples)
    assert g.mean("memory") == 900.0
    assert g.mean("memory", last=2) == 850.0
    assert g.mean("free") == 200.0 and g.mean("free", last=1) == 300.0
    assert g.mean("total") is None and g.mean("memory", last=0) is None


def test_host_view_pressure_and_mean_free() -> None:
    """Host pressure is used over total; mean_free averages the last ticks (now if none)."""
    hist = tuple(HostSample(float(t), f) for t, f in enumerate([400, 200, -100]))
    v = HostView(2.0, 1000, -100, (), hist)
    assert v.used_pages == 1100 and v.pressure == pytest.approx(1.1)
    assert v.mean_free() == pytest.approx(500 / 3) and v.mean_free(2) == 50.0
    assert HostView(0.0, 1000, 300, ()).mean_free(5) == 300.0
    with pytest.raises(KeyError):
        v.guest("nobody")
