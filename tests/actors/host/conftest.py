"""Shared helpers for the host tests: a balloon device on a transport, driven by a test driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.host.device import BalloonDevice
from actors.host.memory import GuestMemory
from actors.sim import schema
from actors.sim.clock import SessionClock
from actors.sim.costs import CostModel
from actors.sim.transport import Interrupt, Notify, ToDriver, Transport
from protocol import conformance as C
from protocol.balloon import BalloonFeature, BalloonQueue, decode_pfns, feature_mask
from protocol.errors import ProtocolError
from run.session.logs import FlightRecorder, Record, SessionLog

INFLATEQ, DEFLATEQ, STATSQ = BalloonQueue.INFLATEQ, BalloonQueue.DEFLATEQ, BalloonQueue.STATSQ
MTH = feature_mask(BalloonFeature.MUST_TELL_HOST)
MTH_STATS = feature_mask(BalloonFeature.MUST_TELL_HOST, BalloonFeature.STATS_VQ)




@dataclass
class Buf:
    """A driver token (compared by identity on the ring) naming what the test sent."""

    label: str


@dataclass
class HostRig:
    """One guest's transport and balloon device, with what the device logged and reported."""

    transport: Transport
    memory: GuestMemory
    device: BalloonDevice
    recorder: FlightRecorder
    reports: list[tuple[str, str]] = field(default_factory=list)

    def records(self, event: str) -> list[Record]:
        """The logged records of one event, in order."""
        return [r for r in self.recorder.records if r["event"] == event]

    def kinds(self) -> list[str]:
        """The kinds of every report, in order."""
        return [kind for kind, _ in self.reports]

    def violations(self) -> list[str]:
        """The ``rule`` of every ``host.violation`` record, in order."""
        return [str(r["rule"]) for r in self.records(schema.HOST_VIOLATION)]

    def violation(self, rule: str) -> Record:
        """The one ``host.violation`` record of ``rule``."""
        (rec,) = [r for r in self.records(schema.HOST_VIOLATION) if r["rule"] == rule]
        return rec

    # -- the test's driver side --------------------------------------------------------------
    async def send(self, queue: int, data: bytes, *, in_lens: Sequence[int] = (),
                   label: str = "buf", observe: bool = True) -> Buf:
        """Add one buffer as a driver would (tell the monitor its PFNs), kick, notify."""
        token = Buf(label)
        t = self.transport
        if in_lens:
            t.vqs[queue].driver.add_buf((data,), in_lens, token)
        else:
            t.add_outbuf(queue, data, token)
        if observe and queue in (INFLATEQ, DEFLATEQ):
            try:
                pfns = decode_pfns(data, max_pfns=1 << 20).tolist()
            except ProtocolError:
                pfns = None  # nothing a real driver could have described
            if pfns is not None:
                t.observe(C.InflateAdded(pfns) if queue == INFLATEQ else C.DeflateAdded(pfns))
        assert t.vqs[queue].driver.kick()
        await t.to_device.send(Notify(queue))
        return token

    async def next_msg(self) -> ToDriver:
        """The next device→driver message."""
        return await self.transport.driver_inbox.receive()

    async def reap(self, queue: int) -> Buf:
        """Wait for the used-buffer interrupt of ``queue`` and reap the one used buffer."""
        assert await self.next_msg() == Interrupt(queue)
        got = self.transport.vqs[queue].driver.get_buf()
        assert got is not None, f"interrupt on queue {queue} with nothing used"
        token, written = got
        assert written == 0
        assert isinstance(token, Buf)
        return token

    async def roundtrip(self, queue: int, data: bytes, **kw: Any) -> None:
        """Send one buffer and check that exactly that buffer comes back."""
        token = await self.send(queue, data, **kw)
        assert await self.reap(queue) is token
        assert self.transport.vqs[queue].driver.in_flight == 0


@asynccontextmanager
async def running(*, features: int = MTH, pages: int = 1024, stats_interval: float = 2.0,
                  pages_per_page: int = 1) -> AsyncIterator[HostRig]:
    """A device serving its transport in a nursery; on exit the driver side closes the stream
    and the device must end by itself."""
    recorder = FlightRecorder()
    log = SessionLog(clock=SessionClock(), level="debug", sinks=[recorder],
                     validate=schema.check_record)
    transport = Transport("guest0", features=features)
    memory = GuestMemory("guest0", pages)
    reports: list[tuple[str, str]] = []
    device = BalloonDevice(transport, memory, CostModel(), log.logger("host.guest0"),
                           report=lambda kind, detail: reports.append((kind, detail)),
                           stats_interval=stats_interval, pages_per_page=pages_per_page)
    rig = HostRig(transport, memory, device, recorder, reports)
    async with trio.open_nursery() as nursery:
        await nursery.start(device.run)
        try:
            yield rig
        except BaseException:
            nursery.cancel_scope.cancel()
            raise
        await transport.to_device.aclose()
