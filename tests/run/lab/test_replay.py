"""Replay and --check-determinism through the real CLI, on real logs."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
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


#: A policy module that leaves a mark when it is imported.
MARKING = """
from pathlib import Path

from actors.host.policy import HostPolicy

Path(__file__).with_suffix(".imported").touch()


class P(HostPolicy):
    name = "marking"

    def decide(self, view):
        return {g.name: g.ram_pages // 4 for g in view.guests}
"""


@pytest.fixture
def marking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``vb_marking.py`` in a directory on sys.path, forgotten afterwards."""
    path = tmp_path / "vb_marking.py"
    path.write_text(MARKING)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    for name in ("vb_marking", "vballoon_policy_vb_marking"):
        sys.modules.pop(name, None)


#: (id, the replay's extra arguments, exit code, a fragment of the output ("" for none))
TRUST: list[tuple[str, list[str], int, str]] = [
    ("no flag", [], 2, "is not built in and replaying would import and run its code; to "
                       "allow it, pass --policy"),
    ("--policy same", ["--policy", "{spec}"], 0, "identical"),
    ("--trust-policy", ["--trust-policy"], 0, "identical"),
    ("--policy other", ["--policy", "elsewhere.py:Q"], 2, "not 'elsewhere.py:Q'"),
]


@pytest.mark.parametrize("kind", ["file", "module"])
@pytest.mark.parametrize(("extra", "code", "fragment"), [t[1:] for t in TRUST],
                         ids=[t[0] for t in TRUST])
def test_replay_runs_a_policy_that_is_not_built_in_only_when_allowed(
        tmp_path: Path, marking: Path, kind: str, extra: list[str], code: int,
        fragment: str) -> None:
    """A log naming a file or module policy replays only with --policy NAME (the same name)
    or --trust-policy; otherwise exit 2 with one line naming the policy and how to allow it,
    before anything is imported."""
    spec = f"{marking}:P" if kind == "file" else "vb_marking:P"
    path = _log(tmp_path, "--set", f'host.policy.name="{spec}"', "--set", "host.policy.params={}")
    mark = marking.with_suffix(".imported")
    assert mark.exists()
    mark.unlink()
    for name in ("vb_marking", "vballoon_policy_vb_marking"):
        sys.modules.pop(name, None)
    out_code, out = _run("replay", str(path), *[a.format(spec=spec) for a in extra])
    assert out_code == code, out
    assert fragment in out and mark.exists() == (code == 0)
    if code == 2:
        assert spec in out and len(out.strip().splitlines()) == 1


def test_a_builtin_policy_replays_without_flags_and_with_its_own_name(tmp_path: Path) -> None:
    """Built-in policies need no permission; --policy naming the built-in is accepted too."""
    path = _log(tmp_path)
    assert _run("replay", str(path))[0] == 0
    assert _run("replay", str(path), "--policy", "schedule")[0] == 0
    code, out = _run("replay", str(path), "--policy", "static")
    assert code == 2 and "the log's host policy is 'schedule', not 'static'" in out
