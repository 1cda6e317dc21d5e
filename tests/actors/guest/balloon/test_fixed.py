"""Each FIX in ``fixed`` against ``v9``: a pinned scenario+seed(+choices) fails on v9, passes on
fixed. Choice files come from ``vballoon fuzz race --driver v9 --minimise SEED``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from run.lab import minimise
from run.lab.fuzz import first_failure, flight_run
from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import run_session

CHOICES = Path(__file__).parent / "choices"


def _outcome(path: Path, driver: str) -> tuple[dict[str, Any] | None, int]:
    sc, seed, forced = minimise.load(path, [f"guest.driver={driver}"])
    return first_failure(flight_run(sc, seed, forced=forced)), len(forced)


@pytest.mark.parametrize(("name", "fix"), [
    ("race-fill-unlock", "imbalance"),
    ("race-leak-spin", "soft-lockup"),
])
def test_pinned_race_fails_on_v9_and_passes_on_fixed(name: str, fix: str) -> None:
    """The minimised choices reproduce v9's recorded failure exactly and fixed survives them:
    race-fill-unlock is one forced alloc.fail (FIX(fill-unlock)); race-leak-spin forces host
    stalls and slow-downs while migrations hold the head page of the list (FIX(leak-spin))."""
    path = CHOICES / f"{name}.choices.json"
    recorded = minimise.load(path)[0]
    assert recorded.guest.driver == "v9"
    failure, n = _outcome(path, "v9")
    assert failure is not None and fix in failure["signature"]
    assert failure["signature"] == orjson.loads(path.read_bytes())["failure"]["signature"]
    assert n >= 1
    assert _outcome(path, "fixed")[0] is None


def test_64k_guest_pages_v9_splits_pages_and_oscillates_fixed_does_not() -> None:
    """FIX(leak-pfns) and FIX(64k-target): with 64 KiB guest pages and a target that is not a
    whole number of them, v9 deflates a buffer with stale PFNs (a split guest page); fixed
    aligns the target and copies the PFNs it took, and ends clean at target 0."""
    sets = ["guest.page_size=64KiB", "faults.enabled=false"]
    v9 = run_session(scen.load("race", [*sets, "guest.driver=v9"]), seed=0, fail_fast=True,
                     recorder=FlightRecorder(capacity=16))
    failure = first_failure(v9)
    assert failure is not None and failure["kind"] == "virtio:driver.split-guest-page"
    fixed = run_session(scen.load("race", [*sets, "guest.driver=fixed"]), seed=0,
                        recorder=FlightRecorder(capacity=16))
    assert fixed.violations == [] and fixed.reason == "completed"
    b = fixed.summary["balloon"]
    assert b["inflated"] == b["deflated"] > 0 and b["actual"] == b["target"] == 0


def test_migrations_no_longer_pile_up_on_balloon_lock() -> None:
    """race seed 124 (perturbation and faults on): v9's virtballoon_migratepage sleeps in
    mutex_lock(&vb->balloon_lock) while another migration holds it across two tell_host round
    trips that injected host stalls stretch, so compaction workers pile up and one is reported
    hung; fixed's FIX(leak-spin) mutex_trylock gives up with -EAGAIN instead (the same
    change as upstream 3.8). The seed is the schedule's: it moves when the substrate does."""
    overrides = ["guest.preempt=0.05", "faults.enabled=true"]
    v9 = first_failure(flight_run(scen.load("race", [*overrides, "guest.driver=v9"]), 124))
    assert v9 is not None and v9["kind"] == "hung-task" and "compact_memory" in v9["detail"]
    fixed = flight_run(scen.load("race", [*overrides, "guest.driver=fixed"]), 124)
    assert first_failure(fixed) is None
