"""The rooms import each other in one direction only: run → actors → protocol between the
layers, and inside them the console on top of the lab, the lab on the log tools, the log tools
on the session; the substrate below the actors, mm below the drivers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (importing room, rooms it must never import). A room is a dotted package prefix.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("protocol", ("actors", "run")),
    ("actors", ("run",)),
    ("actors.sim", ("actors.kernel", "actors.guest", "actors.host")),
    ("actors.kernel", ("actors.guest", "actors.host")),
    ("actors.guest.mm", ("actors.guest.balloon", "actors.guest.guest", "actors.host")),
    ("actors.guest", ("actors.host",)),
    ("actors.host", ("actors.guest", "actors.kernel")),
    ("run.session", ("run.logtools", "run.lab", "run.console")),
    ("run.logtools", ("run.lab", "run.console")),
    ("run.lab", ("run.console",)),
]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every absolute module an import statement in ``path`` names (function-level too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


MODULES = {_module(p): p for top in ("protocol", "actors", "run")
           for p in sorted((ROOT / top).rglob("*.py"))}


@pytest.mark.parametrize(("room", "never"), RULES)
def test_room_never_imports_the_rooms_above_it(room: str, never: tuple[str, ...]) -> None:
    """No module of ``room`` imports any module of the rooms listed as above it."""
    members = [m for m in MODULES if _within(m, room)]
    assert members, f"room {room} has no modules (renamed?)"
    bad = sorted(f"{m} imports {i}" for m in members for i in _imports(MODULES[m])
                 if any(_within(i, n) for n in never))
    assert bad == []


def test_nothing_imports_the_console() -> None:
    """The console is the top: only its own modules and ``python -m run`` import it."""
    bad = sorted(f"{m} imports {i}" for m, p in MODULES.items()
                 if not _within(m, "run.console") and m != "run.__main__"
                 for i in _imports(p) if _within(i, "run.console"))
    assert bad == []


def test_the_rule_sees_a_violation() -> None:
    """The import walker finds function-level and from-imports (so the rules can fail)."""
    cli = MODULES["run.console.cli"]
    assert any(_within(i, "run.lab") for i in _imports(cli))
