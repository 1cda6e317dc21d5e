"""Readable renderings of a session summary for the console (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table

from actors.sim.units import format_size


def _kv_table(title: str, rows: list[tuple[str, Any]], *, prose: bool = False) -> Table:
    """Label and value rows; ``prose``: values are sentences, left-aligned, no minimum width."""
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2),
                  min_width=None if prose else 64, title_style="bold")
    table.add_column(style="bold")
    table.add_column(justify="left" if prose else "right")
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


#: What the brief summary's last line suggests trying next.
NEXT: tuple[str, ...] = ("vballoon run inflate-deflate", "vballoon run three-guests",
                         "vballoon plot LOG", "vballoon fuzz race --driver v9")


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):,.0f} MiB"


def summary_brief(s: dict[str, Any]) -> Group:
    """The summary in about 20 lines: each guest's memory, balloon, compaction and huge
    pages, the host, the verdict, and what to try next (``--full`` prints every counter)."""
    multi = len(s.get("guests", {})) > 1
    parts: list[Any] = [
        f"[bold]vballoon session: {s['scenario']}[/bold] (seed {s['seed']}, {s['reason']}): "
        f"{s['virtual_seconds']:.3f} s virtual in {s['wall_seconds']:.2f} s wall"]
    for name, g in s.get("guests", {"guest0": s}).items():
        parts.append(_guest_brief(name, g))
        if multi:
            break  # the others: one row each in the guests table below
    if multi:
        parts.append(_guests_table(s))
    host = s.get("host")
    if isinstance(host, dict):
        page = 4096
        parts.append(_kv_table("host", [
            ("memory", f"{_mib(host['total_pages'] * page)}, free at the end "
                       f"{_mib(host['free_pages'] * page)}"),
            ("policy", f"{host['policy']} every {host['policy_interval']:g} s, "
                       f"{host['policy_decisions']} decisions, {host['policy_errors']} errors"),
        ], prose=True))
    nv = len(s["violations"])
    if nv:
        parts.append(f"[red]violations ({nv})[/red]")
        for v in s["violations"][:5]:
            parts.append(f"[red]  t={v['t']:.6f}  {v['kind']}: {v['detail']}[/red]")
        if nv > 5:
            parts.append(f"[red]  ... {nv - 5} more (--full or --json)[/red]")
    else:
        parts.append("[green]no violations[/green]")
    parts.append("every counter: --full · as JSON: --json")
    parts.append("try next: " + " · ".join(NEXT))
    return Group(*parts)


def _guest_brief(name: str, g: dict[str, Any]) -> Table:
    """One guest: memory and who uses it, balloon, compaction, THP, in MiB and pages."""
    info, page = g["guest"], g["guest"]["page_size"]
    free = info["free_pages"]
    used = [(o, n) for o, n in info["owners"].items() if n and o != "free"]
    rows: list[tuple[str, Any]] = [
        ("memory", f"{format_size(info['memory_bytes'])} = {info['pages']:,} pages of "
                   f"{format_size(page)}"),
        ("free", f"{_mib(free * page)} ({free:,} pages, {free / info['pages']:.0%})"),
        ("used by (owner)", ", ".join(f"{o} {_mib(n * page)}" for o, n in used) or "-"),
    ]
    b = g.get("balloon")
    if isinstance(b, dict):
        rows.append(("balloon now", f"target {_mib(b['target'] * 4096)}, actual "
                                    f"{_mib(b['actual'] * 4096)}"))
        rows.append(("balloon moved", f"{b['inflated']:,} pages in, {b['deflated']:,} out "
                                      f"({_mib(b['inflated'] * page)} / "
                                      f"{_mib(b['deflated'] * page)})"))
    vm = g["vmstat"]
    rows.append(("compaction", f"{vm['compact_balloon_migrated']:,} balloon pages migrated, "
                               f"{vm['compact_balloon_returned']:,} put back; "
                               f"{vm['compact_stall']:,} direct compactions"))
    thp = g["thp"]
    rows.append(("huge pages", f"{thp['attempts']:,} THP faults, {thp['success_rate']:.0%} got "
                               "a 2 MiB page"))
    rows.append(("fragmentation", f"order 9: {_frag(g['fragmentation_index'])}"))
    return _kv_table(name, rows, prose=True)


def print_summary(console: Console, summary: dict[str, Any], *, full: bool = False) -> None:
    """``full``: every table (buddyinfo, vmstat, the host's counters); else the brief one."""
    console.print(summary_tables(summary) if full else summary_brief(summary))
