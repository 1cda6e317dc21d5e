"""Choice points: the seeded perturbation and fault decisions of a session, recorded or forced.

Beyond trio's scheduler (seeded in ``run/determinism``), a session makes two kinds of random
decision: at a preemption point, whether to yield or add a small delay; at a fault site, whether
to inject a fault. Both go through one ``Choices`` object, so that a run can be

- *seeded* (the default): each decision is drawn from the session's named random streams;
- *recorded*: the same, and every decision that did something is kept as ``Choice(site, n,
  value)`` -- the ``n``-th visit of ``site`` chose ``value``;
- *forced*: decisions come from a list of choices and every other visit does nothing. Forcing
  every recorded choice of a run reproduces it exactly (the non-default decisions are the only
  ones that change anything); forcing a subset is how ``vballoon fuzz --minimise`` delta-debugs
  a failure down to the few decisions that matter.

Fault injection is FoundationDB's two-level BUGGIFY: a site is *active* in a run with probability
``activation`` (one draw per site at session start), then an active site *fires* on each visit
with its own probability. The active set is recorded in the log header.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class FaultSite:
    """One place a fault can be injected, how often it fires once active, and what it does."""

    name: str
    fire: float
    doc: str


SITES: dict[str, FaultSite] = {s.name: s for s in (
    FaultSite("alloc.fail", 0.02,
              "the allocator fails a request outright (as under a sudden memory shortage)"),
    FaultSite("host.slow", 0.05, "the device takes up to 50 ms extra over a batch of buffers"),
    FaultSite("host.stall", 0.01, "the device stalls 0.5-3 s before completing a batch"),
    FaultSite("host.drop_config", 0.2,
              "the device writes num_pages but raises no config-change interrupt"),
    FaultSite("compaction.migrate_fail", 0.1,
              "migrate_pages fails a page with -EAGAIN: retried next pass, put back after ten"),
)}


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Scenario table ``[faults]``: which fault sites may be active and how often they fire."""

    enabled: bool = field(default=False, metadata={"doc": "inject faults at all"})
    activation: float = field(default=0.5, metadata={
        "doc": "probability that each site is active in a run (BUGGIFY's first level)"})
    sites: list[str] = field(default_factory=lambda: list(SITES), metadata={
        "doc": "the sites that may be activated"})
    fire: dict[str, float] = field(default_factory=dict, metadata={
        "doc": "per-site firing probability once active (default: each site's own)"})

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not 0.0 <= self.activation <= 1.0:
            problems.append(("activation", f"must be between 0 and 1, got {self.activation}"))
        for name in [*self.sites, *self.fire]:
            if name not in SITES:
                problems.append(("sites", f"unknown fault site {name!r}; known: "
                                          f"{', '.join(SITES)}"))
        for name, p in self.fire.items():
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                problems.append((f"fire.{name}", f"must be a probability in [0, 1], got {p!r}"))
        return problems


class Choice(NamedTuple):
    """The ``n``-th visit (from 1) of choice point ``site`` decided ``value``."""

    site: str
    n: int
    value: float

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "n": self.n, "value": self.value}


def parse_choices(items: Iterable[Any], where: str) -> list[Choice]:
    """Choices from plain data (a choices file), each checked; errors name the entry."""
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and set(item) == {"site", "n", "value"}
                and isinstance(item["site"], str) and isinstance(item["n"], int)
                and item["n"] >= 1 and isinstance(item["value"], int | float)
                and not isinstance(item["value"], bool) and item["value"] >= 0):
            raise ValueError(f"{where}: choices[{i}]: expected {{site: str, n: int >= 1, "
                             f"value: number >= 0}}, got {item!r}")
        out.append(Choice(item["site"], item["n"], float(item["value"])))
    return out


class Choices:
    """The one source of perturbation and fault decisions in a session (see module doc)."""

    def __init__(self, rng: Callable[[str], random.Random], faults: FaultConfig | None = None,
                 *, forced: Iterable[Choice] | None = None, record: bool = False) -> None:
        faults = FaultConfig() if faults is None else faults
        self.forced: dict[tuple[str, int], float] | None = (
            None if forced is None else {(c.site, c.n): c.value for c in forced})
        #: Every choice point must be visited (counted), to record or to force.
        self.recording = record or self.forced is not None
        #: Every decision that did something, in the order made (recording or forcing).
        self.recorded: list[Choice] = []
        self._visits: dict[str, int] = {}
        self._fault_rng = rng("faults")
        #: Active fault sites and their firing probabilities (the header records this).
        self.active: dict[str, float] = {}
        if self.forced is not None:
            forced_sites = {s.split(":", 1)[-1] for s, _ in self.forced}
            self.active = {s: 1.0 for s in SITES if s in forced_sites}
        elif faults.enabled:
            activate = rng("faults.activate")
            for name in SITES:  # a fixed order keeps the draws aligned across runs
                drawn = activate.random()
                if name in faults.sites and drawn < faults.activation:
                    self.active[name] = faults.fire.get(name, SITES[name].fire)

    def visit(self, site: str) -> int:
        """Count one visit of ``site``; the count keys recorded and forced choices."""
        n = self._visits.get(site, 0) + 1
        self._visits[site] = n
        return n

    def decide(self, site: str, drawn: Callable[[], float | None], where: str = ""
               ) -> float | None:
        """The decision at ``site`` (keyed ``where:site`` when ``where`` is given): forced, or
        ``drawn()`` (recorded when it does something). The key is only built when it is
        needed, to record or to force: most runs do neither, at millions of points."""
        if not self.recording:
            return drawn()
        if where:
            site = f"{where}:{site}"
        n = self.visit(site)
        if self.forced is not None:
            value = self.forced.get((site, n))
            if value is not None:
                self.recorded.append(Choice(site, n, value))
            return value
        value = drawn()
        if value is not None:
            self.recorded.append(Choice(site, n, value))
        return value

    def fault(self, site: str, where: str = "") -> float | None:
        """None, or a magnitude in [0, 1) if the fault at ``site`` fires on this visit."""
        p = self.active.get(site)
        if p is None:
            return None
        if not self.recording:  # decide()'s own shortcut, without a partial per visit
            return self._fire(p)
        return self.decide(site, functools.partial(self._fire, p), where)

    def _fire(self, p: float) -> float | None:
        """One draw of the fault stream: a magnitude in [0, 1) with probability ``p``."""
        r = self._fault_rng.random()
        return r / p if r < p else None

    def header(self) -> dict[str, Any]:
        """What the log header records: active sites, and the forced choices if any."""
        out: dict[str, Any] = {"active": dict(self.active)}
        if self.forced is not None:
            out["forced"] = [Choice(s, n, v).as_dict() for (s, n), v in self.forced.items()]
        return out


def forced_choices(data: Mapping[str, Any] | None) -> list[Choice] | None:
    """The forced choices a log header recorded (None: the run was seeded, not forced)."""
    if not data or "forced" not in data:
        return None
    return parse_choices(data["forced"], "header faults.forced")
