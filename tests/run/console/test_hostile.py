"""The README's reliability promises, case by hostile case, through the real entry point.

Bad input: exit 2, one line ``vballoon: error: ...`` naming what and where, nothing written
and no existing file touched. A run that starts always ends its log with ``session.end``
naming what happened. Signal cases run the real CLI in a subprocess. (Hostile guest buffers
are pinned at the device, ``tests/actors/host/test_device.py``; hostile policies at the shell
and loader, ``tests/actors/host/``.)
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from run.console.cli import main

TINY = ["--set", "guest.memory=32MiB", "--duration", "1s"]
#: What an existing file holds before a refused run (it must still hold it after).
SENTINEL = b"precious: written by the user before the run\n"


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stderr


def _records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# -- bad scenario values and CLI arguments: exit 2, one line, the existing log untouched -------

BAD_RUNS: list[tuple[list[str], str]] = [
    (["--duration", "nan"], "duration"),
    (["--duration", "inf"], "duration"),
    (["--duration", "1e99"], "at most"),
    (["--duration", "1e7"], "at most"),
    (["--duration", "-1s"], "negative"),
    (["--duration", "0"], "duration"),
    (["--duration", "soon"], "duration"),
    (["--set", "snapshot_interval=nan"], "snapshot_interval"),
    (["--set", "snapshot_interval=0"], "snapshot_interval"),
    (["--set", "workload.tick=nan"], "workload.tick"),
    (["--set", "workload.tick=0"], "workload.tick"),
    (["--set", "host.stats_interval=nan"], "host.stats_interval"),
    (["--set", "host.policy.interval=nan"], "host.policy.interval"),
    (["--set", "costs.alloc_page=nan"], "costs.alloc_page"),
    (["--set", "costs.alloc_page=-1"], "costs.alloc_page"),
    (["--set", "guest.memory=16TiB"], "32-bit"),
    (["--set", "guest.memory=99999999999TiB"], "16 EiB"),
    (["--set", "guest.memory=1KiB"], "pageblock"),
    (["--set", "guest.memory=3MiB"], "multiple of the pageblock"),
    (["--set", "guest.memory=big"], "guest.memory"),
    (["--set", "guest.page_size=8KiB"], "page_size"),
    (["--set", "guest.driver=bogus"], "legacy, v9"),
    (["--set", "guest.fallback=bogus"], "fallback"),
    (["--set", "guest.preempt=2"], "preempt"),
    (["--set", "guest.preempt=nan"], "preempt"),
    (["--set", "guest.unplug_at=-1s"], "unplug_at"),
    (["--set", "guest.bogus=1"], "bogus"),
    (["--set", "workload.apps=86"], "reverse map"),
    (["--set", "workload.apps=-1"], "workload.apps"),
    (["--set", "workload.fill=1.5"], "workload.fill"),
    (["--set", "workload.fill=nan"], "finite"),
    (["--set", "workload.batch=0"], "workload.batch"),
    (["--set", "host.policy.params=5"], "expected a table"),
    (["--set", "faults.fire=5"], "expected a table"),
    (["--set", "faults.fire={bogus=0.5}"], "unknown fault site"),
    (["--set", "faults.activation=2"], "activation"),
    (["--set", 'name="../ESCAPED"'], "name"),
    (["--set", 'name="a/b"'], "name"),
    (["--set", 'name=""'], "name"),
    (["--set", "seed=-1"], "seed"),
    (["--set", f"seed={1 << 64}"], "63 bits"),
    (["--set", "nokey"], "nokey"),
    (["--set", 'host.policy.name="no_such_module:P"'], "no_such_module"),
    (["--set", 'host.policy.name="/nonexistent/p.py:P"'], "not found"),
    (["--set", 'host.policy.name="static"', "--set",
      'host.policy.params={target="99999999999TiB"}'], "16 EiB"),
    (["--set", 'host.policy.name="static"', "--set", "host.policy.params={bogus=1}"],
     "bogus"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "99999999999999999999"], "--seed"),
    (["--level", "bogus"], "--level"),
    (["--backend", "bogus"], "--backend"),
    (["--bogus-option"], "--bogus-option"),
    (["no-such-scenario"], "no-such-scenario"),
]


@pytest.mark.parametrize(("args", "says"), BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_run_input_is_one_line_exit_2_and_touches_nothing(
        tmp_path: Path, args: list[str], says: str) -> None:
    """Each bad value is refused before the run starts: exit 2, one error line naming the
    value, and the log and summary files the user already had are byte for byte intact."""
    log, summary = tmp_path / "old.jsonl", tmp_path / "old.json"
    log.write_bytes(SENTINEL)
    summary.write_bytes(SENTINEL)
    code, err = _run("run", *TINY, *args, "--log", str(log), "--summary", str(summary))
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vballoon: error: "), err
    assert says in lines[0]
    assert log.read_bytes() == SENTINEL and summary.read_bytes() == SENTINEL


def _scenario_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


BAD_FILES: list[tuple[str, str]] = [
    ("[scenario\nname = 1", "s.toml"),
    ("[scenario]\nsnapshot_interval = \"nan s\"", "snapshot_interval"),
    ("[bogus]\nx = 1", "bogus"),
    ("[guest]\nmemory = 1.5", "guest.memory"),
    ("[[guests]]\nname = \"a\"\n[[guests]]\nname = \"a\"", "more than once"),
    ("[[guests]]\nname = \"9bad\"", "name"),
    ("[workload]\nhighorder_at = [\"soon\"]", "highorder_at"),
]


@pytest.mark.parametrize(("text", "says"), BAD_FILES)
def test_bad_scenario_file_is_one_line_exit_2(tmp_path: Path, text: str, says: str) -> None:
    """A scenario file that cannot be a scenario is refused with its file and key named."""
    code, err = _run("run", _scenario_file(tmp_path, text), "--duration", "1s")
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


# -- many-session commands -----------------------------------------------------------------------

BAD_CAMPAIGNS: list[tuple[list[str], str]] = [
    (["fuzz", "race", "--seeds", "0..99999999999999999999"], "at most"),
    (["fuzz", "race", "--seeds", "5..1"], "before it starts"),
    (["fuzz", "race", "--seeds", "-1,2"], "negative"),
    (["fuzz", "race", "--seeds", "abc"], "--seeds"),
    (["fuzz", "race", "--seeds", "0"], "at least one"),
    (["fuzz", "race", "--seeds", f"{1 << 63}"], "at most"),
    (["fuzz", "race", "--jobs", "0"], "--jobs"),
    (["fuzz", "race", "--driver", "bogus"], "--driver"),
    (["fuzz", "race", "--preempt", "2"], "--preempt"),
    (["fuzz", "race", "--set", 'name="../ESCAPED"'], "name"),
    (["compare", "--drivers", "bogus"], "bogus"),
    (["compare", "--drivers", ","], "none"),
    (["compare", "--seeds", "x"], "--seeds"),
    (["policies", "compare", "three-guests", "--policies", "nope"], "nope"),
    (["policies", "compare"], "SCENARIO"),
    (["bench", "nope"], "nope"),
    (["scenarios", "--show", "nope"], "nope"),
]


@pytest.mark.parametrize(("args", "says"), BAD_CAMPAIGNS,
                         ids=[" ".join(a) for a, _ in BAD_CAMPAIGNS])
def test_bad_campaign_input_is_one_line_exit_2(args: list[str], says: str) -> None:
    """Campaign commands refuse bad input before any worker starts."""
    code, err = _run(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and says in err, err


# -- output paths ---------------------------------------------------------------------------------

def _log_file(tmp_path: Path) -> Path:
    log = tmp_path / "run.jsonl"
    code, _ = _run("run", *TINY, "--log", str(log))
    assert code == 0
    return log


OUTPUTS: list[tuple[Callable[[Path, Path], list[str]], str]] = [
    (lambda d, log: ["run", *TINY, "--log", str(d / "missing" / "x.jsonl")], "does not exist"),
    (lambda d, log: ["run", *TINY, "--log", str(d)], "is a directory"),
    (lambda d, log: ["run", *TINY, "--log", str(log), "--summary", str(log)], "also an input"),
    (lambda d, log: ["run", str(d / "s.toml"), "--log", str(d / "s.toml")], "also an input"),
    (lambda d, log: ["trace", str(log), "-o", str(log)], "also an input"),
    (lambda d, log: ["trace", str(log), "-o", str(d)], "is a directory"),
    (lambda d, log: ["trace", str(log), "-o", str(d / "missing" / "t.json")], "does not exist"),
    (lambda d, log: ["fuzz", "race", "--seeds", "1", "--out", str(log)], "not a directory"),
    (lambda d, log: ["fuzz", "race", "--seeds", "1", "-o", str(d / "m" / "f.json")],
     "does not exist"),
    (lambda d, log: ["bench", "alloc", "-o", str(d / "m" / "b.json")], "does not exist"),
]


@pytest.mark.parametrize(("make", "says"), OUTPUTS)
def test_bad_output_path_is_refused_and_inputs_survive(
        tmp_path: Path, make: Callable[[Path, Path], list[str]], says: str) -> None:
    """An output that cannot be written, or that is one of the inputs, is refused before the
    work starts; every input file is unchanged."""
    log = _log_file(tmp_path)
    (tmp_path / "s.toml").write_text('[scenario]\nname = "s"\nduration = "1s"\n')
    before = {p: p.read_bytes() for p in (log, tmp_path / "s.toml")}
    code, err = _run(*make(tmp_path, log))
    assert code == 2 and says in err, err
    assert {p: p.read_bytes() for p in before} == before


def test_summary_to_a_full_disk_is_exit_2(tmp_path: Path) -> None:
    """Writing the summary to a full device is one line and exit 2, and the log is whole."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    log = tmp_path / "a.jsonl"
    code, err = _run("run", *TINY, "--log", str(log), "--summary", "/dev/full")
    assert code == 2 and "--summary /dev/full: cannot write" in err
    assert _records(log)[-1]["event"] == "session.end"


# -- log files given to the log tools ------------------------------------------------------------

def _cut(tmp_path: Path, log: Path) -> Path:
    data = log.read_bytes()
    end = len(data) // 2
    while data[end - 1:end] == b"\n":  # inside a line, wherever the wall-clock digits put it
        end += 1
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[:end])
    return cut


BAD_LOGS: list[tuple[Callable[[Path, Path], Path], str]] = [
    (lambda d, log: d / "missing.jsonl", "cannot read"),
    (lambda d, log: _write(d / "empty.jsonl", b""), "empty"),
    (lambda d, log: _write(d / "junk.jsonl", b"not json at all\n"), "bad JSON"),
    (lambda d, log: _write(d / "list.jsonl", b"[1, 2]\n"), "not a JSON object"),
    (lambda d, log: _write(d / "bad.jsonl.gz", b"\x1f\x8bnot really gzip"), "damaged"),
    (lambda d, log: _write(d / "short.jsonl.gz", gzip.compress(log.read_bytes())[:200]),
     "cut short"),
    (_cut, "line"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("tool", ["check", "trace", "replay"])
@pytest.mark.parametrize(("make", "says"), BAD_LOGS)
def test_unreadable_log_is_exit_2_for_every_log_tool(
        tmp_path: Path, tool: str, make: Callable[[Path, Path], Path], says: str) -> None:
    """check, trace and replay all refuse a log they cannot read with exit 2 and one line."""
    bad = make(tmp_path, _log_file(tmp_path))
    args = [tool, str(bad), *(["-o", str(tmp_path / "t.json")] if tool == "trace" else [])]
    code, err = _run(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t.json").exists()


# -- signals: the real CLI in a subprocess ---------------------------------------------------------

def _vballoon(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "run", *args, "--log", str(log)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_for(log: Path, records: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= records:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log} never reached {records} records")


@pytest.mark.parametrize(("sig", "reason", "code"), [
    (signal.SIGINT, "interrupted", 130),
    (signal.SIGTERM, "terminated", 143),
    (signal.SIGHUP, "terminated", 129),
])
def test_a_signal_ends_the_log_truthfully(tmp_path: Path, sig: int, reason: str,
                                          code: int) -> None:
    """Ctrl-C, SIGTERM and SIGHUP mid-run: session.end says why, the summary is printed, the
    exit code is 128+N, and `vballoon check` does not call the session completed."""
    log = tmp_path / "s.jsonl"
    proc = _vballoon("run", "inflate-deflate", "--set", "guest.memory=256MiB", "--duration",
                     "100000s", log=log)
    _wait_for(log, 1)  # the header is on disk at once
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    last = _records(log)[-1]
    assert last["event"] == "session.end" and last["reason"] == reason, err
    assert b"vballoon session" in out, (out, err)
    check = subprocess.run([sys.executable, "-m", "run", "check", str(log)],
                           capture_output=True, timeout=120)
    said = b" ".join(check.stdout.split())
    assert f"session {reason}".encode() in said, said


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_campaign_and_leaves_no_worker(tmp_path: Path, sig: int,
                                                        code: int) -> None:
    """fuzz stopped by a signal to its process group (Ctrl-C) or to itself (SIGTERM) exits
    within 2 s, writes the seeds that finished to --json, and leaves no worker process."""
    out = tmp_path / "f.json"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "run", "fuzz", "race", "--seeds", "0..999",
                             "--jobs", "2", "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60  # both workers forked, then a few seeds' time
    while len(_group(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    t0 = time.monotonic()
    assert proc.wait(timeout=30) == code
    assert time.monotonic() - t0 < 2.0
    data = orjson.loads(out.read_bytes())
    assert data["interrupted"] is True and 0 < len(data["finished"]) < 1000
    time.sleep(0.2)
    assert _group(proc.pid) == []


def _group(pgid: int) -> list[str]:
    """The processes still in process group ``pgid``."""
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True,
                          check=False).stdout.split()


BAD_HEADERS: list[tuple[str, object, str]] = [
    ("log_level", "bogus", "log_level"),
    ("faults", 12, "faults"),
    ("seed", "x", "seed"),
    ("seed", -1, "seed"),
    ("backend", "bogus", "backend"),
    ("fail_fast", "yes", "fail_fast"),
    ("scenario", 5, "scenario"),
    ("scenario.duration", 1e300, "duration"),
    ("scenario.guest.memory", "16TiB", "32-bit"),
    ("scenario.host.policy.name", "/tmp/evil.py:P", "not built in"),
]


@pytest.mark.parametrize(("key", "value", "says"), BAD_HEADERS)
def test_replay_of_a_bad_header_is_exit_2(tmp_path: Path, key: str, value: object,
                                          says: str) -> None:
    """A header replay cannot trust (a bogus field, an absurd number, a policy it would have
    to import) is one line and exit 2; nothing runs."""
    log = _log_file(tmp_path)
    lines = log.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    *path, last = key.split(".")
    node = header
    for part in path:
        node = node[part]
    node[last] = value
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
    code, err = _run("replay", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


@pytest.mark.parametrize("interval", ["0", "float('nan')", "float('inf')", "'1s'", "True"])
def test_a_policy_that_spoils_its_interval_is_refused(tmp_path: Path, interval: str) -> None:
    """A policy whose __init__ leaves an interval the host loop cannot run on (0 would spin at
    one virtual instant) is a load error: exit 2, one line, no log written."""
    policy = tmp_path / "p.py"
    policy.write_text("from actors.host.policy import HostPolicy\n"
                      "class P(HostPolicy):\n"
                      "    name = 'p'\n"
                      "    def __init__(self, **kw):\n"
                      "        super().__init__(**kw)\n"
                      f"        self.interval = {interval}\n"
                      "    def decide(self, view):\n"
                      "        return {}\n")
    log = tmp_path / "x.jsonl"
    code, err = _run("run", *TINY, "--set", f'host.policy.name="{policy}:P"', "--set",
                     "host.policy.params={}", "--log", str(log))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "interval" in err, err
    assert not log.exists()


def test_piped_tables_keep_every_value() -> None:
    """Off a terminal, tables are as wide as their content: no cell is cut with an ellipsis."""
    from actors.host.policies import BUILTINS

    res = CliRunner().invoke(main, ["policies"], catch_exceptions=False)
    assert res.exit_code == 0 and "…" not in res.stdout
    for name, cls in BUILTINS.items():
        assert name in res.stdout and (cls.description or "") in res.stdout
