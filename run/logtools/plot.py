"""``vballoon plot`` and ``compare --plot``: figures drawn with matplotlib (Agg: no display).

One panel per quantity, one line per guest: the balloon's target (dashed) against its actual,
each guest's free memory, the host's free memory, each guest's RSS on the host, the THP fault
success rate so far, and balloon migrations and direct compaction stalls so far. The format
follows the file's suffix (``.png`` or ``.svg``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from run.logtools.series import Series

FORMATS: Final = (".png", ".svg")


class PlotError(ValueError):
    """The plot cannot be written as asked (a suffix matplotlib is not asked to write)."""


def plot(series: Series, path: Path) -> int:
    """Draw ``series`` into ``path``; the number of panels drawn with data."""
    check_target(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True, layout="constrained")
    panels = [
        (axes[0][0], "balloon: target (dashed) vs actual", "MiB"),
        (axes[0][1], "guest free memory", "MiB"),
        (axes[1][0], "host free memory", "MiB"),
        (axes[1][1], "guest RSS on the host", "MiB"),
        (axes[2][0], "THP fault success (so far)", "fraction"),
        (axes[2][1], "balloon migrations, compaction stalls (so far)", "count"),
    ]
    for ax, title, unit in panels:
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
    for name, c in series.guests.items():
        t = c["t"]
        (line,) = axes[0][0].plot(t, c["actual_mib"], label=name)
        axes[0][0].plot(t, c["target_mib"], linestyle="--", color=line.get_color())
        axes[0][1].plot(t, c["free_mib"], label=name)
        axes[1][1].plot(t, c["rss_mib"], label=name)
        axes[2][0].plot(t, c["thp_success"], label=name)
        (mig,) = axes[2][1].plot(t, c["balloon_migrated"], label=f"{name} migrated")
        axes[2][1].plot(t, c["compact_stall"], linestyle=":", color=mig.get_color(),
                        label=f"{name} stalls")
    axes[2][0].set_ylim(-0.02, 1.02)
    if series.host["t"]:
        axes[1][0].plot(series.host["t"], series.host["free_mib"], label="host",
                        color="black")
    drawn = 0
    for ax, _, _ in panels:
        if ax.lines:
            drawn += 1
            ax.legend(fontsize=8, loc="best")
    for ax in axes[2]:
        ax.set_xlabel("virtual time (s)")
    fig.suptitle(f"{series.scenario} seed {series.seed}")
    fig.savefig(path)
    plt.close(fig)
    return drawn


def check_target(path: Path) -> None:
    """Refuse, before anything runs, a plot file matplotlib is not asked to write."""
    if path.suffix.lower() not in FORMATS:
        raise PlotError(f"{path}: write .png or .svg, not {path.suffix or 'no suffix'!r}")


def plot_comparison(metrics: dict[str, dict[str, dict[str, Any]]],
                    labels: dict[str, str], variants: list[str], title: str,
                    path: Path) -> int:
    """``compare`` / ``policies compare`` results: one panel per metric (``labels``: key ->
    title), a bar per variant at its mean with the spread (sample standard deviation) as
    its error bar, and each seed's value as a dot; the number of panels drawn."""
    check_target(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in labels if k in metrics]
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), layout="constrained",
                             squeeze=False)
    drawn = 0
    for i, ax in enumerate(ax for row in axes for ax in row):
        if i >= len(keys):
            ax.set_visible(False)
            continue
        key = keys[i]
        row = metrics[key]
        means = [row[v]["mean"] for v in variants]
        spreads = [row[v]["stdev"] for v in variants]
        xs = list(range(len(variants)))
        ax.bar(xs, means, yerr=spreads, capsize=4, alpha=0.6)
        for x, v in zip(xs, variants, strict=True):
            values = row[v].get("values") or []
            ax.plot([x] * len(values), values, "k.", markersize=4)
        ax.set_xticks(xs, variants, fontsize=8)
        ax.set_title(labels[key], fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        drawn += 1
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return drawn
