"""Readable renderings of a session summary for the console (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table

from actors.sim.units import format_size


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
            (_first_guest(s), f"{format_size(guest['memory_bytes'])} = {guest['pages']} "
                              f"pages of {format_size(page_size)}"),
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
        parts += _host_tables(s)
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


def _first_guest(s: dict[str, Any]) -> str:
    """The label of the guest the top-level sections describe."""
    names = list(s.get("guests", {}))
    return "guest" if len(names) <= 1 else f"guest {names[0]} (1 of {len(names)}; all below)"


def _host_tables(s: dict[str, Any]) -> list[Any]:
    """The host's counters, the policy's score, and one row per guest."""
    host = s["host"]
    rows = [(k, _compact(v)) for k, v in host.items() if k not in ("guests", "score")]
    if len(host["guests"]) == 1:  # one guest: its device counters read as before
        for name, g in host["guests"].items():
            rows += [(f"{name}.{k}", v) for k, v in g.items() if k != "score"]
    out: list[Any] = [_kv_table("host (4 KiB pages)", rows),
                      _kv_table("policy score (host)", list(host["score"].items()))]
    if len(host["guests"]) > 1:
        out.append(_guests_table(s))
    return out


def _guests_table(s: dict[str, Any]) -> Table:
    """One row per guest: its size and free memory, balloon, what it saved and suffered."""
    t = Table(title="guests (MiB; balloon actual/target; seconds of virtual time)",
              title_justify="left")
    for col in ("guest", "RAM", "free", "balloon", "saved", "low s", "fail", "THP fb",
                "moves", "rev", "stall"):
        t.add_column(col, justify="left" if col == "guest" else "right")
    mib = 4096 / (1 << 20)
    for name, h in s["host"]["guests"].items():
        g = s["guests"][name]
        info, sc = g["guest"], h["score"]
        t.add_row(name, f"{info['memory_bytes'] >> 20}",
                  f"{info['free_pages'] * info['page_size'] >> 20}",
                  f"{h['actual'] * mib:.0f}/{h['target'] * mib:.0f}",
                  f"{sc['saved_mib_avg']:.0f}", f"{info['low_memory_seconds']:.1f}",
                  str(info["allocation_pressure"]), str(g["vmstat"]["thp_fault_fallback"]),
                  str(sc["target_changes"]), str(sc["reversals"]), str(sc["stalls"]))
    return t


def _compact(value: Any) -> Any:
    """Small dicts on one line (``floor=6 deadband=2``), '-' when empty."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return value


def _frag(index: int) -> str:
    if index == -1000:
        return "-1.000 (a free block of this order exists)"
    return f"{index / 1000:.3f}"


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    console.print(summary_tables(summary))
