"""Scenarios: TOML files describing a session, validated strictly into frozen dataclasses.

Every table maps onto a dataclass; field metadata says whether a value is a size (``"4GiB"``)
or a duration (``"30s"``). Unknown keys are errors with a did-you-mean, every error names the
file, the key path and what was expected. ``--set section.key=value`` overrides any field
before validation (``guests.NAME.key`` or ``guests.INDEX.key`` reaches one ``[[guests]]``
entry). Built-in scenarios ship in ``run/scenarios/*.toml``.

Guests: a scenario runs one guest, ``guest0``, described by ``[guest]`` and ``[workload]``,
or several, one per ``[[guests]]`` entry. Each entry has a ``name`` and any ``[guest]`` key,
a ``workload`` table and the host's per-guest limits (``min_memory``, ``max_memory``,
``shares``); whatever an entry leaves out comes from ``[guest]`` and ``[workload]``, which
then act as defaults for every guest. ``Scenario.guest_specs()`` is the one list both forms
resolve to.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from actors.guest.config import GuestConfig
from actors.guest.mm.compaction import CompactionConfig
from actors.guest.workload import WorkloadConfig
from actors.host.host import HostConfig
from actors.sim.choices import FaultConfig
from actors.sim.costs import CostModel
from actors.sim.units import UnitError, parse_duration, parse_size
from run.session.commands import Action, Command, CommandError, parse_command, parse_do

#: The largest integer a scenario holds (a signed 64-bit value, as every log reader can).
MAX_INT = (1 << 63) - 1
#: The longest session: 10^6 virtual seconds (11.6 days) always ends in reasonable time.
MAX_DURATION = 1e6


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names file, key path and expectation."""


_GUEST_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
#: Scenario names become file names (fuzz logs, minimised choices): no path separators.
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class GuestSpec(GuestConfig):
    """One guest of a session: its shape (every ``[guest]`` key), workload and host limits."""

    name: str = field(default="guest0", metadata={"doc": "names its log actors and streams"})
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    min_memory: int = field(default=0, metadata={
        "unit": "size", "doc": "least memory the host leaves it (0: the shell's floor rule)"})
    max_memory: int = field(default=0, metadata={
        "unit": "size", "doc": "most memory a policy should give it (0: its RAM)"})
    shares: int = field(default=1000, metadata={
        "doc": "its weight when memory is shared out (Proxmox shares; 0: not auto-ballooned)"})

    def validate(self) -> list[tuple[str, str]]:
        problems = GuestConfig.validate(self)
        if not _GUEST_NAME.fullmatch(self.name):
            problems.append(("name", f"{self.name!r}: use a letter then letters, digits, _ or "
                                     "- (at most 32)"))
        for key in ("min_memory", "max_memory"):
            v = getattr(self, key)
            if v < 0 or v > self.memory:
                problems.append((key, f"must be between 0 and the guest's memory "
                                      f"({self.memory} bytes), got {v}"))
        if self.max_memory and self.max_memory < self.min_memory:
            problems.append(("max_memory", "must be >= min_memory"))
        if self.shares < 0:
            problems.append(("shares", "must be >= 0"))
        return problems


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole session description, resolved (every default filled in)."""

    name: str = "unnamed"
    description: str = ""
    duration: float = field(default=60.0, metadata={"unit": "duration"})
    seed: int = 0
    snapshot_interval: float = field(default=5.0, metadata={"unit": "duration"})
    guest: GuestConfig = field(default_factory=GuestConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    host: HostConfig = field(default_factory=HostConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    costs: CostModel = field(default_factory=CostModel)
    faults: FaultConfig = field(default_factory=FaultConfig)
    guests: list[GuestSpec] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list, metadata={
        "doc": "commands applied at their virtual times (run.session.commands)"})

    def guest_specs(self) -> list[GuestSpec]:
        """Every guest of the session: the ``[[guests]]`` entries, else ``guest0``."""
        if self.guests:
            return list(self.guests)
        shape = {f.name: getattr(self.guest, f.name) for f in dataclasses.fields(GuestConfig)}
        return [GuestSpec(**shape, name="guest0", workload=self.workload)]

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not _SCENARIO_NAME.fullmatch(self.name):
            problems.append(("name", f"{self.name!r}: use a letter or digit, then letters, "
                                     "digits, '.', '_' or '-' (at most 64; it names files)"))
        names = [g.name for g in self.guests]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(("guests", f"guest name {name!r} used more than once"))
        if not 0 < self.duration <= MAX_DURATION:
            problems.append(("duration", f"must be > 0 and at most {MAX_DURATION:g} s, got "
                                         f"{self.duration:g}"))
        if self.snapshot_interval <= 0:
            problems.append(("snapshot_interval", "must be > 0"))
        if self.seed < 0:
            problems.append(("seed", "must be >= 0"))
        problems += self._action_problems()
        return problems

    def _action_problems(self) -> list[tuple[str, str]]:
        """Each action parses, names a guest of this session, and falls within the run."""
        specs = {g.name: g for g in self.guest_specs()}
        problems = []
        for i, action in enumerate(self.actions):
            if action.at > self.duration:
                problems.append((f"actions[{i}].at", f"{action.at:g} s is after the session's "
                                                     f"end ({self.duration:g} s)"))
            try:
                command = parse_command(action.do, list(specs))
            except CommandError as e:
                problems.append((f"actions[{i}].do", str(e)))
                continue
            if command.verb in ("balloon", "unplug") and not specs[command.guest].balloon:
                problems.append((f"actions[{i}].do", f"{command.guest} loads no balloon "
                                                     f"driver (balloon = false)"))
        return problems

    def commands(self) -> list[tuple[Action, Command]]:
        """The actions with their parsed commands, in the order they take effect."""
        names = [g.name for g in self.guest_specs()]
        ordered = sorted(enumerate(self.actions), key=lambda ia: (ia[1].at, ia[0]))
        return [(a, parse_command(a.do, names)) for _, a in ordered]


# -- building dataclasses from plain data --------------------------------------------------------

def _convert(value: Any, tp: Any, unit: str | None, where: str) -> Any:
    if unit == "size":
        return parse_size(value)
    if unit == "duration":
        return parse_duration(value)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: expected a table, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ScenarioError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where}: expected an integer, got {value!r}")
        if not -MAX_INT <= value <= MAX_INT:
            raise ScenarioError(f"{where}: {value} does not fit in 63 bits")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ScenarioError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: expected a list, got {value!r}")
        items = [_convert(v, item_tp, None, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, unit, where)
            except ScenarioError as e:
                errors.append(str(e))
        raise ScenarioError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: expected a table, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ScenarioError(f"{where}: unsupported field type {tp!r}")


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScenarioError(f"{path}: unknown key{hint}; "
                                f"expected one of: {', '.join(sorted(fields))}")
        f = fields[key]
        try:
            kwargs[key] = _convert(value, hints[key], f.metadata.get("unit"), path)
        except UnitError as e:
            raise ScenarioError(f"{path}: {e}") from None
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for key, problem in validate():
            raise ScenarioError(f"{where + '.' if where else ''}{key}: {problem}")
    return obj


def with_actions(scenario: Scenario, texts: Sequence[str]) -> Scenario:
    """``scenario`` with ``--do "TIME: COMMAND"`` actions added after its own, checked as a
    scenario's are (ScenarioError names the one at fault)."""
    added = []
    for text in texts:
        try:
            added.append(parse_do(text))
        except CommandError as e:
            raise ScenarioError(str(e)) from None
    out = dataclasses.replace(scenario, actions=[*scenario.actions, *added])
    for key, problem in out.validate():
        if key.startswith("actions["):
            i = int(key[len("actions["):key.index("]")])
            if i >= len(scenario.actions):
                raise ScenarioError(f"--do {texts[i - len(scenario.actions)]!r}: {problem}")
        raise ScenarioError(f"{key}: {problem}")
    return out


def to_dict(obj: Any) -> Any:
    """The resolved scenario as plain data (what the log header records)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# -- overrides ---------------------------------------------------------------------------------

def _parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (number, bool, string, array), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments to nested scenario data (a copy is returned)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ScenarioError(f"--set {item!r}: expected section.key=value")
        parts = key.split(".")
        if parts[0] == "scenario" and len(parts) > 1:
            parts = parts[1:]  # [scenario] keys live at the top level once flattened
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):  # a [[guests]] entry, by index or by name
                node = _entry(node, part, item, ".".join(parts[:i]))
                continue
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict | list):
                raise ScenarioError(f"--set {item!r}: {part} is not a table")
            node = nxt
        if isinstance(node, list):
            raise ScenarioError(f"--set {item!r}: {'.'.join(parts)} names an array entry, "
                                "not a key")
        node[parts[-1]] = _parse_value(text.strip())
    return data


def _entry(entries: list[Any], part: str, item: str, where: str) -> dict[str, Any]:
    """The array-of-tables entry ``part`` names (an index, or the value of its ``name``)."""
    for i, e in enumerate(entries):
        if isinstance(e, dict) and (part == str(i) or e.get("name") == part):
            return e
    names = [str(e.get("name")) for e in entries if isinstance(e, dict)]
    raise ScenarioError(f"--set {item!r}: {where} has no entry {part!r}; entries: "
                        f"{', '.join(names) or 'none'} (or an index 0..{len(entries) - 1})")


# -- loading -----------------------------------------------------------------------------------

def builtin_names() -> list[str]:
    """Names of the scenarios shipped with the package."""
    root = resources.files("run.session") / "scenarios"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def builtin_text(name: str) -> str:
    """The TOML text of built-in scenario ``name``."""
    return (resources.files("run.session") / "scenarios" / f"{name}.toml").read_text()


def _merge_guest_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill each ``[[guests]]`` entry from ``[guest]`` and ``[workload]`` (its defaults)."""
    entries = data.get("guests")
    if entries is None:
        return data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ScenarioError("guests: expected an array of tables ([[guests]] entries)")
    shape, work = data.get("guest", {}), data.get("workload", {})
    if not isinstance(shape, dict) or not isinstance(work, dict):
        return data  # _build reports the bad table by its key
    merged = []
    for i, e in enumerate(entries):
        if "name" not in e:
            raise ScenarioError(f"guests[{i}]: every [[guests]] entry needs a name")
        w = e.get("workload", {})
        if not isinstance(w, dict):
            raise ScenarioError(f"guests[{i}].workload: expected a table, got {w!r}")
        merged.append({**shape, **e, "workload": {**work, **w}})
    return {**data, "guests": merged}


def from_data(data: dict[str, Any], source: str = "<data>") -> Scenario:
    """Validate plain data (parsed TOML or a log header's scenario) into a Scenario."""
    try:
        scenario: Scenario = _build(Scenario, _merge_guest_defaults(_flatten_top(data)), "")
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None
    return scenario


def _flatten_top(data: dict[str, Any]) -> dict[str, Any]:
    """Accept top-level scalars either bare or under a ``[scenario]`` table."""
    data = dict(data)
    top = data.pop("scenario", None)
    if top is not None:
        if not isinstance(top, dict):
            raise ScenarioError("scenario: expected a table")
        for k, v in top.items():
            if k in data:
                raise ScenarioError(f"scenario.{k}: also given at top level")
            data[k] = v
    return data


def load(spec: str | None, overrides: list[str] | None = None) -> Scenario:
    """Load a scenario by built-in name or path (``None`` → ``default``), then apply overrides."""
    spec = spec or "default"
    path = Path(spec)
    if spec in builtin_names() and not path.exists():
        source, text = f"built-in scenario {spec!r}", builtin_text(spec)
    elif path.exists():
        source = str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ScenarioError(f"{path}: cannot read: {e}") from None
    else:
        close = difflib.get_close_matches(spec, builtin_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ScenarioError(f"{spec}: no such file or built-in scenario{hint}; "
                            f"built-ins: {', '.join(builtin_names())}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: malformed TOML: {e}") from None
    try:
        data = apply_overrides(_flatten_top(data), overrides or [])
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None
    return from_data(data, source)


def reproduce_command(spec: str | None, *, seed: int | None = None,
                      choices: Path | None = None, sets: Sequence[str] = (),
                      duration: str | None = None, level: str = "info",
                      fail_fast: bool = False) -> str:
    """The ``vballoon run`` command line that re-runs a session exactly (the one builder).

    ``spec`` is the scenario as the user named it (None: the default, or the choices file's
    when ``choices`` is given); every option is spelled only when it differs from the default.
    """
    parts = ["vballoon run"]
    if spec is not None or choices is None:
        parts.append(spec or "default")
    if choices is not None:
        parts.append(f"--choices {choices}")
    if seed is not None:
        parts.append(f"--seed {seed}")
    if fail_fast:
        parts.append("--fail-fast")
    parts += [f"--set {s}" for s in sets]
    if duration:
        parts.append(f"--duration {duration}")
    if level != "info":
        parts.append(f"--level {level}")
    return " ".join(parts)
