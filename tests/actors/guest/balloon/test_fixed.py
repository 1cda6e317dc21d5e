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

#: The pinned races of the other FIXes run without end-I/O interrupts (race's default, said
#: again here): with them, v9's first failure is FIX(pages-lock-irq)'s irq-order report at
#: the first balloon isolation, before the defect each file pins.
NO_END_IO = "workload.endio_rate=0"


def _outcome(path: Path, driver: str) -> tuple[dict[str, Any] | None, int]:
    sc, seed, forced = minimise.load(path, [f"guest.driver={driver}", NO_END_IO])
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
    """race seed 174 (perturbation and faults on, no end-I/O interrupts: NO_END_IO): v9's
    virtballoon_migratepage sleeps in mutex_lock(&vb->balloon_lock) while another migration
    holds it across two tell_host round trips that injected host stalls stretch, so compaction
    workers pile up and one is reported hung; fixed's FIX(leak-spin) mutex_trylock gives up
    with -EAGAIN instead (the same change as upstream 3.8). The seed is the schedule's: it
    moves when the substrate does (124 before the irq windows, 440 before guest CPUs and
    per-operation costs)."""
    overrides = ["guest.preempt=0.05", "faults.enabled=true", NO_END_IO]
    v9 = first_failure(flight_run(scen.load("race", [*overrides, "guest.driver=v9"]), 174))
    assert v9 is not None and v9["kind"] == "hung-task" and "compact_memory" in v9["detail"]
    fixed = flight_run(scen.load("race", [*overrides, "guest.driver=fixed"]), 174)
    assert first_failure(fixed) is None


def test_pages_lock_taken_under_lru_lock_is_irq_safe_only_in_fixed() -> None:
    """FIX(pages-lock-irq): race seed 0 with end-I/O interrupts (race has none by default),
    no faults, no perturbation. In v9 the first balloon
    page compaction isolates -- virtballoon_isolatepage's spin_lock(&vb->pages_lock), under
    the zone->lru_lock 3.6's scanner holds -- makes HARDIRQ-safe zone->lru_lock (the end-I/O
    interrupts took it in hardirq context) precede HARDIRQ-unsafe vb->pages_lock (fill_balloon
    takes it with hardirqs on). Without the interrupts lru_lock is not HARDIRQ-safe and
    nothing is reported; fixed, pages_lock irqsave everywhere, passes with them."""
    base = ["faults.enabled=false", "guest.preempt=0", "workload.endio_rate=40"]
    v9 = flight_run(scen.load("race", [*base, "guest.driver=v9"]), 0)
    failure = first_failure(v9)
    assert failure is not None and failure["kind"] == "irq-order"
    assert "new lock dependency zone->lru_lock -> vb->pages_lock;" in failure["detail"]
    assert "compact_memory" in failure["detail"] and "(hardirqs disabled)" in failure["detail"]
    quiet = flight_run(scen.load("race", [*base, "guest.driver=v9", NO_END_IO]), 0)
    assert not [v for v in quiet.violations if v.kind.startswith("irq")]
    fixed = flight_run(scen.load("race", [*base, "guest.driver=fixed"]), 0)
    assert first_failure(fixed) is None
    guest = fixed.session.guests[0] if fixed.session else None
    assert guest is not None and guest.vmstat.get("compact_balloon_isolated") > 0
    assert guest.vmstat.get("pgrotated") > 0
