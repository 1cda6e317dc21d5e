"""Several guests per session: the [[guests]] form, its defaults, per-guest streams, devices,
summaries and checks, and the single-guest form as sugar for one entry named guest0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from run.session import scenario as scen
from run.session.session import run_session

TWO = """
[scenario]
name = "two"
duration = "4s"

[host]
memory = "80MiB"

[guest]
driver = "fixed"
memory = "32MiB"

[workload]
apps = 1
tick = "100ms"
fill = 0.8
thp_rate = 0.0

[compaction]
direct = false
kcompactd_interval = "0s"

[host.policy]
name = "static"
params = { target = "25%" }

[[guests]]
name = "big"
memory = "64MiB"
min_memory = "16MiB"
shares = 2000

[[guests]]
name = "small"
workload = { fill = 0.4 }
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def strip_wall(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records minus the wall-clock fields (header/footer only) and the summary's wall time."""
    out = []
    for r in recs:
        r = {k: v for k, v in r.items() if k not in ("wall_start", "wall_end")}
        out.append(r)
    return out


def test_entries_take_defaults_from_guest_and_workload(tmp_path: Path) -> None:
    """Each [[guests]] entry is [guest] and [workload] overridden by what it says."""
    sc = scen.load(write(tmp_path, TWO))
    big, small = sc.guest_specs()
    assert (big.name, big.memory, big.driver, big.min_memory, big.shares) == (
        "big", 64 << 20, "fixed", 16 << 20, 2000)
    assert (small.name, small.memory, small.shares) == ("small", 32 << 20, 1000)
    assert (big.workload.fill, small.workload.fill) == (0.8, 0.4)
    assert big.workload.tick == small.workload.tick == 0.1
    assert scen.from_data(scen.to_dict(sc)) == sc  # the log header replays it


def test_single_guest_form_is_one_entry_named_guest0() -> None:
    """Without [[guests]], the scenario has one guest, guest0, made of [guest] and [workload]."""
    sc = scen.load("inflate-deflate")
    (g,) = sc.guest_specs()
    assert g.name == "guest0" and g.memory == sc.guest.memory
    assert g.workload == sc.workload and g.driver == sc.guest.driver


@pytest.mark.parametrize(("override", "check"), [
    ("guests.small.memory=48MiB", lambda s: s.guest_specs()[1].memory == 48 << 20),
    ("guests.0.shares=7", lambda s: s.guest_specs()[0].shares == 7),
    ("guests.big.workload.apps=3", lambda s: s.guest_specs()[0].workload.apps == 3),
    ("guest.driver=legacy", lambda s: {g.driver for g in s.guest_specs()} == {"legacy"}),
])
def test_set_reaches_one_entry(tmp_path: Path, override: str, check: Any) -> None:
    """--set guests.NAME.key and guests.INDEX.key reach one entry; guest.key every default."""
    assert check(scen.load(write(tmp_path, TWO), [override]))


@pytest.mark.parametrize(("extra", "overrides", "fragment"), [
    ('[[guests]]\nname = "big"\n', [], "guests: guest name 'big' used more than once"),
    ('[[guests]]\nmemory = "32MiB"\n', [], "guests[2]: every [[guests]] entry needs a name"),
    ('[[guests]]\nname = "x"\nmemroy = "1GiB"\n', [], "guests[2].memroy: unknown key (did you "
                                                      "mean 'memory'?)"),
    ('[[guests]]\nname = "2x"\n', [], "guests[2].name: '2x': use a letter"),
    ('[[guests]]\nname = "x"\nmin_memory = "1GiB"\n', [], "guests[2].min_memory: must be "
                                                          "between 0 and the guest's memory"),
    ('[[guests]]\nname = "x"\nworkload = 3\n', [], "guests[2].workload: expected a table"),
    ("", ["guests.nobody.memory=1GiB"], "guests has no entry 'nobody'; entries: big, small"),
])
def test_bad_guest_entries_name_file_and_key(tmp_path: Path, extra: str, overrides: list[str],
                                             fragment: str) -> None:
    """Every problem with a [[guests]] entry names the file, the entry and the key."""
    path = write(tmp_path, TWO + extra)
    with pytest.raises(scen.ScenarioError) as e:
        scen.load(path, overrides)
    assert str(e.value).startswith(path) and fragment in str(e.value), str(e.value)


def test_two_guests_run_side_by_side(tmp_path: Path) -> None:
    """Two guests share one host: each has its device, its own summary section, the top level
    describes the first, the host's total is the budget and its free follows their RSS."""
    log = tmp_path / "two.jsonl"
    out = run_session(scen.load(write(tmp_path, TWO)), log_path=log)
    assert out.reason == "completed" and out.violations == []
    s = out.summary
    assert list(s["guests"]) == ["big", "small"] and list(s["host"]["guests"]) == ["big",
                                                                                   "small"]
    assert s["guest"] == s["guests"]["big"]["guest"] and s["thp"] == s["guests"]["big"]["thp"]
    host = s["host"]
    assert host["total_pages"] == (80 << 20) // 4096
    rss = sum(g["rss_pages"] for g in host["guests"].values())
    assert host["free_pages"] == host["total_pages"] - rss
    big, small = host["guests"]["big"], host["guests"]["small"]
    # static 25%: 16 MiB and 8 MiB balloons; big's floor is its min_memory, small's Hyper-V's
    assert (big["target"], small["target"]) == (4096, 2048)
    assert (big["actual"], small["actual"]) == (4096, 2048)
    assert (big["floor_pages"], small["floor_pages"]) == (4096, 2048 + 4096)
    assert (big["shares"], small["shares"]) == (2000, 1000)
    assert s["guests"]["big"]["balloon"]["actual"] == 4096
    # RSS follows use: the small guest's app fills less of it
    assert small["rss_pages"] < big["rss_pages"] and small["untouched"] > 0
    actors = {r["actor"] for r in records(log)}
    assert {"host.big", "host.small", "big.balloon", "small.balloon", "big.app0",
            "small.app0"} <= actors


def test_guest_streams_are_derived_by_name(tmp_path: Path) -> None:
    """Two identical guests under different names draw different random streams, and adding
    a guest never changes what an existing one draws."""
    same = TWO.replace('workload = { fill = 0.4 }', '').replace('memory = "64MiB"\n', '') \
        .replace('min_memory = "16MiB"\nshares = 2000\n', '')
    s = run_session(scen.load(write(tmp_path, same))).summary
    big, small = s["guests"]["big"], s["guests"]["small"]
    assert big["guest"]["memory_bytes"] == small["guest"]["memory_bytes"]
    assert big["buddyinfo"] != small["buddyinfo"]  # same config, other stream
    three = same + '[[guests]]\nname = "third"\n'
    s3 = run_session(scen.load(write(tmp_path, three, "t.toml"))).summary
    assert list(s3["guests"]) == ["big", "small", "third"]


def test_single_form_and_one_entry_give_the_same_log(tmp_path: Path) -> None:
    """A [[guests]] entry named guest0 with the [guest]/[workload] shape writes the same log
    (scenario header aside) as the single-guest form: one is sugar for the other."""
    base = scen.load("inflate-deflate", ["guest.memory=32MiB", "duration=3s",
                                         "workload.apps=1", "host.policy.params.steps="
                                         '[["1s", "25%"], ["2s", "0%"]]'])
    data = scen.to_dict(base)
    entry = {**data["guest"], "name": "guest0", "workload": data["workload"]}
    listed = scen.from_data({**data, "guests": [entry]})
    logs = []
    for i, sc in enumerate((base, listed)):
        path = tmp_path / f"{i}.jsonl"
        run_session(sc, log_path=path)
        logs.append([r for r in strip_wall(records(path)) if r["event"] != "session.start"])
    assert logs[0] == logs[1]
