"""Choice points: seeded, recorded and forced decisions; BUGGIFY activation."""

from __future__ import annotations

import random

import pytest

from actors.kernel.preempt import Perturbation
from actors.sim.choices import SITES, Choice, Choices, FaultConfig, forced_choices, parse_choices
from run.session.determinism import RandomStreams


def _streams(seed: int = 7) -> RandomStreams:
    return RandomStreams(seed)


def test_faults_off_activate_nothing() -> None:
    """With faults disabled no site is active and every fault visit returns None."""
    c = Choices(_streams().get, FaultConfig())
    assert c.active == {}
    assert all(c.fault(site) is None for site in SITES for _ in range(50))


def test_activation_is_seeded_and_respects_sites() -> None:
    """The active set is a function of the seed, limited to the listed sites."""
    cfg = FaultConfig(enabled=True, activation=1.0, sites=["alloc.fail", "host.slow"])
    a = Choices(_streams(1).get, cfg)
    assert set(a.active) == {"alloc.fail", "host.slow"}
    assert a.active["alloc.fail"] == SITES["alloc.fail"].fire
    half = FaultConfig(enabled=True, activation=0.5)
    draws = [frozenset(Choices(_streams(s).get, half).active) for s in range(40)]
    assert draws == [frozenset(Choices(_streams(s).get, half).active) for s in range(40)]
    assert len(set(draws)) > 5  # different seeds activate different sets


def test_fire_override_and_validation() -> None:
    """Per-site firing probabilities override the defaults; bad names and values are errors."""
    cfg = FaultConfig(enabled=True, activation=1.0, fire={"alloc.fail": 1.0})
    c = Choices(_streams().get, cfg)
    assert all(c.fault("alloc.fail") is not None for _ in range(20))
    assert FaultConfig(sites=["nope"]).validate()[0][0] == "sites"
    assert FaultConfig(fire={"alloc.fail": 2.0}).validate()[0][0] == "fire.alloc.fail"
    assert FaultConfig(activation=-0.1).validate()[0][0] == "activation"


def test_recording_does_not_change_decisions() -> None:
    """A recording run decides exactly what a plain seeded run decides, and keeps the firings."""
    cfg = FaultConfig(enabled=True, activation=1.0)
    plain = Choices(_streams().get, cfg)
    rec = Choices(_streams().get, cfg, record=True)
    sites = ["alloc.fail", "host.slow", "compaction.migrate_fail"] * 200
    a = [plain.fault(s, "g") for s in sites]
    b = [rec.fault(s, "g") for s in sites]
    assert a == b
    assert [c.value for c in rec.recorded] == [v for v in b if v is not None]
    assert all(c.site.startswith("g:") for c in rec.recorded)


def test_forcing_the_recorded_choices_reproduces_them() -> None:
    """Forcing every recorded choice gives the same decisions; a subset only those."""
    cfg = FaultConfig(enabled=True, activation=1.0)
    rec = Choices(_streams().get, cfg, record=True)
    sites = ["alloc.fail", "host.stall", "host.drop_config"] * 100
    original = [rec.fault(s) for s in sites]
    forced = Choices(_streams(99).get, FaultConfig(), forced=rec.recorded)
    assert [forced.fault(s) for s in sites] == original
    one = Choices(_streams().get, cfg, forced=rec.recorded[:1])
    got = [one.fault(s) for s in sites]
    assert sum(v is not None for v in got) == 1


def test_perturbation_records_and_forces_preemption_points() -> None:
    """Preemption decisions go through the same recorder, keyed per kernel prefix."""
    rec = Choices(_streams().get, record=True)
    p = Perturbation(random.Random(3), strength=0.3, choices=rec, prefix="guest0")
    decisions = [p.decide("pages_lock") for _ in range(300)]
    assert p.active
    assert len(rec.recorded) == sum(d is not None for d in decisions) > 0
    assert all(c.site == "guest0:pages_lock" for c in rec.recorded)
    forced = Choices(_streams().get, forced=rec.recorded)
    q = Perturbation(random.Random(12345), strength=0.0, choices=forced, prefix="guest0")
    assert q.active  # forcing must see every point even at strength 0
    assert [q.decide("pages_lock") for _ in range(300)] == decisions


@pytest.mark.parametrize("bad", [
    [{"site": "x", "n": 0, "value": 0.0}],
    [{"site": "x", "n": 1, "value": -1}],
    [{"site": "x", "n": 1}],
    ["x"],
])
def test_parse_choices_rejects_malformed_entries(bad: list[object]) -> None:
    """A choices file entry must be {site, n >= 1, value >= 0}; the error names the entry."""
    with pytest.raises(ValueError, match=r"choices\[0\]"):
        parse_choices(bad, "f.json")


def test_header_round_trip() -> None:
    """The header records forced choices so that a replay forces them again."""
    forced = [Choice("g:alloc.fail", 3, 0.5), Choice("g:pages_lock", 1, 0.0)]
    c = Choices(_streams().get, forced=forced)
    assert c.active == {"alloc.fail": 1.0}
    assert forced_choices(c.header()) == forced
    assert forced_choices(Choices(_streams().get).header()) is None
