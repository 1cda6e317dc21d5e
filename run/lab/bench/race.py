"""The race tools: fuzzing throughput and what the seeded scheduler costs."""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any

from run.lab.bench.common import Result
from run.session import determinism
from run.session import scenario as scen
from run.session.session import run_session


def bench_fuzz(quick: bool) -> Result:
    """Seeds per wall second of `vballoon fuzz race --driver fixed --jobs 2` (perturbation
    and faults on; process start-up included), and of the same seeds without the scenario's
    compaction workers: what the rest of the session (workload, balloon, host) costs alone."""
    from run.lab.fuzz import fuzz, fuzz_overrides

    n = 8 if quick else 40

    def rate(extra: list[str]) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        results = fuzz("race", list(range(n)), [*fuzz_overrides("fixed", 0.05, True),
                                                   *extra], jobs=2, out=None).results
        wall = time.perf_counter() - t0
        return (n / wall, statistics.fmean(r.wall for r in results),
                sum(r.failure is not None for r in results))

    full, session, failing = rate([])
    base, base_session, base_failing = rate(["compaction.workers=0"])
    return {"seeds": n, "failing": failing + base_failing,
            "mean_session_wall_seconds": round(session, 3),
            "seeds_per_second": round(full, 2), "target": ">= 20 seeds/s",
            "meets_target": "yes" if full >= 20 else "NO",
            "without_compaction_workers_seeds_per_second": round(base, 2),
            "without_compaction_workers_session_wall_seconds": round(base_session, 3)}


class _BatchSizes(random.Random):
    """trio's scheduler generator, noting the size of every batch it shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def shuffle(self, x: Any) -> None:
        self.sizes.append(len(x))
        super().shuffle(x)


class _Task:
    __slots__ = ("_counter",)

    def __init__(self, counter: int) -> None:
        self._counter = counter


def _hook_seconds(sizes: list[int], *, seeded: bool) -> float:
    """What trio's run loop spends ordering these batches: seeded (sort by creation, then a
    seeded shuffle) or its own way (one draw, maybe a reverse)."""
    r = random.Random(0)
    batches = [[_Task(i) for i in range(n)] for n in sizes]
    t0 = time.perf_counter()
    if seeded:
        for batch in batches:
            batch.sort(key=lambda t: t._counter)
            r.shuffle(batch)
    else:
        for batch in batches:
            if r.random() < 0.5:
                batch.reverse()
    return time.perf_counter() - t0


def bench_determinism(quick: bool) -> Result:
    """What the seeded scheduler costs a `race` session: the extra time its batch ordering
    takes on that session's own batches, over the session's wall time."""
    sc = scen.load("race", ["duration=4s"] if quick else [])
    run_mod = determinism._run_module()
    trio_r = run_mod._r
    counting = _BatchSizes()
    run_mod._r = counting  # seeded by run_session like trio's own generator
    try:
        gc.collect()
        t0 = time.perf_counter()
        run_session(sc, seed=1)
        wall = time.perf_counter() - t0
    finally:
        run_mod._r = trio_r
    sizes = counting.sizes
    extra = min(_hook_seconds(sizes, seeded=True) for _ in range(3)) - min(
        _hook_seconds(sizes, seeded=False) for _ in range(3))
    overhead = extra / wall
    return {"session_seconds": round(wall, 3), "batches": len(sizes),
            "mean_batch": round(statistics.fmean(sizes), 2) if sizes else 0,
            "extra_ordering_ms": round(extra * 1e3, 2),
            "overhead_percent": round(100 * overhead, 2), "target": "<= 15 %",
            "meets_target": "yes" if overhead <= 0.15 else "NO"}
