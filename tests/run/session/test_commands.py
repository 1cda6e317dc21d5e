"""The session command language (run.session.commands) and scenario actions taking effect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.sim import schema
from run.session import scenario as scen
from run.session.commands import Action, Command, CommandError, parse_command, parse_do
from run.session.logs import FlightRecorder
from run.session.session import run_session

GUESTS = ["guest0", "guest1"]


@pytest.mark.parametrize(("text", "command"), [
    ("balloon guest0 512MiB", Command("balloon", "guest0", 512 << 20)),
    ("  balloon   guest1 1GiB ", Command("balloon", "guest1", 1 << 30)),
    ("policy resume", Command("policy")),
    ("policy resume guest1", Command("policy", "guest1")),
    ("compact guest0", Command("compact", "guest0", 0)),
    ("compact guest0 3", Command("compact", "guest0", 3)),
    ("unplug guest1", Command("unplug", "guest1")),
    ("policy mom", Command("policy", args=("mom",))),
    ("policy pressure low=0.2 step=64", Command("policy", args=("pressure", "low=0.2",
                                                                "step=64"))),
    ("policy my.py:Mine", Command("policy", args=("my.py:Mine",))),
    ("fault host.stall", Command("fault", args=("host.stall",))),
    ("fault host.stall 0.5", Command("fault", args=("host.stall", "0.5"))),
    ("fault alloc.fail off", Command("fault", args=("alloc.fail", "off"))),
])
def test_commands_parse(text: str, command: Command) -> None:
    assert parse_command(text, GUESTS) == command


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty command"),
    ("inflate guest0", "unknown command 'inflate'"),
    ("balloon guest0", "usage: balloon GUEST SIZE"),
    ("balloon guest7 1GiB", "no guest 'guest7'; this session has: guest0, guest1"),
    ("balloon guest0 lots", "balloon: SIZE 'lots'"),
    ("policy", "usage: policy resume [GUEST] | policy NAME"),
    ("policy pause", "unknown host policy 'pause'"),
    ("policy mon", "unknown host policy 'mon' (did you mean 'mom'?)"),
    ("policy mom interval", "policy mom: expected KEY=VALUE, got 'interval'"),
    ("policy resume guest0 now", "usage: policy resume [GUEST]"),
    ("fault", "usage: fault SITE [P|off]"),
    ("fault host.melt", "fault: no site 'host.melt'; known: alloc.fail"),
    ("fault host.stall 2", "fault host.stall: P must be a probability in (0, 1] or 'off'"),
    ("fault host.stall on", "fault host.stall: P must be a probability"),
    ("compact guest0 0", "compact: WORKERS must be 1..64, got '0'"),
    ("compact guest0 x", "compact: WORKERS must be 1..64, got 'x'"),
    ("unplug", "usage: unplug GUEST"),
    ("unplug guest0 now", "usage: unplug GUEST"),
])
def test_bad_commands_say_why(text: str, why: str) -> None:
    with pytest.raises(CommandError, match="^" + re.escape(why)):
        parse_command(text, GUESTS)


def test_do_is_a_time_and_a_command() -> None:
    assert parse_do("10s: compact guest0") == Action(10.0, "compact guest0")
    assert parse_do("250ms:unplug guest0") == Action(0.25, "unplug guest0")
    for bad in ("compact guest0", "10s:", "soon: compact guest0"):
        with pytest.raises(CommandError, match="--do"):
            parse_do(bad)


ACTIONS = """
[scenario]
name = "actions"
duration = "8s"
snapshot_interval = "1s"
[guest]
memory = "128MiB"
[workload]
apps = 1
fill = 0.3
[host.policy]
name = "static"
[[actions]]
at = "6s"
do = "unplug guest0"
[[actions]]
at = "1s"
do = "balloon guest0 96MiB"
[[actions]]
at = "3s"
do = "compact guest0 2"
[[actions]]
at = "5s"
do = "policy resume"
"""


def test_scenario_actions_take_effect_at_their_times(tmp_path: Path) -> None:
    """Each [[actions]] entry is applied at its virtual time, in time order whatever the
    file's order, is logged there, and does what it says; replaying the log reproduces it."""
    path = tmp_path / "actions.toml"
    path.write_text(ACTIONS)
    sc = scen.load(str(path))
    rec = FlightRecorder()
    out = run_session(sc, seed=1, recorder=rec, log_path=tmp_path / "a.jsonl")
    assert out.reason == "completed" and out.summary["violations"] == []
    records = list(rec.records)
    done = [(r["t"], r["do"], r["outcome"]) for r in records
            if r["event"] == schema.SESSION_ACTION]
    assert done == [(1.0, "balloon guest0 96MiB", "applied"),
                    (3.0, "compact guest0 2", "applied"),
                    (5.0, "policy resume", "applied"),
                    (6.0, "unplug guest0", "applied")]
    targets = [(r["t"], r["num_pages"]) for r in records if r["event"] == schema.CONFIG_TARGET]
    # QEMU's balloon: logical size 96 MiB of 128 MiB RAM = 32 MiB ballooned (8192 pages);
    # an action takes effect once the instant's work is done (after the policy's tick at
    # 5 s): resumed there, the static policy's target (0) comes back at its next tick
    assert targets == [(1.0, 8192), (6.0, 0)]
    actual = [r["actual"] for r in records
              if r["event"] == schema.CONFIG_ACTUAL and 1.0 <= r["t"] < 3.0]
    assert actual[-1] == 8192
    starts = [(r["t"], r["trigger"]) for r in records if r["event"] == schema.COMPACT_START]
    assert starts == [(3.0, "compact_memory")] * 2
    removes = [(r["t"], r["phase"]) for r in records if r["event"] == schema.BALLOON_REMOVE]
    assert removes[0] == (6.0, "start") and removes[1][1] == "done"
    from run.lab.replay import replay

    assert replay(tmp_path / "a.jsonl")[4] is None  # no first difference


def test_operator_target_holds_against_the_policy(tmp_path: Path) -> None:
    """balloon GUEST SIZE overrides the policy until policy resume: a schedule policy that
    asks for 0 % every tick is ignored meanwhile."""
    sc = scen.with_actions(scen.load("inflate-deflate", ["duration=6s", "workload.apps=0"]),
                           ["0.5s: balloon guest0 768MiB"])
    rec = FlightRecorder()
    run_session(sc, seed=1, recorder=rec)
    targets = [r["num_pages"] for r in rec.records if r["event"] == schema.CONFIG_TARGET]
    assert targets == [65536]  # 1 GiB - 768 MiB, never touched by the policy's steps


@pytest.mark.parametrize(("do", "why"), [
    ("9s: compact guest0", "--do '9s: compact guest0': 9 s is after the session's end (8 s)"),
    ("1s: unplug guest3", "--do '1s: unplug guest3': no guest 'guest3'"),
])
def test_bad_actions_are_refused_naming_them(tmp_path: Path, do: str, why: str) -> None:
    path = tmp_path / "actions.toml"
    path.write_text(ACTIONS)
    with pytest.raises(scen.ScenarioError) as e:
        scen.with_actions(scen.load(str(path)), [do])
    assert str(e.value).startswith(why)


def test_a_guest_without_a_driver_cannot_be_ballooned(tmp_path: Path) -> None:
    path = tmp_path / "nodriver.toml"
    path.write_text(ACTIONS.replace('memory = "128MiB"', 'memory = "128MiB"\nballoon = false'))
    with pytest.raises(scen.ScenarioError, match=r"actions\[0\]\.do: guest0 loads no balloon"):
        scen.load(str(path))
