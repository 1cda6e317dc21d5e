"""The live dashboard of ``vballoon run`` in a terminal: a row per guest and one for the host.

Refreshed at every snapshot, on virtual time (``Session.on_snapshot``); with ``--speed X`` the
run is paced to X times real time between snapshots, so a person can watch. Pacing happens in
the snapshot callback, outside every actor: the session's log is the same at any speed. Off a
terminal (a pipe, a file) there is no dashboard at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from run.session.session import Session

MIB = 1 << 20


def dashboard(session: Session, total: float) -> Group:
    """The dashboard for ``session`` as it is now (``total``: its virtual duration)."""
    t = Table(title_justify="left", expand=False,
              title=f"{session.scenario.name}: t = {session.now:.1f} of {total:g} s "
                    f"(MiB; THP: faults that got a huge page)")
    for col in ("guest", "target", "actual", "free", "RSS", "THP", "migrated"):
        t.add_column(col, justify="left" if col == "guest" else "right")
    for guest in session.guests:
        device = session.host.devices.get(guest.name)
        vm = guest.vmstat
        tries = vm.get("thp_fault_alloc") + vm.get("thp_fault_fallback")
        thp = f"{vm.get('thp_fault_alloc') / tries:.0%}" if tries else "-"
        page = guest.frames.page_size
        t.add_row(guest.name,
                  _mib(device.target * 4096) if device else "-",
                  _mib(device.actual * 4096) if device else "-",
                  _mib(guest.zone.free_pages * page),
                  _mib(device.memory.rss * 4096) if device else "-",
                  thp, f"{vm.get('compact_balloon_migrated'):,}")
    host = session.host
    free, total_pages = host.memory.free_pages, host.memory.total_pages
    pressure = 1 - free / total_pages if total_pages else 0.0
    last = ", ".join(f"{g} {_mib(n * 4096)}" for g, n in host.last_targets.items()) or "-"
    line = Text.assemble(("host ", "bold"), f"free {_mib(free * 4096)} MiB, pressure "
                         f"{pressure:.0%}; policy {host.policy_name}: last targets {last}")
    # a session-wide count: kernel reports (lockdep, watchdogs) do not name their guest
    found = Text(f"violations so far: {len(session.violations)}",
                 style="red" if session.violations else "green")
    return Group(t, line, found)


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.0f}"


class LiveView:
    """``vballoon run``'s dashboard: ``on_snapshot`` for the session, a context for Live."""

    def __init__(self, console: Console, total: float, speed: float | None, *,
                 wait: Callable[[float], None] = time.sleep, start: float = 0.0) -> None:
        self.console = console
        self.total = total
        self.speed = speed
        #: How to let real seconds pass (the console's also listens for 'pause').
        self.wait = wait
        #: The session time pacing starts from (a console's ``continue`` starts mid-run).
        self.start = start
        self._live: Live | None = None
        self._wall0 = time.monotonic()

    def __enter__(self) -> LiveView:
        self._live = Live(console=self.console, auto_refresh=False, transient=True)
        self._live.__enter__()
        self._wall0 = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._live is not None
        self._live.__exit__(*exc)

    def on_snapshot(self, session: Session) -> None:
        """Redraw; with a speed, wait until real time has caught up with virtual time."""
        assert self._live is not None
        self._live.update(dashboard(session, self.total), refresh=True)
        self.pace(session)

    def pace(self, session: Session) -> None:
        """With a speed, wait until real time has caught up with virtual time."""
        if self.speed:
            ahead = (session.now - self.start) / self.speed - (time.monotonic() - self._wall0)
            if ahead > 0:
                self.wait(ahead)  # outside the actors: the session is paused, not changed
