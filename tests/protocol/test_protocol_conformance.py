"""Tests of the conformance monitor: each normative rule, its id, role and detail."""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import given

from protocol import Conformance, ProtocolError, Rule, Violation
from protocol.balloon import BalloonFeature, feature_mask, guest_pfns_to_wire
from protocol.conformance import (
    ActualWritten,
    ConfigTarget,
    DeflateAcked,
    DeflateAdded,
    Event,
    InflateAcked,
    InflateAdded,
    PageUsed,
    Quiescent,
    Reset,
    StatsBufferAdded,
    StatsBufferUsed,
    StatsTags,
)

NamesFn = Callable[..., None]
MTH = BalloonFeature.MUST_TELL_HOST.mask
DOOM = BalloonFeature.DEFLATE_ON_OOM.mask
STATS = BalloonFeature.STATS_VQ.mask


def inflated(*pfns: int) -> list[Event]:
    """Inflate these 4 KiB pages, have the device ack, report actual."""
    return [
        ConfigTarget(len(pfns)),
        InflateAdded(pfns),
        InflateAcked(pfns),
        ActualWritten(len(pfns)),
    ]


CASES: list[tuple[str, int, list[Event], list[Rule]]] = [
    (
        "clean-round-trip",
        0,
        [
            *inflated(1, 2),
            Quiescent(),
            ConfigTarget(0),
            DeflateAdded([1, 2]),
            DeflateAcked([1, 2]),
            ActualWritten(0),
            PageUsed([1, 2, 3]),
            Quiescent(),
        ],
        [],
    ),
    (
        "use-before-inflate-ack",
        0,
        [InflateAdded([1, 2]), PageUsed([2, 3])],
        [Rule.USE_BEFORE_INFLATE_ACK],
    ),
    ("use-while-ballooned", 0, [*inflated(1), PageUsed([1])], [Rule.USE_WHILE_BALLOONED]),
    (
        "use-while-ballooned-even-with-deflate-on-oom",
        DOOM,
        [*inflated(1), PageUsed([1])],
        [Rule.USE_WHILE_BALLOONED],
    ),
    (
        "use-before-deflate-ack-must-tell-host",
        MTH,
        [*inflated(1), ConfigTarget(0), DeflateAdded([1]), PageUsed([1])],
        [Rule.USE_BEFORE_DEFLATE_ACK],
    ),
    (
        "use-before-deflate-ack-allowed-without-must-tell-host",
        0,
        [*inflated(1), ConfigTarget(0), DeflateAdded([1]), PageUsed([1]), DeflateAcked([1])],
        [],
    ),
    (
        "deflate-unacked-inflate",
        0,
        [InflateAdded([1]), DeflateAdded([1])],
        [Rule.DEFLATE_UNACKED_INFLATE],
    ),
    ("deflate-never-inflated", 0, [DeflateAdded([7])], [Rule.DEFLATE_NOT_IN_BALLOON]),
    (
        "deflate-twice",
        0,
        [*inflated(1), ConfigTarget(0), DeflateAdded([1]), DeflateAdded([1])],
        [Rule.DEFLATE_NOT_IN_BALLOON],
    ),
    (
        "deflate-below-target",
        0,
        [*inflated(1, 2), DeflateAdded([1])],
        [Rule.DEFLATE_BELOW_TARGET],
    ),
    ("deflate-below-target-on-oom", DOOM, [*inflated(1, 2), DeflateAdded([1])], []),
    (
        # a balloon migration below target: the new page's inflate, then the old page's deflate
        "migration-swap-below-target",
        0,
        [*inflated(1, 2), ConfigTarget(4), InflateAdded([3]), InflateAcked([3]),
         DeflateAdded([1])],
        [],
    ),
    (
        "deflate-below-target-beyond-the-swap",
        0,
        [*inflated(1, 2), ConfigTarget(4), InflateAdded([3]), InflateAcked([3]),
         DeflateAdded([1]), DeflateAdded([2])],
        [Rule.DEFLATE_BELOW_TARGET],
    ),
    (
        "deflate-races-a-raised-target",
        0,
        [*inflated(1, 2), ConfigTarget(0), DeflateAdded([1]), ConfigTarget(2), DeflateAdded([2])],
        [],
    ),
    (
        "deflate-after-catching-up-with-raised-target",
        0,
        [
            *inflated(1, 2),
            ConfigTarget(0),
            DeflateAdded([1]),
            ConfigTarget(2),
            DeflateAcked([1]),
            ActualWritten(1),
            DeflateAdded([2]),
        ],
        [Rule.DEFLATE_BELOW_TARGET],
    ),
    (
        "inflate-again-after-ack",
        0,
        [*inflated(1), InflateAdded([1])],
        [Rule.INFLATE_IN_BALLOON],
    ),
    ("inflate-twice-in-one-buffer", 0, [InflateAdded([3, 3])], [Rule.INFLATE_IN_BALLOON]),
    ("actual-not-updated", 0, [*inflated(1, 2)[:3], Quiescent()], [Rule.ACTUAL_NOT_UPDATED]),
    (
        "actual-not-updated-after-deflate",
        0,
        [*inflated(1, 2), ConfigTarget(0), DeflateAdded([1, 2]), DeflateAcked([1, 2]), Quiescent()],
        [Rule.ACTUAL_NOT_UPDATED],
    ),
    (
        "stats-cycle",
        STATS,
        [
            StatsBufferAdded(frozenset({4, 5})),
            StatsBufferUsed(),
            StatsBufferAdded(frozenset({5, 4})),
            StatsTags(frozenset({4, 5})),
            Quiescent(),
        ],
        [],
    ),
    (
        "stats-second-buffer",
        STATS,
        [StatsBufferAdded(), StatsBufferAdded()],
        [Rule.STATS_SECOND_BUFFER],
    ),
    (
        "stats-tags-changed",
        STATS,
        [StatsBufferAdded(frozenset({4, 5})), StatsBufferUsed(), StatsBufferAdded(frozenset({4}))],
        [Rule.STATS_TAGS_CHANGED],
    ),
    (
        "stats-tags-changed-seen-by-device",
        STATS,
        [StatsTags(frozenset({4, 5})), StatsTags(frozenset({4, 5, 99}))],
        [Rule.STATS_TAGS_CHANGED],
    ),
    ("stats-without-feature", 0, [StatsBufferAdded()], [Rule.STATS_WITHOUT_FEATURE]),
    (
        "stats-not-refilled",
        STATS,
        [StatsBufferAdded(), StatsBufferUsed(), Quiescent()],
        [Rule.STATS_NO_BUFFER],
    ),
    ("inflate-ack-without-request", 0, [InflateAcked([5])], [Rule.ACK_WITHOUT_REQUEST]),
    ("deflate-ack-without-request", 0, [DeflateAcked([5])], [Rule.ACK_WITHOUT_REQUEST]),
    (
        "stats-used-without-buffer",
        STATS,
        [StatsBufferUsed()],
        [Rule.STATS_USED_WITHOUT_BUFFER],
    ),
    ("reset-forgets-the-balloon", 0, [*inflated(1), Reset(), PageUsed([1]), Quiescent()], []),
]


@pytest.mark.parametrize(("case", "features", "events", "rules"), CASES, ids=[c[0] for c in CASES])
def test_rules(case: str, features: int, events: list[Event], rules: list[Rule]) -> None:
    """Each scenario yields exactly the listed violations, each blaming its rule's role."""
    found = Conformance(features).feed_all(events)
    assert [v.rule for v in found] == rules
    for v in found:
        assert v.role == v.rule.role == v.rule.value.split(".")[0]
        assert v.detail


#: Who is at fault for each rule: the id's prefix, except the device's buffer checks, whose
#: logged ids name the device that finds them while the driver is the one at fault.
ROLES = [(rule, rule.value.split(".")[0]) for rule in Rule if rule not in {
    Rule.BAD_DIRECTION, Rule.BAD_BUFFER, Rule.PFN_OUT_OF_RANGE, Rule.DUPLICATE_PFN,
    Rule.DOUBLE_INFLATE, Rule.DEFLATE_NOT_BALLOONED, Rule.BAD_QUEUE}] + [
    (Rule.BAD_DIRECTION, "driver"), (Rule.BAD_BUFFER, "driver"),
    (Rule.PFN_OUT_OF_RANGE, "driver"), (Rule.DUPLICATE_PFN, "driver"),
    (Rule.DOUBLE_INFLATE, "driver"), (Rule.DEFLATE_NOT_BALLOONED, "driver"),
    (Rule.BAD_QUEUE, "driver")]


@pytest.mark.parametrize(("rule", "role"), ROLES, ids=[str(r) for r, _ in ROLES])
def test_each_rule_names_the_side_at_fault(rule: Rule, role: str) -> None:
    """Violation.of takes the role from the rule; every rule is driver's or device's."""
    v = Violation.of(rule, "why", [3, 1])
    assert (v.rule, v.role, v.detail, v.pfns, v.event) == (rule, role, "why", (3, 1), None)
    assert rule.role == role


def test_device_rule_ids_are_the_logged_ones() -> None:
    """The device's buffer checks keep the ids its host.violation records have always had."""
    assert [str(r) for r in (Rule.BAD_DIRECTION, Rule.BAD_BUFFER, Rule.PFN_OUT_OF_RANGE,
                             Rule.DUPLICATE_PFN, Rule.DOUBLE_INFLATE,
                             Rule.DEFLATE_NOT_BALLOONED, Rule.BAD_QUEUE)] == [
        "device.bad-direction", "device.bad-buffer", "device.pfn-out-of-range",
        "device.duplicate-pfn", "device.double-inflate", "device.deflate-not-ballooned",
        "device.bad-queue"]


def test_violation_names_pages_sorted_and_the_event() -> None:
    """A page violation carries the sorted guest PFNs, the event and a detail naming them."""
    mon = Conformance(0)
    mon.feed(InflateAdded([9, 3, 5]))
    event = PageUsed([5, 9, 3, 100])
    (v,) = mon.feed(event)
    assert v == Violation(Rule.USE_BEFORE_INFLATE_ACK, "driver", v.detail, (3, 5, 9))
    assert v.event is event
    assert "[3, 5, 9]" in v.detail
    assert v.rule == "driver.use-before-inflate-ack"


def test_guest_pages_larger_than_4k() -> None:
    """With 64 KiB pages, inflate buffers carry 16 wire PFNs per page; use is by guest PFN."""
    mon = Conformance(MTH, pages_per_page=16)
    wire = guest_pfns_to_wire([2, 7], 16)
    assert mon.feed_all([ConfigTarget(32), InflateAdded(wire), InflateAcked(wire)]) == []
    assert mon.page_state(7) == "inflated" and mon.page_state(8) == "not-in-balloon"
    assert mon.device_pages == 32
    (used,) = mon.feed(PageUsed([7, 112]))
    assert used.rule is Rule.USE_WHILE_BALLOONED and used.pfns == (7,)
    (q,) = mon.feed(Quiescent())
    assert q.rule is Rule.ACTUAL_NOT_UPDATED and "actual=0" in q.detail and "32" in q.detail
    assert mon.feed_all([ActualWritten(32), Quiescent()]) == []
    assert mon.actual == 32 and mon.num_pages == 32


def test_partial_guest_page_is_reported_with_wire_pfns() -> None:
    """A buffer naming part of a guest page is reported with the stray wire PFNs."""
    mon = Conformance(0, pages_per_page=4)
    (v,) = mon.feed(InflateAdded([0, 1, 2, 3, 4, 5, 6]))
    assert v.rule is Rule.SPLIT_GUEST_PAGE and v.pfns == (4, 5, 6)
    assert mon.page_state(0) == "inflating" and mon.page_state(1) == "not-in-balloon"


def test_feed_rejects_non_events() -> None:
    """Feeding something that is not a conformance event is a programming error."""
    with pytest.raises(TypeError):
        Conformance(0).feed("InflateAdded")  # type: ignore[arg-type]


@pytest.mark.parametrize("ppp", [0, -4])
def test_bad_pages_per_page_is_refused(names: NamesFn, ppp: int) -> None:
    """The monitor needs a positive pages_per_page."""
    with pytest.raises(ProtocolError) as err:
        Conformance(0, pages_per_page=ppp)
    names(err, queue="config", role="driver", state="monitor setup", value=ppp)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("target"), st.integers(0, 40)),
        st.tuples(
            st.just("round"),
            st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(0, 40))),
        ),
        st.tuples(st.just("use"), st.lists(st.integers(0, 63), max_size=8)),
        st.tuples(st.just("stats"), st.none()),
    ),
    min_size=1,
    max_size=30,
)


@given(
    features=st.sampled_from([0, MTH, DOOM, feature_mask(0, 1, 2)]),
    ppp=st.sampled_from([1, 4]),
    batch=st.integers(1, 8),
    program=ops,
)
def test_kernel_like_driver_never_violates(
    features: int, ppp: int, batch: int, program: list[tuple[str, object]]
) -> None:
    """A driver following update_balloon_size_func's discipline produces no violations.

    Each "round" is a config change and the balloon work it triggers: the driver reads the
    target once, fills or leaks towards it in buffers of ``batch`` pages (tell_host waits for
    each ack; leaked pages are used only after the ack), then writes actual.  The host may move
    the target mid-round, which the monitor must tolerate.
    """
    mon = Conformance(features, pages_per_page=ppp)
    events: list[Event] = []
    free = list(range(64))  # guest pages the guest owns
    balloon: list[int] = []
    target = 0
    stats = bool(features & STATS)
    if stats:
        events.append(StatsBufferAdded(frozenset({4, 5})))
    for op, arg in program:
        if op == "target":
            assert isinstance(arg, int)
            target = arg * ppp
            events.append(ConfigTarget(target))
        elif op == "round":
            assert isinstance(arg, tuple)
            target, race = arg[0] * ppp, arg[1]
            events.append(ConfigTarget(target))
            diff = (target - len(balloon) * ppp) // ppp  # towards_target, read once
            first = True
            while diff != 0:
                n = min(batch, abs(diff))
                if diff > 0:
                    n = min(n, len(free))
                    if n == 0:
                        break
                    pages, free = free[:n], free[n:]
                    wire = guest_pfns_to_wire(pages, ppp)
                    events += [InflateAdded(wire), InflateAcked(wire)]
                    balloon += pages
                    diff -= n
                else:
                    pages, balloon = balloon[:n], balloon[n:]
                    wire = guest_pfns_to_wire(pages, ppp)
                    events += [DeflateAdded(wire), DeflateAcked(wire), PageUsed(pages)]
                    free += pages
                    diff += n
                if first and race is not None:  # the host moves the target mid-round
                    target = race * ppp
                    events.append(ConfigTarget(target))
                first = False
            events.append(ActualWritten(len(balloon) * ppp))
        elif op == "use":
            assert isinstance(arg, list)
            events.append(PageUsed([g for g in arg if g in free]))
        elif stats:
            events += [StatsBufferUsed(), StatsBufferAdded(frozenset({5, 4}))]
    events.append(Quiescent())
    assert mon.feed_all(events) == []
    assert mon.device_pages == len(balloon) * ppp


FAR = (1 << 26, 0xFFFF_FFFF)  # past the monitor's dense states
pfn_runs = st.builds(  # ranges of pages, ascending or descending, maybe with one page left out
    lambda low, n, down, hole: [p for p in range(low, low + n)[::-1 if down else 1]
                                if p != low + hole],
    st.integers(0, 30), st.integers(8, 16), st.booleans(), st.integers(1, 20))
pfn_batches = (st.lists(st.integers(0, 40) | st.sampled_from(FAR), min_size=0, max_size=24)
               | pfn_runs)
any_events = st.lists(
    st.one_of(
        st.builds(InflateAdded, pfn_batches),
        st.builds(InflateAcked, pfn_batches),
        st.builds(DeflateAdded, pfn_batches),
        st.builds(DeflateAcked, pfn_batches),
        st.builds(PageUsed, pfn_batches),
        st.builds(ConfigTarget, st.integers(0, 40)),
        st.builds(ActualWritten, st.integers(0, 40)),
        st.just(Quiescent()),
        st.just(Reset()),
    ),
    max_size=40,
)


@given(
    features=st.sampled_from([0, MTH, DOOM, feature_mask(0, 1, 2)]),
    ppp=st.sampled_from([1, 2]),
    events=any_events,
    as_array=st.booleans(),
)
def test_vectorised_batches_match_page_by_page(
    features: int, ppp: int, events: list[Event], as_array: bool
) -> None:
    """The array fast paths give exactly the page-by-page semantics, on arbitrary (also
    misbehaving: repeated, unknown, out-of-order) batches, given as lists or arrays."""
    if as_array:
        events = [dataclasses.replace(e, pfns=array.array("I", pfns))  # type: ignore[arg-type]
                  if (pfns := getattr(e, "pfns", None)) is not None else e
                  for e in events]
    fast = Conformance(features, ppp)
    slow = Conformance(features, ppp, vectorised=False)
    for e in events:
        assert fast.feed(e) == slow.feed(e)
        assert (fast.device_pages, fast.actual, fast.num_pages) == (
            slow.device_pages, slow.actual, slow.num_pages)
    pages = [*range(45), *FAR]
    assert [fast.page_state(g) for g in pages] == [slow.page_state(g) for g in pages]
