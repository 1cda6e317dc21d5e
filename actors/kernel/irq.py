"""Hardirq state and interrupt context, as lockdep of 2012 tracks them (``irqflags.h``).

The kernel keeps the interrupt flag per CPU; the substrate keeps it per task
(``KTask.hardirqs_enabled``), which is what lockdep reads anyway: the state of the CPU the task
runs on -- a task with hardirqs off is atomic and so holds its CPU (``actors.kernel.cpus``).
``local_irq_disable``/``local_irq_enable`` set it, ``local_irq_save``/``local_irq_restore``
save and restore it as a flags word (``X86_EFLAGS_IF`` set when enabled), and
``SpinLock.spin_lock_irq``/``spin_lock_irqsave`` combine them with the lock.
``hardirq(kernel)`` runs the enclosed code as an interrupt handler (``irq_enter`` ...
``irq_exit``): hardirqs disabled, as handlers of the era always run, and in hardirq context, so
that the locks it takes are marked ``IN-HARDIRQ-W``.

While hardirqs are disabled the task is atomic (``KTask.atomic`` counts one for it), so any
sleeping primitive is reported like under a spinlock. Enabling them while holding locks marks
every held lock ``HARDIRQ-ON-W`` (lockdep's ``mark_held_locks``). None of this suspends: an
irq-flags operation is a few attribute writes, like the ``cli``/``sti`` it stands for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from actors.kernel.kernel import Kernel
from actors.kernel.task import ENABLED_HARDIRQ, USED_IN_HARDIRQ, KTask, current

#: The interrupt-enable bit of the saved flags word (x86 EFLAGS.IF).
X86_EFLAGS_IF: Final = 0x200


def _set_state(t: KTask, enabled: bool) -> None:
    """Set the task's hardirq flag and the usage bits its acquisitions mark from now on."""
    if enabled == t.hardirqs_enabled:
        return
    t.hardirqs_enabled = enabled
    t.atomic += -1 if enabled else 1
    if not t.atomic and t.on_cpu:  # preemptible again: off the CPU until it runs
        t.kernel.cpus.put(t)
    elif t.atomic and not t.on_cpu:  # irqs off on the CPU its code runs on (actors.kernel.cpus)
        t.kernel.cpus.pin(t)
    t.irq_tryusage = ENABLED_HARDIRQ if enabled else 0
    t.irq_usage = t.irq_tryusage | (USED_IN_HARDIRQ if t.hardirq_context else 0)


def irqs_disabled() -> bool:
    """Whether hardirqs are disabled on the current task's CPU."""
    return not current().hardirqs_enabled


def in_irq() -> bool:
    """Whether the current task runs an interrupt handler (hardirq context)."""
    return current().hardirq_context > 0


def local_irq_disable(kernel: Kernel) -> None:
    """``local_irq_disable()``: no interrupt on this CPU until re-enabled; atomic context."""
    _set_state(current(), False)


def local_irq_enable(kernel: Kernel) -> None:
    """``local_irq_enable()``: every lock held from now on is held with hardirqs enabled."""
    t = current()
    if t.hardirqs_enabled:
        return
    if t.hardirq_context:
        # trace_hardirqs_on_caller: DEBUG_LOCKS_WARN_ON(current->hardirq_context)
        kernel.lockdep.irqs_on_in_irq(t)
        return
    _set_state(t, True)
    if t.held:
        kernel.lockdep.mark_held_locks(t)


def local_irq_save(kernel: Kernel) -> int:
    """``local_irq_save(flags)``: disable hardirqs; the flags word to restore them with."""
    t = current()
    flags = X86_EFLAGS_IF if t.hardirqs_enabled else 0
    _set_state(t, False)
    return flags


def local_irq_restore(kernel: Kernel, flags: int) -> None:
    """``local_irq_restore(flags)``: hardirqs back to the state ``flags`` saved."""
    if flags & X86_EFLAGS_IF:
        local_irq_enable(kernel)
    else:
        local_irq_disable(kernel)


@contextmanager
def hardirq(kernel: Kernel) -> Iterator[KTask]:
    """``irq_enter()`` ... ``irq_exit()``: run the enclosed code as an interrupt handler.

    Hardirqs are disabled inside (handlers of 3.x always run so) and restored after; locks
    taken inside are ``IN-HARDIRQ-W``. The handler may spin on a spinlock but must not sleep.
    """
    t = current()
    flags = local_irq_save(kernel)
    t.hardirq_context += 1
    t.irq_usage = USED_IN_HARDIRQ
    try:
        yield t
    finally:
        t.hardirq_context -= 1
        t.irq_usage = t.irq_tryusage | (USED_IN_HARDIRQ if t.hardirq_context else 0)
        local_irq_restore(kernel, flags)


__all__ = [
    "X86_EFLAGS_IF",
    "hardirq",
    "in_irq",
    "irqs_disabled",
    "local_irq_disable",
    "local_irq_enable",
    "local_irq_restore",
    "local_irq_save",
]
