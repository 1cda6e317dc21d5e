"""A session driven from outside: ``vballoon console``'s monitor over a stopped machine.

Virtual time moves only when the monitor says (``run``, ``until``, ``step``, ``continue``);
in between, the whole simulated machine stands still at an idle point of the virtual clock
(``VirtualClock.pause``) while the operator reads state (``info ...``) or changes it
(``balloon``, ``policy``, ``compact``, ``fault``, ``unplug``: the language of scenario
``[[actions]]``, ``run.session.commands``). Every line the operator types is a
``session.input`` record at the instant it took effect. Replaying a console log feeds the same
lines back at their instants (``Script``), so the log is the same record for record: where
the operator stopped, and how long they took to type, leaves no trace in the schedule.

The monitor is pure control; what a line shows (tables, the dashboard of ``continue``) is the
front end's (``run.console.console``), and a replay has none.
"""

from __future__ import annotations

import difflib
import math
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from actors.sim import schema
from actors.sim.units import parse_duration
from run.session.commands import COMMANDS, Command, CommandError, parse_command
from run.session.logs import LEVELS, Record

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from run.session.determinism import VirtualClock
    from run.session.session import Session

#: What ``info`` shows.
INFO_TOPICS: Final = ("balloon", "guests", "host", "buddyinfo", "pagetypeinfo", "vmstat",
                      "locks", "tasks", "faults")

#: The console's own commands and their one-line help (the session's are ``COMMANDS``).
CONSOLE_COMMANDS: Final[dict[str, str]] = {
    "help": "help [COMMAND]: the commands, or one of them",
    "info": f"info {'|'.join(INFO_TOPICS)}: the session's state now",
    "dommemstat": "dommemstat GUEST: the guest's memory statistics, as virsh shows them",
    "run": "run DURATION: let DURATION of virtual time pass (e.g. 5s, 250ms)",
    "until": "until EVENT [where FIELD=VALUE]: run until a record of EVENT (with that field)",
    "step": "step [TASK]: run to the next instant anything runs (or TASK changes state)",
    "continue": "continue [--speed X]: run at X times real time (default 1) until the end, "
                "'pause' or Ctrl-C",
    "pause": "pause: stop a 'continue' (typed while it runs)",
    "log": "log tail [N] | log level LEVEL: the last N records, or which ones are echoed",
    "quit": "quit: end the session here (its session.end and summary)",
}

#: Every command the console takes, with its help.
ALL_COMMANDS: Final[dict[str, str]] = {**CONSOLE_COMMANDS, **COMMANDS}

#: Verbs that let virtual time run; the rest take effect at the current instant.
RUNS: Final = frozenset({"run", "until", "step", "continue"})

#: How many records ``log tail`` can show.
TAIL: Final = 2000

#: ``step TASK`` gives up after this many instants without the task changing.
STEP_LIMIT: Final = 100_000


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed console line: its verb, its words, and the session command if it is one."""

    verb: str
    args: tuple[str, ...]
    command: Command | None = None

    @property
    def text(self) -> str:
        """The line as the log records it (words joined by one space)."""
        return " ".join((self.verb, *self.args))


def parse_line(text: str, guests: list[str]) -> Line:
    """``text`` as a Line; CommandError says what is wrong (nothing has happened yet)."""
    words = text.split()
    if not words:
        raise CommandError("empty line")
    verb, args = words[0], tuple(words[1:])
    if verb in COMMANDS:
        return Line(verb, args, parse_command(text, guests))
    if verb not in CONSOLE_COMMANDS:
        close = difflib.get_close_matches(verb, list(ALL_COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CommandError(f"unknown command {verb!r}{hint}; 'help' lists them")
    usage = CONSOLE_COMMANDS[verb].split(":", 1)[0]
    check = _CHECKS.get(verb)
    if check is not None:
        check(args, usage, guests)
    elif args and verb in ("pause", "quit"):
        raise CommandError(f"usage: {usage}")
    return Line(verb, args)


def _check_help(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) > 1 or (args and args[0] not in ALL_COMMANDS):
        raise CommandError(f"usage: {usage} (commands: {', '.join(ALL_COMMANDS)})")


def _check_info(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) != 1 or args[0] not in INFO_TOPICS:
        raise CommandError(f"usage: {usage}")


def _check_guest(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) != 1:
        raise CommandError(f"usage: {usage}")
    if args[0] not in guests:
        raise CommandError(f"no guest {args[0]!r}; this session has: {', '.join(guests)}")


def _check_run(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) != 1:
        raise CommandError(f"usage: {usage}")
    try:
        parse_duration(args[0])
    except ValueError as e:
        raise CommandError(f"run: DURATION {args[0]!r}: {e}") from None


def _check_until(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "where"):
        raise CommandError(f"usage: {usage}")
    if args[0] not in schema.EVENTS:
        close = difflib.get_close_matches(args[0], list(schema.EVENTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CommandError(f"until: no event {args[0]!r}{hint}")
    if len(args) == 3:
        field, sep, _ = args[2].partition("=")
        fields = ("t", "actor", "level", *schema.EVENTS[args[0]].fields)
        if not sep or field not in fields:
            raise CommandError(f"until {args[0]}: expected FIELD=VALUE with FIELD one of "
                               f"{', '.join(fields)}, got {args[2]!r}")


def _check_step(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if len(args) > 1:
        raise CommandError(f"usage: {usage}")


def _check_continue(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if not args:
        return
    if len(args) != 2 or args[0] != "--speed":
        raise CommandError(f"usage: {usage}")
    if speed(args) <= 0:
        raise CommandError(f"continue: --speed must be a number > 0, got {args[1]!r}")


def _check_log(args: tuple[str, ...], usage: str, guests: list[str]) -> None:
    if args[:1] == ("tail",) and len(args) <= 2:
        if len(args) == 2 and not (args[1].isdigit() and 0 < int(args[1]) <= TAIL):
            raise CommandError(f"log tail: N must be 1..{TAIL}, got {args[1]!r}")
        return
    if args[:1] == ("level",) and len(args) == 2 and args[1] in LEVELS:
        return
    raise CommandError(f"usage: {usage} (LEVEL: {'|'.join(LEVELS)})")


_CHECKS: Final[dict[str, Callable[[tuple[str, ...], str, list[str]], None]]] = {
    "help": _check_help, "info": _check_info, "dommemstat": _check_guest, "run": _check_run,
    "until": _check_until, "step": _check_step, "continue": _check_continue, "log": _check_log,
}


def speed(args: tuple[str, ...]) -> float:
    """``continue``'s speed (1 unless ``--speed X``; -1 if X is not a number)."""
    if not args:
        return 1.0
    try:
        value = float(args[1])
    except ValueError:
        return -1.0
    return value if math.isfinite(value) else -1.0


def matcher(args: tuple[str, ...]) -> Callable[[Record], bool]:
    """``until EVENT [where FIELD=VALUE]`` as a test of one record (VALUE compared as the
    text of the record's value, so ``where guest=guest0`` and ``where n=256`` both work)."""
    event = args[0]
    if len(args) == 1:
        return lambda r: r["event"] == event
    field, _, value = args[2].partition("=")
    return lambda r: r["event"] == event and field in r and _text(r[field]) == value


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class Frontend(Protocol):
    """Where a monitor's lines come from and what they show (``run.console.console``)."""

    def read(self, session: Session) -> tuple[str, float | None] | None:
        """The next line, and the session time it takes effect at if it is scripted (None:
        now, typed); None at the end of input."""

    def show(self, line: Line, session: Session, monitor: Monitor) -> None:
        """Show what a line that reads state asks for (info, help, log tail...)."""

    def say(self, text: str) -> None:
        """A message to the operator: an error, where a run stopped, ..."""

    def running(self, session: Session, monitor: Monitor, speed: float | None
                ) -> AbstractContextManager[None]:
        """A context for a run: Ctrl-C stops it (``monitor.interrupt()``); for ``continue``
        (a ``speed``) also paced to ``speed`` x real time, with a way to say 'pause'."""

    def echo(self, record: Record) -> None:
        """A record at or above the echo level (``log level``), as it is written."""


class Monitor:
    """Drives a session from a front end's lines; ``Session.main`` awaits ``drive``."""

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        #: The last records, for ``log tail``.
        self.tail: deque[Record] = deque(maxlen=TAIL)
        #: The lowest level the front end echoes (``log level``); display only.
        self._echo = LEVELS["warning"]
        #: Set by ``until``: a record it waits for; ``_matched`` once one came.
        self._match: Callable[[Record], bool] | None = None
        self._matched = False
        self._interrupted = False
        self._clock: VirtualClock | None = None
        self.ended = False  # quit

    # -- a log sink ------------------------------------------------------------------------
    def write(self, record: Record) -> None:
        """Every record passes here: kept for ``log tail``, tested for ``until``."""
        self.tail.append(record)
        if self._echo <= LEVELS[record.get("level", "info")]:
            self.frontend.echo(record)
        if self._match is not None and self._match(record):
            self._matched = True
            self.interrupt()

    def attach(self, session: Session) -> None:
        """Called by the session as it is built: its log's records come here from the start."""
        session.log.add_sink(self)

    def interrupt(self) -> None:
        """Stop the run at the end of the current instant (Ctrl-C, 'pause', an ``until``
        match); safe from a signal handler."""
        self._interrupted = True
        if self._clock is not None:
            self._clock.stop_soon()

    def _stop(self) -> bool:
        return self._interrupted

    # -- driving ---------------------------------------------------------------------------
    async def drive(self, session: Session, tg: TaskGroup) -> None:
        """Read, log and carry out lines until ``quit`` (or the end of input)."""
        self._clock = session.virtual_clock()
        if self._clock is None:
            raise RuntimeError("a monitor needs the trio backend's virtual clock")
        log = session.log.logger("session")
        guests = [g.name for g in session.guests]
        while not self.ended:
            await session.advance(session.now, tg)  # the instant settles before each line
            got = self.frontend.read(session)
            text, at = ("quit", None) if got is None else got
            try:
                line = parse_line(text, guests)
            except CommandError as e:
                self.frontend.say(f"error: {e}")
                continue
            if at is not None:  # scripted (a replay): the line's own instant
                await session.advance(at, tg)
            outcome = "shown"
            if line.command is not None:
                outcome = await session.apply(line.command, tg)
            elif line.verb in RUNS:
                outcome = "ran"
            elif line.verb == "quit":
                outcome, self.ended = "ended", True
            log.info(schema.SESSION_INPUT, do=line.text, outcome=outcome, at=session.now)
            if at is not None:
                continue  # a replay re-applies; where a run stopped is the next line's time
            if line.command is not None:
                if outcome != "applied":
                    self.frontend.say(outcome)
            elif line.verb in RUNS:
                await self._run(line, session, tg)
            elif line.verb == "log" and line.args[0] == "level":
                self._echo = LEVELS[line.args[1]]
                if LEVELS[line.args[1]] < LEVELS[session.log.level]:
                    self.frontend.say(f"this session records {session.log.level} and above: "
                                      f"start it with --level {line.args[1]} to see more")
            elif line.verb != "quit":
                self.frontend.show(line, session, self)

    async def _run(self, line: Line, session: Session, tg: TaskGroup) -> None:
        """Let time run as ``line`` says, then tell the operator where it stopped."""
        end = session.scenario.duration
        if session.now >= end:
            self.frontend.say(f"the session is at its end ({end:g} s): 'quit', or start the "
                              f"console with --duration to run longer")
            return
        self._interrupted = self._matched = False
        start = session.now
        with self.frontend.running(session, self,
                                   speed(line.args) if line.verb == "continue" else None):
            if line.verb == "run":
                now = await session.advance(start + parse_duration(line.args[0]), tg,
                                            self._stop)
            elif line.verb == "until":
                self._match = matcher(line.args)
                try:
                    now = await session.advance(end, tg, self._stop)
                finally:
                    self._match = None
                if not self._matched:
                    self.frontend.say(f"no {line.args[0]} record before t = {now:.9g} s")
            elif line.verb == "step":
                now = await self._step(line.args[0] if line.args else None, session, tg)
            else:  # continue
                now = await session.advance(end, tg, self._stop)
        why = " (interrupted)" if self._interrupted and not self._matched else ""
        self.frontend.say(f"t = {now:.9g} s{why}")

    async def _step(self, task: str | None, session: Session, tg: TaskGroup) -> float:
        """To the next instant at which anything runs; with TASK, until that kernel task's
        state (running, blocked on, holding) is not what it was, or it has gone."""
        def state() -> tuple[Any, ...] | None:
            assert task is not None
            for guest in session.guests:
                t = guest.kernel.tasks.get(task)
                if t is not None:
                    return (guest.name, t.state, t.waiting_on, t.since, tuple(t.held_names()))
            return None

        before = None if task is None else state()
        if task is not None and before is None:
            self.frontend.say(f"no task {task!r} now ('info tasks' lists them)")
            return session.now
        for _ in range(STEP_LIMIT):
            nxt = session.next_instant()
            now = await session.advance(nxt, tg, self._stop)
            if task is None or self._interrupted or now >= session.scenario.duration:
                return now
            if state() != before:
                return now
        self.frontend.say(f"{task} did not change in {STEP_LIMIT} instants")
        return session.now


class Script:
    """A front end that replays logged lines at their instants and shows nothing (replay);
    then, if given, hands over to another front end (``console LOG``), which shows what the
    lines after the logged ones do."""

    def __init__(self, lines: list[tuple[float, str]], then: Frontend | None = None) -> None:
        self.lines = deque(lines)
        self.then = then
        #: The front end shown to once the logged lines are used up (None while replaying).
        self._shown: Frontend | None = None

    def read(self, session: Session) -> tuple[str, float | None] | None:
        if self.lines:
            t, text = self.lines.popleft()
            return text, t
        self._shown = self.then
        return None if self.then is None else self.then.read(session)

    def show(self, line: Line, session: Session, monitor: Monitor) -> None:
        if self._shown is not None:
            self._shown.show(line, session, monitor)

    def say(self, text: str) -> None:
        if self._shown is not None:
            self._shown.say(text)

    def running(self, session: Session, monitor: Monitor, speed: float | None
                ) -> AbstractContextManager[None]:
        assert self._shown is not None  # a scripted line never runs (its time says where)
        return self._shown.running(session, monitor, speed)

    def echo(self, record: Record) -> None:
        if self._shown is not None:
            self._shown.echo(record)


def logged_lines(records: list[Record]) -> list[tuple[float, str]]:
    """The lines a console session's log records, at their instants (for ``Script``)."""
    return [(r["at"], r["do"]) for r in records if r["event"] == schema.SESSION_INPUT]
