"""``vballoon console``'s front end: prompt_toolkit line editing over a paused session.

The monitor (``run.session.monitor``) decides what a line does; this module reads the lines
(prompt_toolkit with completion and history on a terminal, plain lines from a pipe), shows
what reading commands ask for (``run.console.info``), and paces ``continue`` with the live
dashboard. While the operator types, the trio loop is blocked on purpose: the simulated
machine stands still, as a VM does under QEMU's monitor with ``stop``.
"""

from __future__ import annotations

import contextlib
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from actors.host.policies import BUILTINS
from actors.host.policy import PolicyError
from actors.sim import schema
from actors.sim.choices import SITES
from run.console import info
from run.console.options import session_options
from run.session import scenario as scen
from run.session.logs import LEVELS, PrettyConsole
from run.session.monitor import ALL_COMMANDS, INFO_TOPICS, Frontend, Line, Monitor, Script
from run.session.session import run_session

if TYPE_CHECKING:
    from run.session.session import Session


class PauseOnInterrupt:
    """The SIGINT handler while a run goes on: Ctrl-C stops the run at the end of the
    instant instead of ending the session; ``terminate`` (the handler it stands in front of)
    still ends it on SIGTERM/SIGHUP (``run.session.session.stop_signals_interrupt``)."""

    def __init__(self, monitor: Monitor, terminate: Any) -> None:
        self.monitor = monitor
        self.terminate = terminate

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.monitor.interrupt()


class Interactive:
    """Lines typed at a terminal (prompt_toolkit), or read from a pipe one per line."""

    def __init__(self, console: Console, guests: list[str]) -> None:
        self.console = console
        self.tty = sys.stdin.isatty() and console.is_terminal
        self.pretty = PrettyConsole(console)
        self._prompt: Any = None
        if self.tty:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.completion import NestedCompleter
            from prompt_toolkit.history import InMemoryHistory

            per_guest = dict.fromkeys(guests)
            tree: dict[str, Any] = {verb: None for verb in ALL_COMMANDS}
            tree.update(
                info=dict.fromkeys(INFO_TOPICS), help=dict.fromkeys(ALL_COMMANDS),
                balloon=per_guest, compact=per_guest, unplug=per_guest, dommemstat=per_guest,
                policy={"resume": per_guest, **dict.fromkeys(BUILTINS)},
                fault=dict.fromkeys(SITES), until=dict.fromkeys(schema.EVENTS),
                log={"tail": None, "level": dict.fromkeys(LEVELS)},
                **{"continue": {"--speed": None}})
            self._prompt = PromptSession(history=InMemoryHistory(),
                                         completer=NestedCompleter.from_nested_dict(tree))

    def read(self, session: Session) -> tuple[str, float | None] | None:
        prompt = f"(vballoon {session.now:.6g}s) "
        if not self.tty:
            line = sys.stdin.readline()
            return None if not line else (line, None)
        while True:
            try:
                # handle_sigint=False: Ctrl-C at the prompt is a key (cancel the line), and
                # the trio run keeps the process's signal handlers
                return self._prompt.prompt(prompt, handle_sigint=False), None
            except KeyboardInterrupt:
                continue  # Ctrl-C: a new line, as in a shell
            except EOFError:  # Ctrl-D
                return None

    def show(self, line: Line, session: Session, monitor: Monitor) -> None:
        if line.verb == "help":
            names = line.args or tuple(ALL_COMMANDS)
            for name in names:
                self.console.print(ALL_COMMANDS[name], markup=False, highlight=False)
        elif line.verb == "info":
            self.console.print(info.INFO[line.args[0]](session))
        elif line.verb == "dommemstat":
            self.console.print(info.dommemstat(session, line.args[0]))
        elif line.verb == "log":  # tail
            n = int(line.args[1]) if len(line.args) == 2 else 10
            for record in list(monitor.tail)[-n:]:
                self.pretty.write(record)
        else:  # pause, with nothing running
            self.say("nothing is running ('continue' runs)")

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def echo(self, record: dict[str, Any]) -> None:
        self.pretty.write(record)

    @contextlib.contextmanager
    def running(self, session: Session, monitor: Monitor, speed: float | None
                ) -> Iterator[None]:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, PauseOnInterrupt(monitor, previous))
        try:
            if speed is None:
                yield
            else:
                with self._paced(session, monitor, speed):
                    yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def _paced(self, session: Session, monitor: Monitor, speed: float) -> Iterator[None]:
        """``continue``: the dashboard at every snapshot, time paced to ``speed``; a line
        typed meanwhile ('pause', or anything) stops the run."""
        from run.console.dashboard import LiveView

        def wait(seconds: float) -> None:
            ready, _, _ = select.select([sys.stdin], [], [], seconds)
            if ready:
                sys.stdin.readline()
                monitor.interrupt()

        view = LiveView(self.console, session.scenario.duration, speed, wait=wait,
                        start=session.now)
        self.say(f"running at {speed:g}x real time: 'pause' (Enter) or Ctrl-C stops")
        with view if self.console.is_terminal else contextlib.nullcontext():
            session.on_snapshot = view.on_snapshot if self.console.is_terminal else view.pace
            try:
                yield
            finally:
                session.on_snapshot = None


@click.command(name="console", short_help="Drive a session interactively: a monitor on "
                                          "paused virtual time.")
@click.argument("scenario", required=False)
@session_options
def console_cmd(scenario: str | None, seed: int | None, log_path: Path | None,
                duration: str | None, sets: tuple[str, ...], driver: str | None,
                level: str) -> None:
    """A monitor over a session of SCENARIO (default: 'default') whose virtual time moves
    only when told: 'help' lists the commands. SCENARIO may also be a console session's log:
    its typed lines are applied again up to its end, then the prompt is yours."""
    from run.console.cli import BadInput, _console, _load, _writable
    from run.console.report import print_summary
    from run.lab import replay as rp
    from run.logtools.logread import LogError

    if driver is not None:
        sets = (*sets, f"guest.driver={driver}")
    earlier: list[tuple[float, str]] = []
    source = Path(scenario) if scenario is not None else None
    if source is not None and source.is_file() and source.suffix != ".toml":
        try:
            header = rp.read_header(source)
            earlier = [(t, text) for t, text in rp.console_inputs(rp.log_lines(source))
                       if text.split()[:1] != ["quit"]]
            sc = scen.from_data(header["scenario"], f"{source}: header scenario")
        except (LogError, ValueError) as e:
            raise BadInput(f"{source}: {e}") from None
        seed = header["seed"] if seed is None else seed
        level = header.get("log_level", level)
    else:
        sc = _load(scenario, sets, duration)
    _writable(log_path, "--log", inputs=(source,))
    out = _console()
    typed = Interactive(out, [g.name for g in sc.guest_specs()])
    frontend: Frontend = Script(earlier, then=typed) if earlier else typed
    out.print(f"vballoon console: {sc.name}, seed {sc.seed if seed is None else seed}, "
              f"{sc.duration:g} s of virtual time; 'help' for the commands, 'quit' to end",
              markup=False, highlight=False)
    try:
        outcome = run_session(sc, seed=seed, log_path=log_path, level=level,
                              monitor=Monitor(frontend))
    except PolicyError as e:
        raise BadInput(f"{scenario or 'default'}: {e}") from None
    except OSError as e:
        raise BadInput(f"cannot write: {e}") from None
    print_summary(out, outcome.summary, full=False)
    if outcome.error:
        click.echo(f"vballoon: session error: {outcome.error}", err=True)
    sys.exit(outcome.exit_code)
