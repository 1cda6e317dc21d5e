"""The one vocabulary of log events, shared by every log writer and every log reader.

Each event has a stable dotted name, a level, the fields it always carries and a one-line
meaning. Actors log ``log.info(schema.VQ_ADD, ...)``; the log tools look the same names up
here. A test checks that every record a session writes is declared here with its fields.
Every record also carries ``t`` (virtual seconds), ``seq`` (global order), ``actor`` and
``event``; those four are not repeated below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What one event name means and which fields every record of it has."""

    name: str
    level: Level
    fields: tuple[str, ...]
    doc: str


EVENTS: dict[str, EventSpec] = {}


def _event(name: str, level: Level, fields: tuple[str, ...], doc: str) -> str:
    if name in EVENTS:
        raise ValueError(f"event {name!r} declared twice")
    EVENTS[name] = EventSpec(name, level, fields, doc)
    return name


# -- session -----------------------------------------------------------------------------------
SESSION_START: Final = _event(
    "session.start",
    "info",
    ("seed", "scenario", "versions", "git", "wall_start", "log_level", "faults",
     "fail_fast"),
    "First record: everything needed to replay (resolved scenario, seed, versions).",
)
SESSION_END: Final = _event(
    "session.end",
    "info",
    ("reason", "summary", "wall_end"),
    "Last record, written even on error or Ctrl-C: why the session ended and its summary.",
)
SESSION_ACTION: Final = _event(
    "session.action",
    "info",
    ("at", "do", "outcome"),
    "A scenario action or --do command took effect (run.session.commands): at its virtual "
    "time, the command as written, and 'applied' or why it did nothing.",
)
SESSION_INPUT: Final = _event(
    "session.input",
    "info",
    ("do", "outcome", "at"),
    "A command typed at ``vballoon console``, at the virtual instant it took effect (the "
    "session idle there): the line as typed, what it did ('shown' for a read), and the "
    "instant unrounded (``t`` is rounded to the ns; a replay must stop exactly there). "
    "``vballoon replay`` re-applies every one at its instant.",
)
SESSION_ERROR: Final = _event(
    "session.error",
    "error",
    ("error", "where"),
    "An exception escaped an actor; the session stops and the summary follows.",
)
VIOLATION: Final = _event(
    "invariant.violation",
    "error",
    ("kind", "detail"),
    "A broken invariant found while running (conservation, buddy, protocol, lockdep...).",
)

# -- allocator ---------------------------------------------------------------------------------
ALLOC_BATCH: Final = _event(
    "alloc.batch",
    "debug",
    ("client", "order", "gfp", "want", "got"),
    "The allocator served a batched allocation request (got < want: it failed part way).",
)
FREE_BATCH: Final = _event(
    "alloc.free",
    "debug",
    ("client", "order", "count"),
    "The allocator freed a batch of blocks back to the buddy lists.",
)

# -- workload ----------------------------------------------------------------------------------
WORKLOAD_PHASE: Final = _event(
    "workload.phase",
    "info",
    ("app", "phase", "held"),
    "A guest application entered a new phase (grow, churn, shrink, idle).",
)
THP_FAULT: Final = _event(
    "workload.thp",
    "debug",
    ("app", "ok"),
    "A transparent huge page fault: ok=True got an order-9 block, False fell back to 4 KiB.",
)
#: The driver's counters a ``mem.snapshot`` carries (the summary's ``balloon`` keys), each in
#: its unit: guest pages (4, 16 or 64 KiB each) but ``actual``, vb->num_pages in 4 KiB units.
SNAPSHOT_BALLOON: Final = ("pages_in_list", "isolated", "actual", "inflated", "deflated")
#: The /proc/vmstat counters a ``mem.snapshot`` carries, all counting guest pages.
SNAPSHOT_VMSTAT: Final = ("balloon_inflate", "balloon_deflate", "balloon_migrate",
                          "compact_balloon_isolated", "compact_balloon_migrated",
                          "compact_balloon_released", "compact_balloon_returned")
MEM_SNAPSHOT: Final = _event(
    "mem.snapshot",
    "info",
    ("free", "buddyinfo", "frag9", "balloon", "vmstat"),
    "Periodic view of guest memory: free pages, buddyinfo, order-9 fragmentation index; "
    "`balloon` the driver's counters (null without a driver): pages_in_list (vb->pages), "
    "isolated (by compaction), inflated and deflated (pages it ever filled, leaked) in guest "
    "pages, actual (vb->num_pages) in 4 KiB units; `vmstat` the balloon_inflate/_deflate/"
    "_migrate and compact_balloon_isolated/_migrated/_released/_returned counters, each "
    "counting guest pages.",
)


SAMPLE_GUEST: Final = _event(
    "sample.guest",
    "info",
    ("free", "target", "actual", "rss", "thp_alloc", "thp_fallback", "compact_stall",
     "compact_success", "compact_fail", "balloon_migrated"),
    "One guest's time-series sample, at every snapshot: free guest pages; the balloon's "
    "target and actual and the host's RSS of it, in 4 KiB pages; cumulative THP faults that "
    "got (alloc) or missed (fallback) a huge page, direct compactions and balloon migrations.",
)
SAMPLE_HOST: Final = _event(
    "sample.host",
    "info",
    ("free", "total", "pressure"),
    "The host's time-series sample, at every policy tick: free and total 4 KiB pages and the "
    "pressure, 1 - free/total (above 1: overcommitted).",
)


def spec(name: str) -> EventSpec:
    """The declaration of ``name``; KeyError names the unknown event."""
    try:
        return EVENTS[name]
    except KeyError:
        raise KeyError(f"unknown log event {name!r}") from None

# -- kernel substrate (actors/kernel) ----------------------------------------------------------
LOCK_ACQUIRE: Final = _event(
    "lock.acquire",
    "debug",
    ("task", "lock", "kind", "waited"),
    "A task took a lock (kind mutex|spin|page); waited = virtual seconds spent contending.",
)
LOCK_RELEASE: Final = _event(
    "lock.release",
    "debug",
    ("task", "lock", "kind", "held"),
    "A task released a lock it held for `held` virtual seconds.",
)
LOCK_CONTENDED: Final = _event(
    "lock.contended",
    "debug",
    ("task", "lock", "kind", "owner"),
    "A task found a lock taken by `owner` and started to wait or spin.",
)
PREEMPT: Final = _event(
    "sched.preempt",
    "debug",
    ("task", "site", "delay"),
    "The seeded perturbation policy preempted a task at a preemption point.",
)
FAULT: Final = _event(
    "fault.inject",
    "info",
    ("site", "detail"),
    "An injected fault fired (an active BUGGIFY site, or a forced choice): what it did.",
)
WAIT_SLEEP: Final = _event(
    "wait.sleep",
    "debug",
    ("task", "queue"),
    "A task went to sleep on a wait queue (wait_event) because its condition was false.",
)
WAIT_WAKE: Final = _event(
    "wait.wake",
    "debug",
    ("task", "queue", "woken"),
    "wake_up() on a wait queue woke `woken` sleepers.",
)
LOCKDEP: Final = _event(
    "lockdep.report",
    "error",
    ("kind", "task", "lock", "detail", "held_locks"),
    "Lockdep found a problem: inversion, recursion, sleep-in-atomic, imbalance, held-at-exit, "
    "irq-inconsistent, irq-order, irq-inversion, irq-state.",
)
KERNEL_WARNING: Final = _event(
    "kernel.warning",
    "error",
    ("task", "where", "detail", "dump_page"),
    "A WARN() fired in translated kernel code; dump_page is what dump_page() prints of the "
    "page (pfn, flags, count, mapping).",
)
HUNG_TASK: Final = _event(
    "watchdog.hung_task",
    "error",
    ("task", "waiting_on", "blocked_for", "all_locks"),
    "A task was blocked longer than the hung-task timeout; all_locks is show_all_locks().",
)
SOFT_LOCKUP: Final = _event(
    "watchdog.soft_lockup",
    "error",
    ("task", "spinning_on", "polling", "stuck_for", "all_locks"),
    "A task ran or spun without sleeping longer than the soft-lockup threshold; polling: the "
    "page lock a busy retry loop was polling then (cpu_relax), or null.",
)

# -- virtio handshakes (actors/transport, guest driver, host device) ---------------------------
VQ_ADD: Final = _event(
    "vq.add",
    "info",
    ("queue", "hs", "pfns"),
    "Driver added a buffer (PFNs in 4 KiB units; empty for stats) and notified the device.",
)
HOST_POP: Final = _event(
    "host.pop",
    "info",
    ("queue", "hs", "len"),
    "Device popped handshake `hs` from the available ring (`len` bytes of driver data).",
)
HOST_INFLATE_DONE: Final = _event(
    "host.inflate.done",
    "info",
    ("hs", "pfns", "rejected"),
    "Device discarded the PFNs of an inflate and returned the buffer; rejected = invalid PFNs.",
)
HOST_DEFLATE_DONE: Final = _event(
    "host.deflate.done",
    "info",
    ("hs", "pfns", "rejected"),
    "Device took the PFNs of a deflate out of its ballooned set and returned the buffer.",
)
HOST_STATS: Final = _event(
    "host.stats",
    "info",
    ("hs", "stats"),
    "Device read a stats buffer (tag name → value) and holds it until the next poll.",
)
VQ_ACK: Final = _event(
    "vq.ack",
    "info",
    ("queue", "hs"),
    "Driver got its used buffer back: the handshake is complete.",
)
HOST_VIOLATION: Final = _event(
    "host.violation",
    "error",
    ("rule", "role", "detail", "pfns"),
    "A buffer or behaviour broke a virtio rule; the host returned the buffer and carried on.",
)
CONFIG_TARGET: Final = _event(
    "config.num_pages",
    "info",
    ("num_pages", "previous"),
    "Device wrote a new balloon target (4 KiB pages) to config space and raised a config irq.",
)
CONFIG_ACTUAL: Final = _event(
    "config.actual",
    "info",
    ("actual",),
    "Driver wrote `actual` (pages in the balloon, 4 KiB units) to config space.",
)
HOST_RESET: Final = _event(
    "host.reset",
    "info",
    ("dropped_stats",),
    "The driver reset the device (status 0): no more interrupts, the held stats buffer "
    "(dropped_stats) forgotten; config space is still written.",
)
HOST_REFAULT: Final = _event(
    "host.refault",
    "debug",
    ("pages",),
    "The guest touched discarded pages: the host faulted them back in (RSS grows).",
)

# -- balloon driver (actors/guest/balloon) -----------------------------------------------------
BALLOON_FILL: Final = _event(
    "balloon.fill",
    "info",
    ("pfns", "num_pages"),
    "fill_balloon got these guest pages and puts them all on vb->pages (logged before the "
    "first goes on, so no compaction record about them can precede it); num_pages once they "
    "are all on (4 KiB units).",
)
BALLOON_LEAK: Final = _event(
    "balloon.leak",
    "info",
    ("pfns", "num_pages"),
    "leak_balloon took these guest pages off vb->pages; num_pages after (4 KiB units).",
)
BALLOON_RELEASE: Final = _event(
    "balloon.release",
    "info",
    ("pfns",),
    "release_pages_by_pfn freed these guest pages back to the buddy allocator.",
)
BALLOON_PUFF: Final = _event(
    "balloon.out_of_puff",
    "warning",
    ("wanted", "got"),
    "fill_balloon's allocation failed: 'Out of puff! Can't get N pages', then msleep(200).",
)
BALLOON_REMOVE: Final = _event(
    "balloon.remove",
    "info",
    ("phase", "num_pages"),
    "virtballoon_remove (the device unplugged): phase `start`, then `done` once the kthread "
    "stopped, every page was leaked back and `actual` written; num_pages (4 KiB) then.",
)
BALLOON_TOTALRAM: Final = _event(
    "balloon.totalram",
    "debug",
    ("totalram",),
    "totalram_pages (MemTotal) after a balloon change.",
)

# -- host policy -------------------------------------------------------------------------------
POLICY_DECISION: Final = _event(
    "policy.decision",
    "info",
    ("policy", "asked", "targets"),
    "One policy tick: what decide() asked (guest -> balloon target, 4 KiB pages; null if it "
    "failed) and the targets applied after the safety shell.",
)
POLICY_OVERRIDE: Final = _event(
    "policy.override",
    "warning",
    ("policy", "guest", "rule", "asked", "applied", "reason"),
    "The safety shell did not apply what the policy asked for one guest. Contract rules "
    "(unknown-guest, not-a-number, negative, above-ram) are policy violations; deadband, "
    "max-step, floor and stall-hold are regulation.",
)
POLICY_STALL: Final = _event(
    "policy.stall",
    "warning",
    ("guest", "target", "actual", "rate", "backoff", "hold_until"),
    "The stall detector fired: the guest moved towards its target at `rate` pages/s, too "
    "slowly; an inflating balloon is backed off to `backoff` and held there until hold_until.",
)
POLICY_ERROR: Final = _event(
    "policy.error",
    "error",
    ("policy", "error"),
    "The policy raised, blew its decide budget or returned no mapping; targets stay.",
)

# -- compaction (actors/guest/compaction) -------------------------------------------------------
COMPACT_START: Final = _event(
    "compact.start",
    "info",
    ("worker", "order", "trigger"),
    "A compaction run started (order -1: full compact_memory; trigger: compact_memory, "
    "kcompactd or direct).",
)
COMPACT_END: Final = _event(
    "compact.end",
    "info",
    ("worker", "order", "result", "migrated", "failed", "balloon_migrated", "free_order9"),
    "A compaction run finished: result complete (scanners met) or success (order available); "
    "free_order9 = free blocks of order >= 9 right after it.",
)
COMPACT_SCAN: Final = _event(
    "compact.scan",
    "debug",
    ("worker", "migrate_pfn", "free_pfn", "isolated"),
    "Scanner progress: the migrate scanner isolated `isolated` pages below migrate_pfn.",
)
BALLOON_ISOLATE: Final = _event(
    "balloon.isolate",
    "info",
    ("worker", "mid", "pfn"),
    "Compaction isolated a balloon page (off vb->pages, counted in num_isolated_pages).",
)
BALLOON_MIGRATE: Final = _event(
    "balloon.migrate",
    "info",
    ("worker", "mid", "old", "new", "hs_inflate", "hs_deflate"),
    "virtballoon_migratepage moved a balloon page: new page inflated (hs_inflate), then the "
    "old page deflated (hs_deflate) and released to the buddy allocator.",
)
BALLOON_PUTBACK: Final = _event(
    "balloon.putback",
    "info",
    ("worker", "mid", "pfn"),
    "An isolated balloon page went back on vb->pages without migrating.",
)
BALLOON_PUTBACK_LRU: Final = _event(
    "balloon.putback_lru",
    "warning",
    ("worker", "mid", "pfn"),
    "putback_movable_pages (3.8) did not recognise an isolated balloon page (its refcount "
    "is 2, balloon_page_movable wants 1) and put it on the LRU with putback_lru_page: the "
    "page has left the balloon's list for good while the host still holds it.",
)
HIGHORDER_PASS: Final = _event(
    "workload.highorder",
    "info",
    ("order", "attempts", "success"),
    "A high-order allocation pass (like writing nr_hugepages): how many blocks it got.",
)


def check_record(record: Mapping[str, object]) -> None:
    """Raise ValueError unless ``record`` is a declared event carrying its declared fields."""
    for key in ("t", "seq", "actor", "event"):
        if key not in record:
            raise ValueError(f"log record lacks {key!r}: {record}")
    declared = spec(str(record["event"]))
    missing = set(declared.fields) - set(record)
    if missing:
        raise ValueError(f"{record['event']} record lacks {sorted(missing)}: {record}")
