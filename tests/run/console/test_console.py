"""``vballoon console`` through a pseudo-terminal: the real entry point, prompt_toolkit and all."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from run.console.cli import main

PROMPT = re.compile(r"\(vballoon [0-9.e+-]+s\)")


class Terminal:
    """``vballoon ARGS`` on a pseudo-terminal, driven a line at a time."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "120", "LINES": "50", "TERM": "xterm",
               "PYTHONHASHSEED": "0", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "run", *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.seen = b""

    def _read(self, until: re.Pattern[str] | None, timeout: float = 60) -> str:
        """Everything drawn until ``until`` appears after what was read before (None: EOF)."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while until is None or not until.search(self._text(start)):
            left = deadline - time.monotonic()
            what = "EOF" if until is None else repr(until.pattern)
            assert left > 0, f"timed out waiting for {what}: {self._text(start)}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        return self._text(start)

    def _text(self, start: int) -> str:
        raw = self.seen[start:].decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r", "", raw)

    def prompt(self) -> str:
        return self._read(PROMPT)

    def type(self, line: str) -> str:
        """Type ``line`` and Enter; what it printed up to the next prompt."""
        os.write(self.master, line.encode() + b"\r")
        out = self._read(re.compile(re.escape(line) + r".*?\n.*?" + PROMPT.pattern, re.S))
        return out[out.index(line) + len(line):]

    def finish(self, line: str) -> tuple[int, str]:
        os.write(self.master, line.encode() + b"\r")
        out = self._read(None)
        os.close(self.master)
        return self.proc.wait(timeout=60), out


def test_a_console_session_drives_the_balloon_and_replays_identically(tmp_path: Path) -> None:
    """Typed at a terminal: the balloon set by hand reaches its target in 5 s of virtual time,
    compaction migrates a balloon page, 'until' stops at that record, 'quit' ends the session
    with its summary; replaying the log re-applies every typed line record for record."""
    log = tmp_path / "console.jsonl"
    term = Terminal("console", "inflate-deflate", "--log", str(log))
    banner = term.prompt()
    assert "vballoon console: inflate-deflate" in banner
    assert "applied" not in term.type("balloon guest0 256MiB")
    assert "t = 5 s" in term.type("run 5s")
    shown = term.type("info balloon")
    assert "guest0: actual=256 target=256" in shown, shown
    term.type("compact guest0")
    stopped = term.type("until balloon.migrate")
    assert re.search(r"t = 5\.0\d* s", stopped) and "no balloon.migrate" not in stopped
    assert "unknown command 'ballon' (did you mean 'balloon'?)" in term.type("ballon guest0 1G")
    code, out = term.finish("quit")
    assert code == 0, out
    assert "vballoon session: inflate-deflate (seed 0, completed)" in out
    records = [line for line in log.read_text().splitlines() if '"session.input"' in line]
    assert [re.search(r'"do":"([^"]*)"', r).group(1) for r in records if r] == [  # type: ignore[union-attr]
        "balloon guest0 256MiB", "run 5s", "info balloon", "compact guest0",
        "until balloon.migrate", "quit"]
    migrate = next(line for line in log.read_text().splitlines() if '"balloon.migrate"' in line)
    assert '"t":5.0' in migrate
    replayed = CliRunner().invoke(main, ["replay", str(log)])
    assert replayed.exit_code == 0 and "replay: identical" in replayed.output, replayed.output


def test_every_command_has_its_whole_line_in_help() -> None:
    """On an 80-column terminal, --help lists console and plot, and cuts no description."""
    out = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["--help"]).output
    commands = out[out.index("Commands:"):].splitlines()[1:]
    assert any(re.match(r"  console +Drive a session interactively", c) for c in commands)
    assert any(re.match(r"  plot +Draw a session log's time series", c) for c in commands)
    assert commands and not [c for c in commands if c.endswith("...")]


def test_continue_runs_paced_until_the_operator_says_pause(tmp_path: Path) -> None:
    """'continue --speed 4' runs the session at four times real time with the dashboard;
    'pause' typed meanwhile stops it at the end of an instant, well before the end."""
    term = Terminal("console", "inflate-deflate", "--log", str(tmp_path / "c.jsonl"))
    term.prompt()
    os.write(term.master, b"continue --speed 4\r")
    time.sleep(1.5)
    os.write(term.master, b"pause\r")
    out = term._read(re.compile(r"t = [0-9.]+ s \(interrupted\)"), timeout=60)
    stopped = float(re.findall(r"t = ([0-9.]+) s \(interrupted\)", out)[-1])
    assert "running at 4x real time" in out and "guest0" in out
    assert 2.0 <= stopped < 45.0, out
    code, _ = term.finish("quit")
    assert code == 0
