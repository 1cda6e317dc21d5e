"""Reading a session log back: JSON lines, plain or gzip, one record at a time.

The log tools (``trace``, and any other reader) stream through logs that can hold millions of
records, so nothing here loads a whole file. A log that cannot be read is reported as a
``LogError`` naming the file, the line and why, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]

_GZIP_MAGIC = b"\x1f\x8b"
_NUMBER = (int, float)
_STAMPED = (("t", _NUMBER), ("seq", (int,)), ("actor", (str,)), ("event", (str,)))


class LogError(Exception):
    """The log cannot be read: ``line`` is 1-based (0: the file itself)."""

    def __init__(self, path: Path, line: int, why: str) -> None:
        self.path = path
        self.line = line
        self.why = why
        where = f"{path}" if line == 0 else f"{path} line {line}"
        super().__init__(f"{where}: {why}")


def _open(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.open("rb")
    except OSError as e:
        raise LogError(path, 0, f"cannot read: {e.strerror or e}") from None
    if raw.read(2) == _GZIP_MAGIC:
        raw.close()
        return gzip.GzipFile(path, "rb")
    raw.seek(0)
    return raw


def lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` for every line; a final line without newline is yielded
    as is (the record parser decides whether it is a truncated record)."""
    lineno = 0
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise LogError(path, lineno + 1, f"gzip stream is corrupt or truncated ({e})") from None
    except OSError as e:
        raise LogError(path, lineno + 1, f"cannot read: {e.strerror or e}") from None


def parse(path: Path, lineno: int, line: bytes) -> Record:
    """One record, with the four stamped keys checked; LogError says what is wrong."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        if not line.endswith(b"\n"):
            raise LogError(path, lineno, f"truncated record (no newline at end of file): {e}"
                           ) from None
        raise LogError(path, lineno, f"not a JSON record: {e}") from None
    if type(record) is not dict:
        raise LogError(path, lineno, f"not a JSON object but {type(record).__name__}")
    try:  # the fast path: every stamped key there, with its type
        if (type(record["t"]) in _NUMBER and type(record["seq"]) is int
                and type(record["actor"]) is str and type(record["event"]) is str):
            return record
    except KeyError as e:
        raise LogError(path, lineno, f"record lacks {e}") from None
    for key, kinds in _STAMPED:
        if type(record[key]) not in kinds:
            raise LogError(path, lineno, f"{key!r} is {record[key]!r}, not a "
                           f"{' or '.join(k.__name__ for k in kinds)}")
    return record


def records(path: Path) -> Iterator[tuple[int, Record]]:
    """``(line number, record)`` in log order; checks that ``seq`` increases and ``t`` never
    goes back (a concatenated or reordered log would silently mislead every reader)."""
    last_seq = -1
    last_t = float("-inf")
    for lineno, line in lines(path):
        record = parse(path, lineno, line)
        seq, t = record["seq"], record["t"]
        if seq <= last_seq:
            raise LogError(path, lineno, f"seq {seq} does not follow seq {last_seq}")
        if t < last_t:
            raise LogError(path, lineno, f"t {t} goes back (previous record at {last_t})")
        last_seq, last_t = seq, t
        yield lineno, record
