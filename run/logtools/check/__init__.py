"""``vballoon check LOG``: rebuild a session from its log alone and check the balloon's rules.

:class:`Checker` is a state machine fed one record at a time (no async, no I/O); ``check_log``
streams a log file into it (:mod:`run.logtools.logread`), ``check_records`` feeds in-memory
records (a flight recorder's). Per guest it rebuilds, from the records alone and in arrays by PFN:

- the driver's view of every page: not ballooned, on ``vb->pages``, isolated by compaction
  (which worker, which migration id), leaked (off the list, deflate and release to come), or
  the old page of a migration in progress;
- each page's virtio state as the spec sees it (inflating: in an inflate buffer the device has
  not used yet; inflated; deflating), kept by the conformance monitor it feeds, and the
  host's ballooned set (its ``*.done`` records);
- every handshake's phases (driver add, device pop, device done, driver ack);
- from ``--level debug`` logs, who holds which lock and who waits for it.

What it checks, and the ``kind`` each problem is counted under:

- ``host-vs-driver``: at every quiescent point of a guest (no inflate/deflate handshake open,
  no fill waiting for its inflate, no leaked page unreleased, no migration in progress) the
  host's ballooned set equals the driver's list plus its isolated pages, page by page.
  ``num-pages``: each fill/leak record's ``num_pages`` follows from the previous one, and at
  quiescent points equals (list + isolated) x PAGES_PER_PAGE.
- Page moves: ``list-and-isolated`` (a page put on or taken off ``vb->pages`` while isolated,
  or put back while on the list); ``page-state`` (any other move from a state the page is not
  in: filled twice, isolated twice, released without a leak...); ``unexplained-inflate`` /
  ``unexplained-deflate`` (a buffer naming pages the driver did not take for that purpose);
  ``migration-mismatch`` (a balloon.migrate whose pages or handshakes are not the ones the log
  shows moving); ``isolated-at-run-end`` (a compaction run ended with pages still isolated);
  ``balloon-page-on-lru`` (``balloon.putback_lru``: an isolated balloon page, which the host
  still holds, was put on the LRU instead of back on the balloon's list).
- The virtio rules, by the conformance monitor itself (:mod:`protocol.conformance`, which
  the host runs live), fed from the log's records (:mod:`.virtio`), under its rule ids:
  ``virtio:driver.deflate-unacked-inflate`` (a deflate naming a page whose inflate the
  device has not used), ``virtio:driver.inflate-in-balloon``, ``virtio:driver.deflate-not-in-
  balloon``, ``virtio:device.ack-without-request``, ``virtio:driver.split-guest-page`` and the
  use rules. From the log, a page is *used* once the driver hands it back to the guest's page
  allocator (``balloon.release``; the old page of ``balloon.migrate``): any task may touch it
  from then on. Used while inflating: ``use-before-inflate-ack``; while inflated:
  ``use-while-ballooned``; while deflating under MUST_TELL_HOST: ``use-before-deflate-ack``.
  (The host's live monitor also sees each allocation; what it finds is logged as
  ``host.violation`` and counted below.)
- ``actual-not-updated``: each ``config.actual`` the driver writes equals its balloon size
  (its latest fill/leak ``num_pages``); a change never reported is pending at the end.
- ``handshake-order``: pop, done and ack of each handshake come in that order, on the queue it
  was added to, each once, and the device acts only on PFNs the buffer named.
- Conservation, as far as the log carries it (``conservation``): at each ``mem.snapshot``,
  free == sum(buddyinfo[order] << order) and free + ballooned pages <= guest pages; at
  ``session.end``, the summary's page owners add up to the guest's pages and its free count
  agrees with its buddyinfo. ``summary-mismatch``: the summary's host ballooned count and
  inflate/deflate totals equal the rebuilt ones and, when the session ended settled (see
  ``counters``), so do totalram, the pages the balloon owns and the counters below.
- ``counters``: at every settled point -- each ``mem.snapshot`` of a guest that is quiescent
  (as above), with no compaction run open (isolations, putbacks and the release of migrated
  pages happen inside one), ``actual`` written and the balloon at the size its driver's
  towards_target() steers to (``fixed`` rounds the target up to whole guest pages), or the
  device removed -- and at the end, the driver's counters and /proc/vmstat's equal what the
  records rebuild: pages on ``vb->pages`` and isolated, ``actual`` (vb->num_pages, 4 KiB
  units), pages inflated and deflated (= balloon_inflate, balloon_deflate: fill and leak
  records), balloon_migrate = compact_balloon_migrated = compact_balloon_released (migrate
  records), compact_balloon_isolated and _returned (isolate, putback records); all but
  ``actual`` in guest pages, for any page size. A drift is reported once, naming the counter,
  both values and the unit, then taken as it is (a later point reports only a new one).
- Locks, from ``lock.*`` and ``wait.sleep`` records (``--level debug``): ``mutual-exclusion``
  (acquired while another task holds it), ``bad-unlock``, ``self-deadlock`` (waits for a lock
  it holds), ``sleep-in-atomic`` (sleeps, or blocks on a mutex or page lock, holding a
  spinlock). Lock-order inversions and context imbalance need what the log does not carry
  (trylock or lock, function boundaries); lockdep finds them live and its reports count.
- Pending at the end: handshakes not completed, locks held, a fill, leak or migration in
  progress, isolated pages, a stale ``actual``. Sessions stop mid-operation, so these are
  reported, and are violations (``handshake-stuck``, ``lock-held-at-end``,
  ``actual-not-updated``) only when older than the scenario's hung-task timeout (spinlocks:
  its soft-lockup threshold), the kernel's own measure of "never".
- What the run logged itself: ``lockdep.report`` (under lockdep's kind), ``watchdog.*``
  (``hung-task``, ``soft-lockup``), ``host.violation`` (``virtio:<rule>``),
  ``invariant.violation`` (its kind), ``session.error`` (``session-error``). A logged report of
  a rule this check already found is counted once.

The package, by concern: :mod:`.report` (what is handed back), :mod:`.model` (a guest's
rebuilt state), :mod:`.checker` (the record table, the session header and end),
:mod:`.handshakes`, :mod:`.balloon`, :mod:`.virtio`, :mod:`.locks`, :mod:`.logged` (what the run
reported), :mod:`.summary` (conservation and the end of the log), :mod:`.history` (the first
violation's story).

A log that cannot be read -- bad JSON, a truncated final line, an unknown event, missing
fields, no header or no end, seq out of order -- raises :class:`LogError` naming the line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from run.logtools.logread import BadRecord, LogError, iter_log
from run.session.logs import dumps

from .checker import Checker
from .history import history as _history
from .history import window
from .model import Record
from .report import MAX_KEPT, Pending, Report, Violation

__all__ = ["MAX_KEPT", "BadRecord", "Checker", "LogError", "Pending", "Report", "Violation",
           "check_log", "check_records"]


def check_log(path: Path, *, history: int = 16, around: int | None = None,
              task: str | None = None) -> Report:
    """Check the log at ``path``; LogError if it cannot be read. ``history``, ``around`` and
    ``task`` choose the records shown with the first violation (``history.history``)."""
    checker = Checker()
    report = _check(checker, iter_log(path), str(path))
    first = report.first
    if first is not None and history:
        stop = max(first.seq, window(first.seq, history, around)[1])
        _history(report, iter_log(path, stop_seq=stop), first, checker.ppp, history,
                 around=around, task=task)
    return report


def check_records(records: Sequence[Record], *, history: int = 16) -> Report:
    """Check in-memory records (a flight recorder's, a test's); LogError names the record.

    Each record is read back as its log line would be: in-memory records hold PFN arrays
    where a log file has lists, and the checker must see one and the same thing.
    """
    records = [orjson.loads(dumps(dict(r))) for r in records]
    checker = Checker()
    report = _check(checker, records, None)
    first = report.first
    if first is not None and history:
        _history(report, records, first, checker.ppp, history)
    return report


def _check(checker: Checker, records: Iterable[Record], where: str | None) -> Report:
    """Feed every record, then finish; a record that cannot be read is a LogError naming its
    number (its line, in a file)."""
    feed = checker.feed
    for n, rec in enumerate(records, 1):
        try:
            feed(rec)
        except BadRecord as e:
            raise LogError(n, str(e), where) from None
    try:
        return checker.finish()
    except LogError as e:
        raise LogError(e.line, e.why, where) from None
