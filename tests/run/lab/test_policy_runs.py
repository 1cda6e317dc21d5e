"""Policies in real sessions: broken policies are contained (or fatal on request), loading
errors exit 2 naming what and where, every built-in is deterministic with several guests, the
authors' harness runs a policy object, and `policies compare` prints one table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from actors.host.policies import BUILTINS
from actors.host.policy import HostPolicy, HostView
from actors.sim import schema
from run.console.cli import main
from run.lab.harness import run_policy
from run.session import scenario as scen
from tests.actors.host.test_shell import Endless, LyingInt, RaisingGet, RaisingItems, vandal
from tests.run.session.test_guests import records, strip_wall, write

ROOT = Path(__file__).resolve().parents[3]

THREE = """
[scenario]
name = "three-small"
duration = "4s"

[host]
memory = "96MiB"
stats_interval = "1s"

[host.policy]
name = "static"
interval = "1s"

[host.policy.shell]
floor = "25%"

[workload]
apps = 1
tick = "100ms"
fill = 0.85
thp_rate = 0.05
drop_at = 0.5

[compaction]
direct = false
kcompactd_interval = "0s"

[[guests]]
name = "a"
memory = "64MiB"

[[guests]]
name = "b"
memory = "48MiB"
workload = { fill = 0.6, drop_at = 0.3 }

[[guests]]
name = "c"
memory = "32MiB"
"""


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


class Scripted(HostPolicy):
    """A test policy answering with a function of the view."""

    name = "scripted"

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    def decide(self, view: HostView) -> Mapping[str, int]:
        return self.answer(view)  # type: ignore[no-any-return]


def _raise(view: HostView) -> Mapping[str, int]:
    raise RuntimeError("policy bug")


def _exit(view: HostView) -> Mapping[str, int]:
    raise SystemExit(4)


def _generator_exit(view: HostView) -> Mapping[str, int]:
    raise GeneratorExit


def _forever(view: HostView) -> Mapping[str, int]:
    n = 0
    while True:
        n += 1


BROKEN: list[tuple[str, Any, str, str]] = [
    ("raises", _raise, "error", "RuntimeError: policy bug"),
    ("negative", lambda v: {g.name: -5 for g in v.guests}, "negative", "target -5 < 0"),
    ("above RAM", lambda v: {g.name: g.ram_pages * 2 for g in v.guests}, "above-ram",
     "above guest RAM"),
    ("unknown guests", lambda v: {"ghost": 10}, "unknown-guest", "no such guest"),
    ("not a number", lambda v: {"a": "lots"}, "not-a-number", "is not a number"),
    ("takes forever", _forever, "error", "did not finish within its budget of 20000"),
    ("lookups raise", lambda v: RaisingGet(), "error", "reading decide()'s answer: KeyError"),
    ("items raises", lambda v: RaisingItems(a=1), "error", "RuntimeError: items refused"),
    ("endless mapping", lambda v: Endless(), "error", "did not finish within its budget"),
    ("int subclass", lambda v: {"a": LyingInt(10**6)}, "above-ram", "target 1000000 above"),
    ("2**64", lambda v: {"a": 2**64}, "above-ram", "target 18446744073709551616 above"),
    ("10**5000", lambda v: {"b": -10**5000}, "negative", "<negative int of 16610 bits> < 0"),
    ("1e300", lambda v: {"c": 1e300}, "above-ram", "target 1e+300 above"),
    ("nan", lambda v: {"a": math.nan}, "not-a-number", "target nan is not a number"),
    ("SystemExit", _exit, "error", "SystemExit: 4"),
    ("GeneratorExit", _generator_exit, "error", "GeneratorExit"),
    ("mutates its view", vandal, "above-ram", "above guest RAM"),
]


@pytest.mark.parametrize(("answer", "rule", "text"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_broken_policy_never_stops_the_session(tmp_path: Path, answer: Any, rule: str,
                                               text: str) -> None:
    """A broken policy is contained at every tick: the session completes with exit 0, the
    violation is logged (policy.error or policy.override) and counted in the summary."""
    log = tmp_path / "b.jsonl"
    s = run_policy(write(tmp_path, THREE), Scripted(answer), duration="3s", log_path=log,
                   overrides=["host.policy.shell.decide_budget=20000"])
    assert s["reason"] == "completed" and s["violations"] == []
    host = s["host"]
    ticks = host["policy_decisions"]
    assert ticks in (3, 4)  # t = 0, 1, 2 and maybe 3, as the session ends at that instant
    recs = records(log)
    assert recs[-1]["event"] == schema.SESSION_END and recs[-1]["reason"] == "completed"
    if rule == "error":
        assert host["policy_errors"] == ticks
        errors = [r for r in recs if r["event"] == schema.POLICY_ERROR]
        assert len(errors) == ticks and text in errors[0]["error"]
    else:
        assert host["policy_errors"] == 0 and host["policy_violations"][rule] >= ticks
        over = [r for r in recs if r["event"] == schema.POLICY_OVERRIDE and r["rule"] == rule]
        assert over and text in over[0]["reason"]
    for g in host["guests"].values():  # every target stayed within [0, RAM - floor]
        assert 0 <= g["target"] <= g["max_pages"] - g["floor_pages"]


class Renaming(HostPolicy):
    """Renames itself to something the log cannot write, and changes its interval."""

    name = "renaming"

    def decide(self, view: HostView) -> Mapping[str, int]:
        self.name = object()  # type: ignore[misc,assignment]
        self.interval = -1.0
        return {}


def test_a_policy_that_renames_itself_is_logged_by_its_first_name(tmp_path: Path) -> None:
    """The host reads the policy's name and interval once: the session completes, every
    record names the policy as it was built, and session.end closes the log."""
    log = tmp_path / "r.jsonl"
    s = run_policy(write(tmp_path, THREE), Renaming(), duration="3s", log_path=log)
    assert s["reason"] == "completed" and s["host"]["policy"] == "renaming"
    assert s["host"]["policy_interval"] == 1.0
    recs = records(log)
    assert recs[-1]["event"] == schema.SESSION_END and recs[-1]["reason"] == "completed"
    assert {r["policy"] for r in recs if r["event"] == schema.POLICY_DECISION} == {"renaming"}


def test_fatal_policy_errors_end_the_run(tmp_path: Path) -> None:
    """With host.policy.fatal, the first policy error ends the session: exit 1, reason error,
    the error names the policy; the log still ends with session.end."""
    log = tmp_path / "f.jsonl"
    policy = tmp_path / "neg.py"
    policy.write_text("from actors.host.policy import HostPolicy\n"
                      "class Neg(HostPolicy):\n"
                      "    name = 'neg'\n"
                      "    def decide(self, view):\n"
                      "        return {g.name: -1 for g in view.guests}\n")
    code, _, err = cli("run", write(tmp_path, THREE), "--set", "host.policy.fatal=true",
                       "--set", f'host.policy.name="{policy}:Neg"', "--log", str(log))
    assert code == 1
    assert "policy 'neg' failed and host.policy.fatal is set: a: target -1 < 0" in err
    recs = records(log)
    assert recs[-1]["event"] == schema.SESSION_END and recs[-1]["reason"] == "crashed"
    code, _, _ = cli("run", write(tmp_path, THREE), "--set", f'host.policy.name="{policy}:Neg"',
                     "--duration", "2s")
    assert code == 0  # not fatal by default


@pytest.mark.parametrize(("setting", "fragment"), [
    ("host.policy.name=no_such_module_vb:P", "cannot import module 'no_such_module_vb'"),
    ("host.policy.name=actors.host.policies:Nope", "actors.host.policies has no attribute "
                                                   "'Nope'"),
    ("host.policy.name=actors.host.view:HostView", "is not a HostPolicy subclass"),
    ('host.policy.name="missing/p.py:P"', "file missing/p.py not found"),
    ("host.policy.params.bogus=1", "policy 'static': unknown parameter(s) bogus"),
    ('host.policy.params.target="lots"', "policy 'static': parameter target: expected a size"),
    ("host.policy.shell.floor=lots", "host.policy.shell.floor: expected hyperv, none"),
])
def test_policy_loading_errors_exit_2_naming_what_and_where(tmp_path: Path, setting: str,
                                                            fragment: str) -> None:
    """A policy that cannot be found or configured exits 2 with one line naming the scenario's
    [host.policy] and what was looked for; no log is written."""
    log = tmp_path / "x.jsonl"
    code, _, err = cli("run", write(tmp_path, THREE), "--set", setting, "--log", str(log))
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert "three-small" in err or "s.toml" in err
    assert not log.exists()


@pytest.mark.parametrize("source", [
    "import sys\nsys.exit(4)\n",
    "import sys\nfrom actors.host.policy import HostPolicy\n"
    "class P(HostPolicy):\n    def __init__(self, **kw):\n        sys.exit(4)\n",
], ids=["at import", "in __init__"])
def test_a_policy_that_calls_sys_exit_while_loading_exits_2(tmp_path: Path, source: str) -> None:
    """vballoon does not exit 4 silently: one line naming the policy and what it did, exit 2."""
    policy = tmp_path / "exits.py"
    policy.write_text(source)
    log = tmp_path / "x.jsonl"
    code, _, err = cli("run", write(tmp_path, THREE), "--set",
                       f'host.policy.name="{policy}:P"', "--log", str(log))
    assert code == 2, err
    assert f"policy '{policy}:P' called sys.exit(4) while loading" in err
    assert len(err.strip().splitlines()) == 1 and not log.exists()


SETTINGS: dict[str, list[str]] = {
    "static": ['host.policy.params.target="30%"'],
    "schedule": ['host.policy.params.steps=[["1s", "20%"], ["3s", "5%"]]'],
    "mom": ["host.policy.interval=1s", "host.policy.params.pressure_threshold=0.5",
            "host.policy.params.window=2"],
    "proxmox": ["host.policy.interval=1s", 'host.policy.params.max_change="8MiB"',
                'host.policy.params.min_goal="1MiB"'],
    "squeezed": [],
    "pressure": ['host.policy.params.step="2MiB"', "host.policy.params.low=0.6",
                 "host.policy.params.medium=0.3"],
}


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_is_deterministic_with_several_guests(tmp_path: Path, name: str) -> None:
    """Each built-in policy, driving three guests, writes the same log twice (wall-clock fields
    aside) and actually moves targets."""
    sets = [f"host.policy.name={name}", "host.policy.params={}", *SETTINGS[name]]
    logs = []
    for i in range(2):
        path = tmp_path / f"{i}.jsonl"
        from run.session.session import run_session

        out = run_session(scen.load(write(tmp_path, THREE), sets), log_path=path)
        assert out.reason == "completed" and out.violations == []
        logs.append(strip_wall(records(path)))
    assert logs[0] == logs[1]
    assert out.summary["host"]["score"]["target_changes"] > 0


def test_harness_runs_the_example_policy_loaded_by_path(tmp_path: Path) -> None:
    """examples/keep_free.py loads by path from a scenario, and the harness runs it as an
    object: both give the same summary, and the policy moved every guest's target."""
    spec = f'host.policy.name="{ROOT / "examples" / "keep_free.py"}:KeepFree"'
    from run.session.session import run_session

    by_path = run_session(scen.load(write(tmp_path, THREE), [spec, "host.policy.interval=0"]))
    assert by_path.summary["host"]["policy"] == "keep-free"
    from actors.host.loader import find_policy

    cls = find_policy(f"{ROOT / 'examples' / 'keep_free.py'}:KeepFree")
    s = run_policy(write(tmp_path, THREE), cls())
    assert {k: v for k, v in s.items() if k != "wall_seconds"} == {
        k: v for k, v in by_path.summary.items() if k != "wall_seconds"}
    assert all(g["score"]["target_changes"] > 0 for g in s["host"]["guests"].values())


def test_the_example_policy_obeys_its_own_contract() -> None:
    """keep_free.py keeps its targets inside the view's bounds, so on three-guests the shell
    overrides nothing and no decision is a violation, while it still balloons."""
    from run.session.session import run_session

    spec = f'host.policy.name="{ROOT / "examples" / "keep_free.py"}:KeepFree"'
    host = run_session(scen.load("three-guests", [spec, "duration=40s"])).summary["host"]
    assert host["overrides"] == {} and host["policy_violations"] == {}
    assert host["policy_errors"] == 0 and host["score"]["ballooned_mib_avg"] > 100


def test_policies_compare_prints_one_table(tmp_path: Path) -> None:
    """`policies compare` runs each policy on each seed and writes mean/spread per metric."""
    out_json = tmp_path / "cmp.json"
    code, out, err = cli("policies", "compare", write(tmp_path, THREE), "--policies",
                         "static,squeezed", "--seeds", "2", "--jobs", "1", "--set",
                         "duration=2s", "-o", str(out_json))
    assert code == 0, err
    data = orjson.loads(out_json.read_bytes())
    assert data["policies"] == ["static", "squeezed"] and data["seeds"] == [0, 1]
    saved = data["metrics"]["ballooned"]
    assert saved["static"]["values"] == [0.0, 0.0] and saved["squeezed"]["mean"] > 0
    assert "host overcommitted (s)" in out and "squeezed" in out


def test_policies_lists_and_compare_rejects_bad_names(tmp_path: Path) -> None:
    """Bare `policies` and `policies list` list the built-ins; compare with an unknown policy
    exits 2 before running anything."""
    for args in (["policies"], ["policies", "list"]):
        code, out, _ = cli(*args)
        assert code == 0 and "proxmox" in out and "squeezed" in out
    code, _, err = cli("policies", "compare", write(tmp_path, THREE), "--policies", "mom,nope")
    assert code == 2 and "unknown host policy 'nope'" in err


def test_stall_detector_backs_off_a_guest_that_cannot_inflate(tmp_path: Path) -> None:
    """overcommit asks a guest for more than __GFP_NORETRY can give: with the detector on, the
    stall is logged 4-5 s after the target was set, the target drops at once to actual minus
    the back-off, the schedule's requests are held down until the hold ends, and the run is
    ok."""
    log = tmp_path / "o.jsonl"
    from run.session.session import run_session

    sc = scen.load("overcommit", ["guest.memory=128MiB", "duration=20s",
                                  "host.policy.shell.stall_after=4s",
                                  'host.policy.shell.stall_backoff="32MiB"'])
    out = run_session(sc, log_path=log)
    assert out.reason == "completed" and out.violations == []
    recs = records(log)
    stalls = [r for r in recs if r["event"] == schema.POLICY_STALL]
    assert stalls and stalls[0]["backoff"] == stalls[0]["actual"] - 32 * 256
    first = stalls[0]
    assert 14.0 <= first["t"] <= 15.0  # target set at 10 s, judged 4-5 s later
    targets = [r for r in recs if r["event"] == schema.CONFIG_TARGET and r["t"] == first["t"]]
    assert targets and targets[0]["num_pages"] == first["backoff"]
    holds = [r for r in recs
             if r["event"] == schema.POLICY_OVERRIDE and r["rule"] == "stall-hold"]
    assert holds and all(first["t"] <= r["t"] < first["hold_until"] for r in holds)
    s = out.summary["host"]
    assert s["stalls"] == len(stalls) and s["guests"]["guest0"]["score"]["stalls"] == len(stalls)
