"""Shared helpers for the kernel substrate tests: a cheap Kernel with a recorded log."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import trio

from actors.kernel import Kernel, KernelReport
from actors.sim import schema
from actors.sim.choices import Choices
from actors.sim.clock import SessionClock
from actors.sim.costs import CostModel
from run.session import determinism
from run.session.logs import FlightRecorder, Record, SessionLog

T = TypeVar("T")


@dataclass
class Rig:
    """A kernel plus what it logged and reported."""

    kernel: Kernel
    recorder: FlightRecorder
    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def records(self, event: str) -> list[Record]:
        """The logged records of one event, in order."""
        return [r for r in self.recorder.records if r["event"] == event]

    def kinds(self) -> list[str]:
        """The kinds of every report handed to the session callback, in order."""
        return [kind for kind, _, _ in self.reports]


def make_rig(*, strength: float = 0.0, seed: int = 0, level: str = "debug",
             costs: CostModel | None = None, max_delay: float = 1e-6, cpus: int = 2,
             choices: Choices | None = None) -> Rig:
    """A kernel logging to a flight recorder and collecting reports, for one test."""
    recorder = FlightRecorder()
    log = SessionLog(clock=SessionClock(), level=level, sinks=[recorder],
                     validate=schema.check_record)
    reports: list[tuple[str, str, dict[str, Any]]] = []

    def report(kind: str, detail: str, **fields: Any) -> None:
        reports.append((kind, detail, fields))

    kernel = Kernel(log=log.logger("guest0.kernel"), costs=costs or CostModel(),
                    rng=random.Random(seed), report=report, strength=strength,
                    max_delay=max_delay, name="guest0",
                    race_rng=random.Random(f"races:{seed}"), cpus=cpus, choices=choices)
    return Rig(kernel, recorder, reports)


def run_seeded(seed: int, body: Callable[[Rig], Awaitable[T]], *, strength: float = 0.0) -> T:
    """``body(rig)`` on a fresh rig under trio's scheduler seeded with ``seed``, on virtual time:
    the seed alone decides the order of tasks runnable at the same instant."""
    rig = make_rig(strength=strength, seed=seed)

    async def main() -> T:
        with trio.fail_after(600):
            return await body(rig)

    determinism.seed_scheduler(seed)
    clock = determinism.virtual_clock()
    return trio.run(main, clock=clock, instruments=[clock])


def outcomes(body: Callable[[Rig], Awaitable[T]], seeds: range = range(24), *,
             strength: float = 0.0) -> dict[T, int]:
    """What ``body`` returns under each seed of ``seeds``, by the first seed that gave it
    (``strength``: the preemption points' perturbation, off by default)."""
    seen: dict[T, int] = {}
    for seed in seeds:
        seen.setdefault(run_seeded(seed, body, strength=strength), seed)
    return seen


@pytest.fixture
def rig() -> Rig:
    """A kernel with no perturbation and debug logging on."""
    return make_rig()


__all__ = ["KernelReport", "Rig", "make_rig", "outcomes", "run_seeded"]
