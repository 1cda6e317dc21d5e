"""Readable renderings of a session summary for the console (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table

from actors.units import format_size


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2),
                  min_width=64, title_style="bold")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def summary_tables(s: dict[str, Any]) -> Group:
    """The summary as a handful of small tables a person reads top to bottom."""
    guest = s["guest"]
    page_size = guest["page_size"]
    free = guest["free_pages"]
    head = _kv_table(
        f"vballoon session: {s['scenario']} (seed {s['seed']}, {s['reason']})",
        [
            ("virtual time", f"{s['virtual_seconds']:.3f} s"),
            ("wall time", f"{s['wall_seconds']:.3f} s"),
            ("guest", f"{format_size(guest['memory_bytes'])} = {guest['pages']} pages of "
                      f"{format_size(page_size)}"),
            ("free", f"{free} pages ({free * page_size / guest['memory_bytes']:.1%})"),
        ]
        + [(f"  {owner}", n) for owner, n in guest["owners"].items() if n and owner != "free"],
    )
    buddy = Table(title="buddyinfo (free blocks per order)", title_justify="left")
    for order in range(len(s["buddyinfo"])):
        buddy.add_column(str(order), justify="right")
    buddy.add_row(*(str(n) for n in s["buddyinfo"]))
    thp = s["thp"]
    frag = _kv_table("fragmentation and huge pages", [
        ("fragmentation index (order 9)", _frag(s["fragmentation_index"])),
        ("unusable free space (order 9)", f"{s['unusable_free_index'] / 1000:.3f}"),
        ("THP faults", thp["attempts"]),
        ("  thp_fault_alloc", thp["alloc"]),
        ("  thp_fault_fallback", thp["fallback"]),
        ("  success rate", f"{thp['success_rate']:.1%}"),
    ])
    vm = _kv_table("vmstat (non-zero)", [(k, v) for k, v in s["vmstat"].items() if v])
    parts: list[Any] = [head, buddy, frag, vm]
    if "balloon" in s:
        parts.append(_kv_table("balloon (target/actual: 4 KiB units; the rest: guest pages)",
                               list(s["balloon"].items())))
    if "host" in s:
        host = s["host"]
        rows = [(k, v) for k, v in host.items() if k != "guests"]
        for name, g in host["guests"].items():
            rows += [(f"{name}.{k}", v) for k, v in g.items()]
        parts.append(_kv_table("host (4 KiB pages)", rows))
    if s["violations"]:
        vt = Table(title=f"violations ({len(s['violations'])})", title_justify="left",
                   style="red")
        vt.add_column("t", justify="right")
        vt.add_column("kind")
        vt.add_column("detail")
        for v in s["violations"][:20]:
            vt.add_row(f"{v['t']:.6f}", v["kind"], v["detail"])
        parts.append(vt)
    else:
        parts.append("[green]no violations[/green]")
    return Group(*parts)


def _frag(index: int) -> str:
    if index == -1000:
        return "-1.000 (a free block of this order exists)"
    return f"{index / 1000:.3f}"


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    console.print(summary_tables(summary))
