"""The virtio page rules, from the log: each guest's records feed the same conformance monitor
the host runs live (:class:`protocol.conformance.Conformance`), so each rule exists once.

The check feeds it buffers (``vq.add``), the device's ``*.done`` and the pages the driver hands
back to the page allocator (``balloon.release``; the old page of ``balloon.migrate``). It feeds
no targets, ``actual`` writes, stats or quiescent points: it checks ``actual`` against the
driver's own records (``actual-not-updated``), and the rest only the live monitor can see.
What the monitor finds is told here in the log's terms: the handshake, the record, the pages
in the order the buffer named them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from protocol.conformance import InflateAcked, PageUsed, Rule
from protocol.conformance import Violation as Broken
from protocol.pfns import show_pfns as show

from .base import VIRTIO_NAMES, CheckerBase
from .model import DEFLATEQ, INFLATEQ, Guest, Record

_USE_WHY: Final = {
    Rule.USE_BEFORE_INFLATE_ACK: "while inflating (the device has not acknowledged their "
                                 "inflate)",
    Rule.USE_WHILE_BALLOONED: "while inflated (never deflated)",
    Rule.USE_BEFORE_DEFLATE_ACK: "while deflating, with MUST_TELL_HOST (the device has not "
                                 "acknowledged their deflate)",
}


def in_buffer_order(named: Sequence[int], reported: Sequence[int], *, every: bool = False
                    ) -> list[int]:
    """The monitor's pages (sorted) as the record named them.

    A page named twice in a buffer breaks a rule on its later mentions (the first one moved
    it), so each page keeps its last mentions, as many as the monitor reported; ``every``
    keeps all of them (a use changes no state, and the monitor reports each page once).
    """
    want = Counter(reported)
    if every:
        return [p for p in named if p in want]
    out: list[int] = []
    for p in reversed(named):
        if want[p] > 0:
            out.append(p)
            want[p] -= 1
    out.reverse()
    return out


class VirtioRules(CheckerBase):
    """Feeding the monitor, and filing what it finds under its rule ids."""

    def _virtio(self, g: Guest, rec: Record, found: Sequence[Broken], named: Sequence[int],
                hs: int) -> None:
        """File the monitor's violations of one record; ``named`` are the guest pages the
        record named, in its order; ``hs`` its handshake (0: none)."""
        for v in found:
            rule = v.rule
            pages = in_buffer_order(named, v.pfns, every=rule in _USE_WHY)
            carried: list[int] = [hs]
            match rule:
                case Rule.SPLIT_GUEST_PAGE:
                    pages, carried = list(v.pfns), []
                    detail = (f"{rec['event']} names wire PFNs {show(pages)} that do not form "
                              f"whole {g.ppp * 4} KiB guest pages")
                case Rule.INFLATE_IN_BALLOON:
                    states = sorted({VIRTIO_NAMES[g.virtio.page_state(p)] for p in pages})
                    detail = (f"inflateq hs={hs}: pages {show(pages)} are already in the "
                              f"balloon ({', '.join(states)})")
                case Rule.DEFLATE_UNACKED_INFLATE:
                    detail = (f"deflateq hs={hs} names pages {show(pages)} whose inflate the "
                              "device has not acknowledged")
                    carried += g.carriers(pages)
                case Rule.DEFLATE_NOT_IN_BALLOON:
                    detail = (f"deflateq hs={hs} names pages {show(pages)} that are not in the "
                              "balloon (never inflated, or already being deflated)")
                case Rule.ACK_WITHOUT_REQUEST:
                    inflate = isinstance(v.event, InflateAcked)
                    detail = (f"{INFLATEQ if inflate else DEFLATEQ} hs={hs} done names pages "
                              f"{show(sorted(set(pages)))} no buffer asked to "
                              f"{'inflate' if inflate else 'deflate'}")
                case _ if rule in _USE_WHY:
                    detail = (f"{rec['event']}: pages {show(pages)} handed back to the page "
                              f"allocator {_USE_WHY[rule]}")
                    carried = g.carriers(pages)
                case _:  # a rule the log's events cannot break; told as the monitor tells it
                    pages, detail = list(v.pfns), v.detail
            self._rule(g, rule, rec, detail, pages, carried)

    def _use(self, g: Guest, rec: Record, pages: Sequence[int]) -> None:
        """The driver handed these pages to the page allocator: any task may now use them."""
        found = g.virtio.feed(PageUsed(pages))
        if found:
            self._virtio(g, rec, found, pages, 0)
