"""``vballoon check``: hand-made logs with one planted fault each, and real session logs."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from actors.sim import schema
from protocol import conformance as C
from protocol.balloon import BalloonFeature, feature_mask
from run.console.cli import main
from run.logtools import check
from run.logtools.check import LogError, Report
from run.logtools.check.virtio import in_buffer_order
from run.logtools.logread import iter_log
from run.session.logs import dumps

# -- a tiny log writer for planted faults ------------------------------------------------------

GUEST = "guest0.balloon"
HOST = "host.guest0"
KERNEL = "guest0.kernel"
COMPACT = "guest0.compaction"


class Log:
    """Records in the writer's own form (t, seq, actor, event, fields), seq numbered for us."""

    def __init__(self, *, must_tell: bool = True, pages: int = 64, page_size: int = 4096,
                 driver: str = "fixed") -> None:
        features = ["MUST_TELL_HOST", "STATS_VQ"] if must_tell else ["STATS_VQ"]
        scenario = {"name": "planted", "guest": {
            "memory": pages * page_size, "page_size": page_size, "driver": driver,
            "features": features,
            "hung_task_timeout": 120.0, "softlockup_thresh": 20.0},
            "host": {"features": features}}
        self.records: list[dict[str, Any]] = []
        self.add(0.0, "session", schema.SESSION_START, seed=0, scenario=scenario,
                 versions={}, git=None, wall_start=0.0)
        self.hs = 0

    def add(self, t: float, actor: str, event: str, **fields: Any) -> int:
        seq = len(self.records) + 1
        self.records.append({"t": t, "seq": seq, "actor": actor, "event": event, **fields})
        return seq

    def end(self, t: float, summary: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.add(t, "session", schema.SESSION_END, reason="completed", summary=summary or {},
                 wall_end=0.0)
        return self.records

    # -- the usual sequences -------------------------------------------------------------------
    def handshake(self, t: float, queue: str, pfns: list[int], *, ack: bool = True) -> int:
        """Driver add, device pop and done, and (unless ``ack`` is False) the driver's ack."""
        self.hs += 1
        hs = self.hs
        self.add(t, GUEST, schema.VQ_ADD, queue=queue, hs=hs, pfns=pfns)
        self.add(t, HOST, schema.HOST_POP, queue=queue, hs=hs, len=4 * len(pfns))
        done = schema.HOST_INFLATE_DONE if queue == "inflateq" else schema.HOST_DEFLATE_DONE
        self.add(t, HOST, done, hs=hs, pfns=pfns, rejected=0)
        if ack:
            self.add(t, GUEST, schema.VQ_ACK, queue=queue, hs=hs)
        return hs

    def inflate(self, t: float, pfns: list[int], balloon: int) -> None:
        """A fill_balloon round: fill, inflate handshake, actual."""
        self.add(t, GUEST, schema.BALLOON_FILL, pfns=pfns, num_pages=balloon)
        self.handshake(t, "inflateq", pfns)
        self.add(t, GUEST, schema.CONFIG_ACTUAL, actual=balloon)

    def deflate(self, t: float, pfns: list[int], balloon: int) -> None:
        """A leak_balloon round: leak, deflate handshake, release, actual."""
        self.add(t, GUEST, schema.BALLOON_LEAK, pfns=pfns, num_pages=balloon)
        self.handshake(t, "deflateq", pfns)
        self.add(t, GUEST, schema.BALLOON_RELEASE, pfns=pfns)
        self.add(t, GUEST, schema.CONFIG_ACTUAL, actual=balloon)

    def migrate(self, t: float, old: int, new: int, mid: int, worker: str = "kcompactd0"
                ) -> None:
        """Compaction moves balloon page ``old`` to ``new``: isolate, the two handshakes."""
        self.add(t, COMPACT, schema.BALLOON_ISOLATE, worker=worker, mid=mid, pfn=old)
        hi = self.handshake(t, "inflateq", [new])
        hd = self.handshake(t, "deflateq", [old])
        self.add(t, COMPACT, schema.BALLOON_MIGRATE, worker=worker, mid=mid, old=old,
                 new=new, hs_inflate=hi, hs_deflate=hd)


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(dumps(r) for r in records))
    return path


def verdict(report: Report) -> tuple[int, dict[str, int], tuple[str, int] | None]:
    """(exit code, counts per kind, (first kind, first seq))."""
    first = report.first
    return (report.exit_code, dict(report.counts),
            None if first is None else (first.kind, first.seq))


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


# -- the planted faults the issue names --------------------------------------------------------

def test_clean_hand_made_log(tmp_path: Path) -> None:
    """A fill, a migration and a leak, each in order, are clean: exit 0, nothing pending."""
    log = Log()
    log.inflate(1.0, [10, 11, 12], 3)
    log.add(2.0, COMPACT, schema.COMPACT_START, worker="kcompactd0", order=9, trigger="kcompactd")
    log.migrate(2.0, 10, 20, 1)
    log.add(2.0, COMPACT, schema.COMPACT_END, worker="kcompactd0", order=9, result="complete",
            migrated=1, failed=0, balloon_migrated=1, free_order9=0)
    log.deflate(3.0, [20, 11, 12], 0)
    report = check.check_log(write(tmp_path / "ok.jsonl", log.end(4.0)))
    assert verdict(report) == (0, {}, None)
    assert report.pending == [] and report.records == len(log.records)


def test_page_used_before_its_deflate_ack(tmp_path: Path) -> None:
    """With MUST_TELL_HOST, releasing a page to the allocator before the deflate ack is
    use-before-deflate-ack at the release record, and the page's story is shown."""
    log = Log()
    log.inflate(1.0, [5, 6], 2)
    log.add(2.0, GUEST, schema.BALLOON_LEAK, pfns=[5], num_pages=1)
    log.add(2.0, GUEST, schema.VQ_ADD, queue="deflateq", hs=2, pfns=[5])
    release = log.add(2.0, GUEST, schema.BALLOON_RELEASE, pfns=[5])
    log.add(2.1, HOST, schema.HOST_POP, queue="deflateq", hs=2, len=4)
    log.add(2.1, HOST, schema.HOST_DEFLATE_DONE, hs=2, pfns=[5], rejected=0)
    log.add(2.1, GUEST, schema.VQ_ACK, queue="deflateq", hs=2)
    log.add(2.1, GUEST, schema.CONFIG_ACTUAL, actual=1)
    report = check.check_log(write(tmp_path / "use.jsonl", log.end(3.0)))
    kind = "virtio:driver.use-before-deflate-ack"
    assert verdict(report) == (1, {kind: 1}, (kind, release))
    first = report.first
    assert first is not None and first.pfns == (5,) and first.hs == (2,)
    assert [r["event"] for r in report.history] == [
        schema.BALLOON_FILL, schema.VQ_ADD, schema.HOST_POP, schema.HOST_INFLATE_DONE,
        schema.VQ_ACK, schema.BALLOON_LEAK, schema.VQ_ADD, schema.BALLOON_RELEASE]
    assert any("virtio deflating" in line for line in first.state)


def test_release_before_deflate_ack_is_allowed_without_must_tell_host(tmp_path: Path) -> None:
    """Without MUST_TELL_HOST the driver may reuse a page before its deflate is acked."""
    log = Log(must_tell=False)
    log.inflate(1.0, [5], 1)
    log.add(2.0, GUEST, schema.BALLOON_LEAK, pfns=[5], num_pages=0)
    log.add(2.0, GUEST, schema.VQ_ADD, queue="deflateq", hs=2, pfns=[5])
    log.add(2.0, GUEST, schema.BALLOON_RELEASE, pfns=[5])
    log.add(2.1, HOST, schema.HOST_POP, queue="deflateq", hs=2, len=4)
    log.add(2.1, HOST, schema.HOST_DEFLATE_DONE, hs=2, pfns=[5], rejected=0)
    log.add(2.1, GUEST, schema.VQ_ACK, queue="deflateq", hs=2)
    log.add(2.1, GUEST, schema.CONFIG_ACTUAL, actual=0)
    assert verdict(check.check_log(write(tmp_path / "l.jsonl", log.end(3.0)))) == (0, {}, None)


@pytest.mark.parametrize(("end", "expected"), [
    (200.0, (1, {"handshake-stuck": 1, "actual-not-updated": 1}, ("handshake-stuck", 6))),
    (1.5, (0, {}, None)),
])
def test_handshake_never_acked(tmp_path: Path, end: float, expected: tuple[Any, ...]) -> None:
    """A handshake the device used but the driver never saw acked is handshake-stuck once it
    is older than the hung-task timeout at the end (and the driver, stuck in tell_host, never
    reported the fill in ``actual``); younger, both are reported pending."""
    log = Log()
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[7], num_pages=1)
    log.handshake(1.0, "inflateq", [7], ack=False)
    report = check.check_log(write(tmp_path / "hs.jsonl", log.end(end)))
    assert verdict(report) == expected
    if end < 120:
        assert [(p.what, p.seq) for p in report.pending] == [("handshake", 3), ("actual", 2)]
        assert "inflateq hs=1" in report.pending[0].detail
        assert "done" in report.pending[0].detail


def test_lock_held_at_session_end(tmp_path: Path) -> None:
    """A mutex acquired and never released is lock-held-at-end (held > hung-task timeout),
    naming the lock and its holder."""
    log = Log()
    log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, level="debug", task="vballoon",
            lock="vb->balloon_lock", kind="mutex", waited=0.0)
    log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, level="debug", task="vballoon",
            lock="vb->pages_lock", kind="spin", waited=0.0)
    log.add(1.0, KERNEL, schema.LOCK_RELEASE, level="debug", task="vballoon",
            lock="vb->pages_lock", kind="spin", held=0.0)
    report = check.check_log(write(tmp_path / "lock.jsonl", log.end(150.0)))
    assert verdict(report) == (1, {"lock-held-at-end": 1},
                               ("lock-held-at-end", len(log.records)))
    first = report.first
    assert first is not None
    assert first.locks == ("vb->balloon_lock",) and first.tasks == ("vballoon",)
    assert "vballoon holds vb->balloon_lock since t=1.000000" in first.detail
    # its story: every record of the guest since vballoon took the lock
    assert [r["seq"] for r in report.history] == [2, 3, 4]


def test_page_on_the_list_and_isolated(tmp_path: Path) -> None:
    """leak_balloon taking a page compaction holds isolated puts it in two places at once:
    list-and-isolated at the leak record."""
    log = Log()
    log.inflate(1.0, [5, 6], 2)
    log.add(2.0, COMPACT, schema.BALLOON_ISOLATE, worker="compact_memory-3", mid=1, pfn=5)
    leak = log.add(2.1, GUEST, schema.BALLOON_LEAK, pfns=[5, 6], num_pages=0)
    report = check.check_log(write(tmp_path / "iso.jsonl", log.end(2.2)))
    code, counts, first = verdict(report)
    assert (code, first) == (1, ("list-and-isolated", leak))
    assert counts["list-and-isolated"] == 1
    v = report.first
    assert v is not None and v.pfns == (5,)
    assert "leak_balloon took page 5 off vb->pages, but it is isolated" in v.detail
    assert [r["event"] for r in report.history][-2:] == [schema.BALLOON_ISOLATE,
                                                         schema.BALLOON_LEAK]


def test_truncated_final_line(tmp_path: Path) -> None:
    """A log cut while being written is unreadable: LogError names the last line, exit 2."""
    log = Log()
    log.inflate(1.0, [5], 1)
    data = b"".join(dumps(r) for r in log.end(2.0))
    path = tmp_path / "cut.jsonl"
    path.write_bytes(data[:-20])
    lines = len(log.records)
    with pytest.raises(LogError) as e:
        check.check_log(path)
    assert e.value.line == lines and "truncated final line" in e.value.why
    code, out, err = cli("check", str(path))
    assert code == 2 and out == ""
    assert f"cut.jsonl:{lines}: truncated final line" in err
    assert len(err.strip().splitlines()) == 1


def test_complete_record_without_final_newline_is_truncated(tmp_path: Path) -> None:
    """Even a complete last record without its newline was cut short (the writer ends every
    record with one)."""
    log = Log()
    data = b"".join(dumps(r) for r in log.end(2.0))
    path = tmp_path / "nonl.jsonl"
    path.write_bytes(data[:-1])
    with pytest.raises(LogError, match=r"nonl.jsonl:2: truncated final line"):
        check.check_log(path)


def test_unknown_event(tmp_path: Path) -> None:
    """A record whose event the schema does not declare is unreadable: line and event named."""
    log = Log()
    log.inflate(1.0, [5], 1)
    bad = log.add(1.5, GUEST, "balloon.teleport", pfns=[5])
    path = write(tmp_path / "unk.jsonl", log.end(2.0))
    with pytest.raises(LogError) as e:
        check.check_log(path)
    assert e.value.line == bad
    assert "unknown event 'balloon.teleport'" in e.value.why
    code, _, err = cli("check", str(path))
    assert code == 2 and f"unk.jsonl:{bad}: unknown event 'balloon.teleport'" in err


@pytest.mark.parametrize(("mangle", "line", "why"), [
    (lambda lines: [b'{"t": 0.0, "seq": 1,\n', *lines[1:]], 1, "bad JSON"),
    (lambda lines: lines[1:], 1, "missing header: the first record is 'balloon.fill'"),
    (lambda lines: lines[:-1], 7, "the log ends without session.end"),
    (lambda lines: [*lines, lines[1]], 9, "balloon.fill record after session.end"),
    (lambda lines: [lines[0], lines[2], *lines[3:]], 2, "seq 3 after seq 1"),
    (lambda lines: [lines[0], b"[1, 2]\n", *lines[2:]], 2, "not a JSON object but list"),
    (lambda lines: [lines[0], lines[1].replace(b'"num_pages"', b'"nm_pages"'), *lines[2:]],
     2, "balloon.fill record lacks 'num_pages'"),
    (lambda lines: [lines[0], lines[1].replace(b'"t":1.0,', b""), *lines[2:]], 2,
     "record lacks 't'"),
    (lambda lines: [lines[0], lines[1].replace(b'"pfns":[5]', b'"pfns":5'), *lines[2:]], 2,
     "balloon.fill record has a field of the wrong type"),
    (lambda lines: [lines[0], lines[0].replace(b'"seq":1', b'"seq":2'), *lines[1:]], 2,
     "a second session.start"),
])
def test_unreadable_logs_name_line_and_why(tmp_path: Path, mangle: Any, line: int,
                                           why: str) -> None:
    """Each way a log can be unreadable is a LogError with the line and the reason."""
    log = Log()
    log.inflate(1.0, [5], 1)
    lines = [dumps(r) for r in log.end(2.0)]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(mangle(lines)))
    with pytest.raises(LogError) as e:
        check.check_log(path)
    assert (e.value.line, why in e.value.why) == (line, True), e.value


def test_missing_file_and_empty_log_exit_2(tmp_path: Path) -> None:
    """A path that does not exist, or an empty file, is bad input: exit 2, one line."""
    code, _, err = cli("check", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "nope.jsonl: cannot read: No such file or directory" in err
    (tmp_path / "empty.jsonl").write_bytes(b"")
    code, _, err = cli("check", str(tmp_path / "empty.jsonl"))
    assert code == 2 and "empty log" in err


# -- more rules, one planted fault each ----------------------------------------------------------

def _deflate_before_inflate_ack(log: Log) -> int:
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[5], num_pages=1)
    log.add(1.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=1, pfns=[5])
    seq = log.add(1.0, GUEST, schema.BALLOON_LEAK, pfns=[5], num_pages=0)
    log.add(1.0, GUEST, schema.VQ_ADD, queue="deflateq", hs=2, pfns=[5])
    return seq + 1


def _ack_before_done(log: Log) -> int:
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[5], num_pages=1)
    log.add(1.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=1, pfns=[5])
    log.add(1.0, HOST, schema.HOST_POP, queue="inflateq", hs=1, len=4)
    return log.add(1.0, GUEST, schema.VQ_ACK, queue="inflateq", hs=1)


def _host_rejects_a_page(log: Log) -> int:
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[5, 6], num_pages=2)
    log.add(1.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=1, pfns=[5, 6])
    log.add(1.0, HOST, schema.HOST_POP, queue="inflateq", hs=1, len=8)
    log.add(1.0, HOST, schema.HOST_INFLATE_DONE, hs=1, pfns=[5], rejected=1)
    return log.add(1.0, GUEST, schema.VQ_ACK, queue="inflateq", hs=1)


def _wrong_actual(log: Log) -> int:
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[5], num_pages=1)
    log.handshake(1.0, "inflateq", [5])
    return log.add(1.0, GUEST, schema.CONFIG_ACTUAL, actual=2)


def _num_pages_off(log: Log) -> int:
    log.inflate(1.0, [5], 1)
    return log.add(2.0, GUEST, schema.BALLOON_FILL, pfns=[6], num_pages=5)


def _unexplained_inflate(log: Log) -> int:
    log.inflate(1.0, [5], 1)
    return log.add(2.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=9, pfns=[7, 8])


def _isolated_left(log: Log) -> int:
    log.inflate(1.0, [5], 1)
    log.add(2.0, COMPACT, schema.COMPACT_START, worker="w", order=-1, trigger="compact_memory")
    log.add(2.0, COMPACT, schema.BALLOON_ISOLATE, worker="w", mid=1, pfn=5)
    return log.add(2.0, COMPACT, schema.COMPACT_END, worker="w", order=-1, result="complete",
                   migrated=0, failed=0, balloon_migrated=0, free_order9=0)


def _isolate_twice(log: Log) -> int:
    log.inflate(1.0, [5], 1)
    log.add(2.0, COMPACT, schema.BALLOON_ISOLATE, worker="a", mid=1, pfn=5)
    return log.add(2.0, COMPACT, schema.BALLOON_ISOLATE, worker="b", mid=2, pfn=5)


def _migration_mismatch(log: Log) -> int:
    log.inflate(1.0, [5, 6], 2)
    log.add(2.0, COMPACT, schema.BALLOON_ISOLATE, worker="w", mid=1, pfn=5)
    hi = log.handshake(2.0, "inflateq", [9])
    hd = log.handshake(2.0, "deflateq", [5])
    return log.add(2.0, COMPACT, schema.BALLOON_MIGRATE, worker="w", mid=1, old=5, new=10,
                   hs_inflate=hi, hs_deflate=hd)


def _two_holders(log: Log) -> int:
    log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, task="a", lock="page:5", kind="page", waited=0.0)
    return log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, task="b", lock="page:5", kind="page",
                   waited=0.0)


def _sleep_under_spinlock(log: Log) -> int:
    log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, task="a", lock="vb->pages_lock", kind="spin",
            waited=0.0)
    seq = log.add(1.0, KERNEL, schema.WAIT_SLEEP, task="a", queue="vb->config_change")
    log.add(1.0, KERNEL, schema.LOCK_RELEASE, task="a", lock="vb->pages_lock", kind="spin",
            held=0.0)
    return seq


def _self_deadlock(log: Log) -> int:
    log.add(1.0, KERNEL, schema.LOCK_ACQUIRE, task="a", lock="vb->balloon_lock", kind="mutex",
            waited=0.0)
    seq = log.add(1.0, KERNEL, schema.LOCK_CONTENDED, task="a", lock="vb->balloon_lock",
                  kind="mutex", owner="a")
    log.add(1.0, KERNEL, schema.LOCK_RELEASE, task="a", lock="vb->balloon_lock", kind="mutex",
            held=0.0)
    return seq


def _bad_unlock(log: Log) -> int:
    return log.add(1.0, KERNEL, schema.LOCK_RELEASE, task="a", lock="vb->balloon_lock",
                   kind="mutex", held=0.0)


def _snapshot_free_mismatch(log: Log) -> int:
    return log.add(5.0, "guest0", schema.MEM_SNAPSHOT, free=10, buddyinfo=[2, 1, 1],
                   frag9=0, balloon=None, vmstat={})


def _logged_lockdep(log: Log) -> int:
    return log.add(1.0, KERNEL, schema.LOCKDEP, kind="inversion", task="a",
                   lock="vb->pages_lock", detail="possible circular locking dependency",
                   held_locks=["page:5"], cycle=["page", "vb->pages_lock", "page"])


@pytest.mark.parametrize(("plant", "kind"), [
    (_deflate_before_inflate_ack, "virtio:driver.deflate-unacked-inflate"),
    (_ack_before_done, "handshake-order"),
    (_host_rejects_a_page, "host-vs-driver"),
    (_wrong_actual, "actual-not-updated"),
    (_num_pages_off, "num-pages"),
    (_unexplained_inflate, "unexplained-inflate"),
    (_isolated_left, "isolated-at-run-end"),
    (_isolate_twice, "page-state"),
    (_migration_mismatch, "migration-mismatch"),
    (_two_holders, "mutual-exclusion"),
    (_sleep_under_spinlock, "sleep-in-atomic"),
    (_self_deadlock, "self-deadlock"),
    (_bad_unlock, "bad-unlock"),
    (_snapshot_free_mismatch, "conservation"),
    (_logged_lockdep, "inversion"),
])
def test_each_rule_finds_its_planted_fault_first(plant: Any, kind: str) -> None:
    """Each rule's planted fault is the first violation, of that kind, at the planted record."""
    log = Log()
    seq = plant(log)
    report = check.check_records(log.end(10.0))
    first = report.first
    assert report.exit_code == 1
    assert first is not None and (first.kind, first.seq) == (kind, seq), report.violations[:3]


def test_logged_violation_found_by_the_check_counts_once() -> None:
    """A host.violation (and the session's invariant.violation copy) for a rule the check
    itself found is counted once, as found by the check."""
    log = Log()
    seq = _deflate_before_inflate_ack(log)
    rule = "driver.deflate-unacked-inflate"
    log.add(1.0, HOST, schema.HOST_VIOLATION, level="error", rule=rule, role="driver",
            detail="...", pfns=[5])
    log.add(1.0, "session", schema.VIOLATION, level="error", kind=f"virtio:{rule}",
            detail="guest0: ...")
    log.add(1.0, HOST, schema.HOST_VIOLATION, level="error", rule="device.double-inflate",
            role="driver", detail="...", pfns=[5])
    log.add(1.0, "session", schema.VIOLATION, level="error", kind="virtio:device.double-inflate",
            detail="guest0: ...")
    report = check.check_records(log.end(2.0))
    assert dict(report.counts) == {f"virtio:{rule}": 1, "virtio:device.double-inflate": 1}
    assert report.by_source["check"] == {f"virtio:{rule}": 1}
    assert report.by_source["log"] == {"virtio:device.double-inflate": 1}
    assert report.first is not None and report.first.seq == seq


# -- the virtio rules are the conformance monitor's -----------------------------------------

def _reinflate_in_buffer_order(log: Log) -> None:
    log.inflate(1.0, [7, 3], 2)
    log.add(2.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=9, pfns=[9, 7, 3, 9])


def _deflate_unacked_and_absent(log: Log) -> None:
    log.add(1.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=1, pfns=[4])
    log.add(1.0, GUEST, schema.VQ_ADD, queue="deflateq", hs=2, pfns=[8, 4])


def _ack_nobody_asked_for(log: Log) -> None:
    log.handshake(1.0, "deflateq", [2])


def _release_while_in_the_balloon(log: Log) -> None:
    log.inflate(1.0, [1, 2], 2)
    log.add(2.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=5, pfns=[3])
    log.add(2.0, GUEST, schema.BALLOON_RELEASE, pfns=[3, 1, 3])


def _release_before_deflate_ack(log: Log) -> None:
    log.inflate(1.0, [6], 1)
    log.add(2.0, GUEST, schema.VQ_ADD, queue="deflateq", hs=5, pfns=[6])
    log.add(2.0, GUEST, schema.BALLOON_RELEASE, pfns=[6])


def _split_guest_page(log: Log) -> None:
    log.add(1.0, GUEST, schema.VQ_ADD, queue="inflateq", hs=1, pfns=[4, 5, 6, 7, 9, 10])


U = "virtio:driver."
#: (case, MUST_TELL_HOST, page size, the log, check's virtio findings: kind, pages, handshakes)
Found = list[tuple[str, tuple[int, ...], tuple[int, ...]]]
VIRTIO_CASES: list[tuple[str, bool, int, Any, Found]] = [
    ("reinflate, pages in buffer order", True, 4096, _reinflate_in_buffer_order,
     [(U + "inflate-in-balloon", (7, 3, 9), (9,))]),
    ("deflate unacked and absent", True, 4096, _deflate_unacked_and_absent,
     [(U + "deflate-unacked-inflate", (4,), (2, 1, 2)),
      (U + "deflate-not-in-balloon", (8,), (2,))]),
    ("ack nobody asked for", True, 4096, _ack_nobody_asked_for,
     [(U + "deflate-not-in-balloon", (2,), (1,)),
      ("virtio:device.ack-without-request", (2,), (1,))]),
    ("release while in the balloon", True, 4096, _release_while_in_the_balloon,
     [(U + "use-before-inflate-ack", (3, 3), (5,)), (U + "use-while-ballooned", (1,), ())]),
    ("release before the deflate ack", True, 4096, _release_before_deflate_ack,
     [(U + "use-before-deflate-ack", (6,), (5,))]),
    ("release before the deflate ack, no MUST_TELL_HOST", False, 4096,
     _release_before_deflate_ack, []),
    ("16 KiB pages, a split one", True, 16384, _split_guest_page,
     [(U + "split-guest-page", (9, 10), ())]),
]


def _live_events(records: list[dict[str, Any]]) -> list[C.Event]:
    """What the live system feeds the host's monitor for these records."""
    out: list[C.Event] = []
    for r in records:
        event = r["event"]
        if event == schema.VQ_ADD and r["queue"] != "statsq":
            out.append((C.InflateAdded if r["queue"] == "inflateq" else C.DeflateAdded)(r["pfns"]))
        elif event in (schema.HOST_INFLATE_DONE, schema.HOST_DEFLATE_DONE):
            out.append((C.InflateAcked if event == schema.HOST_INFLATE_DONE
                        else C.DeflateAcked)(r["pfns"]))
        elif event == schema.BALLOON_RELEASE:
            out.append(C.PageUsed(r["pfns"]))
    return out


@pytest.mark.parametrize(("case", "must_tell", "page_size", "plant", "found"), VIRTIO_CASES,
                         ids=[c[0] for c in VIRTIO_CASES])
def test_virtio_rules_from_the_log_are_the_live_monitors(
        case: str, must_tell: bool, page_size: int, plant: Any, found: Found) -> None:
    """The check applies the virtio rules by feeding the host's own monitor from the log: it
    finds what that monitor finds live, told with the buffer's order and its handshakes."""
    log = Log(must_tell=must_tell, page_size=page_size)
    plant(log)
    report = check.check_records(log.end(5.0))
    mine = [(v.kind, v.pfns, v.hs) for v in report.violations if v.kind.startswith("virtio:")]
    assert mine == found
    features = feature_mask(BalloonFeature.MUST_TELL_HOST) if must_tell else 0
    live = C.Conformance(features, page_size // 4096).feed_all(_live_events(log.records))
    assert [(f"virtio:{v.rule}", v.pfns) for v in live] == [
        (kind, tuple(sorted(set(pfns)))) for kind, pfns, _ in found]


@pytest.mark.parametrize(("named", "reported", "every", "ordered"), [
    ([9, 7, 3, 9], [3, 7, 9], False, [7, 3, 9]),  # the later of 9's two mentions
    ([5, 5, 5], [5, 5], False, [5, 5]),
    ([3, 1, 3], [3], True, [3, 3]),  # a use: every mention
    ([1, 2], [], False, []),
])
def test_in_buffer_order(named: list[int], reported: list[int], every: bool,
                         ordered: list[int]) -> None:
    """The monitor's sorted pages, back in the order (and the mentions) the record had."""
    assert in_buffer_order(named, reported, every=every) == ordered


def test_larger_guest_pages_inflate_and_deflate_cleanly() -> None:
    """With 16 KiB guest pages the done records' wire PFNs are whole guest pages: a full
    inflate and deflate round is clean (no ack the device was not asked for)."""
    log = Log(page_size=16384)
    wire = [8, 9, 10, 11, 12, 13, 14, 15]
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[2, 3], num_pages=8)
    log.handshake(1.0, "inflateq", wire)
    log.add(1.0, GUEST, schema.CONFIG_ACTUAL, actual=8)
    log.add(2.0, GUEST, schema.BALLOON_LEAK, pfns=[2, 3], num_pages=0)
    log.handshake(2.0, "deflateq", wire)
    log.add(2.0, GUEST, schema.BALLOON_RELEASE, pfns=[2, 3])
    log.add(2.0, GUEST, schema.CONFIG_ACTUAL, actual=0)
    assert verdict(check.check_records(log.end(3.0))) == (0, {}, None)


def test_summary_is_cross_checked() -> None:
    """At session.end, the summary's host and driver counts must match the rebuilt ones."""
    log = Log()
    log.inflate(1.0, [5, 6], 2)
    log.add(1.0, HOST, schema.CONFIG_TARGET, num_pages=2, previous=0)
    summary = {
        "guest": {"pages": 64, "free_pages": 62, "owners": {"free": 62, "balloon": 2}},
        "buddyinfo": [62],
        "balloon": {"pages_in_list": 2, "isolated": 0, "actual": 2, "inflated": 2,
                    "deflated": 0, "totalram": 62},
        "host": {"guests": {"guest0": {"ballooned": 3, "inflated": 2, "deflated": 0,
                                       "target": 2}}},
    }
    report = check.check_records(log.end(2.0, summary))
    assert dict(report.counts) == {"summary-mismatch": 1}
    assert report.first is not None
    assert "host ballooned (4 KiB pages) = 3, rebuilt from the log: 2" in report.first.detail


# -- the command line ----------------------------------------------------------------------------

def test_cli_prints_first_violation_and_counts(tmp_path: Path) -> None:
    """`vballoon check` prints the first violation with its story and a count per kind, exit
    1; --json gives the same verdict for machines; a gzip log reads the same."""
    log = Log()
    seq = _deflate_before_inflate_ack(log)
    path = write(tmp_path / "f.jsonl", log.end(2.0))
    code, out, _ = cli("check", str(path))
    assert code == 1
    assert "first violation virtio:driver.deflate-unacked-inflate" in out
    assert f"seq {seq}" in out and "the records that led to it" in out
    code, out, _ = cli("check", "--json", str(path))
    data = orjson.loads(out)
    assert code == 1 and data["verdict"] == "violations" and data["exit_code"] == 1
    assert data["first"]["kind"] == "virtio:driver.deflate-unacked-inflate"
    assert data["first"]["seq"] == seq and data["first"]["history"]
    assert data["counts"] == {"virtio:driver.deflate-unacked-inflate": 1}
    gz = tmp_path / "f.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    code, out2, _ = cli("check", "--json", str(gz))
    assert code == 1 and orjson.loads(out2)["counts"] == data["counts"]


def test_damaged_gzip_is_unreadable(tmp_path: Path) -> None:
    """A gzip log cut short is a LogError, exit 2."""
    log = Log()
    log.inflate(1.0, [5], 1)
    data = gzip.compress(b"".join(dumps(r) for r in log.end(2.0)))
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(data[: len(data) // 2])
    code, _, err = cli("check", str(gz))
    assert code == 2 and "cut.jsonl.gz" in err


# -- real sessions -------------------------------------------------------------------------------

#: Every built-in scenario, shrunk so the whole set runs in seconds, keeping what each does
#: to the balloon: inflate/deflate steps, overcommit (Out of puff), compaction storms.
SMALL = {
    "default": ["guest.memory=32MiB", "duration=3s"],
    "inflate-deflate": ["guest.memory=32MiB", "duration=4s", "workload.apps=1",
                        'host.policy.params.steps=[["0.5s", "50%"], ["2.5s", "0%"]]'],
    "overcommit": ["guest.memory=32MiB", "duration=3s",
                   'host.policy.params.steps=[["0.5s", "90%"]]'],
    "compact-storm": ["guest.memory=16MiB", "duration=4.5s", "compaction.workers=3",
                      'compaction.at=["1.5s", "3s"]', 'compaction.kcompactd_interval="1s"',
                      'host.policy.params.steps=[["0.5s", "25%"], ["2s", "10%"], '
                      '["2.5s", "30%"], ["3.5s", "0%"]]'],
    "thp-under-balloon": ["duration=9.6s", "workload.drop_at=0.625",
                          'host.policy.params.steps=[["2s", "8%"], ["3s", "15%"], '
                          '["4s", "20%"], ["9s", "5%"]]'],
    "race": ["duration=4s", 'compaction.at=["1s", "2.5s"]',
             'host.policy.params.steps=[["0.5s", "8%"], ["2s", "3%"], ["3s", "0%"]]'],
    "three-guests": ["duration=6s", 'host.policy.name="static"',
                     'host.policy.params={target = "10%"}'],
}
#: What each shrunk scenario must still do to the balloon, so that "clean" means something.
DOES = {
    "default": set(),
    "inflate-deflate": {schema.BALLOON_FILL, schema.BALLOON_LEAK, schema.BALLOON_RELEASE},
    "overcommit": {schema.BALLOON_FILL, schema.BALLOON_PUFF},
    "compact-storm": {schema.BALLOON_FILL, schema.BALLOON_LEAK, schema.BALLOON_MIGRATE,
                      schema.BALLOON_PUTBACK},
    "thp-under-balloon": {schema.BALLOON_FILL, schema.BALLOON_LEAK, schema.BALLOON_MIGRATE},
    "race": {schema.BALLOON_FILL, schema.BALLOON_LEAK, schema.BALLOON_MIGRATE},
    "three-guests": {schema.BALLOON_FILL},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builtin_scenario_log_is_clean_under_fixed(tmp_path: Path, name: str) -> None:
    """`vballoon run SCENARIO --log` then `vballoon check` on it, under the fixed driver, for
    every built-in scenario: exit 0, clean."""
    log = tmp_path / f"{name}.jsonl"
    sets = [a for s in [*SMALL[name], "guest.driver=fixed"] for a in ("--set", s)]
    code, _, err = cli("run", name, *sets, "--seed", "3", "--log", str(log), "--json")
    assert code == 0, err
    code, out, _ = cli("check", "--json", str(log))
    data = orjson.loads(out)
    assert (code, data["verdict"], data["counts"]) == (0, "clean", {}), data["first"]
    events = {r["event"] for r in map(orjson.loads, log.read_bytes().splitlines())}
    assert DOES[name] <= events


def test_debug_log_with_preemption_is_clean(tmp_path: Path) -> None:
    """A compact-storm log at debug level with seeded preemption (lock records, interleaved
    isolations) is clean, and the check saw its lock records."""
    log = tmp_path / "storm.jsonl"
    sets = [a for s in [*SMALL["compact-storm"], "guest.preempt=0.3"] for a in ("--set", s)]
    code, _, err = cli("run", "compact-storm", *sets, "--seed", "1", "--level", "debug",
                       "--log", str(log), "--json")
    assert code == 0, err
    report = check.check_log(log)
    assert verdict(report) == (0, {}, None)
    assert any("lock discipline from lock.* records" in c for c in report.checked)


def test_flight_recorder_records_check_like_the_file_log(tmp_path: Path) -> None:
    """A session's in-memory records (PFN arrays, not lists) get the same verdict as its file
    log: a clean race under fixed, and v9's first violation at the same record."""
    from run.session import scenario as scen
    from run.session.logs import FlightRecorder
    from run.session.session import run_session

    for driver, seed in (("fixed", 2), ("v9", 13)):
        sc = scen.load("race", [f"guest.driver={driver}", "guest.preempt=0.05",
                                "faults.enabled=true"])
        log, rec = tmp_path / f"{driver}.jsonl", FlightRecorder()
        run_session(sc, seed=seed, log_path=log, recorder=rec, fail_fast=True)
        assert any(not isinstance(r.get("pfns", []), list) for r in rec.records)
        from_file, from_memory = check.check_log(log), check.check_records(list(rec.records))
        assert from_memory.as_dict() == from_file.as_dict()
        assert (from_file.exit_code == 1) == (driver == "v9"), from_file.first


def test_v9_overcommit_is_explained_from_the_log(tmp_path: Path) -> None:
    """On v9's overcommit deadlock the first violation is lockdep's context imbalance in
    fill_balloon, and the check adds that balloon_lock is still held at the end."""
    log = tmp_path / "v9.jsonl"
    code, _, _ = cli("run", "overcommit", "--set", "guest.memory=32MiB", "--set",
                     "guest.driver=v9", "--set", 'host.policy.params.steps=[["0.5s", "90%"]]',
                     "--set", "guest.hung_task_timeout=5s", "--duration", "12s",
                     "--level", "debug", "--log", str(log), "--json")
    assert code == 1
    report = check.check_log(log)
    first = report.first
    assert first is not None and first.kind == "imbalance" and first.source == "log"
    assert any(line.startswith("vb->balloon_lock: held by vballoon") for line in first.state)
    assert report.counts["lock-held-at-end"] == 1 and report.counts["hung-task"] == 1


@pytest.mark.parametrize("counter", ["compact_balloon_isolated", "compact_balloon_migrated",
                                     "compact_balloon_released", "compact_balloon_returned"])
def test_compaction_counters_are_checked_against_the_records(tmp_path: Path,
                                                              counter: str) -> None:
    """A settled race log's compact_balloon_* counters equal the isolate, migrate and putback
    records (released = migrated); one drifting by a page is a summary mismatch naming it."""
    from run.session import scenario as scen
    from run.session.session import run_session

    log = tmp_path / "race.jsonl"
    run_session(scen.load("race", ["duration=10s"]), log_path=log)
    clean = check.check_log(log)
    assert clean.exit_code == 0, clean.violations
    assert any("the counters above (guest0 settled at the end)" in c for c in clean.checked)
    lines = log.read_bytes().splitlines()
    end = orjson.loads(lines[-1])
    vmstat = end["summary"]["guests"]["guest0"]["vmstat"]  # each guest's own counters
    assert vmstat[counter] > 0
    vmstat[counter] += 1
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(end)]) + b"\n")
    found = check.check_log(bad)
    assert [v.kind for v in found.violations] == ["summary-mismatch"]
    assert f"vmstat {counter}" in found.violations[0].detail


# -- the counters at every settled point ---------------------------------------------------------

def test_every_counter_a_snapshot_carries_is_checked() -> None:
    """The check's table of counters is exactly what a mem.snapshot declares it carries."""
    from run.logtools.check.summary import COUNTERS

    assert sorted((section, key) for section, key, *_ in COUNTERS) == sorted(
        [*(("balloon", k) for k in schema.SNAPSHOT_BALLOON),
         *(("vmstat", k) for k in schema.SNAPSHOT_VMSTAT)])


def _counter_snapshot(log: Log, t: float, listed: int, actual: int, inflated: int = 2,
                      deflated: int = 0) -> int:
    """A mem.snapshot of a guest without compaction: its driver and vmstat counters."""
    vmstat = dict.fromkeys(schema.SNAPSHOT_VMSTAT, 0)
    vmstat.update(balloon_inflate=inflated, balloon_deflate=deflated)
    return log.add(t, "guest0", schema.MEM_SNAPSHOT, free=0, buddyinfo=[0], frag9=0,
                   balloon={"pages_in_list": listed, "isolated": 0, "actual": actual,
                            "inflated": inflated, "deflated": deflated}, vmstat=vmstat)


@pytest.mark.parametrize(("driver", "drifts"), [("fixed", 2), ("v9", 0)])
def test_snapshot_counters_at_the_size_the_driver_settles_at(driver: str, drifts: int) -> None:
    """A 16 KiB guest at host target 6 (4 KiB units) holds two pages (8): ``fixed`` rounds its
    target up to whole pages, so it is settled and its counters are compared at each
    snapshot, in their units; one drift is reported once (not again at the next snapshot);
    under ``v9``, which still has 2 units to leak, the driver is not idle: nothing compared."""
    log = Log(page_size=16384, driver=driver)
    wire = [8, 9, 10, 11, 12, 13, 14, 15]
    log.add(1.0, HOST, schema.CONFIG_TARGET, num_pages=6, previous=0)
    log.add(1.0, GUEST, schema.BALLOON_FILL, pfns=[2, 3], num_pages=8)
    log.handshake(1.0, "inflateq", wire)
    log.add(1.0, GUEST, schema.CONFIG_ACTUAL, actual=8)
    _counter_snapshot(log, 2.0, 2, 8)
    off = _counter_snapshot(log, 3.0, 2, 9)
    listed = _counter_snapshot(log, 4.0, 3, 9)
    report = check.check_records(log.end(5.0))
    found = [(v.kind, v.seq, v.detail) for v in report.violations]
    assert len(found) == drifts, found
    assert report.counter_points == (3 if drifts else 0)  # (the summary has no counters)
    if drifts:
        assert found == [
            ("counters", off, f"mem.snapshot (seq {off}): driver actual (num_pages) = 9, "
                              "rebuilt from the log: 8 (4 KiB units)"),
            ("counters", listed, f"mem.snapshot (seq {listed}): driver pages on the list = 3, "
                                 "rebuilt from the log: 2 (guest pages of 16 KiB)")]


def test_snapshot_counters_around_the_device_removal() -> None:
    """From virtballoon_remove's start the driver leaks everything (taking pages off its list
    before each leak record): a snapshot then is not compared; once removal is done the
    driver has no target, and its counters are compared again."""
    log = Log()
    log.add(1.0, HOST, schema.CONFIG_TARGET, num_pages=2, previous=0)
    log.inflate(1.0, [5, 6], 2)
    _counter_snapshot(log, 2.0, 2, 2)
    log.add(3.0, GUEST, schema.BALLOON_REMOVE, phase="start", num_pages=2)
    _counter_snapshot(log, 3.0, 0, 0)  # the pages are off the list, the leak not yet logged
    log.deflate(3.0, [5, 6], 0)
    log.add(3.0, GUEST, schema.BALLOON_REMOVE, phase="done", num_pages=0)
    _counter_snapshot(log, 4.0, 0, 0, deflated=2)
    drift = _counter_snapshot(log, 5.0, 0, 0, deflated=3)
    report = check.check_records(log.end(6.0))
    assert report.counter_points == 3
    assert [(v.kind, v.seq, v.detail.split(": ", 1)[1]) for v in report.violations] == [
        ("counters", drift, f"{what} = 3, rebuilt from the log: 2 (guest pages of 4 KiB)")
        for what in ("driver pages deflated", "vmstat balloon_deflate")]


#: A short race (two compaction bursts, the host inflating to 8 % then deflating to 3 %) with a
#: snapshot every 50 ms: a few seconds of wall time for the three page sizes together.
COUNTER_RACE = ["duration=4s", 'compaction.at=["1s", "2.5s"]', "snapshot_interval=0.05s",
                'host.policy.params.steps=[["0.5s", "8%"], ["2s", "3%"]]']


@pytest.fixture(scope="module", params=["4KiB", "16KiB", "64KiB"])
def race_log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short race's log under ``fixed`` at one guest page size."""
    from run.session import scenario as scen
    from run.session.session import run_session

    log = tmp_path_factory.mktemp("counters") / f"race-{request.param}.jsonl"
    # seed 4: at 64 KiB most seeds put every isolated page back (no free target page is
    # found in time); this one migrates a few, so every counter moves
    run_session(scen.load("race", [*COUNTER_RACE, f"guest.page_size={request.param}"]), seed=4,
                log_path=log)
    return log


def _snapshots(lines: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """(line index, record) of each mem.snapshot."""
    records = [(i, orjson.loads(line)) for i, line in enumerate(lines)]
    return [(i, r) for i, r in records if r["event"] == schema.MEM_SNAPSHOT]


def test_real_log_counters_hold_at_every_settled_snapshot(race_log: Path) -> None:
    """The race's counters, inflated, deflated, isolated, migrated and returned pages among
    them, equal what its records rebuild at nearly every snapshot (all but the few taken
    mid-operation) and at the end, whatever the page size."""
    report = check.check_log(race_log)
    assert verdict(report) == (0, {}, None), report.first
    snapshots = _snapshots(race_log.read_bytes().splitlines())
    assert report.counter_points >= 0.9 * len(snapshots) >= 70
    last = snapshots[-1][1]
    assert last["balloon"]["pages_in_list"] > 0 and last["balloon"]["deflated"] > 0
    assert min(last["vmstat"][k] for k in ("compact_balloon_migrated",
                                           "compact_balloon_returned")) > 0


@pytest.mark.parametrize("persistent", [False, True])
def test_real_log_counter_drift_is_reported_at_its_snapshot(race_log: Path, tmp_path: Path,
                                                            persistent: bool) -> None:
    """compact_balloon_released one page too high in the next-to-last snapshot is a
    ``counters`` violation there, naming the counter, both values and the unit. Off in that
    snapshot alone, it is reported again when it comes back (at the last one); off from there
    on -- the last snapshot and the summary too -- it is reported once."""
    lines = race_log.read_bytes().splitlines()
    snapshots = _snapshots(lines)
    seq, last_seq = snapshots[-2][1]["seq"], snapshots[-1][1]["seq"]
    released = snapshots[-2][1]["vmstat"]["compact_balloon_released"]
    end = orjson.loads(lines[-1])
    summaries = (end["summary"], end["summary"]["guests"]["guest0"])
    for i, rec in [*snapshots[-2:len(snapshots) if persistent else -1], (len(lines) - 1, end)]:
        for counters in (rec,) if rec is not end else summaries if persistent else ():
            counters["vmstat"]["compact_balloon_released"] += 1
        lines[i] = orjson.dumps(rec)
    bad = tmp_path / "drift.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    report = check.check_log(bad)
    kib = end["summary"]["guest"]["page_size"] // 1024
    first = report.first
    assert released > 0 and first is not None and (first.kind, first.seq) == ("counters", seq)
    assert first.detail == (f"mem.snapshot (seq {seq}): vmstat compact_balloon_released = "
                            f"{released + 1}, rebuilt from the log: {released} "
                            f"(guest pages of {kib} KiB)")
    again = [(v.kind, v.seq) for v in report.violations[1:]]
    assert again == ([] if persistent else [("counters", last_seq)])


@pytest.fixture(scope="module")
def race46(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """race seed 46 under v9 with faults, to its first violation, as a debug log."""
    from run.session import scenario as scen
    from run.session.session import run_session

    sc = scen.load("race", ["guest.driver=v9", "guest.preempt=0.05", "faults.enabled=true"])
    path = tmp_path_factory.mktemp("race46") / "s46.jsonl"
    run_session(sc, seed=46, log_path=path, level="debug", fail_fast=True)
    return path


def test_a_busy_soft_lockup_is_explained_down_to_the_injected_stall(race46: Path) -> None:
    """race seed 46 (v9, faults on): leak_balloon polls a page lock in a retry loop while the
    compactor that holds it (and balloon_lock, with five compactors behind it) sleeps on
    vb->acked for a deflate the device was told by an injected host.stall to sit on. The
    report names the polled page (never "None"), the chain through vb->acked to that stall,
    and the faults before it."""
    path = race46
    report = check.check_log(path)
    first = report.first
    assert first is not None and first.kind == "soft-lockup"
    assert "busy on a CPU, polling page:16101" in first.detail and "None" not in first.detail
    why = "\n".join(report.why)
    assert "None" not in why
    stall = next(r for r in iter_log(path)
                 if r["event"] == schema.FAULT and r["site"] == "host.stall"
                 and r["seq"] < first.seq and r["t"] > 6.7)
    chain = report.why[report.why.index(f"waits-for at t={first.t:.6f}:") + 1:]
    assert chain[0].startswith("  vballoon (running) polls page:16101 in a retry loop "
                               "<- held by compact_memory since")
    assert chain[1].startswith("  compact_memory (blocked) waits on vb->acked since")
    assert "5 wait for vb->balloon_lock" in chain[1]
    assert ("for the ack of deflateq hs=194" in chain[1]
            and f"injected host.stall at t={stall['t']:.6f} (seq {stall['seq']})" in chain[1])
    assert report.why[0].startswith("faults injected before it: 20")
    assert f"seq {stall['seq']} host.stall: {stall['detail']}" in why


def test_around_and_task_choose_the_records_shown(race46: Path) -> None:
    """--around SEQ shows the N records centred on it; --task NAME only that task's."""
    first = check.check_log(race46).first
    assert first is not None
    seq = first.seq - 100
    around = check.check_log(race46, history=6, around=seq)
    assert [r["seq"] for r in around.history] == list(range(seq - 3, seq + 3))
    mine = check.check_log(race46, history=50, task="compact_memory-3")
    assert len(mine.history) == 50
    assert all("compact_memory-3" in (r.get("task"), r.get("worker")) for r in mine.history)


def test_the_printed_report_never_shows_a_python_none(race46: Path) -> None:
    """The watchdog record's null fields print as the log writes them."""
    result = CliRunner().invoke(main, ["check", str(race46), "--context", "3"])
    assert result.exit_code == 1
    assert "None" not in result.output and "spinning_on=null" in result.output


def test_check_options_reach_the_report(race46: Path) -> None:
    """The CLI's --context, --around and --task select the same records as the API."""
    result = CliRunner().invoke(main, ["check", str(race46), "--json", "--context", "4",
                                       "--task", "compact_memory"])
    assert result.exit_code == 1, result.output
    story = orjson.loads(result.output)["first"]["history"]
    assert len(story) == 4 and all(r.get("task") == "compact_memory" for r in story)
    assert orjson.loads(result.output)["first"]["why"][0].startswith("faults injected")
