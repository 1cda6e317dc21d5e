"""The host's balloon device against a well-behaved and a hostile driver on the raw rings."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence

import anyio
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.host.memory import BALLOONED, DISCARDED, RESIDENT
from actors.sim import schema
from actors.sim.costs import CostModel
from actors.sim.transport import ConfigChanged, ConfigWrite, Notify
from protocol.balloon import StatTag, encode_pfns, encode_stats
from tests.actors.host.conftest import (
    DEFLATEQ,
    INFLATEQ,
    MTH_STATS,
    STATSQ,
    Buf,
    HostRig,
    running,
)

PAGES = 1024  # the rig's guest RAM in 4 KiB pages


def raw(pfns: Sequence[int]) -> bytes:
    """Little-endian u32 PFNs with none of encode_pfns's checks (for hostile buffers)."""
    return struct.pack(f"<{len(pfns)}I", *pfns)


def assert_reported(rig: HostRig, rules: list[str]) -> None:
    """Exactly these rules were reported, in order, and each was logged as host.violation."""
    assert rig.kinds() == [f"virtio:{r}" for r in rules]
    assert rig.violations() == rules
    for rec in rig.records(schema.HOST_VIOLATION):
        assert rec["level"] == "error"
        assert rec["role"] == "driver"


def assert_accounting(rig: HostRig, *, ballooned: set[int], discarded: set[int]) -> None:
    """The host's per-page state and its counters are exactly the given sets."""
    m = rig.memory
    assert {p for p in range(m.pages) if m.state[p] == BALLOONED} == ballooned
    assert {p for p in range(m.pages) if m.state[p] == DISCARDED} == discarded
    assert (m.ballooned, m.discarded) == (len(ballooned), len(discarded))
    assert m.rss == m.pages - len(ballooned) - len(discarded)


def done(rig: HostRig, event: str) -> list[tuple[list[int], int]]:
    """(pfns, rejected) of every host.inflate.done / host.deflate.done record."""
    return [(list(r["pfns"]), r["rejected"]) for r in rig.records(event)]


# -- the well-behaved driver ------------------------------------------------------------------


async def test_inflate_then_deflate_moves_ballooned_rss_and_discarded(
        autojump_clock: trio.abc.Clock) -> None:
    """Inflating 10 PFNs discards them; deflating 5 leaves those discarded, not resident."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns(range(10)))
            assert_accounting(rig, ballooned=set(range(10)), discarded=set())
            assert rig.memory.rss == PAGES - 10
            await rig.roundtrip(DEFLATEQ, encode_pfns([0, 1, 2, 3, 4]))
            assert_accounting(rig, ballooned=set(range(5, 10)), discarded=set(range(5)))
            assert rig.memory.rss == PAGES - 10
    assert rig.reports == []
    assert done(rig, schema.HOST_INFLATE_DONE) == [(list(range(10)), 0)]
    assert done(rig, schema.HOST_DEFLATE_DONE) == [([0, 1, 2, 3, 4], 0)]
    s = rig.device.summary()
    assert (s["ballooned"], s["discarded"], s["rss_pages"]) == (5, 5, PAGES - 10)
    assert (s["inflated"], s["deflated"], s["rejected_pfns"]) == (10, 5, 0)


async def test_inflate_ack_arrives_after_roundtrip_and_discard_cost(
        autojump_clock: trio.abc.Clock) -> None:
    """The used-buffer interrupt comes one vq round trip plus the per-page discard cost later."""
    costs = CostModel()
    with trio.fail_after(10):
        async with running() as rig:
            t0 = trio.current_time()
            await rig.roundtrip(INFLATEQ, encode_pfns(range(100)))
            assert trio.current_time() - t0 == pytest.approx(
                costs.vq_roundtrip + 100 * costs.host_discard_page)


async def test_touched_refaults_only_discarded_pages(autojump_clock: trio.abc.Clock) -> None:
    """A guest touch refaults deflated pages (RSS grows back) and leaves resident ones alone."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns(range(8)))
            await rig.roundtrip(DEFLATEQ, encode_pfns([0, 1, 2, 3]))
            rig.device.touched(array("I", [0, 1, 900]), 1)
            assert_accounting(rig, ballooned={4, 5, 6, 7}, discarded={2, 3})
            assert rig.memory.refaults == 2
            assert rig.memory.rss == PAGES - 6
            rig.device.touched(array("I", [0, 1]), 1)  # already resident: nothing to refault
            assert rig.memory.refaults == 2
    assert [r["pages"] for r in rig.records(schema.HOST_REFAULT)] == [2]
    assert rig.reports == []


async def test_touched_with_8k_guest_pages_refaults_both_wire_pfns(
        autojump_clock: trio.abc.Clock) -> None:
    """With 8 KiB guest pages, touching guest page 3 refaults wire PFNs 6 and 7."""
    with trio.fail_after(10):
        async with running(pages_per_page=2) as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([6, 7, 8, 9]))
            await rig.roundtrip(DEFLATEQ, encode_pfns([6, 7, 8, 9]))
            rig.device.touched(array("I", [3]), 2)
            assert_accounting(rig, ballooned=set(), discarded={8, 9})
            assert rig.memory.refaults == 2
    assert rig.reports == []


async def test_touching_a_ballooned_page_is_reported_and_changes_nothing(
        autojump_clock: trio.abc.Clock) -> None:
    """A touch of a page still in the balloon is a use-while-ballooned violation, no refault."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([1, 2]))
            await rig.roundtrip(DEFLATEQ, encode_pfns([1]))
            rig.device.touched(array("I", [2]), 1)
            assert_accounting(rig, ballooned={2}, discarded={1})
    assert_reported(rig, ["driver.use-while-ballooned"])
    assert rig.violation("driver.use-while-ballooned")["pfns"] == [2]


async def test_stats_buffer_is_held_and_handed_back_every_interval(
        autojump_clock: trio.abc.Clock) -> None:
    """The device keeps the stats buffer, decodes it, and returns it every stats_interval."""
    with trio.fail_after(30):
        async with running(features=MTH_STATS, stats_interval=2.0) as rig:
            t0 = trio.current_time()
            first = await rig.send(STATSQ, encode_stats(
                [(StatTag.MEMFREE, 400 * 4096), (StatTag.MEMTOT, PAGES * 4096), (200, 7)]))
            assert await rig.reap(STATSQ) is first
            assert trio.current_time() == pytest.approx(t0 + 2.0)
            assert rig.device.stats == {"memfree": 400 * 4096, "memtot": PAGES * 4096}
            assert rig.device.stats_time == pytest.approx(t0)
            assert not rig.device.holds_stats_buffer()

            second = await rig.send(STATSQ, encode_stats(
                [(StatTag.MEMTOT, PAGES * 4096), (200, 8), (StatTag.MEMFREE, 300 * 4096)]))
            assert await rig.reap(STATSQ) is second
            assert trio.current_time() == pytest.approx(t0 + 4.0)
            assert rig.device.stats == {"memfree": 300 * 4096, "memtot": PAGES * 4096}
            assert rig.device.stats_time == pytest.approx(t0 + 2.0)

            # Nothing held: the next polls hand nothing back and raise no interrupt.
            await trio.sleep(5.0)
            with pytest.raises(anyio.WouldBlock):
                rig.transport.driver_inbox.receive_nowait()
    assert [r["stats"] for r in rig.records(schema.HOST_STATS)] == [
        {"memfree": 400 * 4096, "memtot": PAGES * 4096},
        {"memfree": 300 * 4096, "memtot": PAGES * 4096},
    ]
    assert rig.reports == []


async def test_stats_buffer_is_held_until_the_poll(autojump_clock: trio.abc.Clock) -> None:
    """Between two polls the device holds the stats buffer and the driver gets nothing back."""
    with trio.fail_after(30):
        async with running(features=MTH_STATS, stats_interval=2.0) as rig:
            await rig.send(STATSQ, encode_stats([(StatTag.MEMFREE, 1)]))
            await trio.sleep(1.5)
            assert rig.device.holds_stats_buffer()
            assert rig.transport.vqs[STATSQ].device.held == 1
            assert rig.transport.vqs[STATSQ].driver.get_buf() is None
            await rig.reap(STATSQ)


async def test_set_target_writes_config_and_raises_config_change(
        autojump_clock: trio.abc.Clock) -> None:
    """set_target writes num_pages, sends ConfigChanged once per change, logs the previous."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.device.set_target(300)
            assert rig.transport.config.num_pages == 300
            assert rig.device.target == 300
            assert await rig.next_msg() == ConfigChanged()
            await rig.device.set_target(300)  # unchanged: no interrupt, no record
            with pytest.raises(anyio.WouldBlock):
                rig.transport.driver_inbox.receive_nowait()
            await rig.device.set_target(100)
            assert await rig.next_msg() == ConfigChanged()
            assert rig.transport.config.num_pages == 100
    assert [(r["num_pages"], r["previous"]) for r in rig.records(schema.CONFIG_TARGET)] == [
        (300, 0), (100, 300)]


async def test_config_write_sets_actual(autojump_clock: trio.abc.Clock) -> None:
    """A driver's ConfigWrite is what the device reports as actual."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.transport.to_device.send(ConfigWrite(42))
            await trio.sleep(0.001)
            assert rig.device.actual == 42
            assert rig.device.summary()["actual"] == 42


# -- the hostile driver -----------------------------------------------------------------------


async def test_pfns_beyond_guest_ram_are_rejected_and_the_rest_ballooned(
        autojump_clock: trio.abc.Clock) -> None:
    """PFNs at or past the end of guest RAM are reported; the in-range ones are acted on."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, raw([1, 2, PAGES, 0xFFFF_FFFF]))
            assert_accounting(rig, ballooned={1, 2}, discarded=set())
            await rig.roundtrip(DEFLATEQ, raw([PAGES + 5, 1]))
            assert_accounting(rig, ballooned={2}, discarded={1})
    # PFN 1029 was never inflated, so the monitor also flags the driver's deflate of it.
    assert_reported(rig, ["device.pfn-out-of-range", "driver.deflate-not-in-balloon",
                          "device.pfn-out-of-range"])
    first, _, second = rig.records(schema.HOST_VIOLATION)
    assert first["pfns"] == [PAGES, 0xFFFF_FFFF]
    assert "inflateq" in first["detail"] and "2 PFNs beyond guest RAM" in first["detail"]
    assert second["pfns"] == [PAGES + 5]
    assert done(rig, schema.HOST_INFLATE_DONE) == [([1, 2], 2)]
    assert done(rig, schema.HOST_DEFLATE_DONE) == [([1], 1)]
    assert rig.device.rejected == 3


async def test_buffer_length_not_a_multiple_of_4_is_rejected_whole(
        autojump_clock: trio.abc.Clock) -> None:
    """A 10-byte inflate buffer is returned untouched with a bad-buffer violation."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([3, 4]) + b"\x01\x02")
            assert_accounting(rig, ballooned=set(), discarded=set())
    assert_reported(rig, ["device.bad-buffer"])
    assert "not a multiple of 4" in rig.violation("device.bad-buffer")["detail"]
    assert done(rig, schema.HOST_INFLATE_DONE) == [([], 2)]


async def test_more_than_256_pfns_is_rejected_whole_and_256_accepted(
        autojump_clock: trio.abc.Clock) -> None:
    """257 PFNs in one buffer are all refused; exactly 256 are all ballooned."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, raw(range(257)))
            assert_accounting(rig, ballooned=set(), discarded=set())
            assert_reported(rig, ["device.bad-buffer"])
            assert "0..256 PFNs" in rig.violation("device.bad-buffer")["detail"]
            await rig.roundtrip(INFLATEQ, raw(range(300, 556)))
            assert_accounting(rig, ballooned=set(range(300, 556)), discarded=set())
    assert_reported(rig, ["device.bad-buffer"])
    assert done(rig, schema.HOST_INFLATE_DONE) == [([], 257), (list(range(300, 556)), 0)]


async def test_duplicate_pfns_in_one_buffer_count_once(autojump_clock: trio.abc.Clock) -> None:
    """A PFN repeated in one inflate buffer is ballooned once and the repeats reported."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, raw([5, 6, 5, 5]))
            assert_accounting(rig, ballooned={5, 6}, discarded=set())
            await rig.roundtrip(DEFLATEQ, raw([6, 6]))
            assert_accounting(rig, ballooned={5}, discarded={6})
    # The monitor sees the repeat when the driver adds it; the device when it reads it.
    assert_reported(rig, ["driver.inflate-in-balloon", "device.duplicate-pfn",
                          "driver.deflate-not-in-balloon", "device.duplicate-pfn"])
    dup = [r for r in rig.records(schema.HOST_VIOLATION) if r["rule"] == "device.duplicate-pfn"]
    assert [r["pfns"] for r in dup] == [[5, 5], [6]]
    assert done(rig, schema.HOST_INFLATE_DONE) == [([5, 6], 2)]
    assert done(rig, schema.HOST_DEFLATE_DONE) == [([6], 1)]


async def test_inflating_an_already_ballooned_pfn_is_not_counted_twice(
        autojump_clock: trio.abc.Clock) -> None:
    """Re-inflating a ballooned PFN is reported and leaves the ballooned count unchanged."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([1, 2]))
            await rig.roundtrip(INFLATEQ, encode_pfns([2, 3]))
            assert_accounting(rig, ballooned={1, 2, 3}, discarded=set())
            assert rig.memory.rss == PAGES - 3
            await rig.roundtrip(DEFLATEQ, encode_pfns([1, 2, 3]))
            assert_accounting(rig, ballooned=set(), discarded={1, 2, 3})
    assert_reported(rig, ["driver.inflate-in-balloon", "device.double-inflate"])
    assert rig.violation("device.double-inflate")["pfns"] == [2]
    assert done(rig, schema.HOST_INFLATE_DONE) == [([1, 2], 0), ([3], 1)]
    assert (rig.device.inflated, rig.device.deflated, rig.device.rejected) == (3, 3, 1)


async def test_deflating_a_pfn_never_inflated_is_ignored(autojump_clock: trio.abc.Clock) -> None:
    """Deflating a never-inflated PFN (or one already deflated) changes no host state."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([1]))
            await rig.roundtrip(DEFLATEQ, encode_pfns([1, 9]))
            assert_accounting(rig, ballooned=set(), discarded={1})
            await rig.roundtrip(DEFLATEQ, encode_pfns([1]))  # already deflated
            assert_accounting(rig, ballooned=set(), discarded={1})
            assert rig.memory.rss == PAGES - 1
    assert_reported(rig, ["driver.deflate-not-in-balloon", "device.deflate-not-ballooned",
                          "driver.deflate-not-in-balloon", "device.deflate-not-ballooned"])
    pfns = [r["pfns"] for r in rig.records(schema.HOST_VIOLATION)
            if r["rule"] == "device.deflate-not-ballooned"]
    assert pfns == [[9], [1]]
    assert done(rig, schema.HOST_DEFLATE_DONE) == [([1], 1), ([], 1)]


async def test_second_stats_buffer_is_returned_and_the_first_kept(
        autojump_clock: trio.abc.Clock) -> None:
    """A second stats buffer comes straight back; the device keeps the first and its values."""
    with trio.fail_after(30):
        async with running(features=MTH_STATS, stats_interval=2.0) as rig:
            t0 = trio.current_time()
            first = await rig.send(STATSQ, encode_stats([(StatTag.MEMFREE, 111)]), label="1")
            second = await rig.send(STATSQ, encode_stats([(StatTag.MEMFREE, 222)]), label="2")
            assert await rig.reap(STATSQ) is second
            assert trio.current_time() < t0 + 2.0
            assert rig.device.holds_stats_buffer()
            assert rig.device.stats == {"memfree": 111}
            assert await rig.reap(STATSQ) is first
            assert trio.current_time() == pytest.approx(t0 + 2.0)
    assert_reported(rig, ["driver.stats-second-buffer"])


async def test_stats_buffer_without_stats_vq_is_returned(autojump_clock: trio.abc.Clock) -> None:
    """Without STATS_VQ nothing would ever poll a stats buffer, so the device returns it."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(STATSQ, encode_stats([(StatTag.MEMFREE, 1)]))
            assert rig.transport.vqs[STATSQ].device.held == 0
            assert rig.device.stats == {}
    assert_reported(rig, ["driver.stats-without-feature"])


async def test_inflate_with_device_writable_segments_is_reported(
        autojump_clock: trio.abc.Clock) -> None:
    """Device-writable segments on inflateq are reported; as QEMU, the out bytes are read."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([4, 5]), in_lens=(8,))
            assert_accounting(rig, ballooned={4, 5}, discarded=set())
            # Only device-writable segments: nothing to read at all.
            token = Buf("in-only")
            rig.transport.vqs[INFLATEQ].driver.add_buf((), (8,), token)
            assert rig.transport.vqs[INFLATEQ].driver.kick()
            await rig.transport.to_device.send(Notify(INFLATEQ))
            assert await rig.reap(INFLATEQ) is token
            assert_accounting(rig, ballooned={4, 5}, discarded=set())
    # (no out bytes at all reads as an empty PFN buffer, which is valid: no bad-buffer)
    assert_reported(rig, ["device.bad-direction", "device.bad-direction"])
    assert "1 device-writable" in rig.records(schema.HOST_VIOLATION)[0]["detail"]


@pytest.mark.parametrize("queue", [INFLATEQ, DEFLATEQ])
async def test_empty_buffer_is_acked_with_nothing_done(queue: int,
                                                      autojump_clock: trio.abc.Clock) -> None:
    """A zero-length inflate or deflate buffer is used and returned, changing nothing and
    reporting nothing: QEMU's virtio_balloon_handle_output reads no PFN from it, and 3.8's
    leak_balloon sends one when it dequeued no page."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, encode_pfns([7]))
            await rig.roundtrip(queue, encode_pfns([]))
            assert_accounting(rig, ballooned={7}, discarded=set())
    assert_reported(rig, [])


async def test_notify_of_a_queue_the_device_lacks_is_reported_not_fatal(
        autojump_clock: trio.abc.Clock) -> None:
    """A kick of a nonexistent queue is a logged violation; the device keeps serving."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.transport.to_device.send(Notify(3))
            await rig.transport.to_device.send(Notify(99))
            await rig.roundtrip(INFLATEQ, encode_pfns([1]))
            assert_accounting(rig, ballooned={1}, discarded=set())
    assert_reported(rig, ["device.bad-queue", "device.bad-queue"])
    assert "queue 99" in rig.records(schema.HOST_VIOLATION)[1]["detail"]


async def test_rejected_pfns_summary_matches_the_logged_rejections(
        autojump_clock: trio.abc.Clock) -> None:
    """summary()['rejected_pfns'] is the sum of `rejected` over every inflate/deflate record."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.roundtrip(INFLATEQ, raw([1, 1, PAGES]))  # 1 dup, 1 out of range
            await rig.roundtrip(INFLATEQ, raw([1, 2]))  # 1 double inflate
            await rig.roundtrip(DEFLATEQ, raw([3]))  # never inflated
            await rig.roundtrip(INFLATEQ, raw([1]) + b"\0")  # undecodable: 1 whole PFN
    logged = sum(r["rejected"] for e in (schema.HOST_INFLATE_DONE, schema.HOST_DEFLATE_DONE)
                 for r in rig.records(e))
    assert logged == 5
    assert rig.device.summary()["rejected_pfns"] == 5


# -- property: no buffer, however bad, breaks the host's books ---------------------------------

SMALL = 64
_pfn_lists = st.lists(st.integers(0, SMALL + 4), max_size=260) | st.lists(
    st.integers(0, 0xFFFF_FFFF), max_size=4)
_ops = st.lists(st.tuples(st.sampled_from([INFLATEQ, DEFLATEQ]), _pfn_lists), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_any_buffer_sequence_keeps_the_host_ledger_exact(
        ops: list[tuple[int, list[int]]]) -> None:
    """For any inflate/deflate buffers, every one comes back and the ledger matches a model."""

    async def main() -> None:
        with trio.fail_after(60):
            async with running(pages=SMALL) as rig:
                ballooned: set[int] = set()
                discarded: set[int] = set()
                for queue, pfns in ops:
                    await rig.roundtrip(queue, raw(pfns))
                    if not 1 <= len(pfns) <= 256:
                        continue  # rejected whole
                    valid = [p for p in dict.fromkeys(pfns) if p < SMALL]
                    if queue == INFLATEQ:
                        added = {p for p in valid if p not in ballooned}
                        ballooned |= added
                        discarded -= added
                    else:
                        removed = {p for p in valid if p in ballooned}
                        ballooned -= removed
                        discarded |= removed
                    assert_accounting(rig, ballooned=ballooned, discarded=discarded)
                    assert rig.memory.state.count(RESIDENT) == rig.memory.rss
        assert len(rig.kinds()) == len(rig.records(schema.HOST_VIOLATION))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(("actual", "kept"), [
    (-1, 0), (PAGES + 1, PAGES), (1 << 32, PAGES), ((1 << 64) + 5, PAGES),
])
async def test_actual_outside_u32_or_ram_is_a_violation_and_clamped(
        autojump_clock: trio.abc.Clock, actual: int, kept: int) -> None:
    """An `actual` no le32 can hold, or above the guest's RAM, is reported with the guest's
    name; the device keeps working with it clamped to [0, RAM]."""
    with trio.fail_after(10):
        async with running() as rig:
            await rig.transport.to_device.send(ConfigWrite(actual))
            await trio.sleep(0.001)
            assert rig.device.actual == kept
    assert rig.violations() == ["driver.actual-out-of-range"]
    assert rig.reports[0][1].startswith("guest0: actual=")


@pytest.mark.parametrize(("stats", "why"), [
    ([(StatTag.MEMFREE, 2 * PAGES * 4096), (StatTag.MEMTOT, PAGES * 4096)], "above the guest's"),
    ([(StatTag.MEMFREE, 600 * 4096), (StatTag.MEMTOT, 500 * 4096)], "above memtot"),
    ([(StatTag.AVAIL, 900 * 4096), (StatTag.MEMTOT, 500 * 4096)], "above memtot"),
    ([(StatTag.MEMFREE, (1 << 64) - 1)], "u64-max"),
    ([(StatTag.SWAP_IN, (1 << 64) - 1), (StatTag.MEMTOT, PAGES * 4096)], "u64-max"),
])
async def test_impossible_stats_are_a_violation_and_untrusted(
        autojump_clock: trio.abc.Clock, stats: list[tuple[int, int]], why: str) -> None:
    """A stats buffer whose values cannot be true is reported and marked untrusted (the host
    then shows the policy no stats); the device still holds and polls the buffer."""
    with trio.fail_after(10):
        async with running(features=MTH_STATS) as rig:
            await rig.send(STATSQ, encode_stats(stats))
            await trio.sleep(0.001)
            assert not rig.device.stats_trusted and rig.device.holds_stats_buffer()
            await rig.reap(STATSQ)
    assert rig.violations() == ["driver.stats-impossible"]
    assert why in rig.reports[0][1]


async def test_plausible_stats_stay_trusted(autojump_clock: trio.abc.Clock) -> None:
    """Free at or below total, all within RAM: trusted (the check cannot fire on a sane one)."""
    with trio.fail_after(10):
        async with running(features=MTH_STATS) as rig:
            await rig.send(STATSQ, encode_stats(
                [(StatTag.MEMFREE, PAGES * 4096), (StatTag.MEMTOT, PAGES * 4096)]))
            await trio.sleep(0.001)
            assert rig.device.stats_trusted
            await rig.reap(STATSQ)
    assert rig.violations() == []
