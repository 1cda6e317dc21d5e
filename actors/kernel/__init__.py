"""The simulated guest-kernel substrate: tasks, locks, wait queues, lockdep, watchdogs.

Import from here: ``from actors.kernel import Kernel, Mutex, SpinLock, current``.
"""

from actors.kernel.irq import (
    hardirq,
    in_irq,
    irqs_disabled,
    local_irq_disable,
    local_irq_enable,
    local_irq_restore,
    local_irq_save,
)
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
    spin_lock_irq,
    spin_lock_irqsave,
    spin_trylock,
    spin_unlock,
    spin_unlock_irq,
    spin_unlock_irqrestore,
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
    "hardirq",
    "in_irq",
    "irqs_disabled",
    "local_irq_disable",
    "local_irq_enable",
    "local_irq_restore",
    "local_irq_save",
    "lock_page",
    "msleep",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "spin_lock",
    "spin_lock_irq",
    "spin_lock_irqsave",
    "spin_trylock",
    "spin_unlock",
    "spin_unlock_irq",
    "spin_unlock_irqrestore",
    "start_watchdogs",
    "trylock_page",
    "unlock_page",
    "wait_event",
    "wait_event_interruptible",
    "wake_up",
]
