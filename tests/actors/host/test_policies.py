"""The built-in policies' formulas, pinned on hand-computed cases (4 KiB pages throughout)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.host.policies import MomPolicy, PressurePolicy, ProxmoxPolicy, SqueezedPolicy
from actors.host.policy import GuestSample, GuestView, HostSample, HostView, PolicyError

TOTAL = 10_000


def g(name: str, ram: int, actual: int = 0, *, target: int | None = None, floor: int = 0,
      top: int = 0, shares: int = 1000, free: int | None = None,
      history: list[tuple[int, int]] | None = None) -> GuestView:
    """A guest view. ``free`` is its latest MemFree (pages); ``history`` (memory, free) pairs
    of its stats readings (default: one reading of the current memory and ``free``)."""
    stats = {} if free is None else {"memfree": free * 4096}
    if history is None:
        history = [] if free is None else [(ram - actual, free)]
    samples = tuple(GuestSample(float(i), ram - m, m, f, ram, m) for i, (m, f) in
                    enumerate(history))
    return GuestView(name, ram, actual if target is None else target, actual, stats,
                     0.0 if stats else None, floor_pages=floor, max_pages=top, shares=shares,
                     history=samples)


def host(free: int | list[int], *guests: GuestView, t: float = 0.0) -> HostView:
    """A host view whose free-page history is ``free`` (the last value is now)."""
    hist = free if isinstance(free, list) else [free]
    return HostView(t, TOTAL, hist[-1], guests,
                    tuple(HostSample(float(i), f) for i, f in enumerate(hist)))


# -- mom -----------------------------------------------------------------------------------------

MOM_CASES: list[tuple[str, dict[str, Any], HostView, dict[str, int]]] = [
    # host_free = 0.1 < 0.2: guest_free = 0.2*0.1/0.2 = 0.1; used = 4000-1000 = 3000;
    # floor = 3000 + 0.1*4000 = 3400; size = max(4000*0.95, 3400) = 3800 -> balloon 200
    ("shrink 5%", {}, host(1000, g("a", 4000, free=1000)), {"a": 200}),
    # used 3700: floor 3700 + 400 = 4100 > cur: a shrink never grows the guest
    ("shrink floor above cur", {}, host(1000, g("a", 4000, free=300)), {}),
    # critical (0.04 <= 0.05): guest_free = -0.05 + 0.04 = -0.01; floor = 3000 - 40 = 2960;
    # with 50% steps size = max(2000, 2960) = 2960 -> balloon 1040
    ("critical pushes below used", {"max_balloon_change_percent": 0.5},
     host(400, g("a", 4000, free=1000)), {"a": 1040}),
    # the guaranteed minimum wins: floor = max(3900, 3400); size = max(3800, 3900) = 3900
    ("min guarantee", {}, host(1000, g("a", 4000, free=1000, floor=3900)), {"a": 100}),
    # moving averages: host free mean of the last 5 = (3000+4*1000)/5 = 1400 -> 0.14;
    # guest used = mean(4000, 3800) - mean(1000, 800) = 3000; floor = 3000 + 0.14*4000 = 3560
    # (cur is 3800 now): size = max(3800*0.95 = 3610, 3560) = 3610 -> balloon 390
    ("window averages", {}, host([3000, 3000, 1000, 1000, 1000, 1000],
                                 g("a", 4000, 200, history=[(4000, 1000), (3800, 800)])),
     {"a": 390}),
    # change 0.1% of cur <= 0.25%: skipped
    ("too small", {"max_balloon_change_percent": 0.001}, host(1000, g("a", 4000, free=1000)),
     {}),
    # no stats yet: shrink leaves the guest alone
    ("no stats", {}, host(1000, g("a", 4000)), {}),
    # host_free 0.5: grow; size = min(3000*1.05, 4000) = 3150, at least 2500 + 0.2*4000 =
    # 3300 -> balloon 700
    ("grow to desired free", {}, host(5000, g("a", 4000, 1000, free=500)), {"a": 700}),
    # grow capped at max: min(3900*1.05, 4000) = 4000 -> balloon 0
    ("grow capped", {}, host(5000, g("a", 4000, 100, free=1900)), {"a": 0}),
    # max_memory 3500 caps growth: min(3000*1.05, 3500) = 3150; max(3150, 2500+700) = 3200
    ("grow to dynamic max", {}, host(5000, g("a", 4000, 1000, free=500, top=3500)),
     {"a": 800}),
    # at max already: nothing
    ("grow at max", {}, host(5000, g("a", 4000, free=100)), {}),
    # grow without stats: 5% only: 3000*1.05 = 3150 -> 850
    ("grow without stats", {}, host(5000, g("a", 4000, 1000)), {"a": 850}),
]


@pytest.mark.parametrize(("params", "view", "expected"), [c[1:] for c in MOM_CASES],
                         ids=[c[0] for c in MOM_CASES])
def test_mom_formula(params: dict[str, Any], view: HostView, expected: dict[str, int]) -> None:
    """MOM's shrink/grow rules give the hand-computed balloon targets."""
    assert dict(MomPolicy(**params).decide(view)) == expected


def test_mom_defaults() -> None:
    """MOM's documented defaults: 10 s interval, 20%/5% pressure, 5% steps, 0.25% minimum."""
    p = MomPolicy()
    assert (p.interval, p.threshold, p.critical, p.min_guest_free, p.max_change,
            p.min_change, p.window) == (10.0, 0.2, 0.05, 0.2, 0.05, 0.0025, 5)


# -- proxmox -------------------------------------------------------------------------------------

PVE = {"max_change": 1000, "min_goal": 100}  # pages, to keep the arithmetic small

PROXMOX_CASES: list[tuple[str, dict[str, Any], HostView, dict[str, int]]] = [
    # used 6000, goal = 8000 - 6000 = 2000; b is under pressure (free 100 <= 1000/4), so it
    # is served first: alloc_new = (1500-1000) + 2000 = 2500, desired = 1000 + 2500 = 3500,
    # one round moves at most 1000: memory 2500 -> balloon 1500; the second pass changes
    # nothing (progress 0); the rest (1000) < goal, so the other guests are not considered
    ("grow the pressured guest first", PVE,
     host(4000, g("a", 4000, 2000, floor=1000, free=2000),
          g("b", 4000, 2500, floor=1000, free=100)),
     {"b": 1500}),
    # goal = 8000 - 9000 = -1000: shrink the roomy guest a first: alloc_new = 1000 - 1000 = 0,
    # desired = floor 1000: memory 2000 -> 1000 -> balloon 3000
    ("shrink the roomy guest", PVE,
     host(1000, g("a", 4000, 2000, floor=1000, free=2000),
          g("b", 4000, 2500, floor=1000, free=100)),
     {"a": 3000}),
    # same with 300 pages per round: memory 1700 -> balloon 2300; the rest (-700) > goal
    ("shrink bounded per round", {"max_change": 300, "min_goal": 100},
     host(1000, g("a", 4000, 2000, floor=1000, free=2000),
          g("b", 4000, 2500, floor=1000, free=100)),
     {"a": 2300}),
    # shares 1000:2000 split a goal of 3000 above the minimums: 1000 and 2000
    ("share-proportional", {"max_change": 10_000, "min_goal": 100},
     host(5000, g("a", 4000, 3000, floor=1000), g("b", 4000, 3000, floor=1000, shares=2000)),
     {"a": 2000, "b": 1000}),
    # desired 3500 above b's maximum (2000): clamped
    ("clamped at max", {"max_change": 10_000, "min_goal": 100},
     host(5000, g("b", 4000, 3000, floor=1000, top=2000)), {"b": 2000}),
    # |goal| = 50 <= min_goal: nothing
    ("goal too small", PVE, host(2050, g("a", 4000, 2000, floor=1000)), {}),
    # a guest without a minimum (floor 0) or with 0 shares is not auto-ballooned
    ("floor 0 and shares 0 skipped", PVE,
     host(1000, g("a", 4000, 2000, free=2000), g("b", 4000, 2000, floor=1000, shares=0,
                                                 free=2000)), {}),
]


@pytest.mark.parametrize(("params", "view", "expected"), [c[1:] for c in PROXMOX_CASES],
                         ids=[c[0] for c in PROXMOX_CASES])
def test_proxmox_formula(params: dict[str, Any], view: HostView,
                         expected: dict[str, int]) -> None:
    """Proxmox's compute_alg1 gives the hand-computed balloon targets."""
    assert dict(ProxmoxPolicy(**params).decide(view)) == expected


def test_proxmox_defaults() -> None:
    """Proxmox's documented defaults: 80% usage, 100 MiB per VM per round, 10 MiB goals."""
    p = ProxmoxPolicy()
    assert (p.interval, p.target_usage, p.max_change, p.min_goal) == (10.0, 0.8, 25600, 2560)


# -- squeezed ------------------------------------------------------------------------------------


def two(total: int, a: tuple[int, int], b: tuple[int, int]) -> HostView:
    """Guests a (6000 RAM) and b (4000 RAM), floors 1000, given as (target, actual)."""
    return HostView(0.0, total, 0, (
        g("a", 6000, a[1], target=a[0], floor=1000), g("b", 4000, b[1], target=b[0],
                                                        floor=1000)))


SQUEEZED_CASES: list[tuple[str, HostView, dict[str, int]]] = [
    # gamma = (6000 - 2000) / (5000 + 3000) = 0.5: a 1000 + 2500 -> balloon 2500,
    # b 1000 + 1500 -> balloon 1500 (both free memory: sent at once)
    ("one fraction for all", two(6000, (0, 0), (0, 0)), {"a": 2500, "b": 1500}),
    # room for everything: gamma 1, every balloon 0 (grants: nobody is still freeing)
    ("grant when nobody frees", two(10_000, (2500, 2500), (1500, 1500)), {"a": 0, "b": 0}),
    # b has not reached its larger balloon yet: grants wait
    ("grants wait for frees", two(10_000, (2500, 2500), (1500, 1000)), {}),
    # a must free (0 -> 2500) while b would get memory (3000 -> 1500): only the free is sent
    ("free before grant", two(6000, (0, 0), (3000, 3000)), {"a": 2500}),
    # gamma clamps at 0 when even the minimums do not fit
    ("gamma at zero", two(1000, (0, 0), (0, 0)), {"a": 5000, "b": 3000}),
]


@pytest.mark.parametrize(("view", "expected"), [c[1:] for c in SQUEEZED_CASES],
                         ids=[c[0] for c in SQUEEZED_CASES])
def test_squeezed_formula(view: HostView, expected: dict[str, int]) -> None:
    """squeezed's single fraction and free-before-grant ordering, hand-computed."""
    assert dict(SqueezedPolicy().decide(view)) == expected


def test_squeezed_excludes_a_stuck_guest() -> None:
    """A guest that has not moved towards its target for 5 s is stuck: its memory is taken as
    fixed and the others share the rest: a alone gets gamma = (6000 - 3500 - 1000) / 5000."""
    p = SqueezedPolicy()
    stuck_b = g("b", 4000, 500, target=1500, floor=1000)
    a = g("a", 6000, 2500, floor=1000)
    assert p.decide(HostView(0.0, 6000, 0, (a, stuck_b))) == {}  # a at 2500, b still freeing
    assert not p.stuck(stuck_b, 4.9)
    assert dict(p.decide(HostView(5.0, 6000, 0, (a, stuck_b)))) == {"a": 3500}


# -- pressure ------------------------------------------------------------------------------------

PRESSURE_CASES: list[tuple[str, int, GuestView, dict[str, int]]] = [
    ("no pressure", 2500, g("a", 4000, 500, free=2000), {}),
    ("low: one step", 1500, g("a", 4000, 500, free=2000), {"a": 600}),
    ("medium: two steps", 800, g("a", 4000, 500, free=2000), {"a": 700}),
    ("critical: four steps", 300, g("a", 4000, 500, free=2000), {"a": 900}),
    # MemFree 300 < 10% of its 3500 pages: the guest's pressure wins, deflate a step
    ("guest pressure deflates", 300, g("a", 4000, 500, free=300), {"a": 400}),
    ("deflate stops at 0", 300, g("a", 4000, 50, free=10), {"a": 0}),
]


@pytest.mark.parametrize(("free", "guest", "expected"), [c[1:] for c in PRESSURE_CASES],
                         ids=[c[0] for c in PRESSURE_CASES])
def test_pressure_steps(free: int, guest: GuestView, expected: dict[str, int]) -> None:
    """Host levels 20/10/5% free step balloons by 1, 2, 4 steps; guest pressure deflates."""
    assert dict(PressurePolicy(step=100).decide(host(free, guest))) == expected


@pytest.mark.parametrize(("cls", "params", "message"), [
    (MomPolicy, {"pressure_threshold": 2}, "parameter pressure_threshold: 2 not in [0, 1]"),
    (MomPolicy, {"window": "ten"}, "parameter window: expected a number, got 'ten'"),
    (MomPolicy, {"pressure_threshold": 0}, "parameter pressure_threshold: must be > 0"),
    (ProxmoxPolicy, {"max_change": "50%"}, "parameter max_change: expected a size or a page"),
    (ProxmoxPolicy, {"target_usage": True}, "parameter target_usage: expected a number"),
    (SqueezedPolicy, {"stuck_after": "soon"}, "parameter stuck_after: expected a duration"),
    (PressurePolicy, {"low": 0.05, "critical": 0.2}, "low >= medium >= critical required"),
    (PressurePolicy, {"steps": 1}, "unknown parameter(s) steps; accepted: critical, guest_low"),
])
def test_bad_parameters_name_the_policy_and_parameter(cls: type[Any], params: dict[str, Any],
                                                      message: str) -> None:
    """Each bad parameter of a built-in is a PolicyError naming the policy and parameter."""
    with pytest.raises(PolicyError) as e:
        cls(**params)
    assert str(e.value).startswith(f"policy {cls.name!r}: ")
    assert message in str(e.value)
