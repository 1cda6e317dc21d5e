"""The ``vballoon`` command: one entry point, subcommands, exit codes scripts can trust.

0 ok, 1 the run or check found a problem, 2 bad usage or bad input (one clear line).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from actors.guest.balloon import DRIVERS
from actors.guest.config import STRATEGIES
from actors.host.policy import PolicyError
from actors.sim.choices import Choice
from run.console.options import session_options
from run.console.timeseries import draw_comparison, plot_option, plot_target
from run.lab.cluster import ClusterError
from run.session import scenario as scen
from run.session.commands import COMMANDS
from run.session.logs import FlightRecorder, PrettyConsole, json_bytes
from run.session.session import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    run_session,
    stop_signals_interrupt,
)


class BadInput(click.ClickException):
    """Bad usage or input: printed as one line, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"vballoon: error: {self.format_message()}", err=True)


def _console(*, stderr: bool = False) -> Console:
    """A rich console; off a terminal, wide enough that no table cell is ever cut."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=_PIPE_WIDTH)
    return console


#: Columns of output that is not a terminal (a file, a pipe): tables keep every value.
_PIPE_WIDTH = 1000


def _load(spec: str | None, sets: tuple[str, ...], duration: str | None) -> scen.Scenario:
    overrides = list(sets)
    if duration is not None:
        overrides.append(f"duration={duration}")
    try:
        return scen.load(spec, overrides)
    except scen.ScenarioError as e:
        raise BadInput(str(e)) from None


def _writable(path: Path | None, what: str, *, inputs: Sequence[Path | None] = ()) -> None:
    """Refuse, before anything runs, an output that cannot be written or that is an input."""
    if path is None:
        return
    parent = path.resolve().parent
    if not parent.is_dir():
        raise BadInput(f"{what} {path}: directory {parent} does not exist")
    if path.is_dir():
        raise BadInput(f"{what} {path}: is a directory")
    for source in inputs:
        if source is not None and _same_file(path, source):
            raise BadInput(f"{what} {path}: is also an input ({source}); refusing to "
                           "overwrite it")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same inode if both exist)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _write_output(path: Path, what: str, data: bytes) -> None:
    """Write an output file; a failure (full disk, read-only place) is bad input, exit 2."""
    try:
        path.write_bytes(data)
    except OSError as e:
        raise BadInput(f"{what} {path}: cannot write: {e.strerror or e}") from None


def _json_outputs(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The one output grammar: ``--json`` prints ``what`` as JSON on stdout (the tables go
    to stderr), ``-o/--output PATH`` writes it to a file; both may be given."""
    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("-o", "--output", "json_path", type=click.Path(path_type=Path),
                         help=f"Write {what} as JSON to this file.")(f)
        return click.option("--json", "as_json", is_flag=True,
                            help=f"Print {what} as JSON on stdout.")(f)
    return wrap


def _deliver_json(data: bytes, as_json: bool, path: Path | None, what: str = "--output"
                  ) -> None:
    """Where ``_json_outputs`` said: stdout, a file, or both."""
    if path is not None:
        _write_output(path, what, data)
    if as_json:
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.flush()


def _capped_jobs(jobs: int, work: int) -> int:
    """--jobs, capped at the number of runs and of CPUs (and saying so when it is)."""
    from run.lab.pool import usable_processes

    usable = usable_processes(jobs, work)
    if usable < jobs:
        click.echo(f"vballoon: --jobs {jobs} capped to {usable} ({work} runs, "
                   f"{os.cpu_count() or 1} CPUs)", err=True)
    return usable


def _stopped_exit(received: list[int]) -> int:
    """The exit code of a campaign stopped by Ctrl-C (130) or a stop signal (128+N)."""
    return 128 + (received[0] if received else signal.SIGINT)


#: Options shared by the commands that run many sessions.
_sets_for_every_run = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Override a scenario field for every run (repeatable).")
_jobs = click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Parallel processes.")


def _seeds_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--seeds, as fuzz and both compare commands take it (parsed by ``_seeds``)."""
    return click.option("--seeds", default=default, show_default=True,
                        help="N (seeds 0..N-1), A..B (inclusive), or a comma list.")


def _seeds(text: str) -> list[int]:
    from run.lab.compare import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as e:
        raise BadInput(f"--seeds {text!r}: {e}") from None


class _Commands(click.Group):
    """The command group; a Ctrl-C that reaches it exits 130 (click's own choice is 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a subcommand's bad option: one line, like BadInput
            where = e.ctx.command_path if e.ctx is not None else "vballoon"
            raise BadInput(f"{where}: {e.format_message()}") from None
        except KeyboardInterrupt:
            click.echo("vballoon: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vballoon")
def main() -> None:
    """vballoon: a simulator of Linux memory ballooning with balloon page compaction."""


@main.command(
             short_help="Run a scenario and summarise it (live dashboard in a terminal).")
@click.argument("scenario", required=False)
@session_options
@click.option("-o", "--output", "--summary", "summary_path", type=click.Path(path_type=Path),
              help="Write the summary as JSON here.")
@click.option("--do", "actions", multiple=True, metavar="'TIME: COMMAND'",
              help="Apply a command at a virtual time, e.g. --do '10s: compact guest0' "
                   "(repeatable; commands: " + "; ".join(COMMANDS.values()) + ").")
@click.option("-v", "--verbose", is_flag=True, help="Also print log records to the console.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True),
              help="Run at X times real time so the live dashboard can be watched "
                   "(a terminal only; the log is the same at any speed).")
@click.option("--full", is_flag=True,
              help="Print every counter of the summary (buddyinfo, vmstat, host, score).")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio",
              show_default=True,
              help="trio: virtual time, deterministic. asyncio: real time, not deterministic.")
@click.option("--choices", "choices_path", type=click.Path(path_type=Path),
              help="Force the perturbation and fault choices of a choices file (written by "
                   "fuzz --minimise); scenario and seed default to the file's.")
@click.option("--fail-fast", is_flag=True,
              help="Stop the session at its first violation (how fuzz runs it).")
@click.option("--check-determinism", is_flag=True,
              help="Run twice and confirm both logs are identical record for record.")
def run(scenario: str | None, seed: int | None, log_path: Path | None,
        summary_path: Path | None, duration: str | None, sets: tuple[str, ...],
        driver: str | None, actions: tuple[str, ...], level: str, verbose: bool,
        as_json: bool, speed: float | None, full: bool, backend: str,
        choices_path: Path | None, fail_fast: bool, check_determinism: bool) -> None:
    """Run a SCENARIO (built-in name or TOML path; default: 'default') and summarise it."""
    if driver is not None:
        sets = (*sets, f"guest.driver={driver}")
    forced = None
    if choices_path is not None:
        from run.lab import minimise

        extra = [*sets, *([f"duration={duration}"] if duration else [])]
        try:
            file_sc, file_seed, forced = minimise.load(choices_path, extra)
        except minimise.ChoicesFileError as e:
            raise BadInput(str(e)) from None
        sc = file_sc if scenario is None else _load(scenario, sets, duration)
        seed = file_seed if seed is None else seed
    else:
        sc = _load(scenario, sets, duration)
    if actions:
        try:
            sc = scen.with_actions(sc, actions)
        except scen.ScenarioError as e:
            raise BadInput(str(e)) from None
    if check_determinism and backend != "trio":
        raise BadInput("--check-determinism needs --backend trio (asyncio runs in real time)")
    scenario_file = Path(scenario) if scenario is not None and Path(scenario).is_file() else None
    _writable(log_path, "--log", inputs=(scenario_file, choices_path))
    _writable(summary_path, "--summary", inputs=(scenario_file, choices_path, log_path))
    out = _console(stderr=as_json)
    pretty = PrettyConsole(_console(stderr=True)) if verbose else None
    view = None
    if out.is_terminal and not verbose and not as_json:
        from run.console.dashboard import LiveView

        view = LiveView(out, sc.duration, speed)
    elif speed is not None:
        raise BadInput("--speed paces the live dashboard: it needs a terminal (and no -v, "
                       "no --json)")
    recorder = FlightRecorder() if check_determinism else None
    try:
        with view if view is not None else contextlib.nullcontext():
            outcome = run_session(sc, seed=seed, log_path=log_path, level=level,
                                  console=pretty, backend=backend,
                                  on_snapshot=None if view is None else view.on_snapshot,
                                  recorder=recorder, forced=forced, fail_fast=fail_fast)
    except PolicyError as e:
        raise BadInput(f"{scenario or 'default'}: {e}") from None
    except OSError as e:
        raise BadInput(f"cannot write: {e}") from None
    summary = outcome.summary
    if summary_path is not None:
        _write_output(summary_path, "--summary", json_bytes(summary, indent=True))
    if as_json:
        sys.stdout.buffer.write(json_bytes(summary, indent=True) + b"\n")
    else:
        from run.console.report import print_summary

        print_summary(out, summary, full=full)
    if outcome.error:
        click.echo(f"vballoon: session error: {outcome.error}", err=True)
    _policy_raised(summary)
    if outcome.signal is not None:
        sys.exit(outcome.exit_code)
    code = outcome.exit_code
    if recorder is not None and not _same_twice(sc, summary["seed"], level, forced, fail_fast,
                                                recorder):
        code = max(code, 1)
    if code:
        again = scen.reproduce_command(scenario, seed=summary["seed"], choices=choices_path,
                                       sets=sets, duration=duration, level=level,
                                       fail_fast=fail_fast)
        click.echo(f"reproduce: {again}", err=True)
    sys.exit(code)


def _policy_raised(summary: Mapping[str, Any]) -> None:
    """A policy that raised: its first traceback, at the author's file and line, once."""
    host = summary.get("host", {})
    first = host.get("policy_first_error")
    if first:
        click.echo(f"vballoon: the host policy raised {host.get('policy_errors', 0)} time(s) "
                   f"(each decision it failed kept the previous targets); the first:\n"
                   f"{first}", err=True)


def _same_twice(sc: scen.Scenario, seed: int, level: str, forced: list[Choice] | None,
                fail_fast: bool, first: FlightRecorder) -> bool:
    """Run the session again and compare logs; print the first difference if any."""
    from run.lab.replay import first_difference, show_difference
    from run.session.logs import dumps

    again = FlightRecorder()
    run_session(sc, seed=seed, level=level, recorder=again, forced=forced, fail_fast=fail_fast)
    a = [dumps(r).rstrip(b"\n") for r in first.records]
    b = [dumps(r).rstrip(b"\n") for r in again.records]
    diff = first_difference(a, b)
    if diff is None:
        click.echo(f"determinism: both runs wrote the same {len(a)} records", err=True)
        return True
    click.echo("determinism: the two runs differ", err=True)
    show_difference(_console(stderr=True), diff, a, ("first run", "second run"))
    return False


@main.command(
             short_help="Re-run a session log and confirm an identical log.")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--policy", "policy", metavar="NAME",
              help="Allow the log's host policy if it is not built in: NAME must be the one "
                   "the log names (module:attr, path/to/file.py:Class, an entry point).")
@click.option("--trust-policy", is_flag=True,
              help="Load whatever host policy the log names (its code runs: only for logs "
                   "you trust).")
def replay(log: Path, policy: str | None, trust_policy: bool) -> None:
    """Re-run the session LOG records (from its header) and confirm an identical log.

    A log names its host policy; one that is not built in is Python code, so it is loaded only
    with --policy NAME (the same name) or --trust-policy."""
    from run.lab import replay as rp
    from run.logtools.logread import LogError

    try:
        header, original, outcome, replayed, diff = rp.replay(log, policy=policy,
                                                              trust_policy=trust_policy)
    except LogError as e:
        raise BadInput(str(e)) from None
    except PolicyError as e:
        raise BadInput(f"{log}: {e}") from None
    console = _console()
    for note in rp.provenance_notes(header, replayed[0]) if replayed else []:
        console.print(f"[yellow]note[/]: {note}")
    if diff is None:
        console.print(f"replay: identical — {len(original)} records, seed {header['seed']}, "
                      f"{outcome.reason}, {len(outcome.violations)} violation(s)")
        sys.exit(0)
    console.print(f"[red]replay: the logs differ[/] ({len(original)} records recorded, "
                  f"{len(replayed)} replayed)")
    rp.show_difference(console, diff, original, (f"{log}", "replayed"))
    sys.exit(1)


@main.command(
             short_help="Fuzz many seeds with perturbation and faults; group failures.")
@click.argument("scenario", required=False)
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--driver", type=click.Choice(list(DRIVERS)), default="fixed",
              show_default=True, help="Balloon driver variant to fuzz.")
@_seeds_option("0..99")
@_jobs
@click.option("--strategy", type=click.Choice(STRATEGIES), default="random",
              show_default=True,
              help="Exploration at preemption points: seeded random, PCT or POS priorities.")
@click.option("--depth", type=click.IntRange(min=1), default=3, show_default=True,
              help="PCT: the bug depth d explored (d-1 priority change points).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Campaign directory: results.jsonl as seeds finish, full logs of failing "
                   "seeds (or the minimised choices).")
@click.option("--resume", type=click.Path(path_type=Path), metavar="DIR",
              help="Resume the campaign in DIR: run only the seeds it has no result for.")
@click.option("--max-failures", type=click.IntRange(min=1), metavar="N",
              help="Stop once N seeds failed.")
@click.option("--cluster", metavar="ADDRESS",
              help="Run the seeds on a Dask scheduler at ADDRESS, or local:N (a LocalCluster "
                   "of N workers); needs the cluster extra.")
@click.option("--preempt", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Perturbation strength at preemption points (random strategy).")
@click.option("--faults/--no-faults", default=True, show_default=True,
              help="Inject faults (each site active per run by a seeded draw).")
@_sets_for_every_run
@click.option("--minimise", "minimise_seed", type=click.IntRange(min=0), metavar="SEED",
              help="Shrink SEED's failing choices to a minimal replayable choices file.")
@click.option("--budget", type=click.IntRange(min=1), default=300, show_default=True,
              help="Most runs --minimise may spend.")
@_json_outputs("the results")
def fuzz(scenario: str | None, directory: Path | None, driver: str, seeds: str, jobs: int,
         strategy: str, depth: int, out: Path | None, resume: Path | None,
         max_failures: int | None, cluster: str | None, preempt: float, faults: bool,
         sets: tuple[str, ...], minimise_seed: int | None, budget: int, as_json: bool,
         json_path: Path | None) -> None:
    """Run many seeds of SCENARIO with perturbation and faults; group failures.
    `vballoon fuzz report DIR` prints a campaign directory's grouped failures again."""
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn

    from run.lab import campaign as cp
    from run.lab import fuzz as fz
    from run.session.session import git_revision

    if scenario == "report":
        _fuzz_report(directory, as_json, json_path)
        return
    if directory is not None:
        raise BadInput(f"fuzz: unexpected argument {str(directory)!r} (only 'fuzz report DIR' "
                       "takes a directory)")
    console = _console(stderr=as_json)
    _writable(json_path, "--output")
    store = None
    if resume is not None:
        if out is not None:
            raise BadInput("fuzz: --resume DIR continues DIR's campaign; --out is not for it")
        try:
            store = cp.Store.open(resume)
        except cp.CampaignError as e:
            raise BadInput(str(e)) from None
        spec = store.spec
        scenario, driver, strategy = spec.scenario, spec.driver, spec.strategy
        overrides, seed_list = list(spec.overrides), store.remaining()
        revision = git_revision()
        if revision != spec.revision:
            console.print(f"[yellow]note:[/] the campaign ran at {spec.revision}; this code is "
                          f"{revision}: its verdicts may not mix")
        console.print(f"resuming {resume}: {len(store.done)} of {len(spec.seeds)} seeds done")
        out = resume
    else:
        overrides = [*sets, *fz.fuzz_overrides(driver, preempt, faults)]
        _load(scenario, tuple(overrides), None)
        if out is not None and out.exists() and not out.is_dir():
            raise BadInput(f"--out {out}: not a directory")
        if minimise_seed is not None:
            _minimise(console, scenario, overrides, minimise_seed, budget, out)
            return
        seed_list = _seeds(seeds)
        if strategy == "pct":
            cal = fz.calibrate(scenario, overrides)
            overrides += fz.strategy_overrides(strategy, depth, cal.steps)
            console.print(f"pct: depth {depth}, k = {cal.steps:,} preemption points, n = "
                          f"{cal.tasks} tasks (calibration run, seed 0): each run finds a "
                          f"given depth-{depth} bug with probability >= {cal.bound(depth):.3g}")
        else:
            overrides += fz.strategy_overrides(strategy, depth, 0)
        if out is not None:
            try:
                store = cp.Store.create(out, cp.Spec(scenario, driver, strategy,
                                                     tuple(overrides), tuple(seed_list),
                                                     git_revision()))
            except (cp.CampaignError, OSError) as e:
                raise BadInput(str(e)) from None
    runner = _fuzz_runner(cluster)
    if cluster is None:
        jobs = _capped_jobs(jobs, max(1, len(seed_list)))
    done_before = len(store.done) if store else 0
    total = done_before + len(seed_list)
    kinds = cp.by_kind(store.done) if store else {}
    with stop_signals_interrupt() as received, Progress(
            TextColumn("[bold]fuzz"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console, transient=True) as progress:
        task = progress.add_task("seeds", total=total, completed=done_before,
                                 status=_failing_status(kinds))

        def step(r: fz.SeedResult) -> None:
            if r.failure is not None:
                kinds[r.failure["kind"]] = kinds.get(r.failure["kind"], 0) + 1
            progress.update(task, advance=1, status=_failing_status(kinds))

        try:
            results, groups, interrupted, early = fz.fuzz(
                scenario, seed_list, overrides, jobs=jobs, out=out, progress=step,
                runner=runner, store=store, max_failures=max_failures)
        except ClusterError as e:
            raise BadInput(str(e)) from None
        finally:
            if store is not None:
                store.close()
    failed = sum(r.failure is not None for r in results)
    wall = sum(r.wall for r in results)
    stopped = (f" (stopped after {len(results)} of {total} seeds)" if interrupted else
               f" (stopped at {failed} failures after {len(results)} of {total} seeds)"
               if early else "")
    label = "" if strategy == "random" else f" --strategy {strategy}"
    console.print(f"fuzz {scenario or 'default'} --driver {driver}{label}: {len(results)} "
                  f"seeds, {failed} failing, {len(groups)} kind(s); {wall:.1f}s of session "
                  "time" + stopped)
    _failure_table(console, scenario, overrides, groups)
    if store is not None:
        console.print(f"campaign: {store.directory / cp.RESULTS} "
                      f"(vballoon fuzz report {store.directory})")
    if json_path is not None or as_json:
        _deliver_json(json_bytes({
            "scenario": scenario or "default", "driver": driver, "strategy": strategy,
            "overrides": overrides, "seeds": list(store.spec.seeds) if store else seed_list,
            "finished": sorted(r.seed for r in results),
            "interrupted": interrupted, "stopped_early": early, "failing": failed,
            "groups": [{"signature": g.signature, "kind": g.kind, "seeds": g.seeds,
                        "example": g.example, "logs": g.logs,
                        "reproduce": fz.reproduce_command(scenario, g.seeds[0], overrides)}
                       for g in groups]}, indent=True), as_json, json_path)
    if interrupted:
        sys.exit(_stopped_exit(received))
    sys.exit(1 if failed else 0)


def _failing_status(kinds: Mapping[str, int]) -> str:
    """The progress bar's tail: failures so far, by kind."""
    total = sum(kinds.values())
    if not total:
        return "0 failing"
    return f"{total} failing: " + ", ".join(f"{k} {n}" for k, n in kinds.items())


def _fuzz_runner(cluster: str | None) -> Any:
    """The local pool (None), or a Dask cluster's runner for --cluster."""
    if cluster is None:
        return None
    from run.lab import cluster as cl

    try:
        cl.parse_address(cluster)
    except ValueError as e:
        raise BadInput(str(e)) from None

    def runner(fn: Any, work: list[Any]) -> Any:
        return cl.run_on_cluster(fn, work, address=cluster)
    return runner


def _failure_table(console: Console, scenario: str | None, overrides: Sequence[str],
                   groups: Sequence[Any]) -> None:
    """Failures by first violation, with the command that reproduces the smallest seed."""
    from rich.table import Table

    from run.lab import fuzz as fz

    if not groups:
        return
    table = Table("first violation", "seeds", "smallest", "reproduce",
                  title="failures by first violation", title_justify="left", show_lines=True)
    for g in groups:
        repro = fz.reproduce_command(scenario, g.seeds[0], overrides)
        log = g.logs.get(g.seeds[0])
        table.add_row(g.signature, str(len(g.seeds)), str(g.seeds[0]),
                      repro + (f"\nlog: {log}" if log else ""))
    console.print(table)


def _fuzz_report(directory: Path | None, as_json: bool, json_path: Path | None) -> None:
    """`vballoon fuzz report DIR`: a campaign directory's failures grouped, from its files."""
    from run.lab import campaign as cp
    from run.lab import fuzz as fz

    if directory is None:
        raise BadInput("fuzz report: needs the campaign directory (fuzz report DIR)")
    try:
        store = cp.Store.open(directory)
    except cp.CampaignError as e:
        raise BadInput(str(e)) from None
    spec, lines = store.spec, store.done
    results = [fz.SeedResult.from_line(line) for line in lines]
    groups = fz.group_failures(results)
    name = scen.load(spec.scenario, list(spec.overrides)).name
    for g in groups:
        for seed in g.seeds:
            log = directory / f"{name}-seed{seed}.jsonl"
            if log.exists():
                g.logs[seed] = str(log)
    console = _console(stderr=as_json)
    failed = sum(r.failure is not None for r in results)
    revisions = sorted({str(line.get("revision")) for line in lines})
    console.print(f"campaign {directory}: {spec.scenario or 'default'} --driver {spec.driver} "
                  f"--strategy {spec.strategy}: {len(lines)} of {len(spec.seeds)} seeds done, "
                  f"{failed} failing, {len(groups)} kind(s); revision "
                  f"{', '.join(revisions) or 'none'}")
    _failure_table(console, spec.scenario, spec.overrides, groups)
    if as_json or json_path is not None:
        _deliver_json(json_bytes({"campaign": spec.as_dict(), "done": len(lines),
                                  "failing": failed,
                                  "groups": [{"signature": g.signature, "kind": g.kind,
                                              "seeds": g.seeds} for g in groups]},
                                 indent=True), as_json, json_path)
    sys.exit(1 if failed else 0)


def _minimise(console: Console, scenario: str | None, overrides: list[str], seed: int,
              budget: int, out: Path | None) -> None:
    from run.lab import minimise as mn

    sc = _load(scenario, tuple(overrides), None)
    with Progress(TextColumn("[bold]minimise"), TextColumn("{task.fields[status]}"),
                  console=console, transient=True) as progress:
        task = progress.add_task("tests", total=None, status="")
        runs = 0

        def step(kept: int, recorded: int) -> None:
            nonlocal runs
            runs += 1
            progress.update(task, status=f"run {runs}: trying {kept} of {recorded} choices")

        result = mn.minimise(sc, seed, budget=budget, progress=step)
    if result is None:
        console.print(f"seed {seed} does not fail; nothing to minimise")
        sys.exit(0)
    directory = out or Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sc.name}-seed{seed}.choices.json"
    mn.write(result, path)
    console.print(f"seed {seed}: {result.failure['signature']}")
    console.print(f"minimised {result.recorded} recorded choices to {len(result.choices)} "
                  f"in {result.tests} runs: {path}")
    if result.budget_spent:
        console.print(f"[yellow]stopped at its budget of {budget} runs[/]: the "
                      f"{len(result.choices)} choices may not be 1-minimal (some may still "
                      "be removable); --budget N spends more")
    console.print(f"reproduce: {scen.reproduce_command(None, choices=path)}")
    log = directory / f"{sc.name}-seed{seed}.jsonl"
    console.print("then: "
                  f"{scen.reproduce_command(None, choices=path, level='debug')} --log {log}"
                  f" · vballoon check {log} · vballoon trace {log} -o {log.with_suffix('')}"
                  ".trace.json")
    sys.exit(1)


@main.command()
@click.option("--show", metavar="NAME", help="Print the TOML of one built-in scenario.")
def scenarios(show: str | None) -> None:
    """List the built-in scenarios (or print one with --show)."""
    names = scen.builtin_names()
    if show is not None:
        if show not in names:
            close = difflib.get_close_matches(show, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInput(f"no built-in scenario {show!r}{hint}; built-ins: "
                           f"{', '.join(names)}")
        click.echo(scen.builtin_text(show), nl=False)
        return
    from rich.table import Table

    table = Table("name", "description", "interleavings", title="built-in scenarios",
                  title_justify="left")
    for name in names:
        sc = scen.load(name)
        preempt = {g.preempt for g in sc.guest_specs()}
        table.add_row(name, sc.description,
                      "seeded schedule only (preempt 0; fuzz perturbs)" if preempt == {0.0}
                      else f"perturbed (preempt {', '.join(f'{p:g}' for p in sorted(preempt))})")
    _console().print(table)


@main.command(name="compare",
             short_help="Run a scenario under each driver variant, side by side.")
@click.argument("scenario", required=False, default="thp-under-balloon")
@click.option("--drivers", default="legacy,fixed", show_default=True,
              help="Comma-separated driver variants to compare.")
@_seeds_option("5")
@_sets_for_every_run
@_jobs
@_json_outputs("the results")
@plot_option
def compare_cmd(scenario: str, drivers: str, seeds: str, sets: tuple[str, ...], jobs: int,
                as_json: bool, json_path: Path | None, plot_path: Path | None) -> None:
    """Run SCENARIO (default thp-under-balloon) under each driver and seed; compare."""
    from run.lab import compare as cmp

    names = [d.strip() for d in drivers.split(",") if d.strip()]
    bad = [d for d in names if d not in DRIVERS]
    if bad or not names:
        raise BadInput(f"--drivers: unknown driver(s) {', '.join(bad) or '(none)'}; "
                       f"use {', '.join(DRIVERS)}")
    seed_list = _seeds(seeds)
    _load(scenario, sets, None)
    _writable(json_path, "--output")
    plot_target(plot_path)
    variants = {d: (f"guest.driver={d}",) for d in names}
    _run_comparison(scenario, variants, seed_list, sets, jobs, (as_json, json_path),
                    cmp.METRICS, "drivers", "vballoon compare", plot_path)


def _run_comparison(scenario: str, variants: Mapping[str, Sequence[str]], seeds: list[int],
                    sets: tuple[str, ...], jobs: int, json_out: tuple[bool, Path | None],
                    metrics: list[Any], kind: str, command: str,
                    plot_path: Path | None = None) -> None:
    """Run a comparison with progress, print its table, write its JSON and plot; exit 1 on
    violations."""
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn

    from run.lab import compare as cmp

    as_json, json_path = json_out
    console = _console(stderr=as_json)
    total = len(variants) * len(seeds)
    jobs = _capped_jobs(jobs, total)
    with stop_signals_interrupt() as received, Progress(
            TextColumn("[bold]compare"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"), console=console, transient=True) as progress:
        task = progress.add_task("runs", total=total, last="")
        result = cmp.compare(scenario, variants, seeds, list(sets), metrics=metrics, kind=kind,
                             jobs=jobs, progress=lambda job: progress.update(
                                 task, advance=1, last=f"{job.variant} seed {job.seed}"))
    labels = list(variants)
    done = sum(result["runs"].values())
    stopped = f"; stopped after {done} of {total} runs" if result["interrupted"] else ""
    console.print(cmp.table(result, labels, metrics,
                            f"{command} {result['scenario']} — seeds {seeds[0]}..{seeds[-1]} "
                            f"(mean ± spread{stopped})"))
    _deliver_json(json_bytes(result, indent=True), as_json, json_path)
    if plot_path is not None:
        draw_comparison(result, metrics, labels,
                        f"{command} {result['scenario']}, seeds {seeds[0]}..{seeds[-1]}",
                        plot_path, console)
    if result["interrupted"]:
        sys.exit(_stopped_exit(received))
    failed = result["metrics"]["violations"]
    if any(failed[v]["mean"] > 0 for v in labels):
        click.echo("some runs reported violations (see the violations row)", err=True)
        sys.exit(1)


@main.group(invoke_without_command=True,
             short_help="Host policies: list them, or compare them on a scenario.")
@click.pass_context
def policies(ctx: click.Context) -> None:
    """Host policies: list them (the default), or compare them on a scenario."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(policies_list)


@policies.command(name="list")
def policies_list() -> None:
    """List the host policies (built-in and from the vballoon.policies entry points)."""
    import importlib.metadata

    from rich.table import Table

    from actors.host.loader import ENTRY_POINT_GROUP
    from actors.host.policies import BUILTINS

    table = Table("name", "description", "parameters (defaults)", title="host policies",
                  title_justify="left")
    for name, cls in BUILTINS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in cls.params.items())
        table.add_row(name, cls.description,
                      (params + ", " if params else "") + f"interval={cls.default_interval:g}s")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        table.add_row(ep.name, f"(entry point {ep.value})", "")
    _console().print(table)
    click.echo("Also: module:attr or path/to/file.py:Class naming a HostPolicy subclass.")


@policies.command(name="compare")
@click.argument("scenario")
@click.option("--policies", "names", default="static,mom,proxmox,squeezed", show_default=True,
              help="Comma-separated policies (built-in names, module:attr, file.py:Class).")
@_seeds_option("3")
@_sets_for_every_run
@_jobs
@_json_outputs("the results (and every run's figures)")
@plot_option
def policies_compare(scenario: str, names: str, seeds: str, sets: tuple[str, ...], jobs: int,
                     as_json: bool, json_path: Path | None, plot_path: Path | None) -> None:
    """Run SCENARIO under each policy (with its default parameters and interval; the
    scenario's safety shell applies to all) and seed; print one table of scores."""
    from run.lab import compare as cmp
    from run.session.session import load_policy

    labels = [p.strip() for p in names.split(",") if p.strip()]
    if not labels:
        raise BadInput("--policies: no policy given")
    seed_list = _seeds(seeds)
    variants = {p: (f"host.policy.name={p}", "host.policy.params={}",
                    "host.policy.interval=0") for p in labels}
    for settings in variants.values():  # a bad policy fails here, before any process starts
        try:
            load_policy(_load(scenario, (*sets, *settings), None))
        except PolicyError as e:
            raise BadInput(str(e)) from None
    _writable(json_path, "--output")
    plot_target(plot_path)
    _run_comparison(scenario, variants, seed_list, sets, jobs, (as_json, json_path),
                    cmp.POLICY_METRICS,
                    "policies", "vballoon policies compare", plot_path)


@main.command(name="check",
             short_help="Check a session log: invariants, lockdep, why it broke.")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--context", "context", type=click.IntRange(min=1), default=16, show_default=True,
              metavar="N", help="Records shown with the first violation.")
@click.option("--around", type=click.IntRange(min=1), metavar="SEQ",
              help="Show the N records centred on SEQ instead of the violation's story.")
@click.option("--task", metavar="NAME", help="Show only this kernel task's records.")
@_json_outputs("the verdict")
def check_cmd(log: Path, context: int, around: int | None, task: str | None, as_json: bool,
              json_path: Path | None) -> None:
    """Check a session LOG (JSON lines, or gzip) from the records alone.

    Rebuilds the host's ballooned set, the driver's list, isolated pages and every handshake
    and lock, and checks the balloon's rules. The first violation comes with why: the faults
    injected before it, the waits-for chain across locks and wait queues, the task that last
    made progress. Exit 0 clean, 1 violations, 2 unreadable log.
    """
    from run.logtools import check as chk

    _writable(json_path, "--output", inputs=(log,))
    try:
        report = chk.check_log(log, history=context, around=around, task=task)
    except chk.LogError as e:
        raise BadInput(str(e)) from None
    _deliver_json(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2), as_json,
                  json_path)
    if not as_json:
        from run.logtools.verdict import print_report

        print_report(_console(), report, str(log))
    sys.exit(report.exit_code)


@main.command()
@click.argument("names", nargs=-1)
@_json_outputs("the figures")
@click.option("--quick", is_flag=True, help="Smaller sizes, for a smoke run.")
def bench(names: tuple[str, ...], as_json: bool, json_path: Path | None, quick: bool) -> None:
    """Run named benchmarks (default: all) and print their figures."""
    from run.lab import bench as benchmod

    known = list(benchmod.BENCHMARKS)
    for n in names:
        if n not in known:
            raise BadInput(f"unknown benchmark {n!r}; known: {', '.join(known)}")
    _writable(json_path, "--output")
    results = benchmod.run_benchmarks(list(names) or known, quick=quick,
                                      console=_console(stderr=as_json))
    _deliver_json(orjson.dumps(results, option=orjson.OPT_INDENT_2), as_json, json_path)


@main.command(name="trace",
             short_help="Convert a session log to a Perfetto timeline.")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_path", type=click.Path(path_type=Path),
              default=Path("trace.json"), show_default=True,
              help="Where to write the Chrome trace-event JSON.")
def trace_cmd(log: Path, out_path: Path) -> None:
    """Convert session LOG (JSON lines, or gzip) to a timeline for ui.perfetto.dev."""

    from run.logtools.logread import LogError
    from run.logtools.trace import export

    _writable(out_path, "--output", inputs=(log,))
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with tmp.open("wb") as out:
            stats = export(log, out)
        os.replace(tmp, out_path)
    except LogError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise BadInput(f"cannot write {out_path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):  # a read-only place: the error above is the news
            tmp.unlink(missing_ok=True)
    click.echo(f"wrote {out_path}: {stats.events} trace events from {stats.records} records "
               f"({stats.handshakes} handshakes, {stats.migrations} migrations, "
               f"{stats.lock_holds} lock holds, {stats.instants} instants; display skew "
               f"≤ {stats.max_skew_us:g} µs). Open it in https://ui.perfetto.dev")


def _register() -> None:
    """The commands that live in their own modules (imported here: they use this one's
    helpers, lazily, so the import runs one way)."""
    from run.console.console import console_cmd
    from run.console.timeseries import plot_cmd, series_cmd

    main.add_command(console_cmd)
    main.add_command(series_cmd)
    main.add_command(plot_cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
