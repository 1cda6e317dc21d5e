"""Replay: re-run a session from its log header and prove the new log identical, record by record.

The header (``session.start``) carries everything a run depends on: the resolved scenario, the
seed, the log level, the backend and the forced choices if any. Re-running it must give the same
bytes, except for the wall-clock and provenance fields the determinism contract sets aside
(``VOLATILE``). When it does not, the first differing record is shown beside its original.

**A log is data, not a program.** The header names the host policy, and a policy that is not
built in (``module:attr``, ``path/to/file.py:Class``, an entry point) is Python that loading
would import and run -- so a log received in a bug report could run anything. Replay loads
such a policy only when the caller names it again (``policy``, the CLI's ``--policy NAME``)
or trusts the log's (``trust_policy``, ``--trust-policy``); otherwise it stops before loading
anything (``UntrustedPolicy``). Built-in policies replay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from actors.host.policies import BUILTINS
from actors.sim import schema
from actors.sim.choices import forced_choices
from run.logtools.logread import LogError, lines, parse
from run.session import scenario as scen
from run.session.logs import LEVELS, FlightRecorder, dumps
from run.session.monitor import Monitor, Script, logged_lines
from run.session.session import Outcome, run_session

#: Fields that may differ between two runs of the same session (wall clock, provenance).
VOLATILE: dict[str, tuple[str, ...]] = {
    schema.SESSION_START: ("wall_start", "versions", "git"),
    schema.SESSION_END: ("wall_end",),
}


def log_lines(path: Path) -> list[bytes]:
    """The log's lines without newlines (gzip too); unreadable logs, and lines that are not
    one JSON record each (a log cut mid-line), raise LogError naming the line."""
    out = []
    for n, line in lines(path):
        parse(path, n, line)
        out.append(line.rstrip(b"\n"))
    return out


def read_header(path: Path) -> dict[str, Any]:
    """The ``session.start`` record that opens every session log."""
    for n, line in lines(path):
        record = parse(path, n, line)
        if record["event"] != schema.SESSION_START:
            raise LogError(1, "not a vballoon session log (first record is not "
                              f"{schema.SESSION_START})", str(path))
        for key in ("scenario", "seed"):
            if key not in record:
                raise LogError(1, f"header lacks {key!r}; cannot replay", str(path))
        return record
    raise LogError(0, "empty log", str(path))


class UntrustedPolicy(LogError):
    """The header names a policy that is not built in, and the caller did not allow it."""


def check_policy(name: str, source: str, *, policy: str | None = None,
                 trust_policy: bool = False) -> None:
    """Raise UntrustedPolicy unless the header's policy ``name`` may be loaded: a built-in,
    the one the caller named again (``policy``), or any with ``trust_policy``."""
    if policy is not None and policy != name:
        raise UntrustedPolicy(1, f"the log's host policy is {name!r}, not {policy!r} "
                                 "(--policy must name the policy the log names)", source)
    if name in BUILTINS or trust_policy or policy == name:
        return
    raise UntrustedPolicy(1, f"the log's host policy {name!r} is not built in and replaying "
                             "would import and run its code; to allow it, pass --policy "
                             f"{name!r} (or --trust-policy)", source)


def rerun(header: dict[str, Any], source: str = "<header>", *, policy: str | None = None,
          trust_policy: bool = False, inputs: list[tuple[float, str]] | None = None
          ) -> tuple[Outcome, list[bytes]]:
    """Run the session a header describes; its log lines (no newlines) in memory. A policy
    that is not built in is loaded only if named again or trusted (``check_policy``).
    ``inputs``: the lines a console session's log records (``session.input``), fed back at
    their instants."""
    try:
        if not isinstance(header["scenario"], dict):
            raise ValueError("header scenario is not a table")
        sc = scen.from_data(header["scenario"], f"{source}: header scenario")
        seed, level, backend, fail_fast, faults = _run_fields(header)
        forced = forced_choices(faults)
    except ValueError as e:
        raise LogError(1, str(e), source) from None
    check_policy(sc.host.policy.name, source, policy=policy, trust_policy=trust_policy)
    for _, text in inputs or []:  # a policy swapped in at the console is code too
        words = text.split()
        if words[:1] == ["policy"] and len(words) > 1 and words[1] != "resume":
            check_policy(words[1], source, policy=policy, trust_policy=trust_policy)
    monitor = None if not inputs else Monitor(Script(inputs))
    recorder = FlightRecorder()
    outcome = run_session(sc, seed=seed, level=level, recorder=recorder, backend=backend,
                          forced=forced, fail_fast=fail_fast, monitor=monitor)
    return outcome, [dumps(r).rstrip(b"\n") for r in recorder.records]


def _run_fields(header: dict[str, Any]
                ) -> tuple[int, str, str, bool, dict[str, Any] | None]:
    """The header's run settings (seed, log level, backend, fail-fast, faults), each checked
    the way the CLI checks them; ValueError names the field."""
    seed, level = header["seed"], header.get("log_level", "info")
    backend, fail_fast = header.get("backend", "trio"), header.get("fail_fast", False)
    faults = header.get("faults")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= scen.MAX_INT:
        raise ValueError(f"header seed {seed!r} is not a seed (an integer 0..2**63-1)")
    if level not in LEVELS:
        raise ValueError(f"header log_level {level!r}: one of {', '.join(LEVELS)}")
    if backend not in ("trio", "asyncio"):
        raise ValueError(f"header backend {backend!r}: trio or asyncio")
    if not isinstance(fail_fast, bool):
        raise ValueError(f"header fail_fast {fail_fast!r}: true or false")
    if faults is not None and not isinstance(faults, dict):
        raise ValueError(f"header faults {faults!r}: a table")
    return seed, level, backend, fail_fast, faults


def console_inputs(lines: list[bytes]) -> list[tuple[float, str]]:
    """The lines typed at a console session, at their instants (none for other logs)."""
    marker = b'"event":"session.input"'
    return logged_lines([orjson.loads(line) for line in lines if marker in line[:160]])


def normalise(line: bytes) -> bytes:
    """The line minus its volatile fields (unchanged for every other record)."""
    if b'"session.' not in line[:120]:
        return line
    record = orjson.loads(line)
    drop = VOLATILE.get(record.get("event", ""), ())
    if not drop:
        return line
    return dumps({k: v for k, v in record.items() if k not in drop}).rstrip(b"\n")


@dataclass(frozen=True, slots=True)
class Difference:
    """Where two logs of one session part ways (index into the record lists)."""

    index: int
    original: bytes | None
    replayed: bytes | None


def first_difference(a: list[bytes], b: list[bytes]) -> Difference | None:
    """The first record (volatile fields aside) that differs, or None if the logs agree."""
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x is None or y is None or (x != y and normalise(x) != normalise(y)):
            return Difference(i, x, y)
    return None


def provenance_notes(header: dict[str, Any], replayed: bytes) -> list[str]:
    """Differences in code provenance that would explain a divergence (git, versions)."""
    new = orjson.loads(replayed)
    return [f"{key}: recorded {header.get(key)!r}, now {new.get(key)!r}"
            for key in ("git", "versions") if header.get(key) != new.get(key)]


def render_difference(diff: Difference, before: list[bytes], labels: tuple[str, str]
                      ) -> Group:
    """The first differing record side by side, after a few records both logs share."""
    table = Table(title=f"first difference at record {diff.index + 1}", title_justify="left",
                  show_lines=True)
    table.add_column(labels[0], overflow="fold")
    table.add_column(labels[1], overflow="fold")

    def fmt(line: bytes | None) -> Text:
        if line is None:
            return Text("(log ends here)", style="italic")
        return Text(orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).decode())

    table.add_row(fmt(diff.original), fmt(diff.replayed), style="red")
    context = Text("\n".join(f"  = {line.decode()[:160]}" for line in before), style="dim")
    return Group(Text("records both logs share just before it:"), context, table)


def show_difference(console: Console, diff: Difference, lines: list[bytes],
                    labels: tuple[str, str]) -> None:
    """Print ``render_difference`` with the three shared records before the difference."""
    console.print(render_difference(diff, lines[max(0, diff.index - 3):diff.index], labels))


def replay(path: Path, *, policy: str | None = None, trust_policy: bool = False
           ) -> tuple[dict[str, Any], list[bytes], Outcome, list[bytes], Difference | None]:
    """Re-run the session logged at ``path``: (header, original, outcome, replayed, diff).
    ``policy``/``trust_policy`` allow a policy that is not built in (``check_policy``)."""
    header = read_header(path)
    original = log_lines(path)
    outcome, replayed = rerun(header, str(path), policy=policy, trust_policy=trust_policy,
                              inputs=console_inputs(original))
    return header, original, outcome, replayed, first_difference(original, replayed)
