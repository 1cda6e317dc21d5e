"""A fuzz campaign on disk: what it runs (``campaign.json``) and what each seed did
(``results.jsonl``, one line per seed, appended as seeds finish).

Streaming every result to disk as it arrives is what lets a campaign survive Ctrl-C, a
SIGTERM or a lost machine: ``--resume DIR`` reads both files, runs only the seeds without a
line, and appends. A seed's line depends only on (scenario, seed, strategy, code): the
revision is on every line, so a campaign resumed on changed code says so instead of mixing
verdicts silently. A torn last line (the process killed mid-write) is dropped on resume
and that seed runs again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

FORMAT = "vballoon-campaign/1"
SPEC = "campaign.json"
RESULTS = "results.jsonl"


class CampaignError(ValueError):
    """A campaign directory that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Spec:
    """What a campaign runs: everything a seed's verdict depends on but the seed."""

    scenario: str | None
    driver: str
    strategy: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    revision: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "scenario": self.scenario, "driver": self.driver,
                "strategy": self.strategy, "overrides": list(self.overrides),
                "seeds": list(self.seeds), "revision": self.revision}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Spec:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CampaignError(f"{where}: not a campaign file (expected format {FORMAT!r})")
        try:
            return cls(data["scenario"], str(data["driver"]), str(data["strategy"]),
                       tuple(str(o) for o in data["overrides"]),
                       tuple(int(s) for s in data["seeds"]), data.get("revision"))
        except (KeyError, TypeError, ValueError) as e:
            raise CampaignError(f"{where}: bad campaign file: {e!r}") from None


def result_line(seed: int, strategy: str, failure: dict[str, Any] | None, violations: int,
                wall: float, revision: str | None) -> dict[str, Any]:
    """One seed's line of ``results.jsonl``."""
    line: dict[str, Any] = {"seed": seed, "strategy": strategy,
                            "verdict": "fail" if failure else "pass",
                            "signature": failure["signature"] if failure else None,
                            "violations": violations, "wall": round(wall, 4),
                            "revision": revision}
    if failure:
        line.update(kind=failure["kind"], detail=failure["detail"], t=failure["t"])
    return line


class Store:
    """An open campaign directory: its spec, the lines read so far, and the append handle."""

    def __init__(self, directory: Path, spec: Spec, done: list[dict[str, Any]]) -> None:
        self.directory = directory
        self.spec = spec
        #: Lines of seeds already finished (read on resume, then appended).
        self.done = done
        self._out: BinaryIO | None = None

    @classmethod
    def create(cls, directory: Path, spec: Spec) -> Store:
        """A new campaign in ``directory`` (made if missing); refuses one holding a campaign."""
        if (directory / SPEC).exists():
            raise CampaignError(f"{directory}: holds a campaign already; resume it with "
                                f"--resume {directory}, or choose another --out")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SPEC).write_bytes(orjson.dumps(spec.as_dict(),
                                                    option=orjson.OPT_INDENT_2) + b"\n")
        return cls(directory, spec, [])

    @classmethod
    def open(cls, directory: Path) -> Store:
        """An existing campaign, with the lines of every seed it finished."""
        path = directory / SPEC
        try:
            spec = Spec.from_dict(orjson.loads(path.read_bytes()), str(path))
        except OSError as e:
            raise CampaignError(f"{path}: cannot read: {e.strerror or e}") from None
        except orjson.JSONDecodeError as e:
            raise CampaignError(f"{path}: not JSON: {e}") from None
        return cls(directory, spec, read_results(directory / RESULTS))

    def remaining(self) -> list[int]:
        """The spec's seeds without a result line, in order."""
        finished = {line["seed"] for line in self.done}
        return [s for s in self.spec.seeds if s not in finished]

    def append(self, line: dict[str, Any]) -> None:
        """Write one line and flush it to the OS at once (a kill loses at most this line)."""
        if self._out is None:
            self._out = (self.directory / RESULTS).open("ab")
        self._out.write(orjson.dumps(line) + b"\n")
        self._out.flush()
        self.done.append(line)

    def close(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            self._out = None


def read_results(path: Path) -> list[dict[str, Any]]:
    """The lines of ``results.jsonl`` (none if it does not exist); a torn last line is
    dropped -- its seed runs again on resume -- and any other bad line is an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CampaignError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = raw.split(b"\n")
    out = []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            if n == len(lines):  # no newline after it: the write was cut short
                break
            raise CampaignError(f"{path}:{n}: not a JSON line") from None
        if not isinstance(line, dict) or not isinstance(line.get("seed"), int) \
                or line.get("verdict") not in ("pass", "fail"):
            raise CampaignError(f"{path}:{n}: not a result line (seed, verdict, ...)")
        out.append(line)
    return out


def by_kind(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Failing seeds by failure kind, most first (the progress bar's "failures so far")."""
    counts: dict[str, int] = {}
    for line in lines:
        if line["verdict"] == "fail":
            counts[line["kind"]] = counts.get(line["kind"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def groups(lines: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[int]]]:
    """(signature, kind, seeds) per first-violation signature, most seeds first."""
    found: dict[str, tuple[str, list[int]]] = {}
    for line in sorted(lines, key=lambda x: x["seed"]):
        if line["verdict"] == "fail":
            found.setdefault(line["signature"], (line["kind"], []))[1].append(line["seed"])
    return sorted(((sig, kind, seeds) for sig, (kind, seeds) in found.items()),
                  key=lambda g: (-len(g[2]), g[2][0]))
