"""The session log pipeline: stamping, ordering, filtering, sinks."""

import io
from typing import Any

import orjson
import pytest

from run.session.logs import FlightRecorder, JsonLinesFile, SessionLog


def test_records_start_with_t_seq_actor_event() -> None:
    """Every record leads with t, seq, actor, event, in that order, then its fields."""
    buf = io.BytesIO()
    log = SessionLog(clock=lambda: 1.25, sinks=[JsonLinesFile(buf)])
    log.logger("guest0.balloon").info("x.y", pfns=[1, 2])
    line = buf.getvalue().decode()
    assert line == '{"t":1.25,"seq":1,"actor":"guest0.balloon","event":"x.y","pfns":[1,2]}\n'


def test_seq_is_global_across_actors() -> None:
    """seq orders records from all actors of a session in one sequence."""
    rec = FlightRecorder()
    log = SessionLog(clock=lambda: 0.0, sinks=[rec])
    log.logger("a").info("e1")
    log.logger("b").info("e2")
    log.logger("a").warning("e3")
    assert [(r["seq"], r["actor"]) for r in rec.records] == [(1, "a"), (2, "b"), (3, "a")]
    assert rec.records[2]["level"] == "warning"


def test_debug_filtered_when_level_info() -> None:
    """Records below the session level never reach a sink nor consume a seq number."""
    rec = FlightRecorder()
    log = SessionLog(clock=lambda: 0.0, level="info", sinks=[rec])
    lg = log.logger("a")
    lg.debug("dropped", x=1)
    lg.info("kept")
    assert [r["event"] for r in rec.records] == ["kept"]
    assert rec.records[0]["seq"] == 1
    assert not log.enabled("debug") and log.enabled("error")


def test_flight_recorder_capacity() -> None:
    """The flight recorder keeps only the newest records."""
    rec = FlightRecorder(capacity=2)
    log = SessionLog(clock=lambda: 0.0, sinks=[rec])
    for i in range(5):
        log.logger("a").info("e", i=i)
    assert [r["i"] for r in rec.records] == [3, 4]


def test_arrays_and_sets_serialise() -> None:
    """PFN arrays and sets are logged as JSON lists (sets sorted, for determinism)."""
    import array

    buf = io.BytesIO()
    log = SessionLog(clock=lambda: 0.0, sinks=[JsonLinesFile(buf)])
    log.logger("a").info("e", pfns=array.array("I", [3, 1]), s={5, 2})
    rec = orjson.loads(buf.getvalue())
    assert rec["pfns"] == [3, 1] and rec["s"] == [2, 5]


def test_numpy_pfn_arrays_serialise_like_lists() -> None:
    """numpy PFN arrays (contiguous or not) and PFN arrays write exactly the bytes of lists."""
    import array

    import numpy as np

    from run.session.logs import dumps

    g = np.array([7, 0, 4294967295, 12], dtype=np.uint32)
    as_arrays: dict[str, Any] = {
        "a": g, "b": g[::2], "c": array.array("I", g.tobytes()), "d": g[:0],
        "e": array.array("I"), "f": np.arange(3), "g": array.array("l", [-1])}
    as_lists = {k: [int(x) for x in v] for k, v in as_arrays.items()}
    assert dumps(as_arrays) == dumps(as_lists)


def test_unknown_level_rejected() -> None:
    """A typo in the level is an error, not silence."""
    with pytest.raises(ValueError, match="unknown log level"):
        SessionLog(clock=lambda: 0.0, level="verbose")


def test_bound_fields_and_actor_override_keep_structlog_order() -> None:
    """Bound fields come before the call's own; an explicit actor= replaces the bound one."""
    rec = FlightRecorder()
    log = SessionLog(clock=lambda: 0.5, sinks=[rec])
    lg = log.logger("guest0").bind(cpu=1, queue="inflateq")
    lg.error("e", queue="deflateq", hs=3)
    lg.info("f", actor="host")
    assert [list(r.items()) for r in rec.records] == [
        [("t", 0.5), ("seq", 1), ("actor", "guest0"), ("event", "e"), ("level", "error"),
         ("cpu", 1), ("queue", "deflateq"), ("hs", 3)],
        [("t", 0.5), ("seq", 2), ("actor", "host"), ("event", "f"), ("cpu", 1),
         ("queue", "inflateq")],
    ]


def test_positional_args_interpolate_as_structlog_does() -> None:
    """The direct level methods keep structlog's "%s"-style interpolation of positional args."""
    rec = FlightRecorder()
    log = SessionLog(clock=lambda: 0.0, sinks=[rec])
    log.logger("a").info("moved %d pages", 3, queue="inflateq")
    log.logger("a").warning("plain", n=1)
    assert [(r["event"], r.get("queue"), r.get("level")) for r in rec.records] == [
        ("moved 3 pages", "inflateq", None), ("plain", None, "warning")]


@pytest.mark.parametrize(("value", "written"), [
    (1 << 64, b'"18446744073709551616"'),
    (-(1 << 63) - 1, b'"-9223372036854775809"'),
    (10**5000, b'"<int of 16610 bits>"'),
    ((1 << 64) - 1, b"18446744073709551615"),
], ids=["u64+1", "i64-1", "5000-digits", "u64-max"])
def test_integers_beyond_64_bits_are_written_as_strings(value: int, written: bytes) -> None:
    """A value no 64-bit JSON reader holds is written as its decimal string (or its size),
    so the record is never dropped and ``seq`` never has a gap."""
    from run.session.logs import dumps

    assert dumps({"v": value}) == b'{"v":' + written + b"}\n"
