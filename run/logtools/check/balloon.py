"""The driver's balloon list from the log: fills, leaks, releases, compaction's isolate,
putback and migrate, and the ``num_pages``/``actual`` bookkeeping that follows them."""

from __future__ import annotations

from collections.abc import Sequence

from protocol.pfns import show_pfns as show

from .model import (
    IN_BALLOON,
    ISOLATED,
    LEAKED,
    LISTED,
    MIGRATING,
    NONE,
    PHASE_NAMES,
    STATE_NAMES,
    Guest,
    Isolation,
    Record,
    Since,
)
from .virtio import VirtioRules


class BalloonRules(VirtioRules):
    """``config.*``, ``balloon.*`` and ``compact.*`` records."""

    # -- config --------------------------------------------------------------------------------
    def _config_target(self, rec: Record) -> None:
        self._guest(rec).last_target = int(rec["num_pages"])

    def _config_actual(self, rec: Record) -> None:
        g = self._guest(rec)
        g.actual = actual = int(rec["actual"])
        if actual != g.num_pages:
            self._violation("actual-not-updated", rec, g.name,
                            f"driver wrote actual={actual} but its balloon holds "
                            f"{g.num_pages} (4 KiB units, from its fill/leak records)")
        g.actual_due = None

    # -- the balloon list ----------------------------------------------------------------------
    def _num_pages(self, g: Guest, rec: Record, change: int) -> None:
        want = g.num_pages + change
        got = int(rec["num_pages"])
        g.actual_due = g.actual_due or Since(int(rec["seq"]), float(rec["t"]))
        if got != want:
            self._violation("num-pages", rec, g.name,
                            f"{rec['event']} says num_pages={got}; the log's records add up "
                            f"to {want} (4 KiB units)")
        g.num_pages = got

    def _fill(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        if g.pending_fill is not None:
            self._violation("unexplained-inflate", rec, g.name,
                            f"a fill of {len(pages)} pages while the {len(g.pending_fill)} "
                            "pages of the previous fill were never inflated",
                            pfns=g.pending_fill[:8])
        self._move_all(g, rec, pages, NONE, LISTED, "fill_balloon put page {} on vb->pages")
        g.pending_fill = list(pages)
        g.filled += len(pages)
        self._num_pages(g, rec, len(pages) * g.ppp)

    def _leak(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        self._move_all(g, rec, pages, LISTED, LEAKED, "leak_balloon took page {} off vb->pages")
        g.pending_leak = list(pages)
        g.leaked += len(pages)
        self._num_pages(g, rec, -len(pages) * g.ppp)

    def _release(self, rec: Record) -> None:
        g = self._guest(rec)
        pages = self._pages(g, rec, rec["pfns"], False)
        if pages is None:
            return
        self._move_all(g, rec, pages, LEAKED, NONE, "release freed page {} to the page "
                       "allocator")
        self._use(g, rec, pages)
        g.released += len(pages)
        self._quiescent(g, rec)

    def _move_all(self, g: Guest, rec: Record, pages: Sequence[int], old: int, new: int,
                  what: str) -> None:
        """Move a batch of pages from driver state ``old`` to ``new`` (``move`` inlined: the
        per-page loop of fills, leaks and releases); report each page in another state."""
        drv, hc, bad, ppp, cnt = g.drv, g.hostcnt, g.bad, g.ppp, g.cnt
        into = IN_BALLOON[new]
        nbad = g.nbad
        moved = 0
        wrong: list[tuple[int, int]] | None = None
        for p in pages:
            s = drv[p]
            if s == old:
                moved += 1
            else:
                wrong = [*(wrong or ()), (p, s)]
                if s == new or (s == ISOLATED and new == LISTED):
                    continue  # (an isolated page stays where compaction will look for it)
                cnt[s] -= 1
                cnt[new] += 1
            drv[p] = new
            h = hc[p]
            b = h != ppp if into else h != 0
            if b != bad[p]:
                bad[p] = b
                nbad += 1 if b else -1
        cnt[old] -= moved
        cnt[new] += moved
        g.nbad = nbad
        for p, s in wrong or ():
            on_list = s == ISOLATED and new in (LISTED, LEAKED)
            self._violation("list-and-isolated" if on_list else "page-state", rec, g.name,
                            f"{what.format(p)}, but it is {STATE_NAMES[s]}", pfns=[p])
            if s == ISOLATED and new != LISTED:
                g.isolated_by.pop(p, None)

    def _remove(self, rec: Record) -> None:
        """virtballoon_remove: from ``start`` the driver leaks everything, whatever the target
        (and takes pages off its list before each leak record); ``done``, it has no target."""
        phase = str(rec["phase"])
        if phase not in ("start", "done"):
            raise ValueError(f"phase {phase!r}")
        self._guest(rec).removal = phase

    # -- compaction's moves --------------------------------------------------------------------
    def _isolate(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        g.isolations += 1
        p, worker = rec["pfn"], rec["worker"]
        if not 0 <= p < g.nr_pages:
            self._pages(g, rec, [p], False)
            return
        if g.drv[p] != LISTED:
            self._violation("page-state", rec, g.name, f"{worker} isolated page {p}, but it "
                            f"is {STATE_NAMES[g.drv[p]]}", pfns=[p], tasks=[worker])
        g.move(p, ISOLATED)
        g.isolated_by[p] = Isolation(worker, rec["mid"])

    def _putback(self, rec: Record) -> None:
        g = self._guest(rec)
        g.putbacks += 1
        p, worker = rec["pfn"], rec["worker"]
        if not 0 <= p < g.nr_pages:
            self._pages(g, rec, [p], False)
            return
        s = g.drv[p]
        if s != ISOLATED:
            kind = "list-and-isolated" if s == LISTED else "page-state"
            self._violation(kind, rec, g.name, f"{worker} put page {p} back on vb->pages, "
                            f"but it is {STATE_NAMES[s]}", pfns=[p], tasks=[worker])
        else:
            self._unisolate(g, rec, p, worker)
        g.move(p, LISTED)

    def _putback_lru(self, rec: Record) -> None:
        """An isolated balloon page went on the LRU (3.8's putback_movable_pages): the guest
        will reuse a page the host still holds, and the balloon never gets it back."""
        g = self._guest(rec)
        p, worker = rec["pfn"], rec["worker"]
        if not 0 <= p < g.nr_pages:
            self._pages(g, rec, [p], False)
            return
        self._violation("balloon-page-on-lru", rec, g.name,
                        f"{worker} put isolated balloon page {p} on the LRU "
                        "(putback_lru_page) instead of back on the balloon's list: it is "
                        f"{STATE_NAMES[g.drv[p]]} and the host still holds it", pfns=[p],
                        tasks=[worker])
        if g.drv[p] == ISOLATED:
            self._unisolate(g, rec, p, worker)
        g.move(p, NONE)

    def _unisolate(self, g: Guest, rec: Record, p: int, worker: str) -> None:
        """The worker that isolated ``p`` (with this migration id) is done with it."""
        owner = g.isolated_by.pop(p, None)
        mid = rec["mid"]
        if owner is not None and owner != Isolation(worker, mid):
            self._violation("migration-mismatch", rec, g.name,
                            f"{worker} (mid {mid}) finished with page {p}, which "
                            f"{owner.worker} isolated (mid {owner.mid})", pfns=[p],
                            tasks=[worker, owner.worker])

    def _migrate(self, rec: Record) -> None:
        g = self._by_actor.get(rec["actor"]) or self._guest(rec)
        g.migrations += 1
        old, new, hi, hd = rec["old"], rec["new"], rec["hs_inflate"], rec["hs_deflate"]
        worker = rec["worker"]
        if not (0 <= old < g.nr_pages and 0 <= new < g.nr_pages):
            self._pages(g, rec, [old, new], False)
            return
        m = g.migration
        if m is None or m.new != new or m.hs_inflate != hi or m.old != old or m.hs_deflate != hd:
            shown = "none" if m is None else (f"new {m.new} (hs {m.hs_inflate}), old "
                                              f"{m.old if m.old >= 0 else '?'} "
                                              f"(hs {m.hs_deflate})")
            self._violation("migration-mismatch", rec, g.name,
                            f"{worker} migrated page {old} -> {new} (hs {hi}/{hd}); the log "
                            f"shows this migration in progress: {shown}", pfns=[old, new],
                            tasks=[worker], hs=[hi, hd])
            if g.drv[new] == NONE:
                g.move(new, LISTED)
            if g.drv[old] == ISOLATED:
                g.move(old, MIGRATING)
        for h in (hi, hd):
            if h in g.hs:
                self._violation("migration-mismatch", rec, g.name,
                                f"{worker} reports page {old} migrated but hs {h} is "
                                f"still {PHASE_NAMES[g.hs[h].phase]}", pfns=[old, new],
                                hs=[h])
        if g.drv[old] == MIGRATING:
            owner = g.isolated_by.pop(old, None)
            if owner is not None and owner != Isolation(worker, rec["mid"]):
                g.isolated_by[old] = owner
                self._unisolate(g, rec, old, worker)
            g.move(old, NONE)
        g.migration = None
        self._use(g, rec, [old])  # the old page goes back to the page allocator
        self._quiescent(g, rec)

    def _compact_start(self, rec: Record) -> None:
        self._guest(rec).compaction[str(rec["worker"])] = Since(int(rec["seq"]),
                                                                 float(rec["t"]))

    def _compact_end(self, rec: Record) -> None:
        g = self._guest(rec)
        worker = str(rec["worker"])
        g.compaction.pop(worker, None)
        left = sorted(p for p, i in g.isolated_by.items() if i.worker == worker)
        if left:
            self._violation("isolated-at-run-end", rec, g.name,
                            f"{worker}'s compaction run ended with pages {show(left)} still "
                            "isolated (neither migrated nor put back)", pfns=left,
                            tasks=[worker])
            for p in left:
                del g.isolated_by[p]
