"""The hung-task and soft-lockup watchdogs, as actors on one periodic timer each.

- **Hung task** (``khungtaskd``): a task blocked uninterruptibly (mutex, page lock,
  ``wait_event``) longer than ``timeout`` (default 120 virtual seconds) is reported once per
  blocking episode: "INFO: task vballoon blocked for more than 120 seconds", with what it waits
  on and ``show_all_locks()``.
- **Soft lockup** (``watchdog/N``): a task on the CPU without a voluntary sleep for longer than
  ``threshold`` (default 20 s) is reported once per episode: "BUG: soft lockup". A task is on
  the CPU while it spins on a spinlock, and while it is ``running`` and doing lock operations
  in every check interval (its ``ops`` counter moves). A running task whose counter stands
  still is parked on something outside the substrate (an inbox, a stream) and is not counted,
  so actors that forget ``kernel.sleeping()`` around such waits get no false reports; the
  price is that work with gaps longer than ``check_interval`` between lock operations is
  invisible to this watchdog.

Both report through ``Kernel.report`` as well as logging, and run until cancelled.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup, TaskStatus

from actors.kernel.kernel import Kernel
from actors.kernel.task import BLOCKED, RUNNING, SPINNING
from actors.sim import schema
from actors.sim.clock import sleep


class HungTaskWatchdog:
    """Reports tasks blocked uninterruptibly for longer than ``timeout``."""

    def __init__(self, kernel: Kernel, *, timeout: float = 120.0, check_interval: float = 1.0
                 ) -> None:
        if timeout <= 0 or check_interval <= 0:
            raise ValueError("hung-task timeout and check interval must be positive")
        self.kernel = kernel
        self.timeout = timeout
        self.check_interval = check_interval
        self._reported: dict[str, int] = {}  # task name -> episode already reported

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check every ``check_interval`` until cancelled."""
        task_status.started()
        while True:
            await sleep(self.check_interval)
            self.check()

    def check(self) -> None:
        """One scan of the task table."""
        k = self.kernel
        now = k.now()
        for t in list(k.tasks.values()):
            if t.state != BLOCKED:
                continue
            blocked_for = now - t.since
            if blocked_for <= self.timeout or self._reported.get(t.name) == t.episode:
                continue
            self._reported[t.name] = t.episode
            all_locks = k.show_all_locks()
            detail = (f"INFO: task {t.name} blocked for more than {self.timeout:g} seconds "
                      f"(waiting on {t.waiting_on})")
            blocked_for = round(blocked_for, 9)
            k.log.error(schema.HUNG_TASK, task=t.name, waiting_on=t.waiting_on,
                        blocked_for=blocked_for, all_locks=all_locks)
            k.report("hung-task", detail, task=t.name, waiting_on=t.waiting_on,
                     blocked_for=blocked_for, all_locks=all_locks)


class SoftLockupWatchdog:
    """Reports tasks on the CPU (spinning or busy) without sleeping for over ``threshold``."""

    def __init__(self, kernel: Kernel, *, threshold: float = 20.0, check_interval: float = 1.0
                 ) -> None:
        if threshold <= 0 or check_interval <= 0:
            raise ValueError("soft-lockup threshold and check interval must be positive")
        self.kernel = kernel
        self.threshold = threshold
        self.check_interval = check_interval
        self._last_check = 0.0
        self._seen: dict[str, tuple[int, float | None]] = {}  # name -> (ops, on CPU since)
        self._reported: dict[str, float] = {}  # name -> start of the episode reported

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check every ``check_interval`` until cancelled."""
        self._last_check = self.kernel.now()
        task_status.started()
        while True:
            await sleep(self.check_interval)
            self.check()

    def check(self) -> None:
        """One scan: update each task's on-CPU episode and report the ones over threshold."""
        k = self.kernel
        now = k.now()
        prev, self._last_check = self._last_check, now
        seen: dict[str, tuple[int, float | None]] = {}
        for t in list(k.tasks.values()):
            last_ops, active_since = self._seen.get(t.name, (0, None))  # tasks start at 0 ops
            if t.state == SPINNING:
                candidate = t.since
            elif t.state == RUNNING and t.ops != last_ops:
                candidate = prev
            else:
                seen[t.name] = (t.ops, None)
                continue
            active_since = candidate if active_since is None else min(active_since, candidate)
            seen[t.name] = (t.ops, active_since)
            start = max(active_since, t.last_sleep)
            stuck_for = now - start
            if stuck_for <= self.threshold or self._reported.get(t.name) == start:
                continue
            self._reported[t.name] = start
            spinning_on = t.spinning_on
            doing = (f"spinning on {spinning_on}" if spinning_on is not None
                     else "running without sleeping")
            detail = f"BUG: soft lockup - task {t.name} stuck for {stuck_for:.0f}s! ({doing})"
            stuck_for = round(stuck_for, 9)
            all_locks = k.show_all_locks()
            # a busy retry loop polling a page lock (cpu_relax(page=)): the lock it waits for
            polling = f"page:{t.relax_page}" if t.relaxing and t.relax_page >= 0 else None
            k.log.error(schema.SOFT_LOCKUP, task=t.name, spinning_on=spinning_on,
                        polling=polling, stuck_for=stuck_for, all_locks=all_locks)
            k.report("soft-lockup", detail, task=t.name, spinning_on=spinning_on,
                     stuck_for=stuck_for, all_locks=all_locks)
        self._seen = seen


async def start_watchdogs(
    tg: TaskGroup,
    kernel: Kernel,
    *,
    hung_task_timeout: float = 120.0,
    softlockup_thresh: float = 20.0,
    check_interval: float = 1.0,
) -> tuple[HungTaskWatchdog, SoftLockupWatchdog]:
    """Start both watchdogs of ``kernel`` in ``tg``; they run until the group is cancelled."""
    hung = HungTaskWatchdog(kernel, timeout=hung_task_timeout, check_interval=check_interval)
    soft = SoftLockupWatchdog(kernel, threshold=softlockup_thresh, check_interval=check_interval)
    await tg.start(hung.run, name=f"{kernel.name}.khungtaskd")
    await tg.start(soft.run, name=f"{kernel.name}.watchdog")
    return hung, soft
