"""``vballoon fuzz``: many seeds of one scenario with perturbation and faults, failures grouped.

Each seed runs in a worker process with only the in-memory flight recorder (cheap); a failing
seed is re-run with the full JSON log into the output directory (same seed, same choices, so the
same failure), and failures are grouped by the signature of their first violation: its kind and
its detail with the numbers taken out, so that one race hit at different PFNs is one group.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from actors.kernel.preempt import Pct
from actors.sim.choices import Choice
from run.lab.campaign import Store, result_line
from run.lab.campaign import groups as campaign_groups
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

    def line(self, strategy: str, revision: str | None) -> dict[str, Any]:
        """Its line in a campaign's ``results.jsonl``."""
        return result_line(self.seed, strategy, self.failure, self.violations, self.wall,
                           revision)

    @classmethod
    def from_line(cls, line: dict[str, Any]) -> SeedResult:
        failure = None
        if line["verdict"] == "fail":
            failure = {k: line.get(k) for k in ("t", "kind", "detail", "signature")}
        return cls(line["seed"], failure, line.get("violations", 0), line.get("wall", 0.0))


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
    """What a fuzz campaign did: every finished seed (a resumed campaign's earlier ones too),
    the failures grouped, whether it was stopped (Ctrl-C, SIGTERM) before every seed ran, and
    whether ``max_failures`` ended it early."""

    results: list[SeedResult]
    groups: list[Group]
    interrupted: bool
    stopped_early: bool = False


Runner = Callable[[Callable[[Job], SeedResult], list[Job]], Iterator[SeedResult]]


def fuzz(spec: str | None, seeds: Sequence[int], overrides: Sequence[str], *, jobs: int,
         out: Path | None, progress: Callable[[SeedResult], None] | None = None,
         runner: Runner | None = None, store: Store | None = None,
         max_failures: int | None = None) -> Campaign:
    """Run every seed; re-run failures with a full log into ``out``; group by signature.

    ``runner`` runs the jobs (default: the local process pool of ``jobs`` processes; ``fuzz
    --cluster`` passes a Dask one). With a campaign ``store``, each result is appended to its
    ``results.jsonl`` the moment it arrives, and the seeds it finished before count too.
    ``max_failures`` stops the campaign once that many seeds failed. A KeyboardInterrupt
    (Ctrl-C, or a stop signal turned into one) stops the workers at once: the campaign
    returns what finished, marked interrupted, and re-runs nothing.
    """
    # bad input fails here, before any process starts; the strategy is the scenario's own
    strategy = scen.load(spec, list(overrides)).guest.strategy
    if runner is None:
        def runner(fn: Callable[[Job], SeedResult], work: list[Job]) -> Iterator[SeedResult]:
            return run_all(fn, work, processes=jobs)
    results = [SeedResult.from_line(line) for line in store.done] if store else []
    failing = sum(r.failure is not None for r in results)
    interrupted = stopped_early = False
    if max_failures is not None and failing >= max_failures:
        stopped_early = True
    else:
        stream = runner(run_seed, [Job(spec, tuple(overrides), s) for s in seeds])
        try:
            for result in stream:
                results.append(result)
                if store is not None:
                    store.append(result.line(strategy, store.spec.revision))
                if progress is not None:
                    progress(result)
                failing += result.failure is not None
                if max_failures is not None and failing >= max_failures:
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops the workers (and cancels a cluster's futures) at once
    results.sort(key=lambda r: r.seed)
    groups = group_failures(results)
    if out is not None and not interrupted:
        interrupted = not _rerun_with_logs(scen.load(spec, list(overrides)), groups, out)
    return Campaign(results, groups, interrupted, stopped_early)


def group_failures(results: Sequence[SeedResult]) -> list[Group]:
    """Failing seeds by first-violation signature, most seeds first (``campaign.groups``)."""
    lines = [r.line("", None) for r in results]
    first = {r.seed: r.failure for r in results}
    return [Group(sig, kind, seeds, dict(first[seeds[0]] or {}))
            for sig, kind, seeds in campaign_groups(lines)]


def strategy_overrides(strategy: str, depth: int, steps: int) -> list[str]:
    """The ``--set`` overrides that select a strategy (none for random: its logs stay as
    they were)."""
    if strategy == "random":
        return []
    out = [f"guest.strategy={strategy}"]
    if strategy == "pct":
        out += [f"guest.depth={depth}", f"guest.steps={steps}"]
    return out


class Calibration(NamedTuple):
    """PCT's inputs measured on one run: preemption points k and kernel tasks n."""

    steps: int
    tasks: int

    def bound(self, depth: int) -> float:
        """PCT's lower bound on hitting a given bug of depth d in one run: 1/(n·k^(d-1))."""
        return 1.0 / (self.tasks * float(self.steps) ** (depth - 1))


def calibrate(spec: str | None, overrides: Sequence[str], seed: int = 0) -> Calibration:
    """One run of the scenario under PCT with no change point (depth 1), counting the
    points it passes and the tasks it ranks: the k and n of PCT's bound."""
    sc = scen.load(spec, [*overrides, *strategy_overrides("pct", 1, 1)])
    outcome = flight_run(sc, seed)
    assert outcome.session is not None
    steps = tasks = 1
    for guest in outcome.session.guests:
        p = guest.kernel.perturb
        if isinstance(p, Pct):
            steps, tasks = max(steps, p.steps), max(tasks, len(p.prio))
    return Calibration(steps, tasks)


def _rerun_with_logs(sc: scen.Scenario, groups: Sequence[Group], out: Path) -> bool:
    """Re-run each failing seed with a full debug log into ``out``; False if stopped (a
    signal) before all were written (the logs written so far, each closed, stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for g in groups:
        for seed in g.seeds:
            path = out / f"{sc.name}-seed{seed}.jsonl"
            rerun = run_session(sc, seed=seed, log_path=path, level="debug", fail_fast=True)
            g.logs[seed] = str(path)
            if rerun.signal is not None:
                return False
    return True
