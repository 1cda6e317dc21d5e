"""Everything that makes a session reproducible from one seed, in one place.

- trio's scheduler: trio only orders simultaneously-runnable tasks with the module-level
  ``random.Random`` in ``trio._core._run``; with ``_ALLOW_DETERMINISTIC_SCHEDULING`` set it sorts
  each batch by task creation order and shuffles it with that generator. We set the flag and
  seed the generator. These are trio internals: ``check_trio_internals`` fails loudly (and a
  test calls it) if a trio upgrade removes them.
- named random streams: every consumer of randomness asks for ``streams.get("workload")`` etc.,
  each derived from the session seed and its name, so adding a consumer never shifts another.
- virtual time: ``MockClock(autojump_threshold=0)`` jumps to the next deadline as soon as
  every task is blocked.
"""

from __future__ import annotations

import hashlib
import inspect
import random
from typing import Any

import trio
import trio.testing


class DeterminismUnavailable(RuntimeError):
    """The trio internals we rely on for seeded scheduling are gone or changed."""


def derive_seed(seed: int, name: str) -> int:
    """A 64-bit seed for stream ``name``, stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class RandomStreams:
    """Named, independent ``random.Random`` streams derived from one session seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def get(self, name: str) -> random.Random:
        """The stream for ``name`` (created on first use, then shared)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = random.Random(derive_seed(self.seed, name))
        return stream


def _run_module() -> Any:
    from trio._core import _run

    return _run


def check_trio_internals() -> None:
    """Raise DeterminismUnavailable unless trio still has the seeded-shuffle scheduler hook."""
    run_mod = _run_module()
    if not isinstance(getattr(run_mod, "_r", None), random.Random):
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: trio._core._run._r is no longer a random.Random"
        )
    if not hasattr(run_mod, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone"
        )
    source = inspect.getsource(run_mod)
    if "_ALLOW_DETERMINISTIC_SCHEDULING" not in source or "_r.shuffle" not in source:
        raise DeterminismUnavailable(
            f"trio {trio.__version__}: the run loop no longer shuffles batches with _r"
        )


def seed_scheduler(seed: int) -> None:
    """Make trio's choice among runnable tasks a pure function of ``seed``."""
    check_trio_internals()
    run_mod = _run_module()
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_mod._r.seed(derive_seed(seed, "scheduler"))


def unseed_scheduler() -> None:
    """Back to trio's own scheduling (benchmarks measure what determinism costs)."""
    check_trio_internals()
    _run_module()._ALLOW_DETERMINISTIC_SCHEDULING = False


def virtual_clock() -> trio.testing.MockClock:
    """A clock that starts at 0 and autojumps to the next deadline when all tasks block."""
    return trio.testing.MockClock(autojump_threshold=0)
