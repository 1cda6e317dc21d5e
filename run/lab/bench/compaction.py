"""A full compaction of a fragmented, ballooned guest, and its ceiling."""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from typing import Any

from actors.sim import schema
from run.lab.bench.common import Result
from run.lab.bench.virtqueue import LAP, raw_trio
from run.session import scenario as scen
from run.session.session import run_session


class _CompactionClock:
    """Stamps wall time on the compact.start / compact.end records of one compaction run."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: dict[str, Any] | None = None
        self.wall = 0.0

    def __call__(self, record: dict[str, Any]) -> None:
        if record["event"] == schema.COMPACT_START and record["trigger"] == "compact_memory":
            self.start = time.perf_counter()
        elif (record["event"] == schema.COMPACT_END and self.start is not None
              and self.end is None):
            self.wall = time.perf_counter() - self.start
            self.end = record


def bench_compact(quick: bool) -> Result:
    """Pages migrated per wall second by one full compact_memory of a fragmented guest with
    25 % of it ballooned (fixed driver)."""
    gib = 1 if quick else 4
    scenario = scen.load("default", [
        f"guest.memory={gib}GiB", "duration=24s", "workload.batch=2048",
        "workload.drop_at=0.3", "workload.thp_rate=0.05", "compaction.direct=false",
        "compaction.workers=1", 'compaction.at=["20s"]', "guest.driver=fixed",
        'host.policy.name="schedule"', 'host.policy.params.steps=[["9s", "25%"]]',
    ])
    tap = _CompactionClock()
    gc.collect()
    outcome = run_session(scenario, level="info", validate=tap)
    s = outcome.summary
    res: Result = {"guest_gib": gib, "balloon_pages": s["balloon"]["pages_in_list"]}
    if tap.end is None or outcome.reason != "completed" or s["violations"]:
        res["RUN_FAILED"] = (f"reason={outcome.reason}, violations={len(s['violations'])}, "
                             f"compaction finished={tap.end is not None}")
        return res
    migrated = int(tap.end["migrated"])
    balloon = int(tap.end["balloon_migrated"])
    # The seed's virtballoon_migratepage tells the host twice per balloon page (inflate the
    # new page, deflate the old), each a round trip between two actors. Two bare trio
    # request/reply round trips per balloon page, and nothing else, bound the rate from above.
    stamps = raw_trio(20 * LAP)
    raw = statistics.median(b - a for a, b in itertools.pairwise(stamps)) / LAP
    floor = 2 * balloon * raw
    res.update({
        "pages_migrated": migrated,
        "balloon_pages_migrated": balloon,
        "result": tap.end["result"],
        "wall_seconds": round(tap.wall, 3),
        "pages_migrated_per_second": round(migrated / tap.wall) if tap.wall else 0,
        "target": ">= 200000 pages migrated/s",
        "raw_trio_round_trip_us": round(raw * 1e6, 2),
        "ceiling_pages_per_second": round(migrated / floor) if floor else 0,
        "ceiling": "2 bare trio round trips per balloon page migrated, all else free",
    })
    res["meets_target"] = "yes" if res["pages_migrated_per_second"] >= 200_000 else "NO"
    return res
