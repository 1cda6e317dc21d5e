"""One guest VM: its memory model, allocator actor and workload apps, started together.

The session creates a ``Guest`` and starts it in its task group; the guest starts its own
actors (allocator first, since every other actor is its client) and reports ready.

Interrupts are kernel tasks that wait for their event and run the handler inside
``hardirq(kernel)``: the balloon's virtqueue and config interrupts (``irq/virtio-balloon``,
the driver's) and the disk's end-I/O completions (``irq/end_io``, here), which arrive at
``workload.endio_rate`` per second (a Poisson process on the guest's ``endio`` stream) while
the apps hold page cache, each completing writeback of one of their page-cache pages
(``end_page_writeback`` of a page reclaim marked: ``rotate_reclaimable_page``,
:mod:`actors.guest.mm.swap`).
"""

from __future__ import annotations

import array
import random
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.guest.balloon import DRIVERS, VirtioBalloon
from actors.guest.balloon.common import MemInfo
from actors.guest.config import GuestConfig
from actors.guest.mm import pages as P
from actors.guest.mm import vmstat as views
from actors.guest.mm.allocator import Allocator, AllocatorClient
from actors.guest.mm.compaction import CompactionConfig, CompactionState, Compactor
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.rmap import Rmap
from actors.guest.mm.swap import LruRotate
from actors.guest.workload import (
    PAGECACHE,
    App,
    HighOrderStats,
    WorkloadConfig,
    run_app,
    run_highorder_passes,
)
from actors.kernel.irq import hardirq
from actors.kernel.kernel import Kernel
from actors.kernel.task import current_name
from actors.kernel.watchdog import start_watchdogs
from actors.sim import schema
from actors.sim.choices import Choices
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.transport import Transport
from actors.sim.units import parse_duration


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
        transport: Transport | None = None,
        report: Callable[..., None] = lambda kind, detail, **fields: None,
        compaction: CompactionConfig | None = None,
        clock: Callable[[], float] = anyio.current_time,
        choices: Choices | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.costs = costs
        self.frames = PageFrames(config.nr_pages, config.page_size)
        self.zone = Zone(self.frames, fallback=config.fallback)
        self.vmstat = views.VmStat()
        self.allocator = Allocator(self.zone, self.vmstat, costs, logger(f"{name}.alloc"),
                                   clock=clock, choices=choices, name=name)
        self.kernel = Kernel(log=logger(f"{name}.kernel"), costs=costs,
                             rng=rng(f"{name}.preempt"), report=report,
                             strength=config.preempt, max_delay=config.preempt_delay,
                             name=name, clock=clock, choices=choices, cpus=config.cpus,
                             race_rng=rng(f"{name}.races"), strategy=config.strategy,
                             depth=config.depth, steps=config.steps)
        self.meminfo = MemInfo(totalram=self.frames.nr_pages)
        self.transport = transport
        self.balloon: VirtioBalloon | None = None
        if transport is not None and config.balloon:
            self.balloon = DRIVERS[config.driver](
                kernel=self.kernel, frames=self.frames,
                allocator=self.allocator.client(f"{name}.balloon"), transport=transport,
                meminfo=self.meminfo, vmstat=self.vmstat, costs=costs,
                log=logger(f"{name}.balloon"), freeram=lambda: self.zone.free_pages)
        self.workload = workload
        self.rmap = Rmap(config.nr_pages)
        share = int(config.nr_pages * workload.fill / workload.apps) if workload.apps else 0
        self.apps = [
            App(f"app{i}", share, workload, rng(f"{name}.workload.app{i}"),
                drop_time=duration * workload.drop_at, rmap=self.rmap)
            for i in range(workload.apps)
        ]
        self._logger = logger
        self._endio_rng = rng(f"{name}.endio")
        self.compaction = compaction or CompactionConfig()
        self.compaction_state = CompactionState.for_zone(self.zone)  # shared by compactors
        self._compactors = 0
        self.highorder = HighOrderStats()
        self.compact_memory_runs = 0
        self.order9_after_compact_memory = -1  # -1: no compact_memory run finished

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the allocator and the apps; runs until the session cancels it."""
        async with anyio.create_task_group() as tg:
            clients = [self.allocator.client(f"{self.name}.{app.name}") for app in self.apps]
            await tg.start(self.allocator.run)
            await start_watchdogs(tg, self.kernel,
                                  hung_task_timeout=self.config.hung_task_timeout,
                                  softlockup_thresh=self.config.softlockup_thresh)
            if self.balloon is not None:
                await tg.start(self.balloon.interrupts)
                await tg.start(self.balloon.balloon)
            for app, client in zip(self.apps, clients, strict=True):
                direct = self.compactor(client) if self.compaction.direct else None
                await self.kernel.start(tg, app.name, run_app, app, self.frames, client,
                                        self.vmstat, self.costs,
                                        self._logger(f"{self.name}.{app.name}"), self.kernel,
                                        direct)
            if self.apps and self.workload.endio_rate > 0:
                self.kernel.spawn(tg, "irq/end_io", self._end_io)
            if self.workload.highorder_at and self.workload.highorder_count:
                client = self.allocator.client(f"{self.name}.highorder")
                direct = self.compactor(client) if self.compaction.direct else None
                await self.kernel.start(tg, "highorder", self._highorder, client, direct)
            if self.compaction.at and self.compaction.workers:
                tg.start_soon(self._compact_memory_timeline, tg)
            if self.compaction.kcompactd_interval > 0:
                self.kernel.spawn(tg, "kcompactd0", self._kcompactd)
            if self.balloon is not None and self.config.unplug_at > 0:
                self.kernel.spawn(tg, "kworker/unplug", self._unplug, self.balloon)
            task_status.started()

    async def _highorder(self, client: AllocatorClient, direct: Compactor | None, *,
                         task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await run_highorder_passes(self.workload, client, direct, self.highorder,
                                   self._logger(f"{self.name}.highorder"))

    async def _unplug(self, balloon: VirtioBalloon) -> None:
        """Hot-unplug of the balloon device at ``unplug_at``: the driver's remove callback."""
        with self.kernel.sleeping("unplug_at"):
            await sleep(self.config.unplug_at)
        if not balloon.removing:  # not unplugged by an operator's command first
            await balloon.virtballoon_remove()

    def unplug(self, tg: TaskGroup) -> str:
        """Hot-unplug the balloon device now (an operator's ``unplug``); what happened."""
        b = self.balloon
        if b is None:
            return "no balloon driver"
        if b.removing:
            return "already unplugged"
        b.removing = True  # at once: a second unplug in the same instant finds it taken
        self.kernel.spawn(tg, "kworker/unplug", b.virtballoon_remove)
        return "applied"

    async def _end_io(self) -> None:
        """The disk's end-I/O interrupts: each, in hardirq context, ends the writeback of a
        page-cache page reclaim marked (end_page_writeback: TestClearPageReclaim, then
        rotate_reclaimable_page). Two draws of the ``endio`` stream each: when, and which page."""
        k, rng = self.kernel, self._endio_rng
        rate = self.workload.endio_rate
        rotate = LruRotate(k, self.frames, self.compaction_state.zone_lru_lock(k), self.vmstat)
        while True:
            with k.sleeping("irq/end_io"):  # no interrupt pending
                await sleep(rng.expovariate(rate))
            page = self._written_back_page(rng)
            if page < 0:  # no page cache: no writeback to complete
                continue
            with hardirq(k):
                await rotate.rotate_reclaimable_page(page)

    def _written_back_page(self, rng: random.Random) -> int:
        """A page-cache page of the apps, uniformly (the one whose writeback ends), or -1."""
        held = [app.held[PAGECACHE] for app in self.apps]
        total = sum(map(len, held))
        if not total:
            return -1
        i = rng.randrange(total)
        for pages in held:
            if i < len(pages):
                return pages[i]
            i -= len(pages)
        return -1

    def touched(self, pfns: array.array[int]) -> None:
        """The guest wrote these pages other than by allocating them (a migration's copy):
        the host backs them like freshly allocated pages."""
        if self.allocator.on_alloc is not None and pfns:
            self.allocator.on_alloc(pfns, 0, P.OWNER_ANON)

    # -- compaction triggers -------------------------------------------------------------------
    def compactor(self, client: AllocatorClient | None = None) -> Compactor:
        """A compactor for one task (each task needs its own allocator connection)."""
        self._compactors += 1
        movable = self.balloon.a_ops if self.balloon is not None else None
        # the balloon compaction core the driver runs with (v9's hooks or 3.8's)
        cls = self.balloon.compactor_class if self.balloon is not None else Compactor
        return cls(kernel=self.kernel, zone=self.zone,
                         allocator=client or self.allocator.client(
                             f"{self.name}.compact{self._compactors}"),
                         rmap=self.rmap, balloon=movable, vmstat=self.vmstat, costs=self.costs,
                         log=self._logger(f"{self.name}.compaction"), config=self.compaction,
                         shared=self.compaction_state, touched=self.touched)

    async def compact_memory(self, tg: TaskGroup, workers: int = 0) -> None:
        """echo 1 > /proc/sys/vm/compact_memory, by ``workers`` writers at once (0: the
        scenario's ``compaction.workers``)."""
        for _ in range(workers or self.compaction.workers):
            c = self.compactor()
            self.kernel.spawn(tg, "compact_memory", self._full_compaction, c)

    async def _full_compaction(self, c: Compactor) -> None:
        await c.compact_zone(-1, current_name(), "compact_memory")
        self.compact_memory_runs += 1
        self.order9_after_compact_memory = c.last_free_order9
        await c.allocator.aclose()

    async def _compact_memory_timeline(self, tg: TaskGroup) -> None:
        now = 0.0
        for at in sorted(parse_duration(t) for t in self.compaction.at):
            await sleep(max(0.0, at - now))
            now = at
            await self.compact_memory(tg)

    async def _kcompactd(self) -> None:
        """kcompactd: wake periodically; compact for order 9 when fragmentation says so."""
        c = self.compactor()
        while True:
            with self.kernel.sleeping("kcompactd_wait"):
                await sleep(self.compaction.kcompactd_interval)
            if c.fragmentation_says_compact(9):
                self.vmstat.inc("compact_daemon_wake")
                await c.compact_zone(9, "kcompactd0", "kcompactd")

    # -- views for snapshots and the summary ---------------------------------------------------
    def counters(self) -> dict[str, dict[str, int] | None]:
        """The balloon's counters a ``mem.snapshot`` carries (units: ``schema.MEM_SNAPSHOT``),
        so ``vballoon check`` can hold each against the records it counts at every quiescent
        point, not only at the end; read in one go, with no await between them."""
        b, vm = self.balloon, self.vmstat
        driver = None
        if b is not None:
            summary = b.summary()
            driver = {k: summary[k] for k in schema.SNAPSHOT_BALLOON}
        return {"balloon": driver, "vmstat": {k: vm.get(k) for k in schema.SNAPSHOT_VMSTAT}}

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

    def balloon_problems(self, host_ballooned: bytearray | None) -> list[tuple[str, str]]:
        """At a quiescent point: host set == driver list + isolated, and MemTotal adds up."""
        b = self.balloon
        if b is None:
            return []
        problems = []
        ppp = b.PAGES_PER_PAGE
        in_balloon = len(b.pages) + b.isolated()
        if b.num_pages.atomic_read() != in_balloon * ppp:
            problems.append(("balloon", f"num_pages {b.num_pages.atomic_read()} but "
                                        f"{in_balloon} pages on the list or isolated"))
        if self.meminfo.totalram != self.frames.nr_pages - in_balloon:
            problems.append(("memtotal", f"totalram {self.meminfo.totalram} != "
                                         f"{self.frames.nr_pages} - {in_balloon} ballooned"))
        problems += self._counter_problems(in_balloon)
        if host_ballooned is not None:
            driver = {p * ppp + i for p in b.pages.pfns() for i in range(ppp)}
            driver |= {p * ppp + i for p in self.isolated_pfns() for i in range(ppp)}
            # bit 0 of the host's page state: in the balloon (actors/host/memory.py)
            host = {p for p, st in enumerate(host_ballooned) if st & 1}
            if driver != host:
                only_d = sorted(driver - host)[:8]
                only_h = sorted(host - driver)[:8]
                problems.append(("host-vs-driver",
                                 f"host ballooned set ({len(host)}) != driver list + isolated "
                                 f"({len(driver)}); only driver: {only_d}, only host: {only_h}"))
        return problems

    def _counter_problems(self, in_balloon: int) -> list[tuple[str, str]]:
        """The balloon's counters against the state they count (guest pages), at a quiescent
        point: nothing isolated, so every isolation ended migrated or returned, and every
        migrated old page has been released to the buddy allocator."""
        b, vm = self.balloon, self.vmstat
        assert b is not None
        problems = []
        if b.inflated - b.deflated != in_balloon:
            problems.append(("counters", f"driver inflated {b.inflated} - deflated {b.deflated}"
                                         f" != {in_balloon} pages in the balloon"))
        isolated, migrated = vm.get("compact_balloon_isolated"), vm.get("compact_balloon_migrated")
        returned, released = vm.get("compact_balloon_returned"), vm.get("compact_balloon_released")
        if isolated != migrated + returned:
            problems.append(("counters", f"compact_balloon_isolated {isolated} != migrated "
                                         f"{migrated} + returned {returned}, nothing isolated"))
        if migrated != released:
            problems.append(("counters", f"compact_balloon_migrated {migrated} != released "
                                         f"{released}, no migration in flight"))
        return problems

    def isolated_pfns(self) -> list[int]:
        """Balloon pages isolated by compaction (PG_balloon and PG_isolated)."""
        if self.balloon is None or not self.balloon.isolated():
            return []
        flags = self.frames.flags
        want = P.PG_balloon | P.PG_isolated
        return [p for p in range(self.frames.nr_pages) if flags[p] & want == want]

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
            "free_order9_blocks": views.free_blocks_at_least(zone, 9),
            "unusable_free_index": views.unusable_free_index(zone, 9),
            "thp": self.thp_summary(),
            "highorder": self.highorder.summary(),
            "compaction": {"compact_memory_runs": self.compact_memory_runs,
                           "free_order9_after_compact_memory":
                               self.order9_after_compact_memory},
            "allocation_pressure": sum(app.pressure for app in self.apps),
            "low_memory_seconds": round(self.allocator.free.time_below(self.kernel.now()), 6),
        }
