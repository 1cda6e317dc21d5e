"""Finding policies: built-in names, module:attr, file.py:Class, entry points; every failure
names what was looked for and where."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.host.loader import ENTRY_POINT_GROUP, find_policy, make_policy
from actors.host.policies import BUILTINS, SchedulePolicy, StaticPolicy
from actors.host.policy import HostPolicy, PolicyError
from tests.actors.host.test_policy import view

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
    assert set(BUILTINS) == {"static", "schedule", "mom", "proxmox", "squeezed", "pressure"}
    for name, cls in BUILTINS.items():
        assert cls.name == name and cls.description


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
    assert str(e.value) == (
        "unknown host policy 'nonesuch'; built-ins: static, schedule, mom, proxmox, squeezed, "
        "pressure (or module:attr, path/to/file.py:Class, or an entry point in "
        "vballoon.policies)")


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



#: (id, the policy module's source, the error; a file defining P, loaded as FILE.py:P)
EXITING: list[tuple[str, str, str]] = [
    ("sys.exit(4) at import", "import sys\nsys.exit(4)\n", "called sys.exit(4) while loading"),
    ("sys.exit() at import", "import sys\nsys.exit()\n", "called sys.exit() while loading"),
    ("sys.exit('bye')", "raise SystemExit('bye')\n", "called sys.exit('bye') while loading"),
    ("GeneratorExit at import", "raise GeneratorExit('gen')\n",
     "raised GeneratorExit while loading: gen"),
    ("BaseException at import", "raise BaseException\n", "raised BaseException while loading"),
    ("sys.exit(4) in __init__",
     "import sys\nfrom actors.host.policy import HostPolicy\n"
     "class P(HostPolicy):\n    def __init__(self, **kw):\n        sys.exit(4)\n",
     "called sys.exit(4) while loading"),
    ("message that raises",
     "class E(Exception):\n    def __str__(self):\n        raise ValueError\nraise E\n",
     ": <E>"),
]


@pytest.mark.parametrize(("source", "error"), [e[1:] for e in EXITING],
                         ids=[e[0] for e in EXITING])
def test_a_policy_that_exits_while_loading_is_a_policy_error(tmp_path: Path, source: str,
                                                               error: str) -> None:
    """sys.exit() or another BaseException in a policy's module or constructor does not end
    vballoon with the policy's code: it is a PolicyError naming the policy and what it did,
    by file path and by module:attr alike."""
    path = tmp_path / "vb_exiting_policy.py"
    path.write_text(source)
    with pytest.raises(PolicyError) as e:
        make_policy(f"{path}:P", {})
    assert str(e.value).startswith(f"policy '{path}:P'") and error in str(e.value)
    sys.modules.pop("vballoon_policy_vb_exiting_policy", None)  # imported if __init__ exited
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(PolicyError) as e:
            make_policy("vb_exiting_policy:P", {})
        assert str(e.value).startswith("policy 'vb_exiting_policy:P'") and error in str(e.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vb_exiting_policy", None)


def test_ctrl_c_while_loading_still_interrupts(tmp_path: Path) -> None:
    """KeyboardInterrupt at import is not turned into a PolicyError."""
    path = tmp_path / "interrupting.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        find_policy(f"{path}:P")
