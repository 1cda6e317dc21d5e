"""How ``vballoon check`` shows its report: the first violation and its story, then counts.

A kernel engineer reads the first violation first (everything after it may be a consequence),
so it comes with the records that led to it -- the page's, lock's and handshake's history --
and the tasks involved; then a count per kind (found by the check, logged by the run), what
was still pending at the end, and what was checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from actors.guest.mm.gfp import gfp_names
from run.logtools.check import Report, Violation

#: Record keys shown in the head of each history line, not among its fields.
_HEAD = ("t", "seq", "actor", "event", "level")


def print_report(console: Console, report: Report, log: str) -> None:
    """The human-readable verdict."""
    s = report.session
    what = (f"{s.get('scenario')} seed {s.get('seed')}, driver {s.get('driver')}, "
            f"{', '.join(s.get('features', [])) or 'no features'}")
    console.print(f"[bold]vballoon check[/bold] {escape(log)}: {report.records:,} records "
                  f"({escape(what)}; session {s.get('reason', '?')} at "
                  f"t={s.get('end_t', 0):.6f} s)", highlight=False)
    first = report.first
    if first is None:
        console.print("[bold green]clean[/bold green]: no violation")
    else:
        _print_first(console, report, first)
        _print_counts(console, report)
    if report.pending:
        table = Table("pending at the end", "guest", "since (s)", "seq", title_justify="left",
                      box=None, pad_edge=False)
        for p in report.pending[:20]:
            table.add_row(escape(p.detail), p.guest, f"{p.since:.6f}", str(p.seq))
        if len(report.pending) > 20:
            table.add_row(f"... {len(report.pending) - 20} more", "", "", "")
        console.print(table)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print("checked:", style="dim")
    for line in report.checked:
        console.print(f"  - {escape(line)}", style="dim", highlight=False)


def _print_first(console: Console, report: Report, v: Violation) -> None:
    console.print(f"[bold red]first violation[/bold red] [bold]{escape(v.kind)}[/bold] "
                  f"({'found by the check' if v.source == 'check' else 'logged by the run'})"
                  f" at t={v.t:.6f} s, seq {v.seq}" + (f", {v.guest}" if v.guest else ""),
                  highlight=False)
    console.print(f"  {escape(v.detail)}", highlight=False)
    for line in v.state:
        console.print(f"  now: {escape(line)}", highlight=False)
    subjects = [("pages", v.pfns), ("locks", v.locks), ("handshakes", v.hs)]
    for label, items in subjects:
        if items:
            console.print(f"  {label}: {escape(', '.join(map(str, items[:16])))}"
                          + (" ..." if len(items) > 16 else ""), highlight=False)
    tasks = list(dict.fromkeys([*v.tasks, *_tasks(report.history)]))
    if tasks:
        console.print(f"  tasks involved: {escape(', '.join(tasks))}", highlight=False)
    if report.why:
        console.print("[bold]why[/bold]")
        for line in report.why:
            console.print(f"  {escape(line)}", highlight=False)
    if not report.history:
        return
    title = "the records that led to it"
    if report.history_skipped:
        title += f" (the last {len(report.history)}; {report.history_skipped} earlier)"
    console.print(title + ":", style="bold", highlight=False)
    for rec in report.history:
        line = (f"  {rec.get('t', 0):12.6f} {rec.get('seq', 0):>7} {rec.get('actor', '?'):<18} "
                f"{rec.get('event', '?'):<18} {_fields(rec, set(v.pfns))}")
        console.print(escape(line), style="bold red" if rec.get("seq") == v.seq else "",
                      soft_wrap=True, highlight=False)


def _tasks(history: list[dict[str, Any]]) -> list[str]:
    """Tasks and compaction workers named in the history, in order of appearance."""
    out: list[str] = []
    for rec in history:
        for key in ("task", "worker"):
            if isinstance(rec.get(key), str):
                out.append(rec[key])
    return out


def _fields(rec: Mapping[str, Any], pages: set[int]) -> str:
    """A record's fields, one line: long PFN lists cut to a count (and the pages of interest)."""
    parts = []
    for key, value in rec.items():
        if key in _HEAD:
            continue
        if isinstance(value, list) and len(value) > 8 and all(isinstance(x, int) for x in value):
            hit = sorted(pages.intersection(value))[:4]
            shown = f"[{len(value)} PFNs" + (f", incl. {', '.join(map(str, hit))}" if hit
                                             else "") + "]"
        elif isinstance(value, (dict, list)):  # as the log writes it (null, not None)
            text = orjson.dumps(value).decode()
            shown = text if len(text) <= 80 else text[:77] + "..."
        elif value is None:
            shown = "null"  # the log's word: a message never prints a Python None
        elif key == "gfp" and isinstance(value, int):
            shown = gfp_names(value)
        elif isinstance(value, float):
            shown = f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def _print_counts(console: Console, report: Report) -> None:
    found: Mapping[str, int] = report.by_source.get("check", {})
    logged: Mapping[str, int] = report.by_source.get("log", {})
    firsts: dict[str, int] = {}
    for v in report.violations:
        firsts.setdefault(v.kind, v.seq)
    table = Table("kind", "total", "found by check", "logged by run", "first at seq",
                  title=f"violations ({sum(report.counts.values()):,})", title_justify="left")
    for kind, n in sorted(report.counts.items(), key=lambda kv: firsts.get(kv[0], 0)):
        table.add_row(kind, f"{n:,}", f"{found.get(kind, 0):,}", f"{logged.get(kind, 0):,}",
                      str(firsts.get(kind, "")))
    console.print(table)
