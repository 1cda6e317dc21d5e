"""Campaign directories: results stream to disk, a stopped campaign resumes, and the union
of an interrupted and a resumed run equals an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest

from run.lab import campaign as cp
from run.lab.fuzz import fuzz, fuzz_overrides, strategy_overrides

#: v9's lock leak on every seed of a shrunk overcommit (see test_fuzz), and a clean driver.
FAILING = ["guest.memory=32MiB", "duration=14s", *fuzz_overrides("v9", 0.0, False)]
SEEDS = (0, 1, 2, 3)


def _spec(overrides: list[str]) -> cp.Spec:
    return cp.Spec("overcommit", "v9", "random", tuple(overrides), SEEDS, "rev")


def test_an_interrupted_campaign_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    whole = cp.Store.create(tmp_path / "whole", _spec(FAILING))
    fuzz("overcommit", SEEDS, FAILING, jobs=1, out=None, store=whole)
    whole.close()

    part = cp.Store.create(tmp_path / "part", _spec(FAILING))
    early = fuzz("overcommit", SEEDS, FAILING, jobs=1, out=None, store=part, max_failures=2)
    part.close()
    assert early.stopped_early and len(part.done) == 2

    resumed = cp.Store.open(tmp_path / "part")
    assert resumed.remaining() == [s for s in SEEDS if s not in {x["seed"] for x in part.done}]
    fuzz("overcommit", resumed.remaining(), FAILING, jobs=1, out=None, store=resumed)
    resumed.close()

    def by_seed(d: Path) -> dict[int, dict[str, object]]:
        return {x["seed"]: {k: v for k, v in x.items() if k != "wall"}
                for x in cp.read_results(d / cp.RESULTS)}

    assert by_seed(tmp_path / "part") == by_seed(tmp_path / "whole")
    assert len(by_seed(tmp_path / "whole")) == len(SEEDS)
    assert all(x["verdict"] == "fail" for x in by_seed(tmp_path / "whole").values())


def test_a_torn_last_line_is_dropped_and_a_bad_one_is_an_error(tmp_path: Path) -> None:
    good = b'{"seed": 1, "verdict": "pass"}\n'
    (tmp_path / cp.RESULTS).write_bytes(good + b'{"seed": 2, "ver')
    assert [x["seed"] for x in cp.read_results(tmp_path / cp.RESULTS)] == [1]
    (tmp_path / cp.RESULTS).write_bytes(b"nonsense\n" + good)
    with pytest.raises(cp.CampaignError, match=r"results.jsonl:1: not a JSON line"):
        cp.read_results(tmp_path / cp.RESULTS)


def test_a_directory_holding_a_campaign_is_not_overwritten(tmp_path: Path) -> None:
    cp.Store.create(tmp_path, _spec(FAILING))
    with pytest.raises(cp.CampaignError, match="holds a campaign already"):
        cp.Store.create(tmp_path, _spec(FAILING))


@pytest.mark.parametrize("strategy", ["pct", "pos"])
def test_a_strategy_run_is_reproducible_by_seed(strategy: str) -> None:
    overrides = ["duration=2s", *fuzz_overrides("v9", 0.0, True),
                 *strategy_overrides(strategy, 3, 2000)]
    a = fuzz("race", [5], overrides, jobs=1, out=None).results
    b = fuzz("race", [5], overrides, jobs=1, out=None).results
    assert [(r.seed, r.failure, r.violations) for r in a] == \
        [(r.seed, r.failure, r.violations) for r in b]
