"""Independent sessions on a Dask distributed cluster (``fuzz --cluster``), the local pool's
counterpart for more than one machine.

A session's result depends only on its job (scenario, seed, strategy) and the code, never on
the worker that ran it, so the cluster is just another place to run ``fn(job)``: jobs go out
as futures and results come back in completion order, as from ``run.lab.pool.run_all``.
Each worker must run the same vballoon (installed with ``uv sync --extra cluster`` or
``pip install 'vballoon[cluster]'``); ``local:N`` starts a ``LocalCluster`` of N worker
processes of one thread each (the scheduler's seeded state is per process: two sessions
must never share one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class ClusterError(RuntimeError):
    """The cluster cannot be used (Dask missing, a bad address, no scheduler there)."""


def parse_address(text: str) -> tuple[str, int | None]:
    """``local:N`` -> ("local", N); anything else is a scheduler address, as given."""
    if text.startswith("local:"):
        count = text.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--cluster {text!r}: local:N needs N >= 1 workers")
        return "local", int(count)
    if not text:
        raise ValueError("--cluster: empty address")
    return text, None


def run_on_cluster(fn: Callable[[J], R], jobs: Iterable[J], *, address: str,
                   timeout: float = 10.0) -> Iterator[R]:
    """``fn(job)`` for every job on the cluster at ``address`` (or ``local:N``), in
    completion order; a scheduler that does not answer within ``timeout`` seconds is a
    ClusterError. Closing the iterator early (Ctrl-C, ``--max-failures``) cancels what
    has not run and closes the client, and the local cluster if this started one."""
    try:  # untyped, and optional: reached through Any
        dist: Any = importlib.import_module("distributed")
    except ImportError:
        raise ClusterError("--cluster needs Dask: uv sync --extra cluster "
                           "(or pip install 'vballoon[cluster]')") from None
    where, workers = parse_address(address)
    cluster: Any = None
    try:
        if workers is not None:
            cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = dist.Client(cluster)
        else:
            client = dist.Client(where, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as e:
        if cluster is not None:
            cluster.close()
        raise ClusterError(f"--cluster {address}: cannot connect: {e}") from None
    futures = client.map(fn, list(jobs), pure=False)
    try:
        for future in dist.as_completed(futures):
            yield future.result()
    finally:
        client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()
