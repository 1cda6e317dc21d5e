"""Hypothesis properties of the virtqueue: ring invariants under any sequence of operations."""

from __future__ import annotations

from collections import deque

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import QueueFull, Virtqueue, VirtqueueError


class Token:
    """A distinct driver cookie (compared by identity, like the kernel's data pointer)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Token({self.n})"


class RingMachine(RuleBasedStateMachine):
    """Drives both ends of one ring against a plain model of what must happen."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 8
        self.vq: Virtqueue[Token] = Virtqueue("inflateq", 0, self.size)
        self.next_token = 0
        self.segs: dict[Token, int] = {}  # in flight -> descriptors used
        self.in_total: dict[Token, int] = {}
        self.by_head: dict[int, Token] = {}
        self.avail: deque[Token] = deque()
        self.popped: list[int] = []  # heads the device holds
        self.pushed: deque[tuple[Token, int]] = deque()
        self.returned: dict[Token, int] = {}  # token -> times it came back
        self.accepted: list[Token] = []

    @rule(n_out=st.integers(0, 3), in_lens=st.lists(st.integers(0, 64), max_size=3))
    def add(self, n_out: int, in_lens: list[int]) -> None:
        tok = Token(self.next_token)
        self.next_token += 1
        need = n_out + len(in_lens)
        free = self.vq.driver.num_free
        if need == 0 or need > self.size:
            try:
                self.vq.driver.add_buf([b"o"] * n_out, in_lens, tok)
            except QueueFull:
                raise AssertionError("QueueFull for a chain that can never fit") from None
            except VirtqueueError:
                return
            raise AssertionError("bad chain accepted")
        if need > free:
            try:
                self.vq.driver.add_buf([b"o"] * n_out, in_lens, tok)
            except QueueFull:
                return
            raise AssertionError("add_buf beyond num_free accepted")
        head = self.vq.driver.add_buf([bytes([tok.n % 256])] * n_out, in_lens, tok)
        assert head not in self.by_head
        self.by_head[head] = tok
        self.segs[tok] = need
        self.in_total[tok] = sum(in_lens)
        self.avail.append(tok)
        self.accepted.append(tok)

    @rule()
    def kick(self) -> None:
        self.vq.driver.kick()

    @rule()
    def pop(self) -> None:
        chain = self.vq.device.pop()
        if not self.avail:
            assert chain is None
            return
        tok = self.avail.popleft()
        assert chain is not None
        assert self.by_head[chain.head] is tok
        assert chain.in_total == self.in_total[tok]
        self.popped.append(chain.head)

    @precondition(lambda self: bool(self.popped))
    @rule(data=st.data())
    def push_used(self, data: st.DataObject) -> None:
        head = data.draw(st.sampled_from(self.popped))
        tok = self.by_head[head]
        written = data.draw(st.integers(0, self.in_total[tok]))
        self.vq.device.push_used(head, written)
        self.popped.remove(head)
        self.pushed.append((tok, written))

    @rule(head=st.integers(-2, 10), written=st.integers(-1, 200))
    def push_used_anything(self, head: int, written: int) -> None:
        """A random push is either valid or refused without changing anything."""
        before = self.vq.statistics()
        valid = head in self.popped and 0 <= written <= self.in_total[self.by_head[head]]
        if valid:
            self.vq.device.push_used(head, written)
            self.popped.remove(head)
            self.pushed.append((self.by_head[head], written))
            return
        try:
            self.vq.device.push_used(head, written)
        except VirtqueueError:
            assert self.vq.statistics() == before
            return
        raise AssertionError(f"push_used({head}, {written}) accepted")

    @rule()
    def get_buf(self) -> None:
        got = self.vq.driver.get_buf()
        if not self.pushed:
            assert got is None
            return
        tok, written = self.pushed.popleft()
        assert got == (tok, written)
        assert got[0] is tok
        self.returned[tok] = self.returned.get(tok, 0) + 1
        del self.segs[tok]
        self.by_head = {h: t for h, t in self.by_head.items() if t is not tok}

    @invariant()
    def descriptors_are_conserved(self) -> None:
        assert self.vq.driver.num_free + sum(self.segs.values()) == self.size
        assert self.vq.driver.in_flight == len(self.segs)

    @invariant()
    def tokens_come_back_at_most_once(self) -> None:
        assert all(n == 1 for n in self.returned.values())
        assert not self.returned.keys() & self.segs.keys()

    @invariant()
    def statistics_match_the_model(self) -> None:
        s = self.vq.statistics()
        assert s.available == len(self.avail)
        assert s.in_device == len(self.popped)
        assert s.used_pending == len(self.pushed)
        assert s.in_flight == s.available + s.in_device + s.used_pending

    def teardown(self) -> None:
        """Draining the ring returns every outstanding token exactly once, in push order."""
        while (chain := self.vq.device.pop()) is not None:
            self.popped.append(chain.head)
        for head in list(self.popped):
            self.push_used_head(head)
        while self.pushed:
            self.get_buf()
        assert self.vq.driver.get_buf() is None
        assert self.vq.driver.num_free == self.size
        assert not self.segs
        assert set(self.returned) == set(self.accepted)

    def push_used_head(self, head: int) -> None:
        self.vq.device.push_used(head, 0)
        self.popped.remove(head)
        self.pushed.append((self.by_head[head], 0))


TestRing = RingMachine.TestCase
TestRing.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
