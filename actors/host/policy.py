"""Host policies: a small synchronous class that reads an immutable view and returns targets.

A policy never touches the simulator: it gets a ``HostView`` (host memory, and per guest its
RAM, target, actual and latest stats with the host time they were read) and returns balloon
targets in 4 KiB pages by guest name (``num_pages``: the balloon size, not QEMU's "logical
size"). The host wraps every policy in a safety shell (``apply_decision``): an exception or a
nonsensical answer keeps the previous target or is clamped, and the reason is logged.

Policies are found by built-in name, by ``module:attr``, by ``path/to/file.py:Class`` or via
the ``vballoon.policies`` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from actors.units import UnitError, parse_duration, parse_size


class PolicyError(ValueError):
    """A policy that cannot be loaded or configured; the message names what and where."""


@dataclass(frozen=True, slots=True)
class GuestView:
    """What the host knows about one guest (sizes in 4 KiB pages)."""

    name: str
    ram_pages: int
    target: int
    actual: int
    stats: Mapping[str, int]
    stats_time: float | None


@dataclass(frozen=True, slots=True)
class HostView:
    """The immutable input of every policy decision."""

    time: float
    total_pages: int
    free_pages: int
    guests: tuple[GuestView, ...]

    def guest(self, name: str) -> GuestView:
        for g in self.guests:
            if g.name == name:
                return g
        raise KeyError(name)


class HostPolicy:
    """Base class of host policies: subclass, set ``name``/``description``, implement decide."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    #: Accepted parameters and their defaults (strings are parsed by ``param_size``/...).
    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.params) - {"interval"})
        if unknown:
            raise PolicyError(f"policy {self.name!r}: unknown parameter(s) {', '.join(unknown)};"
                              f" accepted: {', '.join(sorted(self.params)) or 'none'}")
        self.interval = _duration(self.name, "interval", params.get("interval", 1.0))
        if self.interval <= 0:
            raise PolicyError(f"policy {self.name!r}: interval must be > 0")
        self.config = {**self.params, **{k: v for k, v in params.items() if k != "interval"}}

    def decide(self, view: HostView) -> Mapping[str, int]:
        """New balloon targets (4 KiB pages) by guest name; omitted guests keep theirs."""
        raise NotImplementedError


def _duration(policy: str, key: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except UnitError as e:
        raise PolicyError(f"policy {policy!r}: parameter {key}: {e}") from None


def balloon_pages(policy: str, key: str, value: Any, ram_pages: int) -> int:
    """A balloon size from ``"512MiB"``, ``"50%"`` (of guest RAM) or a page count (int)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise PolicyError(f"policy {policy!r}: parameter {key}: bad percentage "
                              f"{value!r}") from None
        if not 0 <= pct <= 100:
            raise PolicyError(f"policy {policy!r}: parameter {key}: {value!r} not in 0..100%")
        return int(ram_pages * Decimal(value.strip()[:-1]) / 100)  # exact: 32.3% of 1000 is 323
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PolicyError(f"policy {policy!r}: parameter {key}: page count must not be "
                              f"negative, got {value}")
        return value
    try:
        return parse_size(value) // 4096
    except UnitError as e:
        raise PolicyError(f"policy {policy!r}: parameter {key}: {e}") from None


class StaticPolicy(HostPolicy):
    """One fixed balloon target for every guest."""

    name = "static"
    description = "a fixed balloon size for every guest (target: size, % of RAM or pages)"
    params: ClassVar[dict[str, Any]] = {"target": 0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        balloon_pages(self.name, "target", self.config["target"], 1)  # validate early

    def decide(self, view: HostView) -> Mapping[str, int]:
        return {g.name: balloon_pages(self.name, "target", self.config["target"], g.ram_pages)
                for g in view.guests}


class SchedulePolicy(HostPolicy):
    """A timeline of targets: ``steps = [["5s", "50%"], ["30s", "0"]]``."""

    name = "schedule"
    description = "a timeline of balloon targets, e.g. inflate to 50% at 5s, deflate at 30s"
    params: ClassVar[dict[str, Any]] = {"steps": []}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        steps = self.config["steps"]
        if not isinstance(steps, list):
            raise PolicyError(f"policy {self.name!r}: parameter steps: expected a list of "
                              "[time, target] pairs")
        parsed: list[tuple[float, Any]] = []
        for i, step in enumerate(steps):
            if not isinstance(step, list) or len(step) != 2:
                raise PolicyError(f"policy {self.name!r}: parameter steps[{i}]: expected "
                                  f"[time, target], got {step!r}")
            at = _duration(self.name, f"steps[{i}][0]", step[0])
            balloon_pages(self.name, f"steps[{i}][1]", step[1], 1)  # validate early
            parsed.append((at, step[1]))
        if any(b <= a for (a, _), (b, _) in itertools.pairwise(parsed)):
            raise PolicyError(f"policy {self.name!r}: parameter steps: times must increase")
        self.steps = parsed

    def decide(self, view: HostView) -> Mapping[str, int]:
        current: Any = None
        for at, target in self.steps:
            if view.time + 1e-9 >= at:
                current = target
        if current is None:
            return {}
        return {g.name: balloon_pages(self.name, "target", current, g.ram_pages)
                for g in view.guests}


BUILTINS: dict[str, type[HostPolicy]] = {p.name: p for p in (StaticPolicy, SchedulePolicy)}
ENTRY_POINT_GROUP = "vballoon.policies"


def _check_class(obj: Any, where: str) -> type[HostPolicy]:
    if not (inspect.isclass(obj) and issubclass(obj, HostPolicy)):
        raise PolicyError(f"{where}: {obj!r} is not a HostPolicy subclass")
    return obj


def find_policy(spec: str) -> type[HostPolicy]:
    """Resolve a built-in name, ``module:attr``, ``file.py:Class`` or an entry point."""
    if spec in BUILTINS:
        return BUILTINS[spec]
    module_name, sep, attr = spec.rpartition(":")
    if sep and module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise PolicyError(f"policy {spec!r}: file {path} not found")
        modspec = importlib.util.spec_from_file_location(f"vballoon_policy_{path.stem}", path)
        if modspec is None or modspec.loader is None:
            raise PolicyError(f"policy {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(modspec)
        sys.modules[modspec.name] = module  # dataclasses and typing look the module up here
        try:
            modspec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(modspec.name, None)
            raise PolicyError(f"policy {spec!r}: importing {path} failed: {e}") from None
    elif sep:
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise PolicyError(f"policy {spec!r}: cannot import module {module_name!r}: {e}") \
                from None
    else:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec:
                try:
                    obj = ep.load()
                except Exception as e:
                    raise PolicyError(f"policy {spec!r}: loading entry point {ep.value!r} "
                                      f"failed: {e}") from None
                return _check_class(obj, f"entry point {ep.name!r}")
        raise PolicyError(f"unknown host policy {spec!r}; built-ins: {', '.join(BUILTINS)} "
                          "(or module:attr, path/to/file.py:Class)")
    if not hasattr(module, attr):
        raise PolicyError(f"policy {spec!r}: {module_name} has no attribute {attr!r}")
    return _check_class(getattr(module, attr), f"policy {spec!r}")


def make_policy(spec: str, params: Mapping[str, Any]) -> HostPolicy:
    """Load and configure a policy; every failure is a PolicyError naming what and where."""
    cls = find_policy(spec)
    try:
        return cls(**params)
    except PolicyError:
        raise
    except Exception as e:
        raise PolicyError(f"policy {spec!r}: bad parameters: {e}") from None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the safety shell made of a policy's answer."""

    targets: dict[str, int]
    overrides: list[str]
    error: str | None = None


def apply_decision(policy: HostPolicy, view: HostView) -> Decision:
    """Run ``policy.decide`` inside the safety shell: contain errors, clamp nonsense."""
    previous = {g.name: g.target for g in view.guests}
    try:
        answer = policy.decide(view)
    except Exception as e:  # a broken policy never stops the session
        return Decision(previous, [], f"{type(e).__name__}: {e}")
    if not isinstance(answer, Mapping):
        return Decision(previous, [], f"decide() returned {type(answer).__name__}, "
                                      "expected a mapping of guest name to target")
    targets = dict(previous)
    overrides: list[str] = []
    rams = {g.name: g.ram_pages for g in view.guests}
    for name, value in answer.items():
        if name not in rams:
            overrides.append(f"ignored target for unknown guest {name!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            overrides.append(f"{name}: target {value!r} is not a number; kept {previous[name]}")
            continue
        v = int(value)
        if v < 0:
            overrides.append(f"{name}: target {v} < 0, clamped to 0")
            v = 0
        elif v > rams[name]:
            overrides.append(f"{name}: target {v} above guest RAM, clamped to {rams[name]}")
            v = rams[name]
        targets[name] = v
    return Decision(targets, overrides)
