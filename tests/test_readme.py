"""The README's policy walkthrough, run as a reader would: its two files, outside the clone.

The files are taken from the README itself, so the walkthrough cannot drift from the code
without this test failing; the directory is a temporary one, so nothing but the installed
package (no clone-relative path, no `examples/`) is there to help.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_files() -> dict[str, str]:
    """Every ```python block of the README whose first line names its file (`# NAME.py`)."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S):
        first = block.splitlines()[0]
        named = re.fullmatch(r"# (\w+\.py)\b.*", first)
        if named:
            files[named.group(1)] = block
    return files


def test_the_policy_walkthrough_runs_outside_the_clone(tmp_path: Path) -> None:
    files = walkthrough_files()
    assert {"keep_half_free.py", "test_keep_half_free.py"} <= set(files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "test_keep_half_free.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
