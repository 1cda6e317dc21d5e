"""``bench bugs``: how fast each exploration strategy finds each known failure of a driver.

For each driver and strategy, several campaigns of ``race`` with different base seeds run
their seeds in order on the local pool (2 jobs, faults on) to a fixed budget. A campaign's
figure for a failure kind (the first-violation signature ``fuzz`` groups by) is the number of
runs up to and including its first failing seed of that kind, in seed order, and the wall
seconds from the campaign's start until that seed's result arrived. The table gives the
median over campaigns (the upper one of an even count); a campaign that never saw the kind
counts as the budget plus one, and a median that is such a censored value prints as
``>budget``. The known kinds are those any strategy found. A run stops at its first
violation, so a kind that nearly every run hits first (v3.8's lost isolated pages) hides the
others: v3.8 gets a fifth of the budget.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from run.lab.bench.common import Result
from run.lab.fuzz import Job, calibrate, fuzz_overrides, run_seed, strategy_overrides
from run.lab.pool import run_all

STRATEGIES = ("random", "pct", "pos")
DRIVERS = ("v9", "v3.8")
DEPTH = 3
#: Base seeds a campaign starts from: far apart, so campaigns never share a seed.
BASE_STRIDE = 100_000


@dataclass
class Sighting:
    """A campaign's first run of one kind: its seed, its position in seed order and when its
    result arrived."""

    seed: int
    runs: int
    wall: float


def campaign(overrides: Sequence[str], base: int, budget: int) -> dict[str, Sighting]:
    """Seeds base..base+budget-1 on 2 processes: the first sighting of every kind."""
    jobs = [Job("race", tuple(overrides), base + i) for i in range(budget)]
    first: dict[str, Sighting] = {}
    t0 = time.perf_counter()
    for r in run_all(run_seed, jobs, processes=2):
        if r.failure is None:
            continue
        sig, runs = r.failure["signature"], r.seed - base + 1
        seen = first.get(sig)
        if seen is None or runs < seen.runs:  # results arrive out of seed order
            first[sig] = Sighting(r.seed, runs, time.perf_counter() - t0)
    return first


def bench_bugs(quick: bool) -> Result:
    """Runs and wall seconds until the first failing run of each known failure kind of
    `race` (faults on, 2 jobs), per strategy (random, PCT d=3, POS) and driver: the median
    over campaigns with different base seeds, each to a fixed budget of seeds."""
    campaigns, full_budget = (2, 30) if quick else (5, 150)
    out: Result = {"campaigns": campaigns, "budget_runs": full_budget}
    verdict_kinds = 0
    slow: list[str] = []
    for driver in DRIVERS:
        budget = full_budget if driver == "v9" else max(10, full_budget // 5)
        base_overrides = fuzz_overrides(driver, 0.05, True)
        cal = calibrate("race", base_overrides)
        seen: dict[str, dict[str, list[Sighting | None]]] = {}
        for strategy in STRATEGIES:
            overrides = [*base_overrides, *strategy_overrides(strategy, DEPTH, cal.steps)]
            runs = [campaign(overrides, (c + 1) * BASE_STRIDE, budget)
                    for c in range(campaigns)]
            for c, first in enumerate(runs):
                for sig, s in first.items():
                    row = seen.setdefault(sig, {k: [None] * campaigns for k in STRATEGIES})
                    row[strategy][c] = s
        for sig in sorted(seen):
            row = seen[sig]
            medians: dict[str, float] = {}
            fastest = float("inf")  # the best median wall over strategies
            for strategy in STRATEGIES:
                sightings = row[strategy]
                m_runs = statistics.median_high([s.runs if s else budget + 1 for s in sightings])
                m_wall = statistics.median_high([s.wall if s else float("inf") for s in sightings])
                medians[strategy], fastest = m_runs, min(fastest, m_wall)
                found = sum(s is not None for s in sightings)
                shown = f">{budget}" if m_runs > budget else f"{m_runs:g}"
                wall = f"{m_wall:.1f} s" if m_wall < float("inf") else "-"
                out[f"{driver} · {sig[:70]} · {strategy}"] = (
                    f"runs {shown} · wall {wall} · found in {found}/{campaigns}")
            best = min(STRATEGIES, key=lambda k: medians[k])
            ratio = medians["random"] / medians[best]
            quickest, how = min(((s, k) for k in STRATEGIES for s in row[k] if s is not None),
                                key=lambda found: found[0].wall)
            verdict = (f"{best}, {ratio:.1f}x fewer runs than random"
                       + ("" if medians["random"] <= budget
                          else " (random: censored at the budget)")
                       if medians[best] <= budget else "no strategy's median within the budget")
            out[f"{driver} · {sig[:70]} · best"] = (
                verdict
                + f"; quickest campaign: {how}, {quickest.runs} runs, {quickest.wall:.1f} s "
                  f"(seed {quickest.seed})")
            if driver == "v9" and ratio >= 5:
                verdict_kinds += 1
            if fastest > 30:
                slow.append(sig[:40])
    out["target"] = ("for >= 2 v9 kinds the best strategy needs >= 5x fewer runs than random; "
                     "every kind found within 30 s by some strategy")
    out["v9_kinds_with_5x"] = verdict_kinds
    out["kinds_not_found_within_30s"] = ", ".join(slow) or "none"
    out["meets_target"] = "yes" if verdict_kinds >= 2 and not slow else "NO"
    return out
