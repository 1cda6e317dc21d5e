"""``vballoon fuzz``: many seeds of one scenario with perturbation and faults, failures grouped.

Each seed runs in a worker process with only the in-memory flight recorder (cheap); a failing
seed is re-run with the full JSON log into the output directory (same seed, same choices, so the
same failure), and failures are grouped by the signature of their first violation: its kind and
its detail with the numbers taken out, so that one race hit at different PFNs is one group.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from actors.sim.choices import Choice
from run.lab.pool import run_all
from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import Outcome, run_session

_NUMBER = re.compile(r"(?<![A-Za-z0-9_])(0x[0-9a-f]+|\d+(\.\d+)?)")


def signature(kind: str, detail: str) -> str:
    """What makes two failures "the same": the kind and the detail without its numbers."""
    return f"{kind}: {_NUMBER.sub('N', detail)}"[:160]


def first_failure(outcome: Outcome) -> dict[str, Any] | None:
    """The run's first problem (a violation, or the crash that ended it), or None."""
    if outcome.violations:
        v = outcome.violations[0]
        return {"t": v.t, "kind": v.kind, "detail": v.detail,
                "signature": signature(v.kind, v.detail)}
    if outcome.reason != "completed":
        detail = outcome.error or outcome.reason
        return {"t": outcome.summary.get("virtual_seconds", 0.0), "kind": "crash",
                "detail": detail, "signature": signature("crash", detail.split(" at ")[0])}
    return None


def fuzz_overrides(driver: str, preempt: float, faults: bool) -> list[str]:
    """The ``--set`` overrides a fuzz run adds to the scenario (the reproduce command has them)."""
    return [f"guest.driver={driver}", f"guest.preempt={preempt}",
            f"faults.enabled={'true' if faults else 'false'}"]


@dataclass(frozen=True)
class Job:
    """One seed of the fuzzed scenario (the scenario spec and overrides cross processes)."""

    spec: str | None
    overrides: tuple[str, ...]
    seed: int


@dataclass
class SeedResult:
    """What one fuzzed seed did."""

    seed: int
    failure: dict[str, Any] | None
    violations: int
    wall: float


def flight_run(sc: scen.Scenario, seed: int, *, forced: list[Choice] | None = None,
               record: bool = False) -> Outcome:
    """How fuzz, minimise and pinned regressions run a seed: to its first violation, with
    only a small in-memory flight recorder."""
    return run_session(sc, seed=seed, recorder=FlightRecorder(capacity=64), forced=forced,
                       record=record, fail_fast=True)


def run_seed(job: Job) -> SeedResult:
    """One fuzzed seed (runs in a worker process)."""
    outcome = flight_run(scen.load(job.spec, list(job.overrides)), job.seed)
    if outcome.signal is not None:  # stopped, not finished: no result to report
        raise KeyboardInterrupt
    return SeedResult(job.seed, first_failure(outcome), len(outcome.violations),
                      outcome.summary["wall_seconds"])


@dataclass
class Group:
    """Seeds whose first violation has one signature."""

    signature: str
    kind: str
    seeds: list[int] = field(default_factory=list)
    example: dict[str, Any] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)


def reproduce_command(spec: str | None, seed: int, overrides: Sequence[str]) -> str:
    """The command that re-runs a fuzzed seed exactly (stopping at its first violation)."""
    return scen.reproduce_command(spec, seed=seed, sets=overrides, fail_fast=True)


class Campaign(NamedTuple):
    """What a fuzz campaign did: every finished seed, the failures grouped, and whether it
    was stopped (Ctrl-C, SIGTERM) before every seed ran."""

    results: list[SeedResult]
    groups: list[Group]
    interrupted: bool


def fuzz(spec: str | None, seeds: Sequence[int], overrides: Sequence[str], *, jobs: int,
         out: Path | None, progress: Callable[[SeedResult], None] | None = None) -> Campaign:
    """Run every seed; re-run failures with a full log into ``out``; group by signature.

    A KeyboardInterrupt (Ctrl-C, or a stop signal turned into one) stops the workers at once:
    the campaign returns what finished, marked interrupted, and re-runs nothing.
    """
    scen.load(spec, list(overrides))  # bad input fails here, before any process starts
    results: list[SeedResult] = []
    interrupted = False
    try:
        for result in run_all(run_seed, [Job(spec, tuple(overrides), s) for s in seeds],
                              processes=jobs):
            results.append(result)
            if progress is not None:
                progress(result)
    except KeyboardInterrupt:
        interrupted = True
    results.sort(key=lambda r: r.seed)
    groups: dict[str, Group] = {}
    for r in results:
        if r.failure is None:
            continue
        g = groups.setdefault(r.failure["signature"],
                              Group(r.failure["signature"], r.failure["kind"]))
        g.seeds.append(r.seed)
        if not g.example:
            g.example = r.failure
    if out is not None and not interrupted:
        interrupted = not _rerun_with_logs(scen.load(spec, list(overrides)), groups, out)
    return Campaign(results, sorted(groups.values(), key=lambda g: (-len(g.seeds), g.seeds[0])),
                    interrupted)


def _rerun_with_logs(sc: scen.Scenario, groups: dict[str, Group], out: Path) -> bool:
    """Re-run each failing seed with a full debug log into ``out``; False if stopped (a
    signal) before all were written (the logs written so far, each closed, stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for g in groups.values():
        for seed in g.seeds:
            path = out / f"{sc.name}-seed{seed}.jsonl"
            rerun = run_session(sc, seed=seed, log_path=path, level="debug", fail_fast=True)
            g.logs[seed] = str(path)
            if rerun.signal is not None:
                return False
    return True
