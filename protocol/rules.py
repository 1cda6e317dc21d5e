"""What the conformance monitor speaks: the spec's rules, the events it is fed, the
violations it files (the monitor itself is in :mod:`protocol.conformance`, which re-exports
all of these)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from .pfns import Pfns


class Rule(StrEnum):
    """Stable rule ids, ``"<side>.<what>"``; the value is what logs and tests match on. The
    side is the one at fault, but for the device's buffer checks (see :attr:`role`)."""

    USE_BEFORE_INFLATE_ACK = "driver.use-before-inflate-ack"
    USE_WHILE_BALLOONED = "driver.use-while-ballooned"
    USE_BEFORE_DEFLATE_ACK = "driver.use-before-deflate-ack"
    DEFLATE_UNACKED_INFLATE = "driver.deflate-unacked-inflate"
    DEFLATE_NOT_IN_BALLOON = "driver.deflate-not-in-balloon"
    DEFLATE_BELOW_TARGET = "driver.deflate-below-target"
    INFLATE_IN_BALLOON = "driver.inflate-in-balloon"
    SPLIT_GUEST_PAGE = "driver.split-guest-page"
    ACTUAL_NOT_UPDATED = "driver.actual-not-updated"
    STATS_WITHOUT_FEATURE = "driver.stats-without-feature"
    STATS_SECOND_BUFFER = "driver.stats-second-buffer"
    STATS_TAGS_CHANGED = "driver.stats-tags-changed"
    STATS_NO_BUFFER = "driver.stats-no-buffer"
    ACTUAL_OUT_OF_RANGE = "driver.actual-out-of-range"
    STATS_IMPOSSIBLE = "driver.stats-impossible"
    ACK_WITHOUT_REQUEST = "device.ack-without-request"
    STATS_USED_WITHOUT_BUFFER = "device.stats-used-without-buffer"
    # The device's own checks of what it pops. The driver broke these, but their ids (as
    # logged since the first release, and matched by the log tools) name the device that
    # found them; :attr:`role` says who is at fault.
    BAD_DIRECTION = "device.bad-direction"
    BAD_BUFFER = "device.bad-buffer"
    PFN_OUT_OF_RANGE = "device.pfn-out-of-range"
    DUPLICATE_PFN = "device.duplicate-pfn"
    DOUBLE_INFLATE = "device.double-inflate"
    DEFLATE_NOT_BALLOONED = "device.deflate-not-ballooned"
    BAD_QUEUE = "device.bad-queue"

    @property
    def role(self) -> str:
        """The side that broke the rule: "driver" or "device" (the id's prefix, but for the
        device's buffer checks, which the driver breaks)."""
        return "driver" if self in _FOUND_BY_DEVICE else self.value.split(".", 1)[0]


#: Rules the device checks on what it pops: driver faults, though their ids say "device".
_FOUND_BY_DEVICE: Final = frozenset((
    Rule.BAD_DIRECTION, Rule.BAD_BUFFER, Rule.PFN_OUT_OF_RANGE, Rule.DUPLICATE_PFN,
    Rule.DOUBLE_INFLATE, Rule.DEFLATE_NOT_BALLOONED, Rule.BAD_QUEUE,
))


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ConfigTarget:
    """The device set ``num_pages`` (target balloon size, 4 KiB units)."""

    num_pages: int


@dataclass(frozen=True, slots=True)
class ActualWritten:
    """The driver wrote ``actual`` (pages in the balloon, 4 KiB units)."""

    actual: int


@dataclass(frozen=True, slots=True)
class InflateAdded:
    """The driver added an inflate buffer naming these wire PFNs."""

    pfns: Pfns


@dataclass(frozen=True, slots=True)
class InflateAcked:
    """The device used (acknowledged) an inflate buffer naming these wire PFNs."""

    pfns: Pfns


@dataclass(frozen=True, slots=True)
class DeflateAdded:
    """The driver added a deflate buffer naming these wire PFNs."""

    pfns: Pfns


@dataclass(frozen=True, slots=True)
class DeflateAcked:
    """The device used (acknowledged) a deflate buffer naming these wire PFNs."""

    pfns: Pfns


@dataclass(frozen=True, slots=True)
class PageUsed:
    """The guest touched these guest pages (guest PFNs, not wire PFNs)."""

    guest_pfns: Pfns


@dataclass(frozen=True, slots=True)
class StatsBufferAdded:
    """The driver made a stats buffer available, optionally with the tags it carries."""

    tags: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class StatsBufferUsed:
    """The device used the stats buffer it held (a stats request)."""


@dataclass(frozen=True, slots=True)
class StatsTags:
    """The device decoded a stats buffer carrying these tags."""

    tags: frozenset[int]


@dataclass(frozen=True, slots=True)
class Quiescent:
    """Nothing is in flight and the driver has caught up: end-of-round checks run here."""


@dataclass(frozen=True, slots=True)
class DriverRemoving:
    """The driver's remove callback runs (the device is being unplugged): it gives back every
    page before it resets the device, which makes them the guest's anyway, so those deflates
    do not count as going below the target."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The device was reset: every page is the guest's again and all tracking restarts."""


Event = (
    ConfigTarget
    | ActualWritten
    | InflateAdded
    | InflateAcked
    | DeflateAdded
    | DeflateAcked
    | PageUsed
    | StatsBufferAdded
    | StatsBufferUsed
    | StatsTags
    | Quiescent
    | DriverRemoving
    | Reset
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: stable ``rule`` id, the ``role`` at fault, a human ``detail``.

    ``pfns`` are the guest PFNs concerned (sorted; wire PFNs for ``split-guest-page``), and
    ``event`` the event that revealed the violation.
    """

    rule: Rule
    role: str
    detail: str
    pfns: tuple[int, ...] = ()
    event: Event | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, rule: Rule, detail: str, pfns: Iterable[int] = (),
           event: Event | None = None) -> Violation:
        """The one way to file a violation: the role at fault comes from the rule."""
        return cls(rule, rule.role, detail, tuple(pfns), event)
