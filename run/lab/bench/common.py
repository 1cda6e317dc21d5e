"""What the benchmarks share: their result type and small measurements."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def rss_bytes() -> int:
    """This process's resident set size in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def count_lines(path: Path) -> int:
    """Lines of a file (log records), read in 1 MiB chunks."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n
