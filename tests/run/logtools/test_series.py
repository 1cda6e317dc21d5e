"""Time series from a log (run.logtools.series) and their plot (run.logtools.plot)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from run.console.cli import main
from run.logtools.logread import LogError
from run.logtools.plot import PlotError, plot
from run.logtools.series import GUEST_COLUMNS, read_series, to_csv
from run.session import scenario as scen
from run.session.session import run_session


@pytest.fixture(scope="module")
def three_guests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short three-guests log: three guests, host ticks, the balloon moving."""
    log = tmp_path_factory.mktemp("series") / "three.jsonl"
    run_session(scen.load("three-guests", ["duration=60s"]), seed=0, log_path=log)
    return log


def test_series_has_every_guest_and_the_host_at_every_tick(three_guests: Path) -> None:
    """One guest sample per snapshot per guest and a host sample per policy tick, in MiB;
    the balloon's target and actual move (so the series is not a flat line)."""
    s = read_series(three_guests)
    records = [orjson.loads(line) for line in three_guests.read_bytes().splitlines()]
    snapshots = sum(1 for r in records if r["event"] == "mem.snapshot")
    ticks = sum(1 for r in records if r["event"] == "policy.decision")
    assert sorted(s.guests) == ["batch", "db", "web"]
    assert sum(len(c["t"]) for c in s.guests.values()) == snapshots
    assert len(s.host["t"]) == ticks
    db = s.guests["db"]
    assert set(db) == set(GUEST_COLUMNS)
    assert max(db["target_mib"]) > 0 and max(db["actual_mib"]) > 0
    total = s.host["total_mib"][0]
    assert total == pytest.approx(1280)  # the scenario's host memory


def test_csv_has_a_row_per_sample(three_guests: Path) -> None:
    s = read_series(three_guests)
    table = list(csv.DictReader(io.StringIO(to_csv(s))))
    assert len(table) == len(s.host["t"]) + sum(len(c["t"]) for c in s.guests.values())
    assert {r["source"] for r in table} == {"host", "batch", "db", "web"}
    assert [float(r["t"]) for r in table] == sorted(float(r["t"]) for r in table)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_draws_every_panel(three_guests: Path, tmp_path: Path, suffix: str) -> None:
    """The figure is written in the suffix's format, is not tiny, and all six panels have
    lines (a blank figure would draw none)."""
    out = tmp_path / f"three{suffix}"
    assert plot(read_series(three_guests), out) == 6
    data = out.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000
    else:
        assert b"<svg" in data[:2000] and data.count(b"<path") > 50


def test_plot_refuses_other_formats_and_logs_without_samples(three_guests: Path,
                                                            tmp_path: Path) -> None:
    with pytest.raises(PlotError, match=re.escape("write .png or .svg, not '.pdf'")):
        plot(read_series(three_guests), tmp_path / "x.pdf")
    header = three_guests.read_bytes().splitlines()[0]
    bare = tmp_path / "bare.jsonl"
    bare.write_bytes(header + b"\n")
    with pytest.raises(LogError, match=re.escape("no sample.guest or sample.host records")):
        read_series(bare)


def test_series_and_plot_commands(three_guests: Path, tmp_path: Path) -> None:
    """The real entry point: series prints, --csv writes CSV, plot writes the image; a bad
    suffix is one line and exit 2, before anything is written."""
    r = CliRunner().invoke(main, ["series", str(three_guests), "--csv"])
    assert r.exit_code == 0 and r.output.startswith("t,source,")
    png = tmp_path / "p.png"
    r = CliRunner().invoke(main, ["plot", str(three_guests), "-o", str(png)])
    assert r.exit_code == 0 and "6 panels, 3 guest(s)" in r.output and png.stat().st_size
    r = CliRunner().invoke(main, ["plot", str(three_guests), "-o", str(tmp_path / "p.gif")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.gif").exists()


def test_comparison_plot_has_a_panel_per_metric(tmp_path: Path) -> None:
    """compare's --plot: a panel per metric, each with its variants' bars and seed dots."""
    from run.logtools.plot import plot_comparison

    metrics = {k: {v: {"mean": m, "stdev": 0.5, "values": [m - 0.5, m + 0.5]}
                   for v, m in (("legacy", 1.0), ("fixed", 4.0))}
               for k in ("order9", "thp", "migrated", "violations")}
    labels = {"order9": "free order-9 blocks", "thp": "THP success", "migrated": "migrated",
              "violations": "violations", "absent": "not in the results"}
    out = tmp_path / "cmp.svg"
    assert plot_comparison(metrics, labels, ["legacy", "fixed"], "t", out) == 4
    assert out.read_bytes().count(b"<path") > 20


def test_compare_plot_refuses_a_bad_suffix_before_running(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["compare", "--seeds", "1", "--plot", str(tmp_path / "c.bmp")])
    assert r.exit_code == 2 and "--plot" in r.output and "write .png or .svg" in r.output
