"""The host: its memory budget, one balloon device per guest, and the policy that drives them.

Each policy tick the host samples its free memory, builds the immutable view, lets the safety
shell run the policy, logs the decision and every override, stall and error, and writes the
targets that changed to the guests' config space. Scores are tallied as events happen
(``actors/host/score.py``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import anyio
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.host.device import BalloonDevice, Report
from actors.host.memory import HostMemory
from actors.host.policy import HostPolicy, PolicyError
from actors.host.score import host_score
from actors.host.shell import (
    Decision,
    SafetyShell,
    ShellConfig,
    Stall,
    guest_floor,
    policy_name,
)
from actors.host.view import GuestSample, GuestView, HostSample, HostView, hyperv_floor
from actors.sim import schema
from actors.sim.choices import Choices
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.integral import Integral
from actors.sim.transport import Transport
from protocol.balloon import BalloonFeature

#: Stats readings and host samples a view carries (policies average over a window of these).
HISTORY = 16


def _d(default: float, doc: str) -> float:
    return field(default=default, metadata={"unit": "duration", "doc": doc})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Scenario table ``[host.policy]``: which policy, how often, its parameters, its shell."""

    name: str = "static"
    interval: float = _d(0.0, "virtual time between two decisions (0: the policy's default)")
    params: dict[str, Any] = field(default_factory=dict)
    fatal: bool = field(default=False, metadata={
        "doc": "a policy error or contract violation ends the run (exit 1) instead of being "
               "contained"})
    shell: ShellConfig = field(default_factory=ShellConfig)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Scenario table ``[host]``."""

    memory: int = field(default=0, metadata={"unit": "size",
                                             "doc": "host RAM budget (0: sum of guest RAM)"})
    prealloc: bool = field(default=False, metadata={
        "doc": "back all guest RAM from the start (-mem-prealloc); default: on first touch"})
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
        if self.policy.interval < 0:
            problems.append(("policy.interval", "must be >= 0 (0: the policy's default)"))
        return problems


@dataclass(frozen=True, slots=True)
class GuestLimits:
    """What the host allows one guest (4 KiB pages)."""

    floor_pages: int
    max_pages: int
    shares: int


class PolicyFailure(RuntimeError):
    """A policy error with ``host.policy.fatal`` set: the session stops (exit 1)."""


class Host:
    """Runs every guest's device and calls the policy on its interval."""

    def __init__(self, config: HostConfig, policy: HostPolicy, costs: CostModel,
                 log: Callable[[str], FilteringBoundLogger], report: Report,
                 total_pages: int, clock: Callable[[], float] = anyio.current_time,
                 choices: Choices | None = None) -> None:
        self.config = config
        self.set_policy(policy)
        self.costs = costs
        self.memory = HostMemory(total_pages)
        self.shell = SafetyShell(config.policy.shell)
        self.devices: dict[str, BalloonDevice] = {}
        self.limits: dict[str, GuestLimits] = {}
        self.history: deque[HostSample] = deque(maxlen=HISTORY)
        self.guest_history: dict[str, deque[GuestSample]] = {}
        self.free = Integral(0.0, total_pages, threshold=0)  # below 0: overcommitted
        self._log = log
        self.plog = log("host.policy")
        self.report = report
        self.clock = clock  # session time (what schedules and stats timestamps mean)
        self.choices = choices
        self.decisions = 0
        self.policy_errors = 0
        self.violations: dict[str, int] = {}
        self.overrides: dict[str, int] = {}
        self.stalls = 0
        #: Guests whose target an operator set (``balloon GUEST SIZE``): the policy's
        #: decisions and the stall back-offs leave them alone until ``policy resume``.
        self.manual: set[str] = set()
        #: The targets the last policy decision applied (guest -> 4 KiB pages), for views.
        self.last_targets: dict[str, int] = {}

    def set_policy(self, policy: HostPolicy) -> None:
        """Use ``policy`` from its next tick on (at start, or swapped live by an operator).

        Its name and interval are read here, once: what a policy does to its own attributes
        later reaches neither the log nor the loop."""
        name, interval = policy_name(policy), policy.interval
        if (isinstance(interval, bool) or not isinstance(interval, int | float)
                or not 0 < interval < math.inf):
            raise PolicyError(f"policy {name!r}: interval must be a finite number "
                              f"of seconds > 0, got {interval!r}")
        self.policy, self.policy_name, self.policy_interval = policy, name, interval

    def attach(self, transport: Transport, ram_pages: int, pages_per_page: int, *,
               min_memory_pages: int = 0, max_memory_pages: int = 0,
               shares: int = 1000) -> BalloonDevice:
        """Plug a guest's transport into a new balloon device."""
        name = transport.name
        floor = guest_floor(self.config.policy.shell, ram_pages, min_memory_pages)
        self.limits[name] = GuestLimits(floor, min(max_memory_pages or ram_pages, ram_pages),
                                        shares)
        mem = self.memory.add_guest(name, ram_pages, populated=self.config.prealloc)
        dev = BalloonDevice(transport, mem, self.costs, self._log(f"host.{name}"),
                            report=self.report, stats_interval=self.config.stats_interval,
                            pages_per_page=pages_per_page, clock=self.clock,
                            # scored against the sane floor even when the shell enforces none
                            floor_pages=floor or hyperv_floor(ram_pages),
                            choices=self.choices)
        dev.on_memory = self._memory_changed
        history = self.guest_history[name] = deque(maxlen=HISTORY)
        dev.on_stats = lambda: history.append(self._sample(dev)) if dev.stats_trusted else None
        self.devices[name] = dev
        self.free = Integral(0.0, self.memory.free_pages, threshold=0)
        return dev

    def _memory_changed(self, t: float) -> None:
        self.free.set(t, self.memory.free_pages)

    def _sample(self, d: BalloonDevice) -> GuestSample:
        free, total = d.stats.get("memfree"), d.stats.get("memtot")
        return GuestSample(self.clock(), d.actual, d.memory.pages - d.actual,
                           None if free is None else free // 4096,
                           None if total is None else total // 4096, d.memory.rss)

    def view(self) -> HostView:
        """The immutable input of the next decision."""
        guests = []
        for name, d in self.devices.items():
            lim = self.limits[name]
            guests.append(GuestView(
                name, d.memory.pages, d.target, d.actual,
                MappingProxyType(dict(d.stats) if d.stats_trusted else {}),
                d.stats_time, floor_pages=lim.floor_pages, max_pages=lim.max_pages,
                shares=lim.shares, rss_pages=d.memory.rss,
                history=tuple(self.guest_history[name]), stats_trusted=d.stats_trusted))
        return HostView(self.clock(), self.memory.total_pages, self.memory.free_pages,
                        tuple(guests), tuple(self.history))

    # -- the policy loop -------------------------------------------------------------------------
    def record(self, decision: Decision) -> None:
        """Log one tick's error, overrides and decision, and count them."""
        name = self.policy_name
        self.decisions += 1
        if decision.error is not None:
            self.policy_errors += 1
            self.plog.error(schema.POLICY_ERROR, policy=name, error=decision.error)
        for o in decision.overrides:
            counts = self.violations if o.violation else self.overrides
            counts[o.rule] = counts.get(o.rule, 0) + 1
            self.plog.warning(schema.POLICY_OVERRIDE, policy=name, guest=o.guest, rule=o.rule,
                              asked=o.asked, applied=o.applied, reason=o.reason)
        # decision.steps is not logged: the trace-event count of decide() depends on warm
        # caches (a first call in a process counts more), so it would break byte-identity.
        self.plog.info(schema.POLICY_DECISION, policy=name, asked=decision.asked,
                       targets=decision.targets)
        self.last_targets = dict(decision.targets)
        if self.config.policy.fatal and (decision.error or decision.violations):
            what = decision.error or "; ".join(f"{o.guest}: {o.reason}"
                                               for o in decision.violations)
            raise PolicyFailure(f"policy {name!r} failed and host.policy.fatal is set: {what}")

    async def _policy_loop(self) -> None:
        while True:
            free, total = self.memory.free_pages, self.memory.total_pages
            self.history.append(HostSample(self.clock(), free))
            self.plog.info(schema.SAMPLE_HOST, free=free, total=total,
                           pressure=round(1.0 - free / total, 6) if total else 0.0)
            decision = self.shell.decide(self.policy, self.view())
            self.record(decision)
            for name, target in decision.targets.items():
                if name not in self.manual and target != self.devices[name].target:
                    await self.devices[name].set_target(target)
            await sleep(self.policy_interval)

    async def set_manual_target(self, name: str, num_pages: int) -> None:
        """An operator's target for guest ``name`` (4 KiB pages), held until ``resume``."""
        self.manual.add(name)
        await self.devices[name].set_target(num_pages)

    def resume(self, name: str | None = None) -> None:
        """Hand guest ``name`` (None: every guest) back to the policy's next decision."""
        if name is None:
            self.manual.clear()
        else:
            self.manual.discard(name)

    def record_stall(self, s: Stall) -> None:
        self.stalls += 1
        self.devices[s.guest].score.stalls += 1
        self.plog.warning(schema.POLICY_STALL, guest=s.guest, target=s.target, actual=s.actual,
                          rate=s.rate, backoff=s.backoff, hold_until=s.hold_until)

    async def _stall_loop(self) -> None:
        """The shell's stall detector, on its own cadence; back-offs apply at once."""
        check = self.config.policy.shell.stall_check
        while True:
            await sleep(check)
            for s in self.shell.watch(self.view()):
                self.record_stall(s)
                if (s.backoff is not None and s.guest not in self.manual
                        and s.backoff < self.devices[s.guest].target):
                    await self.devices[s.guest].set_target(s.backoff)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for dev in self.devices.values():
                await tg.start(dev.run)
            tg.start_soon(self._policy_loop)
            if self.config.policy.shell.stall_after > 0:
                tg.start_soon(self._stall_loop)
            task_status.started()

    def summary(self) -> dict[str, Any]:
        m = self.memory
        end = self.clock()
        guests = {}
        for n, d in self.devices.items():
            lim = self.limits[n]
            guests[n] = {**d.summary(), "floor_pages": lim.floor_pages,
                         "max_pages": lim.max_pages, "shares": lim.shares,
                         "score": d.score.summary(end)}
        return {"total_pages": m.total_pages, "free_pages": m.free_pages,
                "saved_pages": m.saved_pages, "policy": self.policy_name,
                "policy_interval": self.policy_interval, "policy_decisions": self.decisions,
                "policy_first_error": self.shell.first_traceback,
                "policy_errors": self.policy_errors,
                "policy_violations": dict(sorted(self.violations.items())),
                "overrides": dict(sorted(self.overrides.items())), "stalls": self.stalls,
                "score": host_score([d.score for d in self.devices.values()], self.free, end),
                "guests": guests}
