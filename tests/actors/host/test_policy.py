"""The policy interface: static and schedule on hand-computed cases, parameter validation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.host.loader import make_policy
from actors.host.policies import SchedulePolicy, StaticPolicy
from actors.host.policy import GuestView, HostPolicy, HostView, PolicyError, balloon_pages

MiB = 1024 * 1024 // 4096  # pages


def view(time: float = 0.0, /, **guests: tuple[int, int]) -> HostView:
    """A host view with guests given as name=(ram_pages, current_target)."""
    return HostView(time=time, total_pages=10_000, free_pages=1_000, guests=tuple(
        GuestView(name, ram, target, 0, {}, None) for name, (ram, target) in guests.items()))


# -- built-ins --------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "ram", "expected"), [
    ("50%", 1000, 500),
    ("25%", 1001, 250),  # truncated, never rounded up
    ("32.3%", 1000, 323),  # exact decimal percentage, not 322 from float rounding
    ("0.5 %", 4096, 20),
    ("100%", 777, 777),
    ("0%", 777, 0),
    ("512MiB", 1_000_000, 512 * MiB),
    ("1GiB", 10, 262144),  # sizes do not depend on RAM (the shell clamps)
    ("6KiB", 100, 1),  # whole 4 KiB pages
    (300, 1000, 300),  # an int is a page count
    ("0", 1000, 0),
])
def test_balloon_pages_hand_computed(target: object, ram: int, expected: int) -> None:
    """Percentages of RAM, sizes and page counts convert to the hand-computed page count."""
    assert balloon_pages("static", "target", target, ram) == expected


def test_static_targets_every_guest() -> None:
    """static gives each guest its own share of a percentage target, every time it is asked."""
    p = StaticPolicy(target="50%")
    v = view(a=(1000, 0), b=(2048, 7))
    assert dict(p.decide(v)) == {"a": 500, "b": 1024}
    assert dict(StaticPolicy(target="1MiB").decide(v)) == {"a": 256, "b": 256}
    assert dict(StaticPolicy().decide(v)) == {"a": 0, "b": 0}  # default target 0


@pytest.mark.parametrize(("time", "expected"), [
    (0.0, {}),  # before the first step: keep current targets
    (4.99, {}),
    (5.0, {"a": 500, "b": 200}),
    (17.0, {"a": 500, "b": 200}),
    (29.99, {"a": 500, "b": 200}),
    (30.0, {"a": 256, "b": 256}),
    (45.0, {"a": 0, "b": 0}),
    (1e6, {"a": 0, "b": 0}),
])
def test_schedule_steps(time: float, expected: dict[str, int]) -> None:
    """schedule applies the latest step whose time has come, and nothing before the first."""
    p = SchedulePolicy(steps=[["5s", "50%"], ["30s", "1MiB"], [45, 0]])
    assert dict(p.decide(view(time, a=(1000, 3), b=(400, 3)))) == expected


def test_params_interval_parsed() -> None:
    """interval is accepted by every policy as a duration string, and defaults to 1 s."""
    assert StaticPolicy().interval == 1.0
    assert StaticPolicy(interval="250ms").interval == pytest.approx(0.25)
    assert make_policy("schedule", {"interval": 3, "steps": []}).interval == 3.0


# -- parameter validation ---------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "params", "message"), [
    (StaticPolicy, {"bogus": 1, "extra": 2},
     "policy 'static': unknown parameter(s) bogus, extra; accepted: target"),
    (StaticPolicy, {"target": "12 parsecs"},
     "policy 'static': parameter target: unknown size unit 'parsecs'"),
    (StaticPolicy, {"target": "abc%"}, "policy 'static': parameter target: bad percentage 'abc%'"),
    (StaticPolicy, {"target": "150%"}, "policy 'static': parameter target: '150%' not in 0..100%"),
    (StaticPolicy, {"target": "-1%"}, "policy 'static': parameter target: '-1%' not in 0..100%"),
    (StaticPolicy, {"target": "nan%"}, "policy 'static': parameter target: 'nan%' not in"),
    (StaticPolicy, {"target": -5},
     "policy 'static': parameter target: page count must not be negative, got -5"),
    (StaticPolicy, {"target": "-5MiB"}, "policy 'static': parameter target: size must not be"),
    (StaticPolicy, {"target": True}, "policy 'static': parameter target: expected a size"),
    (StaticPolicy, {"target": 1.5}, "policy 'static': parameter target: expected a size"),
    (StaticPolicy, {"interval": 0}, "policy 'static': interval must be > 0"),
    (StaticPolicy, {"interval": "fast"},
     "policy 'static': parameter interval: expected a duration"),
    (SchedulePolicy, {"steps": "5s:50%"},
     "policy 'schedule': parameter steps: expected a list of [time, target] pairs"),
    (SchedulePolicy, {"steps": [["5s"]]},
     "policy 'schedule': parameter steps[0]: expected [time, target], got ['5s']"),
    (SchedulePolicy, {"steps": [["5s", "1%"], ["soon", "2%"]]},
     "policy 'schedule': parameter steps[1][0]: expected a duration"),
    (SchedulePolicy, {"steps": [["5s", "lots"]]},
     "policy 'schedule': parameter steps[0][1]: expected a size"),
    (SchedulePolicy, {"steps": [["10s", "1%"], ["5s", "2%"]]},
     "policy 'schedule': parameter steps: times must increase"),
    (SchedulePolicy, {"steps": [["5s", "1%"], ["5s", "2%"]]},
     "policy 'schedule': parameter steps: times must increase"),
    (SchedulePolicy, {"target": "5%"},
     "policy 'schedule': unknown parameter(s) target; accepted: steps"),
])
def test_bad_parameters_name_policy_and_parameter(cls: type[HostPolicy], params: dict[str, Any],
                                                  message: str) -> None:
    """Each bad parameter is a PolicyError whose message names the policy and the parameter."""
    with pytest.raises(PolicyError) as e:
        cls(**params)
    assert str(e.value).startswith(message), str(e.value)


def test_make_policy_passes_policy_errors_through() -> None:
    """make_policy raises the policy's own PolicyError unchanged."""
    with pytest.raises(PolicyError, match=r"^policy 'static': unknown parameter\(s\) x;"):
        make_policy("static", {"x": 1})
