"""Session robustness: the log is closed with a summary whatever happens."""

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from actors.guest.workload import App
from actors.sim import schema
from run.console.cli import main
from run.session import scenario as scen
from run.session.session import run_session


def _boom(self: App, now: float) -> None:
    raise RuntimeError("simulated actor crash")


def test_actor_crash_still_closes_log_with_summary(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in an actor ends the session with session.error then session.end
    (reason "crashed", the summary included), and the run exits 1."""
    monkeypatch.setattr(App, "step", _boom)
    log = tmp_path / "crash.jsonl"
    sc = scen.load("default", ["guest.memory=32MiB", "duration=3s"])
    out = run_session(sc, log_path=log)
    assert out.reason == "crashed" and out.exit_code == 1
    assert out.error is not None and "simulated actor crash" in out.error
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert records[0]["event"] == schema.SESSION_START
    assert records[-2]["event"] == schema.SESSION_ERROR
    assert records[-1]["event"] == schema.SESSION_END
    assert records[-1]["reason"] == "crashed" and "buddyinfo" in records[-1]["summary"]
    res = CliRunner().invoke(main, ["run", "--set", "guest.memory=32MiB", "--duration", "3s",
                                    "--log", str(tmp_path / "cli.jsonl")])
    assert res.exit_code == 1 and "simulated actor crash" in res.stderr


def test_policy_file_that_raises_is_contained(tmp_path: Path) -> None:
    """A third-party policy that raises never stops the session: its error is logged as
    policy.error, counted in the summary, and the run still completes with exit 0."""
    policy = tmp_path / "bad_policy.py"
    policy.write_text(
        "from actors.host.policy import HostPolicy\n"
        "class Broken(HostPolicy):\n"
        "    name = 'broken'\n"
        "    def decide(self, view):\n"
        "        raise ZeroDivisionError('policy bug')\n")
    log = tmp_path / "p.jsonl"
    sc = scen.load("inflate-deflate", ["guest.memory=32MiB", "duration=4s", "workload.apps=0",
                                       f'host.policy.name="{policy}:Broken"',
                                       "host.policy.params={}"])
    out = run_session(sc, log_path=log)
    assert out.reason == "completed" and out.exit_code == 0
    assert out.summary["host"]["policy_errors"] >= 3
    errors = [orjson.loads(line) for line in log.read_bytes().splitlines()
              if b'"policy.error"' in line]
    assert errors and "policy bug" in errors[0]["error"]


def test_asyncio_backend_uses_session_time(tmp_path: Path) -> None:
    """On asyncio (real time) schedules and log times are relative to the session start, so
    "inflate at 0.5s" inflates, as on trio's virtual clock (regression: loop.time() is not 0)."""
    log = tmp_path / "a.jsonl"
    sc = scen.load("inflate-deflate", ["guest.memory=32MiB", "duration=1.5s", "workload.apps=0",
                                       'host.policy.params.steps=[["0.5s", "25%"]]',
                                       "host.policy.interval=0.25s"])
    out = run_session(sc, log_path=log, backend="asyncio")
    assert out.reason == "completed" and out.summary["violations"] == []
    assert out.summary["balloon"]["actual"] == (32 << 20) // 4096 // 4
    times = [orjson.loads(line)["t"] for line in log.read_bytes().splitlines()]
    assert times[0] < 0.1 and 1.4 < times[-1] < 3.0


def test_compaction_started_as_the_session_ends_is_cancelled_cleanly() -> None:
    """compact_memory writers spawned at t == duration, when the allocator is already being
    cancelled, end with the session (no BrokenResourceError from the checkpoint-free send)."""
    from run.session import scenario as scen
    from run.session.session import run_session

    sc = scen.load("compact-storm", ["guest.memory=16MiB", "duration=2s",
                                     'compaction.at=["1s", "2s"]',
                                     'host.policy.params.steps=[["0.5s", "20%"]]'])
    out = run_session(sc, seed=0)
    assert out.reason == "completed", out.error


def test_a_counter_drift_is_reported_at_the_next_quiescent_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The session holds the balloon's counters against the state they count at every
    quiescent snapshot, not only at the end: a driver's inflated count bumped once at its
    first actual update after 3 s is reported at a snapshot seconds before the session ends
    (and a session without the bump reports nothing)."""
    from actors.guest.balloon.common import VirtioBalloon
    from run.session.logs import FlightRecorder

    sc = scen.load("inflate-deflate", ["duration=12s", "snapshot_interval=0.5s"])
    clean = run_session(sc, seed=1, recorder=FlightRecorder())
    assert clean.summary["violations"] == []
    update = VirtioBalloon.update_balloon_size
    bumped: list[float] = []

    async def drifting(self: VirtioBalloon) -> None:
        await update(self)
        if not bumped and self.kernel.now() >= 3.0:
            bumped.append(self.kernel.now())
            self.inflated += 1

    monkeypatch.setattr(VirtioBalloon, "update_balloon_size", drifting)
    rec = FlightRecorder()
    out = run_session(sc, seed=1, recorder=rec)
    found = [r for r in rec.records if r["event"] == schema.VIOLATION and r["kind"] == "counters"]
    assert bumped and found, out.summary["violations"]
    assert bumped[0] < found[0]["t"] < 12.0 - 1.0
    assert "inflated" in found[0]["detail"]
