"""Seeded guest applications that fragment memory the way long-running guests do.

Each app grows to its share of memory with a mix of movable (anonymous, page cache) and
unmovable (kernel/slab) pages, then churns (frees random pages, allocates new ones), and at
``drop_at`` drops part of its page cache and heap (a process exit, ``drop_caches``). It also
faults transparent huge pages: an order-9 ``GFP_TRANSHUGE`` attempt that falls back to 512
base pages, counted as ``thp_fault_alloc`` / ``thp_fault_fallback``. Randomly freed pages
scatter free memory across pageblocks and unmovable allocations made while memory is tight
steal small blocks from movable pageblocks: plenty of free memory, few 2 MiB blocks.

``App`` is the pure decision logic (what to do this tick, which pages to give back);
``run_app`` is the async shell that executes it against the allocator actor.
"""

from __future__ import annotations

import array
import functools
import random
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm import vmstat as views
from actors.guest.mm.allocator import AllocatorClient
from actors.guest.mm.compaction import COMPACT_SKIPPED, Compactor
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.rmap import MAX_HOLDINGS, Rmap
from actors.guest.mm.vmstat import VmStat
from actors.kernel.kernel import Kernel
from actors.sim import schema
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.units import UnitError, parse_duration

HPAGE_ORDER = 9


def _f(default: float, doc: str, unit: str = "") -> float:
    return field(default=default, metadata={"doc": doc, "unit": unit})


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Shape of the guest workload (scenario table ``[workload]``)."""

    apps: int = field(default=4, metadata={"doc": "number of guest applications"})
    tick: float = _f(0.05, "virtual time between two steps of one app", "duration")
    batch: int = field(default=256, metadata={"doc": "pages per allocation request"})
    fill: float = _f(0.92, "fraction of guest memory the apps together grow to")
    unmovable: float = _f(0.06, "fraction of allocations that are kernel/slab (unmovable)")
    pagecache: float = _f(0.5, "fraction of movable allocations that are page cache")
    churn: float = _f(0.5, "pages freed and reallocated per churn step, as a fraction of batch")
    thp_rate: float = _f(0.2, "probability per step that an app faults a transparent huge page")
    thp_max: float = _f(0.3, "largest fraction of an app's share held as huge pages")
    drop_at: float = _f(0.5, "when (fraction of the session) apps drop caches and part of heap")
    drop_fraction: float = _f(0.5, "fraction of movable pages dropped at drop_at")
    highorder_at: list[str] = field(default_factory=list, metadata={
        "doc": "times of high-order allocation passes (like writing nr_hugepages), e.g. ['20s']"})
    highorder_order: int = field(default=9, metadata={"doc": "order of those allocations"})
    highorder_count: int = field(default=32, metadata={
        "doc": "allocations attempted per pass (each may direct-compact); freed after the pass"})
    endio_rate: float = field(default=40.0, metadata={
        "doc": "end-I/O interrupts per second while the apps hold page cache: each completes "
               "writeback of a page-cache page and rotates it to the LRU tail "
               "(rotate_reclaimable_page: zone->lru_lock in hardirq context, once per 14); "
               "0: none"})

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs for values outside their meaningful range."""
        problems = []
        most = MAX_HOLDINGS // len(KIND_NAMES)
        if not 0 <= self.apps <= most:
            problems.append(("apps", f"must be between 0 and {most} (the reverse map holds "
                                     f"{MAX_HOLDINGS} holdings, {len(KIND_NAMES)} per app), "
                                     f"got {self.apps}"))
        if self.batch < 1 or self.batch > 4096:
            problems.append(("batch", "must be between 1 and 4096"))
        if self.tick <= 0:
            problems.append(("tick", "must be > 0"))
        for name in ("fill", "unmovable", "pagecache", "churn", "thp_rate", "thp_max",
                     "drop_at", "drop_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                problems.append((name, f"must be between 0 and 1, got {v}"))
        if not 1 <= self.highorder_order <= 10:
            problems.append(("highorder_order", "must be between 1 and 10"))
        if self.highorder_count < 0:
            problems.append(("highorder_count", "must be >= 0"))
        if self.endio_rate < 0:
            problems.append(("endio_rate", f"must be >= 0 (0: none), got {self.endio_rate}"))
        for i, t in enumerate(self.highorder_at):
            try:
                parse_duration(t)
            except UnitError as e:
                problems.append((f"highorder_at[{i}]", str(e)))
        return problems


# Kinds of memory an app holds, with the owner code and GFP mask they are allocated with.
KERNEL, ANON, PAGECACHE = 0, 1, 2
KIND_NAMES = ("kernel", "anon", "pagecache")
KIND_OWNER = (P.OWNER_KERNEL, P.OWNER_ANON, P.OWNER_PAGECACHE)
KIND_GFP = (G.GFP_KERNEL, G.GFP_HIGHUSER_MOVABLE, G.GFP_HIGHUSER_MOVABLE)


@dataclass(slots=True)
class Step:
    """What an app does in one tick: frees first, then allocations, then maybe a THP fault."""

    free: list[tuple[int, array.array[int]]] = field(default_factory=list)  # (kind, pfns)
    free_thp: array.array[int] = field(default_factory=lambda: array.array("I"))
    alloc: list[tuple[int, int]] = field(default_factory=list)  # (kind, count)
    thp: bool = False
    split_thp: int = -1  # head of a huge page to split, half of it then unmapped
    phase: str | None = None  # set when the app enters a new phase


class App:
    """Pure decision logic of one application; holds the PFNs it owns, in compact arrays."""

    def __init__(self, name: str, share: int, cfg: WorkloadConfig, rng: random.Random,
                 drop_time: float, rmap: Rmap | None = None) -> None:
        self.name = name
        self.share = share
        self.cfg = cfg
        self.rng = rng
        self.drop_time = drop_time
        # Base pages by kind, each an rmap holding so compaction can migrate them.
        self.rmap = rmap if rmap is not None else Rmap(0)
        self.hids = [self.rmap.register() for _ in KIND_NAMES]
        self.held: list[array.array[int]] = [self.rmap.holding(h) for h in self.hids]
        self.thp: array.array[int] = array.array("I")
        self.phase = "grow"
        self.dropped = False
        self.pressure = 0  # allocation requests that came back short

    def pages(self) -> int:
        """Pages this app holds (huge pages count 512 each)."""
        return sum(len(h) for h in self.held) + (len(self.thp) << HPAGE_ORDER)

    def _mix(self, n: int) -> list[tuple[int, int]]:
        """Split ``n`` pages between kernel, anon and page cache as configured."""
        rng, cfg = self.rng, self.cfg
        kernel = sum(1 for _ in range(n) if rng.random() < cfg.unmovable) if n <= 64 else \
            int(n * cfg.unmovable + rng.random())
        movable = n - kernel
        cache = int(movable * cfg.pagecache + rng.random())
        cache = min(cache, movable)
        return [(k, c) for k, c in ((KERNEL, kernel), (ANON, movable - cache),
                                    (PAGECACHE, cache)) if c > 0]

    def take_random(self, kind: int, n: int) -> array.array[int]:
        """Remove ``n`` random pages of ``kind`` from the holdings (swap-remove, O(n))."""
        held, rng, hid, take = self.held[kind], self.rng, self.hids[kind], self.rmap.take
        out: array.array[int] = array.array("I")
        for _ in range(min(n, len(held))):
            out.append(take(hid, rng.randrange(len(held))))
        return out

    def map_pages(self, kind: int, pfns: array.array[int] | list[int]) -> None:
        """Map newly allocated base pages into this app (rmap-tracked)."""
        self.rmap.add(self.hids[kind], pfns)

    def _set_phase(self, step: Step, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            step.phase = phase

    def step(self, now: float) -> Step:
        """Decide this tick's frees and allocations."""
        cfg, rng = self.cfg, self.rng
        s = Step()
        if not self.dropped and now >= self.drop_time:
            self.dropped = True
            self._set_phase(s, "drop")
            for kind in (ANON, PAGECACHE):
                n = int(len(self.held[kind]) * cfg.drop_fraction)
                s.free.append((kind, self.take_random(kind, n)))
            nthp = int(len(self.thp) * cfg.drop_fraction)
            s.free_thp = self.thp[:nthp]
            del self.thp[:nthp]
            # The working set shrank for good: from now on the app stays at its new size.
            self.share = self.pages()  # the frees above are already out of the holdings
            return s
        if self.phase == "grow" and self.pages() + cfg.batch <= self.share:
            s.alloc = self._mix(cfg.batch)
        else:
            self._set_phase(s, "steady" if self.dropped else "churn")
            n = int(cfg.batch * cfg.churn)
            excess = self.pages() - self.share
            if excess > 0:  # over its working set (THP fallbacks): give memory back
                n += min(excess, cfg.batch)
            if n:
                weights = [len(h) for h in self.held]
                total = sum(weights)
                if total:
                    pick = rng.random() * total
                    kind = 0 if pick < weights[0] else 1 if pick < weights[0] + weights[1] else 2
                    s.free.append((kind, self.take_random(kind, n)))
                s.alloc = self._mix(int(cfg.batch * cfg.churn)) if excess <= 0 else []
        if cfg.thp_rate and rng.random() < cfg.thp_rate:
            if (len(self.thp) + 1) << HPAGE_ORDER > self.share * cfg.thp_max and self.thp:
                s.split_thp = self.thp.pop(0)  # keep huge pages within thp_max
            s.thp = True
        return s


def put_pages(frames: PageFrames, pfns: array.array[int] | list[int]) -> array.array[int]:
    """Unmap: drop the app's reference to each page; those that reach zero go to the buddy.

    A page compaction has isolated still has compaction's reference; compaction frees it when
    it finds itself the last holder ("page was freed from under us").
    """
    refcount = frames.refcount
    out: array.array[int] = array.array("I")
    for p in pfns:
        c = refcount[p] - 1
        refcount[p] = c
        if c == 0:
            out.append(p)  # free it with dropped=True
    return out


async def run_app(
    app: App,
    frames: PageFrames,
    allocator: AllocatorClient,
    vmstat: VmStat,
    costs: CostModel,
    log: FilteringBoundLogger,
    kernel: Kernel,
    compactor: Compactor | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The app's task (a kernel task of ``kernel``): one step per tick until cancelled."""
    task_status.started()
    tick = app.cfg.tick
    # Stagger apps so they do not all wake at the same virtual instant.
    await sleep(tick * app.rng.random())
    while True:
        step = app.step(kernel.now())
        if step.phase is not None:
            log.info(schema.WORKLOAD_PHASE, app=app.name, phase=step.phase, held=app.pages())
        # munmap drops the references when it unmaps, before anything else can run: a page
        # compaction isolated meanwhile keeps only compaction's reference.
        unmapped = [put_pages(frames, pfns) for _kind, pfns in step.free]
        for pfns in unmapped:
            await allocator.free(pfns, 0, dropped=True)
        if step.free_thp:
            await allocator.free(step.free_thp, HPAGE_ORDER)
        for kind, count in step.alloc:
            got = await allocator.alloc(count, 0, KIND_GFP[kind], KIND_OWNER[kind])
            app.map_pages(kind, got)
            if len(got) < count:
                app.pressure += 1
        if step.split_thp >= 0:
            await allocator.call(functools.partial(split_huge_page, head=step.split_thp))
            vmstat.inc("thp_split_page")
            base = list(range(step.split_thp, step.split_thp + (1 << HPAGE_ORDER)))
            app.rng.shuffle(base)
            half = len(base) // 2
            await allocator.free(put_pages(frames, base[:half]), 0, dropped=True)  # munmap
            app.map_pages(ANON, base[half:])
        if step.thp:
            await thp_fault(app, allocator, vmstat, costs, log, compactor)
        await kernel.msleep(tick)  # think time is a voluntary sleep (not a soft lockup)


def split_huge_page(zone: Zone, head: int) -> None:
    """split_huge_page: a compound THP becomes 512 independent anonymous base pages."""
    frames = zone.frames
    frames.flags[head] &= ~P.PG_head
    size = 1 << HPAGE_ORDER
    frames.mapping[head : head + size] = bytes((P.OWNER_ANON,)) * size
    zone.split_page(head, HPAGE_ORDER)


async def alloc_pages_direct_compact(allocator: AllocatorClient, compactor: Compactor,
                                     vmstat: VmStat, order: int, gfp: int, owner: int,
                                     who: str) -> array.array[int]:
    """__alloc_pages_direct_compact() of 3.6/3.8, for every failed high-order allocation
    (THP faults and the high-order passes alike): try_to_compact_pages() counts
    COMPACTSTALL, compact_zone() is skipped when compaction_suitable() says fragmentation is
    not the cause, else the allocation is retried once: COMPACTSUCCESS or COMPACTFAIL."""
    vmstat.inc("compact_stall")  # count_compact_event(COMPACTSTALL), before the zone loop
    if not compactor.fragmentation_says_compact(order):  # compaction_suitable(): skipped
        return array.array("I")
    if await compactor.compact_zone(order, who, "direct") == COMPACT_SKIPPED:
        return array.array("I")
    got = await allocator.alloc(1, order, gfp, owner)
    vmstat.inc("compact_success" if got else "compact_fail")
    return got


async def thp_fault(app: App, allocator: AllocatorClient, vmstat: VmStat, costs: CostModel,
                    log: FilteringBoundLogger, compactor: Compactor | None = None) -> bool:
    """do_huge_pmd_anonymous_page: try an order-9 page (after direct compaction if
    fragmentation is the cause), else fall back to 512 base pages."""
    got = await allocator.alloc(1, HPAGE_ORDER, G.GFP_TRANSHUGE, P.OWNER_THP)
    if not got and compactor is not None:
        got = await alloc_pages_direct_compact(allocator, compactor, vmstat, HPAGE_ORDER,
                                               G.GFP_TRANSHUGE, P.OWNER_THP, app.name)
    if got:
        vmstat.inc("thp_fault_alloc")
        app.thp.extend(got)
        log.debug(schema.THP_FAULT, app=app.name, ok=True)
        await sleep(costs.thp_zero)
        return True
    vmstat.inc("thp_fault_fallback")
    log.debug(schema.THP_FAULT, app=app.name, ok=False)
    base = await allocator.alloc(1 << HPAGE_ORDER, 0, G.GFP_HIGHUSER_MOVABLE, P.OWNER_ANON)
    app.map_pages(ANON, base)
    return False


@dataclass
class HighOrderStats:
    """Outcome of the high-order allocation passes (the series reviewers' measure)."""

    attempts: int = 0
    success: int = 0
    passes: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        rate = round(self.success / self.attempts, 4) if self.attempts else 0.0
        return {"attempts": self.attempts, "success": self.success, "success_rate": rate,
                "passes": self.passes}


async def run_highorder_passes(cfg: WorkloadConfig, allocator: AllocatorClient,
                               compactor: Compactor | None, stats: HighOrderStats,
                               log: FilteringBoundLogger) -> None:
    """At each ``highorder_at`` time try ``highorder_count`` allocations of
    ``highorder_order`` (direct-compacting on failure, as hugetlb allocation does), record
    how many succeeded, then free them."""
    now = 0.0
    order = cfg.highorder_order
    gfp = int(G.GFP_HIGHUSER_MOVABLE | G.GFP.COMP | G.GFP.NOWARN | G.GFP.NORETRY)
    for at in sorted(parse_duration(t) for t in cfg.highorder_at):
        await sleep(max(0.0, at - now))
        now = at
        got: list[int] = []
        zone = compactor.zone if compactor is not None else None
        before = {} if zone is None else {
            "free_order9_before": views.free_blocks_at_least(zone, 9),
            "frag9_before": views.fragmentation_index(zone, 9)}
        for _ in range(cfg.highorder_count):
            block = await allocator.alloc(1, order, gfp, P.OWNER_THP)
            if not block and compactor is not None:
                block = await alloc_pages_direct_compact(allocator, compactor,
                                                         compactor.vmstat, order, gfp,
                                                         P.OWNER_THP, "highorder")
            got.extend(block)
        stats.attempts += cfg.highorder_count
        stats.success += len(got)
        stats.passes.append({"t": round(at, 6), "order": order,
                             "attempts": cfg.highorder_count, "success": len(got), **before})
        log.info(schema.HIGHORDER_PASS, order=order, attempts=cfg.highorder_count,
                 success=len(got))
        await allocator.free(got, order)
