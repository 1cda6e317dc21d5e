"""``vballoon trace``: session logs as Chrome trace-event timelines, checked against the format
(``tests/run/trace_format.py``) and against the records they were made from."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from actors.sim import schema
from run.console.cli import main
from tests.run.logtools.trace_format import TraceFormatError, validate

Record = dict[str, Any]

# Small versions of the built-ins: a second or two of balloon movement and compaction each.
INFLATE_DEFLATE = ["inflate-deflate", "--set", "guest.memory=16MiB", "--duration", "3s",
                   "--set", 'host.policy.params={steps=[["1s","50%"],["2s","0%"]]}']
COMPACT_STORM = ["compact-storm", "--set", "guest.memory=16MiB", "--duration", "3s",
                 "--set",
                 'host.policy.params={steps=[["0.5s","25%"],["1.5s","10%"],["2s","30%"]]}',
                 "--set", 'compaction.at=["1s","2.2s"]', "--set", "compaction.workers=3"]


def _cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def _trace(log: Path, out: Path) -> dict[str, Any]:
    code, stdout, stderr = _cli("trace", str(log), "-o", str(out))
    assert code == 0, stderr
    assert f"wrote {out}" in stdout
    doc: dict[str, Any] = orjson.loads(out.read_bytes())
    return doc


def _records(log: Path) -> list[Record]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines()]


def _write_log(path: Path, records: list[Record]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _log(*body: tuple[float, str, str, dict[str, Any]]) -> list[Record]:
    """A hand-made log: session.start, the (t, actor, event, fields) records, session.end."""
    out: list[Record] = [{"t": 0.0, "seq": 1, "actor": "session", "event": schema.SESSION_START,
                          "seed": 3, "scenario": {"name": "tiny"}, "versions": {}, "git": "abc",
                          "wall_start": 0.0}]
    for t, actor, event, fields in body:
        out.append({"t": t, "seq": len(out) + 1, "actor": actor, "event": event, **fields})
    end = float(int(max(r["t"] for r in out)) + 1)
    out.append({"t": end, "seq": len(out) + 1, "actor": "session", "event": schema.SESSION_END,
                "reason": "completed", "summary": {}, "wall_end": 0.0})
    return out


ONE_HANDSHAKE = _log(
    (1.0, "guest0.balloon", schema.VQ_ADD, {"queue": "inflateq", "hs": 1, "pfns": [5, 6]}),
    (1.0, "host.guest0", schema.HOST_POP, {"queue": "inflateq", "hs": 1, "len": 8}),
    (1.0, "host.guest0", schema.HOST_INFLATE_DONE, {"hs": 1, "pfns": [5, 6], "rejected": 0}),
    (1.00002, "guest0.balloon", schema.VQ_ACK, {"queue": "inflateq", "hs": 1}),
)


def _meta(kind: str, pid: int, tid: int, **args: Any) -> dict[str, Any]:
    return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "ts": 0, "args": args}


def test_one_handshake_exact(tmp_path: Path) -> None:
    """One inflate handshake becomes exactly: a driver slice on the guest's inflateq track
    with add+notify and ack steps, a device slice on the host, a flow s→t→f through the three
    steps, the host's ballooned counter, and timestamps that keep the log's order 2 ns apart."""
    doc = _trace(_write_log(tmp_path / "one.jsonl", ONE_HANDSHAKE), tmp_path / "one.json")
    hs = {"id": 1, "name": "handshake", "cat": "virtqueue"}
    guest_q = {"pid": 2, "tid": 1001}
    device = {"pid": 1, "tid": 1002}
    assert doc["traceEvents"] == [
        _meta("process_name", 1, 0, name="host"),
        _meta("process_sort_index", 1, 0, sort_index=1000),
        _meta("thread_name", 1, 1000, name="session"),
        _meta("thread_sort_index", 1, 1000, sort_index=0),
        {"ph": "i", "name": "session.start", "cat": "session", "s": "t", "pid": 1, "tid": 1000,
         "ts": 0.0, "args": {"seed": 3, "scenario": {"name": "tiny"}, "versions": {},
                             "git": "abc", "wall_start": 0.0, "t": 0.0, "seq": 1}},
        _meta("process_name", 2, 0, name="guest0"),
        _meta("process_sort_index", 2, 0, sort_index=2),
        _meta("thread_name", 2, 1001, name="inflateq"),
        _meta("thread_sort_index", 2, 1001, sort_index=10),
        {"ph": "B", "name": "inflateq #1 (2 pfns)", "cat": "virtqueue", **guest_q,
         "ts": 1000000.0, "args": {"queue": "inflateq", "hs": 1, "pfns": [5, 6], "t": 1.0,
                                   "seq": 2}},
        {"ph": "X", "name": "add+notify", "cat": "virtqueue", **guest_q, "ts": 1000000.002,
         "dur": 0.003, "args": {"hs": 1, "seq": 2}},
        {"ph": "s", **hs, **guest_q, "ts": 1000000.004},
        _meta("thread_name", 1, 1002, name="device guest0"),
        _meta("thread_sort_index", 1, 1002, sort_index=2),
        {"ph": "B", "name": "inflateq #1", "cat": "virtqueue", **device, "ts": 1000000.006,
         "args": {"queue": "inflateq", "hs": 1, "len": 8, "t": 1.0, "seq": 3}},
        {"ph": "t", **hs, **device, "ts": 1000000.008},
        {"ph": "E", "name": "inflateq #1", "cat": "virtqueue", **device, "ts": 1000000.01,
         "args": {"hs": 1, "pfns": [5, 6], "rejected": 0, "t": 1.0, "seq": 4}},
        {"ph": "C", "name": "ballooned guest0", **device, "ts": 1000000.012,
         "args": {"pages": 2}},
        {"ph": "X", "name": "ack", "cat": "virtqueue", **guest_q, "ts": 1000020.0,
         "dur": 0.003, "args": {"hs": 1, "seq": 5}},
        {"ph": "f", **hs, **guest_q, "ts": 1000020.002, "bp": "e"},
        {"ph": "E", "name": "inflateq #1 (2 pfns)", "cat": "virtqueue", **guest_q,
         "ts": 1000020.004, "args": {"acked_t": 1.00002, "acked_seq": 5}},
        {"ph": "i", "name": "session.end", "cat": "session", "s": "t", "pid": 1, "tid": 1000,
         "ts": 2000000.0, "args": {"reason": "completed", "summary": {}, "wall_end": 0.0,
                                   "t": 2.0, "seq": 6}},
    ]
    assert doc["displayTimeUnit"] == "ns"
    assert doc["otherData"]["max_skew_us"] == pytest.approx(0.012)
    assert doc["otherData"]["records"] == len(ONE_HANDSHAKE)
    validate(doc)
    validate(doc, perfetto_ns=True)


def test_gzip_log_gives_the_same_trace(tmp_path: Path) -> None:
    """A gzip-compressed log (recognised by its magic, not its name) traces identically."""
    plain = _write_log(tmp_path / "a.jsonl", ONE_HANDSHAKE)
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = _trace(plain, tmp_path / "a.json")
    b = _trace(packed, tmp_path / "b.json")
    assert b["otherData"].pop("log") == "b.jsonl.gz"
    a["otherData"].pop("log")
    assert a == b


def _events(doc: dict[str, Any], ph: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph
            and all(e.get(k) == v for k, v in match.items())]


def test_instants_and_what_the_log_leaves_open(tmp_path: Path) -> None:
    """Violations are global instants, lockdep/watchdog reports and any ``fault.*`` event are
    process instants on their task's track; a lock held at the end, a handshake never acked
    and a page still isolated close at the end of the log (their flows end there too); a
    lock released out of order splits the slice above it instead of breaking the nesting."""
    k, c, b = "guest0.kernel", "guest0.compaction", "guest0.balloon"
    acq = {"kind": "mutex", "waited": 0.0}
    log = _log(
        (1.0, k, schema.LOCK_ACQUIRE, {"task": "vballoon", "lock": "A", **acq}),
        (1.0, k, schema.LOCK_ACQUIRE, {"task": "vballoon", "lock": "B", **acq}),
        (1.1, k, schema.LOCK_RELEASE, {"task": "vballoon", "lock": "A", "kind": "mutex",
                                       "held": 0.1}),
        (1.2, k, schema.LOCK_RELEASE, {"task": "vballoon", "lock": "B", "kind": "mutex",
                                       "held": 0.2}),
        (2.0, k, schema.LOCK_ACQUIRE, {"task": "vballoon", "lock": "vb->balloon_lock", **acq}),
        (2.0, b, schema.VQ_ADD, {"queue": "deflateq", "hs": 7, "pfns": [9]}),
        (2.0, c, schema.BALLOON_ISOLATE, {"worker": "kcompactd0", "mid": 1, "pfn": 9}),
        (2.5, k, schema.LOCKDEP, {"kind": "recursion", "task": "vballoon",
                                  "lock": "vb->balloon_lock", "detail": "self-deadlock",
                                  "held_locks": ["vb->balloon_lock"]}),
        (2.5, k, schema.LOCK_CONTENDED, {"task": "vballoon", "lock": "vb->balloon_lock",
                                         "kind": "mutex", "owner": "vballoon"}),
        (3.0, "host.guest0", "fault.host_stall", {"queue": "deflateq", "for": 1.0}),
        (4.0, "session", schema.VIOLATION, {"kind": "conservation", "detail": "lost a page"}),
        (9.0, k, schema.HUNG_TASK, {"task": "vballoon", "waiting_on": "vb->balloon_lock",
                                    "blocked_for": 6.5, "all_locks": []}),
    )
    doc = _trace(_write_log(tmp_path / "x.jsonl", log), tmp_path / "x.json")
    checked = validate(doc)
    validate(doc, perfetto_ns=True)
    names = checked.thread_names
    [violation] = _events(doc, "i", name="invariant.violation: conservation")
    assert violation["s"] == "g" and violation["args"]["detail"] == "lost a page"
    for event in (schema.LOCKDEP, schema.HUNG_TASK):
        [report] = _events(doc, "i", name=event)
        assert report["s"] == "p" and names[(report["pid"], report["tid"])] == "vballoon"
    [fault] = _events(doc, "i", name="fault.host_stall")
    assert (fault["s"], fault["cat"], fault["args"]["for"]) == ("p", "fault", 1.0)
    assert names[(fault["pid"], fault["tid"])] == "device guest0"
    # B was taken inside A and outlived it: cut at A's release, continued after.
    ends = [(e["name"], e.get("args", {})) for e in _events(doc, "E")]
    assert ("B", {"split": True}) in ends
    assert [e["args"] for e in _events(doc, "B", name="B")][1] == {"continued": True}
    # Left open: the held balloon_lock, the deadlocked wait for it, the deflate handshake.
    open_at_end = {n for n, a in ends if a == {"open_at_end": True}}
    assert open_at_end == {"vb->balloon_lock", "wait vb->balloon_lock", "deflateq #7 (1 pfns)"}
    phases = {e["name"]: "".join(x["ph"] for x in checked.flows[_flow_of(doc, e)])
              for e in _events(doc, "X") if e["name"] in ("never acked", "still isolated")}
    assert phases == {"never acked": "sf", "still isolated": "sf"}


def _flow_of(doc: dict[str, Any], step: dict[str, Any]) -> int:
    """The id of the flow whose event sits inside step slice ``step``."""
    [fid] = {e["id"] for e in doc["traceEvents"] if e["ph"] in "stf" and e["pid"] == step["pid"]
             and e["tid"] == step["tid"] and step["ts"] <= e["ts"] <= step["ts"] + step["dur"]}
    return int(fid)


@pytest.mark.parametrize(("name", "body", "line", "why"), [
    ("truncated", lambda lines: [*lines[:-1], lines[-1][:30]], 6, "truncated final line"),
    ("not json", lambda lines: [lines[0], b"{oops\n", *lines[1:]], 2, "bad JSON"),
    ("unknown event", lambda lines: [lines[0], lines[1].replace(b"vq.add", b"vq.bogus"),
                                     *lines[2:]], 2, "unknown event 'vq.bogus'"),
    ("lacks field", lambda lines: [lines[0], lines[1].replace(b'"hs":1,', b""), *lines[2:]],
     2, "vq.add record lacks field 'hs'"),
    ("seq goes back", lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 3,
     "seq 2 does not follow seq 3"),
    ("no seq", lambda lines: [lines[0], lines[1].replace(b'"seq":2,', b""), *lines[2:]], 2,
     "record lacks 'seq'"),
])
def test_unreadable_log_exits_2_naming_the_line(
        tmp_path: Path, name: str, body: Any, line: int, why: str) -> None:
    """A log that cannot be read is exit 2 with one line naming the file, the line and why,
    and no trace file is left behind."""
    lines = orjson.dumps(ONE_HANDSHAKE[0]) + b"\n"
    raw = [lines] + [orjson.dumps(r) + b"\n" for r in ONE_HANDSHAKE[1:]]
    log = tmp_path / "bad.jsonl"
    log.write_bytes(b"".join(body(raw)))
    out = tmp_path / "bad.json"
    code, _, err = _cli("trace", str(log), "-o", str(out))
    assert code == 2
    assert err.startswith(f"vballoon: error: {log}:{line}: ")
    assert why in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_or_corrupt_gzip_log_exits_2(tmp_path: Path) -> None:
    """A log that does not exist, or a gzip stream cut short, is exit 2 saying so."""
    code, _, err = _cli("trace", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "t.json"))
    assert code == 2 and "cannot read" in err
    packed = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in ONE_HANDSHAKE))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    code, _, err = _cli("trace", str(cut), "-o", str(tmp_path / "t.json"))
    assert code == 2 and "compressed stream is damaged or cut short" in err


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Real logs of the small scenarios at info and debug level, run through the CLI."""
    root = tmp_path_factory.mktemp("trace-sessions")
    logs: dict[tuple[str, str], Path] = {}
    for args in (INFLATE_DEFLATE, COMPACT_STORM):
        for level in ("info", "debug"):
            log = root / f"{args[0]}-{level}.jsonl"
            code, _, err = _cli("run", *args, "--seed", "1", "--level", level, "--log", str(log))
            assert code == 0, err
            logs[(args[0], level)] = log
    return logs


@pytest.mark.parametrize("scenario", ["inflate-deflate", "compact-storm"])
@pytest.mark.parametrize("level", ["info", "debug"])
def test_real_session_trace_is_valid_and_matches_its_log(
        sessions: dict[tuple[str, str], Path], tmp_path: Path, scenario: str, level: str) -> None:
    """The trace of a real session validates (as written and as Perfetto reads it), and its
    flows, lock slices, counters and timestamps agree with the records it came from."""
    log = sessions[(scenario, level)]
    doc = _trace(log, tmp_path / "t.json")
    checked = validate(doc)
    validate(doc, perfetto_ns=True)
    records = _records(log)
    count = Counter(r["event"] for r in records)
    assert set(checked.process_names.values()) == {"host", "guest0"}

    # One handshake flow per add: driver → device → driver for every acked buffer, driver →
    # device for the stats buffers (their return is not logged).
    hs_phases = Counter("".join(e["ph"] for e in f) for f in checked.flows.values()
                        if f[0]["name"] == "handshake")
    stats_adds = sum(1 for r in records if r["event"] == schema.VQ_ADD
                     and r["queue"] == "statsq")
    assert hs_phases == {"stf": count[schema.VQ_ACK], "sf": stats_adds}
    assert sum(hs_phases.values()) == count[schema.VQ_ADD]

    # One migration flow per isolated page: through its two handshakes when it moved.
    mig_phases = Counter("".join(e["ph"] for e in f) for f in checked.flows.values()
                         if f[0]["name"] == "migration")
    assert mig_phases == {k: v for k, v in (("sttf", count[schema.BALLOON_MIGRATE]),
                                            ("sf", count[schema.BALLOON_PUTBACK])) if v}
    if scenario == "compact-storm":
        assert count[schema.BALLOON_MIGRATE] > 0

    # Lock holds are slices exactly when locks are logged (debug).
    holds = [e for e in _events(doc, "B", cat="lock") if not e["name"].startswith("wait ")
             and e["args"] != {"continued": True}]
    assert len(holds) == count[schema.LOCK_ACQUIRE]
    assert (len(holds) > 0) == (level == "debug")

    # Counters end where the log says the session ended.
    def last(name: str) -> float:
        return float(_events(doc, "C", name=name)[-1]["args"].popitem()[1])

    balloon = records[-1]["summary"]["balloon"]
    sizes = [r["num_pages"] for r in records
             if r["event"] in (schema.BALLOON_FILL, schema.BALLOON_LEAK)]
    assert last("balloon list") == sizes[-1] == balloon["pages_in_list"] + balloon["isolated"]
    assert last("balloon actual") == balloon["actual"]
    assert last("ballooned guest0") == (
        records[-1]["summary"]["host"]["guests"]["guest0"]["ballooned"])
    if count[schema.BALLOON_ISOLATE]:
        assert last("isolated") == balloon["isolated"]
    snapshot = [r for r in records if r["event"] in (schema.MEM_SNAPSHOT, schema.COMPACT_END)]
    if snapshot:
        r = snapshot[-1]
        want = (sum(r["buddyinfo"][9:]) if r["event"] == schema.MEM_SNAPSHOT
                else r["free_order9"])
        assert last("free order-9") == want

    # Every slice and instant sits at its record's virtual time, at most max_skew_us after.
    skew_ns = round(doc["otherData"]["max_skew_us"] * 1000)
    for e in doc["traceEvents"]:
        if e["ph"] in "BiX" and "t" in e.get("args", {}):
            assert 0 <= round(e["ts"] * 1000) - round(e["args"]["t"] * 1e9) <= skew_ns


def test_v9_deadlock_trace_shows_reports_and_the_lock_held_at_the_end(tmp_path: Path) -> None:
    """The seed patch's fill_balloon deadlock (v9, overcommit): the lockdep reports are
    process instants on the balloon kthread's track, and its balloon_lock hold and its wait
    for the same lock are open until the end of the log."""
    log = tmp_path / "v9.jsonl"
    code, _, _ = _cli("run", "overcommit", "--set", "guest.driver=v9", "--set",
                      "guest.memory=16MiB", "--duration", "11s", "--level", "debug",
                      "--log", str(log))
    assert code == 1
    doc = _trace(log, tmp_path / "v9.json")
    checked = validate(doc)
    reports = [r for r in _records(log) if r["event"] == schema.LOCKDEP]
    assert {r["kind"] for r in reports} >= {"recursion"}
    instants = _events(doc, "i", name=schema.LOCKDEP)
    assert [(e["s"], checked.thread_names[(e["pid"], e["tid"])], e["args"]["kind"])
            for e in instants] == [("p", "vballoon", r["kind"]) for r in reports]
    left = {(checked.thread_names[(e["pid"], e["tid"])], e["name"])
            for e in _events(doc, "E") if e.get("args") == {"open_at_end": True}}
    assert {("vballoon", "vb->balloon_lock"), ("vballoon", "wait vb->balloon_lock")} <= left


def test_validator_rejects_what_viewers_cannot_draw() -> None:
    """The validator itself catches crossing slices, an E with no B, a flow with no end, a
    flow event outside any slice and time going back on a track."""
    meta = [_meta("process_name", 1, 0, name="p"), _meta("thread_name", 1, 10, name="t")]

    def ev(ph: str, ts: float, name: str = "a", **kw: Any) -> dict[str, Any]:
        return {"ph": ph, "name": name, "pid": 1, "tid": 10, "ts": ts, **kw}

    cases = {
        "overlaps": [ev("B", 1, "a"), ev("X", 2, "b", dur=5), ev("E", 3, "a")],
        "E without": [ev("E", 1)],
        "phases": [ev("X", 1, dur=1), ev("s", 1.5, id=1, cat="c")],
        "no enclosing slice": [ev("X", 1, dur=1), ev("s", 5, id=1, cat="c"),
                               ev("X", 6, dur=1), ev("f", 6.5, id=1, cat="c", bp="e")],
        "goes back": [ev("i", 2, s="t"), ev("i", 1, s="t")],
    }
    for why, events in cases.items():
        with pytest.raises(TraceFormatError, match=why):
            validate({"traceEvents": meta + events})
    validate({"traceEvents": [*meta, ev("X", 1, dur=1), ev("s", 1.5, id=1, cat="c"),
                              ev("X", 3, dur=1), ev("f", 3.5, id=1, cat="c", bp="e")]})
