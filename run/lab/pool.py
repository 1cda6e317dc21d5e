"""Independent sessions in parallel processes (sessions are deterministic: order is free)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def run_all(fn: Callable[[J], R], jobs: Iterable[J], *, processes: int) -> Iterator[R]:
    """``fn(job)`` for every job, in completion order; in this process when ``processes`` is 1.

    ``fn`` must be a module-level function and jobs picklable (they cross process bounds).
    """
    work = list(jobs)
    if processes <= 1 or len(work) <= 1:
        for job in work:
            yield fn(job)
        return
    with ProcessPoolExecutor(max_workers=min(processes, len(work))) as pool:
        for fut in as_completed([pool.submit(fn, job) for job in work]):
            yield fut.result()
