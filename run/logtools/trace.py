"""A session log as a Chrome trace-event timeline (Perfetto, chrome://tracing).

``vballoon trace LOG -o trace.json`` writes the trace-event "JSON Object Format": one process
per guest and one for the host, one thread track per actor (the guest's kernel tasks, the
driver side of each virtqueue, the host's device per guest, ...); handled messages, lock holds,
lock waits and compaction runs as slices; every virtqueue handshake and every balloon
migration as a flow (arrows across tracks); balloon size, isolated pages and free order-9
blocks as counters; violations, lockdep and watchdog reports and injected faults as instants.
The README's "Timeline" section says what each of them means.

Timestamps. The log's time is virtual: many records share one instant (a whole inflate round
happens at one ``t``), but their order (``seq``) matters. Every trace event therefore gets
its own timestamp ``ts = max(t, previous ts + 2 ns)`` (in µs; the flow events of one step
share theirs): the log's order is kept
exactly and strictly, per track and across tracks, and each event is shown at its true time
or slightly after it, by at most ``otherData.max_skew_us`` (a few µs after a burst of records
at one instant). 2 ns, not 1: viewers truncate µs to whole ns, and a 1 ns step could make two
events equal. Each slice and instant carries the record's exact ``t`` and ``seq`` in its args.

Slices open with ``B`` and close with ``E`` when the closing record arrives, so the exporter
streams: one pass over the log (plus a quick pre-scan for the handshake ids of migrations,
which are logged only after the handshakes themselves), memory for the open slices only.
Handshake and migration steps are tiny ``X`` slices (3 ns) with their flow events 2 ns in,
strictly inside them, so each flow event binds to its step and arrows go forward in time
from step to step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from actors.sim import schema
from run.logtools.logread import LogError, Record, lines, records

STEP_NS: Final = 2  # display-clock step between two trace events (see the module docstring)
# A step slice lasts 3 ns: its flow events come one step (2 ns) in, the next event two steps.
TINY_US: Final = (STEP_NS + 1) / 1000
FIRST_TID: Final = 1000  # tids are unique across processes and never equal a pid
HOST_PID: Final = 1
MAX_LIST: Final = 16  # longer lists in args are cut (PFN lists of a whole round)
FAULT_PREFIX: Final = "fault."

# Flow kinds: (name, category). Perfetto matches flow events by (id, cat, name).
HANDSHAKE_FLOW: Final = ("handshake", "virtqueue")
MIGRATION_FLOW: Final = ("migration", "compaction")

#: Flow events a slice carries: (phase s/t/f, flow id, flow kind).
Flows = tuple[tuple[str, int, tuple[str, str]], ...]

_dumps = orjson.dumps
_STAMP: Final = frozenset(("t", "seq", "actor", "event", "level"))
_ERRORS: Final = frozenset(n for n, spec in schema.EVENTS.items() if spec.level == "error")
_QUEUES: Final = ("inflateq", "deflateq", "statsq")


@dataclass(slots=True)
class Track:
    """One thread track: its ids and the stack of its open ``B`` slices (key, name, cat)."""

    pid: int
    tid: int
    name: str
    stack: list[tuple[Hashable, str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TraceStats:
    """What an export produced, for the CLI's one-line report."""

    records: int
    events: int
    handshakes: int
    migrations: int
    lock_holds: int
    instants: int
    max_skew_us: float


def _compact(value: object) -> object:
    """Args values: long lists of numbers become one readable string (PFN lists)."""
    if isinstance(value, list) and len(value) > MAX_LIST and not any(
            isinstance(v, dict | list) for v in value[:MAX_LIST]):
        head = " ".join(str(v) for v in value[:MAX_LIST])
        return f"{head} ... ({len(value)} in all)"
    return value


def _args(record: Record) -> dict[str, Any]:
    """A record's own fields as slice/instant args, plus its exact ``t`` and ``seq``."""
    args = {k: _compact(v) for k, v in record.items() if k not in _STAMP}
    args["t"] = record["t"]
    args["seq"] = record["seq"]
    return args


class TraceWriter:
    """The trace-event stream: the display clock, tracks and their metadata, and events."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._buf: list[bytes] = []
        self._put = self._buf.append  # one C call per event on the hot paths
        self.events = 0
        self._rec_ns = 0
        self._last_ns = -STEP_NS
        self.max_skew_ns = 0
        self._pids: dict[str, int] = {}
        self._next_pid = HOST_PID + 1
        self._tracks: dict[tuple[int, str], Track] = {}
        self._next_tid = FIRST_TID
        out.write(b'{"traceEvents":[\n')

    # -- time --------------------------------------------------------------------------------
    def at(self, t: float) -> None:
        """The next record happened at virtual time ``t`` seconds. (Also where the previous
        record's events are settled: its last event was its latest, and buffers flush.)"""
        self._settle()
        self._rec_ns = round(t * 1e9)

    def _settle(self) -> None:
        skew = self._last_ns - self._rec_ns
        if skew > self.max_skew_ns:
            self.max_skew_ns = skew
        if len(self._buf) >= 4096:
            self._flush()

    def tick(self) -> float:
        """A fresh timestamp (µs) for the next event: never before the record's time, always
        ``STEP_NS`` after the previous event."""
        ns = self._last_ns + STEP_NS
        if ns < self._rec_ns:
            ns = self._rec_ns
        self._last_ns = ns
        return ns / 1000

    # -- processes and tracks ----------------------------------------------------------------
    def process(self, name: str) -> int:
        """The pid of process ``name`` (the host is pid 1; guests follow in order of appearance)."""
        pid = self._pids.get(name)
        if pid is None:
            if name == "host":
                pid = HOST_PID
            else:
                pid = self._next_pid
                self._next_pid += 1
            self._pids[name] = pid
            self._meta("process_name", pid, 0, {"name": name})
            self._meta("process_sort_index", pid, 0, {"sort_index": 1000 if pid == HOST_PID
                                                      else pid})
        return pid

    def track(self, process: str, name: str, sort: int = 50) -> Track:
        """The thread track ``name`` of ``process`` (created with its metadata on first use);
        ``sort`` orders tracks within the process in chrome://tracing (Perfetto sorts its own)."""
        pid = self.process(process)
        key = (pid, name)
        tr = self._tracks.get(key)
        if tr is None:
            tr = self._tracks[key] = Track(pid, self._next_tid, name)
            self._next_tid += 1
            self._meta("thread_name", pid, tr.tid, {"name": name})
            self._meta("thread_sort_index", pid, tr.tid, {"sort_index": sort})
        return tr

    def tracks(self) -> list[Track]:
        return list(self._tracks.values())

    # -- events ------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._buf:
            if self.events:
                self.out.write(b",\n")
            self.out.write(b",\n".join(self._buf))
            self.events += len(self._buf)
            self._buf.clear()

    def _meta(self, name: str, pid: int, tid: int, args: dict[str, Any]) -> None:
        self._put(_dumps({"ph": "M", "name": name, "pid": pid, "tid": tid, "ts": 0, "args": args}))

    def begin(self, tr: Track, key: Hashable, name: str, cat: str, args: dict[str, Any],
              flows: Flows = ()) -> None:
        """Open slice ``name`` on ``tr`` (closed by ``end(tr, key)``); flows bind to it."""
        self._put(_dumps({"ph": "B", "name": name, "cat": cat, "pid": tr.pid, "tid": tr.tid,
                          "ts": self.tick(), "args": args}))
        tr.stack.append((key, name, cat))
        if flows:
            self._flows(tr, flows)

    def end(self, tr: Track, key: Hashable, args: dict[str, Any] | None = None) -> bool:
        """Close the innermost open slice with ``key``; False if none is open. Slices opened
        after it and still open are cut there and continue as new slices (``split``/
        ``continued`` in their args): a track's slices must nest, the log's need not."""
        stack = tr.stack
        if stack and stack[-1][0] == key:  # the common case: the innermost one
            _, name, cat = stack.pop()
            self._end(tr, name, cat, args)
            return True
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == key:
                break
        else:
            return False
        above = stack[i + 1:]
        for _, name, cat in reversed(above):
            self._end(tr, name, cat, {"split": True})
        _, name, cat = stack[i]
        self._end(tr, name, cat, args)
        del stack[i:]
        for entry in above:
            self._put(_dumps({"ph": "B", "name": entry[1], "cat": entry[2], "pid": tr.pid,
                              "tid": tr.tid, "ts": self.tick(), "args": {"continued": True}}))
            stack.append(entry)
        return True

    def _end(self, tr: Track, name: str, cat: str, args: dict[str, Any] | None) -> None:
        event: dict[str, Any] = {"ph": "E", "name": name, "cat": cat, "pid": tr.pid,
                                 "tid": tr.tid, "ts": self.tick()}
        if args:
            event["args"] = args
        self._put(_dumps(event))

    def is_open(self, tr: Track, key: Hashable) -> bool:
        return any(entry[0] == key for entry in tr.stack)

    def step(self, tr: Track, name: str, cat: str, args: dict[str, Any],
             flows: Flows) -> None:
        """A tiny ``X`` slice carrying flow events (``(phase, id, kind)``) at its timestamp."""
        self._put(_dumps({"ph": "X", "name": name, "cat": cat, "pid": tr.pid, "tid": tr.tid,
                          "ts": self.tick(), "dur": TINY_US, "args": args}))
        if flows:
            self._flows(tr, flows)

    def _flows(self, tr: Track, flows: Flows) -> None:
        """Flow events one tick after the slice they bind to opened, so inside it (viewers
        bind a flow event to the slice open on its track at its time; a tie is ambiguous)."""
        ts = self.tick()
        for ph, fid, (name, cat) in flows:
            event: dict[str, Any] = {"ph": ph, "id": fid, "name": name, "cat": cat,
                                     "pid": tr.pid, "tid": tr.tid, "ts": ts}
            if ph == "f":
                event["bp"] = "e"  # bind to the enclosing slice, not the next one
            self._put(_dumps(event))

    def instant(self, tr: Track, name: str, cat: str, scope: str, args: dict[str, Any]) -> None:
        """An ``i`` event: scope ``t`` (its track), ``p`` (its process) or ``g`` (global)."""
        self._put(_dumps({"ph": "i", "name": name, "cat": cat, "s": scope, "pid": tr.pid,
                          "tid": tr.tid, "ts": self.tick(), "args": args}))

    def counter(self, tr: Track, name: str, unit: str, value: float) -> None:
        """A ``C`` sample of the process counter ``name`` (Perfetto names it "name unit")."""
        self._put(_dumps({"ph": "C", "name": name, "pid": tr.pid, "tid": tr.tid,
                          "ts": self.tick(), "args": {unit: value}}))

    def close(self, other: dict[str, Any]) -> None:
        """End the event array and add ``other`` (with ``max_skew_us``); ``displayTimeUnit``
        comes last (old Perfetto versions read it, at the start of a file, as the ts unit)."""
        self._settle()
        self._flush()
        other["max_skew_us"] = self.max_skew_ns / 1000
        self.out.write(b"\n],")
        self.out.write(orjson.dumps({"displayTimeUnit": "ns", "otherData": other})[1:])
        self.out.write(b"\n")


@dataclass(slots=True)
class _Handshake:
    """A handshake between the driver's add and its ack."""

    flow: int
    lane: Track
    queue: str


@dataclass(slots=True)
class _Guest:
    """Per-guest state rebuilt from the records: open handshakes, migrations, counters."""

    name: str
    handshakes: dict[int, _Handshake] = field(default_factory=dict)
    migrations: dict[int, tuple[int, Track]] = field(default_factory=dict)  # mid -> flow, worker
    migration_of_hs: dict[int, int] = field(default_factory=dict)  # hs -> mid (pre-scan)
    isolated: int = 0
    host_ballooned: int = 0


Handler = Callable[[Record], None]


class Exporter:
    """Turns records into trace events; one handler per event name of ``actors/schema.py``."""

    def __init__(self, writer: TraceWriter, migration_hs: dict[str, dict[int, int]]) -> None:
        self.w = writer
        self._guests: dict[str, _Guest] = {}
        self._placed: dict[tuple[str, object], Track] = {}
        self._migration_hs = migration_hs
        self._next_flow = 1
        self.handshakes = 0
        self.migrations = 0
        self.lock_holds = 0
        self.instants = 0
        self.header: Record = {}
        self._handlers: dict[str, Handler] = {
            schema.SESSION_START: self._session_start,
            schema.SESSION_END: self._plain,
            schema.SESSION_ERROR: self._global_instant,
            schema.VIOLATION: self._global_instant,
            schema.VQ_ADD: self._vq_add,
            schema.VQ_ACK: self._vq_ack,
            schema.HOST_POP: self._host_pop,
            schema.HOST_INFLATE_DONE: self._host_done,
            schema.HOST_DEFLATE_DONE: self._host_done,
            schema.HOST_STATS: self._host_done,
            schema.CONFIG_TARGET: self._config_target,
            schema.CONFIG_ACTUAL: self._config_actual,
            schema.BALLOON_FILL: self._balloon_size,
            schema.BALLOON_LEAK: self._balloon_size,
            schema.BALLOON_TOTALRAM: self._totalram,
            schema.BALLOON_ISOLATE: self._isolate,
            schema.BALLOON_MIGRATE: self._migrated,
            schema.BALLOON_PUTBACK: self._migrated,
            schema.COMPACT_START: self._compact_start,
            schema.COMPACT_END: self._compact_end,
            schema.MEM_SNAPSHOT: self._snapshot,
            schema.LOCK_CONTENDED: self._lock_contended,
            schema.LOCK_ACQUIRE: self._lock_acquire,
            schema.LOCK_RELEASE: self._lock_release,
        }

    # -- placement ---------------------------------------------------------------------------
    def _guest(self, name: str) -> _Guest:
        g = self._guests.get(name)
        if g is None:
            g = self._guests[name] = _Guest(name, migration_of_hs=self._migration_hs.get(name, {}))
        return g

    def _place(self, r: Record) -> Track:
        """A record's natural track: its kernel task (``task``, or a compaction ``worker``)
        if it names one, else its actor; host actors and the session live in the host."""
        key = (r["actor"], r.get("task") or r.get("worker"))
        tr = self._placed.get(key)
        if tr is None:
            tr = self._placed[key] = self._track_of(*key)
        return tr

    def _track_of(self, actor: str, task: object) -> Track:
        head, _, rest = actor.partition(".")
        if head == "session":
            return self.w.track("host", "session", 0)
        if head == "host":
            if rest == "policy":
                return self.w.track("host", "policy", 1)
            return self.w.track("host", f"device {rest}", 2)
        if isinstance(task, str):
            return self.w.track(head, task, 30)
        return self.w.track(head, rest or "memory", 20 if rest == "balloon" else 40)

    def _lane(self, guest: str, queue: str) -> Track:
        """The driver side of one virtqueue: the handshakes on ``queue``."""
        return self.w.track(guest, queue, 10 + _QUEUES.index(queue) if queue in _QUEUES else 13)

    def _counter_track(self, guest: str) -> Track:
        return self.w.track(guest, "balloon", 20)

    def _flow_id(self) -> int:
        fid = self._next_flow
        self._next_flow += 1
        return fid

    # -- records -----------------------------------------------------------------------------
    def record(self, r: Record) -> None:
        """Convert one record (its event is declared in the schema, or a ``fault.*``)."""
        self.w.at(r["t"])
        self._handlers.get(r["event"], self._plain)(r)

    def _plain(self, r: Record) -> None:
        """Any other record: an instant on its track. Errors and injected faults are
        process-wide instants (a line across the process in chrome://tracing)."""
        event: str = r["event"]
        fault = event.startswith(FAULT_PREFIX)
        error = fault or event in _ERRORS or r.get("level") == "error"
        self.instants += 1
        self.w.instant(self._place(r), event, "fault" if fault else event.partition(".")[0],
                       "p" if error else "t", _args(r))

    def _global_instant(self, r: Record) -> None:
        """A broken session invariant or an actor's crash: a global instant."""
        self.instants += 1
        name = r["event"] + (f": {r['kind']}" if "kind" in r else "")
        self.w.instant(self._place(r), name, "violation", "g", _args(r))

    def _session_start(self, r: Record) -> None:
        self.header = r
        self._plain(r)

    # -- handshakes --------------------------------------------------------------------------
    def _vq_add(self, r: Record) -> None:
        """Driver add + notify: opens the handshake slice on the queue's lane; its first step
        starts the handshake flow (and is a step of a migration's flow if it moves a page)."""
        guest = r["actor"].partition(".")[0]
        g = self._guest(guest)
        queue: str = r["queue"]
        hs: int = r["hs"]
        pfns: list[int] = r["pfns"]
        lane = self._lane(guest, queue)
        fid = self._flow_id()
        self.handshakes += 1
        flows: Flows = (("s", fid, HANDSHAKE_FLOW),)
        mid = g.migration_of_hs.get(hs)
        if mid is not None and mid in g.migrations:
            flows += (("t", g.migrations[mid][0], MIGRATION_FLOW),)
        if queue != "statsq":  # the stats buffer's return is not logged: no driver-side span
            self.w.begin(lane, ("hs", hs), f"{queue} #{hs} ({len(pfns)} pfns)", "virtqueue",
                         _args(r))
        g.handshakes[hs] = _Handshake(fid, lane, queue)
        self.w.step(lane, "add+notify", "virtqueue", {"hs": hs, "seq": r["seq"]}, flows)

    def _host_pop(self, r: Record) -> None:
        """Device pops a buffer: a slice on the device's track until its completion record."""
        guest = r["actor"].partition(".")[2]
        g = self._guest(guest)
        dev = self._place(r)
        if self.w.is_open(dev, "pop"):  # a buffer it gave up on (violation): no done record
            self.w.end(dev, "pop", {"completed": False})
        hs: int = r["hs"]
        queue: str = r["queue"]
        h = g.handshakes.get(hs)
        flows: Flows = ()
        if h is not None:
            if queue == "statsq":  # the device keeps the buffer: the logged chain ends here
                flows = (("f", h.flow, HANDSHAKE_FLOW),)
                del g.handshakes[hs]
            else:
                flows = (("t", h.flow, HANDSHAKE_FLOW),)
        self.w.begin(dev, "pop", f"{queue} #{hs}", "virtqueue", _args(r), flows)

    def _host_done(self, r: Record) -> None:
        """Device finished a buffer: closes its slice; inflate/deflate move the host's count of
        the guest's ballooned pages (a counter of the host process)."""
        guest = r["actor"].partition(".")[2]
        dev = self._place(r)
        args = _args(r)
        if not self.w.end(dev, "pop", args):
            self.instants += 1
            self.w.instant(dev, f"{r['event']} without pop", "virtqueue", "t", args)
        event = r["event"]
        if event != schema.HOST_STATS:
            g = self._guest(guest)
            n = len(r["pfns"])
            g.host_ballooned += n if event == schema.HOST_INFLATE_DONE else -n
            self.w.counter(dev, f"ballooned {guest}", "pages", g.host_ballooned)

    def _vq_ack(self, r: Record) -> None:
        """Driver got its buffer back: the flow's last step, then the handshake slice ends."""
        guest = r["actor"].partition(".")[0]
        g = self._guest(guest)
        hs: int = r["hs"]
        h = g.handshakes.pop(hs, None)
        lane = h.lane if h is not None else self._lane(guest, r["queue"])
        flows: Flows = ()
        if h is not None:
            flows = (("f", h.flow, HANDSHAKE_FLOW),)
        self.w.step(lane, "ack" if h is not None else f"ack of unknown #{hs}", "virtqueue",
                    {"hs": hs, "seq": r["seq"]}, flows)
        self.w.end(lane, ("hs", hs), {"acked_t": r["t"], "acked_seq": r["seq"]})

    # -- balloon size and config -------------------------------------------------------------
    def _config_target(self, r: Record) -> None:
        self._plain(r)
        guest = r["actor"].partition(".")[2]
        self.w.counter(self._counter_track(guest), "balloon target", "pages", r["num_pages"])

    def _config_actual(self, r: Record) -> None:
        self._plain(r)
        guest = r["actor"].partition(".")[0]
        self.w.counter(self._counter_track(guest), "balloon actual", "pages", r["actual"])

    def _balloon_size(self, r: Record) -> None:
        self._plain(r)
        guest = r["actor"].partition(".")[0]
        self.w.counter(self._counter_track(guest), "balloon list", "pages", r["num_pages"])

    def _totalram(self, r: Record) -> None:
        guest = r["actor"].partition(".")[0]
        self.w.counter(self._counter_track(guest), "totalram", "pages", r["totalram"])

    def _snapshot(self, r: Record) -> None:
        guest = r["actor"].partition(".")[0]
        tr = self._counter_track(guest)
        self.w.counter(tr, "free", "pages", r["free"])
        self.w.counter(tr, "free order-9", "blocks", sum(r["buddyinfo"][9:]))

    # -- compaction and migrations -----------------------------------------------------------
    def _compact_start(self, r: Record) -> None:
        self.w.begin(self._place(r), "compact", f"compact {r['trigger']} order={r['order']}",
                     "compaction", _args(r))

    def _compact_end(self, r: Record) -> None:
        tr = self._place(r)
        args = _args(r)
        if not self.w.end(tr, "compact", args):
            self._plain(r)
        guest = r["actor"].partition(".")[0]
        self.w.counter(self._counter_track(guest), "free order-9", "blocks", r["free_order9"])

    def _isolate(self, r: Record) -> None:
        """Compaction isolated a balloon page: a migration flow starts here."""
        guest = r["actor"].partition(".")[0]
        g = self._guest(guest)
        tr = self._place(r)
        fid = self._flow_id()
        g.migrations[r["mid"]] = (fid, tr)
        self.migrations += 1
        self.w.step(tr, f"isolate {r['pfn']}", "compaction", _args(r),
                    (("s", fid, MIGRATION_FLOW),))
        g.isolated += 1
        self.w.counter(self._counter_track(guest), "isolated", "pages", g.isolated)

    def _migrated(self, r: Record) -> None:
        """The page moved (new page inflated, old deflated and released) or went back."""
        guest = r["actor"].partition(".")[0]
        g = self._guest(guest)
        tr = self._place(r)
        started = g.migrations.pop(r["mid"], None)
        flows: Flows = ()
        if started is not None:
            flows = (("f", started[0], MIGRATION_FLOW),)
            g.isolated -= 1
        name = (f"migrate {r['old']}→{r['new']}" if r["event"] == schema.BALLOON_MIGRATE
                else f"putback {r['pfn']}")
        self.w.step(tr, name, "compaction", _args(r), flows)
        self.w.counter(self._counter_track(guest), "isolated", "pages", g.isolated)

    # -- locks -------------------------------------------------------------------------------
    def _lock_contended(self, r: Record) -> None:
        self.w.begin(self._place(r), ("wait", r["lock"]), f"wait {r['lock']}", "lock",
                     {"kind": r["kind"], "owner": r["owner"], "t": r["t"], "seq": r["seq"]})

    def _lock_acquire(self, r: Record) -> None:
        tr = self._place(r)
        lock: str = r["lock"]
        wait = ("wait", lock)
        if tr.stack and tr.stack[-1][0] == wait:  # a contended acquire ends its wait
            self.w.end(tr, wait, {"waited": r["waited"]})
        self.lock_holds += 1
        self.w.begin(tr, ("lock", lock), lock, "lock",
                     {"kind": r["kind"], "t": r["t"], "seq": r["seq"]})

    def _lock_release(self, r: Record) -> None:
        tr = self._place(r)
        if not self.w.end(tr, ("lock", r["lock"]), {"held": r["held"], "released_seq": r["seq"]}):
            self._plain(r)  # its acquire is not in the log

    # -- the end -----------------------------------------------------------------------------
    def finish(self) -> None:
        """Close what the log left open: handshakes never acked and pages still isolated get
        a last step ending their flow; every open slice ends, marked ``open_at_end``."""
        w = self.w
        for g in self._guests.values():
            for hs, h in sorted(g.handshakes.items()):
                what = "never popped" if h.queue == "statsq" else "never acked"
                w.step(h.lane, what, "virtqueue", {"hs": hs},
                       (("f", h.flow, HANDSHAKE_FLOW),))
            for mid, (fid, tr) in sorted(g.migrations.items()):
                w.step(tr, "still isolated", "compaction", {"mid": mid},
                       (("f", fid, MIGRATION_FLOW),))
        for tr in w.tracks():
            while tr.stack:
                w.end(tr, tr.stack[-1][0], {"open_at_end": True})


def migration_handshakes(path: Path) -> dict[str, dict[int, int]]:
    """Pre-scan: guest -> handshake id -> migration id, for the handshakes of migrations
    (``balloon.migrate`` names them only after they happened). Unparsable lines are left
    for the main pass to report."""
    needle = b'"' + schema.BALLOON_MIGRATE.encode() + b'"'
    out: dict[str, dict[int, int]] = {}
    for _, line in lines(path):
        if needle not in line:
            continue
        try:
            r = orjson.loads(line)
            if r.get("event") == schema.BALLOON_MIGRATE:
                of_hs = out.setdefault(str(r["actor"]).partition(".")[0], {})
                of_hs[int(r["hs_inflate"])] = of_hs[int(r["hs_deflate"])] = int(r["mid"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


def export(log: Path, out: IO[bytes]) -> TraceStats:
    """Write the trace of ``log`` to ``out``; LogError if the log cannot be read."""
    writer = TraceWriter(out)
    exporter = Exporter(writer, migration_handshakes(log))
    n = 0
    for lineno, r in records(log):
        event = r["event"]
        if event not in schema.EVENTS and not event.startswith(FAULT_PREFIX):
            raise LogError(lineno, f"unknown event {event!r} (not declared in "
                           "actors/sim/schema.py)", str(log))
        try:
            exporter.record(r)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            why = (f"{event} record lacks field {e}" if isinstance(e, KeyError)
                   else f"{event} record: {e}")
            raise LogError(lineno, why, str(log)) from None
        n += 1
    if n == 0:
        raise LogError(0, "empty log: no records", str(log))
    exporter.finish()
    h = exporter.header
    scenario = h.get("scenario")
    other = {
        "generator": "vballoon trace",
        "log": log.name,
        "scenario": scenario.get("name") if isinstance(scenario, dict) else None,
        "seed": h.get("seed"),
        "git": h.get("git"),
        "records": n,
        "time": "ts = max(t, previous ts + 2 ns) in µs: log order kept, shown at most "
                "max_skew_us after the record's virtual time t (exact t and seq in args)",
    }
    writer.close(other)
    return TraceStats(n, writer.events, exporter.handshakes, exporter.migrations,
                      exporter.lock_holds, exporter.instants, writer.max_skew_ns / 1000)
