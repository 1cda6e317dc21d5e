"""Replay and --check-determinism through the real CLI, on real logs."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
from click.testing import CliRunner

from run.console.cli import main
from run.lab.replay import first_difference, normalise

SMALL = ["inflate-deflate", "--set", "guest.memory=32MiB", "--duration", "4s", "--seed", "3",
         "--set", 'host.policy.params.steps=[["1s", "40%"], ["3s", "0%"]]']


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout + res.stderr


def _log(tmp_path: Path, *extra: str) -> Path:
    path = tmp_path / "s.jsonl"
    code, out = _run("run", *SMALL, *extra, "--log", str(path))
    assert code == 0, out
    return path


def test_replay_of_an_untouched_log_is_identical(tmp_path: Path) -> None:
    """A log replays to the same records (wall-clock fields aside), also when gzipped."""
    path = _log(tmp_path)
    code, out = _run("replay", str(path))
    assert code == 0, out
    assert "identical" in out
    gz = tmp_path / "s.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    code, out = _run("replay", str(gz))
    assert code == 0 and "identical" in out


def test_replay_at_debug_level_keeps_the_level(tmp_path: Path) -> None:
    """The header records the log level, so a debug log replays at debug (lock records too)."""
    path = _log(tmp_path, "--level", "debug")
    assert b'"lock.' in path.read_bytes()
    code, out = _run("replay", str(path))
    assert code == 0, out


def test_replay_shows_the_first_differing_record(tmp_path: Path) -> None:
    """A tampered record is reported as the first difference, side by side, exit 1."""
    path = _log(tmp_path)
    lines = path.read_bytes().splitlines()
    i = next(n for n, line in enumerate(lines) if b'"host.inflate.done"' in line)
    record = orjson.loads(lines[i])
    record["rejected"] = 99
    lines[i] = orjson.dumps(record)
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, out = _run("replay", str(path))
    assert code == 1
    assert f"first difference at record {i + 1}" in out
    assert '"rejected": 99' in out and '"rejected": 0' in out


def test_replay_rejects_what_is_not_a_session_log(tmp_path: Path) -> None:
    """No header, not JSON, missing file: exit 2 with the file and the reason."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "seq": 1, "actor": "x", "event": "vq.add"}\n')
    code, out = _run("replay", str(bad))
    assert code == 2 and "not a vballoon session log" in out
    bad.write_text("nope\n")
    code, out = _run("replay", str(bad))
    assert code == 2 and ":1: bad JSON" in out
    code, out = _run("replay", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in out


def test_check_determinism_runs_twice() -> None:
    """`run --check-determinism` compares two runs record for record and says so."""
    code, out = _run("run", *SMALL, "--check-determinism")
    assert code == 0, out
    assert "both runs wrote the same" in out


def test_first_difference_ignores_only_volatile_fields() -> None:
    """wall_start/wall_end/git/versions may differ; anything else is a difference."""
    a = [b'{"t":0,"seq":1,"actor":"session","event":"session.start","seed":1,"wall_start":1.0}',
         b'{"t":1,"seq":2,"actor":"x","event":"vq.add","hs":1}']
    b = [b'{"t":0,"seq":1,"actor":"session","event":"session.start","seed":1,"wall_start":2.0}',
         b'{"t":1,"seq":2,"actor":"x","event":"vq.add","hs":1}']
    assert first_difference(a, b) is None
    assert normalise(a[0]) == normalise(b[0])
    c = [a[0], b'{"t":1,"seq":2,"actor":"x","event":"vq.add","hs":2}']
    diff = first_difference(a, c)
    assert diff is not None and diff.index == 1
    short = first_difference(a, a[:1])
    assert short is not None and short.index == 1 and short.replayed is None
