"""The session monitor (run.session.monitor): its language, and stops that change nothing."""

from __future__ import annotations

import re

import pytest

from actors.sim import schema
from run.session import scenario as scen
from run.session.commands import CommandError
from run.session.logs import FlightRecorder, Record, dumps
from run.session.monitor import Line, Monitor, Script, parse_line
from run.session.session import run_session
from tests.run.session.test_guests import strip_wall

GUESTS = ["guest0"]


@pytest.mark.parametrize(("text", "line"), [
    ("run 5s", Line("run", ("5s",))),
    ("until balloon.migrate", Line("until", ("balloon.migrate",))),
    ("until config.num_pages where num_pages=0", Line("until", ("config.num_pages", "where",
                                                               "num_pages=0"))),
    ("step", Line("step", ())),
    ("step vballoon", Line("step", ("vballoon",))),
    ("continue --speed 4", Line("continue", ("--speed", "4"))),
    ("info balloon", Line("info", ("balloon",))),
    ("log tail 20", Line("log", ("tail", "20"))),
    ("log level debug", Line("log", ("level", "debug"))),
    ("quit", Line("quit", ())),
])
def test_console_lines_parse(text: str, line: Line) -> None:
    assert parse_line(text, GUESTS) == line


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty line"),
    ("ballon guest0 1G", "unknown command 'ballon' (did you mean 'balloon'?)"),
    ("run", "usage: run DURATION"),
    ("run soon", "run: DURATION 'soon'"),
    ("until balloon.migrat", "until: no event 'balloon.migrat' (did you mean 'balloon.migrate'?)"),
    ("until balloon.migrate where pfn", "until balloon.migrate: expected FIELD=VALUE"),
    ("until balloon.migrate where colour=red", "until balloon.migrate: expected FIELD=VALUE"),
    ("info memory", "usage: info balloon|guests"),
    ("dommemstat guest9", "no guest 'guest9'"),
    ("continue --speed 0", "continue: --speed must be a number > 0"),
    ("continue --speed fast", "continue: --speed must be a number > 0"),
    ("log tail 0", "log tail: N must be 1..2000"),
    ("log level loud", "usage: log tail [N] | log level LEVEL"),
    ("quit now", "usage: quit"),
    ("balloon guest0", "usage: balloon GUEST SIZE"),
])
def test_bad_console_lines_say_why(text: str, why: str) -> None:
    with pytest.raises(CommandError, match="^" + re.escape(why)):
        parse_line(text, GUESTS)


def _run(lines: list[tuple[float, str]] | None, duration: str = "6s"
         ) -> tuple[list[Record], float]:
    rec = FlightRecorder()
    sc = scen.load("inflate-deflate", [f"duration={duration}"])
    out = run_session(sc, seed=3, recorder=rec,
                      monitor=None if lines is None else Monitor(Script(lines)))
    assert out.reason == "completed", out.error
    return list(rec.records), out.summary["virtual_seconds"]


def test_stopping_the_machine_changes_nothing_it_does() -> None:
    """A monitor that stops the session at many instants (on a timer's instant, between
    them, and at one where work is in flight) and only reads there leaves every record the
    session writes as it was without a monitor; only the input records are added."""
    plain, _ = _run(None)
    stops = [(0.0, "info host"), (0.5, "info balloon"), (1.0, "info tasks"),
             (2.00000001, "info locks"), (4.0, "info vmstat"), (4.000002, "info guests"),
             (6.0, "quit")]
    paused, end = _run(stops)
    assert end == 6.0
    inputs = [r for r in paused if r["event"] == schema.SESSION_INPUT]
    assert [(r["at"], r["do"]) for r in inputs] == stops
    rest = [r for r in paused if r["event"] != schema.SESSION_INPUT]
    def lines(recs: list[Record]) -> list[bytes]:
        return [dumps({**r, "seq": i}) for i, r in enumerate(strip_wall(recs))]

    assert lines(rest) == lines(plain)


def test_commands_take_effect_at_their_instant_and_quit_ends_there() -> None:
    """A command applied at a stop takes effect there (the host's target changes at that
    instant), and quit ends the session at its own instant, not at the scenario's end."""
    records, end = _run([(2.5, "balloon guest0 512MiB"), (3.25, "quit")], duration="30s")
    assert end == 3.25
    targets = [(r["t"], r["num_pages"]) for r in records if r["event"] == schema.CONFIG_TARGET]
    assert (2.5, 131072) in targets  # 1 GiB RAM - 512 MiB, in 4 KiB pages
    assert records[-1]["event"] == schema.SESSION_END
