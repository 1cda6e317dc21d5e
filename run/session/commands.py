"""The session command language, shared by scenarios' ``[[actions]]`` and ``run --do``.

QEMU-monitor flavoured, one command per line, parsed here without doing anything (the session
applies them, ``Session._actions``), so a bad command is refused when the scenario loads, with
the entry that holds it, never mid-run:

- ``balloon GUEST SIZE``: set the guest's *logical size* to SIZE, as QEMU's ``balloon``
  does: the host's target is RAM - SIZE, in 4 KiB pages. It overrides the policy for that
  guest until ``policy resume``.
- ``policy resume [GUEST]``: hand the guest (default: every guest) back to the policy.
- ``policy NAME [KEY=VALUE ...]``: swap the host's policy live (a built-in name, or a plug-in
  as ``module:attr`` / ``path.py:Class``), configured with the given parameters.
- ``fault SITE [P|off]``: activate a fault site (firing probability P, default the site's own)
  or switch it off (``actors.sim.choices.SITES``).
- ``compact GUEST [WORKERS]``: ``echo 1 > /proc/sys/vm/compact_memory`` by WORKERS writers at
  once (default: the scenario's ``compaction.workers``, at least one).
- ``unplug GUEST``: hot-unplug the balloon device (the driver's remove callback).

An action is a command and the virtual instant it takes effect (``{ at = "10s", do = "..." }``
in a scenario, ``--do "10s: compact guest0"`` on the command line); every action applied is a
``session.action`` record at that instant, and the scenario (with its actions) is in the log
header, so ``vballoon replay`` re-applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from actors.host.loader import find_policy
from actors.host.policy import PolicyError
from actors.sim.choices import SITES
from actors.sim.units import parse_duration, parse_size

#: Each command and its one-line help (``vballoon run --help`` shows them).
COMMANDS: Final[dict[str, str]] = {
    "balloon": "balloon GUEST SIZE: the guest's logical size (target = RAM - SIZE); "
               "overrides the policy until 'policy resume'",
    "policy": "policy resume [GUEST] | policy NAME [KEY=VALUE ...]: the guest (default: all) "
              "back to the policy, or swap the host's policy live",
    "fault": "fault SITE [P|off]: activate a fault site (firing probability P) or stop it",
    "compact": "compact GUEST [WORKERS]: compact_memory by WORKERS writers at once",
    "unplug": "unplug GUEST: hot-unplug the balloon device",
}


class CommandError(ValueError):
    """A command that cannot be parsed or names something that does not exist."""


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command: its verb, the guest it names (or ""), and its argument."""

    verb: str
    guest: str = ""
    #: balloon: the logical size in bytes; compact: the writers (0: the scenario's).
    value: int = 0
    #: policy: the policy's name then its KEY=VALUE words (empty: ``resume``);
    #: fault: the site, then its probability (or ``off``) if given.
    args: tuple[str, ...] = ()


def parse_command(text: str, guests: list[str]) -> Command:
    """``text`` as a Command, its guest checked against ``guests``; CommandError says why."""
    words = text.split()
    if not words:
        raise CommandError("empty command; known: " + ", ".join(COMMANDS))
    verb, args = words[0], words[1:]
    if verb not in COMMANDS:
        raise CommandError(f"unknown command {verb!r}; known: {', '.join(COMMANDS)}")
    usage = COMMANDS[verb].split(":", 1)[0]
    if verb == "policy":
        if not args:
            raise CommandError(f"usage: {usage}")
        if args[0] != "resume":
            if ":" not in args[0]:  # a name: built in or an installed entry point
                try:
                    find_policy(args[0])
                except PolicyError as e:
                    raise CommandError(str(e)) from None
            bad = [w for w in args[1:] if "=" not in w or w.startswith("=")]
            if bad:
                raise CommandError(f"policy {args[0]}: expected KEY=VALUE, got {bad[0]!r}")
            return Command(verb, args=tuple(args))
        if len(args) > 2:
            raise CommandError(f"usage: {usage}")
        guest = args[1] if len(args) == 2 else ""
        return Command(verb, _guest(guest, guests) if guest else "")
    if verb == "fault":
        return _fault(args, usage)
    if not args:
        raise CommandError(f"usage: {usage}")
    guest = _guest(args[0], guests)
    if verb == "balloon":
        if len(args) != 2:
            raise CommandError(f"usage: {usage}")
        try:
            size = parse_size(args[1])
        except ValueError as e:
            raise CommandError(f"balloon: SIZE {args[1]!r}: {e}") from None
        return Command(verb, guest, size)
    if verb == "compact":
        if len(args) > 2:
            raise CommandError(f"usage: {usage}")
        workers = 0
        if len(args) == 2:
            if not args[1].isdigit() or not 1 <= int(args[1]) <= 64:
                raise CommandError(f"compact: WORKERS must be 1..64, got {args[1]!r}")
            workers = int(args[1])
        return Command(verb, guest, workers)
    if len(args) != 1:
        raise CommandError(f"usage: {usage}")
    return Command(verb, guest)


def _fault(args: list[str], usage: str) -> Command:
    if not 1 <= len(args) <= 2:
        raise CommandError(f"usage: {usage}")
    if args[0] not in SITES:
        raise CommandError(f"fault: no site {args[0]!r}; known: {', '.join(SITES)}")
    if len(args) == 2 and args[1] != "off":
        try:
            p = float(args[1])
        except ValueError:
            p = -1.0
        if not 0.0 < p <= 1.0:
            raise CommandError(f"fault {args[0]}: P must be a probability in (0, 1] or 'off', "
                               f"got {args[1]!r}")
    return Command("fault", args=tuple(args))


def _guest(name: str, guests: list[str]) -> str:
    if name not in guests:
        raise CommandError(f"no guest {name!r}; this session has: {', '.join(guests)}")
    return name


@dataclass(frozen=True, slots=True)
class Action:
    """Scenario table ``[[actions]]``: a command and when it takes effect."""

    at: float = field(default=0.0, metadata={"unit": "duration",
                                             "doc": "virtual time the command takes effect"})
    do: str = field(default="", metadata={"doc": "the command (see run.session.commands)"})


def parse_do(text: str) -> Action:
    """``--do "TIME: COMMAND"`` as an Action (the command itself is checked with the
    scenario, which knows the guests)."""
    at, sep, command = text.partition(":")
    if not sep or not command.strip():
        raise CommandError(f"--do {text!r}: expected 'TIME: COMMAND', e.g. '10s: compact guest0'")
    try:
        when = parse_duration(at.strip())
    except ValueError as e:
        raise CommandError(f"--do {text!r}: TIME {at.strip()!r}: {e}") from None
    return Action(when, command.strip())
