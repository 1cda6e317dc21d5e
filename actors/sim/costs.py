"""The virtual-time cost model: every modelled delay in one place, with its default.

Actors ``await sleep(costs.x)`` (``actors.sim.clock.sleep``); nothing else advances virtual time.
Kernel code charges the per-operation costs (``lock_op`` ... ``pfn_copy``) to its task instead,
which pays them at its next scheduling point (``actors.kernel.Kernel.schedule``), on a CPU.
Defaults are order-of-magnitude figures for a 2012-era x86-64 guest; a scenario's ``[costs]``
table overrides any of them (durations as strings, e.g. ``alloc_page = "150ns"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _d(default: float, doc: str) -> float:
    return field(default=default, metadata={"unit": "duration", "doc": doc})


@dataclass(frozen=True, slots=True)
class CostModel:
    """Virtual seconds charged for each modelled operation."""

    alloc_request: float = _d(1e-6, "fixed cost of one allocator request (zone lock, bookkeeping)")
    alloc_page: float = _d(0.1e-6, "per page handed out by the buddy allocator")
    free_page: float = _d(0.08e-6, "per page returned to the buddy allocator")
    thp_zero: float = _d(60e-6, "clearing a freshly faulted 2 MiB huge page")
    page_copy: float = _d(0.5e-6, "copying one 4 KiB page during migration")
    migrate_attempt: float = _d(0.3e-6, "one migration attempt that fails with -EAGAIN "
                                        "(page and driver locks tried, nothing copied)")
    vq_roundtrip: float = _d(20e-6, "virtqueue kick to used-buffer interrupt, device work aside")
    host_discard_page: float = _d(0.05e-6, "host discarding (madvise) one 4 KiB page")
    out_of_puff_sleep: float = _d(0.2, "fill_balloon's msleep(200) after an allocation failure")
    lock_op: float = _d(20e-9, "one lock or unlock (an atomic instruction on a shared line)")
    list_op: float = _d(5e-9, "one list_add/list_del/list_first_entry on a struct page")
    page_flag_op: float = _d(5e-9, "one page-flag, mapping or refcount operation")
    pfn_copy: float = _d(2e-9, "copying one PFN into (or out of) the driver's pfns array")
    wakeup: float = _d(2e-6, "a woken sleeper's try_to_wake_up and context switch, before it "
                             "re-tests the lock or condition it slept on")
    spin_relax: float = _d(0.05e-6, "one cpu_relax() iteration while spinning on a lock")
    spin_backoff_max: float = _d(1e-3, "longest re-check interval of a retry loop that makes "
                                       "no progress (see Kernel.cpu_relax)")
