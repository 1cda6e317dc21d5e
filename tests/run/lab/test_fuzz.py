"""Fuzzing, choice recording/forcing through sessions, delta debugging and choices files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from run.console.cli import main
from run.lab import minimise as mn
from run.lab.fuzz import fuzz, signature
from run.lab.minimise import ddmin, is_fault
from run.lab.replay import normalise
from run.session import scenario as scen
from run.session.logs import FlightRecorder, dumps
from run.session.session import run_session

#: v9's fill_balloon returns holding balloon_lock when a round gets no page at all: the
#: overcommit scenario, shrunk, hits it on every seed without any perturbation.
OVERCOMMIT = ["guest.memory=32MiB", "duration=14s"]
#: A short race with perturbation and every fault site active.
CHAOS = ["duration=3s", "guest.preempt=0.1", "faults.enabled=true", "faults.activation=1.0",
         'compaction.at=["1s", "2s"]']


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout + res.stderr


@pytest.mark.parametrize(("items", "culprits", "want"), [
    (list(range(10)), {3, 7}, [3, 7]),
    (list(range(16)), {0}, [0]),
    (list(range(16)), {15, 14, 2}, [2, 14, 15]),
    (list(range(5)), set(), []),
])
def test_ddmin_finds_the_culprits(items: list[int], culprits: set[int], want: list[int]
                                  ) -> None:
    """ddmin keeps exactly the elements the failure needs, in order."""
    got, tests = ddmin(items, lambda sub: culprits <= set(sub))
    assert got == want
    assert tests >= 1


def test_ddmin_respects_its_budget() -> None:
    """A budget stops the search and returns the smallest failing subset found so far."""
    got, tests = ddmin(list(range(64)), lambda sub: {5, 40} <= set(sub), budget=3)
    assert tests <= 3 and {5, 40} <= set(got)


def test_signature_drops_numbers_not_names() -> None:
    """Failures that differ only in PFNs or durations share a signature; V9Balloon stays."""
    a = signature("soft-lockup", "task vballoon stuck for 3s in V9Balloon at pfn 1234")
    b = signature("soft-lockup", "task vballoon stuck for 2s in V9Balloon at pfn 99")
    assert a == b and "V9Balloon" in a


def test_forcing_recorded_choices_reproduces_the_run() -> None:
    """A recording run and a run forcing all it recorded write the same records (the header
    aside, which says the second was forced)."""
    sc = scen.load("race", CHAOS)
    rec_a, rec_b = FlightRecorder(), FlightRecorder()
    a = run_session(sc, seed=5, recorder=rec_a, record=True)
    assert a.session is not None
    chosen = a.session.choices.recorded
    assert any(is_fault(c) for c in chosen) and any(not is_fault(c) for c in chosen)
    run_session(sc, seed=5, recorder=rec_b, forced=chosen)
    la = [normalise(dumps(r).rstrip(b"\n")) for r in list(rec_a.records)[1:]]
    lb = [normalise(dumps(r).rstrip(b"\n")) for r in list(rec_b.records)[1:]]
    assert la == lb
    header = rec_b.records[0]
    assert len(header["faults"]["forced"]) == len(chosen)


def test_faults_fire_and_are_logged() -> None:
    """With every site active and firing always, each kind of fault shows up in the log."""
    sc = scen.load("race", [*CHAOS, "faults.fire={\"alloc.fail\" = 0.5, \"host.slow\" = 1.0,"
                                     " \"host.drop_config\" = 0.5,"
                                     " \"compaction.migrate_fail\" = 1.0}",
                            'faults.sites=["alloc.fail", "host.slow", "host.drop_config",'
                            ' "compaction.migrate_fail"]',
                            'host.policy.params.steps=[["0.3s", "8%"], ["0.6s", "3%"], '
                            '["0.9s", "10%"], ["1.2s", "5%"], ["1.5s", "9%"], ["1.8s", "4%"]]'])
    rec = FlightRecorder()
    out = run_session(sc, seed=1, recorder=rec)
    header = rec.records[0]
    assert set(header["faults"]["active"]) == {"alloc.fail", "host.slow", "host.drop_config",
                                               "compaction.migrate_fail"}
    sites = {r["site"] for r in rec.records if r["event"] == "fault.inject"}
    assert sites == set(header["faults"]["active"])
    vm = out.summary["vmstat"]
    assert vm["compact_balloon_migrated"] == 0 < vm["compact_balloon_returned"]  # all failed


def test_fuzz_groups_failures_and_reruns_them_with_full_logs(tmp_path: Path) -> None:
    """v9 on a shrunk overcommit fails on every seed with one signature; each failing seed is
    re-run with a debug log in --out that ends with the same first violation."""
    overrides = [*OVERCOMMIT, "guest.driver=v9"]
    results, groups, *_ = fuzz("overcommit", [0, 1], overrides, jobs=1, out=tmp_path)
    assert [r.seed for r in results] == [0, 1] and all(r.failure for r in results)
    assert len(groups) == 1 and groups[0].seeds == [0, 1]
    assert groups[0].kind == "lockdep:imbalance" or "imbalance" in groups[0].signature
    records = [orjson.loads(x) for x in Path(groups[0].logs[0]).read_bytes().splitlines()]
    assert records[0]["log_level"] == "debug" and records[-1]["event"] == "session.end"
    assert records[-1]["reason"] == "first-violation"
    first = records[-1]["summary"]["violations"][0]
    assert signature(first["kind"], first["detail"]) == groups[0].signature


def test_fuzz_cli_exit_codes_and_table(tmp_path: Path) -> None:
    """`vballoon fuzz` exits 1 with a table and a reproduce command when seeds fail, 0 when
    none do, 2 on bad arguments."""
    sets = [x for o in OVERCOMMIT for x in ("--set", o)]
    code, out = _run("fuzz", "overcommit", "--driver", "v9", "--seeds", "0..1", "--jobs", "1",
                     "--no-faults", "--preempt", "0", *sets, "-o", str(tmp_path / "f.json"))
    assert code == 1, out
    assert "2 failing, 1 kind(s)" in out and "imbalance" in out
    data = orjson.loads((tmp_path / "f.json").read_bytes())
    assert data["failing"] == 2 and data["groups"][0]["seeds"] == [0, 1]
    assert data["groups"][0]["reproduce"].startswith(
        "vballoon run overcommit --seed 0 --fail-fast --set guest.memory=32MiB")
    code, out = _run("fuzz", "overcommit", "--driver", "fixed", "--seeds", "0..1", "--jobs",
                     "1", "--no-faults", "--preempt", "0", *sets)
    assert code == 0, out
    code, out = _run("fuzz", "--seeds", "9..2")
    assert code == 2 and "--seeds" in out
    code, out = _run("fuzz", "--set", "faults.sites=[\"nope\"]")
    assert code == 2 and "unknown fault site" in out


def test_minimise_writes_a_choices_file_that_run_honours(tmp_path: Path) -> None:
    """--minimise on a failure that needs no forced choice keeps none; the file replays the
    failure with `run --choices` (exit 1) and, with the driver switched to fixed, passes."""
    sets = [x for o in OVERCOMMIT for x in ("--set", o)]
    code, out = _run("fuzz", "overcommit", "--driver", "v9", "--minimise", "0", "--preempt",
                     "0.05", *sets, "--out", str(tmp_path))
    assert code == 1, out
    path = tmp_path / "overcommit-seed0.choices.json"
    data = orjson.loads(path.read_bytes())
    assert data["choices"] == [] and data["recorded_choices"] > 0
    code, out = _run("run", "--choices", str(path))
    assert code == 1 and "reproduce: vballoon run --choices" in out
    code, out = _run("run", "--choices", str(path), "--set", "guest.driver=fixed")
    assert code == 0, out


def test_choices_file_errors_name_the_file(tmp_path: Path) -> None:
    """A broken choices file is bad input (exit 2) with the file and the problem named."""
    bad = tmp_path / "c.json"
    bad.write_text("{}")
    code, out = _run("run", "--choices", str(bad))
    assert code == 2 and "not a choices file" in out
    bad.write_bytes(orjson.dumps({"format": mn.FORMAT, "seed": 1, "scenario": {},
                                  "choices": [{"site": "x", "n": 0, "value": 1}]}))
    code, out = _run("run", "--choices", str(bad))
    assert code == 2 and "choices[0]" in out


def test_minimise_says_when_it_stopped_at_its_budget(tmp_path: Path) -> None:
    """v9's race seed 13 minimises to one choice in 5 runs; with a budget of 3 it stops at
    two and says the result may not be 1-minimal; either way the follow-ups are printed."""
    for budget, kept, warned in (("3", 2, True), ("300", 1, False)):
        code, out = _run("fuzz", "race", "--driver", "v9", "--minimise", "13", "--budget",
                         budget, "--out", str(tmp_path))
        assert code == 1, out
        data = orjson.loads((tmp_path / "race-seed13.choices.json").read_bytes())
        assert len(data["choices"]) == kept and data["budget_spent"] is warned
        assert ("may not be 1-minimal" in out) is warned
        assert "vballoon check" in out and "vballoon trace" in out
