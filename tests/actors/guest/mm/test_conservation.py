"""Page conservation after tiny sessions built from drawn parameters (Hypothesis).

Every page of the guest is exactly one of: free in the buddy allocator, allocated (apps'
anon/page-cache/kernel pages, THPs), on the balloon driver's list, isolated by compaction, or
in flight between two of those (a balloon page being released or a migration's old page on its
way back to the buddy), and nothing is in flight once the session is quiescent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from actors.guest.mm import pages as P
from actors.sim import schema
from run.session import scenario as scen
from run.session.logs import FlightRecorder
from run.session.session import run_session

from .compaction_helpers import the_guest


def _secs(x: float) -> str:
    return f'"{x:.3f}s"'


@st.composite
def tiny_sessions(draw: st.DrawFn) -> tuple[int, list[str]]:
    """(seed, overrides) of a 16–32 MiB compact-storm with drawn workload, balloon targets,
    compact_memory times and worker count."""
    seed = draw(st.integers(0, 2**16))
    duration = draw(st.sampled_from([3.0, 4.0]))
    steps_at = draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.5]), min_size=1,
                             max_size=4, unique=True))
    steps = [f'["{t}s", "{draw(st.integers(0, 10)) * 5}%"]' for t in sorted(steps_at)]
    at = draw(st.lists(st.integers(200, int(duration * 1000) - 300), max_size=3))
    overrides = [
        f"duration={duration}s",
        f"guest.driver={draw(st.sampled_from(['legacy', 'fixed']))}",
        f"guest.memory={draw(st.sampled_from(['16MiB', '32MiB']))}",
        f"guest.preempt={draw(st.sampled_from([0.0, 0.3]))}",
        f"workload.apps={draw(st.integers(1, 3))}",
        f"workload.fill={draw(st.sampled_from([0.2, 0.4, 0.6, 0.8]))}",
        f"workload.churn={draw(st.sampled_from([0.2, 0.5, 0.8]))}",
        f"workload.thp_rate={draw(st.sampled_from([0.0, 0.1, 0.3]))}",
        f"workload.drop_at={draw(st.sampled_from([0.2, 0.5, 0.8]))}",
        f"host.policy.params.steps=[{', '.join(steps)}]",
        f"compaction.at=[{', '.join(_secs(ms / 1000) for ms in sorted(at))}]",
        f"compaction.workers={draw(st.integers(1, 6))}",
        f"compaction.direct={draw(st.sampled_from(['true', 'false']))}",
        f"compaction.kcompactd_interval={draw(st.sampled_from(['0s', '1.5s']))}",
    ]
    return seed, overrides


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_sessions())
def test_every_page_is_accounted_for(params: tuple[int, list[str]]) -> None:
    """At the end of any tiny session: no violation; owner counts sum to the guest's pages;
    free-owned pages == zone free count; balloon-owned pages == driver list + isolated + in
    flight, with nothing in flight when quiescent; with no compaction running, no page is left
    PG_isolated or captured by a free scanner and the isolated count matches the flags."""
    seed, overrides = params
    note(f"seed={seed} overrides={overrides}")
    rec = FlightRecorder()
    out = run_session(scen.load("compact-storm", overrides), seed=seed, recorder=rec)
    s: dict[str, Any] = out.summary
    assert out.reason == "completed", out.error
    assert s["violations"] == []
    guest = the_guest(out)
    counts = guest.owner_counts()
    assert sum(counts.values()) == guest.frames.nr_pages
    assert counts["free"] == guest.zone.free_pages == s["guest"]["free_pages"]
    b = guest.balloon
    assert b is not None and out.session is not None
    events = Counter(r["event"] for r in rec.records)
    compacting = events[schema.COMPACT_START] - events[schema.COMPACT_END]
    in_flight = counts["balloon"] - len(b.pages) - b.isolated()
    note(f"owners={counts} list={len(b.pages)} isolated={b.isolated()} compacting={compacting}")
    assert in_flight >= 0
    if compacting == 0:
        assert b.isolated() == len(guest.isolated_pfns())
        assert not any(fl & P.PG_isolated for fl in guest.frames.flags)
        assert counts["compact_free"] == 0
        if out.session.quiescent(guest):
            assert in_flight == 0
            assert b.num_pages.atomic_read() == len(b.pages) * b.PAGES_PER_PAGE
            assert guest.meminfo.totalram == guest.frames.nr_pages - len(b.pages)
