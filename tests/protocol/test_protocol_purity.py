"""The protocol layer stays pure: no async library, no logging, only light stdlib imports
(and numpy, for the conformance monitor's per-page state: pure computation, no I/O)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import protocol

PROTOCOL_DIR = Path(protocol.__file__).parent
MODULES = sorted(p.stem for p in PROTOCOL_DIR.glob("*.py") if p.stem != "__init__")
FORBIDDEN = ("trio", "anyio", "structlog", "asyncio")
ALLOWED_STDLIB = {
    "__future__",
    "array",
    "collections",
    "dataclasses",
    "enum",
    "numpy",
    "struct",
    "sys",
    "typing",
}


def test_importing_protocol_loads_no_async_or_logging_library() -> None:
    """Importing all of protocol in a fresh interpreter loads no trio/anyio/structlog/asyncio."""
    imports = "; ".join(["import protocol", *(f"import protocol.{m}" for m in MODULES)])
    code = (
        f"import sys, json; {imports}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
    assert len(MODULES) >= 7  # the test sees every module


def test_protocol_imports_only_light_stdlib() -> None:
    """Every protocol module imports only its siblings, a short list of stdlib modules, numpy."""
    for path in PROTOCOL_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import of a sibling
                    continue
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= ALLOWED_STDLIB, f"{path.name}: imports {roots - ALLOWED_STDLIB}"


def test_protocol_never_awaits() -> None:
    """No protocol module defines a coroutine or awaits anything."""
    for path in PROTOCOL_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        bad = [
            type(node).__name__
            for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)
        ]
        assert bad == [], f"{path.name}: {bad}"
