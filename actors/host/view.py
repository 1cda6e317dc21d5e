"""What a host policy sees: an immutable snapshot of the host and of every guest it runs.

Sizes are 4 KiB pages, the virtio-balloon unit. A guest's **memory** is what it keeps
(``ram_pages - actual``: QEMU's "logical size", MOM's ``balloon_cur``, Proxmox's ``balloon``);
a **target** is a *balloon size* (``num_pages`` in config space). Policies that think in guest
memory, as MOM, Proxmox and squeezed do, convert with ``GuestView.balloon_for(memory)``. The
host never lets a guest keep less than its ``floor_pages`` (the safety shell clamps the balloon
to ``ram_pages - floor_pages``); ``max_pages`` is the most a policy should give it (its dynamic
maximum, RAM unless the scenario says otherwise).

Times are host (session) seconds. ``history`` holds the last stats readings, each stamped with
the host time it was read, for moving averages.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

MIB = 256  # 4 KiB pages per MiB

SampleField = Literal["actual", "free", "total", "rss", "memory"]


def hyperv_floor(total_pages: int) -> int:
    """The least memory to leave a guest of ``total_pages`` (Linux hv_balloon's
    compute_balloon_floor(), in 4 KiB pages): a continuous piecewise-linear function,
    8 MiB + total/2 below 128 MiB, 40 MiB + total/4 below 512 MiB, 104 MiB + total/8 below
    2 GiB, 232 MiB + total/16 below 8 GiB, 488 MiB + total/32 above."""
    if total_pages < 128 * MIB:
        return 8 * MIB + (total_pages >> 1)
    if total_pages < 512 * MIB:
        return 40 * MIB + (total_pages >> 2)
    if total_pages < 2048 * MIB:
        return 104 * MIB + (total_pages >> 3)
    if total_pages < 8192 * MIB:
        return 232 * MIB + (total_pages >> 4)
    return 488 * MIB + (total_pages >> 5)


@dataclass(frozen=True, slots=True)
class GuestSample:
    """One stats reading of a guest, stamped with the host time it was read (4 KiB pages)."""

    time: float
    actual: int  # balloon size when read
    memory: int  # ram - actual
    free: int | None  # MemFree reported by the guest (None: tag not reported)
    total: int | None  # MemTotal reported by the guest
    rss: int  # host-resident pages of the guest when read


@dataclass(frozen=True, slots=True)
class HostSample:
    """The host's free memory at one policy tick."""

    time: float
    free_pages: int


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


@dataclass(frozen=True, slots=True)
class GuestView:
    """What the host knows about one guest (4 KiB pages; see the module docstring)."""

    name: str
    ram_pages: int
    target: int
    actual: int
    stats: Mapping[str, int]  # latest stats by tag name (bytes for memory tags)
    stats_time: float | None  # host time of that reading (None: no stats yet)
    floor_pages: int = 0
    max_pages: int = 0  # 0: ram_pages
    shares: int = 1000
    rss_pages: int = 0
    history: tuple[GuestSample, ...] = ()
    progressing: bool = True  # the shell's tracker: settled, or moving fast enough
    stalled: bool = False  # the shell backed off after a stall and holds the balloon down
    #: False when the guest's latest stats were impossible (free above total, above RAM,
    #: u64-max): ``stats`` is then empty, and the reading is not in ``history``.
    stats_trusted: bool = True

    @property
    def memory(self) -> int:
        """What the guest keeps now: RAM minus the balloon's actual size."""
        return self.ram_pages - self.actual

    @property
    def max_memory(self) -> int:
        """The most memory a policy should give this guest."""
        return self.max_pages or self.ram_pages

    @property
    def max_balloon(self) -> int:
        """The largest balloon the shell allows (RAM minus the floor)."""
        return max(0, self.ram_pages - self.floor_pages)

    @property
    def free_pages(self) -> int | None:
        """The guest's latest MemFree in 4 KiB pages (None without stats)."""
        free = self.stats.get("memfree")
        return None if free is None else free // 4096

    def balloon_for(self, memory: float) -> int:
        """The balloon target that leaves the guest ``memory`` pages (truncated to a page)."""
        return self.ram_pages - int(memory)

    def mean(self, field: SampleField, last: int | None = None) -> float | None:
        """Moving average of ``field`` over the last ``last`` stats readings (all if None);
        None if no reading has it."""
        samples = self.history if last is None else self.history[-last:] if last else ()
        return _mean([float(v) for s in samples if (v := getattr(s, field)) is not None])


@dataclass(frozen=True, slots=True)
class HostView:
    """The immutable input of every policy decision."""

    time: float
    total_pages: int
    free_pages: int  # total minus every guest's RSS (negative when overcommitted)
    guests: tuple[GuestView, ...]
    history: tuple[HostSample, ...] = ()  # free pages at the last policy ticks, oldest first

    @property
    def used_pages(self) -> int:
        return self.total_pages - self.free_pages

    @property
    def pressure(self) -> float:
        """Used over total host memory (above 1.0: overcommitted, the host would swap)."""
        return self.used_pages / self.total_pages if self.total_pages else 0.0

    def guest(self, name: str) -> GuestView:
        for g in self.guests:
            if g.name == name:
                return g
        raise KeyError(name)

    def mean_free(self, last: int | None = None) -> float:
        """Moving average of host free pages over the last ``last`` ticks (now if no history)."""
        samples = self.history if last is None else self.history[-last:] if last else ()
        m = _mean([float(s.free_pages) for s in samples])
        return float(self.free_pages) if m is None else m
