"""Handshakes from the log: each buffer's add, pop, done and ack, in order, on one queue; what
each buffer means to the driver's pages (a fill's, a leak's, a migration's) and to the host's."""

from __future__ import annotations

from collections.abc import Sequence

from protocol.conformance import DeflateAcked, DeflateAdded, InflateAcked, InflateAdded
from protocol.pfns import show_pfns as show
from protocol.pfns import wire_to_guest_pfns

from .model import (
    ADDED,
    DEFLATEQ,
    DONE,
    IN_BALLOON,
    INFLATEQ,
    ISOLATED,
    LISTED,
    MIGRATING,
    NONE,
    PHASE_NAMES,
    POPPED,
    STATE_NAMES,
    STATSQ,
    Guest,
    Handshake,
    Migration,
    Record,
)
from .virtio import VirtioRules


class HandshakeRules(VirtioRules):
    """``vq.add``, ``host.pop``, ``host.*.done``, ``host.stats`` and ``vq.ack`` records."""

    def _vq_add(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs, queue, pfns = rec["hs"], rec["queue"], rec["pfns"]
        if hs in g.hs:
            self._violation("handshake-order", rec, g.name,
                            f"handshake id {hs} added again while still open", hs=[hs])
        g.hs[hs] = Handshake(queue, pfns, ADDED, rec)
        if queue == STATSQ:
            return
        g.open_hs += 1
        if g.ppp == 1 and len(pfns) == 1 and 0 <= pfns[0] < g.nr_pages:
            pages = pfns
        else:
            pages = self._pages(g, rec, pfns, True)
            if pages is None:
                return
        if queue == INFLATEQ:
            self._explain_inflate(g, rec, pages, hs)
            found = g.virtio.feed(InflateAdded(pfns))
        elif queue == DEFLATEQ:
            self._explain_deflate(g, rec, pages, hs)
            found = g.virtio.feed(DeflateAdded(pfns))
        else:
            return
        if found:
            self._virtio(g, rec, found, pages, hs)

    def _explain_inflate(self, g: Guest, rec: Record, pages: Sequence[int], hs: int) -> None:
        """An inflate buffer is a fill's tell_host, or a migration's new page."""
        fill = g.pending_fill
        if fill is not None and (pages == fill or sorted(pages) == sorted(fill)):
            g.pending_fill = None  # fill_balloon's tell_host
        elif (len(pages) == 1 and fill is None and g.migration is None
              and g.cnt[ISOLATED] and g.drv[pages[0]] == NONE):
            # virtballoon_migratepage put newpage on the list and inflates it
            g.migration = Migration(pages[0], hs)
            g.move(pages[0], LISTED)
        else:
            self._unexplained(g, rec, pages, hs, "while the pages of a fill wait for their "
                              "inflate" if fill is not None else "neither the pages of a "
                              "fill nor the new page of a migration")

    def _explain_deflate(self, g: Guest, rec: Record, pages: Sequence[int], hs: int) -> None:
        """A deflate buffer is a leak's tell_host, or a migration's old page."""
        leak, m = g.pending_leak, g.migration
        if leak is not None and (pages == leak or sorted(pages) == sorted(leak)):
            g.pending_leak = None  # leak_balloon's tell_host
        elif len(pages) == 1 and m is not None and m.old < 0 and g.drv[pages[0]] == ISOLATED:
            m.old, m.hs_deflate = pages[0], hs  # virtballoon_migratepage's 2nd step
            g.move(pages[0], MIGRATING)
        else:
            self._unexplained(g, rec, pages, hs, f"the pages of the leak are {show(leak)}"
                              if leak is not None else "no leak is pending and it is not "
                              "the old page of a migration")

    def _unexplained(self, g: Guest, rec: Record, pages: Sequence[int], hs: int, why: str
                     ) -> None:
        queue = rec["queue"]
        states = ", ".join(sorted({STATE_NAMES[g.drv[p]] for p in pages}))
        self._violation(f"unexplained-{'inflate' if queue == INFLATEQ else 'deflate'}", rec,
                        g.name, f"{queue} hs={hs} names pages {show(pages)} (driver states: "
                        f"{states}): {why}", pfns=pages, hs=[hs])

    def _order(self, g: Guest, rec: Record, hs: int, h: Handshake | None, verb: str,
               want: int, queue: str) -> None:
        if h is None:
            why = "it was never added (or is already complete)"
        elif h.queue != queue:
            why = f"it was added to {h.queue}"
        else:
            why = f"it is {PHASE_NAMES[h.phase]}, not {PHASE_NAMES[want]}"
        self._violation("handshake-order", rec, g.name, f"hs={hs} {verb}, but {why}", hs=[hs])

    def _host_pop(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h.phase != ADDED or h.queue != rec["queue"]:
            self._order(g, rec, hs, h, f"popped from {rec['queue']}", ADDED, rec["queue"])
        else:
            h.phase = POPPED

    def _device_done(self, queue: str, step: int, rec: Record) -> None:
        """The device used an inflate (step 1) or deflate (step -1) buffer: its PFNs go into
        (out of) the host's set, and the monitor sees the ack."""
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h.phase != POPPED or h.queue != queue:
            self._order(g, rec, hs, h, f"done on {queue}", POPPED, queue)
            return
        h.phase = DONE
        pfns = rec["pfns"]
        if pfns != h.pfns and not set(pfns) <= set(h.pfns):
            self._violation("handshake-order", rec, g.name,
                            f"hs={hs}: the device acted on PFNs "
                            f"{show(sorted(set(pfns) - set(h.pfns)))} the buffer did not name",
                            hs=[hs])
            return
        ppp, hc, drv, bad, nr = g.ppp, g.hostcnt, g.drv, g.bad, g.nr_pages
        nbad = g.nbad
        moved = 0
        inside = True
        for w in pfns:
            p = w // ppp
            if not 0 <= p < nr:
                inside = False
                continue
            n = hc[p] + step
            if 0 <= n <= ppp:
                hc[p] = n
                moved += step
                b = n != ppp if IN_BALLOON[drv[p]] else n != 0
                if b != bad[p]:
                    bad[p] = b
                    nbad += 1 if b else -1
        g.nbad = nbad
        g.n_hosted += moved
        g.totals[step < 0] += len(pfns)
        acked = pfns if inside else [w for w in pfns if 0 <= w // ppp < nr]
        found = g.virtio.feed(InflateAcked(acked) if step > 0 else DeflateAcked(acked))
        if found:
            self._virtio(g, rec, found, acked if ppp == 1 else
                         wire_to_guest_pfns(acked, ppp)[0], hs)

    def _host_stats(self, rec: Record) -> None:
        g = self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h.phase != POPPED or h.queue != STATSQ:
            self._order(g, rec, hs, h, "read as stats", POPPED, STATSQ)
        else:
            del g.hs[hs]  # the device holds the buffer until it polls: the handshake is done

    def _vq_ack(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        hs = rec["hs"]
        h = g.hs.get(hs)
        if h is None or h.queue != rec["queue"]:
            self._order(g, rec, hs, h, f"acked on {rec['queue']}", DONE, rec["queue"])
            return
        if h.phase != DONE:
            self._order(g, rec, hs, h, "acked by the driver", DONE, h.queue)
        del g.hs[hs]
        if h.queue != STATSQ:
            g.open_hs -= 1
            if not g.open_hs and g.migration is None:
                self._quiescent(g, rec)
