"""The balloon end to end: a real session inflating a guest to half and back."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.sim import schema
from protocol.balloon import pages_per_page
from run.lab.bench.common import Result, count_lines
from run.session import scenario as scen
from run.session.session import run_session


class _PhaseClock:
    """A tap on the session log (``run_session``'s per-record ``validate`` hook).

    The log only carries virtual time, so this stamps wall-clock time on the two records that
    bracket one balloon move: the device's new target (``config.num_pages``) and the driver's
    ``config.actual`` reaching it. Each direction is then timed inside one session, without
    the session's build (page frames for the whole guest) or its idle ticks.
    """

    def __init__(self) -> None:
        self.records = 0
        self.phases: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.records += 1
        event = record["event"]
        if event == schema.CONFIG_TARGET:
            self.phases.append({"previous": record["previous"], "target": record["num_pages"],
                                "wall_start": time.perf_counter(), "t_start": record["t"],
                                "wall_end": None, "t_end": None})
        elif event == schema.CONFIG_ACTUAL and self.phases:
            phase = self.phases[-1]
            if phase["wall_end"] is None and record["actual"] == phase["target"]:
                phase["wall_end"] = time.perf_counter()
                phase["t_end"] = record["t"]




def _inflate_problems(outcome: Any, phases: list[dict[str, Any]], half: int, ppp: int
                      ) -> list[str]:
    """Why this run cannot be trusted as a measurement (empty: it did what it should)."""
    problems = []
    if outcome.reason != "completed":
        problems.append(f"session {outcome.reason}: {outcome.error}")
    if outcome.violations:
        v = outcome.violations[0]
        problems.append(f"{len(outcome.violations)} violation(s), first {v.kind}: {v.detail}")
    balloon = outcome.summary.get("balloon")
    device = outcome.summary["host"]["guests"].get("guest0", {})
    if balloon is None:
        problems.append("guest has no balloon driver")
    else:
        if balloon["actual"] != balloon["target"]:
            problems.append(f"driver actual {balloon['actual']} != target {balloon['target']}")
        if balloon["inflated"] != half // ppp or balloon["deflated"] != half // ppp:
            problems.append(f"driver moved {balloon['inflated']}/{balloon['deflated']} guest "
                            f"pages in/out, expected {half // ppp} each way")
    if device.get("actual") != device.get("target") or device.get("ballooned"):
        problems.append(f"device actual {device.get('actual')}, target {device.get('target')}, "
                        f"ballooned {device.get('ballooned')} (want 0, 0, 0)")
    targets = [(p["previous"], p["target"]) for p in phases]
    if targets != [(0, half), (half, 0)]:
        problems.append(f"target changes {targets}, expected [(0, {half}), ({half}, 0)]")
    elif any(p["wall_end"] is None for p in phases):
        problems.append("the balloon never reached a target (raise the step times/duration)")
    elif phases[0]["t_end"] >= phases[1]["t_start"]:
        problems.append("inflate had not finished when deflate began (raise the step times)")
    return problems


def bench_inflate(quick: bool) -> Result:
    """Guest pages/s, whole stack: 4 GiB guest (quick: 1) to 50 % balloon and back, info log."""
    gib = 1 if quick else 4
    scenario = scen.load("inflate-deflate", [
        f"guest.memory={gib}GiB",
        "workload.apps=0",  # only the balloon moves pages
        'host.policy.interval="1s"',
        # Inflating 4 GiB takes ~0.15 s of virtual time: both steps leave ample slack.
        'host.policy.params.steps=[["1s", "50%"], ["10s", "0%"]]',
        'duration="20s"',
    ])
    half = scenario.guest.memory // 4096 // 2  # 4 KiB pages (the device's and config unit)
    tap = _PhaseClock()
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="vballoon-bench-") as tmp:
        log_path = Path(tmp) / "inflate.jsonl"
        t0 = time.perf_counter()
        outcome = run_session(scenario, log_path=log_path, level="info", validate=tap)
        wall = time.perf_counter() - t0
        log_bytes = log_path.stat().st_size
        log_records = count_lines(log_path)
    res: Result = {"guest_gib": gib, "page_size": scenario.guest.page_size,
                   "log": "JSON lines at info, to a file"}
    ppp = pages_per_page(scenario.guest.page_size)
    problems = _inflate_problems(outcome, tap.phases, half, ppp)
    if problems:
        res["RUN_FAILED"] = "; ".join(problems)
        res["figures"] = "withheld: the run did not do what the benchmark measures"
        res["session_wall_seconds"] = round(wall, 3)
        return res
    balloon = outcome.summary["balloon"]
    for name, phase, pages in (("inflate", tap.phases[0], balloon["inflated"]),
                               ("deflate", tap.phases[1], balloon["deflated"])):
        secs = phase["wall_end"] - phase["wall_start"]
        res[f"{name}_guest_pages"] = pages
        res[f"{name}_wall_seconds"] = round(secs, 3)
        res[f"{name}_virtual_seconds"] = round(phase["t_end"] - phase["t_start"], 6)
        res[f"{name}_pages_per_second"] = round(pages / secs)
    res["target"] = ">= 500000 guest pages/s each way"
    slow = [d for d in ("inflate", "deflate") if res[f"{d}_pages_per_second"] < 500_000]
    res["meets_target"] = "yes" if not slow else f"NO ({', '.join(slow)})"
    res["session_wall_seconds"] = round(wall, 3)
    res["log_bytes"] = log_bytes
    res["log_records"] = log_records
    res["check"] = (f"ok: completed, 0 violations, actual == target == 0 "
                    f"(driver and device), {half // ppp} guest pages each way")
    return res
