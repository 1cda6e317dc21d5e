"""Reading session logs back: JSON lines, plain or gzip, with errors that name the line.

The log tools (``check`` and its kin) read through here, so a damaged log is reported the same
way everywhere: :class:`LogError` with the path, the line number and why (bad JSON, a
truncated final line, a damaged gzip stream, an unreadable file).
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
