"""``vballoon bench``: named benchmarks that print figures (never pass/fail).

Targets live in the issues; each benchmark prints its figure next to its target so a reader
sees at once whether the simulator is where it should be.
"""

from __future__ import annotations

import array
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
import trio
from rich.console import Console
from rich.table import Table

from actors.costs import CostModel
from actors.guest import gfp as G
from actors.guest import pages as P
from actors.guest.allocator import Allocator
from actors.guest.buddy import Zone
from actors.guest.pages import PageFrames
from actors.guest.views import VmStat
from actors.transport import QUEUE_SIZE, Interrupt, Notify, ToDevice, ToDriver, Transport
from protocol.balloon import BalloonQueue, decode_pfns, encode_pfns
from protocol.virtqueue import Virtqueue
from run import determinism
from run import scenario as scen

Result = dict[str, Any]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
    before = _rss_bytes()
    frames = PageFrames(nr_pages)
    zone = Zone(frames)
    after = _rss_bytes()
    per_page = (after - before) / nr_pages
    model_per_page = frames.bytes_per_page()
    del zone, frames
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


BENCHMARKS: dict[str, Callable[[bool], Result]] = {
    "alloc": bench_alloc,
    "memory": bench_memory,
}


def run_benchmarks(names: list[str], *, quick: bool, console: Console) -> dict[str, Result]:
    """Run each named benchmark, print a table of its figures, and return them all."""
    results: dict[str, Result] = {}
    for name in names:
        with console.status(f"bench {name}..."):
            res = BENCHMARKS[name](quick)
        results[name] = res
        table = Table(title=f"bench {name}: {BENCHMARKS[name].__doc__}", title_justify="left",
                      show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for k, v in res.items():
            table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
        console.print(table)
    return results
