"""``vballoon series``, ``vballoon plot`` and the compare commands' ``--plot``: figures.

The commands only parse options and report; reading is ``run.logtools.series``, drawing
``run.logtools.plot``. They are registered on the ``vballoon`` group by ``run.console.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from run.logtools.logread import LogError
from run.logtools.series import ROW_COLUMNS, Series, read_series, rows, to_csv


def _read(log: Path) -> Series:
    from run.console.cli import BadInput

    try:
        return read_series(log)
    except LogError as e:
        raise BadInput(str(e)) from None


@click.command(name="series", short_help="Print a session log's time series (or CSV).")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (one row per sample).")
@click.option("-o", "--output", "out_path", type=click.Path(path_type=Path),
              help="Write the CSV to this file instead.")
def series_cmd(log: Path, as_csv: bool, out_path: Path | None) -> None:
    """Print a session LOG's time series: host and guest samples at every tick."""
    from run.console.cli import _console, _writable, _write_output

    _writable(out_path, "--output", inputs=(log,))
    s = _read(log)
    if as_csv or out_path is not None:
        text = to_csv(s)
        if out_path is not None:
            _write_output(out_path, "--output", text.encode())
        else:
            sys.stdout.write(text)
        return
    table = Table(title=f"{s.scenario} seed {s.seed}: samples (MiB unless said)",
                  title_justify="left")
    for c in ROW_COLUMNS:
        table.add_column(c, justify="left" if c == "source" else "right")
    for row in rows(s):
        table.add_row(*(_cell(row.get(c)) for c in ROW_COLUMNS))
    _console().print(table)


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else f"{v:,.3f}".rstrip("0").rstrip(".")
    return f"{v:,}" if isinstance(v, int) else str(v)


@click.command(name="plot", short_help="Draw a session log's time series (PNG, SVG).")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_path", type=click.Path(path_type=Path), required=True,
              help="The image to write: FILE.png or FILE.svg.")
def plot_cmd(log: Path, out_path: Path) -> None:
    """Draw a session LOG's time series (one panel per quantity, a line per guest)."""
    from run.console.cli import BadInput, _writable
    from run.logtools.plot import PlotError, plot

    _writable(out_path, "--output", inputs=(log,))
    s = _read(log)
    try:
        panels = plot(s, out_path)
    except PlotError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise BadInput(f"cannot write {out_path}: {e.strerror or e}") from None
    click.echo(f"wrote {out_path}: {panels} panels, {len(s.guests)} guest(s), "
               f"{len(s.host['t'])} host and {sum(len(c['t']) for c in s.guests.values())} "
               f"guest samples")


plot_option = click.option(
    "--plot", "plot_path", type=click.Path(path_type=Path),
    help="Also draw the results: FILE.png or FILE.svg, a panel per metric, a bar per variant "
         "(mean, spread as error bar, each seed a dot).")


def plot_target(path: Path | None) -> None:
    """--plot checked before any run: writable, and a format that is drawn."""
    from run.console.cli import BadInput, _writable
    from run.logtools.plot import PlotError, check_target

    _writable(path, "--plot")
    if path is not None:
        try:
            check_target(path)
        except PlotError as e:
            raise BadInput(f"--plot {e}") from None


def draw_comparison(result: dict[str, Any], metrics: list[Any], variants: list[str],
                    title: str, path: Path, console: Console) -> None:
    """A comparison's --plot: one panel per metric (``run.logtools.plot.plot_comparison``)."""
    from run.console.cli import BadInput
    from run.logtools.plot import plot_comparison

    try:
        plot_comparison(result["metrics"], {m[0]: m[1] for m in metrics}, variants, title,
                        path)
    except OSError as e:
        raise BadInput(f"--plot {path}: cannot write: {e.strerror or e}") from None
    console.print(f"wrote {path}")
