"""The guest's shape as a scenario describes it (scenario table ``[guest]``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """Size and page size of one guest."""

    memory: int = field(default=1 << 30, metadata={"unit": "size", "doc": "guest RAM"})
    page_size: int = field(default=4096, metadata={"unit": "size",
                                                   "doc": "guest page size: 4KiB, 16KiB or 64KiB"})

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs: page size must be 4/16/64 KiB and RAM at least one pageblock."""
        problems = []
        if self.page_size not in (4096, 16384, 65536):
            problems.append(("page_size", f"must be 4KiB, 16KiB or 64KiB, got {self.page_size}"))
            return problems
        pageblock = 512 * self.page_size
        if self.memory < pageblock:
            problems.append(("memory", f"guest smaller than one pageblock "
                                       f"({self.memory} < {pageblock} bytes)"))
        elif self.memory % pageblock:
            problems.append(("memory", f"must be a multiple of the pageblock size "
                                       f"({pageblock} bytes), got {self.memory}"))
        return problems

    @property
    def nr_pages(self) -> int:
        """Guest pages (of ``page_size``)."""
        return self.memory // self.page_size
