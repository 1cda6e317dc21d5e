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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.sim.choices import Choices


class Perturbation:
    """Seeded choice, at each preemption point, between nothing, a yield and a small delay."""

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
