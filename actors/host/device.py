"""The host's virtio-balloon device for one guest (QEMU's hw/virtio/virtio-balloon.c).

It serves kicks and config writes from its transport, pops every available buffer, validates
it (direction, length a multiple of 4, at most 256 PFNs, each PFN inside guest RAM, no
duplicates, no double inflate, no deflate of a page it does not hold), acts on the valid
PFNs, and **always** returns the buffer. A misbehaving guest gets a logged violation, never a
crashed or double-counting host. The device keeps its own ballooned set (in ``GuestMemory``)
and holds the one stats buffer until it polls. It also feeds the spec's conformance monitor
with what it sees, and applies the policy's targets to ``num_pages``.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable

import anyio
import numpy as np
from anyio.abc import TaskStatus
from structlog.typing import FilteringBoundLogger

from actors.host.memory import GuestMemory
from actors.host.score import GuestScore
from actors.sim import schema, streams
from actors.sim.choices import Choices
from actors.sim.clock import sleep
from actors.sim.costs import CostModel
from actors.sim.transport import (
    ConfigChanged,
    ConfigWrite,
    DeviceReset,
    Interrupt,
    Notify,
    Transport,
)
from protocol import conformance as C
from protocol.balloon import (
    QUEUE_NAMES,
    VIRTIO_BALLOON_ARRAY_PFNS_MAX,
    BalloonQueue,
    StatTag,
    decode_pfns,
    decode_stats,
)
from protocol.conformance import span_and_unique
from protocol.errors import ProtocolError
from protocol.pfns import Pfns, as_index
from protocol.stats import implausible_stats
from protocol.virtqueue import Chain

INFLATEQ, STATSQ = BalloonQueue.INFLATEQ, BalloonQueue.STATSQ

Report = Callable[[str, str], None]


_U32_MAX = (1 << 32) - 1


def _tolist(pfns: Pfns) -> list[int]:
    return pfns.tolist() if isinstance(pfns, np.ndarray) else list(pfns)


class BalloonDevice:
    """One guest's balloon device: validates, discards, refaults, polls stats, sets targets."""

    def __init__(
        self,
        transport: Transport,
        memory: GuestMemory,
        costs: CostModel,
        log: FilteringBoundLogger,
        *,
        report: Report,
        stats_interval: float,
        pages_per_page: int,
        clock: Callable[[], float] = anyio.current_time,
        floor_pages: int = 0,
        choices: Choices | None = None,
    ) -> None:
        self.transport = transport
        self.choices = choices
        self.memory = memory
        self.costs = costs
        self.log = log
        self.report = report
        self.stats_interval = stats_interval
        self.clock = clock
        self.monitor = C.Conformance(transport.features, pages_per_page)
        transport.observe = self.feed  # the driver side's adds and page uses reach the monitor
        self.actual = 0
        self.target = 0
        self.stats: dict[str, int] = {}
        self.stats_time: float | None = None
        #: False while the latest stats reading was impossible (the policy is not shown it).
        self.stats_trusted = True
        self._stats_head: int | None = None
        #: False once the driver reset the device (status 0): no interrupts are raised then.
        self.driver_ok = True
        self.inflated = 0
        self.deflated = 0
        self.rejected = 0
        self.score = GuestScore(memory.pages, floor_pages)
        # The host's hooks: guest RSS changed (inflate, deflate, fault-in; called with the
        # session time); stats were read.
        self.on_memory: Callable[[float], None] = lambda t: None
        self.on_stats: Callable[[], None] = lambda: None

    # -- conformance ---------------------------------------------------------------------------
    def feed(self, event: C.Event) -> None:
        """Feed the conformance monitor; each violation is logged and reported."""
        for v in self.monitor.feed(event):
            self.violation(v)

    def violation(self, v: C.Violation) -> None:
        """Log and report one violation, the monitor's or the device's own."""
        self.log.error(schema.HOST_VIOLATION, rule=str(v.rule), role=v.role, detail=v.detail,
                       pfns=list(v.pfns[:16]))
        self.report(f"virtio:{v.rule}", f"{self.transport.name}: {v.detail}")

    def _refuse(self, rule: C.Rule, detail: str, pfns: Iterable[int] = ()) -> None:
        """The device's own check of a buffer or notify failed (the driver is at fault)."""
        self.violation(C.Violation.of(rule, detail, pfns))

    def touched(self, guest_pfns: array.array[int], pages_per_page: int) -> None:
        """The guest touched these pages: check them, fault in the unbacked ones."""
        self.feed(C.PageUsed(guest_pfns))
        if self.memory.unbacked:
            wire = guest_pfns if pages_per_page == 1 else [
                p * pages_per_page + i for p in guest_pfns for i in range(pages_per_page)]
            n = self.memory.touch(wire)
            if n:
                self.log.debug(schema.HOST_REFAULT, pages=n)
                self._memory_changed()

    def _memory_changed(self) -> None:
        t = self.clock()
        self.score.saved.set(t, self.memory.saved)
        self.score.ballooned.set(t, self.memory.ballooned)
        self.on_memory(t)

    # -- targets -------------------------------------------------------------------------------
    async def set_target(self, num_pages: int) -> None:
        """Write ``num_pages`` to config space and raise a config-change interrupt."""
        if num_pages == self.transport.config.num_pages:
            return
        previous = self.transport.config.num_pages
        self.transport.config = self.transport.config.with_num_pages(num_pages)
        self.target = num_pages
        self.score.target_set(self.clock(), previous, num_pages, self.actual)
        self.log.info(schema.CONFIG_TARGET, num_pages=num_pages, previous=previous)
        self.feed(C.ConfigTarget(num_pages))
        if self._fault("host.drop_config") is not None:
            self.log.info(schema.FAULT, site="host.drop_config",
                          detail=f"num_pages={num_pages} written, no config interrupt")
            return
        if self.driver_ok:  # virtio_notify_config: no config interrupt without DRIVER_OK
            await streams.send(self.transport.to_driver, ConfigChanged())

    def _fault(self, site: str) -> float | None:
        return None if self.choices is None else self.choices.fault(site, self.transport.name)

    # -- buffers -------------------------------------------------------------------------------
    def _pfns(self, chain: Chain, queue: int, hs: int) -> tuple[Pfns, range | None]:
        """Decode and validate one inflate/deflate buffer; invalid parts are reported.

        Returns the valid PFNs, and the same pages as one range when they are exactly that
        (a batch of one block: host memory then works on slices)."""
        name = QUEUE_NAMES[queue]
        if chain.in_lens:
            self._refuse(C.Rule.BAD_DIRECTION,
                         f"{name} hs={hs}: buffer has {len(chain.in_lens)} device-writable "
                         "segments; inflate/deflate buffers are driver→device only")
        try:
            pfns = decode_pfns(chain.out_data, max_pfns=VIRTIO_BALLOON_ARRAY_PFNS_MAX,
                               queue=name)
        except ProtocolError as e:
            self._refuse(C.Rule.BAD_BUFFER, f"{name} hs={hs}: {e.reason}")
            return [], None
        limit = self.memory.pages
        if len(pfns) < 8:  # a migration's one-page buffers: plain Python is cheaper
            if pfns and max(pfns) < limit and len(set(pfns)) == len(pfns):
                return pfns.tolist(), None
        else:
            g = as_index(pfns)
            low, top, unique = span_and_unique(g)
            if top < limit and unique:  # the common case, checked in a few array operations
                return g, range(low, top + 1) if top - low == len(g) - 1 else None
        out: list[int] = []
        bad: list[int] = []
        seen: set[int] = set()
        dup: list[int] = []
        for p in pfns:
            if p >= limit:
                bad.append(p)
            elif p in seen:
                dup.append(p)
            else:
                seen.add(p)
                out.append(p)
        if bad:
            self._refuse(C.Rule.PFN_OUT_OF_RANGE,
                         f"{name} hs={hs}: {len(bad)} PFNs beyond guest RAM "
                         f"({limit} pages of 4 KiB)", bad[:16])
        if dup:
            self._refuse(C.Rule.DUPLICATE_PFN,
                         f"{name} hs={hs}: {len(dup)} PFNs repeated in one buffer", dup[:16])
        return out, None

    def _balloon_buffer(self, queue: int, chain: Chain, hs: int) -> float:
        """Act on an inflate or deflate buffer; returns the virtual time the host work takes
        (discarding inflated pages; a deflate is a hint and costs nothing)."""
        inflate = queue == INFLATEQ
        pfns, span = self._pfns(chain, queue, hs)
        ballooned, unballooned = self.memory.split_ballooned(pfns, span)
        # inflate acts on the pages not yet ballooned, deflate on those that are
        g, bad = (unballooned, ballooned) if inflate else (ballooned, unballooned)
        if len(bad):
            rule, what = ((C.Rule.DOUBLE_INFLATE, "already ballooned (not counted twice)")
                          if inflate else
                          (C.Rule.DEFLATE_NOT_BALLOONED, "were never inflated (ignored)"))
            self._refuse(rule, f"{QUEUE_NAMES[queue]} hs={hs}: {len(bad)} PFNs {what}",
                         _tolist(bad[:16]))
            span = None
        (self.memory.inflate if inflate else self.memory.deflate)(g if span is None else span)
        self._memory_changed()
        self.feed(C.InflateAcked(g) if inflate else C.DeflateAcked(g))
        if inflate:
            self.inflated += len(g)
        else:
            self.deflated += len(g)
        rejected = len(chain.out_data) // 4 - len(g)
        self.rejected += rejected
        self.log.info(schema.HOST_INFLATE_DONE if inflate else schema.HOST_DEFLATE_DONE,
                      hs=hs, pfns=g, rejected=rejected)
        return self.costs.host_discard_page * len(g) if inflate else 0.0

    def _stats(self, chain: Chain, hs: int) -> bool:
        """Read a stats buffer; True if the device keeps it (the one it will poll with)."""
        if not self.transport.stats_vq:  # no poll loop would ever return it
            self._refuse(C.Rule.STATS_WITHOUT_FEATURE,
                         f"statsq hs={hs}: stats buffer but STATS_VQ was not negotiated "
                         "(returned)")
            return False
        if self._stats_head is not None:
            self._refuse(C.Rule.STATS_SECOND_BUFFER,
                         f"statsq hs={hs}: a second stats buffer while the device holds one"
                         " (returned)")
            return False
        try:
            entries = decode_stats(chain.out_data)
        except ProtocolError as e:
            self._refuse(C.Rule.BAD_BUFFER, f"statsq hs={hs}: {e.reason}")
            entries = []
        known = {StatTag(t).name.lower(): v for t, v in entries if t in StatTag._value2member_map_}
        self.feed(C.StatsBufferAdded(frozenset(t for t, _ in entries)))
        impossible = implausible_stats(known, self.memory.pages * 4096)
        if impossible:
            self._refuse(C.Rule.STATS_IMPOSSIBLE,
                         f"statsq hs={hs}: {'; '.join(impossible)} (not passed to the policy)")
        self.stats_trusted = not impossible
        self.stats = known
        self.stats_time = self.clock()
        self.log.info(schema.HOST_STATS, hs=hs, stats=known)
        self.on_stats()
        self._stats_head = chain.head
        return True

    async def _serve(self, queue: int) -> None:
        """Pop every available buffer on ``queue``, act on it, return it, then interrupt."""
        dev = self.transport.vqs[queue].device
        handshakes = self.transport.handshakes
        done: list[int] = []
        cost = 0.0
        while True:
            chain = dev.pop()
            if chain is None:
                break
            hs = handshakes.get((queue, chain.head), 0)
            self.log.info(schema.HOST_POP, queue=QUEUE_NAMES[queue], hs=hs,
                          len=len(chain.out_data))
            if queue != STATSQ:  # inflateq or deflateq (run() refuses other queues)
                cost += self._balloon_buffer(queue, chain, hs)
            elif self._stats(chain, hs):
                continue  # held until the next poll
            done.append(chain.head)
        if not done:
            return
        # One charge for the device's work and the trip back (fewer clock jumps, same time):
        # the buffers are returned, and the guest interrupted, once the work is done.
        cost += self._injected_delay()
        await sleep(cost + self.costs.vq_roundtrip)
        for head in done:
            dev.push_used(head, 0)
        if dev.take_interrupt():
            await streams.send(self.transport.to_driver, Interrupt(queue))

    def _injected_delay(self) -> float:
        """Extra device time from the host.slow / host.stall fault sites (0 when off)."""
        if self.choices is None or not self.choices.active:
            return 0.0
        extra = 0.0
        for site, lo, hi in (("host.slow", 0.0, 0.05), ("host.stall", 0.5, 3.0)):
            u = self._fault(site)
            if u is not None:
                delay = lo + (hi - lo) * u
                self.log.info(schema.FAULT, site=site, detail=f"device delayed {delay:.6f}s")
                extra += delay
        return extra

    async def _poll_stats(self) -> None:
        """Every ``stats_interval``: hand the held stats buffer back so the guest refills it."""
        dev = self.transport.vqs[STATSQ].device
        while True:
            await sleep(self.stats_interval)
            head = self._stats_head
            if head is None:
                continue
            self._stats_head = None
            dev.push_used(head, 0)
            self.feed(C.StatsBufferUsed())
            if dev.take_interrupt():
                await streams.send(self.transport.to_driver, Interrupt(STATSQ))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the transport until the guest side closes it."""
        async with anyio.create_task_group() as tg:
            if self.transport.stats_vq:
                tg.start_soon(self._poll_stats)
            task_status.started()
            inbox = self.transport.device_inbox
            async with inbox:
                while True:
                    try:
                        msg = await streams.receive(inbox)
                    except anyio.EndOfStream:
                        break
                    if isinstance(msg, Notify):
                        if msg.queue in self.transport.vqs:
                            await self._serve(msg.queue)
                        else:
                            self._refuse(C.Rule.BAD_QUEUE,
                                         f"notify of queue {msg.queue}, which this device "
                                         "does not have (ignored)")
                    elif isinstance(msg, ConfigWrite):
                        # The monitor saw the write when the driver made it (config space is
                        # shared); feeding it again here, later, would misorder it.
                        self.actual = self._actual_written(msg.actual)
                        self.score.actual_changed(self.clock(), self.actual)
                    elif isinstance(msg, DeviceReset):
                        self.reset()
            tg.cancel_scope.cancel()

    def _actual_written(self, actual: int) -> int:
        """The driver's ``actual`` (a le32 of 4 KiB pages): one outside u32 or above the
        guest's RAM is a violation, and the device goes on with it clamped to [0, RAM]."""
        ram = self.memory.pages
        if 0 <= actual <= min(ram, _U32_MAX):
            return actual
        self._refuse(C.Rule.ACTUAL_OUT_OF_RANGE,
                     f"actual={actual} is outside 0..{min(ram, _U32_MAX)} (u32, at most the "
                     f"guest's {ram} pages of 4 KiB); taken as {min(max(actual, 0), ram)}")
        return min(max(actual, 0), ram)

    def reset(self) -> None:
        """The driver reset the device: forget the held stats buffer, raise no interrupts."""
        self.log.info(schema.HOST_RESET, dropped_stats=self._stats_head is not None)
        self._stats_head = None
        self.driver_ok = False
        self.feed(C.Reset())

    def holds_stats_buffer(self) -> bool:
        """Whether the device holds the guest's stats buffer (always true without STATS_VQ,
        and once the driver reset the device: it has no stats queue any more)."""
        return not self.transport.stats_vq or not self.driver_ok or self._stats_head is not None

    def summary(self) -> dict[str, int]:
        m = self.memory
        return {"target": self.target, "actual": self.actual, "ballooned": m.ballooned,
                "rss_pages": m.rss, "discarded": m.discarded, "untouched": m.untouched,
                "saved_pages": m.saved, "refaults": m.refaults,
                "first_touches": m.first_touches, "inflated": self.inflated,
                "deflated": self.deflated, "rejected_pfns": self.rejected}
