"""Time series from a session log: the ``sample.guest`` and ``sample.host`` records, by source.

Pure reading (``vballoon series`` prints them, ``vballoon plot`` draws them): one column per
field, values in MiB where the field is memory, so a guest with 64 KiB pages and one with
4 KiB pages share an axis. Guest page sizes come from the log header's scenario.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from actors.sim import schema
from run.logtools.logread import LogError, records

MIB: Final = 1 << 20
#: The guest sample's fields counted in 4 KiB pages (the device's unit); ``free`` is in guest
#: pages.
_HOST_PAGES: Final = ("target", "actual", "rss")
#: Columns of a guest's series, in order (t, then what ``sample.guest`` carries, derived last).
GUEST_COLUMNS: Final = ("t", "free_mib", "target_mib", "actual_mib", "rss_mib", "thp_alloc",
                        "thp_fallback", "thp_success", "compact_stall", "compact_success",
                        "compact_fail", "balloon_migrated")
HOST_COLUMNS: Final = ("t", "free_mib", "total_mib", "pressure")
#: The columns of a flat row (``rows``, the CSV, the table): t, source, then every field.
ROW_COLUMNS: Final = ("t", "source", *dict.fromkeys([*HOST_COLUMNS[1:], *GUEST_COLUMNS[1:]]))


@dataclass
class Series:
    """Every sample of a log: the host's columns, and each guest's, by guest name."""

    scenario: str = ""
    seed: int = 0
    host: dict[str, list[float]] = field(
        default_factory=lambda: {c: [] for c in HOST_COLUMNS})
    guests: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not self.host["t"] and not self.guests


def _page_sizes(scenario: Mapping[str, Any]) -> dict[str, int]:
    """Guest name -> page size in bytes, from a header's resolved scenario."""
    guests = scenario.get("guests") or []
    if guests:
        return {g["name"]: int(g["page_size"]) for g in guests}
    return {"guest0": int(scenario.get("guest", {}).get("page_size", 4096))}


def read_series(path: Path) -> Series:
    """The samples of the log at ``path`` (LogError if it is not a readable log)."""
    out = Series()
    sizes: dict[str, int] = {}
    for _, rec in records(path):
        event = rec["event"]
        if event == schema.SESSION_START:
            sc = rec.get("scenario") or {}
            out.scenario, out.seed = str(sc.get("name", "")), int(rec.get("seed", 0))
            sizes = _page_sizes(sc)
        elif event == schema.SAMPLE_HOST:
            h = out.host
            h["t"].append(rec["t"])
            h["free_mib"].append(rec["free"] * 4096 / MIB)
            h["total_mib"].append(rec["total"] * 4096 / MIB)
            h["pressure"].append(rec["pressure"])
        elif event == schema.SAMPLE_GUEST:
            _add_guest(out, rec, sizes)
    if out.empty():
        raise LogError(0, "no sample.guest or sample.host records (a log from before time "
                          "series, or a session that ended before its first snapshot)",
                       str(path))
    return out


def _add_guest(out: Series, rec: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    name = rec["actor"]
    cols = out.guests.setdefault(name, {c: [] for c in GUEST_COLUMNS})
    cols["t"].append(rec["t"])
    cols["free_mib"].append(rec["free"] * sizes.get(name, 4096) / MIB)
    for k in _HOST_PAGES:
        cols[f"{k}_mib"].append(rec[k] * 4096 / MIB)
    tries = rec["thp_alloc"] + rec["thp_fallback"]
    cols["thp_success"].append(rec["thp_alloc"] / tries if tries else float("nan"))
    for k in ("thp_alloc", "thp_fallback", "compact_stall", "compact_success", "compact_fail",
              "balloon_migrated"):
        cols[k].append(rec[k])


def rows(series: Series) -> list[dict[str, Any]]:
    """Every sample as one flat row (``source`` = host or the guest), in time order."""
    out: list[dict[str, Any]] = []
    h = series.host
    for i, t in enumerate(h["t"]):
        out.append({"t": t, "source": "host", **{c: h[c][i] for c in HOST_COLUMNS[1:]}})
    for name, cols in series.guests.items():
        for i, t in enumerate(cols["t"]):
            out.append({"t": t, "source": name, **{c: cols[c][i] for c in GUEST_COLUMNS[1:]}})
    out.sort(key=lambda r: (r["t"], r["source"] != "host", r["source"]))
    return out


def to_csv(series: Series) -> str:
    """The rows as CSV: t, source, then every host and guest column (blank where n/a)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, ROW_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows(series):
        w.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"  # NaN (no THP fault yet): blank
    return v
