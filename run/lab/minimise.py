"""Minimise a failing run's choices, and the choices file that pins a race for ``run --choices``.

A fuzzed run makes many perturbation and fault decisions; few matter. Recording them
(``actors.choices``) and forcing every recorded one reproduces the run exactly; forcing a subset
(every other visit does nothing) is a new run. Zeller's delta debugging (``ddmin``) finds a
1-minimal subset that still fails with the same first-violation signature: removing any single
remaining choice makes the failure go away (or change). The result is written as a choices file:
scenario (resolved), seed and choices -- replayable with ``vballoon run --choices FILE``, and the
natural fixture for a regression test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from actors.sim.choices import SITES, Choice, parse_choices
from run.lab.fuzz import first_failure, flight_run
from run.session import scenario as scen

T = TypeVar("T")
FORMAT = "vballoon-choices/1"


class ChoicesFileError(ValueError):
    """A choices file that cannot be used; the message names the file and the problem."""


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], *, budget: int = 400
          ) -> tuple[list[T], int]:
    """A 1-minimal failing subset of ``items`` (``fails(items)`` is assumed) and tests spent.

    Order is kept. ``budget`` caps the number of tests; the best subset so far is returned.
    """
    current = list(items)
    tests = 0

    def test(subset: list[T]) -> bool:
        nonlocal tests
        tests += 1
        return fails(subset)

    if current and test([]):
        return [], tests
    n = 2
    while len(current) >= 2 and tests < budget:
        size = -(-len(current) // n)
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for chunk in chunks:  # reduce to a subset
            if tests >= budget:
                break
            if test(chunk):
                current, n = chunk, 2
                break
        else:
            for i in range(len(chunks)):  # reduce to a complement
                if tests >= budget:
                    break
                complement = [x for j, c in enumerate(chunks) if j != i for x in c]
                if test(complement):
                    current, n = complement, max(n - 1, 2)
                    break
            else:
                if n >= len(current):
                    break
                n = min(2 * n, len(current))
    return current, tests


@dataclass
class Minimised:
    """The outcome of minimising one failing seed."""

    scenario: scen.Scenario
    seed: int
    failure: dict[str, Any]
    recorded: int
    choices: list[Choice]
    tests: int
    #: Whether ddmin spent its whole budget: then the result may not be 1-minimal (some
    #: choice left in it might still be removable).
    budget_spent: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "seed": self.seed, "failure": self.failure,
                "recorded_choices": self.recorded, "tests": self.tests,
                "budget_spent": self.budget_spent,
                "scenario": scen.to_dict(self.scenario),
                "choices": [c.as_dict() for c in self.choices]}


def _failure(sc: scen.Scenario, seed: int, *, forced: list[Choice] | None = None,
             record: bool = False) -> tuple[dict[str, Any] | None, list[Choice]]:
    outcome = flight_run(sc, seed, forced=forced, record=record)
    assert outcome.session is not None
    return first_failure(outcome), outcome.session.choices.recorded


def minimise(sc: scen.Scenario, seed: int, *, budget: int = 400,
             progress: Callable[[int, int], None] | None = None) -> Minimised | None:
    """Shrink the choices of ``seed``'s failing run; None if the seed does not fail."""
    failure, recorded = _failure(sc, seed, record=True)
    if failure is None:
        return None
    want = failure["signature"]

    def fails(subset: list[Choice]) -> bool:
        got, _ = _failure(sc, seed, forced=subset)
        if progress is not None:
            progress(len(subset), len(recorded))
        return got is not None and got["signature"] == want

    if not fails(recorded):  # forcing every recorded choice must reproduce the run
        raise RuntimeError(f"seed {seed}: forcing the {len(recorded)} recorded choices did not "
                           "reproduce the failure (a nondeterminism bug)")
    # Faults are few and preemptions many: try each kind alone before bisecting blindly.
    start, tests = recorded, 1
    faults = [c for c in recorded if is_fault(c)]
    for subset in (faults, [c for c in recorded if not is_fault(c)]):
        if 0 < len(subset) < len(recorded):
            tests += 1
            if fails(subset):
                start = subset
                break
    left = max(1, budget - tests)
    kept, spent = ddmin(start, fails, budget=left)
    return Minimised(sc, seed, failure, len(recorded), kept, tests + spent,
                     budget_spent=spent >= left and len(kept) >= 2)


def is_fault(choice: Choice) -> bool:
    """Whether a choice is a fault injection (its site names a fault site)."""
    return choice.site.rpartition(":")[2] in SITES


def write(result: Minimised, path: Path) -> None:
    """Write the choices file (JSON, indented for review in a regression test's fixture)."""
    path.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")


def load(path: Path, overrides: Sequence[str] = ()) -> tuple[scen.Scenario, int, list[Choice]]:
    """A choices file's scenario (with ``--set`` overrides applied), seed and choices."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as e:
        raise ChoicesFileError(f"{path}: cannot read: {e}") from None
    except orjson.JSONDecodeError as e:
        raise ChoicesFileError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChoicesFileError(f"{path}: not a choices file (expected format {FORMAT!r})")
    for key in ("scenario", "seed", "choices"):
        if key not in data:
            raise ChoicesFileError(f"{path}: lacks {key!r}")
    if not isinstance(data["seed"], int) or data["seed"] < 0:
        raise ChoicesFileError(f"{path}: seed must be an integer >= 0")
    try:
        sc = scen.from_data(scen.apply_overrides(data["scenario"], list(overrides)),
                            f"{path}: scenario")
        choices = parse_choices(data["choices"], str(path))
    except ValueError as e:
        raise ChoicesFileError(str(e)) from None
    return sc, data["seed"], choices
