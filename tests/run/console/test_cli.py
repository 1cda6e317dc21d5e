"""End to end through the real ``vballoon`` entry point, reading the real log and summary."""

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from actors.sim import schema
from run.console.cli import main

SMALL = ["--set", "guest.memory=64MiB", "--duration", "6s"]


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def _records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _strip_wall(records: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for r in records:
        r = dict(r)
        r.pop("wall_start", None)
        r.pop("wall_end", None)
        out.append(r)
    return out


def test_run_writes_log_and_summary(tmp_path: Path) -> None:
    """`vballoon run` writes a log that starts with session.start and ends with session.end,
    and a summary JSON whose buddyinfo agrees with its free page count."""
    log, summ = tmp_path / "a.jsonl", tmp_path / "s.json"
    code, out, _ = _run("run", *SMALL, "--seed", "7", "--log", str(log), "--summary", str(summ))
    assert code == 0, out
    records = _records(log)
    assert records[0]["event"] == schema.SESSION_START
    assert records[-1]["event"] == schema.SESSION_END
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    for r in records:
        assert r["event"] in schema.EVENTS
        assert set(schema.EVENTS[str(r["event"])].fields) <= set(r)
    s = orjson.loads(summ.read_bytes())
    for key in ("seed", "scenario", "virtual_seconds", "wall_seconds", "guest", "vmstat",
                "buddyinfo", "fragmentation_index", "thp", "violations"):
        assert key in s
    assert s["seed"] == 7 and s["violations"] == []
    assert len(s["buddyinfo"]) == 11
    assert sum(n << order for order, n in enumerate(s["buddyinfo"])) == s["guest"]["free_pages"]
    assert s["virtual_seconds"] == pytest.approx(6.0)
    assert "used by (owner)" in out and "buddyinfo" not in out  # the brief summary
    code, full, _ = _run("run", *SMALL, "--seed", "7", "--full")
    assert code == 0 and "buddyinfo" in full and "vmstat (non-zero)" in full


def test_same_seed_identical_log_other_seed_differs(tmp_path: Path) -> None:
    """Same scenario and seed give identical records (wall-clock fields aside); seed 8 differs."""
    logs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        path = tmp_path / f"{name}.jsonl"
        code, _, _ = _run("run", *SMALL, "--seed", seed, "--log", str(path), "--json")
        assert code == 0
        logs.append(_strip_wall(_records(path)))
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "guest.memory=-1GiB"], "guest.memory: size must not be negative"),
        (["--set", "guest.page_size=8KiB"], "guest.page_size: must be 4KiB, 16KiB or 64KiB"),
        (["--set", "guest.memroy=1GiB"], "did you mean 'memory'"),
        (["--set", "guest.memory=1MiB"], "smaller than one pageblock"),
        (["nonexistent-scenario"], "no such file or built-in scenario"),
        (["--duration", "soon"], "duration: expected a duration"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    """Bad input exits 2 with one line naming the problem, and writes no log at all."""
    log = tmp_path / "x.jsonl"
    code, _, err = _run("run", *args, "--log", str(log))
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not log.exists()


def test_malformed_toml_file_exits_2(tmp_path: Path) -> None:
    """A malformed scenario file is reported with its path, exit 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[guest\n")
    code, _, err = _run("run", str(bad))
    assert code == 2 and str(bad) in err and "malformed TOML" in err


def test_scenarios_lists_builtins() -> None:
    """`vballoon scenarios` lists the built-in scenarios with their descriptions."""
    code, out, _ = _run("scenarios")
    assert code == 0 and "default" in out


def test_scenario_file_with_page_size_64k(tmp_path: Path) -> None:
    """A 64 KiB-page guest runs end to end (pageblocks are 512 guest pages)."""
    code, out, _ = _run("run", "--set", "guest.memory=256MiB", "--set", "guest.page_size=64KiB",
                        "--duration", "3s", "--json")
    assert code == 0
    assert orjson.loads(out)["guest"]["page_size"] == 65536


def test_compare_small(tmp_path: Path) -> None:
    """`vballoon compare` runs every driver × seed and writes per-driver mean/spread JSON."""
    out_json = tmp_path / "cmp.json"
    code, out, err = _run("compare", "inflate-deflate", "--drivers", "legacy,fixed",
                          "--seeds", "2", "--jobs", "1", "--set", "guest.memory=32MiB",
                          "--set", "duration=4s", "--set", "workload.apps=1",
                          "-o", str(out_json))
    assert code == 0, err
    data = orjson.loads(out_json.read_bytes())
    assert data["drivers"] == ["legacy", "fixed"] and data["seeds"] == [0, 1]
    for driver in ("legacy", "fixed"):
        cell = data["metrics"]["virtual_seconds"][driver]
        assert cell["values"] == [4.0, 4.0] and cell["stdev"] == 0.0
        assert data["metrics"]["violations"][driver]["mean"] == 0
    assert "high-order allocation success rate" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (["compare", "--drivers", "legacy,bogus"], "unknown driver(s) bogus"),
    (["compare", "--seeds", "5..2"], "--seeds '5..2': range ends at 2, before it starts at 5"),
    (["bench", "nosuch"], "unknown benchmark 'nosuch'"),
    (["run", "--set", "host.policy.name=nosuch"], "unknown host policy 'nosuch'"),
    (["run", "--set", "host.policy.name=statc"],
     "unknown host policy 'statc' (did you mean 'static'?)"),
    (["scenarios", "--show", "defualt"],
     "no built-in scenario 'defualt' (did you mean 'default'?)"),
])
def test_more_bad_usage_exits_2(args: list[str], fragment: str) -> None:
    """Bad arguments to compare, bench and the policy name exit 2 with one line."""
    code, _, err = _run(*args)
    assert code == 2 and fragment in err


def test_run_do_applies_commands_and_refuses_bad_ones(tmp_path: Path) -> None:
    """run --do 'TIME: COMMAND' (repeatable) applies each at its time, logged; a bad one is
    a one-line error, exit 2, before anything runs."""
    log = tmp_path / "do.jsonl"
    result = CliRunner().invoke(main, [
        "run", "inflate-deflate", "--duration", "5s", "--set", "workload.apps=0",
        "--do", "1s: balloon guest0 512MiB", "--do", "3s: policy resume", "--log", str(log),
        "--json"])
    assert result.exit_code == 0, result.output
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [(r["t"], r["do"]) for r in records if r["event"] == schema.SESSION_ACTION] == [
        (1.0, "balloon guest0 512MiB"), (3.0, "policy resume")]
    bad = CliRunner().invoke(main, ["run", "--do", "1s: balloon guest0"])
    assert bad.exit_code == 2
    assert "--do '1s: balloon guest0': usage: balloon GUEST SIZE" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_the_first_run_shows_the_subject_in_about_30_lines() -> None:
    """vballoon run with no argument inflates the balloon, migrates balloon pages and
    deflates; its summary is complete when piped and fits an 80-column terminal in at most
    30 lines, with MiB beside page counts and the owners labelled, ending on what to try."""
    import io
    import re

    from rich.console import Console

    from run.console.report import summary_brief

    result = CliRunner().invoke(main, ["run", "--json"])
    assert result.exit_code == 0
    summary = orjson.loads(result.stdout)
    assert summary["scenario"] == "default"
    assert summary["balloon"]["inflated"] > 0 and summary["balloon"]["deflated"] > 0
    assert summary["vmstat"]["compact_balloon_migrated"] > 1000
    piped = CliRunner().invoke(main, ["run"])
    assert piped.exit_code == 0
    lines = piped.stdout.strip().splitlines()
    assert len(lines) <= 30 and "…" not in piped.stdout
    text = piped.stdout
    migrated = re.search(r"compaction\s+([\d,]+) balloon pages migrated", text)
    assert migrated and int(migrated.group(1).replace(",", "")) > 1000
    assert re.search(r"balloon moved\s+[\d,]+ pages in, [\d,]+ out \(\d+ MiB / \d+ MiB\)", text)
    assert "used by (owner)" in text and lines[-1].startswith("try next: vballoon run")
    narrow = io.StringIO()
    Console(file=narrow, width=80, force_terminal=False).print(summary_brief(summary))
    rendered = narrow.getvalue().splitlines()
    assert len(rendered) <= 30 and max(map(len, rendered)) <= 80


def test_run_driver_is_set_guest_driver() -> None:
    """run --driver D runs the scenario with guest.driver=D (v9's overcommit defect shows)."""
    code, out, _ = _run("run", "overcommit", "--driver", "v9", "--duration", "12s", "--json")
    assert code == 1
    assert [v["kind"] for v in orjson.loads(out)["violations"]][:1] == ["imbalance"]
    code, _, err = _run("run", "--driver", "v10")
    assert code == 2 and "v10" in err


def test_one_output_grammar_json_on_stdout_and_o_to_a_file(tmp_path: Path) -> None:
    """--json prints the result as JSON on stdout (the tables go to stderr) and -o writes the
    same JSON to a file, for a command that used to take --json PATH."""
    out = tmp_path / "f.json"
    res = CliRunner().invoke(main, ["fuzz", "inflate-deflate", "--seeds", "0..0", "--jobs", "1",
                                    "--set", "duration=2s", "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    printed = orjson.loads(res.stdout)
    assert printed == orjson.loads(out.read_bytes())
    assert printed["seeds"] == [0] and printed["failing"] == 0
    assert "fuzz inflate-deflate" in res.stderr


def test_a_policy_that_raises_shows_its_first_traceback_at_the_authors_line(
        tmp_path: Path) -> None:
    """A plug-in policy that raises: the run says how often, and shows the first traceback
    once, with the author's file and line (not vballoon's frames)."""
    code = tmp_path / "badpol.py"
    code.write_text("from actors.host.policy import HostPolicy\n\n\n"
                    "class Bad(HostPolicy):\n"
                    "    name = 'bad'\n\n"
                    "    def decide(self, view):\n"
                    "        return {g.name: 1 // 0 for g in view.guests}\n")
    res = CliRunner().invoke(main, ["run", "inflate-deflate", "--duration", "3s", "--set",
                                    f"host.policy.name={code}:Bad", "--set",
                                    "host.policy.params={}"])
    assert "the host policy raised 4 time(s)" in res.stderr, res.output
    assert res.stderr.count("Traceback") == 1
    assert 'File "badpol.py", line 8, in' in res.stderr
    assert "ZeroDivisionError" in res.stderr and "shell.py" not in res.stderr
