"""Session wiring: build the actors a scenario describes, run them, summarise, always log.

A session is: one or more guests, the host (its devices, memory and policy), a snapshot
ticker that checks invariants, and the log. On the trio backend it runs on virtual time with
a seeded scheduler, so the same scenario, seed and code give a byte-identical log.
``session.start`` is the first record and ``session.end`` (with the summary) the last, also
when an actor crashes or on Ctrl-C.
"""

from __future__ import annotations

import array
import functools
import importlib.metadata
import platform
import signal
import subprocess
import threading
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import sniffio
import trio
from anyio.abc import TaskGroup, TaskStatus

from actors.guest.guest import Guest
from actors.guest.mm import pages as P
from actors.guest.mm import vmstat as views
from actors.host.device import BalloonDevice
from actors.host.host import Host
from actors.host.loader import make_policy
from actors.host.policy import HostPolicy, PolicyError
from actors.sim import schema
from actors.sim.choices import SITES, Choice, Choices
from actors.sim.clock import SessionClock, sleep
from actors.sim.transport import Transport
from protocol import conformance as C
from protocol.balloon import BalloonFeature, feature_mask, pages_per_page, select_features
from run.session import determinism
from run.session.commands import Command
from run.session.logs import FlightRecorder, JsonLinesFile, PrettyConsole, SessionLog, Sink
from run.session.scenario import Scenario, to_dict

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT

#: Signals that end a session the way Ctrl-C does, with ``session.end`` reason ``terminated``.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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
    #: The signal that stopped the session (SIGINT for Ctrl-C), if one did.
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        """0 clean, 1 a problem found, 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM)."""
        if self.signal is not None:
            return 128 + self.signal
        return EXIT_OK if self.reason == "completed" and not self.violations else EXIT_PROBLEM


class Session:
    """One run of one scenario with one seed."""

    def __init__(self, scenario: Scenario, *, seed: int | None = None, log: SessionLog,
                 backend: str = "trio", on_snapshot: Callable[[Session], None] | None = None,
                 policy: HostPolicy | None = None, forced: list[Choice] | None = None,
                 record: bool = False, fail_fast: bool = False,
                 monitor: Monitor | None = None) -> None:
        self.scenario = scenario
        #: What drives the session instead of its duration passing (``vballoon console``).
        self.monitor = monitor
        #: The scenario's actions not applied yet, in time order, each parsed once.
        self._actions = scenario.commands()
        #: Stop at the first violation (fuzzing: only the first one is wanted, and a livelock
        #: found by a watchdog need not be simulated to the end of the scenario).
        self.fail_fast = fail_fast
        self._scope: anyio.CancelScope | None = None
        self.seed = scenario.seed if seed is None else seed
        self.log = log
        if monitor is not None:
            monitor.attach(self)
        self.backend = backend
        self.streams = determinism.RandomStreams(self.seed)
        #: Perturbation and fault decisions: seeded, recorded, or forced (``actors.choices``).
        self.choices = Choices(self.streams.get, scenario.faults, forced=forced, record=record)
        self.violations: list[Violation] = []
        self.on_snapshot = on_snapshot
        self.clock = log.clock if isinstance(log.clock, SessionClock) else SessionClock()
        self.wall_start = time.time()
        self._wall0 = time.perf_counter()
        #: (guest, kind, counter) of balloon problems reported: each drift once.
        self._balloon_reported: set[tuple[str, str, str]] = set()
        self._slog = log.logger("session")
        specs = scenario.guest_specs()
        self.policy = policy if policy is not None else load_policy(scenario)
        total = scenario.host.memory // 4096 or sum(g.memory // 4096 for g in specs)
        self.host = Host(scenario.host, self.policy, scenario.costs, log.logger,
                         report=self.violation, total_pages=total, clock=self.clock,
                         choices=self.choices)
        device_features = feature_mask(*(BalloonFeature[f] for f in scenario.host.features))
        self.guests: list[Guest] = []
        for g in specs:  # each guest's random streams are derived from its name
            driver_features = feature_mask(*(BalloonFeature[f] for f in g.features))
            transport = Transport(g.name, features=select_features(device_features,
                                                                   driver_features))
            guest = Guest(g.name, g, g.workload, scenario.costs, logger=log.logger,
                          rng=self.streams.get, duration=scenario.duration,
                          transport=transport, report=self._kernel_report,
                          compaction=scenario.compaction, clock=self.clock,
                          choices=self.choices)
            ppp = pages_per_page(g.page_size)
            device = self.host.attach(transport, g.memory // 4096, ppp,
                                      min_memory_pages=g.min_memory // 4096,
                                      max_memory_pages=g.max_memory // 4096, shares=g.shares)
            guest.allocator.on_alloc = functools.partial(_touched, device, ppp)
            self.guests.append(guest)

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
        if self.fail_fast and self._scope is not None:
            self._scope.cancel()

    def check(self, *, full: bool = False) -> None:
        """Every snapshot: conservation, and at a quiescent point the balloon against the
        host and its counters against the state they count; the buddy walk at the end."""
        for guest in self.guests:
            problem = guest.conservation_problem()
            if problem:
                self.violation("conservation", f"{guest.name}: {problem}")
            full_walk = full and guest.frames.nr_pages <= 1 << 20  # a buddy walk per page
            if not full:  # (at the end the compactors were cancelled holding their pages)
                self._check_isolated(guest)
            if guest.balloon is not None and self.quiescent(guest):
                # every snapshot: the counts and counters (cheap); at the end the host's
                # ballooned set too, page by page, and the device's own monitor
                device = self.host.devices[guest.name]
                if full:
                    device.feed(C.Quiescent())
                state = device.memory.state if full else None
                for kind, detail in guest.balloon_problems(state):
                    what = (guest.name, kind, detail.split(" ", 1)[0])  # the counter it names
                    if what not in self._balloon_reported:  # a drift is one finding
                        self._balloon_reported.add(what)
                        self.violation(kind, f"{guest.name}: {detail}")
            if full_walk:
                try:
                    guest.zone.check_invariants()
                except AssertionError as e:
                    self.violation("buddy", f"{guest.name}: {e}")

    def _check_isolated(self, guest: Guest) -> None:
        """Balloon pages counted isolated while no compactor runs belong to nobody: every
        isolation ends migrated or put back before its compact_zone returns. (3.8 gets here:
        putback_movable_pages tests balloon_page_movable, which wants page_count 1, on a page
        isolation holds at 2, and sends it to putback_lru_page instead; leak_balloon then
        never finds the pages and tells the host empty deflates for ever.)"""
        b = guest.balloon
        if b is None or guest.compaction_state.running:
            return
        n = b.isolated()
        what = (guest.name, "balloon", "isolated")
        if n and what not in self._balloon_reported:
            self._balloon_reported.add(what)
            self.violation("balloon", f"{guest.name}: {n} balloon pages counted isolated with "
                                      "no compaction running: lost to the driver, never put "
                                      "back on its list")

    def quiescent(self, guest: Guest) -> bool:
        """No handshake in flight, no compaction running (nothing isolated or awaiting its
        release), and the driver has reached its target and told the device."""
        b = guest.balloon
        if b is None or guest.transport is None:
            return False
        vqs = guest.transport.vqs
        busy = any(vqs[q].driver.in_flight for q in (0, 1))
        device = self.host.devices[guest.name]
        return (not busy and b.isolated() == 0 and not guest.compaction_state.running
                and (b.removed or b.towards_target() == 0)
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
                glog = self.log.logger(guest.name)
                glog.info(schema.MEM_SNAPSHOT, free=s.free_pages, buddyinfo=views.buddyinfo(s),
                          frag9=views.fragmentation_index(s, 9), **guest.counters())
                glog.info(schema.SAMPLE_GUEST, **self._guest_sample(guest))
            self.check()
            if self.on_snapshot is not None:
                self.on_snapshot(self)

    async def main(self) -> None:
        """Start every actor, let the scenario's duration pass (applying its actions, or
        as a monitor drives it), then stop them all."""
        self.clock.start()
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            for guest in self.guests:
                await tg.start(guest.run)
            await tg.start(self.host.run)
            await tg.start(self._snapshots)
            if self.monitor is not None:
                await self.monitor.drive(self, tg)
            elif self._actions:
                await self.advance(self.scenario.duration, tg)
            else:
                await sleep(self.scenario.duration)
            self.clock()  # the end of the run is the session's last known time
            tg.cancel_scope.cancel()

    async def advance(self, until: float, tg: TaskGroup,
                      stop: Callable[[], bool] | None = None) -> float:
        """Let virtual time run to ``until`` (session seconds, at most the scenario's end)
        and the session settle there, applying the scenario's actions at their instants on
        the way; or stop early at the end of the instant where ``stop()`` became true (the
        monitor's ``until``, Ctrl-C). Returns the session time it stopped at.

        Every stop is an idle point of the virtual clock (``VirtualClock.pause``): all work
        of that instant done, the schedule unchanged by stopping there. So an action or a
        typed command applied at a stop is applied at a point that re-running the session
        with the same inputs reproduces, whatever made it stop.
        """
        until = min(until, self.scenario.duration)
        while True:
            target = min(until, self._actions[0][0].at) if self._actions else until
            now = await self._pause(target)
            applied = False
            while self._actions and self._actions[0][0].at <= now:
                action, command = self._actions.pop(0)
                outcome = await self.apply(command, tg)
                self._slog.info(schema.SESSION_ACTION, at=action.at, do=action.do,
                                outcome=outcome)
                applied = True
            if applied:
                now = await self._pause(now)  # their effects settle before anything else
            if now >= until or now < target or (stop is not None and stop()):
                return now

    async def _pause(self, until: float) -> float:
        """Wait to the idle point at ``until``: the virtual clock's monitor pause on trio;
        elsewhere (asyncio's real time) a plain sleep, which is all it can offer."""
        clock = self.virtual_clock()
        if clock is None:
            await sleep(max(0.0, until - self.clock()))
            return self.clock()
        epoch = self.clock.epoch
        return await clock.pause(epoch + max(until, self.clock())) - epoch

    def next_instant(self) -> float:
        """The next session time at which anything is due to run (a timer, a deadline)."""
        clock = self.virtual_clock()
        if clock is None:
            return self.clock()
        return min(clock.next_wakeup() - self.clock.epoch, self.scenario.duration)

    @staticmethod
    def virtual_clock() -> determinism.VirtualClock | None:
        """The run's virtual clock, if it runs on one (trio with ``VirtualClock``)."""
        if sniffio.current_async_library() != "trio":
            return None
        clock = trio.lowlevel.current_clock()
        return clock if isinstance(clock, determinism.VirtualClock) else None

    def _guest_sample(self, guest: Guest) -> dict[str, int]:
        """One guest's time-series sample (``schema.SAMPLE_GUEST``)."""
        device = self.host.devices.get(guest.name)
        vm = guest.vmstat
        return {"free": guest.zone.free_pages,
                "target": 0 if device is None else device.target,
                "actual": 0 if device is None else device.actual,
                "rss": 0 if device is None else device.memory.rss,
                "thp_alloc": vm.get("thp_fault_alloc"),
                "thp_fallback": vm.get("thp_fault_fallback"),
                "compact_stall": vm.get("compact_stall"),
                "compact_success": vm.get("compact_success"),
                "compact_fail": vm.get("compact_fail"),
                "balloon_migrated": vm.get("compact_balloon_migrated")}

    async def apply(self, command: Command, tg: TaskGroup) -> str:
        """Carry out one command (run.session.commands); 'applied' or what it did instead."""
        guest = next((g for g in self.guests if g.name == command.guest), None)
        if command.verb == "balloon":
            assert guest is not None
            ram = guest.config.memory
            pages = max(0, ram - command.value) // 4096  # QEMU: balloon = RAM - logical size
            await self.host.set_manual_target(command.guest, pages)
            return "applied" if command.value <= ram else "size above RAM: target 0"
        if command.verb == "policy":
            if not command.args:
                self.host.resume(command.guest or None)
                return "applied"
            return self._swap_policy(command.args)
        if command.verb == "fault":
            return self._set_fault(command.args)
        assert guest is not None
        if command.verb == "compact":
            await guest.compact_memory(tg, command.value or max(1, guest.compaction.workers))
            return "applied"
        return guest.unplug(tg)  # unplug

    def _swap_policy(self, args: tuple[str, ...]) -> str:
        """``policy NAME [KEY=VALUE ...]``: the new policy from the host's next tick on; a
        policy that cannot be made leaves the old one in place and says why."""
        name, params = args[0], dict(_param(w) for w in args[1:])
        try:
            self.host.set_policy(make_policy(name, params))
        except PolicyError as e:
            return f"refused: {e}"
        return "applied"

    def _set_fault(self, args: tuple[str, ...]) -> str:
        """``fault SITE [P|off]``: the site's firing probability from now on."""
        site, active = args[0], self.choices.active
        if len(args) == 2 and args[1] == "off":
            active.pop(site, None)
        else:
            active[site] = float(args[1]) if len(args) == 2 else SITES[site].fire
        return "applied"

    # -- summary -------------------------------------------------------------------------------
    def summary(self, reason: str) -> dict[str, Any]:
        """The run's outcome. The top-level guest keys (``guest``, ``vmstat``, ``buddyinfo``,
        ``thp``, ``balloon``...) describe the first guest, as they always have; ``guests``
        has the same keys for every guest by name, and ``host.guests`` the host's side of each
        (device counters, limits and policy score)."""
        per_guest = {guest.name: _guest_summary(guest) for guest in self.guests}
        return {
            "seed": self.seed,
            "scenario": self.scenario.name,
            "reason": reason,
            "virtual_seconds": round(self.now, 9),
            "wall_seconds": round(time.perf_counter() - self._wall0, 3),
            **per_guest[self.guests[0].name],
            "guests": per_guest,
            "host": self.host.summary(),
            "violations": [v.as_dict() for v in self.violations],
        }

    def start_record(self) -> None:
        self._slog.info(schema.SESSION_START, seed=self.seed, scenario=to_dict(self.scenario),
                        versions=versions(), git=git_revision(), wall_start=self.wall_start,
                        backend=self.backend, log_level=self.log.level,
                        fail_fast=self.fail_fast,
                        faults=self.choices.header())

    def end_record(self, summary: dict[str, Any], reason: str) -> None:
        self._slog.info(schema.SESSION_END, reason=reason, summary=_loggable(summary),
                        wall_end=time.time())


def _param(word: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as a policy parameter: VALUE read as a TOML value (``5``, ``0.2``,
    ``true``, ``"x"``), else as the text itself."""
    key, _, text = word.partition("=")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return key, value


class Monitor(Protocol):
    """What drives a session from outside (``run.session.monitor``): it returns when the
    session is to end, having moved time with ``Session.advance``."""

    def attach(self, session: Session) -> None: ...

    async def drive(self, session: Session, tg: TaskGroup) -> None: ...


def _guest_summary(guest: Guest) -> dict[str, Any]:
    """One guest's part of the summary (the keys the top level has for the first guest)."""
    g = guest.summary()
    return {
        "guest": {"pages": g["pages"], "page_size": g["page_size"],
                  "memory_bytes": g["memory_bytes"], "free_pages": g["free_pages"],
                  "owners": g["owners"], "allocation_pressure": g["allocation_pressure"],
                  "low_memory_seconds": g["low_memory_seconds"]},
        **{k: g[k] for k in ("vmstat", "buddyinfo", "pagetypeinfo", "fragmentation_index",
                             "free_order9_blocks", "unusable_free_index", "thp", "highorder",
                             "compaction")},
        **({"balloon": guest.balloon.summary()} if guest.balloon is not None else {}),
    }


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
    """The scenario's host policy, configured (PolicyError names what is wrong and where)."""
    cfg = scenario.host.policy
    params = {**cfg.params, **({"interval": cfg.interval} if cfg.interval else {})}
    try:
        return make_policy(cfg.name, params)
    except PolicyError as e:
        raise PolicyError(f"[host.policy] of scenario {scenario.name!r}: {e}") from None


def _interrupt_in(exc: BaseException) -> bool:
    """Whether ``exc`` is, or a task group's exception group holds, a KeyboardInterrupt."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupt_in(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


@contextmanager
def stop_signals_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM and SIGHUP interrupt like Ctrl-C; yields the signals received.

    The handler hands the signal to whatever handles SIGINT at that moment: trio's handler
    while trio runs (it raises KeyboardInterrupt where that is safe), Python's default
    otherwise. Off the main thread (where handlers cannot be set) it does nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        # a console's Ctrl-C pauses its run; a stop signal still ends it, through the
        # handler the console's stands in front of
        handler = getattr(handler, "terminate", handler)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored or defaulted at the C level: interrupt all the same
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and the stop signals while the log is closed, so a second one cannot cut
    ``session.end`` in half; one that came meanwhile is delivered on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, *STOP_SIGNALS}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
    policy: HostPolicy | None = None,
    forced: list[Choice] | None = None,
    record: bool = False,
    fail_fast: bool = False,
    monitor: Monitor | None = None,
) -> Outcome:
    """Run one session to completion and return its outcome; the log is always closed.

    Bad input (a policy that cannot be loaded) raises before any file is opened. ``policy``
    replaces the scenario's (a policy object under test: ``run/harness.py``).
    """
    policy = policy if policy is not None else load_policy(scenario)
    sinks: list[Sink] = []
    if recorder is not None:
        sinks.append(recorder)
    if console is not None:
        sinks.append(console)
    log = SessionLog(clock=SessionClock(), level=level, sinks=sinks, validate=validate)
    session = Session(scenario, seed=seed, log=log, backend=backend, on_snapshot=on_snapshot,
                      policy=policy, forced=forced, record=record, fail_fast=fail_fast,
                      monitor=monitor)
    stream = None
    if log_path is not None:  # opened (truncating) only once every actor could be built
        # A 1 MiB buffer: records of 256 PFNs are KiBs each, so the default 8 KiB buffer would
        # make a write() call every few records. Flushed when the session closes.
        stream = open(log_path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed below
        log.add_sink(JsonLinesFile(stream))
    reason, error, stopped_by = "completed", None, None
    with stop_signals_interrupt() as received:
        try:
            session.start_record()
            log.flush()  # the header is on disk even if the process dies without unwinding
            if backend == "trio":
                determinism.seed_scheduler(session.seed)
                # Ctrl-C (and the stop signals forwarded to it) only at a checkpoint: raised
                # anywhere else it could land inside a C call back into Python (orjson's
                # default hook) and come out as some other exception.
                clock = determinism.virtual_clock()
                trio.run(session.main, clock=clock, instruments=[clock],
                         restrict_keyboard_interrupt_to_checkpoints=True)
            else:
                anyio.run(session.main, backend=backend)
            if fail_fast and session.violations:
                reason = "first-violation"
            else:
                session.check(full=True)
        except BaseException as exc:  # Ctrl-C, a stop signal, or an actor crashed
            if _interrupt_in(exc):
                stopped_by = received[0] if received else signal.SIGINT
                reason = "interrupted" if stopped_by == signal.SIGINT else "terminated"
            else:  # log it, still close the log with a summary
                reason = "crashed"
                error = _describe(exc)
                session._slog.error(schema.SESSION_ERROR, error=error,
                                    where="".join(traceback.format_exception(exc, limit=-3)))
        finally:
            with _signals_held():
                summary = session.summary(reason)
                session.end_record(summary, reason)
                log.flush()
                if stream is not None:
                    stream.close()
    return Outcome(summary=summary, reason=reason, violations=session.violations, error=error,
                   session=session, signal=stopped_by)
