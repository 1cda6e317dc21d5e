"""A harness for policy authors: run a scenario with your policy object, get the summary.

    from run.lab.harness import run_policy

    summary = run_policy("three-guests", MyPolicy(), seed=1, duration="30s")
    assert summary["host"]["score"]["overcommitted_seconds"] < 5

The policy object replaces the scenario's ``[host.policy]`` (the scenario's safety shell still
applies); the run is a normal deterministic session, so the same policy, scenario and seed give
the same summary every time. Bad scenarios raise ``ScenarioError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.host.policy import HostPolicy
from run.session import scenario as scen
from run.session.session import run_session


def run_policy(scenario: str | scen.Scenario, policy: HostPolicy, *, seed: int | None = None,
               duration: str | None = None, overrides: Sequence[str] = (),
               log_path: Path | None = None) -> dict[str, Any]:
    """Run ``scenario`` (built-in name, TOML path or a loaded Scenario) under ``policy``.

    ``overrides`` are ``--set`` style ``key=value`` strings, ``duration`` a virtual duration
    (``"30s"``); ``log_path`` writes the JSON-lines log. Returns the session summary (see the
    README: ``host.score``, ``host.guests.NAME.score``, ``guests.NAME``).
    """
    extra = [*overrides, *([f"duration={duration}"] if duration is not None else [])]
    if isinstance(scenario, scen.Scenario):
        if extra:
            data = scen.apply_overrides(scen.to_dict(scenario), extra)
            scenario = scen.from_data(data, f"scenario {scenario.name!r}")
        sc = scenario
    else:
        sc = scen.load(scenario, extra)
    return run_session(sc, seed=seed, log_path=log_path, policy=policy).summary
