"""Independent sessions in parallel processes (sessions are deterministic: order is free).

A small pool of our own rather than ``concurrent.futures``: on Ctrl-C or SIGTERM the caller
must get back at once with what finished, and no worker may outlive it. A process pool
executor waits for every queued job on shutdown and (before Python 3.14) has no public way
to stop its workers; ``multiprocessing.Process`` has ``terminate`` and ``kill``.

Stopping: the parent sets the shared stop flag and sends each worker SIGTERM, which ends a
running session the way a terminal's Ctrl-C does (its log closed with ``session.end``); a
worker that has not exited ``GRACE`` seconds later is killed. A worker also stops when the
flag is set between jobs, or when its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.synchronize import Event as StopFlag
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

#: Seconds a stopped worker gets to close its session before it is killed.
GRACE = 1.5


class WorkerError(RuntimeError):
    """A job raised in its worker process; the message carries the worker's traceback."""


def usable_processes(requested: int, jobs: int) -> int:
    """How many processes ``requested`` really gets: no more than the jobs or the CPUs."""
    return max(1, min(requested, jobs, os.cpu_count() or 1))


def run_all(fn: Callable[[J], R], jobs: Iterable[J], *, processes: int) -> Iterator[R]:
    """``fn(job)`` for every job, in completion order; in this process when only one process
    is usable (see ``usable_processes``).

    ``fn`` must be a module-level function and jobs picklable (they cross process bounds).
    Closing the iterator early, or an exception (KeyboardInterrupt included) while it waits,
    stops every worker before it returns.
    """
    work = list(jobs)
    n = usable_processes(processes, len(work))
    if n == 1:
        for job in work:
            yield fn(job)
        return
    ctx = multiprocessing.get_context()
    # The jobs go through a Queue: its feeder thread writes them as workers drain the pipe
    # (putting thousands into a bare pipe before anyone reads would block this process).
    tasks: Any = ctx.Queue()
    tasks.cancel_join_thread()  # stopping must not wait for unread jobs
    results: Any = ctx.SimpleQueue()
    stop = ctx.Event()
    for job in work:
        tasks.put(job)
    for _ in range(n):
        tasks.put(None)  # one end marker per worker
    workers = [ctx.Process(target=_worker, args=(fn, tasks, results, stop, os.getpid()),
                           daemon=True) for _ in range(n)]
    for w in workers:
        w.start()
    try:
        for _ in work:
            ok, value = results.get()
            if not ok:
                raise WorkerError(value)
            yield value
    finally:
        stop.set()
        for w in workers:
            if w.is_alive():
                w.terminate()
        for w in workers:
            w.join(GRACE)
            if w.is_alive():
                w.kill()
                w.join()


def _worker(fn: Callable[[Any], Any], tasks: Any, results: Any, stop: StopFlag,
            parent: int) -> None:
    """One worker process: run jobs until the end marker, the stop flag or an orphaned life."""
    try:
        while not stop.is_set() and os.getppid() == parent:
            job = tasks.get()
            if job is None:
                return
            try:
                results.put((True, fn(job)))
            except Exception:
                results.put((False, traceback.format_exc()))
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached the whole group: the parent
        return                 # decides what it means; leave quietly
