"""The host policy interface: a small synchronous class that reads a view and returns targets.

A policy never touches the simulator. At each tick of its interval (virtual time) the host
calls ``decide(view)`` with an immutable ``HostView`` (host memory, and per guest its RAM,
target, actual, floor and maximum, latest stats with their host time, a short history, whether
it is making progress) and gets back **balloon targets in 4 KiB pages** by guest name
(``num_pages``: the balloon size, not QEMU's "logical size"); guests it omits keep their
target. ``decide`` must be pure and synchronous apart from the policy's own state: the host
wraps it in a safety shell (``actors/host/shell.py``) that contains exceptions, bounds the work
it may do, clamps nonsense and regulates the rest, logging each override with its reason.

Parameters come from the scenario's ``[host.policy]`` table (``params``); a policy declares
them with their defaults in ``params`` and reads them in ``__init__`` with the typed readers
below, which raise ``PolicyError`` naming the policy and the parameter. Everything a policy
author needs is importable from this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from actors.host.view import MIB, GuestSample, GuestView, HostSample, HostView, hyperv_floor
from actors.sim.units import UnitError, parse_duration, parse_size

__all__ = ["MIB", "GuestSample", "GuestView", "HostPolicy", "HostSample", "HostView",
           "PolicyError", "balloon_pages", "duration_value", "hyperv_floor"]


class PolicyError(ValueError):
    """A policy that cannot be loaded or configured; the message names what and where."""


class HostPolicy:
    """Base class of host policies: subclass, set ``name``/``description``, implement decide."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    #: Accepted parameters and their defaults (read them with the typed readers in __init__).
    params: ClassVar[dict[str, Any]] = {}
    #: Virtual seconds between two decisions unless the scenario sets ``interval``.
    default_interval: ClassVar[float] = 1.0

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.params) - {"interval"})
        if unknown:
            raise PolicyError(f"policy {self.name!r}: unknown parameter(s) {', '.join(unknown)};"
                              f" accepted: {', '.join(sorted(self.params)) or 'none'}")
        self.interval = duration_value(self.name, "interval",
                                  params.get("interval", self.default_interval))
        if self.interval <= 0:
            raise PolicyError(f"policy {self.name!r}: interval must be > 0")
        self.config = {**self.params, **{k: v for k, v in params.items() if k != "interval"}}

    def decide(self, view: HostView) -> Mapping[str, int]:
        """New balloon targets (4 KiB pages) by guest name; omitted guests keep theirs."""
        raise NotImplementedError

    # -- typed parameter readers (for __init__) ---------------------------------------------------
    def _bad(self, key: str, problem: str) -> PolicyError:
        return PolicyError(f"policy {self.name!r}: parameter {key}: {problem}")

    def number(self, key: str, *, low: float = -math.inf, high: float = math.inf) -> float:
        """A finite number in [low, high]."""
        v = self.config[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self._bad(key, f"expected a number, got {v!r}")
        if not low <= v <= high:
            raise self._bad(key, f"{v!r} not in [{low:g}, {high:g}]")
        return float(v)

    def fraction(self, key: str) -> float:
        """A number in [0, 1]."""
        return self.number(key, low=0.0, high=1.0)

    def pages(self, key: str) -> int:
        """A size (``"100MiB"``) or a page count (int) in 4 KiB pages."""
        v = self.config[key]
        if isinstance(v, str) and v.strip().endswith("%"):
            raise self._bad(key, f"expected a size or a page count, got {v!r}")
        return balloon_pages(self.name, key, v, 0)

    def duration(self, key: str) -> float:
        """A duration (``"5s"``) or a number of seconds, >= 0."""
        return duration_value(self.name, key, self.config[key])


def duration_value(policy: str, key: str, value: Any) -> float:
    """A duration parameter (``"5s"`` or seconds); PolicyError names policy and key."""
    try:
        return parse_duration(value)
    except UnitError as e:
        raise PolicyError(f"policy {policy!r}: parameter {key}: {e}") from None


def balloon_pages(policy: str, key: str, value: Any, ram_pages: int) -> int:
    """A balloon size from ``"512MiB"``, ``"50%"`` (of guest RAM) or a page count (int)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1]
        try:
            pct = Decimal(text)
        except InvalidOperation:
            raise PolicyError(f"policy {policy!r}: parameter {key}: bad percentage "
                              f"{value!r}") from None
        if not pct.is_finite() or not 0 <= pct <= 100:
            raise PolicyError(f"policy {policy!r}: parameter {key}: {value!r} not in 0..100%")
        return int(ram_pages * pct / 100)  # exact: 32.3% of 1000 is 323
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PolicyError(f"policy {policy!r}: parameter {key}: page count must not be "
                              f"negative, got {value}")
        return value
    try:
        return parse_size(value) // 4096
    except UnitError as e:
        raise PolicyError(f"policy {policy!r}: parameter {key}: {e}") from None
