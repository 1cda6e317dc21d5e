"""One virtqueue handshake against a bare trio request/reply."""

from __future__ import annotations

import array
import gc
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio
import trio

from actors.sim import streams
from actors.sim.transport import QUEUE_SIZE, Interrupt, Notify, Transport
from protocol.balloon import BalloonQueue, decode_pfns, encode_pfns
from protocol.virtqueue import Virtqueue
from run.lab.bench.common import Result
from run.session import determinism

LAP = 250  # round trips per lap: a lap hit by machine noise is an outlier, not the median


def _trio_run(main: Callable[[], Any]) -> None:
    """Both sides of the comparison run exactly as a session does: virtual clock, seeded shuffle."""
    determinism.seed_scheduler(0)
    trio.run(main, clock=determinism.virtual_clock())


def _raw(n: int, *, use_trio: bool) -> list[float]:
    """``n`` request → reply round trips over two memory channels (trio's own, or anyio's
    streams: the transport's message layer); lap timestamps."""
    laps: list[float] = []

    async def main() -> None:
        if use_trio:
            req_send, req_recv = trio.open_memory_channel[int](QUEUE_SIZE)
            rep_send, rep_recv = trio.open_memory_channel[int](QUEUE_SIZE)
        else:
            req_send, req_recv = anyio.create_memory_object_stream[int](QUEUE_SIZE)  # type: ignore[assignment]
            rep_send, rep_recv = anyio.create_memory_object_stream[int](QUEUE_SIZE)  # type: ignore[assignment]

        async def server() -> None:
            async with req_recv, rep_send:
                async for msg in req_recv:
                    await rep_send.send(msg)

        async with anyio.create_task_group() as tg:
            tg.start_soon(server)
            laps.append(time.perf_counter())
            async with req_send:
                for i in range(1, n + 1):
                    await req_send.send(i)
                    await rep_recv.receive()
                    if not i % LAP:
                        laps.append(time.perf_counter())

    _trio_run(main)
    return laps


def raw_trio(n: int) -> list[float]:
    return _raw(n, use_trio=True)


def _raw_anyio(n: int) -> list[float]:
    return _raw(n, use_trio=False)


def _virtqueue(n: int) -> list[float]:
    """``n`` inflateq handshakes as tell_host and BalloonDevice do them, minus logging/costs."""
    laps: list[float] = []
    q = int(BalloonQueue.INFLATEQ)
    name = BalloonQueue(q).queue_name
    pfns = array.array("I", range(4096, 4096 + 256))
    token = object()

    async def main() -> None:
        transport = Transport("bench", features=0)

        async def device() -> None:
            dev = transport.vqs[q].device
            handshakes = transport.handshakes
            async with transport.device_inbox, transport.to_driver:
                while True:
                    try:
                        msg = await streams.receive(transport.device_inbox)
                    except anyio.EndOfStream:
                        break
                    assert isinstance(msg, Notify)
                    while (chain := dev.pop()) is not None:
                        handshakes.get((msg.queue, chain.head), 0)
                        decode_pfns(chain.out_data, queue=name)  # the action: none
                        dev.push_used(chain.head, 0)
                    if dev.take_interrupt():
                        await streams.send(transport.to_driver, Interrupt(msg.queue))

        async with anyio.create_task_group() as tg:
            tg.start_soon(device)
            driver = transport.vqs[q].driver
            laps.append(time.perf_counter())
            async with transport.to_device, transport.driver_inbox:
                for i in range(1, n + 1):
                    data = encode_pfns(pfns[:256], queue=name)
                    transport.add_outbuf(q, data, token)
                    if driver.kick():
                        await streams.send(transport.to_device, Notify(q))
                    while True:
                        irq = await streams.receive(transport.driver_inbox)
                        if isinstance(irq, Interrupt) and driver.get_buf() is not None:
                            break
                    if not i % LAP:
                        laps.append(time.perf_counter())

    _trio_run(main)
    return laps


def _virtqueue_sync(n: int) -> list[float]:
    """The same ring and codec work with no task switch: the virtqueue path's own cost."""
    vq: Virtqueue[object] = Virtqueue("bench.inflateq", 0, QUEUE_SIZE)
    driver, dev = vq.driver, vq.device
    pfns = array.array("I", range(4096, 4096 + 256))
    token = object()
    laps = [time.perf_counter()]
    for i in range(1, n + 1):
        driver.add_buf((encode_pfns(pfns[:256], queue="inflateq"),), (), token)
        driver.kick()
        chain = dev.pop()
        assert chain is not None
        decode_pfns(chain.out_data, queue="inflateq")
        dev.push_used(chain.head, 0)
        dev.take_interrupt()
        driver.get_buf()
        if not i % LAP:
            laps.append(time.perf_counter())
    return laps


def bench_handshake(quick: bool) -> Result:
    """One inflateq handshake (256 PFNs) vs a bare trio request/reply, µs per round trip."""
    n = 2000 if quick else 20000
    repeats = 3
    paths: dict[str, Callable[[int], list[float]]] = {
        "raw_trio": raw_trio, "anyio_streams": _raw_anyio, "virtqueue": _virtqueue,
        "ring_and_codec": _virtqueue_sync}
    laps: dict[str, list[float]] = {name: [] for name in paths}
    total: dict[str, float] = dict.fromkeys(paths, 0.0)
    gc.collect()
    for _ in range(repeats):  # interleaved, so a burst of machine noise hits every path alike
        for name, run in paths.items():
            stamps = run(n)
            laps[name] += [b - a for a, b in itertools.pairwise(stamps)]
            total[name] += stamps[-1] - stamps[0]
    us = {name: round(statistics.median(v) * 1e6 / LAP, 2) for name, v in laps.items()}
    mean = {name: total[name] * 1e6 / (n * repeats) for name in paths}
    ratio = us["virtqueue"] / us["raw_trio"]
    return {
        "round_trips": n,
        "timing": (f"{repeats} interleaved runs per path, median of laps of {LAP}; "
                   "trio, virtual clock, seeded scheduler (as in a session)"),
        "raw_trio_us": us["raw_trio"],
        "virtqueue_us": us["virtqueue"],
        "ratio": round(ratio, 2),
        "target": "<= 3x",
        "meets_target": "yes" if ratio <= 3 else "NO",
        "ratio_of_means": round(mean["virtqueue"] / mean["raw_trio"], 2),
        "same_trips_on_anyio_streams_us": us["anyio_streams"],
        "ring_and_codec_alone_us": us["ring_and_codec"],
    }
