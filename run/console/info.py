"""What the console's reading commands show: ``info TOPIC`` and ``dommemstat GUEST``.

Each view reads a paused session and renders what its real counterpart prints: QEMU's
``info balloon`` (the guest's logical size, MiB), ``/proc/buddyinfo`` and ``/proc/pagetypeinfo``
rows, ``/proc/vmstat`` lines, lockdep's ``show_all_locks``, virsh ``dommemstat`` (KiB).
Pure functions of the session: no output of their own, no change to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from actors.guest.mm import vmstat as views

if TYPE_CHECKING:
    from actors.guest.guest import Guest
    from run.session.session import Session

MIB: Final = 1 << 20


def _table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def balloon(s: Session) -> RenderableType:
    """QEMU's ``info balloon`` per guest: its logical size (RAM minus the balloon), as the
    device has it (actual) and as the host asks (target)."""
    lines = []
    for g in s.guests:
        d = s.host.devices[g.name]
        ram = d.memory.pages * 4096
        owner = "operator" if g.name in s.host.manual else f"policy {s.host.policy_name}"
        lines.append(Text(
            f"{g.name}: actual={(ram - d.actual * 4096) // MIB} "
            f"target={(ram - d.target * 4096) // MIB} (MiB logical size of {ram // MIB}; "
            f"balloon {d.actual:,} of {d.target:,} pages; set by {owner})"))
    return Group(*lines)


def guests(s: Session) -> RenderableType:
    t = _table("guest", "RAM MiB", "free MiB", "driver", "page", "cpus", "balloon pages",
               "isolated", "tasks")
    for g in s.guests:
        b = g.balloon
        t.add_row(g.name, f"{g.config.memory // MIB:,}",
                  f"{g.zone.free_pages * g.frames.page_size // MIB:,}", g.config.driver,
                  f"{g.frames.page_size // 1024} KiB", str(g.config.cpus),
                  "-" if b is None else f"{b.num_pages.atomic_read():,}",
                  "-" if b is None else f"{b.isolated():,}", str(len(g.kernel.tasks)))
    return t


def host(s: Session) -> RenderableType:
    h, m = s.host, s.host.memory
    pressure = 1 - m.free_pages / m.total_pages if m.total_pages else 0.0
    last = ", ".join(f"{g} {n:,}" for g, n in h.last_targets.items()) or "-"
    return Group(
        Text(f"host: free {m.free_pages * 4096 // MIB:,} of {m.total_pages * 4096 // MIB:,} "
             f"MiB (pressure {pressure:.0%}); saved {m.saved_pages * 4096 // MIB:,} MiB"),
        Text(f"policy {h.policy_name}, every {h.policy_interval:g} s: {h.decisions} "
             f"decisions, {h.policy_errors} errors; last targets (pages): {last}"),
        Text(f"operator-held guests: {', '.join(sorted(h.manual)) or 'none'}"))


def _zone_rows(s: Session, rows: Callable[[Guest], list[tuple[str, list[int]]]],
               title: str) -> RenderableType:
    out: list[RenderableType] = []
    for g in s.guests:
        counts = rows(g)
        width = max(len(c) for _, c in counts)
        t = _table(f"{g.name}: {title}", *(str(o) for o in range(width)))
        for label, c in counts:
            t.add_row(label, *(str(n) for n in c))
        out.append(t)
    return Group(*out)


def buddyinfo(s: Session) -> RenderableType:
    """``/proc/buddyinfo``: free blocks per order, one row per guest's zone."""
    return _zone_rows(s, lambda g: [("Node 0, zone Normal", views.buddyinfo(g.zone))],
                      "free blocks per order")


def pagetypeinfo(s: Session) -> RenderableType:
    """``/proc/pagetypeinfo``: free blocks per order and migrate type."""
    def rows(g: Guest) -> list[tuple[str, list[int]]]:
        table = cast("dict[str, list[int]]", g.summary()["pagetypeinfo"])
        return list(table.items())

    return _zone_rows(s, rows,
                      "free blocks per order by migratetype")


def vmstat(s: Session) -> RenderableType:
    """``/proc/vmstat``: the counters that are not zero, per guest."""
    t = _table("counter", *(g.name for g in s.guests))
    stats = [cast("dict[str, int]", g.summary()["vmstat"]) for g in s.guests]
    for name in stats[0]:
        if any(v.get(name) for v in stats):
            t.add_row(name, *(f"{v.get(name, 0):,}" for v in stats))
    return t


def tasks(s: Session, *, locks_only: bool = False) -> RenderableType:
    """Every kernel task: state, what it waits on and since when, the locks it holds."""
    t = _table("guest", "task", "state", "waiting on", "since s", "holds")
    for g in s.guests:
        for k in g.kernel.tasks.values():
            held = k.held_names()
            if locks_only and not held and k.state not in ("blocked", "spinning"):
                continue
            t.add_row(g.name, k.name, k.state, k.waiting_on or "-", f"{k.since:.6f}",
                      ", ".join(held) or "-")
    return t


def locks(s: Session) -> RenderableType:
    """lockdep's ``show_all_locks``: the tasks that hold a lock or wait for one."""
    return tasks(s, locks_only=True)


def faults(s: Session) -> RenderableType:
    from actors.sim.choices import SITES

    t = _table("site", "firing", "what it does")
    for name, site in SITES.items():
        p = s.choices.active.get(name)
        t.add_row(name, "off" if p is None else f"{p:g}", site.doc)
    return t


#: ``info TOPIC`` -> its view.
INFO: Final[dict[str, Callable[[Session], RenderableType]]] = {
    "balloon": balloon, "guests": guests, "host": host, "buddyinfo": buddyinfo,
    "pagetypeinfo": pagetypeinfo, "vmstat": vmstat, "locks": locks, "tasks": tasks,
    "faults": faults,
}


#: virtio stats tags that are in bytes (virsh shows KiB).
BYTES: Final = frozenset({"swap_in", "swap_out", "memfree", "memtot", "avail", "caches"})


def dommemstat(s: Session, name: str) -> RenderableType:
    """virsh ``dommemstat``: KiB; the guest's statistics as its last stats buffer said."""
    d = s.host.devices[name]
    kib = {"actual": (d.memory.pages - d.actual) * 4, "rss": d.memory.rss * 4}
    names = {"swap_in": "swap_in", "swap_out": "swap_out", "majflt": "major_fault",
             "minflt": "minor_fault", "memfree": "unused", "memtot": "usable",
             "avail": "available"}
    for tag, value in d.stats.items():
        key = names.get(tag, tag)
        kib[key] = value // 1024 if tag in BYTES else value  # faults are counts
    lines = [f"{k} {v}" for k, v in kib.items()]
    if d.stats_time is not None:
        lines.append(f"last_update {d.stats_time:.3f}")
    return Text("\n".join(lines))
