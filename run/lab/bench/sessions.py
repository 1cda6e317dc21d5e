"""Whole sessions: many guests at once, and the default `vballoon compare`."""

from __future__ import annotations

import os
import resource
import time

from run.lab.bench.common import Result
from run.lab.compare import compare
from run.session import scenario as scen
from run.session.session import run_session


def _guests_scenario(n: int, guest_mib: int, seconds: int) -> scen.Scenario:
    """``n`` guests of ``guest_mib`` on a host with three quarters of their RAM, under mom."""
    return scen.from_data({
        "name": f"bench-guests-{n}", "duration": f"{seconds}s",
        "host": {"memory": f"{n * guest_mib * 3 // 4}MiB", "policy": {"name": "mom"}},
        "workload": {"apps": 2, "tick": "300ms", "batch": 768, "fill": 0.75, "churn": 0.2,
                     "thp_rate": 0.05, "drop_at": 0.5},
        "compaction": {"direct": False, "kcompactd_interval": "0s"},
        "guests": [{"name": f"g{i}", "memory": f"{guest_mib}MiB"} for i in range(n)],
    }, "bench guests")


def bench_guests(quick: bool) -> Result:
    """8 guests of 1 GiB under mom, 60 s virtual: wall time vs 8x one guest alone."""
    n, mib, seconds = (4, 256, 20) if quick else (8, 1024, 60)
    walls, cpus = [], []
    for count in (1, n):
        sc = _guests_scenario(count, mib, seconds)
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_session(sc, seed=0)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)  # what other processes' load does not inflate
        if out.reason != "completed" or out.violations:
            return {"RUN_FAILED": f"{count} guests: {out.reason} {out.error or ''}",
                    "violations": len(out.violations)}
    single, multi = walls
    ratio = multi / (n * single)
    return {"guests": n, "guest_mib": mib, "virtual_seconds": seconds,
            "policy_decisions": out.summary["host"]["policy_decisions"],
            "wall_seconds": round(multi, 3), "single_guest_wall_seconds": round(single, 3),
            "ratio_to_n_single_runs": round(ratio, 3),
            "cpu_ratio_to_n_single_runs": round(cpus[1] / (n * cpus[0]), 3), "target": "<= 1.2",
            "meets_target": "yes" if ratio <= 1.2 else "NO"}


_HEADLINE = ("order9_compacted", "thp_success", "highorder_success")


def bench_compare(quick: bool) -> Result:
    """Wall time of the default compare run: thp-under-balloon, legacy and fixed, 5 seeds, 2
    processes (--quick: 2 seeds); and whether fixed is ahead beyond the spread."""
    seeds = list(range(2 if quick else 5))
    load = os.getloadavg()[0]  # the machine is shared: a figure means little without it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    variants = {d: (f"guest.driver={d}",) for d in ("legacy", "fixed")}
    table = compare("thp-under-balloon", variants, seeds, jobs=2)["metrics"]
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    res: Result = {"runs": 2 * len(seeds), "load_average_at_start": round(load, 2),
                   "cpu_seconds_all_processes": round(cpu, 1)}
    ahead = True
    for key in _HEADLINE:
        legacy, fixed = table[key]["legacy"], table[key]["fixed"]
        margin = fixed["mean"] - legacy["mean"]
        res[f"{key} (fixed - legacy)"] = round(margin, 3)
        ahead = ahead and margin > max(legacy["stdev"], fixed["stdev"])
    res["fixed_ahead_beyond_spread"] = "yes" if ahead else "NO"
    res.update({"wall_seconds": round(wall, 1), "target": "< 60 s wall on 2 cores",
                "meets_target": "yes" if wall < 60 else "NO"})
    return res
