"""The allocator actor: the buddy zone behind its zone lock, serving batched requests.

Clients (workload apps, the balloon kthread, compaction workers) never touch the zone's free
lists directly: they send a request on the allocator's bounded inbox and wait for the
completion on their own reply stream, like a queue with the zone lock behind it. Requests are
served one at a time in arrival order, each charged virtual time from the cost model, so
contention on the zone shows up as queueing delay. The pure allocator is ``mmzone.Zone``.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from structlog.typing import FilteringBoundLogger

from actors.guest.mm.gfp import WMARK_LOW
from actors.guest.mm.mmzone import Zone
from actors.guest.mm.vmstat import VmStat
from actors.sim import schema, streams
from actors.sim.choices import Choices
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.integral import Integral

T = TypeVar("T")


@dataclass(slots=True)
class _Alloc:
    client: str
    n: int
    order: int
    gfp: int
    owner: int
    reply: MemoryObjectSendStream[Any]


@dataclass(slots=True)
class _Free:
    client: str
    pfns: Sequence[int]
    order: int
    dropped: bool
    reply: MemoryObjectSendStream[Any]


@dataclass(slots=True)
class _Call:
    client: str
    fn: Callable[[Zone], Any]
    cost: float
    reply: MemoryObjectSendStream[Any]


_Request = _Alloc | _Free | _Call


class AllocatorClient:
    """One client's connection: its clone of the inbox and its own completion stream."""

    def __init__(self, name: str, inbox: MemoryObjectSendStream[_Request]) -> None:
        self.name = name
        self._inbox = inbox
        self._reply_send, self._reply_recv = anyio.create_memory_object_stream[Any](1)

    async def alloc(self, n: int, order: int, gfp: int, owner: int) -> array.array[int]:
        """Allocate up to ``n`` blocks of ``order``; fewer back means the allocator failed."""
        await streams.send(self._inbox, _Alloc(self.name, n, order, gfp, owner, self._reply_send))
        result: array.array[int] = await streams.receive(self._reply_recv)
        return result

    async def free(self, pfns: Sequence[int], order: int = 0, *, dropped: bool = False) -> None:
        """Return blocks of ``order`` to the buddy lists.

        The caller holds their last reference, or (``dropped``) already dropped it to zero
        with ``put_page`` -- so no scanner can take a new one while the request queues.
        """
        if not pfns:
            return
        await streams.send(self._inbox, _Free(self.name, pfns, order, dropped, self._reply_send))
        await streams.receive(self._reply_recv)

    async def call(self, fn: Callable[[Zone], T], cost: float = 0.0) -> T:
        """Run ``fn(zone)`` under the zone lock (compaction's free scanner uses this)."""
        await streams.send(self._inbox, _Call(self.name, fn, cost, self._reply_send))
        result: T = await streams.receive(self._reply_recv)
        return result

    async def aclose(self) -> None:
        """Disconnect; the allocator exits once every client has."""
        await self._inbox.aclose()
        await self._reply_send.aclose()
        await self._reply_recv.aclose()


class Allocator:
    """Serves allocation requests against one zone until every client has disconnected."""

    def __init__(
        self,
        zone: Zone,
        vmstat: VmStat,
        costs: CostModel,
        log: FilteringBoundLogger,
        *,
        queue_depth: int = 64,
        clock: Callable[[], float] | None = None,
        choices: Choices | None = None,
        name: str = "",
    ) -> None:
        self.zone = zone
        self.vmstat = vmstat
        self.costs = costs
        self.log = log
        self._send, self._recv = anyio.create_memory_object_stream[_Request](queue_depth)
        self.choices = choices
        self.name = name
        #: Called with (pfns, order, owner) for every block handed out: the guest is about to
        #: use those pages (the host refaults discarded ones; the conformance monitor checks).
        self.on_alloc: Callable[[array.array[int], int, int], None] | None = None
        #: Free pages over time, and the time spent below the low watermark (where kswapd
        #: would be reclaiming): the guest's memory pressure, for the session's scores.
        self.clock = clock
        self.free = Integral(0.0, zone.free_pages, threshold=zone.watermark[WMARK_LOW])

    def client(self, name: str) -> AllocatorClient:
        """Connect a new client, before or while the allocator runs (one per task)."""
        return AllocatorClient(name, self._send.clone())

    async def aclose(self) -> None:
        """Stop accepting new clients; the allocator exits once every client has gone."""
        await self._send.aclose()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The actor loop: one request at a time, in arrival order, until the inbox ends."""
        task_status.started()
        zone, costs, vmstat, log = self.zone, self.costs, self.vmstat, self.log
        async with self._recv:
            while True:
                try:
                    req = await streams.receive(self._recv)
                except anyio.EndOfStream:
                    break
                if isinstance(req, _Alloc):
                    out: array.array[int] = array.array("I")
                    if self.choices is not None and self.choices.fault("alloc.fail",
                                                                       self.name) is not None:
                        log.info(schema.FAULT, site="alloc.fail", client=req.client,
                                 detail=f"order-{req.order} x{req.n} request failed")
                        got = 0
                    else:
                        got = zone.alloc_pages_bulk(req.n, req.order, req.gfp, req.owner, out)
                    pages = got << req.order
                    vmstat.inc("pgalloc", pages)
                    if got < req.n:
                        vmstat.inc("alloc_fail")
                    if got and self.on_alloc is not None:
                        self.on_alloc(out, req.order, req.owner)
                    log.debug(schema.ALLOC_BATCH, client=req.client, order=req.order,
                              gfp=req.gfp, want=req.n, got=got)
                    await sleep(costs.alloc_request + pages * costs.alloc_page)
                    await streams.send(req.reply, out)
                elif isinstance(req, _Free):
                    if req.dropped:  # __free_pages after put_page_testzero: the last ref
                        refcount = zone.frames.refcount
                        for p in req.pfns:
                            refcount[p] = 1
                    zone.free_pages_bulk(req.pfns, req.order)
                    pages = len(req.pfns) << req.order
                    vmstat.inc("pgfree", pages)
                    log.debug(schema.FREE_BATCH, client=req.client, order=req.order,
                              count=len(req.pfns))
                    await sleep(costs.alloc_request + pages * costs.free_page)
                    await streams.send(req.reply, None)
                else:
                    result = req.fn(zone)
                    await sleep(costs.alloc_request + req.cost)
                    await streams.send(req.reply, result)
                if self.clock is not None:
                    self.free.set(self.clock(), zone.free_pages)
