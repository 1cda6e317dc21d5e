"""Unit tests of the split virtqueue state machines (driver and device ends)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import Chain, QueueFull, Virtqueue, VirtqueueError

NamesFn = Callable[..., None]


def make(size: int = 8, name: str = "inflateq") -> Virtqueue[object]:
    return Virtqueue(name, 0, size)


def test_first_add_uses_descriptor_zero_and_counts_segments() -> None:
    """add_buf returns the head id (0 first) and takes one descriptor per segment."""
    vq = make()
    assert vq.driver.add_buf([b"ab", b"cd"], [4], "t") == 0
    assert vq.driver.num_free == 5
    assert vq.driver.in_flight == 1


def test_pop_shows_the_chain_the_driver_added() -> None:
    """pop returns a Chain with the out segments and in lengths, FIFO; None when empty."""
    vq = make()
    h1 = vq.driver.add_buf([b"x"], [], "a")
    h2 = vq.driver.add_buf([b"y", b"z"], [3, 5], "b")
    c1 = vq.device.pop()
    c2 = vq.device.pop()
    assert c1 == Chain(h1, (b"x",), ())
    assert c2 == Chain(h2, (b"y", b"z"), (3, 5))
    assert c2.out_data == b"yz" and c2.in_total == 8 and c1.out_data == b"x"
    assert vq.device.pop() is None


def test_get_buf_returns_token_and_written_in_push_order() -> None:
    """Used chains come back to the driver in the order the device pushed them."""
    vq = make()
    ta, tb = object(), object()
    vq.driver.add_buf([], [8], ta)
    vq.driver.add_buf([], [8], tb)
    ca, cb = vq.device.pop(), vq.device.pop()
    assert ca is not None and cb is not None
    assert vq.driver.get_buf() is None
    vq.device.push_used(cb.head, 3)
    vq.device.push_used(ca.head, 8)
    assert vq.driver.more_used()
    assert vq.driver.get_buf() == (tb, 3)
    assert vq.driver.get_buf() == (ta, 8)
    assert vq.driver.get_buf() is None
    assert vq.driver.num_free == 8 and vq.driver.in_flight == 0


def test_freed_chain_is_reused_first() -> None:
    """Like the kernel's free_head list, the descriptors just freed are handed out next."""
    vq = make()
    head = vq.driver.add_buf([b"a"], [], "t")
    chain = vq.device.pop()
    assert chain is not None
    vq.device.push_used(chain.head, 0)
    vq.driver.get_buf()
    assert vq.driver.add_buf([b"b"], [], "u") == head


def test_multi_segment_chain_frees_all_descriptors() -> None:
    """A chain's every descriptor returns to the free list when it is reaped."""
    vq = make(4)
    vq.driver.add_buf([b"a", b"b"], [1, 1], "t")
    assert vq.driver.num_free == 0
    chain = vq.device.pop()
    assert chain is not None
    vq.device.push_used(chain.head, 2)
    vq.driver.get_buf()
    assert vq.driver.num_free == 4
    assert [vq.head_state(i) for i in range(4)] == ["free"] * 4


def test_kick_reports_whether_to_notify() -> None:
    """kick is True once per batch of adds, and False while the device suppresses kicks."""
    vq = make()
    assert vq.driver.kick() is False
    vq.driver.add_buf([b"a"], [], "t1")
    vq.driver.add_buf([b"b"], [], "t2")
    assert vq.driver.kick() is True
    assert vq.driver.kick() is False
    assert vq.device.take_notify() is True
    assert vq.device.take_notify() is False
    vq.device.disable_notify()
    vq.driver.add_buf([b"c"], [], "t3")
    assert vq.driver.kick() is False
    assert vq.device.enable_notify() is True  # chains are waiting: poll once more
    assert vq.statistics().notifications == 1


def test_push_used_owes_an_interrupt_unless_callbacks_disabled() -> None:
    """push_used sets needs_interrupt; take_interrupt consumes it; disable_cb suppresses it."""
    vq = make()
    for tok in ("a", "b"):
        vq.driver.add_buf([b"x"], [], tok)
    ca, cb = vq.device.pop(), vq.device.pop()
    assert ca is not None and cb is not None
    assert vq.device.needs_interrupt is False
    vq.device.push_used(ca.head, 0)
    assert vq.device.needs_interrupt is True
    assert vq.device.take_interrupt() is True
    assert vq.device.take_interrupt() is False
    vq.driver.disable_cb()
    vq.device.push_used(cb.head, 0)
    assert vq.device.needs_interrupt is False
    assert vq.driver.enable_cb() is False  # used buffers are pending: reap before sleeping
    vq.driver.get_buf()
    vq.driver.get_buf()
    assert vq.driver.enable_cb() is True
    assert vq.statistics().interrupts == 1


def test_equal_but_distinct_tokens_may_both_be_in_flight() -> None:
    """Token identity, not equality, decides whether a token is already in flight."""
    vq = make()
    vq.driver.add_buf([b"a"], [], [1])
    vq.driver.add_buf([b"a"], [], [1])
    assert vq.driver.in_flight == 2


def test_token_can_be_re_added_after_it_came_back() -> None:
    """A token is free to be added again once get_buf has returned it."""
    vq = make()
    tok = object()
    vq.driver.add_buf([b"a"], [], tok)
    chain = vq.device.pop()
    assert chain is not None
    vq.device.push_used(chain.head, 0)
    assert vq.driver.get_buf() == (tok, 0)
    vq.driver.add_buf([b"a"], [], tok)


def test_queue_full_names_queue_role_state_and_need(names: NamesFn) -> None:
    """add_buf raises QueueFull (ENOSPC) when too few descriptors are free."""
    vq = make(4, "deflateq")
    vq.driver.add_buf([b"a", b"b", b"c"], [], "t")
    with pytest.raises(QueueFull) as err:
        vq.driver.add_buf([b"a"], [4], "u")
    names(err, queue="deflateq", role="driver", state="num_free=1", value=2)
    assert vq.driver.num_free == 1 and vq.driver.in_flight == 1


def _in_flight_token(vq: Virtqueue[object]) -> None:
    tok = "tok"
    vq.driver.add_buf([b"a"], [], tok)
    vq.driver.add_buf([b"b"], [], tok)


def _popped_token(vq: Virtqueue[object]) -> None:
    tok = "tok"
    vq.driver.add_buf([b"a"], [], "other")
    vq.driver.add_buf([b"a"], [], tok)
    vq.device.pop()
    vq.device.pop()
    vq.driver.add_buf([b"b"], [], tok)


ADD_ERRORS: list[tuple[str, Callable[[Virtqueue[object]], object], str, object]] = [
    ("none-token", lambda vq: vq.driver.add_buf([b"a"], [], None), "num_free=8", None),
    ("token-in-flight", _in_flight_token, "available (head 0)", "tok"),
    ("token-in-device", _popped_token, "popped (head 1)", "tok"),
    ("empty-chain", lambda vq: vq.driver.add_buf([], [], "t"), "num_free=8", 0),
    ("chain-too-long", lambda vq: vq.driver.add_buf([b"a"] * 9, [], "t"), "size=8", 9),
    ("negative-in-len", lambda vq: vq.driver.add_buf([], [4, -1], "t"), "num_free=8", -1),
]


@pytest.mark.parametrize(
    ("case", "action", "state", "value"), ADD_ERRORS, ids=[c[0] for c in ADD_ERRORS]
)
def test_add_buf_errors_name_queue_role_state_value(
    names: NamesFn,
    case: str,
    action: Callable[[Virtqueue[object]], object],
    state: str,
    value: object,
) -> None:
    """add_buf refuses a bad chain or token with a VirtqueueError naming what was wrong."""
    vq = make()
    with pytest.raises(VirtqueueError) as err:
        action(vq)
    assert not isinstance(err.value, QueueFull)
    names(err, queue="inflateq", role="driver", state=state, value=value)


def _setup_push(vq: Virtqueue[object]) -> None:
    """Heads: 0 available (not popped); 1+2 a popped 2-desc chain (in 4); 3 popped then used."""
    vq.driver.add_buf([b"a"], [], "a")
    vq.device.pop()
    vq.driver.add_buf([b"b"], [4], "b")  # descriptors 1 (head) and 2
    vq.driver.add_buf([b"c"], [], "c")  # descriptor 3
    vq.device.pop()
    vq.device.pop()
    vq.device.push_used(0, 0)
    vq.device.push_used(3, 0)
    vq.driver.get_buf()  # frees head 0
    vq.driver.add_buf([b"d"], [], "d")  # head 0 again, left available


PUSH_ERRORS: list[tuple[str, int, int, str, object]] = [
    ("out-of-range", 8, 0, "out-of-range", 8),
    ("negative-head", -1, 0, "out-of-range", -1),
    ("free-head", 5, 0, "free", 5),
    ("not-popped", 0, 0, "available", 0),
    ("already-used", 3, 0, "used", 3),
    ("chain-body", 2, 0, "chained", 2),
    ("written-too-long", 1, 5, "popped", 5),
    ("written-negative", 1, -1, "popped", -1),
]


@pytest.mark.parametrize(
    ("case", "head", "written", "state", "value"), PUSH_ERRORS, ids=[c[0] for c in PUSH_ERRORS]
)
def test_push_used_errors_name_queue_role_state_value(
    names: NamesFn, case: str, head: int, written: int, state: str, value: object
) -> None:
    """push_used refuses heads not popped (or unknown) and lengths beyond the writable bytes."""
    vq = make(name="statsq")
    _setup_push(vq)
    before = vq.statistics()
    with pytest.raises(VirtqueueError) as err:
        vq.device.push_used(head, written)
    names(err, queue="statsq", role="device", state=state, value=value)
    assert vq.statistics() == before


@pytest.mark.parametrize("size", [0, -4, 3, 6, 65536, 4.0])
def test_bad_queue_size_is_refused(names: NamesFn, size: int) -> None:
    """A queue size that is not a power of two in 1..32768 is refused at setup."""
    with pytest.raises(VirtqueueError) as err:
        Virtqueue("inflateq", 0, size)
    names(err, queue="inflateq", role="device", state="setup", value=size)


@pytest.mark.parametrize("size", [1, 2, 256, 32768])
def test_good_queue_sizes_are_accepted(size: int) -> None:
    """Every power of two up to 32768 is a valid split-ring size."""
    assert Virtqueue("q", 0, size).num_free == size


def test_detach_unused_buf_takes_back_unused_chains(names: NamesFn) -> None:
    """After reset the driver detaches every unused chain; the device can no longer use them."""
    vq = make()
    vq.driver.add_buf([b"a"], [], "avail")
    vq.driver.add_buf([b"b", b"c"], [], "popped")
    vq.driver.add_buf([b"d"], [], "used")
    vq.device.pop()
    popped = vq.device.pop()
    used = vq.device.pop()
    assert popped is not None and used is not None
    vq.device.push_used(used.head, 0)
    vq.driver.add_buf([b"e"], [], "late")
    detached: list[str] = []
    while (tok := vq.driver.detach_unused_buf()) is not None:
        detached.append(str(tok))
    assert sorted(detached) == ["avail", "late", "popped"]
    assert vq.device.pop() is None
    with pytest.raises(VirtqueueError) as err:
        vq.device.push_used(popped.head, 0)
    names(err, queue="inflateq", role="device", state="free", value=popped.head)
    assert vq.driver.get_buf() == ("used", 0)
    assert vq.driver.num_free == 8 and vq.driver.in_flight == 0
    assert vq.statistics().detached == 3


def test_statistics_snapshot_counts_every_stage() -> None:
    """statistics() reports free descriptors and chains at each stage plus lifetime counters."""
    vq = make()
    for tok in "abcd":
        vq.driver.add_buf([b"x"], [], tok)
    vq.driver.kick()
    c1, c2, _ = vq.device.pop(), vq.device.pop(), vq.device.pop()
    assert c1 is not None and c2 is not None
    vq.device.push_used(c1.head, 0)
    vq.device.push_used(c2.head, 0)
    vq.driver.get_buf()
    s = vq.statistics()
    assert (s.name, s.index, s.size, s.num_free) == ("inflateq", 0, 8, 5)
    assert (s.in_flight, s.available, s.in_device, s.used_pending) == (3, 1, 1, 1)
    assert (s.added, s.popped, s.used, s.reaped) == (4, 3, 2, 1)
    assert vq.device.available == 1 and vq.device.held == 1
    assert vq.driver.statistics() == vq.device.statistics() == s
    assert "inflateq" in repr(vq)
