"""A validator for the Chrome trace-event "JSON Object Format" as Perfetto and chrome://tracing
read it, strict about what our timelines rely on (tests call ``validate``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

PHASES = {"B", "E", "X", "i", "C", "s", "t", "f", "M"}
METADATA = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}
REQUIRED = ("ph", "name", "pid", "tid", "ts")


class TraceFormatError(AssertionError):
    """The trace breaks the format (or a rule viewers need to draw it as meant)."""


@dataclass
class _Slice:
    start: float
    end: float
    name: str


@dataclass
class Checked:
    """What the validator saw, for tests to cross-check against the log."""

    phases: Counter[str] = field(default_factory=Counter)
    process_names: dict[int, str] = field(default_factory=dict)
    thread_names: dict[tuple[int, int], str] = field(default_factory=dict)
    flows: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)
    slices: dict[tuple[int, int], list[_Slice]] = field(default_factory=dict)


def _fail(i: int, event: dict[str, Any], why: str) -> TraceFormatError:
    return TraceFormatError(f"traceEvents[{i}] {event}: {why}")


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate(doc: object, *, forward_flows: bool = True, perfetto_ns: bool = False) -> Checked:
    """Check ``doc`` (a parsed trace); raise TraceFormatError naming the first problem.

    Per event: the keys its phase needs (``ph``, ``name``, ``pid``, ``tid``, ``ts``; ``dur``
    for X; ``id`` and ``cat`` for s/t/f; numeric ``args`` for C; scope ``s`` for i; ``args``
    for M). Per track (pid, tid): timestamps never decrease in file order, B/E pairs match
    like a stack, and all slices (B/E and X) nest. Every pid and track is named, and a tid
    belongs to one pid. Flows: one ``s`` first, one ``f`` last, ``t`` between, one (cat,
    name) per id, timestamps in order, each bound to an enclosing slice on its track; with
    ``forward_flows`` each arrow leaves its slice's end no later than the next one starts
    (Perfetto draws from the end of one bound slice to the start of the next).
    ``perfetto_ns`` first converts ``ts`` and ``dur`` as Perfetto's JSON importer does (µs
    times 1000, truncated to whole ns), so the checks hold for what Perfetto shows too.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceFormatError("not a JSON object with a traceEvents array")
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        raise TraceFormatError(f"displayTimeUnit {doc['displayTimeUnit']!r}")
    out = Checked()
    last_ts: dict[tuple[int, int], float] = {}
    open_b: dict[tuple[int, int], list[tuple[str, float]]] = defaultdict(list)
    slices: dict[tuple[int, int], list[_Slice]] = defaultdict(list)
    tid_pid: dict[int, int] = {}
    used: set[tuple[int, int]] = set()
    flows: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict):
            raise TraceFormatError(f"traceEvents[{i}] is not an object")
        for key in REQUIRED:
            if key not in e:
                raise _fail(i, e, f"lacks {key!r}")
        ph = e["ph"]
        if ph not in PHASES:
            raise _fail(i, e, f"unknown phase {ph!r}")
        out.phases[ph] += 1
        pid, tid, ts = e["pid"], e["tid"], e["ts"]
        if not (isinstance(pid, int) and isinstance(tid, int) and _number(ts) and ts >= 0):
            raise _fail(i, e, "pid/tid must be integers and ts a number >= 0")
        if perfetto_ns:
            ts = int(ts * 1000.0)
            if _number(e.get("dur")):
                e = {**e, "ts": ts, "dur": int(e["dur"] * 1000.0)}
            else:
                e = {**e, "ts": ts}
        if not isinstance(e["name"], str) or not e["name"]:
            raise _fail(i, e, "name must be a non-empty string")
        if ph == "M":
            if e["name"] not in METADATA or not isinstance(e.get("args"), dict):
                raise _fail(i, e, "metadata needs a known name and args")
            if e["name"] == "process_name":
                out.process_names[pid] = e["args"]["name"]
            elif e["name"] == "thread_name":
                out.thread_names[(pid, tid)] = e["args"]["name"]
                if tid_pid.setdefault(tid, pid) != pid:
                    raise _fail(i, e, f"tid {tid} named in pids {tid_pid[tid]} and {pid}")
            continue
        track = (pid, tid)
        used.add(track)
        if ts < last_ts.get(track, 0.0):
            raise _fail(i, e, f"ts goes back on track {track} (after {last_ts[track]})")
        last_ts[track] = ts
        if "args" in e and not isinstance(e["args"], dict):
            raise _fail(i, e, "args must be an object")
        if ph == "B":
            open_b[track].append((e["name"], ts))
        elif ph == "E":
            if not open_b[track]:
                raise _fail(i, e, "E without an open B on its track")
            name, start = open_b[track].pop()
            if e["name"] != name:
                raise _fail(i, e, f"E closes {name!r}, the innermost open B")
            slices[track].append(_Slice(start, ts, name))
        elif ph == "X":
            if not _number(e.get("dur")) or e["dur"] < 0:
                raise _fail(i, e, "X needs a dur >= 0")
            slices[track].append(_Slice(ts, ts + e["dur"], e["name"]))
        elif ph == "i":
            if e.get("s", "t") not in ("g", "p", "t"):
                raise _fail(i, e, "instant scope must be g, p or t")
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args or not all(
                    _number(v) for v in args.values()):
                raise _fail(i, e, "counter needs numeric args")
        else:  # s, t, f
            if "id" not in e or not isinstance(e.get("cat"), str):
                raise _fail(i, e, "flow event needs id and cat")
            if "bp" in e and e["bp"] != "e":
                raise _fail(i, e, "bp must be 'e'")
            flows[e["id"]].append((i, e))
    for track, stack in open_b.items():
        if stack:
            raise TraceFormatError(f"track {track}: B {stack[-1][0]!r} never ends")
    for pid, _tid in used:
        if pid not in out.process_names:
            raise TraceFormatError(f"pid {pid} has no process_name")
    for track in used:
        if track not in out.thread_names:
            raise TraceFormatError(f"track {track} has no thread_name")
    for track, ss in slices.items():
        _check_nesting(track, ss)
    bound = _bind(slices, flows)
    for fid, steps in flows.items():
        phases = "".join(e["ph"] for _, e in steps)
        if phases[0] != "s" or phases[-1] != "f" or phases.count("s") != 1 or (
                phases.count("f") != 1):
            raise TraceFormatError(f"flow {fid}: phases {phases!r}, want s t* f")
        if len({(e["cat"], e["name"]) for _, e in steps}) != 1:
            raise TraceFormatError(f"flow {fid}: cat/name differ between its events")
        times = [e["ts"] for _, e in steps]
        if times != sorted(times):
            raise TraceFormatError(f"flow {fid}: timestamps out of order {times}")
        if forward_flows:
            ends = [bound[i] for i, _ in steps]
            for a, b in pairwise(ends):
                if a.end > b.start:
                    raise TraceFormatError(f"flow {fid}: arrow from {a} goes back to {b}")
    out.flows = {fid: [e for _, e in steps] for fid, steps in flows.items()}
    out.slices = dict(slices)
    return out


def _check_nesting(track: tuple[int, int], ss: list[_Slice]) -> None:
    """Slices on one track are disjoint or nested (touching ends are fine)."""
    stack: list[_Slice] = []
    for s in sorted(ss, key=lambda s: (s.start, -s.end)):
        while stack and (stack[-1].end < s.start or (
                stack[-1].end == s.start and stack[-1].start < s.start)):
            stack.pop()
        if stack and s.end > stack[-1].end:
            raise TraceFormatError(f"track {track}: {s} overlaps {stack[-1]} without nesting")
        stack.append(s)


def _bind(slices: dict[tuple[int, int], list[_Slice]],
          flows: dict[Any, list[tuple[int, dict[str, Any]]]]) -> dict[int, _Slice]:
    """The slice each flow event binds to: the innermost enclosing one on its track (for an
    ``f`` without ``bp: e``, the next slice to start on its track)."""
    points: dict[tuple[int, int], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for steps in flows.values():
        for i, e in steps:
            points[(e["pid"], e["tid"])].append((i, e))
    bound: dict[int, _Slice] = {}
    for track, pts in points.items():
        ss = sorted(slices.get(track, []), key=lambda s: (s.start, -s.end))
        items: list[tuple[float, int, int, Any]] = [(s.start, 0, n, s) for n, s in enumerate(ss)]
        items += [(e["ts"], 1, i, e) for i, e in pts]
        items.sort(key=lambda x: (x[0], x[1], x[2]))
        stack: list[_Slice] = []
        waiting: list[int] = []  # f events binding to the next slice
        for ts, kind, i, obj in items:
            if kind == 0:
                for w in waiting:
                    bound[w] = obj
                waiting.clear()
                while stack and stack[-1].end < ts:
                    stack.pop()
                stack.append(obj)
                continue
            if obj["ph"] == "f" and obj.get("bp") != "e":
                waiting.append(i)
                continue
            while stack and stack[-1].end < ts:
                stack.pop()
            if not stack:
                raise TraceFormatError(f"traceEvents[{i}] {obj}: no enclosing slice on its "
                                       "track to bind to")
            bound[i] = stack[-1]
        if waiting:
            raise TraceFormatError(f"traceEvents[{waiting[0]}]: f with no later slice to bind")
    return bound
