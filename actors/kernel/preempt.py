"""Preemption points: the seeded perturbation that makes a second CPU's interleavings reachable.

Under a cooperative scheduler, code between two awaits is atomic; on a two-CPU guest it is
not. Translated kernel code calls ``await kernel.preempt(site)`` wherever another CPU could
interleave, and every blocking lock acquisition passes one. At each point the policy decides,
from its own seeded ``random.Random``, to do nothing, to yield (``anyio.sleep(0)``: other
runnable tasks run first) or to add a small virtual delay. ``decide`` is the single place the
choice is made, so a subclass can record or force the sequence of choices.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from actors.kernel.task import _CURRENT, RUNNING, KTask

if TYPE_CHECKING:
    from actors.sim.choices import Choices


class Perturbation:
    """Seeded choice, at each preemption point, between nothing, a yield and a small delay."""

    #: Whether a delay means "a task of higher priority runs first" (``Priorities``) rather
    #: than a random perturbation; the kernel's relax backoff reads it (``Kernel.preempt``).
    steps_aside = False

    __slots__ = ("active", "choices", "direct", "max_delay", "prefix", "rng", "strength",
                 "yield_share")

    def __init__(
        self,
        rng: random.Random,
        strength: float = 0.0,
        max_delay: float = 1e-6,
        yield_share: float = 0.5,
        *,
        choices: Choices | None = None,
        prefix: str = "",
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"perturbation strength {strength} not in [0, 1]")
        if max_delay < 0.0:
            raise ValueError(f"perturbation max_delay {max_delay} is negative")
        if not 0.0 <= yield_share <= 1.0:
            raise ValueError(f"perturbation yield_share {yield_share} not in [0, 1]")
        self.rng = rng
        self.strength = strength
        self.max_delay = max_delay
        self.yield_share = yield_share
        #: Recording or forcing the session's choices (see ``actors.choices``), keyed
        #: ``prefix:site`` so that several guests' kernels never share a key.
        self.choices = choices
        self.prefix = prefix
        #: Whether ``decide`` must be consulted at all; False makes a point cost one check.
        self.active = strength > 0.0 or (choices is not None and choices.recording)
        #: Whether ``decide`` is just ``_draw`` (no choice recorded or forced): the kernel's
        #: preemption points then call ``_draw`` themselves, saving two calls a point.
        self.direct = type(self).decide is Perturbation.decide and (
            choices is None or not choices.recording)

    def decide(self, site: str) -> float | None:
        """None: run on; 0.0: yield to other runnable tasks; > 0: that many virtual seconds."""
        if self.choices is not None:
            return self.choices.decide(site, self._draw, self.prefix)
        return self._draw()

    def _draw(self) -> float | None:
        if self.strength <= 0.0:
            return None
        r = self.rng.random()  # one draw per point keeps the stream aligned with the points
        if r >= self.strength:
            return None
        u = r / self.strength  # uniform in [0, 1) given that the point fires
        if u < self.yield_share:
            return 0.0
        return self.max_delay * (u - self.yield_share) / (1.0 - self.yield_share)


class Priorities(Perturbation):
    """Priority-driven exploration (PCT, POS): at a preemption point the running task steps
    aside -- a ``max_delay`` of virtual time, the window the other CPU runs in -- exactly when
    a task with a higher priority is runnable (``running`` state: not blocked, sleeping or
    spinning, and not polling in a ``cpu_relax`` retry loop, which waits for another task as
    a spinner does: counting it would make the task it waits for step aside at every point,
    PCT's classic spin-loop livelock). Subclasses say how priorities are drawn and changed
    (``_touch``).

    The adaptation to a simulator on virtual time: real PCT picks the next thread at every
    step of a uniprocessor schedule; here tasks run cooperatively at one instant between
    points, so "the highest-priority runnable task runs" becomes "a lower-priority task yields
    its point". Every decision still goes through ``Choices`` (recorded, forceable), so
    ``replay``, ``--minimise`` and ``run --choices`` treat it as any other; a lock race between
    a woken and a running task stays the seeded coin of ``Kernel.woken_first``.
    """

    __slots__ = ("prio", "steps", "tasks")
    steps_aside = True

    def __init__(self, rng: random.Random, max_delay: float, tasks: Mapping[str, KTask], *,
                 choices: Choices | None = None, prefix: str = "") -> None:
        super().__init__(rng, 0.0, max_delay, choices=choices, prefix=prefix)
        self.active = True  # every point is a decision
        self.direct = False
        #: The guest's live kernel tasks by name, in creation order (the kernel's table).
        self.tasks = tasks
        #: Priority by task name (higher runs first), drawn at a task's first point.
        self.prio: dict[str, float] = {}
        #: Preemption points passed so far (PCT's step count k; the calibration reads it).
        self.steps = 0

    def decide(self, site: str) -> float | None:
        choices = self.choices
        if choices is not None and choices.recording:  # a closure only to record or force
            return choices.decide(site, lambda: self._pick(site), self.prefix)
        return self._pick(site)

    def _pick(self, site: str) -> float | None:
        self.steps += 1
        t = _CURRENT.get()
        if t is None:
            return None
        mine = self._touch(t.name, site)
        for name, u in self.tasks.items():  # creation order: the draws are reproducible
            if (u is not t and u.state == RUNNING and not u.relaxing
                    and self._priority(name) > mine):
                return self.max_delay
        return None

    def _priority(self, name: str) -> float:
        p = self.prio.get(name)
        if p is None:
            p = self.prio[name] = self._initial()
        return p

    def _initial(self) -> float:
        return self.rng.random()

    def _touch(self, name: str, site: str) -> float:
        """The running task ``name`` passes ``site``: update priorities, return its own."""
        return self._priority(name)


class Pct(Priorities):
    """PCT (Burckhardt et al., ASPLOS 2010): random initial priorities above ``depth``, and
    ``depth - 1`` change points drawn uniformly over the first ``steps`` points; at the i-th
    the running task drops to priority ``depth - i``, below every initial one. A bug of depth
    d is then hit with probability at least 1/(n·k^(d-1)) per run (n tasks, k steps)."""

    __slots__ = ("changes", "depth")

    def __init__(self, rng: random.Random, max_delay: float, tasks: Mapping[str, KTask], *,
                 depth: int, steps: int, choices: Choices | None = None,
                 prefix: str = "") -> None:
        super().__init__(rng, max_delay, tasks, choices=choices, prefix=prefix)
        self.depth = depth
        #: Step number -> the priority the running task drops to there.
        self.changes = {rng.randint(1, steps): float(depth - i) for i in range(1, depth)}

    def _initial(self) -> float:
        return self.depth + self.rng.random()

    def _touch(self, name: str, site: str) -> float:
        drop = self.changes.get(self.steps)
        if drop is not None:
            self.prio[name] = drop
            return drop
        return self._priority(name)


class Pos(Priorities):
    """POS (Yuan et al., CAV 2018): every task's priority is random, and when a task passes a
    point on an object (a lock, a page lock, a wait queue: the point's site names it), every
    task whose last point was on the same object -- its pending operation races with this
    one -- and the task itself draw new priorities."""

    __slots__ = ("pending",)

    def __init__(self, rng: random.Random, max_delay: float, tasks: Mapping[str, KTask], *,
                 choices: Choices | None = None, prefix: str = "") -> None:
        super().__init__(rng, max_delay, tasks, choices=choices, prefix=prefix)
        #: The site of each task's last point: the operation it is about to do.
        self.pending: dict[str, str] = {}

    def _touch(self, name: str, site: str) -> float:
        prio, pending = self.prio, self.pending
        for other in [n for n, s in pending.items() if s == site and n != name]:
            prio[other] = self.rng.random()  # insertion order: reproducible draws
        pending[name] = site
        prio[name] = p = self.rng.random()
        return p
