"""An example third-party host policy, loaded by path:

    vballoon run three-guests --set 'host.policy.name="examples/keep_free.py:KeepFree"'

Give every guest just enough memory to keep ``headroom`` of it free (from its latest stats):
a guest with more free memory than that gives the excess back, one with less gets memory back.
Policies only read the view and return balloon targets (4 KiB pages). The host's safety shell
would clamp a target out of range, and count it against the policy: this one keeps its targets
within the view's bounds (``max_memory``, ``max_balloon``) itself, so it gets no overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from actors.host.policy import HostPolicy, HostView


class KeepFree(HostPolicy):
    """Keep ``headroom`` (a fraction of its current memory) free in every guest."""

    name = "keep-free"
    description = "keep a fixed fraction of every guest's memory free"
    default_interval = 2.0
    params: ClassVar[dict[str, Any]] = {"headroom": 0.25}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.headroom = self.fraction("headroom")
        if self.headroom >= 1:
            raise self._bad("headroom", "must be < 1")

    def decide(self, view: HostView) -> Mapping[str, int]:
        targets = {}
        for g in view.guests:
            free = g.mean("free", last=2)  # smooth over the last two stats readings
            if free is None:
                continue  # no stats yet
            used = max(0.0, g.memory - free)  # stats read before a deflate can exceed it
            keep = min(used / (1 - self.headroom), g.max_memory)  # never more than it may have
            # within the shell's range (no balloon below 0 or past RAM - floor): the shell
            # then has nothing to override
            targets[g.name] = min(max(0, g.balloon_for(keep)), g.max_balloon)
        return targets
