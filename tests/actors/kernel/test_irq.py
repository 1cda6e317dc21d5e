"""Hardirq state, interrupt context, and lockdep's 2012 irq-safety rules on synthetic locks."""

from __future__ import annotations

import anyio
import pytest
import trio

from actors.kernel import (
    IrqsaveSpinLock,
    Mutex,
    SpinLock,
    hardirq,
    in_irq,
    irqs_disabled,
    local_irq_disable,
    local_irq_enable,
    local_irq_restore,
    local_irq_save,
    spin_lock_irqsave,
    spin_unlock_irqrestore,
)
from actors.kernel.irq import X86_EFLAGS_IF
from actors.kernel.lockdep import USAGE_STR
from actors.kernel.task import ENABLED_HARDIRQ, USED_IN_HARDIRQ
from actors.sim import schema
from tests.actors.kernel.conftest import Rig


async def test_irq_flags_save_restore_nest(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """local_irq_save returns the old state (IF set if enabled) and restore puts it back, so
    nested saves leave hardirqs off until the outer restore; disabled hardirqs are atomic."""
    k = rig.kernel
    with k.task("t") as t:
        assert not irqs_disabled() and t.atomic == 0
        outer = local_irq_save(k)
        inner = local_irq_save(k)
        assert (outer, inner) == (X86_EFLAGS_IF, 0)
        assert irqs_disabled() and t.atomic == 1
        local_irq_restore(k, inner)
        assert irqs_disabled()
        local_irq_restore(k, outer)
        assert not irqs_disabled() and t.atomic == 0
        local_irq_disable(k)
        local_irq_disable(k)  # a flag, not a count
        local_irq_enable(k)
        assert not irqs_disabled() and t.atomic == 0
    assert rig.reports == []


async def test_spin_lock_irq_variants_set_the_irq_state(rig: Rig,
                                                        autojump_clock: trio.abc.Clock) -> None:
    """spin_lock_irq/irqsave disable hardirqs around the lock; irqrestore restores what was
    saved, so an irqsave nested in an irq-off section leaves hardirqs off."""
    k = rig.kernel
    a, b = SpinLock(k, "a"), SpinLock(k, "b")
    with trio.fail_after(10), k.task("t") as t:
        await a.spin_lock_irq()
        assert irqs_disabled() and t.atomic == 2
        flags = await spin_lock_irqsave(b)
        assert flags == 0 and t.held_names() == ["a", "b"]
        spin_unlock_irqrestore(b, flags)
        assert irqs_disabled()
        a.spin_unlock_irq()
        assert not irqs_disabled() and t.atomic == 0 and t.held == []
        flags = await b.spin_lock_irqsave()
        b.spin_unlock_irqrestore(flags)
        assert not irqs_disabled()
    assert rig.reports == []


async def test_hardirq_context(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Inside hardirq() a task is in interrupt context with hardirqs off, and both are
    restored at exit; a handler re-enabling hardirqs is warned about and ignored."""
    k = rig.kernel
    with k.task("irq/virtio-balloon") as t:
        assert not in_irq()
        with hardirq(k):
            assert in_irq() and irqs_disabled() and t.atomic == 1
            local_irq_enable(k)
            assert irqs_disabled()
        assert not in_irq() and not irqs_disabled() and t.atomic == 0
    assert rig.kinds() == ["irq-state"]
    assert "enables hardirqs in hardirq context" in rig.reports[0][1]


async def test_sleeping_in_hardirq_is_reported(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """A mutex taken by an interrupt handler is a sleeping function in invalid context."""
    k = rig.kernel
    m = Mutex(k, "m")
    with trio.fail_after(10), k.task("irq/x"), hardirq(k):
        await m.mutex_lock()
        m.mutex_unlock()
    (kind, detail, _), = rig.reports
    assert kind == "sleep-in-atomic"
    assert detail.endswith("mutex_lock(m) in irq/x while in hardirq context")


async def _take(lock: SpinLock) -> None:
    await lock.spin_lock()
    lock.spin_unlock()


@pytest.mark.parametrize("irq_first", [False, True])
async def test_inconsistent_usage(rig: Rig, autojump_clock: trio.abc.Clock,
                                  irq_first: bool) -> None:
    """One lock taken in an interrupt handler and, elsewhere, with hardirqs enabled is
    'inconsistent {HARDIRQ-ON-W} -> {IN-HARDIRQ-W} usage' (or the reverse, by which came
    first), naming where the earlier state was registered."""
    k = rig.kernel
    lock = SpinLock(k, "vb->stats_lock")
    with trio.fail_after(10):
        for step in ((True, False) if irq_first else (False, True)):
            if step:
                with k.task("irq/virtio-balloon"), hardirq(k):
                    await anyio.sleep(1.0)
                    await _take(lock)
            else:
                with k.task("vballoon"):
                    await _take(lock)
    (kind, detail, fields), = rig.reports
    first, second = ("IN-HARDIRQ-W", "HARDIRQ-ON-W") if irq_first else (
        "HARDIRQ-ON-W", "IN-HARDIRQ-W")
    assert kind == "irq-inconsistent" and fields["usage"] == [first, second]
    assert detail.startswith(f"inconsistent {{{first}}} -> {{{second}}} usage: ")
    was = fields["registered"]
    assert was["task"] == ("irq/virtio-balloon" if irq_first else "vballoon")
    assert was["locks"] == ["vb->stats_lock"]
    assert f"{{{first}}} state was registered at: {was['task']} at t=" in detail
    assert k.lockdep.usage["vb->stats_lock"] == USED_IN_HARDIRQ | ENABLED_HARDIRQ
    (rec,) = rig.records(schema.LOCKDEP)
    assert rec["kind"] == "irq-inconsistent"


async def test_irqsave_users_of_an_irq_lock_are_consistent(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """Process context taking an irq-safe lock with spin_lock_irqsave is the correct use; a
    trylock in the handler does not make a lock irq-safe (the kernel's mark_irqflags)."""
    k = rig.kernel
    lock, tried = SpinLock(k, "safe"), SpinLock(k, "tried")
    with trio.fail_after(10):
        with k.task("irq/x"), hardirq(k):
            await _take(lock)
            assert tried.spin_trylock()
            tried.spin_unlock()
        with k.task("process"):
            flags = await lock.spin_lock_irqsave()
            lock.spin_unlock_irqrestore(flags)
            await _take(tried)
    assert rig.reports == []
    assert k.lockdep.usage == {"safe": USED_IN_HARDIRQ, "tried": ENABLED_HARDIRQ}


async def test_hardirq_safe_to_unsafe_order(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """The minimal pair: S taken in a handler (HARDIRQ-safe), U taken with hardirqs on
    (HARDIRQ-unsafe), then U taken while holding S with hardirqs off: 'HARDIRQ-safe ->
    HARDIRQ-unsafe lock order detected', with the two acquisitions that made them so."""
    k = rig.kernel
    s, u = SpinLock(k, "S"), SpinLock(k, "U")
    with trio.fail_after(10):
        with k.task("irq/x"), hardirq(k):
            await _take(s)
        with k.task("b"):
            await anyio.sleep(1.0)
            await _take(u)
        assert rig.reports == []
        with k.task("c"):
            await anyio.sleep(1.0)
            flags = await s.spin_lock_irqsave()
            await u.spin_lock()
            u.spin_unlock()
            s.spin_unlock_irqrestore(flags)
    (kind, detail, fields), = rig.reports
    assert kind == "irq-order"
    assert detail.startswith("HARDIRQ-safe -> HARDIRQ-unsafe lock order detected: c "
                             "(hardirqs disabled) is trying to acquire U (U) while holding S")
    assert "which would create a new lock dependency S -> U" in detail
    assert "HARDIRQ-irq-safe lock S, which became HARDIRQ-irq-safe at: irq/x at t=0.000000 " \
           "taking S" in detail
    assert "HARDIRQ-irq-unsafe lock U, which became HARDIRQ-irq-unsafe at: b at t=1.000000 " \
           "taking U" in detail
    assert (fields["safe"], fields["unsafe"], fields["edge"]) == ("S", "U", ["S", "U"])
    assert fields["safe_at"] == {"task": "irq/x", "locks": ["S"], "t": 0.0}
    assert fields["unsafe_at"] == {"task": "b", "locks": ["U"], "t": 1.0}
    assert fields["held_locks"] == ["S"]


async def test_safe_to_unsafe_through_a_chain(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """The safe lock may precede the held one, and the unsafe one follow the lock taken:
    S→M exists, N→U exists, and M→N closes S ⇝ U (the report names both paths)."""
    k = rig.kernel
    s, m, n, u = (SpinLock(k, c) for c in "SMNU")
    with trio.fail_after(10):
        with k.task("irq/x"), hardirq(k):
            await _take(s)
        with k.task("a"):
            flags = await s.spin_lock_irqsave()
            await _take(m)  # hardirqs off: M is neither safe nor unsafe
            s.spin_unlock_irqrestore(flags)
        with k.task("b"):
            local_irq_disable(k)
            await n.spin_lock()
            local_irq_enable(k)  # N held as hardirqs come on: N becomes HARDIRQ-unsafe too
            await _take(u)
            n.spin_unlock()
        assert rig.reports == []
        with k.task("c"):
            flags = await m.spin_lock_irqsave()
            await _take(n)
            m.spin_unlock_irqrestore(flags)
    (kind, _, fields), = rig.reports
    assert kind == "irq-order" and (fields["safe"], fields["unsafe"]) == ("S", "N")
    assert fields["safe_path"] == ["S", "M"] and fields["unsafe_path"] == ["N"]
    assert fields["unsafe_at"]["locks"] == ["N"]


async def test_irq_inversion_when_the_usage_comes_last(rig: Rig,
                                                       autojump_clock: trio.abc.Clock) -> None:
    """The same shape found from the other side: S→U recorded while neither was marked,
    then U taken with hardirqs on and S taken in a handler: 'possible irq lock inversion
    dependency detected', once."""
    k = rig.kernel
    s, u = SpinLock(k, "S"), SpinLock(k, "U")
    with trio.fail_after(10):
        with k.task("a"):
            flags = local_irq_save(k)
            await s.spin_lock()
            await _take(u)
            s.spin_unlock()
            local_irq_restore(k, flags)
        with k.task("b"):
            await _take(u)
        with k.task("irq/x"), hardirq(k):
            await _take(s)
    (kind, detail, fields), = rig.reports
    assert kind == "irq-inversion" and fields["task"] == "irq/x"
    assert detail.startswith("possible irq lock inversion dependency detected: irq/x (in "
                             "hardirq context) just changed the state of lock S (S) to "
                             f"{USAGE_STR[USED_IN_HARDIRQ]}, but this lock took another, "
                             "HARDIRQ-unsafe lock in the past: U")
    assert fields["chain"] == ["S", "U"] and fields["registered"]["task"] == "b"


async def test_enabling_irqs_marks_held_locks(rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """local_irq_enable while holding an irq-safe lock makes it HARDIRQ-ON-W too: the
    handler's lock is now inconsistent (lockdep's mark_held_locks)."""
    k = rig.kernel
    lock = SpinLock(k, "L")
    with trio.fail_after(10):
        with k.task("irq/x"), hardirq(k):
            await _take(lock)
        with k.task("p"):
            await lock.spin_lock_irq()
            local_irq_enable(k)
            lock.spin_unlock()
    (kind, detail, fields), = rig.reports
    assert kind == "irq-inconsistent" and fields["usage"] == ["IN-HARDIRQ-W", "HARDIRQ-ON-W"]
    assert "p (hardirqs enabled) takes L (L)" in detail


async def test_irqsave_spinlock_saves_at_lock_and_restores_at_unlock(
        rig: Rig, autojump_clock: trio.abc.Clock) -> None:
    """IrqsaveSpinLock's plain-looking spin_lock/spin_unlock are irqsave/irqrestore: hardirqs
    off while held (no HARDIRQ-ON-W), the saved state restored by whichever function releases
    it, and nested under an irq-off section it leaves hardirqs off."""
    k = rig.kernel
    lock = IrqsaveSpinLock(k, "vb->pages_lock")
    with trio.fail_after(10), k.task("vballoon") as t:
        await lock.spin_lock()
        assert irqs_disabled() and t.atomic == 2
        lock.spin_unlock()
        assert not irqs_disabled() and t.atomic == 0
        flags = local_irq_save(k)
        await lock.spin_lock()
        lock.spin_unlock()
        assert irqs_disabled()
        local_irq_restore(k, flags)
    assert k.lockdep.usage.get("vb->pages_lock", 0) == 0
    with trio.fail_after(10), k.task("irq/x"), hardirq(k):
        await lock.spin_lock()
        lock.spin_unlock()
    assert rig.reports == [] and k.lockdep.usage["vb->pages_lock"] == USED_IN_HARDIRQ
