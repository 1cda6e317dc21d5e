"""The safety shell around every host policy: contain, bound, clamp, regulate, back off.

Whatever a policy does, the host keeps running and every guest keeps a sane target:

1. **Contain.** ``decide`` runs under a deterministic work budget (below), on a fresh copy of
   the view (a policy that forces a frozen view open with ``object.__setattr__`` changes only
   its own copy). Reading its answer -- iterating the mapping, converting every value -- runs
   inside the same containment and budget, and copies it into plain ``str`` keys and ``int``
   targets before anything else looks at it. An exception (any ``BaseException`` but
   ``KeyboardInterrupt``: ``SystemExit`` and ``GeneratorExit`` too), a blown budget, an answer
   that is not a mapping or one that cannot be read keeps every previous target and is
   reported as a policy error.
2. **Validate** each answer (the policy's *contract*): targets for unknown guests are ignored,
   non-numbers (``nan`` and infinities too) keep the previous target, negative targets become
   0, targets above guest RAM (``2**64``, ``1e300``) become RAM. These are *violations*,
   counted apart; each is logged with a value the log can always write (``_loggable``).
3. **Regulate** relative to the previous target: changes smaller than ``deadband`` are
   ignored; no target moves by more than ``max_step`` per tick.
4. **Clamp** to the hard limits: the balloon never exceeds ``RAM - floor`` (targets are balloon
   sizes; the floor is the least *memory* a guest keeps), and while a stall hold is active it
   does not exceed the backed-off size.
5. **Back off on stalls** (ChromeOS concierge's detector), on its own cadence
   (``stall_check``, independent of the policy's interval): a guest that has not reached its
   target and moved towards it at less than ``stall_rate`` over at least ``stall_after`` since
   the target was set (or since the last check that saw progress) is stalled; if it was
   inflating, its balloon is backed off at once to ``actual - stall_backoff`` and held there for
   ``stall_hold`` (the guest could not give more without suffering).

Every step that changes what the policy asked for is an ``Override`` with a rule and a reason;
the host logs each one.

**Why a trace budget, not a timeout.** ``decide`` is synchronous, so "takes forever" must be
detected from inside the call. A wall-clock timeout (a thread, SIGALRM) would make the log
depend on the machine's speed and load: the same seed could time out on one run and not on
the next. Instead ``decide`` runs under ``sys.settrace`` with a counter of Python trace
events (calls, lines, returns) -- of ``decide`` and of reading its answer, so a mapping
whose iteration never ends is stopped too: past ``decide_budget`` events the tracer raises
``DecideBudgetExceeded`` (a BaseException, so ``except Exception`` in the policy cannot swallow
it) inside the policy. The count is a pure function of the code and its input, so the outcome
is identical on every run and machine. Limits, stated plainly: time spent inside C code
(``time.sleep``, a blocking read, one huge C-level loop) raises no trace events and is not
interrupted -- Ctrl-C still ends the session with its log closed; a policy that catches
``BaseException`` can defeat the guard (as it defeats Ctrl-C); tracing replaces a debugger's
or coverage tool's tracer during ``decide`` (it is restored afterwards).
"""

from __future__ import annotations

import gc
import math
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any

from actors.host.policy import HostPolicy
from actors.host.view import MIB, GuestView, HostView, hyperv_floor
from actors.sim.units import UnitError, parse_size

#: Override rules that mean the policy broke its contract (the rest is normal regulation).
CONTRACT_RULES = frozenset({"unknown-guest", "not-a-number", "negative", "above-ram"})

#: A policy's value as the log records it (see ``_loggable``).
Loggable = int | float | str


def _size(default: str, doc: str) -> int:
    return field(default=parse_size(default), metadata={"unit": "size", "doc": doc})


def _dur(default: float, doc: str) -> float:
    return field(default=default, metadata={"unit": "duration", "doc": doc})


@dataclass(frozen=True, slots=True)
class ShellConfig:
    """Scenario table ``[host.policy.shell]``: the safety shell's knobs (sizes per guest)."""

    floor: str = field(default="hyperv", metadata={
        "doc": "least memory a guest keeps: hyperv (Linux hv_balloon's formula), none, a size "
               "or a percentage of guest RAM; a guest's min_memory overrides it"})
    deadband: int = _size("0", "ignore target changes smaller than this (0: off)")
    max_step: int = _size("0", "largest target change per tick (0: unlimited)")
    stall_check: float = _dur(1.0, "how often the stall detector looks (ChromeOS: 5 s)")
    stall_after: float = _dur(4.0, "judge progress over at least this long (0: no detector)")
    stall_rate: int = _size("15MiB", "less progress than this per second is a stall")
    stall_backoff: int = _size("128MiB", "on an inflate stall, back off to actual minus this")
    stall_hold: float = _dur(10.0, "after a stall, hold the balloon at most at the backoff")
    decide_budget: int = field(default=200_000, metadata={
        "doc": "Python trace events decide() may use per tick (0: unguarded)"})

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        try:
            self.floor_pages(1)
        except ValueError as e:
            problems.append(("floor", str(e)))
        for key in ("deadband", "max_step", "stall_rate", "stall_backoff"):
            if getattr(self, key) < 0:
                problems.append((key, "must be >= 0"))
        for key in ("stall_after", "stall_hold"):
            if getattr(self, key) < 0:
                problems.append((key, "must be >= 0"))
        if self.stall_check <= 0:
            problems.append(("stall_check", "must be > 0"))
        if self.decide_budget < 0:
            problems.append(("decide_budget", "must be >= 0"))
        return problems

    def floor_pages(self, ram_pages: int) -> int:
        """The floor (least guest memory, 4 KiB pages) of a guest with ``ram_pages``."""
        rule = self.floor.strip()
        if rule == "hyperv":
            return min(ram_pages, hyperv_floor(ram_pages))
        if rule == "none":
            return 0
        if rule.endswith("%"):
            try:
                pct = float(rule[:-1])
            except ValueError:
                raise ValueError(f"bad percentage {self.floor!r}") from None
            if not 0 <= pct <= 100:
                raise ValueError(f"{self.floor!r} not in 0..100%")
            return int(ram_pages * pct / 100)
        try:
            return min(ram_pages, parse_size(rule) // 4096)
        except UnitError as e:
            raise ValueError(f"expected hyperv, none, a size or a percentage: {e}") from None


@dataclass(frozen=True, slots=True)
class Override:
    """One place where the shell did not apply what the policy asked."""

    guest: str
    rule: str  # unknown-guest | not-a-number | negative | above-ram | deadband | max-step |
    #            floor | stall-hold
    asked: Loggable | None  # what the policy asked (None: it left the guest alone)
    applied: int | None  # the target applied (None: nothing, for an unknown guest)
    reason: str

    @property
    def violation(self) -> bool:
        return self.rule in CONTRACT_RULES


@dataclass(frozen=True, slots=True)
class Stall:
    """The stall detector fired for one guest."""

    guest: str
    target: int
    actual: int
    rate: float  # pages per second towards the target over the window
    backoff: int | None  # the balloon size it is held at (None: deflating, nothing to do)
    hold_until: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the shell made of one policy tick."""

    targets: dict[str, int]  # every guest's target after the shell
    asked: dict[str, Loggable] | None  # the policy's answer, log-safe (None: it failed)
    overrides: list[Override] = field(default_factory=list)
    error: str | None = None
    steps: int = 0  # trace events decide() used (0 when unguarded)

    @property
    def violations(self) -> list[Override]:
        return [o for o in self.overrides if o.violation]


class DecideBudgetExceeded(BaseException):
    """Raised inside a policy's decide() when it exceeds its trace-event budget."""


def run_guarded(decide: Callable[[HostView], Any], view: HostView, budget: int
                ) -> tuple[Any, int]:
    """Call ``decide(view)`` under a deterministic budget of Python trace events.

    Returns (answer, events used); raises DecideBudgetExceeded past the budget, and whatever
    decide raises.
    """
    if budget <= 0:
        return decide(view), 0
    used = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal used
        used += 1
        if used > budget:
            raise DecideBudgetExceeded
        return tracer

    previous = sys.gettrace()
    # No cyclic collection meanwhile: its finalizers (other code's objects) would run inside
    # the count, and be the ones interrupted when the budget runs out.
    collecting = gc.isenabled()
    gc.disable()
    sys.settrace(tracer)
    try:
        return decide(view), used
    finally:
        sys.settrace(previous)
        if collecting:
            gc.enable()


#: The integers the log writes as numbers (what JSON's 64-bit readers hold).
_I64_MIN, _U64_MAX = -(1 << 63), (1 << 64) - 1
#: Past this size an integer is logged by its size alone (its digits would fill the record, and
#: ``str()`` refuses integers of more than 4300 digits).
_DIGITS_BITS = 256


def _loggable(value: object) -> Loggable:
    """A policy's value as the log records it, always a plain ``int``, ``float`` or ``str``:
    numbers as such (integers beyond 64 bits as their digits, huge ones by size, non-finite
    floats as ``'nan'``/``'inf'``), strings quoted and cut, anything else by type only (a repr
    could carry a memory address and break byte-identical logs). Subclasses are read with the
    base type's own methods, never the policy's overrides."""
    if isinstance(value, bool):
        return f"<{type(value).__name__}>"
    if isinstance(value, int):
        v = int.__int__(value)
        if _I64_MIN <= v <= _U64_MAX:
            return v
        bits = v.bit_length()
        if bits <= _DIGITS_BITS:
            return str(v)
        return f"<{'negative ' if v < 0 else ''}int of {bits} bits>"
    if isinstance(value, float):
        f = float.__float__(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, str):
        return repr(str.__str__(value)[:40])
    return f"<{type(value).__name__}>"


def _pages(value: object) -> int | None:
    """A target's value as a plain int (floats truncated); None if it is not a finite number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        f = float.__float__(value)
        return int(f) if math.isfinite(f) else None
    return None


@dataclass(frozen=True, slots=True)
class _Asked:
    """One entry of a policy's answer, copied into plain values inside the containment."""

    guest: str  # the key as logged
    named: bool  # the key was a string (no guest matches any other key)
    shown: Loggable  # the value as logged
    pages: int | None  # the target it asks for; None: not a number


def _read_answer(answer: object) -> list[_Asked] | str:
    """The policy's answer copied into plain values, or why it is not a mapping.

    Runs inside the containment and the budget: whatever the answer's own methods do
    (``items``, ``__getitem__``, ``__iter__``, ``__int__``, ``__class__``...) is the policy's
    code, and may raise or never end."""
    if not isinstance(answer, Mapping):
        return (f"decide() returned {type(answer).__name__}, expected a mapping of guest name "
                "to target")
    read = []
    for name, value in answer.items():
        named = isinstance(name, str)
        key = str.__str__(name) if named else str(_loggable(name))
        read.append(_Asked(key, named, _loggable(value), _pages(value)))
    return read


def _as_asked(pages: int, shown: Loggable) -> Loggable:
    """What an override says was asked: the whole pages, or the logged value if they are too
    big to log as a number."""
    return pages if _I64_MIN <= pages <= _U64_MAX else shown


def _private_copy(view: HostView) -> HostView:
    """A copy of ``view`` sharing no object with the host or the shell: the views are frozen,
    but ``object.__setattr__`` opens them, and what a policy does to its view must not reach
    the targets, the stall detector or the host's history."""
    return replace(
        view, history=tuple(replace(s) for s in view.history),
        guests=tuple(replace(g, stats=MappingProxyType(dict(g.stats)),
                             history=tuple(replace(s) for s in g.history))
                     for g in view.guests))


def _type_name(obj: object) -> str:
    """The name of ``obj``'s class, read without running any code of the policy's (a metaclass
    may override ``__name__``)."""
    return str(vars(type)["__name__"].__get__(type(obj)))


def policy_name(policy: HostPolicy) -> str:
    """The name the host logs a policy by, read once when the host is built: a plain string,
    so a policy that renames itself later (``self.name = object()``) changes nothing in the
    log; a name that is not a string (or cannot be read) is the class's name."""
    try:
        name = policy.name
    except Exception:
        return _type_name(policy)
    return str.__str__(name) if isinstance(name, str) else _type_name(policy)


@dataclass
class _Progress:
    """The stall detector's state for one guest: the window it judges progress over."""

    target: int
    since: float
    actual: int
    progressing: bool = True
    hold_until: float = -math.inf
    hold_target: int = 0

    def restart(self, target: int, now: float, actual: int) -> None:
        self.target, self.since, self.actual = target, now, actual


class SafetyShell:
    """Runs a policy's decide() each tick and turns its answer into safe targets."""

    def __init__(self, config: ShellConfig) -> None:
        self.config = config
        #: The first exception a policy raised, as a traceback of the policy's own frames
        #: (file names without their directories, so logs compare across machines).
        self.first_traceback: str | None = None
        self._progress: dict[str, _Progress] = {}

    # -- the stall detector ------------------------------------------------------------------------
    def _progress_of(self, g: GuestView, now: float) -> _Progress:
        p = self._progress.get(g.name)
        if p is None:
            p = self._progress[g.name] = _Progress(g.target, now, g.actual)
        return p

    def watch(self, view: HostView) -> list[Stall]:
        """One look of the stall detector (every ``stall_check``): the stalls it found. An
        inflate stall's back-off is in force from now: ``hold(name)`` gives the new target."""
        c, now = self.config, view.time
        stalls = []
        for g in view.guests:
            p = self._progress_of(g, now)
            gap = g.target - g.actual
            if abs(gap) < 16 or g.target != p.target or c.stall_after <= 0:
                p.restart(g.target, now, g.actual)  # settled, or a request it has not judged
                p.progressing = True
            elif now - p.since >= c.stall_after:
                rate = (g.actual - p.actual) * (1 if gap > 0 else -1) / (now - p.since)
                p.progressing = rate >= c.stall_rate / 4096
                if not p.progressing:
                    backoff = None
                    if gap > 0:  # inflating: give the guest room back and hold
                        backoff = max(0, g.actual - c.stall_backoff // 4096)
                        p.hold_until, p.hold_target = now + c.stall_hold, backoff
                        p.target = backoff
                    stalls.append(Stall(g.name, g.target, g.actual, round(rate, 3), backoff,
                                        round(p.hold_until if backoff is not None else now, 9)))
                p.restart(p.target, now, g.actual)
        return stalls

    def hold(self, name: str, now: float) -> int | None:
        """The most the guest's balloon may be while a stall hold is in force (else None)."""
        p = self._progress.get(name)
        return p.hold_target if p is not None and now < p.hold_until else None

    def _annotate(self, g: GuestView, now: float) -> GuestView:
        p = self._progress_of(g, now)
        return replace(g, progressing=p.progressing, stalled=now < p.hold_until)

    # -- one tick --------------------------------------------------------------------------------
    def decide(self, policy: HostPolicy, view: HostView) -> Decision:
        """Run the policy on a private copy of the annotated view under its budget, read its
        answer inside the same containment, and make it safe."""
        view = replace(view, guests=tuple(self._annotate(g, view.time) for g in view.guests))
        stage = ""  # what failed: "" decide() itself, else the reading of its answer

        def contained(mine: HostView) -> list[_Asked] | str:
            nonlocal stage
            answer = policy.decide(mine)
            stage = "reading decide()'s answer: "
            return _read_answer(answer)

        try:
            read, steps = run_guarded(contained, _private_copy(view), self.config.decide_budget)
        except DecideBudgetExceeded:
            return self._regulate(view, {}, None, 0,
                                  f"decide() did not finish within its budget of "
                                  f"{self.config.decide_budget} Python trace events "
                                  "(host.policy.shell.decide_budget)")
        except KeyboardInterrupt:  # Ctrl-C (or a stop signal) ends the session as always
            raise
        except BaseException as e:  # SystemExit, GeneratorExit too: a policy never stops it
            described = stage + self._describe(e, view)
            if self.first_traceback is None:
                self.first_traceback = _policy_frames(e) + described
            return self._regulate(view, {}, None, 0, described)
        if isinstance(read, str):
            return self._regulate(view, {}, None, steps, read)
        return self._apply(view, read, steps)

    def _describe(self, e: BaseException, view: HostView) -> str:
        """``Type: message`` of a policy's exception. Its ``__str__`` is the policy's code, so
        it is read under the budget too; if that fails, the class name alone."""
        try:
            text, _ = run_guarded(lambda _: f"{type(e).__name__}: {e}", view,
                                  self.config.decide_budget)
        except KeyboardInterrupt:
            raise
        except BaseException as inner:
            return f"{_type_name(e)} (its message raised {_type_name(inner)})"
        return str.__str__(text) if isinstance(text, str) else _type_name(e)

    def _apply(self, view: HostView, read: list[_Asked], steps: int) -> Decision:
        """The contract on an answer already copied into plain values."""
        previous = {g.name: g.target for g in view.guests}
        overrides: list[Override] = []
        asked: dict[str, Loggable] = {}
        wanted: dict[str, int] = {}
        for item in read:
            name, shown = item.guest, item.shown
            asked[name] = shown
            if not item.named or name not in previous:
                overrides.append(Override(name, "unknown-guest", shown, None,
                                          "no such guest; ignored"))
                continue
            g = view.guest(name)
            if item.pages is None:
                overrides.append(Override(name, "not-a-number", shown, g.target,
                                          f"target {shown} is not a number; kept {g.target}"))
                continue
            v = item.pages
            if v < 0:
                said = _as_asked(v, shown)
                overrides.append(Override(name, "negative", said, 0,
                                          f"target {said} < 0; clamped"))
                v = 0
            elif v > g.ram_pages:
                said = _as_asked(v, shown)
                overrides.append(Override(name, "above-ram", said, g.ram_pages,
                                          f"target {said} above guest RAM; clamped"))
                v = g.ram_pages
            wanted[name] = v
        return self._regulate(view, wanted, asked, steps, None, overrides)

    def _regulate(self, view: HostView, wanted: dict[str, int],
                  asked: dict[str, Loggable] | None, steps: int,
                  error: str | None, overrides: list[Override] | None = None) -> Decision:
        """Dead-band, max step, floor and stall hold, per guest (omitted guests keep theirs)."""
        c = self.config
        overrides = overrides if overrides is not None else []
        targets: dict[str, int] = {}
        for g in view.guests:
            prev = g.target
            v = wanted.get(g.name, prev)
            shown: int | None = v if g.name in wanted else None
            delta = v - prev
            if delta and abs(delta) < c.deadband // 4096:
                overrides.append(Override(g.name, "deadband", shown, prev,
                                          f"change {delta:+d} smaller than the dead-band "
                                          f"({c.deadband // 4096} pages)"))
                v = prev
            elif c.max_step and abs(delta) > c.max_step // 4096:
                step = c.max_step // 4096
                v = prev + (step if delta > 0 else -step)
                overrides.append(Override(g.name, "max-step", shown, v,
                                          f"change {delta:+d} limited to {step} pages per tick"))
            if v > g.max_balloon:
                overrides.append(Override(
                    g.name, "floor", shown, g.max_balloon,
                    f"balloon {v} would leave less than the floor of {g.floor_pages} pages "
                    f"({g.floor_pages / MIB:.1f} MiB)"))
                v = g.max_balloon
            p = self._progress_of(g, view.time)
            if view.time < p.hold_until and v > p.hold_target:
                overrides.append(Override(
                    g.name, "stall-hold", shown, p.hold_target,
                    f"stalled: balloon held at {p.hold_target} until t={p.hold_until:.3f}"))
                v = p.hold_target
            if v != prev:  # a new request: the stall detector judges it from now
                p.restart(v, view.time, g.actual)
                p.progressing = True
            targets[g.name] = v
        return Decision(targets, asked, overrides, error, steps)


def guest_floor(config: ShellConfig, ram_pages: int, min_memory_pages: int) -> int:
    """A guest's floor: its own min_memory if set, else the shell's rule."""
    if min_memory_pages:
        return min(ram_pages, min_memory_pages)
    return config.floor_pages(ram_pages)


#: vballoon's own code: frames here are the shell's, not the policy's.
_OURS = Path(__file__).resolve().parent.parent


def _policy_frames(e: BaseException) -> str:
    """The traceback of a policy's exception, its frames outside vballoon's own code only
    (where the policy author's file and line are), innermost last."""
    lines = []
    for frame in traceback.extract_tb(e.__traceback__):
        path = Path(frame.filename)
        if path.resolve().is_relative_to(_OURS):
            continue
        lines.append(f'  File "{path.name}", line {frame.lineno}, in {frame.name}\n')
        if frame.line:
            lines.append(f"    {frame.line}\n")
    return "Traceback (the policy's frames):\n" + "".join(lines) if lines else ""
