"""The live dashboard of ``vballoon run``, through a pseudo-terminal (the real entry point)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from run.console.cli import main
from tests.run.session.test_guests import records, strip_wall


def _in_terminal(*args: str) -> tuple[int, str]:
    """Run ``vballoon ARGS`` on a pseudo-terminal; its exit code and everything it drew."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm",
           "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "run", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))  # no styles
    return proc.wait(timeout=120), text


def test_dashboard_shows_each_guest_and_the_host_and_speed_changes_nothing(
        tmp_path: Path) -> None:
    """In a terminal, run redraws a row per guest and a host line at every snapshot, on
    virtual time; --speed paces it to real time and the log is the same as without."""
    paced, plain = tmp_path / "paced.jsonl", tmp_path / "plain.jsonl"
    code, drawn = _in_terminal("run", "inflate-deflate", "--duration", "10s", "--speed", "40",
                               "--log", str(paced))
    assert code == 0, drawn
    assert "t = 5.0 of 10 s" in drawn and "t = 10.0 of 10 s" in drawn
    assert "guest0" in drawn and "host free" in drawn and "policy schedule" in drawn
    code, _ = _in_terminal("run", "inflate-deflate", "--duration", "10s", "--log", str(plain))
    assert code == 0
    assert strip_wall(records(paced)) == strip_wall(records(plain))


def test_no_dashboard_and_no_speed_off_a_terminal() -> None:
    piped = CliRunner().invoke(main, ["run", "inflate-deflate", "--duration", "5s"])
    assert piped.exit_code == 0 and "t = 5.0 of" not in piped.output
    bad = CliRunner().invoke(main, ["run", "--speed", "2"])
    assert bad.exit_code == 2 and "--speed paces the live dashboard" in bad.output
