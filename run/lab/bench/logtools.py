"""Log records per second through ``vballoon check``."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path

from run.lab.bench.common import Result, count_lines
from run.session import scenario as scen
from run.session.session import run_session


def bench_check(quick: bool) -> Result:
    """Log records/s through `vballoon check` (read, rebuild, check) of a compact-storm log."""
    from run.logtools.check import check_log
    from run.logtools.logread import iter_log

    mib, duration = (32, "8s") if quick else (128, "20s")
    scenario = scen.load("compact-storm", [
        f"guest.memory={mib}MiB", f"duration={duration}", "compaction.workers=6",
        'compaction.at=["4s", "7s", "12s", "16s"]',
        'host.policy.params.steps=[["1s", "25%"], ["5s", "10%"], ["9s", "30%"], '
        '["14s", "5%"], ["18s", "0%"]]',
    ])
    repeats = 5
    res: Result = {"log": f"compact-storm, {mib} MiB guest, {duration} virtual, info level"}
    with tempfile.TemporaryDirectory(prefix="vballoon-bench-") as tmp:
        path = Path(tmp) / "storm.jsonl"
        outcome = run_session(scenario, log_path=path, level="info")
        records = count_lines(path)
        res["log_records"] = records
        res["log_bytes"] = path.stat().st_size
        if outcome.exit_code:
            res["RUN_FAILED"] = f"the session itself failed: {outcome.reason}"
            return res
        gc.collect()
        walls: list[float] = []
        cpus: list[float] = []
        parse: list[float] = []
        for _ in range(repeats):  # interleaved with the parse-only baseline
            w0, c0 = time.perf_counter(), time.process_time()
            report = check_log(path)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            c0 = time.process_time()
            for _ in iter_log(path):
                pass
            parse.append(time.process_time() - c0)
    if report.counts:
        res["RUN_FAILED"] = f"check found violations in a fixed-driver log: {dict(report.counts)}"
        return res
    wall, cpu = statistics.median(walls), min(cpus)
    res.update({
        "timing": (f"{repeats} runs: wall = median; cpu = process time of the least disturbed "
                   "run (the pass is single-threaded: on an idle core, wall == cpu)"),
        "wall_seconds": round(wall, 3),
        "records_per_second": round(records / wall),
        "cpu_seconds": round(cpu, 3),
        "records_per_cpu_second": round(records / cpu),
        "read_and_parse_only_per_cpu_second": round(records / min(parse)),
        "target": ">= 300000 records/s",
    })
    # A single-threaded pass: on an idle core wall time is its CPU time. On a shared machine
    # wall time also counts other processes' turns, so the verdict is on both, stated.
    per_cpu, per_wall = res["records_per_cpu_second"], res["records_per_second"]
    res["meets_target"] = (
        "yes" if per_wall >= 300_000 else
        "yes per CPU second; NO in wall time on this loaded machine" if per_cpu >= 300_000
        else "NO")
    return res
