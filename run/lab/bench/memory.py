"""Guest memory: the allocator actor's throughput and the bytes a guest page costs."""

from __future__ import annotations

import gc
import time

import structlog
import trio

from actors.guest.mm import gfp as G
from actors.guest.mm import pages as P
from actors.guest.mm.allocator import Allocator
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.rmap import Rmap
from actors.guest.mm.vmstat import VmStat
from actors.sim.costs import CostModel
from run.lab.bench.common import Result, rss_bytes
from run.session import determinism


def bench_alloc(quick: bool) -> Result:
    """Order-0 pages/s allocated then freed through the allocator actor, batches of 256."""
    gib = 1 if quick else 4
    nr_pages = gib * (1 << 18)
    rounds = 200 if quick else 2000
    frames = PageFrames(nr_pages)
    zone = Zone(frames)
    log = structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(40))
    allocator = Allocator(zone, VmStat(), CostModel(), log)
    client = allocator.client("bench")
    pages = 0

    async def main() -> None:
        nonlocal pages
        async with trio.open_nursery() as nursery:
            await nursery.start(allocator.run)
            held = []
            for i in range(rounds):
                held.append(await client.alloc(256, 0, G.GFP_HIGHUSER_MOVABLE, P.OWNER_ANON))
                if len(held) > 64 or i == rounds - 1:
                    for batch in held:
                        pages += len(batch)
                        await client.free(batch, 0)
                    held.clear()
            await client.aclose()
            await allocator.aclose()

    determinism.seed_scheduler(0)
    t0 = time.perf_counter()
    trio.run(main, clock=determinism.virtual_clock())
    wall = time.perf_counter() - t0
    return {"pages": pages, "wall_seconds": round(wall, 4),
            "pages_per_second": round(pages / wall), "target": ">= 500000 pages/s"}


def bench_memory(quick: bool) -> Result:
    """Bytes of RSS per simulated guest page (16 GiB guest) and the 64 GiB build time."""
    gc.collect()
    size_gib = 4 if quick else 16
    nr_pages = size_gib * (1 << 18)
    before = rss_bytes()
    frames = PageFrames(nr_pages)
    zone = Zone(frames)
    rmap = Rmap(nr_pages)  # the reverse map compaction needs: part of every guest
    after = rss_bytes()
    per_page = (after - before) / nr_pages
    model_per_page = frames.bytes_per_page() + 5  # rmap: owner (1) + slot (4)
    del zone, frames, rmap
    gc.collect()
    build_gib = 16 if quick else 64
    t0 = time.perf_counter()
    big = PageFrames(build_gib * (1 << 18))
    Zone(big)
    build = time.perf_counter() - t0
    del big
    return {"guest_gib": size_gib, "rss_bytes_per_page": round(per_page, 2),
            "model_bytes_per_page": model_per_page, "target": "<= 24 bytes/page",
            f"build_{build_gib}gib_seconds": round(build, 3), "build_target": "< 10 s (64 GiB)"}
