"""The simulated guest-kernel substrate: tasks, locks, wait queues, lockdep, watchdogs.

Import from here: ``from actors.kernel import Kernel, Mutex, SpinLock, current``.
"""

from actors.kernel.kernel import Kernel, KernelReport, msleep
from actors.kernel.lockdep import Lockdep, context
from actors.kernel.locks import (
    PG_LOCKED,
    Atomic,
    BadUnlockError,
    Mutex,
    SpinLock,
    WaitQueue,
    lock_page,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    spin_lock,
    spin_trylock,
    spin_unlock,
    trylock_page,
    unlock_page,
    wait_event,
    wait_event_interruptible,
    wake_up,
)
from actors.kernel.preempt import Perturbation
from actors.kernel.task import KTask, NoKernelTaskError, TaskSharingError, current
from actors.kernel.watchdog import HungTaskWatchdog, SoftLockupWatchdog, start_watchdogs

__all__ = [
    "PG_LOCKED",
    "Atomic",
    "BadUnlockError",
    "HungTaskWatchdog",
    "KTask",
    "Kernel",
    "KernelReport",
    "Lockdep",
    "Mutex",
    "NoKernelTaskError",
    "Perturbation",
    "SoftLockupWatchdog",
    "SpinLock",
    "TaskSharingError",
    "WaitQueue",
    "context",
    "current",
    "lock_page",
    "msleep",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "start_watchdogs",
    "trylock_page",
    "unlock_page",
    "wait_event",
    "wait_event_interruptible",
    "wake_up",
]
