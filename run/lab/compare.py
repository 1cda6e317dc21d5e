"""Side-by-side runs: one scenario, several variants, several seeds (``vballoon compare``
for drivers, ``vballoon policies compare`` for host policies).

A variant is a label and the scenario overrides that make it (``guest.driver=legacy``,
``host.policy.name=mom``...). Each (variant, seed) run is an independent session in its own
process (sessions are deterministic, so parallelism changes wall time only). The table shows,
per metric, the mean and the spread (sample standard deviation) over seeds for each variant.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from run.lab.pool import run_all
from run.session import scenario as scen

Metric = tuple[str, str, Callable[[dict[str, Any]], float], bool | None]

#: Driver metrics: (key, label, how to read it from a summary, higher is better?)
METRICS: list[Metric] = [
    ("order9_before", "free order-9 blocks before (1st pass)",
     lambda s: _first_pass(s, "free_order9_before"), True),
    ("frag9_before", "fragmentation index order 9 before",
     lambda s: _first_pass(s, "frag9_before") / 1000, None),
    ("order9_after", "free order-9 blocks at the end", lambda s: s["free_order9_blocks"],
     True),
    ("order9_compacted", "free order-9 blocks after compact_memory",
     lambda s: _or_nan(s["compaction"]["free_order9_after_compact_memory"]), True),
    ("frag9_after", "fragmentation index order 9 after",
     lambda s: s["fragmentation_index"] / 1000, None),
    ("thp_success", "THP fault success rate", lambda s: s["thp"]["success_rate"], True),
    ("highorder_success", "high-order allocation success rate",
     lambda s: s["highorder"]["success_rate"], True),
    ("balloon_migrated", "balloon pages migrated", lambda s: s["vmstat"]["balloon_migrate"],
     None),
    ("compact_stall", "compaction stalls", lambda s: s["vmstat"]["compact_stall"], None),
    ("compact_success", "compaction successes", lambda s: s["vmstat"]["compact_success"],
     None),
    ("compact_fail", "compaction failures", lambda s: s["vmstat"]["compact_fail"], None),
    ("violations", "violations", lambda s: len(s["violations"]), False),
    ("wall_seconds", "wall time (s)", lambda s: s["wall_seconds"], None),
    ("virtual_seconds", "virtual time (s)", lambda s: s["virtual_seconds"], None),
]


def _or_nan(value: float) -> float:
    return float("nan") if value < 0 else float(value)


def _first_pass(s: dict[str, Any], key: str) -> float:
    passes = s["highorder"]["passes"]
    return float(passes[0].get(key, 0)) if passes else float("nan")


def _guests(s: dict[str, Any], read: Callable[[dict[str, Any]], float]) -> float:
    """A guest-side figure summed over every guest of the run."""
    return float(sum(read(g) for g in s["guests"].values()))


def _score(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda s: float(s["host"]["score"][key])


#: Policy metrics: host memory the balloons saved, what the guests suffered for it, and how
#: the policy moved the targets.
POLICY_METRICS: list[Metric] = [
    ("ballooned", "balloons, mean size (MiB)", _score("ballooned_mib_avg"), None),
    ("saved", "host RSS saved, mean (MiB)", _score("saved_mib_avg"), True),
    ("free_avg", "host free, mean (MiB)", _score("free_mib_avg"), True),
    ("free_min", "host free, lowest (MiB)", _score("free_mib_min"), True),
    ("overcommitted", "host overcommitted (s)", _score("overcommitted_seconds"), False),
    ("low_memory", "guests below low wmark (s)",
     lambda s: _guests(s, lambda g: g["guest"]["low_memory_seconds"]), False),
    ("alloc_failures", "guest allocation failures",
     lambda s: _guests(s, lambda g: g["guest"]["allocation_pressure"]), False),
    ("thp_fallback", "guest THP fallbacks",
     lambda s: _guests(s, lambda g: g["vmstat"]["thp_fault_fallback"]), False),
    ("below_floor", "guests below floor (s)", _score("below_floor_seconds"), False),
    ("target_changes", "target changes", _score("target_changes"), None),
    ("churn", "target churn (MiB)", _score("churn_mib"), False),
    ("reversals", "oscillations (reversals)", _score("reversals"), False),
    ("settle", "time to reach target (s)",
     lambda s: s["host"]["score"]["settle_seconds_mean"]
     if s["host"]["score"]["target_changes"] else math.nan, False),
    ("unreached", "targets never reached", _score("targets_unreached"), False),
    ("stalls", "stalls detected", _score("stalls"), False),
    ("overrides", "shell overrides",
     lambda s: float(sum(s["host"]["overrides"].values())), None),
    ("policy_failures", "policy errors + violations",
     lambda s: float(s["host"]["policy_errors"] + sum(s["host"]["policy_violations"].values())),
     False),
    ("violations", "run violations", lambda s: len(s["violations"]), False),
    ("wall_seconds", "wall time (s)", lambda s: s["wall_seconds"], None),
]


#: The most seeds one --seeds names, and the largest seed (a signed 64-bit value).
MAX_SEEDS = 10**6
MAX_SEED = (1 << 63) - 1


def parse_seeds(text: str) -> list[int]:
    """``5`` → seeds 0..4; ``3..7`` → 3..7 inclusive; ``1,4,9`` → those. Errors say why."""
    text = text.strip()
    if ".." in text:
        a, _, b = text.partition("..")
        lo, hi = int(a), int(b)
        if hi < lo:
            raise ValueError(f"range ends at {hi}, before it starts at {lo}")
        if hi - lo >= MAX_SEEDS:
            raise ValueError(f"{hi - lo + 1} seeds; a campaign runs at most {MAX_SEEDS}")
        seeds = list(range(lo, hi + 1))
    elif "," in text:
        seeds = [int(x) for x in text.split(",")]
    else:
        n = int(text)
        if n < 1:
            raise ValueError(f"need at least one seed, got {n}")
        if n > MAX_SEEDS:
            raise ValueError(f"{n} seeds; a campaign runs at most {MAX_SEEDS}")
        return list(range(n))
    if (low := min(seeds)) < 0:
        raise ValueError(f"seed {low} is negative (seeds are >= 0)")
    if (high := max(seeds)) > MAX_SEED:
        raise ValueError(f"seed {high} does not fit in 63 bits")
    return seeds


@dataclass(frozen=True)
class Job:
    spec: str | None
    overrides: tuple[str, ...]  # the user's, then the variant's (the variant wins)
    variant: str
    seed: int


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    """One session (in a worker process): returns its summary."""
    from run.session.session import run_session

    outcome = run_session(scen.load(job.spec, list(job.overrides)), seed=job.seed)
    if outcome.signal is not None:  # stopped, not finished: no result to report
        raise KeyboardInterrupt
    return job, outcome.summary


def compare(spec: str | None, variants: Mapping[str, Sequence[str]], seeds: Sequence[int],
            overrides: Sequence[str] = (), *, metrics: Sequence[Metric] = METRICS,
            kind: str = "drivers", jobs: int = 2,
            progress: Callable[[Job], None] | None = None) -> dict[str, Any]:
    """Run every (variant, seed) and aggregate ``metrics`` per variant; the variants' labels
    are listed under ``kind`` in the result. A KeyboardInterrupt stops the workers and the
    result aggregates the runs that finished (``interrupted``; ``runs`` per variant)."""
    for settings in variants.values():  # bad input fails here, before any process starts
        scen.load(spec, [*overrides, *settings])
    work = [Job(spec, (*overrides, *settings), v, s)
            for v, settings in variants.items() for s in seeds]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    interrupted = False
    try:
        for job, summary in run_all(run_job, work, processes=jobs):
            results[job.variant].append(summary)
            if progress:
                progress(job)
    except KeyboardInterrupt:  # the workers are stopped: aggregate what finished
        interrupted = True
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, _label, read, _better in metrics:
        table[key] = {}
        for v in variants:
            runs = sorted(results[v], key=lambda s: s["seed"])
            values = [float(read(s)) for s in runs]
            known = [x for x in values if not math.isnan(x)]  # nan: not measured in a run
            table[key][v] = {
                "mean": statistics.fmean(known) if known else math.nan,
                "stdev": statistics.stdev(known) if len(known) > 1 else 0.0,
                "values": values,  # type: ignore[dict-item]
            }
    return {"scenario": spec or "default", kind: list(variants), "seeds": list(seeds),
            "overrides": list(overrides), "metrics": table, "interrupted": interrupted,
            "runs": {v: len(results[v]) for v in variants}}


def mean_spread(mean: float, stdev: float) -> str:
    """A table cell: mean ± sample standard deviation (n/a when no run measured it)."""
    if mean != mean:  # nan: the scenario does not measure it
        return "n/a"
    return f"{mean:.3f} ± {stdev:.3f}" if abs(mean) < 10 else f"{mean:.1f} ± {stdev:.1f}"


def table(result: dict[str, Any], labels: Sequence[str], metrics: Sequence[Metric],
          title: str) -> Table:
    """The comparison as one rich table: a row per metric, a column per variant."""
    out = Table(title=title, title_justify="left")
    out.add_column("metric")
    for label in labels:
        out.add_column(label, justify="right")
    for key, label, _read, _better in metrics:
        row = result["metrics"][key]
        out.add_row(label, *(mean_spread(row[v]["mean"], row[v]["stdev"]) for v in labels))
    return out
