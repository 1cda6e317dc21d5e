"""The built-in host policies (REFERENCE §5), each a faithful small port with its defaults.

Every policy returns balloon targets in 4 KiB pages; those that reason in guest memory (MOM,
Proxmox, squeezed) compute a memory size and convert with ``GuestView.balloon_for``
(``ram - int(memory)``: memory is truncated to whole pages). A guest's ``floor_pages`` plays the
role of each system's guaranteed minimum (MOM's ``balloon_min``, Proxmox's ``balloon``,
squeezed's dynamic-min) and ``max_memory`` of its maximum.

- ``static``: one balloon size for every guest.
- ``schedule``: a timeline of balloon sizes.
- ``mom``: oVirt MOM's vdsm balloon rules.
- ``proxmox``: Proxmox VE's auto-ballooning (``PVE::AutoBalloon::compute_alg1``).
- ``squeezed``: XenServer squeezed's single fraction for every guest.
- ``pressure``: steps on host and guest pressure levels, as QEMU's auto-ballooning proposal.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

from actors.host.policy import (
    GuestView,
    HostPolicy,
    HostView,
    PolicyError,
    balloon_pages,
    duration_value,
)


class StaticPolicy(HostPolicy):
    """One fixed balloon target for every guest."""

    name = "static"
    description = "a fixed balloon size for every guest (target: size, % of RAM or pages)"
    params: ClassVar[dict[str, Any]] = {"target": 0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        balloon_pages(self.name, "target", self.config["target"], 1)  # validate early

    def decide(self, view: HostView) -> Mapping[str, int]:
        return {g.name: balloon_pages(self.name, "target", self.config["target"], g.ram_pages)
                for g in view.guests}


class SchedulePolicy(HostPolicy):
    """A timeline of targets: ``steps = [["5s", "50%"], ["30s", "0"]]``."""

    name = "schedule"
    description = "a timeline of balloon targets, e.g. inflate to 50% at 5s, deflate at 30s"
    params: ClassVar[dict[str, Any]] = {"steps": []}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        steps = self.config["steps"]
        if not isinstance(steps, list):
            raise PolicyError(f"policy {self.name!r}: parameter steps: expected a list of "
                              "[time, target] pairs")
        parsed: list[tuple[float, Any]] = []
        for i, step in enumerate(steps):
            if not isinstance(step, list) or len(step) != 2:
                raise PolicyError(f"policy {self.name!r}: parameter steps[{i}]: expected "
                                  f"[time, target], got {step!r}")
            at = duration_value(self.name, f"steps[{i}][0]", step[0])
            balloon_pages(self.name, f"steps[{i}][1]", step[1], 1)  # validate early
            parsed.append((at, step[1]))
        if any(b <= a for (a, _), (b, _) in itertools.pairwise(parsed)):
            raise PolicyError(f"policy {self.name!r}: parameter steps: times must increase")
        self.steps = parsed

    def decide(self, view: HostView) -> Mapping[str, int]:
        current: Any = None
        for at, target in self.steps:
            if view.time + 1e-9 >= at:
                current = target
        if current is None:
            return {}
        return {g.name: balloon_pages(self.name, "target", current, g.ram_pages)
                for g in view.guests}


class MomPolicy(HostPolicy):
    """oVirt MOM's balloon rules (vdsm ``balloon.rules``), in 4 KiB pages.

    ``host_free = mean(host free over the last `window` ticks) / host total``. Under pressure
    (``host_free < pressure_threshold``) every guest shrinks to
    ``max(cur * (1 - max_balloon_change_percent), floor)`` where
    ``floor = max(min, used + guest_free * cur)``, ``used = mean(memory) - mean(MemFree)`` over
    its last `window` stats readings and ``guest_free = min_guest_free_percent * host_free /
    pressure_threshold`` (``host_free - 0.05`` when ``host_free <= pressure_critical``: the
    guest is pushed to swap). Otherwise every ballooned guest grows to
    ``min(cur * (1 + max_balloon_change_percent), max)``, at least
    ``used + min_guest_free_percent * max`` (capped at ``max``). Changes not larger than
    ``min_balloon_change_percent * cur`` are skipped; a shrink never grows the guest. A guest
    without stats yet is left alone. MOM samples every 5 s and averages 10 samples; vballoon
    samples the host once per decision (default every 10 s), so the default ``window`` of 5
    covers the same 50 s.
    """

    name = "mom"
    description = "oVirt MOM: shrink all guests 5% under host pressure (<20% free), else grow 5%"
    default_interval = 10.0
    params: ClassVar[dict[str, Any]] = {
        "pressure_threshold": 0.20, "pressure_critical": 0.05, "min_guest_free_percent": 0.20,
        "max_balloon_change_percent": 0.05, "min_balloon_change_percent": 0.0025, "window": 5}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.threshold = self.fraction("pressure_threshold")
        self.critical = self.fraction("pressure_critical")
        self.min_guest_free = self.fraction("min_guest_free_percent")
        self.max_change = self.fraction("max_balloon_change_percent")
        self.min_change = self.fraction("min_balloon_change_percent")
        self.window = int(self.number("window", low=1, high=1000))
        if self.threshold == 0:
            raise self._bad("pressure_threshold", "must be > 0")

    def decide(self, view: HostView) -> Mapping[str, int]:
        host_free = view.mean_free(self.window) / view.total_pages
        out: dict[str, int] = {}
        for g in view.guests:
            size = self.shrink(g, host_free) if host_free < self.threshold else self.grow(g)
            if size is not None:
                out[g.name] = g.balloon_for(size)
        return out

    def _used(self, g: GuestView) -> float | None:
        cur, unused = g.mean("memory", self.window), g.mean("free", self.window)
        return None if cur is None or unused is None else cur - unused

    def _big_enough(self, cur: int, new: float) -> bool:
        return abs(new - cur) > self.min_change * cur

    def shrink(self, g: GuestView, host_free: float) -> float | None:
        """shrink_guest: the new memory size, or None to leave the guest alone."""
        used = self._used(g)
        if used is None:
            return None
        cur = g.memory
        if host_free <= self.critical:
            guest_free = -0.05 + host_free  # force the guest to swap
        else:
            guest_free = self.min_guest_free * (host_free / self.threshold)
        floor = max(g.floor_pages, used + guest_free * cur)
        size = max(cur * (1 - self.max_change), floor)
        return size if size <= cur and self._big_enough(cur, size) else None

    def grow(self, g: GuestView) -> float | None:
        """grow_guest: the new memory size, or None to leave the guest alone."""
        cur, top = g.memory, g.max_memory
        if cur >= top:
            return None
        used = self._used(g)
        size = min(cur * (1 + self.max_change), top)
        if used is not None:
            size = min(max(size, used + self.min_guest_free * top), top)
        return size if self._big_enough(cur, size) else None


class ProxmoxPolicy(HostPolicy):
    """Proxmox VE auto-ballooning (pvestatd + ``PVE::AutoBalloon::compute_alg1``), in pages.

    Every round the host aims at ``target_usage`` of its memory:
    ``goal = int(total * target_usage - used)``. A positive goal is handed out to guests, a
    negative one taken from them, in proportion to their ``shares`` above each guest's
    minimum: ``desired = min + int(alloc / shares_total * shares)`` where ``alloc`` is what the
    guests hold above their minimums plus the goal, clamped to ``[min, max]``; each guest moves
    at most ``max_change`` towards ``desired`` per round, and the distribution repeats over the
    guests that have not reached theirs until the goal is spent. Growth goes first to guests
    under pressure (MemFree at most a quarter of their minimum, or no stats), shrinking first to
    guests with enough free memory; if that makes no progress, to every guest. Goals within
    ``min_goal`` of zero do nothing. Like Proxmox, a guest without a minimum (floor 0) or with
    0 shares is not auto-ballooned.
    """

    name = "proxmox"
    description = "Proxmox VE: keep host usage at 80%, share-proportional, <=100MiB/VM/round"
    default_interval = 10.0
    params: ClassVar[dict[str, Any]] = {"target_usage": 0.80, "max_change": "100MiB",
                                        "min_goal": "10MiB"}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.target_usage = self.fraction("target_usage")
        self.max_change = self.pages("max_change")
        self.min_goal = self.pages("min_goal")

    def decide(self, view: HostView) -> Mapping[str, int]:
        goal = int(view.total_pages * self.target_usage - view.used_pages)
        vms = {g.name: g for g in view.guests if g.floor_pages and g.shares}
        everyone = list(vms)
        pressure, roomy = [], []
        for name, g in vms.items():
            free = g.free_pages
            if free and free > g.floor_pages * 0.25 and g.memory >= g.floor_pages:
                roomy.append(name)
            else:
                pressure.append(name)
        res: dict[str, int] = {}
        if goal > self.min_goal:
            rest = self._change(vms, res, pressure, goal)
            if rest >= goal:  # no progress: consider every guest
                self._change(vms, res, everyone, rest)
        elif goal < -self.min_goal:
            rest = self._change(vms, res, roomy, goal)
            if rest <= goal:
                self._change(vms, res, everyone, rest)
        return {name: vms[name].balloon_for(memory) for name, memory in res.items()
                if memory != vms[name].memory}

    def _change(self, vms: dict[str, GuestView], res: dict[str, int], ids: list[str],
                amount: int) -> int:
        """compute_alg1's change_func: spread ``amount`` pages over ``ids``; returns the rest."""
        rest, repeat, progress = amount, True, 1
        done: set[str] = set()
        while rest and repeat and progress:
            repeat, progress = False, 0
            live = [i for i in ids if i not in done]
            if not live:
                break
            shares_total = sum(vms[i].shares for i in live)
            alloc_new = sum(res.get(i, vms[i].memory) - vms[i].floor_pages for i in live) + rest
            changes = 0
            for i in live:
                g = vms[i]
                lo, hi, cur = g.floor_pages, g.max_memory, g.memory
                desired = lo + int(alloc_new / shares_total * g.shares)
                if desired > hi:
                    desired, repeat = hi, True
                elif desired < lo:
                    desired, repeat = lo, True
                if amount > 0 and desired > cur:  # grow
                    size = min(cur + self.max_change, desired)
                elif desired < cur:  # shrink
                    size = max(cur - self.max_change, desired)
                else:
                    done.add(i)
                    continue
                if size != cur:
                    change = size - res.get(i, cur)
                    res[i] = size
                    if change:
                        changes += change
                        progress += abs(size - cur)
                        repeat = True
            rest -= changes
        return rest


class SqueezedPolicy(HostPolicy):
    """XenServer squeezed: one fraction γ of every guest's dynamic range, free before grant.

    Each guest gets ``min + γ * (max - min)`` of memory, one γ in [0, 1] for all, the largest
    such that the guests fit in ``host total - reserve`` (squeezed budgets allocations, not
    RSS: it never overcommits). A guest that has not reached its target and has not moved for
    ``stuck_after`` is *stuck*: its current memory is taken as fixed and it is left out of γ.
    Targets that free memory (a larger balloon) are sent first; targets that grant memory wait
    until no guest is still freeing (no guest's actual below its target).
    """

    name = "squeezed"
    description = "XenServer squeezed: one fraction for all guests, stuck-guest exclusion, " \
                  "free before grant"
    default_interval = 1.0
    params: ClassVar[dict[str, Any]] = {"reserve": "0", "stuck_after": "5s",
                                        "tolerance": "1MiB"}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.reserve = self.pages("reserve")
        self.stuck_after = self.duration("stuck_after")
        self.tolerance = self.pages("tolerance")
        self._moved: dict[str, tuple[float, int]] = {}  # guest -> (time it last moved, actual)

    def stuck(self, g: GuestView, now: float) -> bool:
        """No progress towards an unreached target for ``stuck_after``."""
        last = self._moved.get(g.name)
        if last is None or last[1] != g.actual or abs(g.target - g.actual) <= self.tolerance:
            self._moved[g.name] = (now, g.actual)
            return False
        return now - last[0] >= self.stuck_after

    def decide(self, view: HostView) -> Mapping[str, int]:
        stuck = {g.name for g in view.guests if self.stuck(g, view.time)}
        live = [g for g in view.guests if g.name not in stuck]
        budget = view.total_pages - self.reserve - sum(
            g.memory for g in view.guests if g.name in stuck)
        low = sum(g.floor_pages for g in live)
        span = sum(g.max_memory - g.floor_pages for g in live)
        gamma = 1.0 if span <= 0 else min(1.0, max(0.0, (budget - low) / span))
        want = {g.name: g.balloon_for(g.floor_pages + gamma * (g.max_memory - g.floor_pages))
                for g in live}
        freeing = {n: t for n, t in want.items() if t > view.guest(n).target}
        granting = {n: t for n, t in want.items() if t < view.guest(n).target}
        still_freeing = any(g.actual < g.target - self.tolerance for g in live)
        if freeing or still_freeing:
            return freeing
        return granting


class PressurePolicy(HostPolicy):
    """Steps on pressure levels, as QEMU's automatic-ballooning proposal (2013).

    The host's level comes from its free fraction: ``low`` below 20 %, ``medium`` below 10 %,
    ``critical`` below 5 %. At each tick a guest under pressure itself (MemFree below
    ``guest_low`` of its current memory) deflates by ``step``; otherwise, while the host is
    under pressure, every guest inflates by ``step`` times 1, 2 or 4 (low, medium, critical).
    Without pressure balloons stay where they are. Steps are relative to the current target.
    """

    name = "pressure"
    description = "step on host pressure levels (20/10/5% free) and deflate guests under " \
                  "pressure (QEMU auto-balloon)"
    default_interval = 1.0
    params: ClassVar[dict[str, Any]] = {"low": 0.20, "medium": 0.10, "critical": 0.05,
                                        "step": "16MiB", "guest_low": 0.10}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.levels = (self.fraction("low"), self.fraction("medium"), self.fraction("critical"))
        if not self.levels[0] >= self.levels[1] >= self.levels[2]:
            raise PolicyError(f"policy {self.name!r}: parameters low >= medium >= critical "
                              f"required, got {self.levels}")
        self.step = self.pages("step")
        self.guest_low = self.fraction("guest_low")

    def level(self, view: HostView) -> int:
        """0 none, 1 low, 2 medium, 3 critical."""
        free = view.free_pages / view.total_pages if view.total_pages else 1.0
        return sum(free < bound for bound in self.levels)

    def decide(self, view: HostView) -> Mapping[str, int]:
        level = self.level(view)
        out: dict[str, int] = {}
        for g in view.guests:
            free = g.free_pages
            if free is not None and free < self.guest_low * g.memory:
                out[g.name] = max(0, g.target - self.step)
            elif level:
                out[g.name] = g.target + self.step * (1 << (level - 1))
        return out


BUILTINS: dict[str, type[HostPolicy]] = {p.name: p for p in (
    StaticPolicy, SchedulePolicy, MomPolicy, ProxmoxPolicy, SqueezedPolicy, PressurePolicy)}
