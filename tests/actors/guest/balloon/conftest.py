"""Helpers to run small balloon sessions on virtual time and read their logs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import Outcome, run_session

# A small guest, a light workload, a schedule that inflates to 50 % at 2 s and deflates at 10 s.
SMALL = [
    "guest.memory=64MiB", "duration=16s", "workload.apps=1", "workload.fill=0.3",
    'host.policy.params.steps=[["2s", "50%"], ["10s", "0%"]]',
]


def small_session(*overrides: str, name: str = "inflate-deflate", seed: int = 1,
                  log_path: Path | None = None, level: str = "info"
                  ) -> tuple[Outcome, list[dict[str, Any]]]:
    """Run a small built-in scenario and return its outcome and its records."""
    sc = scen.load(name, [*SMALL, *overrides] if name == "inflate-deflate" else list(overrides))
    rec = FlightRecorder()
    out = run_session(sc, seed=seed, log_path=log_path, level=level, recorder=rec)
    return out, list(rec.records)


def findings(violations: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The violations as (kind, what): the new lock dependency of an irq-order report, else
    the start of the detail."""
    out = []
    for v in violations:
        m = re.search(r"new lock dependency (\S+ -> \S+);", v["detail"])
        out.append((v["kind"], m.group(1) if m else v["detail"][:60]))
    return out


def expected_findings(driver: str) -> list[tuple[str, str]]:
    """What a session of ``driver`` that compacts balloon pages while page cache is written
    back reports: for v9, its one irq-safety defect, HARDIRQ-safe zone->lru_lock before
    HARDIRQ-unsafe vb->pages_lock (FIX(pages-lock-irq)); for the other variants, nothing."""
    return [("irq-order", "zone->lru_lock -> vb->pages_lock")] if driver == "v9" else []


def read_log(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def session_runner() -> Any:
    return small_session
