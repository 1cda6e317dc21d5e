"""The ``vballoon`` command: one entry point, subcommands, exit codes scripts can trust.

0 ok, 1 the run or check found a problem, 2 bad usage or bad input (one clear line).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from actors.host.policy import PolicyError
from run import scenario as scen
from run.logs import LEVELS, PrettyConsole
from run.session import EXIT_USAGE, Session, run_session


class BadInput(click.ClickException):
    """Bad usage or input: printed as one line, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"vballoon: error: {self.format_message()}", err=True)


def _load(spec: str | None, sets: tuple[str, ...], duration: str | None) -> scen.Scenario:
    overrides = list(sets)
    if duration is not None:
        overrides.append(f"duration={duration}")
    try:
        return scen.load(spec, overrides)
    except scen.ScenarioError as e:
        raise BadInput(str(e)) from None


def _writable(path: Path | None, what: str) -> None:
    if path is None:
        return
    parent = path.resolve().parent
    if not parent.is_dir():
        raise BadInput(f"{what} {path}: directory {parent} does not exist")
    if path.is_dir():
        raise BadInput(f"{what} {path}: is a directory")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vballoon")
def main() -> None:
    """vballoon: a simulator of Linux memory ballooning with balloon page compaction."""


@main.command()
@click.argument("scenario", required=False)
@click.option("--seed", type=click.IntRange(min=0), help="Session seed (default: scenario's).")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Write the JSON-lines log here.")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path),
              help="Write the summary as JSON here.")
@click.option("--duration", help="Virtual duration, e.g. 30s (overrides the scenario).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field, e.g. --set guest.memory=2GiB (repeatable).")
@click.option("--level", type=click.Choice(list(LEVELS)), default="info", show_default=True,
              help="Lowest log level recorded.")
@click.option("-v", "--verbose", is_flag=True, help="Also print log records to the console.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--backend", type=click.Choice(["trio", "asyncio"]), default="trio",
              show_default=True,
              help="trio: virtual time, deterministic. asyncio: real time, not deterministic.")
def run(scenario: str | None, seed: int | None, log_path: Path | None,
        summary_path: Path | None, duration: str | None, sets: tuple[str, ...], level: str,
        verbose: bool, as_json: bool, backend: str) -> None:
    """Run a SCENARIO (built-in name or TOML path; default: 'default') and summarise it."""
    sc = _load(scenario, sets, duration)
    _writable(log_path, "--log")
    _writable(summary_path, "--summary")
    out = Console(stderr=as_json)
    pretty = PrettyConsole(Console(stderr=True)) if verbose else None
    progress = None
    on_snapshot = None
    if out.is_terminal and not verbose:
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.fields[status]}"), console=out, transient=True)
        task = progress.add_task(f"{sc.name}", total=sc.duration, status="")

        def on_snapshot(session: Session) -> None:
            guest = session.guests[0]
            assert progress is not None
            status = f"t={session.now:6.1f}s  free={guest.zone.free_pages}"
            if guest.balloon is not None:
                b = guest.balloon
                status += (f"  balloon target={b.read_num_pages()} "
                           f"actual={b.num_pages.atomic_read()}")
            progress.update(task, completed=session.now, status=status)

        progress.start()
    try:
        outcome = run_session(sc, seed=seed, log_path=log_path, level=level, console=pretty,
                              backend=backend, on_snapshot=on_snapshot)
    except PolicyError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise BadInput(f"cannot write: {e}") from None
    finally:
        if progress is not None:
            progress.stop()
    summary = outcome.summary
    if summary_path is not None:
        summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        from run.report import print_summary

        print_summary(out, summary)
    if outcome.error:
        click.echo(f"vballoon: session error: {outcome.error}", err=True)
    if outcome.reason == "interrupted":
        sys.exit(130)
    if outcome.exit_code:
        click.echo(f"reproduce: vballoon run {scenario or 'default'} --seed {summary['seed']}"
                   + "".join(f" --set {s}" for s in sets), err=True)
    sys.exit(outcome.exit_code)


@main.command()
@click.option("--show", metavar="NAME", help="Print the TOML of one built-in scenario.")
def scenarios(show: str | None) -> None:
    """List the built-in scenarios (or print one with --show)."""
    names = scen.builtin_names()
    if show is not None:
        if show not in names:
            raise BadInput(f"no built-in scenario {show!r}; built-ins: {', '.join(names)}")
        click.echo(scen.builtin_text(show), nl=False)
        return
    from rich.table import Table

    table = Table("name", "description", title="built-in scenarios", title_justify="left")
    for name in names:
        table.add_row(name, scen.load(name).description)
    Console().print(table)


@main.command(name="compare")
@click.argument("scenario", required=False, default="thp-under-balloon")
@click.option("--drivers", default="legacy,fixed", show_default=True,
              help="Comma-separated driver variants to compare.")
@click.option("--seeds", default="5", show_default=True,
              help="N (seeds 0..N-1), A..B, or a comma list.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field for every run (repeatable).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Parallel processes.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Write the results as JSON here.")
def compare_cmd(scenario: str, drivers: str, seeds: str, sets: tuple[str, ...], jobs: int,
                json_path: Path | None) -> None:
    """Run SCENARIO (default thp-under-balloon) under each driver and seed; compare."""
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn
    from rich.table import Table

    from run import compare as cmp

    names = [d.strip() for d in drivers.split(",") if d.strip()]
    bad = [d for d in names if d not in ("legacy", "v9", "fixed")]
    if bad or not names:
        raise BadInput(f"--drivers: unknown driver(s) {', '.join(bad) or '(none)'}; "
                       "use legacy, v9, fixed")
    try:
        seed_list = cmp.parse_seeds(seeds)
    except ValueError as e:
        raise BadInput(f"--seeds {seeds!r}: {e}") from None
    _load(scenario, sets, None)
    _writable(json_path, "--json")
    console = Console()
    with Progress(TextColumn("[bold]compare"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
                  console=console, transient=True) as progress:
        task = progress.add_task("runs", total=len(names) * len(seed_list), last="")
        result = cmp.compare(scenario, names, seed_list, list(sets), jobs=jobs,
                             progress=lambda job: progress.update(
                                 task, advance=1, last=f"{job.driver} seed {job.seed}"))
    table = Table(title=f"vballoon compare {result['scenario']} — seeds "
                        f"{seed_list[0]}..{seed_list[-1]} (mean ± spread)",
                  title_justify="left")
    table.add_column("metric")
    for d in names:
        table.add_column(d, justify="right")
    for key, label, _read, _better in cmp.METRICS:
        row = result["metrics"][key]
        table.add_row(label, *(_mean_spread(row[d]["mean"], row[d]["stdev"]) for d in names))
    console.print(table)
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    failed = result["metrics"]["violations"]
    if any(failed[d]["mean"] > 0 for d in names):
        click.echo("some runs reported violations (see the violations row)", err=True)
        sys.exit(1)


def _mean_spread(mean: float, stdev: float) -> str:
    if mean != mean:  # nan: the scenario does not measure it
        return "n/a"
    return f"{mean:.3f} ± {stdev:.3f}" if abs(mean) < 10 else f"{mean:.1f} ± {stdev:.1f}"


@main.group(invoke_without_command=True)
@click.pass_context
def policies(ctx: click.Context) -> None:
    """List the host policies (built-in and from the vballoon.policies entry points)."""
    if ctx.invoked_subcommand is not None:
        return
    import importlib.metadata

    from rich.table import Table

    from actors.host.policy import BUILTINS, ENTRY_POINT_GROUP

    table = Table("name", "description", "parameters", title="host policies",
                  title_justify="left")
    for name, cls in BUILTINS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in cls.params.items())
        table.add_row(name, cls.description, params + ", interval='1s'")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        table.add_row(ep.name, f"(entry point {ep.value})", "")
    Console().print(table)
    click.echo("Also: module:attr or path/to/file.py:Class naming a HostPolicy subclass.")


@main.command(name="check")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout.")
def check_cmd(log: Path, as_json: bool) -> None:
    """Check a session LOG (JSON lines, or gzip) from the records alone.

    Rebuilds the host's ballooned set, the driver's list, isolated pages and every handshake
    and lock, and checks the balloon's rules. Exit 0 clean, 1 violations, 2 unreadable log.
    """
    from run import check as chk

    try:
        report = chk.check_log(log)
    except chk.LogError as e:
        raise BadInput(str(e)) from None
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2)
                                + b"\n")
    else:
        from run.verdict import print_report

        print_report(Console(), report, str(log))
    sys.exit(report.exit_code)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the figures as JSON here.")
@click.option("--quick", is_flag=True, help="Smaller sizes, for a smoke run.")
def bench(names: tuple[str, ...], json_path: Path | None, quick: bool) -> None:
    """Run named benchmarks (default: all) and print their figures."""
    from run import bench as benchmod

    known = list(benchmod.BENCHMARKS)
    for n in names:
        if n not in known:
            raise BadInput(f"unknown benchmark {n!r}; known: {', '.join(known)}")
    _writable(json_path, "--json")
    results = benchmod.run_benchmarks(list(names) or known, quick=quick, console=Console())
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":  # pragma: no cover
    main()
