"""Every window the C has: each read of shared state outside the lock that protects it is a
preemption point named by its C function (the module docs of the drivers and of mm list them).
A session with every point firing visits each variant's sites; a window that only the new
points open is reachable, and with them both outcomes are."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import anyio
import pytest

from actors.guest.balloon.common import MemInfo, VirtioBalloon
from actors.guest.mm.pages import PageFrames
from actors.guest.mm.vmstat import VmStat
from actors.kernel import hardirq
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.transport import Transport
from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import run_session
from tests.actors.kernel.conftest import Rig, outcomes

from ..mm.compaction_helpers import SMALL_STORM

#: The sites every variant shares (balloon/common.py) and each variant's own, with the mm
#: core it runs with (the legacy driver runs the v9 compactor too, with no balloon pages).
COMMON = {"towards_target", "balloon", "tell_host", "stats_handle_request",
          "update_balloon_stats", "compact_finished", "compaction_suitable",
          "isolate_migratepages_range"}
V9_MM = {"balloon_page_movable", "isolate_balloon_page", "__wait_on_isolated_pages"}
SITES = {
    "legacy": COMMON,
    "v9": COMMON | V9_MM,
    "fixed": COMMON | V9_MM,
    "v3.8": COMMON | {"balloon_page_movable", "balloon_page_isolate", "balloon_page_dequeue",
                      "putback_movable_pages", "release_pages_by_pfn"},
}

#: 6 s of the small storm: inflate at 1 s, a high-order pass (direct compaction: the order-9
#: sites) at 3 s, compact_memory and the deflate together at 4 s (leak_balloon meets
#: isolated pages).
TINY = [*SMALL_STORM, "duration=6s", 'compaction.at=["4s"]', 'workload.highorder_at=["3s"]',
        'host.policy.params.steps=[["1s", "25%"], ["4s", "0%"]]', "guest.preempt=1.0"]


@pytest.mark.parametrize("driver", list(SITES))
def test_each_variant_visits_its_preemption_sites(driver: str) -> None:
    """With every preemption point firing (strength 1.0, choices recorded), the tiny storm
    visits every site of the variant's list in its first three seeds (whether leak_balloon
    meets isolated pages, v9's __wait_on_isolated_pages, depends on the schedule)."""
    # (v3.8 loses isolated pages to the LRU, then deflates empty buffers for ever: it stops
    # at the first snapshot that sees them lost, taken often)
    extra = ["snapshot_interval=0.1s"] if driver == "v3.8" else []
    sc = scen.load("compact-storm", [*TINY, f"guest.driver={driver}", *extra])
    visited: Counter[str] = Counter()
    for seed in (1, 2, 3):
        out = run_session(sc, seed=seed, recorder=FlightRecorder(capacity=16), record=True,
                          fail_fast=driver == "v3.8")
        assert out.session is not None
        visited.update(c.site.split(":", 1)[1] for c in out.session.choices.recorded)
    assert SITES[driver] <= set(visited), sorted(SITES[driver] - set(visited))


class _Chaser(VirtioBalloon):
    """The base driver's kthread with fill and leak recorded (and done in one step)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: list[tuple[str, int]] = []

    async def fill_balloon(self, num: int) -> None:
        self.calls.append(("fill", num))
        self.num_pages.atomic_add(num)

    async def leak_balloon(self, num: int) -> None:
        self.calls.append(("leak", num))
        self.num_pages.atomic_sub(num)


async def _target_flickers(rig: Rig) -> tuple[tuple[str, int], ...]:
    """The host raises the target to 10 pages and interrupts, then puts it back to 0 half a
    microsecond after the woken kthread is back on a CPU: what the kthread did about it."""
    k = rig.kernel
    frames = PageFrames(512)
    b = _Chaser(kernel=k, frames=frames, allocator=cast(Any, None),
                transport=Transport("guest0", features=0), meminfo=MemInfo(512),
                vmstat=VmStat(), costs=CostModel(), log=cast(Any, k.log), freeram=lambda: 0)

    async def host() -> None:
        await sleep(1e-3)
        b.vdev.config = b.vdev.config.with_num_pages(10)
        with hardirq(k):
            b.virtballoon_changed()
        await sleep(k.costs.wakeup + 5e-7)  # the kthread is on a CPU after its wake-up...
        b.vdev.config = b.vdev.config.with_num_pages(0)  # no interrupt: re-read when it runs
        await sleep(1e-3)
        await b.kthread_stop()

    async with anyio.create_task_group() as tg:
        await tg.start(b.balloon)
        k.spawn(tg, "host", host)
    return tuple(b.calls)


def test_the_kthread_rereads_the_target_after_its_wake_up() -> None:
    """towards_target() reads the config target without a lock, in the kthread's wait
    condition, re-evaluated after each wake-up: with the preemption point before that read,
    a target that flickers up and back within a microsecond of the kthread's wake-up is seen
    (fill, then leak) or missed (nothing to do), by seed. Without it the woken kthread
    re-reads as soon as it runs, always inside the flicker, and always chases it."""
    seen = outcomes(_target_flickers, range(32), strength=0.8)
    assert (("fill", 10), ("leak", 10)) in seen and () in seen, seen
    assert set(seen) == {(("fill", 10), ("leak", 10)), ()}, seen
