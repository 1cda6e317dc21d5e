"""``vballoon bench``: named benchmarks that print figures (never pass/fail).

Targets live in the issues; each benchmark prints its figure next to its target so a reader
sees at once whether the simulator is where it should be. One module per subject; this
registry names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from run.lab.bench.bugs import bench_bugs
from run.lab.bench.common import Result
from run.lab.bench.compaction import bench_compact
from run.lab.bench.inflate import bench_inflate
from run.lab.bench.logtools import bench_check
from run.lab.bench.memory import bench_alloc, bench_memory
from run.lab.bench.race import bench_determinism, bench_fuzz
from run.lab.bench.sessions import bench_compare, bench_guests
from run.lab.bench.virtqueue import bench_handshake

BENCHMARKS: dict[str, Callable[[bool], Result]] = {
    "alloc": bench_alloc,
    "memory": bench_memory,
    "inflate": bench_inflate,
    "handshake": bench_handshake,
    "compact": bench_compact,
    "fuzz": bench_fuzz,
    "bugs": bench_bugs,
    "determinism": bench_determinism,
    "guests": bench_guests,
    "check": bench_check,
    "compare": bench_compare,
}


def _cell(key: str, value: Any) -> Text:
    """A figure right-aligned with thousands separators; prose left-aligned; verdicts coloured."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        style = ""
        if key == "meets_target":
            style = "green" if str(value).startswith("yes") else "bold red"
        elif key.isupper():  # RUN_FAILED and the like
            style = "bold red"
        return Text(str(value), justify="left", style=style)
    return Text(f"{value:,}", justify="right")


def run_benchmarks(names: list[str], *, quick: bool, console: Console) -> dict[str, Result]:
    """Run each named benchmark, print a table of its figures, and return them all."""
    results: dict[str, Result] = {}
    for name in names:
        with console.status(f"bench {name}..."):
            res = BENCHMARKS[name](quick)
        results[name] = res
        doc = " ".join((BENCHMARKS[name].__doc__ or "").split())  # one paragraph
        table = Table(title=f"bench {name}: {doc}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for k, v in res.items():
            table.add_row(k, _cell(k, v))
        console.print(table)
    return results
