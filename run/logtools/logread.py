"""Reading session logs back: JSON lines, plain or gzip, with errors that name the line.

The log tools (``check``, ``trace``, ``replay``) read through here, so a damaged log is
reported the same way everywhere: :class:`LogError` with the path, the line number and why
(bad JSON, a truncated final line, a damaged gzip stream, an unreadable file).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, cast

import orjson


class LogError(Exception):
    """The log cannot be read: names the line and why (exit code 2)."""

    def __init__(self, line: int, why: str, path: str | None = None) -> None:
        self.line = line
        self.why = why
        self.path = path
        where = (f"{path}:{line}" if line else str(path)) if path else f"record {line}"
        super().__init__(f"{where}: {why}")


class BadRecord(Exception):
    """A parsed record a consumer cannot interpret; the reader adds the line number."""


def open_log(path: Path) -> IO[bytes]:
    """The log as a binary stream, gunzipped if it is gzip (by content, not by name)."""
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        return cast(IO[bytes], gzip.open(path, "rb") if gz else open(path, "rb"))
    except OSError as e:
        raise LogError(0, f"cannot read: {e.strerror or e}", str(path)) from None


def iter_log(path: Path, *, stop_seq: int | None = None) -> Iterator[dict[str, Any]]:
    """The log's records, in order (up to the one whose ``seq`` reaches ``stop_seq``); a line
    that cannot be read raises LogError naming it. Record number n is on line n."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    n = 0
    line = b"\n"
    where = str(path)
    try:
        with open_log(path) as f:
            for line in f:
                n += 1
                try:
                    rec = loads(line)
                except decode_error as e:
                    _bad_line(line, n, e, where)
                yield rec
                if stop_seq is not None and rec.get("seq", 0) >= stop_seq:
                    return
    except _READ_ERRORS as e:
        raise _read_error(e, n + 1, where) from None
    _check_end(line, n, where)


_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


def _read_error(e: Exception, line: int, where: str) -> LogError:
    """A damaged gzip stream or a failing read, as a LogError naming the line."""
    if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
        return LogError(line, f"cannot read: {e.strerror or e}", where)
    return LogError(line, f"compressed stream is damaged or cut short ({e})", where)


def _bad_line(line: bytes, n: int, e: Exception, where: str) -> NoReturn:
    if not line.endswith(b"\n"):
        raise LogError(n, _TRUNCATED, where)
    raise LogError(n, f"bad JSON: {e}", where) from None


def _check_end(line: bytes, n: int, where: str) -> None:
    """The writer ends every record with a newline: a last line without one was cut short."""
    if not line.endswith(b"\n"):
        raise LogError(n, _TRUNCATED, where)


_TRUNCATED = "truncated final line (no newline: the log was cut while being written)"

# -- strict streaming (trace, replay): numbered lines, every record's stamp checked ------------

Record = dict[str, Any]
_NUMBER = (int, float)
_STAMPED = (("t", _NUMBER), ("seq", (int,)), ("actor", (str,)), ("event", (str,)))


def lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` for every line; a final line without newline is yielded
    as is (``parse`` decides whether it is a truncated record)."""
    n = 0
    where = str(path)
    try:
        with open_log(path) as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except _READ_ERRORS as e:
        raise _read_error(e, n + 1, where) from None


def parse(path: Path, n: int, line: bytes) -> Record:
    """One record, with the four stamped keys checked; LogError says what is wrong."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        _bad_line(line, n, e, str(path))
    if type(record) is not dict:
        raise LogError(n, f"not a JSON object but {type(record).__name__}", str(path))
    try:  # the fast path: every stamped key there, with its type
        if (type(record["t"]) in _NUMBER and type(record["seq"]) is int
                and type(record["actor"]) is str and type(record["event"]) is str):
            return record
    except KeyError as e:
        raise LogError(n, f"record lacks {e}", str(path)) from None
    for key, kinds in _STAMPED:
        if type(record[key]) not in kinds:
            raise LogError(n, f"{key!r} is {record[key]!r}, not a "
                              f"{' or '.join(k.__name__ for k in kinds)}", str(path))
    return record


def records(path: Path) -> Iterator[tuple[int, Record]]:
    """``(line number, record)`` in log order; checks that ``seq`` increases and ``t`` never
    goes back (a concatenated or reordered log would silently mislead every reader)."""
    last_seq = -1
    last_t = float("-inf")
    for n, line in lines(path):
        record = parse(path, n, line)
        seq, t = record["seq"], record["t"]
        if seq <= last_seq:
            raise LogError(n, f"seq {seq} does not follow seq {last_seq}", str(path))
        if t < last_t:
            raise LogError(n, f"t {t} goes back (previous record at {last_t})", str(path))
        last_seq, last_t = seq, t
        yield n, record
