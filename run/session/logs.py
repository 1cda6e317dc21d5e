"""One structured-log pipeline per session: stamp, render, fan out to sinks.

structlog is configured per session (never globally) so that tests, ``compare`` and ``fuzz``
can run many sessions in one process. Every record gets ``t`` (virtual seconds), ``seq``
(global order), ``actor`` and ``event`` first, in that order, so logs diff cleanly. Records
below the session's level are dropped by structlog's filtering bound logger (``debug``
logging costs one no-op method call when off); the others go from the logger method straight
to ``SessionLog._emit``, which stamps them and writes them to every sink.

PFN lists are logged as the arrays the actors hold (``array('I')`` or numpy), never copied into
lists: orjson writes them as JSON lists, byte for byte what a list would give. In-memory sinks
(the flight recorder, a ``validate`` hook) see those arrays, so compare them as ``list(...)``.
"""

from __future__ import annotations

import array
import enum
import math
from collections import deque
from collections.abc import Callable
from typing import IO, Any, ClassVar, Protocol

import numpy as np
import orjson
import structlog
from rich.console import Console
from structlog.typing import FilteringBoundLogger

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

Record = dict[str, Any]


def _default(obj: object) -> object:
    """orjson fallback for the few non-JSON types actors log (PFN arrays, enums, sets).

    A PFN ``array('I')`` goes back to orjson as a numpy view of the same memory, which it
    writes itself (``OPT_SERIALIZE_NUMPY``: no list of int objects in between, same bytes).
    """
    if isinstance(obj, array.array):
        return np.frombuffer(obj, dtype=obj.typecode)  # numpy reads C type codes as array does
    if isinstance(obj, np.ndarray):  # one orjson does not write natively (not contiguous)
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot log value of type {type(obj).__name__}")


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


def dumps(record: Record) -> bytes:
    """One JSON line (with newline) exactly as the file sink writes it.

    PFN lists may be logged as ``array('I')`` or numpy integer arrays (what the actors hold):
    they are written as the JSON list of their values. A logged array must not change after
    the call that logs it: in-memory sinks keep the record, and serialise it later.
    """
    try:
        return orjson.dumps(record, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:  # rare: an integer beyond 64 bits, or a value orjson refuses
        return orjson.dumps(_jsonable(record), default=_default, option=_OPTIONS)


def json_bytes(value: Any, *, indent: bool = False) -> bytes:
    """``value`` as JSON (a summary, a report): the same fallbacks as the log writer."""
    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_default, option=option)
    except orjson.JSONEncodeError:
        return orjson.dumps(_jsonable(value), default=_default, option=option)


_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1


def _jsonable(value: Any) -> Any:
    """``value`` with every integer JSON's 64-bit readers cannot hold written as its decimal
    string, and every value orjson cannot write as ``<TYPE>`` (the record is still logged,
    whole, and says what it held; nothing is dropped from the sequence)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if _I64_MIN <= value <= _U64_MAX:
            return value
        try:
            return str(value)
        except ValueError:  # beyond Python's digit limit for int → str
            return f"<int of {value.bit_length()} bits>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    try:
        orjson.dumps(value, default=_default, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return f"<{type(value).__name__}>"
    return value


class FlightRecorder:
    """Keeps the last ``capacity`` records in memory: a cheap log for fuzzing and tests."""

    def __init__(self, capacity: int | None = None) -> None:
        self.records: deque[Record] = deque(maxlen=capacity)

    def write(self, record: Record) -> None:
        self.records.append(record)


class JsonLinesFile:
    """Writes records as orjson lines to a binary file, flushed when the session closes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def write(self, record: Record) -> None:
        self.stream.write(orjson.dumps(record, default=_default, option=_OPTIONS))  # = dumps()

    def flush(self) -> None:
        self.stream.flush()


class PrettyConsole:
    """Human-readable records on a rich console (``vballoon run -v``)."""

    _STYLE: ClassVar[dict[str, str]] = {
        "debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}
    _HEAD: ClassVar[tuple[str, ...]] = ("t", "seq", "actor", "event", "level")

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, record: Record) -> None:
        head = (f"{record['t']:12.6f} {record['seq']:>7} {record['actor']:<18} "
                f"{record['event']:<22}")
        rest = " ".join(
            f"{k}={v}" for k, v in record.items() if k not in self._HEAD
        )
        if len(rest) > 200:
            rest = rest[:197] + "..."
        self.console.print(head, rest, style=self._STYLE.get(record.get("level", "info"), ""),
                           markup=False, highlight=False)


class Sink(Protocol):
    """Where records go: anything that takes them one at a time (a file, memory, a monitor)."""

    def write(self, record: Record) -> None: ...


class SessionLog:
    """The session's logger factory: ``log.logger("guest0.balloon").info(EVENT, k=v)``."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        level: str = "info",
        sinks: list[Sink] | None = None,
        validate: Callable[[Record], None] | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
        self.level = level
        self.clock = clock
        self.sinks: list[Sink] = list(sinks or [])
        self._writes = tuple(sink.write for sink in self.sinks)
        self.seq = 0
        self._now, self._t = math.nan, 0.0  # the last clock reading, and it rounded
        self._validate = validate
        self._wrapper = self._wrapper_class(LEVELS[level])
        self.closed = False

    def add_sink(self, sink: Sink) -> None:
        """One more destination for the records to come (the log file, once the run starts)."""
        self.sinks.append(sink)
        self._writes = (*self._writes, sink.write)

    def _wrapper_class(self, min_level: int) -> type[FilteringBoundLogger]:
        """structlog's filtering bound logger with the record built in one step.

        Records below ``min_level`` stay structlog's no-op methods. An enabled method goes
        straight to ``_emit`` instead of through structlog's generic chain (copy the bound
        context, merge the call's fields, run the processor list, call the wrapped logger):
        the same record, key for key, at about half the cost -- actors log millions.
        """
        emit = self._emit
        base: Any = structlog.make_filtering_bound_logger(min_level)

        def method(name: str) -> Callable[..., Any]:
            interpolating = getattr(base, name)  # structlog's own, for "%s"-style args

            def meth(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
                if args:
                    return interpolating(self, event, *args, **kw)
                return emit(name, self._context, event, kw)

            meth.__name__ = name
            return meth

        class SessionBoundLogger(base):  # type: ignore[misc]
            def _proxy_to_logger(self, method_name: str, event: str | None = None,
                                 **event_kw: Any) -> Any:
                return emit(method_name, self._context, event, event_kw)

        # The enabled level methods call _emit directly (structlog's go through
        # _proxy_to_logger: one call and one copy of the fields more per record).
        for name, level in LEVELS.items():
            if level >= min_level:
                setattr(SessionBoundLogger, name, method(name))
        return SessionBoundLogger

    def _emit(self, method: str, context: dict[str, Any], event: str | None,
              fields: dict[str, Any]) -> Any:
        """Stamp one record (``t``, ``seq``, ``actor``, ``event`` first) and write it out."""
        self.seq += 1
        now = self.clock()
        if now != self._now:  # records come in runs at one time: round each time once
            self._now, self._t = now, round(now, 9)
        actor = fields.pop("actor") if "actor" in fields else context.get("actor", "session")
        record: Record
        if method == "info" and len(context) <= 1:  # the usual record, built in one step
            record = {"t": self._t, "seq": self.seq, "actor": actor, "event": event, **fields}
        else:
            record = {"t": self._t, "seq": self.seq, "actor": actor, "event": event}
            if method != "info":
                record["level"] = method
            if len(context) > 1:  # fields bound besides the actor come before the call's own
                record.update((k, v) for k, v in context.items() if k != "actor")
            record.update(fields)
        if self._validate is not None:
            self._validate(record)
        for write in self._writes:
            write(record)
        return None

    def logger(self, actor: str) -> FilteringBoundLogger:
        """A bound logger stamping records as coming from ``actor``."""
        logger: FilteringBoundLogger = structlog.wrap_logger(  # .bind(): not a lazy proxy
            None, processors=[], wrapper_class=self._wrapper, actor=actor).bind()
        return logger

    def enabled(self, level: str) -> bool:
        """Whether records of ``level`` are kept: guard expensive field computations with it."""
        return LEVELS[level] >= LEVELS[self.level]

    def flush(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, JsonLinesFile):
                sink.flush()
