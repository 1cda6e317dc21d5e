"""Host policies: built-ins on hand-computed cases, validation, the safety shell, loading."""

from __future__ import annotations

import importlib.metadata
import math
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from actors.host.policy import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    GuestView,
    HostPolicy,
    HostView,
    PolicyError,
    SchedulePolicy,
    StaticPolicy,
    apply_decision,
    balloon_pages,
    find_policy,
    make_policy,
)

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


# -- the safety shell -------------------------------------------------------------------------


class Answer(HostPolicy):
    """A test policy that returns (or raises) whatever it was built with."""

    name = "answer"
    answer: Any = None

    def decide(self, view: HostView) -> Mapping[str, int]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer  # type: ignore[no-any-return]


def shell(answer: Any, **guests: tuple[int, int]) -> tuple[dict[str, int], list[str], str | None]:
    """What apply_decision makes of ``answer`` for these guests."""
    p = Answer()
    p.answer = answer
    d = apply_decision(p, view(**guests))
    return d.targets, d.overrides, d.error


def test_shell_passes_sane_targets_and_keeps_omitted_guests() -> None:
    """In-range targets pass unchanged; guests the policy omits keep their target."""
    assert shell({"a": 100}, a=(1000, 5), b=(1000, 7)) == ({"a": 100, "b": 7}, [], None)
    assert shell({"a": 12.9}, a=(1000, 5)) == ({"a": 12}, [], None)
    assert shell({"a": 1000}, a=(1000, 5)) == ({"a": 1000}, [], None)


def test_shell_contains_a_raising_policy() -> None:
    """A policy that raises keeps every previous target and returns the error text."""
    targets, overrides, error = shell(ZeroDivisionError("division by zero"),
                                      a=(1000, 5), b=(1000, 7))
    assert targets == {"a": 5, "b": 7}
    assert overrides == []
    assert error == "ZeroDivisionError: division by zero"


def test_shell_clamps_negative_to_zero() -> None:
    """A negative target becomes 0 and the override says so."""
    assert shell({"a": -3}, a=(1000, 5)) == ({"a": 0}, ["a: target -3 < 0, clamped to 0"], None)


def test_shell_clamps_above_ram() -> None:
    """A target above guest RAM becomes the RAM size and the override says so."""
    assert shell({"a": 5000}, a=(1000, 5)) == (
        {"a": 1000}, ["a: target 5000 above guest RAM, clamped to 1000"], None)


def test_shell_ignores_unknown_guests() -> None:
    """A target for a guest the host does not run is dropped with a message."""
    assert shell({"zz": 10, "a": 1}, a=(1000, 5)) == (
        {"a": 1}, ["ignored target for unknown guest 'zz'"], None)


@pytest.mark.parametrize("value", ["100", None, True, [1], math.nan, math.inf, -math.inf])
def test_shell_keeps_target_for_non_numbers(value: object) -> None:
    """A target that is not a finite number keeps the previous one, with a message."""
    targets, overrides, error = shell({"a": value}, a=(1000, 5))
    assert (targets, error) == ({"a": 5}, None)
    assert overrides == [f"a: target {value!r} is not a number; kept 5"]


@pytest.mark.parametrize("answer", [[("a", 1)], 3, None, "a=1"])
def test_shell_rejects_a_non_mapping(answer: object) -> None:
    """A decide() that returns no mapping is an error that keeps every previous target."""
    targets, overrides, error = shell(answer, a=(1000, 5))
    assert (targets, overrides) == ({"a": 5}, [])
    assert error == (f"decide() returned {type(answer).__name__}, expected a mapping of guest "
                     "name to target")


# -- loading ----------------------------------------------------------------------------------

POLICY_SOURCE = """
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from actors.host.policy import HostPolicy


@dataclass
class Knobs:
    step: int = 1


class Halver(HostPolicy):
    name = "halver"
    params: ClassVar[dict[str, Any]] = {"divisor": 2}

    def decide(self, view):
        return {g.name: g.ram_pages // self.config["divisor"] for g in view.guests}


class Picky(HostPolicy):
    name = "picky"

    def __init__(self, **params):
        raise ValueError("needs a knob")


class NotAPolicy:
    pass


not_a_class = 42
"""


@pytest.fixture
def policy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module ``vb_test_policies`` on sys.path, forgotten afterwards."""
    (tmp_path / "vb_test_policies.py").write_text(POLICY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "vb_test_policies"
    sys.modules.pop("vb_test_policies", None)


@pytest.fixture
def policy_file(tmp_path: Path) -> Iterator[Path]:
    """A policy file outside sys.path, loaded by path."""
    path = tmp_path / "my_policies.py"
    path.write_text(POLICY_SOURCE)
    yield path
    sys.modules.pop("vballoon_policy_my_policies", None)


def test_find_builtin_by_name() -> None:
    """Built-in names resolve to the built-in classes."""
    assert find_policy("static") is StaticPolicy
    assert find_policy("schedule") is SchedulePolicy
    assert set(BUILTINS) == {"static", "schedule"}


def test_load_module_attr(policy_module: str) -> None:
    """``module:attr`` imports the module and configures the class with its parameters."""
    cls = find_policy(f"{policy_module}:Halver")
    assert cls.__name__ == "Halver" and issubclass(cls, HostPolicy)
    p = make_policy(f"{policy_module}:Halver", {"divisor": 4})
    assert dict(p.decide(view(a=(1000, 0)))) == {"a": 250}


def test_load_file_path_class(policy_file: Path) -> None:
    """``path/to/file.py:Class`` loads a file that uses dataclasses and postponed annotations."""
    p = make_policy(f"{policy_file}:Halver", {})
    assert dict(p.decide(view(a=(1000, 0)))) == {"a": 500}


def test_load_file_not_found(tmp_path: Path) -> None:
    """A missing policy file is named in the error."""
    missing = tmp_path / "nope.py"
    with pytest.raises(PolicyError, match=re.escape(f"policy '{missing}:X': file {missing} "
                                                    "not found")):
        find_policy(f"{missing}:X")


def test_load_file_that_fails_to_import(tmp_path: Path) -> None:
    """A policy file that raises on import is a PolicyError naming the file and the error."""
    bad = tmp_path / "broken_policy.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(PolicyError) as e:
        find_policy(f"{bad}:Cls")
    assert str(e.value) == f"policy '{bad}:Cls': importing {bad} failed: boom at import"
    assert "vballoon_policy_broken_policy" not in sys.modules


def test_load_bad_module() -> None:
    """An unimportable module is named in the error."""
    with pytest.raises(PolicyError) as e:
        find_policy("no_such_module_vb:Policy")
    assert str(e.value).startswith(
        "policy 'no_such_module_vb:Policy': cannot import module 'no_such_module_vb': ")


def test_load_missing_attribute(policy_module: str) -> None:
    """A module without the attribute names the module and the attribute looked for."""
    with pytest.raises(PolicyError) as e:
        find_policy(f"{policy_module}:Nope")
    assert str(e.value) == (f"policy '{policy_module}:Nope': {policy_module} has no attribute "
                            "'Nope'")


@pytest.mark.parametrize("attr", ["NotAPolicy", "not_a_class"])
def test_load_non_policy(policy_module: str, attr: str) -> None:
    """An attribute that is not a HostPolicy subclass is refused, naming the spec."""
    with pytest.raises(PolicyError, match=rf"^policy '{policy_module}:{attr}': .* is not a "
                                          "HostPolicy subclass$"):
        find_policy(f"{policy_module}:{attr}")


def test_load_unknown_name() -> None:
    """An unknown bare name lists the built-ins and the other spellings."""
    with pytest.raises(PolicyError) as e:
        find_policy("nonesuch")
    assert str(e.value) == ("unknown host policy 'nonesuch'; built-ins: static, schedule "
                            "(or module:attr, path/to/file.py:Class)")


def test_make_policy_wraps_constructor_errors(policy_module: str) -> None:
    """A third-party constructor's exception becomes a PolicyError naming the spec."""
    with pytest.raises(PolicyError) as e:
        make_policy(f"{policy_module}:Picky", {})
    assert str(e.value) == f"policy '{policy_module}:Picky': bad parameters: needs a knob"


def _entry_points(*eps: importlib.metadata.EntryPoint) -> Any:
    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return [ep for ep in eps if ep.group == group]
    return entry_points


def test_load_entry_point(policy_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name registered in the vballoon.policies group loads its class."""
    ep = importlib.metadata.EntryPoint("halver", f"{policy_module}:Halver", ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(ep))
    assert find_policy("halver").__name__ == "Halver"


def test_load_broken_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point whose module cannot be imported is a PolicyError naming its target."""
    ep = importlib.metadata.EntryPoint("ghost", "no_such_module_vb:Ghost", ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(ep))
    with pytest.raises(PolicyError) as e:
        find_policy("ghost")
    assert str(e.value).startswith(
        "policy 'ghost': loading entry point 'no_such_module_vb:Ghost' failed: ")


def test_entry_point_that_is_not_a_policy(policy_module: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point naming a non-policy is refused, naming the entry point."""
    ep = importlib.metadata.EntryPoint("np", f"{policy_module}:NotAPolicy", ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points(ep))
    with pytest.raises(PolicyError, match=r"^entry point 'np': .* is not a HostPolicy subclass$"):
        find_policy("np")

