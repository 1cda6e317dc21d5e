"""``vballoon compare``: one scenario, several drivers, several seeds, side by side.

Each (driver, seed) run is an independent session in its own process (sessions are
deterministic, so parallelism changes wall time only). The table shows, per metric, the mean
and the spread (sample standard deviation) over seeds for each driver.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from run import scenario as scen
from run.pool import run_all

#: (key, label, how to read it from a summary, higher is better?)
METRICS: list[tuple[str, str, Callable[[dict[str, Any]], float], bool | None]] = [
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


def parse_seeds(text: str) -> list[int]:
    """``5`` → seeds 0..4; ``3..7`` → 3..7 inclusive; ``1,4,9`` → those."""
    text = text.strip()
    if ".." in text:
        a, _, b = text.partition("..")
        lo, hi = int(a), int(b)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad seed range {text!r}")
        return list(range(lo, hi + 1))
    if "," in text:
        return [int(x) for x in text.split(",")]
    n = int(text)
    if n < 1:
        raise ValueError(f"need at least one seed, got {n}")
    return list(range(n))


@dataclass(frozen=True)
class Job:
    spec: str | None
    overrides: tuple[str, ...]
    driver: str
    seed: int


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    """One session (in a worker process): returns its summary."""
    from run.session import run_session

    sc = scen.load(job.spec, [*job.overrides, f"guest.driver={job.driver}"])
    return job, run_session(sc, seed=job.seed).summary


def compare(spec: str | None, drivers: Sequence[str], seeds: Sequence[int],
            overrides: Sequence[str] = (), *, jobs: int = 2,
            progress: Callable[[Job], None] | None = None) -> dict[str, Any]:
    """Run every (driver, seed) and aggregate the metrics per driver."""
    scen.load(spec, list(overrides))  # bad input fails here, before any process starts
    work = [Job(spec, tuple(overrides), d, s) for d in drivers for s in seeds]
    results: dict[str, list[dict[str, Any]]] = {d: [] for d in drivers}
    for job, summary in run_all(run_job, work, processes=jobs):
        results[job.driver].append(summary)
        if progress:
            progress(job)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, _label, read, _better in METRICS:
        table[key] = {}
        for d in drivers:
            runs = sorted(results[d], key=lambda s: s["seed"])
            values = [float(read(s)) for s in runs]
            known = [v for v in values if not math.isnan(v)]  # nan: not measured in a run
            table[key][d] = {
                "mean": statistics.fmean(known) if known else math.nan,
                "stdev": statistics.stdev(known) if len(known) > 1 else 0.0,
                "values": values,  # type: ignore[dict-item]
            }
    return {"scenario": spec or "default", "drivers": list(drivers), "seeds": list(seeds),
            "overrides": list(overrides), "metrics": table}
