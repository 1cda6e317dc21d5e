"""Session wiring: build the actors a scenario describes, run them, summarise, always log.

A session is: guest(s) + (later) host, a snapshot ticker that checks invariants, and the
log. On the trio backend it runs on virtual time with a seeded scheduler, so the same
scenario, seed and code give a byte-identical log. ``session.start`` is the first record and
``session.end`` (with the summary) the last, also when an actor crashes or on Ctrl-C.
"""

from __future__ import annotations

import array
import functools
import importlib.metadata
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import trio
from anyio.abc import TaskStatus

from actors import schema
from actors.clock import SessionClock, sleep
from actors.guest import pages as P
from actors.guest import views
from actors.guest.guest import Guest
from actors.host.device import BalloonDevice
from actors.host.host import Host
from actors.host.policy import HostPolicy, make_policy
from actors.transport import Transport
from protocol import conformance as C
from protocol.balloon import BalloonFeature, feature_mask, pages_per_page, select_features
from run import determinism
from run.logs import FlightRecorder, JsonLinesFile, PrettyConsole, SessionLog, Sink
from run.scenario import Scenario, to_dict

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def versions() -> dict[str, str]:
    """Versions of Python and of every package whose behaviour shapes the log."""
    out = {"python": platform.python_version()}
    for pkg in ("vballoon", "trio", "anyio", "structlog", "orjson"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def git_revision() -> str | None:
    """The source tree's git revision, if it is a checkout (recorded for replay)."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


@dataclass
class Violation:
    """A broken invariant found during the run."""

    t: float
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "detail": self.detail}


@dataclass
class Outcome:
    """What a finished session hands back to its caller."""

    summary: dict[str, Any]
    reason: str
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None
    session: Session | None = field(default=None, repr=False)  # for tests and tools

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.reason == "completed" and not self.violations else EXIT_PROBLEM


class Session:
    """One run of one scenario with one seed."""

    def __init__(self, scenario: Scenario, *, seed: int | None = None, log: SessionLog,
                 backend: str = "trio", on_snapshot: Callable[[Session], None] | None = None,
                 policy: HostPolicy | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.log = log
        self.backend = backend
        self.streams = determinism.RandomStreams(self.seed)
        self.violations: list[Violation] = []
        self.on_snapshot = on_snapshot
        self.clock = log.clock if isinstance(log.clock, SessionClock) else SessionClock()
        self.wall_start = time.time()
        self._wall0 = time.perf_counter()
        self._slog = log.logger("session")
        g = scenario.guest
        ram_4k = g.memory // 4096
        self.policy = policy if policy is not None else load_policy(scenario)
        total = scenario.host.memory // 4096 or ram_4k
        self.host = Host(scenario.host, self.policy, scenario.costs, log.logger,
                         report=self.violation, total_pages=total, clock=self.clock)
        device_features = feature_mask(*(BalloonFeature[f] for f in scenario.host.features))
        driver_features = feature_mask(*(BalloonFeature[f] for f in g.features))
        transport = Transport("guest0", features=select_features(device_features,
                                                                 driver_features))
        self.guests = [
            Guest("guest0", g, scenario.workload, scenario.costs, logger=log.logger,
                  rng=self.streams.get, duration=scenario.duration, transport=transport,
                  report=self._kernel_report, compaction=scenario.compaction,
                  clock=self.clock)
        ]
        for guest in self.guests:
            assert guest.transport is not None
            ppp = pages_per_page(g.page_size)
            device = self.host.attach(guest.transport, ram_4k, ppp)
            guest.allocator.on_alloc = functools.partial(_touched, device, ppp)

    @property
    def now(self) -> float:
        """Virtual seconds since the session started (the last known time outside the run)."""
        return self.clock()

    # -- invariants ----------------------------------------------------------------------------
    def _kernel_report(self, kind: str, detail: str, **fields: Any) -> None:
        """A lockdep or watchdog report from a guest kernel: a session violation."""
        self.violation(kind, detail, log=False)  # the kernel already logged its own record

    def violation(self, kind: str, detail: str, *, log: bool = True) -> None:
        """Record (and log) a broken invariant; the run will exit 1."""
        v = Violation(round(self.clock(), 9), kind, detail)
        self.violations.append(v)
        if log:
            self._slog.error(schema.VIOLATION, kind=kind, detail=detail)

    def check(self, *, full: bool = False) -> None:
        """Cheap cross-checks every snapshot; the full buddy walk at the end (small guests)."""
        for guest in self.guests:
            problem = guest.conservation_problem()
            if problem:
                self.violation("conservation", f"{guest.name}: {problem}")
            if full and guest.balloon is not None and self.quiescent(guest):
                device = self.host.devices[guest.name]
                device.feed(C.Quiescent())
                for kind, detail in guest.balloon_problems(device.memory.state):
                    self.violation(kind, f"{guest.name}: {detail}")
            if full:
                try:
                    guest.zone.check_invariants()
                except AssertionError as e:
                    self.violation("buddy", f"{guest.name}: {e}")

    def quiescent(self, guest: Guest) -> bool:
        """No handshake in flight, no page isolated, and the driver has reached its target."""
        b = guest.balloon
        if b is None or guest.transport is None:
            return False
        vqs = guest.transport.vqs
        busy = any(vqs[q].driver.in_flight for q in (0, 1))
        device = self.host.devices[guest.name]
        return (not busy and b.isolated() == 0 and b.towards_target() == 0
                and device.actual == b.num_pages.atomic_read() and device.holds_stats_buffer())

    # -- actors --------------------------------------------------------------------------------
    async def _snapshots(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                         ) -> None:
        task_status.started()
        interval = self.scenario.snapshot_interval
        while True:
            await sleep(interval)
            for guest in self.guests:
                s = guest.zone
                self.log.logger(guest.name).info(
                    schema.MEM_SNAPSHOT, free=s.free_pages, buddyinfo=views.buddyinfo(s),
                    frag9=views.fragmentation_index(s, 9))
            self.check()
            if self.on_snapshot is not None:
                self.on_snapshot(self)

    async def main(self) -> None:
        """Start every actor, let the scenario's duration pass, then stop them all."""
        self.clock.start()
        async with anyio.create_task_group() as tg:
            for guest in self.guests:
                await tg.start(guest.run)
            await tg.start(self.host.run)
            await tg.start(self._snapshots)
            await sleep(self.scenario.duration)
            self.clock()  # the end of the run is the session's last known time
            tg.cancel_scope.cancel()

    # -- summary -------------------------------------------------------------------------------
    def summary(self, reason: str) -> dict[str, Any]:
        guest = self.guests[0]
        g = guest.summary()
        return {
            "seed": self.seed,
            "scenario": self.scenario.name,
            "reason": reason,
            "virtual_seconds": round(self.now, 9),
            "wall_seconds": round(time.perf_counter() - self._wall0, 3),
            "guest": {"pages": g["pages"], "page_size": g["page_size"],
                      "memory_bytes": g["memory_bytes"], "free_pages": g["free_pages"],
                      "owners": g["owners"], "allocation_pressure": g["allocation_pressure"]},
            "vmstat": g["vmstat"],
            "buddyinfo": g["buddyinfo"],
            "pagetypeinfo": g["pagetypeinfo"],
            "fragmentation_index": g["fragmentation_index"],
            "free_order9_blocks": g["free_order9_blocks"],
            "unusable_free_index": g["unusable_free_index"],
            "thp": g["thp"],
            "highorder": g["highorder"],
            "compaction": g["compaction"],
            **({"balloon": guest.balloon.summary()} if guest.balloon is not None else {}),
            "host": self.host.summary(),
            "violations": [v.as_dict() for v in self.violations],
        }

    def start_record(self) -> None:
        self._slog.info(schema.SESSION_START, seed=self.seed, scenario=to_dict(self.scenario),
                        versions=versions(), git=git_revision(), wall_start=self.wall_start,
                        backend=self.backend)

    def end_record(self, summary: dict[str, Any], reason: str) -> None:
        self._slog.info(schema.SESSION_END, reason=reason, summary=_loggable(summary),
                        wall_end=time.time())


def _touched(device: BalloonDevice, ppp: int, pfns: array.array[int], order: int,
             owner: int) -> None:
    """The guest is about to use freshly allocated pages (the EPT-fault path, not virtio)."""
    if owner == P.OWNER_BALLOON:
        return  # the balloon driver never touches the contents of its pages
    if order:
        size = 1 << order
        pfns = array.array("I", [p + i for p in pfns for i in range(size)])
    device.touched(pfns, ppp)


def _loggable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary minus wall-clock figures, which live only in the header/footer fields."""
    return {k: v for k, v in summary.items() if k != "wall_seconds"}


def load_policy(scenario: Scenario) -> HostPolicy:
    """The scenario's host policy, configured (PolicyError names what is wrong)."""
    cfg = scenario.host.policy
    return make_policy(cfg.name, {"interval": cfg.interval, **cfg.params})


def _describe(exc: BaseException) -> str:
    """The innermost real exception(s) of a crash, one line each (task groups nest them)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_session(
    scenario: Scenario,
    *,
    seed: int | None = None,
    log_path: Path | None = None,
    level: str = "info",
    console: PrettyConsole | None = None,
    recorder: FlightRecorder | None = None,
    backend: str = "trio",
    validate: Callable[[dict[str, Any]], None] | None = None,
    on_snapshot: Callable[[Session], None] | None = None,
) -> Outcome:
    """Run one session to completion and return its outcome; the log is always closed.

    Bad input (a policy that cannot be loaded) raises before any file is opened.
    """
    policy = load_policy(scenario)
    sinks: list[Sink] = []
    stream = None
    if log_path is not None:
        # A 1 MiB buffer: records of 256 PFNs are KiBs each, so the default 8 KiB buffer would
        # make a write() call every few records. Flushed when the session closes.
        stream = open(log_path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed below
        sinks.append(JsonLinesFile(stream))
    if recorder is not None:
        sinks.append(recorder)
    if console is not None:
        sinks.append(console)
    log = SessionLog(clock=SessionClock(), level=level, sinks=sinks, validate=validate)
    session = Session(scenario, seed=seed, log=log, backend=backend, on_snapshot=on_snapshot,
                      policy=policy)
    reason, error = "completed", None
    try:
        session.start_record()
        if backend == "trio":
            determinism.seed_scheduler(session.seed)
            trio.run(session.main, clock=determinism.virtual_clock())
        else:
            anyio.run(session.main, backend=backend)
        session.check(full=session.guests[0].frames.nr_pages <= 1 << 20)
    except KeyboardInterrupt:
        reason = "interrupted"
    except Exception as exc:  # an actor crashed: log it, still close the log with a summary
        reason = "error"
        error = _describe(exc)
        session._slog.error(schema.SESSION_ERROR, error=error,
                            where=traceback.format_exc(limit=-3))
    finally:
        summary = session.summary(reason)
        session.end_record(summary, reason)
        log.flush()
        if stream is not None:
            stream.close()
    return Outcome(summary=summary, reason=reason, violations=session.violations, error=error,
                   session=session)
