"""One guest VM: its memory model, allocator actor and workload apps, started together.

The session creates a ``Guest`` and starts it in its task group; the guest starts its own
actors (allocator first, since every other actor is its client) and reports ready.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.costs import CostModel
from actors.guest import pages as P
from actors.guest import views
from actors.guest.allocator import Allocator
from actors.guest.buddy import Zone
from actors.guest.config import GuestConfig
from actors.guest.pages import PageFrames
from actors.guest.workload import App, WorkloadConfig, run_app


class Guest:
    """A guest kernel's memory and the tasks that use it."""

    def __init__(
        self,
        name: str,
        config: GuestConfig,
        workload: WorkloadConfig,
        costs: CostModel,
        *,
        logger: Callable[[str], FilteringBoundLogger],
        rng: Callable[[str], random.Random],
        duration: float,
    ) -> None:
        self.name = name
        self.config = config
        self.costs = costs
        self.frames = PageFrames(config.nr_pages, config.page_size)
        self.zone = Zone(self.frames)
        self.vmstat = views.VmStat()
        self.allocator = Allocator(self.zone, self.vmstat, costs, logger(f"{name}.alloc"))
        self.workload = workload
        share = int(config.nr_pages * workload.fill / workload.apps) if workload.apps else 0
        self.apps = [
            App(f"app{i}", share, workload, rng(f"{name}.workload.app{i}"),
                drop_time=duration * workload.drop_at)
            for i in range(workload.apps)
        ]
        self._logger = logger

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the allocator and the apps; runs until the session cancels it."""
        async with anyio.create_task_group() as tg:
            clients = [self.allocator.client(f"{self.name}.{app.name}") for app in self.apps]
            await tg.start(self.allocator.run)
            for app, client in zip(self.apps, clients, strict=True):
                await tg.start(run_app, app, client, self.vmstat, self.costs,
                               self._logger(f"{self.name}.{app.name}"))
            task_status.started()

    # -- views for snapshots and the summary ---------------------------------------------------
    def owner_counts(self) -> dict[str, int]:
        """Pages per owner, counted from the page-frame array (independent of the zone's books)."""
        mapping = self.frames.mapping
        return {name: mapping.count(code) for code, name in enumerate(P.OWNER_NAMES)}

    def conservation_problem(self) -> str | None:
        """Cross-check the zone's free count against the page-frame owners; None if they agree."""
        counts = self.owner_counts()
        total = sum(counts.values())
        if total != self.frames.nr_pages:
            return f"owner counts sum to {total}, guest has {self.frames.nr_pages} pages"
        if counts["free"] != self.zone.free_pages:
            return (f"{counts['free']} pages marked free in page frames, "
                    f"zone free count says {self.zone.free_pages}")
        return None

    def thp_summary(self) -> dict[str, float]:
        alloc = self.vmstat.get("thp_fault_alloc")
        fallback = self.vmstat.get("thp_fault_fallback")
        attempts = alloc + fallback
        return {"attempts": attempts, "alloc": alloc, "fallback": fallback,
                "success_rate": round(alloc / attempts, 4) if attempts else 0.0}

    def summary(self) -> dict[str, object]:
        """The guest's part of the session summary, kernel-style views included."""
        zone = self.zone
        buddyinfo = views.buddyinfo(zone)
        return {
            "pages": self.frames.nr_pages,
            "page_size": self.frames.page_size,
            "memory_bytes": self.frames.nr_pages * self.frames.page_size,
            "free_pages": zone.free_pages,
            "owners": self.owner_counts(),
            "vmstat": self.vmstat.as_dict(),
            "buddyinfo": buddyinfo,
            "pagetypeinfo": views.pagetypeinfo(zone),
            "fragmentation_index": views.fragmentation_index(zone, 9),
            "unusable_free_index": views.unusable_free_index(zone, 9),
            "thp": self.thp_summary(),
            "allocation_pressure": sum(app.pressure for app in self.apps),
        }
