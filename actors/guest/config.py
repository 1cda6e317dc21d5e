"""The guest's shape as a scenario describes it (scenario table ``[guest]``)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Page links and PFNs are 32-bit, one value kept as "none".
MAX_PAGES = (1 << 32) - 1
#: The exploration strategies of preemption points (``actors.kernel.preempt``).
STRATEGIES = ("random", "pct", "pos")


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """Size and page size of one guest."""

    memory: int = field(default=1 << 30, metadata={"unit": "size", "doc": "guest RAM"})
    page_size: int = field(default=4096, metadata={"unit": "size",
                                                   "doc": "guest page size: 4KiB, 16KiB or 64KiB"})
    driver: str = field(default="fixed", metadata={
        "doc": "balloon driver variant (registered in actors.guest.balloon.DRIVERS)"})
    features: list[str] = field(
        default_factory=lambda: ["MUST_TELL_HOST", "STATS_VQ", "DEFLATE_ON_OOM"],
        metadata={"doc": "feature bits the driver accepts (negotiated with the device's)"})
    fallback: str = field(default="v4.13", metadata={
        "doc": "page allocator fallback: v4.13 (steal_suitable_fallback) or v3.6 (the series' "
               "kernels: small unmovable requests break movable pageblocks one after another)"})
    balloon: bool = field(default=True, metadata={"doc": "load the virtio_balloon driver"})
    cpus: int = field(default=2, metadata={
        "doc": "CPUs the guest's kernel tasks run on: at most this many execute (pay for their "
               "code, spin, or stay atomic) at once"})
    preempt: float = field(default=0.0, metadata={
        "doc": "probability that a preemption point yields or delays (seeded perturbation)"})
    preempt_delay: float = field(default=1e-6, metadata={
        "unit": "duration", "doc": "longest virtual delay a preemption point may add"})
    strategy: str = field(default="random", metadata={
        "doc": "how preemption points decide: random (seeded, of strength preempt), pct "
               "(priorities with depth-1 change points) or pos (priorities re-drawn on races)"})
    depth: int = field(default=3, metadata={
        "doc": "pct: the bug depth d explored (d-1 priority change points)"})
    steps: int = field(default=0, metadata={
        "doc": "pct: the estimated preemption points per run, k, over which change points "
               "are drawn (fuzz --strategy pct measures it in a calibration run)"})
    hung_task_timeout: float = field(default=120.0, metadata={
        "unit": "duration", "doc": "hung-task watchdog threshold (kernel.hung_task_timeout_secs)"})
    softlockup_thresh: float = field(default=20.0, metadata={
        "unit": "duration", "doc": "soft-lockup watchdog threshold"})
    unplug_at: float = field(default=0.0, metadata={
        "unit": "duration", "doc": "unplug the balloon device then (virtballoon_remove: stop "
                                   "the kthread, deflate everything, report actual); 0: never"})

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs: page size must be 4/16/64 KiB and RAM at least one pageblock."""
        from actors.guest.balloon import DRIVERS, driver_names
        from actors.guest.mm.page_alloc_fallback import FALLBACK_MODELS
        from protocol.balloon import BalloonFeature

        problems = []
        if self.driver not in DRIVERS:
            problems.append(("driver", f"must be {driver_names()}, got {self.driver!r}"))
        for f in self.features:
            if f not in BalloonFeature.__members__:
                problems.append(("features", f"unknown feature {f!r}; known: "
                                 f"{', '.join(BalloonFeature.__members__)}"))
        if self.fallback not in FALLBACK_MODELS:
            problems.append(("fallback", f"must be one of {', '.join(FALLBACK_MODELS)}, "
                                         f"got {self.fallback!r}"))
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int) or \
                not 1 <= self.cpus <= 64:
            problems.append(("cpus", f"must be a whole number from 1 to 64, got {self.cpus!r}"))
        if not 0.0 <= self.preempt <= 1.0:
            problems.append(("preempt", f"must be between 0 and 1, got {self.preempt}"))
        if self.strategy not in STRATEGIES:
            problems.append(("strategy", f"must be one of {', '.join(STRATEGIES)}, "
                                         f"got {self.strategy!r}"))
        for key, low in (("depth", 1), ("steps", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append((key, f"must be a whole number >= {low}, got {value!r}"))
        if self.strategy == "pct" and self.steps == 0 and not problems:
            problems.append(("steps", "pct needs the estimated steps per run (k >= 1); "
                                      "vballoon fuzz --strategy pct measures it"))
        if self.unplug_at < 0:
            problems.append(("unplug_at", "must be >= 0 (0: never)"))
        if self.preempt_delay < 0:
            problems.append(("preempt_delay", "must be >= 0"))
        if self.page_size not in (4096, 16384, 65536):
            problems.append(("page_size", f"must be 4KiB, 16KiB or 64KiB, got {self.page_size}"))
            return problems
        pageblock = 512 * self.page_size
        if self.memory < pageblock:
            problems.append(("memory", f"guest smaller than one pageblock "
                                       f"({self.memory} < {pageblock} bytes)"))
        elif self.memory // self.page_size >= MAX_PAGES:
            problems.append(("memory", f"at most {MAX_PAGES - 1} pages of {self.page_size} "
                                       f"bytes (PFNs are 32-bit), got {self.memory} bytes"))
        elif self.memory % pageblock:
            problems.append(("memory", f"must be a multiple of the pageblock size "
                                       f"({pageblock} bytes), got {self.memory}"))
        return problems

    @property
    def nr_pages(self) -> int:
        """Guest pages (of ``page_size``)."""
        return self.memory // self.page_size
