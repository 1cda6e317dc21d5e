"""Scenario loading: built-ins, overrides, and errors that name file, key and expectation."""

from pathlib import Path
from typing import Any

import pytest

from run.session import scenario as scen


def test_default_builtin_loads() -> None:
    """`default` is shipped, valid, and describes a 1 GiB guest."""
    sc = scen.load(None)
    assert sc.name == "default"
    assert sc.guest.memory == 1 << 30
    assert "default" in scen.builtin_names()


def test_overrides_apply_before_validation() -> None:
    """--set reaches nested fields, parses TOML values and unit strings alike."""
    sc = scen.load("default", ["guest.memory=2GiB", "workload.apps=2", "duration=10s",
                               "scenario.seed=9"])
    assert sc.guest.memory == 2 << 30
    assert sc.workload.apps == 2
    assert sc.duration == 10.0
    assert sc.seed == 9


def test_resolved_scenario_round_trips() -> None:
    """The resolved scenario written to the log header rebuilds the same Scenario."""
    sc = scen.load("default", ["costs.page_copy=1us"])
    assert scen.from_data(scen.to_dict(sc)) == sc


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[guest\nmemory=1", "malformed TOML"),
        ('[guest]\nmemroy = "1GiB"', "guest.memroy: unknown key (did you mean 'memory'?)"),
        ('[guest]\nmemory = "-1GiB"', "guest.memory: size must not be negative"),
        ('[guest]\nmemory = "lots"', "guest.memory: expected a size like '4GiB'"),
        ('[guest]\npage_size = "8KiB"', "guest.page_size: must be 4KiB, 16KiB or 64KiB"),
        ('[guest]\nmemory = "1MiB"', "guest.memory: guest smaller than one pageblock"),
        ('[guest]\nfallback = "v2.6"', "guest.fallback: must be one of v4.13, v3.6"),
        ('[workload]\napps = "four"', "workload.apps: expected an integer"),
        ('[workload]\nfill = 1.5', "workload.fill: must be between 0 and 1"),
        ('duration = "-5s"', "duration: duration must not be negative"),
        ("[bogus]\nx = 1", "bogus: unknown key"),
    ],
)
def test_bad_scenarios_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    """Each kind of bad input raises one ScenarioError naming the file, the key and the rule."""
    path = _write(tmp_path, text)
    with pytest.raises(scen.ScenarioError) as info:
        scen.load(path)
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith(path)


def test_unknown_builtin_suggests() -> None:
    """A misspelt built-in name gets a did-you-mean and the list of built-ins."""
    with pytest.raises(scen.ScenarioError, match="did you mean 'default'"):
        scen.load("defualt")


@pytest.mark.parametrize("item", ["noequals", "=3", "a..b=1"])
def test_bad_set_syntax(item: str) -> None:
    """--set without a key=value shape is rejected with the offending text."""
    with pytest.raises(scen.ScenarioError, match=r"expected section\.key=value"):
        scen.load("default", [item])


def test_every_builtin_is_valid() -> None:
    """Every shipped scenario loads without error and has a description."""
    for name in scen.builtin_names():
        assert scen.load(name).description


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"spec": None}, "vballoon run default"),
    ({"spec": "race", "seed": 3, "fail_fast": True, "sets": ["guest.driver=v9"]},
     "vballoon run race --seed 3 --fail-fast --set guest.driver=v9"),
    ({"spec": None, "choices": Path("c.json")}, "vballoon run --choices c.json"),
    ({"spec": "race", "choices": Path("c.json"), "seed": 1, "duration": "5s",
      "level": "debug"}, "vballoon run race --choices c.json --seed 1 --duration 5s --level debug"),
])
def test_reproduce_command_spells_only_what_differs(kwargs: dict[str, Any], expected: str
                                                    ) -> None:
    """The one reproduce builder names the scenario (or the choices file), then the options
    that differ from their defaults, in one fixed order."""
    assert scen.reproduce_command(**kwargs) == expected
