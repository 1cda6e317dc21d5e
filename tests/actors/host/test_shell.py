"""The safety shell: containment, contract checks, dead-band, max step, floor, stall detector,
and the deterministic decide() budget."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from actors.host.policy import (
    GuestSample,
    GuestView,
    HostPolicy,
    HostSample,
    HostView,
    hyperv_floor,
)
from actors.host.shell import (
    DecideBudgetExceeded,
    Decision,
    SafetyShell,
    ShellConfig,
    guest_floor,
    policy_name,
    run_guarded,
)

MiB = 256


def _recording(seen: list[GuestView], answer: Any) -> Callable[[HostView], Any]:
    """A decide function that keeps the first guest's view it was shown, then answers."""
    def decide(view: HostView) -> Any:
        seen.append(view.guests[0])
        return answer
    return decide


class Answer(HostPolicy):
    """A test policy that returns (or raises) whatever it was given."""

    name = "answer"

    def __init__(self, answer: Any = None) -> None:
        super().__init__()
        self.answer = answer

    def decide(self, view: HostView) -> Mapping[str, int]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        if callable(self.answer):
            return self.answer(view)  # type: ignore[no-any-return]
        return self.answer  # type: ignore[no-any-return]


def guest(name: str, ram: int = 1000, target: int = 0, actual: int | None = None,
          floor: int = 0) -> GuestView:
    """A guest view; actual defaults to the target (settled)."""
    return GuestView(name, ram, target, target if actual is None else actual, {}, None,
                     floor_pages=floor)


def hv(*guests: GuestView, t: float = 0.0) -> HostView:
    return HostView(time=t, total_pages=10_000, free_pages=1_000, guests=guests)


NEUTRAL = ShellConfig(floor="none", stall_after=0.0)


def decide(answer: Any, *guests: GuestView, config: ShellConfig = NEUTRAL,
           t: float = 0.0) -> Decision:
    return SafetyShell(config).decide(Answer(answer), hv(*guests, t=t))


def rules(d: Decision) -> list[tuple[str, str, int | None]]:
    return [(o.guest, o.rule, o.applied) for o in d.overrides]


# -- containment and the contract ---------------------------------------------------------------


def test_sane_targets_pass_and_omitted_guests_keep_theirs() -> None:
    """In-range targets pass unchanged (floats truncated); omitted guests keep their target."""
    d = decide({"a": 100.9}, guest("a", target=5), guest("b", target=7))
    assert (d.targets, d.overrides, d.error) == ({"a": 100, "b": 7}, [], None)
    assert d.asked == {"a": 100.9}


def test_a_raising_policy_keeps_every_target() -> None:
    """A policy that raises keeps every previous target; the error names the exception."""
    d = decide(ZeroDivisionError("division by zero"), guest("a", target=5), guest("b", target=7))
    assert d.targets == {"a": 5, "b": 7} and d.asked is None
    assert d.error == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("answer", [[("a", 1)], 3, None, "a=1"])
def test_a_non_mapping_answer_is_an_error(answer: object) -> None:
    """A decide() that returns no mapping keeps every previous target and says what it got."""
    d = decide(answer, guest("a", target=5))
    assert d.targets == {"a": 5}
    assert d.error == (f"decide() returned {type(answer).__name__}, expected a mapping of "
                       "guest name to target")


@pytest.mark.parametrize(("value", "applied", "rule"), [
    (-3, 0, "negative"),
    (5000, 1000, "above-ram"),
    ("100", 5, "not-a-number"),
    (None, 5, "not-a-number"),
    (True, 5, "not-a-number"),
    (math.nan, 5, "not-a-number"),
    (math.inf, 5, "not-a-number"),
])
def test_contract_violations_are_clamped_or_kept(value: object, applied: int, rule: str) -> None:
    """Negative targets become 0, targets above RAM become RAM, non-numbers keep the previous
    target; each is a violation override."""
    d = decide({"a": value}, guest("a", target=5))
    assert d.targets == {"a": applied}
    assert rules(d) == [("a", rule, applied)] and d.violations == d.overrides


def test_unknown_guests_are_ignored_with_a_violation() -> None:
    """A target for a guest the host does not run is dropped and reported."""
    d = decide({"zz": 10, "a": 1}, guest("a", target=5))
    assert d.targets == {"a": 1}
    assert rules(d) == [("zz", "unknown-guest", None)]


def test_logged_answer_never_carries_a_repr() -> None:
    """Odd values are logged by type, so a memory address never reaches the log."""
    d = decide({"a": object(), 7: 1}, guest("a", target=5))
    assert d.asked == {"a": "<object>", "7": 1}


# -- hostile answers: everything the policy hands back is read inside the containment ----------


class RaisingGet(Mapping[str, int]):
    """A mapping whose lookups raise (``items()`` goes through ``__getitem__``)."""

    def __getitem__(self, key: str) -> int:
        raise KeyError("no lookups")

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


class RaisingItems(dict[str, int]):
    def items(self) -> Any:
        raise RuntimeError("items refused")


class Endless(Mapping[str, int]):
    """A mapping whose iteration never ends."""

    def __getitem__(self, key: str) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        while True:
            yield "a"

    def __len__(self) -> int:
        return 1


class LyingInt(int):
    """An int whose own conversion raises: the shell reads it as the int it is."""

    def __int__(self) -> int:
        raise ValueError("no int for you")


class LyingStr(str):
    """A key whose hash and equality raise: the shell copies it to a plain str first."""

    __slots__ = ()

    def __hash__(self) -> int:
        raise TypeError("unhashable today")

    def __eq__(self, other: object) -> bool:
        raise TypeError("incomparable today")


class BadMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


class EndlessMessage(Exception):
    def __str__(self) -> str:
        while True:
            pass


BUDGET = ShellConfig(floor="none", stall_after=0.0, decide_budget=5000)

#: (id, what decide() returns or raises, the error logged)
HOSTILE_ERRORS: list[tuple[str, Any, str]] = [
    ("getitem raises", RaisingGet(), "reading decide()'s answer: KeyError: 'no lookups'"),
    ("items raises", RaisingItems(a=1), "reading decide()'s answer: RuntimeError: items refused"),
    ("endless mapping", Endless(), "did not finish within its budget of 5000"),
    ("SystemExit", SystemExit(4), "SystemExit: 4"),
    ("GeneratorExit", GeneratorExit(), "GeneratorExit: "),
    ("BaseException", BaseException("odd"), "BaseException: odd"),
    ("message raises", BadMessage(), "BadMessage (its message raised RuntimeError)"),
    ("endless message", EndlessMessage(), "EndlessMessage (its message raised "
                                           "DecideBudgetExceeded)"),
]


@pytest.mark.parametrize(("answer", "error"), [h[1:] for h in HOSTILE_ERRORS],
                         ids=[h[0] for h in HOSTILE_ERRORS])
def test_an_answer_that_cannot_be_read_is_a_contained_error(answer: Any, error: str) -> None:
    """Whatever the answer's own methods (or the exception's message) do -- raise, never end,
    exit -- is contained like an exception in decide(): every target is kept, the error says
    what happened."""
    d = decide(answer, guest("a", target=5), guest("b", target=7), config=BUDGET)
    assert d.targets == {"a": 5, "b": 7} and d.asked is None
    assert d.error is not None and error in d.error


#: (id, the value asked for guest a, what is logged as asked, the target applied, the rule)
HOSTILE_VALUES: list[tuple[str, object, object, int, str | None]] = [
    ("int subclass", LyingInt(300), 300, 300, None),
    ("2**64", 2**64, "18446744073709551616", 1000, "above-ram"),
    ("-2**64", -2**64, "-18446744073709551616", 0, "negative"),
    ("1e300", 1e300, 1e300, 1000, "above-ram"),
    ("10**5000", 10**5000, "<int of 16610 bits>", 1000, "above-ram"),
    ("-10**5000", -10**5000, "<negative int of 16610 bits>", 0, "negative"),
    ("nan", math.nan, "nan", 5, "not-a-number"),
    ("-inf", -math.inf, "-inf", 5, "not-a-number"),
    ("str subclass", LyingStr("x"), "'x'", 5, "not-a-number"),
]


@pytest.mark.parametrize(("value", "shown", "applied", "rule"), [h[1:] for h in HOSTILE_VALUES],
                         ids=[h[0] for h in HOSTILE_VALUES])
def test_hostile_values_are_plain_and_loggable(value: object, shown: object, applied: int,
                                               rule: str | None) -> None:
    """Odd numbers are contract violations, clamped or kept, and every logged value is a plain
    int, float or str that the log writer can always write (no 5000-digit integer)."""
    d = decide({"a": value}, guest("a", target=5), config=BUDGET)
    assert d.error is None and d.targets == {"a": applied}
    assert d.asked == {"a": shown} and type(d.asked["a"]) in (int, float, str)
    assert [(o.rule, o.applied) for o in d.overrides] == ([(rule, applied)] if rule else [])
    for o in d.overrides:
        assert type(o.asked) in (int, float, str) and len(o.reason) < 200


def test_a_hostile_key_is_copied_before_use() -> None:
    """A str subclass whose hash and equality raise is read as the plain string it holds."""
    class Pairs(dict[str, int]):  # a dict could not hold the key: its items() yields it
        def items(self) -> Any:
            return [(LyingStr("a"), 9)]

    d = decide(Pairs(), guest("a", target=5), config=BUDGET)
    assert d.error is None and d.targets == {"a": 9} and type(next(iter(d.asked or {}))) is str


def vandal(view: HostView) -> Mapping[str, int]:
    """Forces the frozen views open and rewrites what the shell would clamp with."""
    for g in view.guests:
        object.__setattr__(g, "ram_pages", 10**9)
        object.__setattr__(g, "floor_pages", 0)
        object.__setattr__(g, "target", 123)
    object.__setattr__(view.guests[0], "name", "b")
    object.__setattr__(view, "guests", view.guests[:1])
    return {"a": 10**6}


def test_a_policy_that_mutates_its_view_changes_only_its_copy() -> None:
    """The policy gets a private copy: the shell clamps with the real RAM and floor, and an
    omitted guest keeps its real target."""
    d = decide(vandal, guest("a", target=5, floor=100), guest("b", target=7), config=BUDGET)
    assert d.targets == {"a": 900, "b": 7}
    assert rules(d) == [("a", "above-ram", 1000), ("a", "floor", 900)]


def test_the_host_history_cannot_be_rewritten_through_a_view() -> None:
    """Samples in a view are copies: rewriting them leaves the originals as they were."""
    sample = GuestSample(1.0, 0, 1000, 10, 1000, 0)
    host_sample = HostSample(1.0, 500)
    view = HostView(0.0, 10_000, 1_000, (replace(guest("a"), history=(sample,)),),
                    (host_sample,))

    def rewrite(v: HostView) -> Mapping[str, int]:
        object.__setattr__(v.guests[0].history[0], "free", -1)
        object.__setattr__(v.history[0], "free_pages", -1)
        return {}

    SafetyShell(BUDGET).decide(Answer(rewrite), view)
    assert (sample.free, host_sample.free_pages) == (10, 500)


def test_keyboard_interrupt_still_propagates() -> None:
    """Ctrl-C raised inside decide() (or while its answer is read) is not contained."""
    with pytest.raises(KeyboardInterrupt):
        decide(KeyboardInterrupt(), guest("a"), config=BUDGET)

    class Interrupting(dict[str, int]):
        def items(self) -> Any:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decide(Interrupting(), guest("a"), config=BUDGET)


@pytest.mark.parametrize(("name", "logged"), [
    ("mine", "mine"), (LyingStr("odd"), "odd"), (object(), "Answer"), (42, "Answer")])
def test_policy_name_is_a_plain_string(name: object, logged: str) -> None:
    """The host logs a policy by a plain string; a name that is not one is the class's."""
    p = Answer()
    setattr(p, "name", name)  # noqa: B010 - any object, not what the annotation says
    assert policy_name(p) == logged and type(policy_name(p)) is str


# -- regulation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "applied", "rule"), [
    (300, 300, None),  # a change of 200 pages: outside the dead-band
    (150, 100, "deadband"),  # +50 < 64 pages: ignored
    (40, 100, "deadband"),  # -60: ignored
    (36, 36, None),  # -64 is not smaller than the dead-band
])
def test_deadband(asked: int, applied: int, rule: str | None) -> None:
    """Changes smaller than the dead-band (256 KiB = 64 pages) keep the previous target."""
    d = decide({"a": asked}, guest("a", target=100), config=ShellConfig(
        floor="none", stall_after=0, deadband=64 * 4096))
    assert d.targets == {"a": applied}
    assert [o.rule for o in d.overrides] == ([rule] if rule else [])


@pytest.mark.parametrize(("asked", "applied"), [(900, 356), (0, 0), (356, 356), (357, 356)])
def test_max_step(asked: int, applied: int) -> None:
    """No target moves more than max_step (1 MiB = 256 pages) per tick, in either direction."""
    d = decide({"a": asked}, guest("a", target=100), config=ShellConfig(
        floor="none", stall_after=0, max_step=1 << 20))
    assert d.targets == {"a": applied}
    d = decide({"a": 0}, guest("a", target=600), config=ShellConfig(
        floor="none", stall_after=0, max_step=1 << 20))
    assert d.targets == {"a": 344} and rules(d) == [("a", "max-step", 344)]


def test_floor_caps_the_balloon_at_ram_minus_floor() -> None:
    """The balloon never exceeds RAM - floor; the override says the floor in pages and MiB."""
    d = decide({"a": 900, "b": 100}, guest("a", floor=256), guest("b", floor=256))
    assert d.targets == {"a": 744, "b": 100}
    assert rules(d) == [("a", "floor", 744)]
    assert "floor of 256 pages (1.0 MiB)" in d.overrides[0].reason


@pytest.mark.parametrize(("ram_mib", "floor_mib"), [
    (64, 8 + 32), (127, 8 + 63.5), (128, 40 + 32), (256, 40 + 64), (511, 40 + 127.75),
    (512, 104 + 64), (1024, 104 + 128), (2048, 232 + 128), (4096, 232 + 256),
    (8192, 488 + 256), (65536, 488 + 2048),
])
def test_hyperv_floor_hand_computed(ram_mib: int, floor_mib: float) -> None:
    """Linux hv_balloon's floor, piece by piece, in 4 KiB pages."""
    assert hyperv_floor(ram_mib * MiB) == int(floor_mib * MiB)


@pytest.mark.parametrize(("rule", "min_memory", "expected"), [
    ("hyperv", 0, 232 * MiB),
    ("none", 0, 0),
    ("25%", 0, 256 * MiB),
    ("300MiB", 0, 300 * MiB),
    ("4GiB", 0, 1024 * MiB),  # never more than the guest has
    ("hyperv", 100 * MiB, 100 * MiB),  # a guest's min_memory wins
])
def test_guest_floor_rules(rule: str, min_memory: int, expected: int) -> None:
    """The floor of a 1 GiB guest under each rule."""
    assert guest_floor(ShellConfig(floor=rule), 1024 * MiB, min_memory) == expected


@pytest.mark.parametrize("rule", ["lots", "120%", "x%"])
def test_bad_floor_rule_is_a_validation_problem(rule: str) -> None:
    """A floor that is not hyperv, none, a size or a percentage is reported by validate()."""
    assert [k for k, _ in ShellConfig(floor=rule).validate()] == ["floor"]


# -- the stall detector ---------------------------------------------------------------------------


CFG = ShellConfig(floor="none", stall_after=4.0, stall_rate=15 << 20, stall_backoff=128 << 20,
                  stall_hold=10.0)
RAM = 1024 * MiB


def test_inflate_stall_backs_off_and_holds() -> None:
    """An inflating guest moving slower than 15 MiB/s for 4 s is stalled: its balloon backs
    off at once to actual - 128 MiB (not below 0), held there for 10 s against the policy,
    then released; the policy sees the guest as stalled meanwhile."""
    sh = SafetyShell(CFG)
    want = {"a": 300 * MiB}
    d = sh.decide(Answer(want), hv(guest("a", RAM, target=0, actual=0), t=0.0))
    assert d.targets == want
    assert sh.watch(hv(guest("a", RAM, target=300 * MiB, actual=20 * MiB), t=3.0)) == []
    # 4 s after the target was set the guest has moved 40 MiB: 10 MiB/s < 15 MiB/s
    (s,) = sh.watch(hv(guest("a", RAM, target=300 * MiB, actual=40 * MiB), t=4.0))
    assert (s.guest, s.target, s.actual, s.rate) == ("a", 300 * MiB, 40 * MiB, 10 * MiB)
    assert (s.backoff, s.hold_until) == (0, 14.0)
    assert sh.hold("a", 13.9) == 0 and sh.hold("a", 14.0) is None
    # during the hold the policy cannot inflate beyond the back-off
    seen: list[GuestView] = []
    d = sh.decide(Answer(_recording(seen, want)),
                  hv(guest("a", RAM, target=0, actual=0), t=9.0))
    assert d.targets == {"a": 0} and rules(d) == [("a", "stall-hold", 0)]
    assert seen[0].stalled and not seen[0].progressing
    # after it, it can
    d = sh.decide(Answer(want), hv(guest("a", RAM, target=0, actual=0), t=14.0))
    assert d.targets == want and d.overrides == []


def test_backoff_keeps_what_the_guest_gave_above_128_mib() -> None:
    """A guest stalled at 500 MiB of balloon is backed off to 372 MiB."""
    sh = SafetyShell(CFG)
    sh.decide(Answer({"a": 900 * MiB}), hv(guest("a", RAM, target=400 * MiB), t=0.0))
    (s,) = sh.watch(hv(guest("a", RAM, target=900 * MiB, actual=420 * MiB), t=5.0))
    assert s.backoff == 292 * MiB


def test_fast_enough_progress_is_not_a_stall() -> None:
    """Moving at 20 MiB/s is progress: no stall, and the window slides."""
    sh = SafetyShell(CFG)
    sh.decide(Answer({"a": 500 * MiB}), hv(guest("a", RAM), t=0.0))
    assert sh.watch(hv(guest("a", RAM, target=500 * MiB, actual=80 * MiB), t=4.0)) == []
    assert sh.watch(hv(guest("a", RAM, target=500 * MiB, actual=90 * MiB), t=7.0)) == []
    (s,) = sh.watch(hv(guest("a", RAM, target=500 * MiB, actual=100 * MiB), t=8.0))
    assert s.rate == 5 * MiB  # 20 MiB in the 4 s since the window slid at t=4


def test_deflate_stall_is_reported_without_backoff() -> None:
    """A deflate that does not progress is reported (progressing False) but nothing backs off."""
    sh = SafetyShell(CFG)
    sh.decide(Answer({"a": 0}), hv(guest("a", RAM, target=300 * MiB), t=0.0))
    (s,) = sh.watch(hv(guest("a", RAM, target=0, actual=300 * MiB), t=5.0))
    assert s.backoff is None and s.rate == 0.0 and sh.hold("a", 5.0) is None
    seen: list[GuestView] = []
    sh.decide(Answer(_recording(seen, {})),
              hv(guest("a", RAM, target=0, actual=300 * MiB), t=6.0))
    assert not seen[0].progressing and not seen[0].stalled


def test_a_new_target_restarts_the_window() -> None:
    """A target change gives the guest a fresh stall_after to get going."""
    sh = SafetyShell(CFG)
    sh.decide(Answer({"a": 100 * MiB}), hv(guest("a", RAM), t=0.0))
    sh.decide(Answer({"a": 200 * MiB}), hv(guest("a", RAM, target=100 * MiB, actual=0), t=3.0))
    assert sh.watch(hv(guest("a", RAM, target=200 * MiB, actual=0), t=5.0)) == []
    assert len(sh.watch(hv(guest("a", RAM, target=200 * MiB, actual=0), t=7.0))) == 1


# -- the deterministic budget -----------------------------------------------------------------


def spin(view: HostView) -> Mapping[str, int]:
    while True:
        pass


def swallow(view: HostView) -> Mapping[str, int]:
    """A policy that catches Exception in its loop still cannot swallow the budget."""
    while True:
        try:
            while True:
                pass
        except Exception:
            pass


def work(view: HostView) -> Mapping[str, int]:
    return {"a": sum(range(50))}


def test_budget_stops_an_endless_decide() -> None:
    """An endless decide() is stopped by the trace-event budget, also through except
    Exception; the tick keeps every target and reports the budget."""
    with pytest.raises(DecideBudgetExceeded):
        run_guarded(spin, hv(guest("a")), 1000)
    with pytest.raises(DecideBudgetExceeded):
        run_guarded(swallow, hv(guest("a")), 1000)
    d = decide(spin, guest("a", target=5), config=ShellConfig(
        floor="none", stall_after=0, decide_budget=5000))
    assert d.targets == {"a": 5}
    assert d.error is not None and "budget of 5000 Python trace events" in d.error


def test_budget_count_is_deterministic_and_restores_the_tracer() -> None:
    """The same decide() uses the same number of trace events every time, and a tracer
    installed before (a debugger, coverage) is back afterwards."""
    import sys

    def outer(frame: Any, event: str, arg: Any) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(outer)
    try:
        counts = {run_guarded(work, hv(guest("a")), 10_000)[1] for _ in range(5)}
        assert sys.gettrace() is outer
    finally:
        sys.settrace(previous)
    assert len(counts) == 1 and counts.pop() > 0
    assert run_guarded(work, hv(guest("a")), 0) == ({"a": 1225}, 0)
