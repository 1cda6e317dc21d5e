"""The host: its memory budget, one balloon device per guest, and the policy that drives them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors import schema
from actors.clock import sleep
from actors.costs import CostModel
from actors.host.device import BalloonDevice, Report
from actors.host.memory import HostMemory
from actors.host.policy import GuestView, HostPolicy, HostView, apply_decision
from actors.transport import Transport
from protocol.balloon import BalloonFeature


def _d(default: float, doc: str) -> float:
    return field(default=default, metadata={"unit": "duration", "doc": doc})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Scenario table ``[host.policy]``: which policy, how often, and its parameters."""

    name: str = "static"
    interval: float = _d(1.0, "virtual time between two policy decisions")
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Scenario table ``[host]``."""

    memory: int = field(default=0, metadata={"unit": "size",
                                             "doc": "host RAM budget (0: sum of guest RAM)"})
    features: list[str] = field(default_factory=lambda: ["MUST_TELL_HOST", "STATS_VQ"])
    stats_interval: float = _d(2.0, "how often the device polls the guest's stats")
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        for f in self.features:
            if f not in BalloonFeature.__members__:
                problems.append(("features", f"unknown feature {f!r}; known: "
                                 f"{', '.join(BalloonFeature.__members__)}"))
        if self.stats_interval <= 0:
            problems.append(("stats_interval", "must be > 0"))
        if self.policy.interval <= 0:
            problems.append(("policy.interval", "must be > 0"))
        return problems


class Host:
    """Runs every guest's device and calls the policy on its interval."""

    def __init__(self, config: HostConfig, policy: HostPolicy, costs: CostModel,
                 log: Callable[[str], FilteringBoundLogger], report: Report,
                 total_pages: int, clock: Callable[[], float] = anyio.current_time) -> None:
        self.config = config
        self.policy = policy
        self.costs = costs
        self.memory = HostMemory(total_pages)
        self.devices: dict[str, BalloonDevice] = {}
        self._log = log
        self.plog = log("host.policy")
        self.report = report
        self.clock = clock  # session time (what schedules and stats timestamps mean)
        self.policy_errors = 0
        self.decisions = 0

    def attach(self, transport: Transport, ram_pages: int, pages_per_page: int) -> BalloonDevice:
        """Plug a guest's transport into a new balloon device."""
        mem = self.memory.add_guest(transport.name, ram_pages)
        dev = BalloonDevice(transport, mem, self.costs, self._log(f"host.{transport.name}"),
                            report=self.report, stats_interval=self.config.stats_interval,
                            pages_per_page=pages_per_page, clock=self.clock)
        self.devices[transport.name] = dev
        return dev

    def view(self) -> HostView:
        return HostView(
            time=self.clock(),
            total_pages=self.memory.total_pages,
            free_pages=self.memory.free_pages,
            guests=tuple(
                GuestView(name, d.memory.pages, d.target, d.actual, dict(d.stats), d.stats_time)
                for name, d in self.devices.items()),
        )

    async def _policy_loop(self) -> None:
        interval = self.policy.interval
        while True:
            decision = apply_decision(self.policy, self.view())
            self.decisions += 1
            if decision.error is not None:
                self.policy_errors += 1
                # Contained, logged and counted in the summary; not a failure of the run.
                self.plog.error(schema.POLICY_ERROR, policy=self.policy.name,
                                error=decision.error)
            else:
                changed = {n: t for n, t in decision.targets.items()
                           if t != self.devices[n].target}
                if changed or decision.overrides:
                    self.plog.info(schema.POLICY_DECISION, policy=self.policy.name,
                                   targets=decision.targets, overrides=decision.overrides)
                for name, target in changed.items():
                    await self.devices[name].set_target(target)
            await sleep(interval)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for dev in self.devices.values():
                await tg.start(dev.run)
            tg.start_soon(self._policy_loop)
            task_status.started()

    def summary(self) -> dict[str, Any]:
        m = self.memory
        return {"total_pages": m.total_pages, "free_pages": m.free_pages,
                "policy": self.policy.name, "policy_decisions": self.decisions,
                "policy_errors": self.policy_errors,
                "guests": {n: d.summary() for n, d in self.devices.items()}}
