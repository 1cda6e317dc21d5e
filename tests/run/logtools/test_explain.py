"""The first violation's explanation from records alone (run.logtools.check.explain)."""

from __future__ import annotations

from typing import Any

from actors.sim import schema
from run.logtools.check.explain import Explainer


def _rec(seq: int, t: float, actor: str, event: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "t": t, "actor": actor, "event": event, **fields}


#: B waits for L, which A holds while it sleeps on vb->acked for a deflate the device was
#: told to sit on; another guest's records and an acked handshake must not confuse it.
RECORDS = [
    _rec(1, 0.1, "guest0.kernel", schema.LOCK_ACQUIRE, task="A", lock="L", kind="mutex"),
    _rec(2, 0.2, "guest0.balloon", schema.VQ_ADD, queue="inflateq", hs=1, pfns=[5]),
    _rec(3, 0.2, "host.guest0", schema.HOST_POP, queue="inflateq", hs=1, len=4),
    _rec(4, 0.3, "guest0.balloon", schema.VQ_ACK, queue="inflateq", hs=1),
    _rec(5, 0.4, "guest0.balloon", schema.VQ_ADD, queue="deflateq", hs=2, pfns=[5]),
    _rec(55, 0.4, "guest0.balloon", schema.VQ_ADD, queue="statsq", hs=3, pfns=[]),
    _rec(6, 0.4, "host.guest0", schema.HOST_POP, queue="deflateq", hs=2, len=4),
    _rec(7, 0.4, "host.guest0", schema.FAULT, site="host.stall", detail="device delayed 2s"),
    _rec(8, 0.4, "guest0.kernel", schema.WAIT_SLEEP, task="A", queue="vb->acked"),
    _rec(9, 0.5, "guest0.kernel", schema.LOCK_CONTENDED, task="B", lock="L", kind="mutex"),
    _rec(10, 0.6, "guest1.kernel", schema.LOCK_ACQUIRE, task="A", lock="L", kind="mutex"),
    _rec(11, 0.7, "guest0.kernel", schema.LOCK_ACQUIRE, task="C", lock="M", kind="mutex"),
]


def test_the_chain_goes_from_the_waiter_to_the_fault_that_stalled_the_holder() -> None:
    e = Explainer("guest0")
    for rec in RECORDS:
        e.feed(rec)
    why = e.explain(None, ["B"], 5.0)
    assert why == [
        "faults injected before it: 1",
        "  t=0.400000 seq 7 host.stall: device delayed 2s",
        "waits-for at t=5.000000:",
        "  B (blocked) waits on L since t=0.500000 <- held by A since t=0.100000",
        "  A (sleeping) waits on vb->acked since t=0.400000; holds L (1 wait for L: B) -- for "
        "the ack of deflateq hs=2 (added at t=0.400000; not done by the device yet); injected "
        "host.stall at t=0.400000 (seq 7): device delayed 2s",
        "last progress: C at t=0.700000 (seq 11, lock.acquire M), 4.300000 s before it",
    ]


def test_a_task_that_runs_again_waits_no_more() -> None:
    """A sleeper's next record ends its sleep; a lock waiter's acquire ends its wait."""
    e = Explainer("guest0")
    for rec in [*RECORDS,
                _rec(12, 0.8, "guest0.kernel", schema.LOCK_RELEASE, task="A", lock="L",
                     kind="mutex"),
                _rec(13, 0.8, "guest0.kernel", schema.LOCK_ACQUIRE, task="B", lock="L",
                     kind="mutex")]:
        e.feed(rec)
    assert e.waits == {} and e.holders == {"L": ("B", 0.8), "M": ("C", 0.7)}
    assert e.explain(None, ["B"], 1.0)[2:] == [
        "waits-for at t=1.000000:", "  B (running, waits on nothing); holds L",
        "last progress: B at t=0.800000 (seq 13, lock.acquire L), 0.200000 s before it"]


def test_an_info_log_follows_the_chain_through_the_watchdogs_own_list() -> None:
    """No lock records (an info-level log): the holder comes from show_all_locks()."""
    hung = _rec(9, 5.0, "guest0.kernel", schema.HUNG_TASK, task="kcompactd0",
                waiting_on="vb->balloon_lock", blocked_for=4.5, all_locks=[
                    {"task": "kcompactd0", "state": "blocked", "waiting_on": "vb->balloon_lock",
                     "held": ["page:7"]},
                    {"task": "vballoon", "state": "blocked", "waiting_on": "vb->acked",
                     "held": ["vb->balloon_lock"]}])
    e = Explainer("guest0")
    e.feed(hung)
    chain = e.explain(hung, ["kcompactd0"], 5.0)
    assert chain[2:4] == [
        "  kcompactd0 (blocked) waits on vb->balloon_lock; holds page:7 <- held by vballoon",
        "  vballoon (blocked) waits on vb->acked; holds vb->balloon_lock (1 wait for "
        "vb->balloon_lock: kcompactd0) (no handshake open)"]
