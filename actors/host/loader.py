"""Finding a host policy: built-in name, ``module:attr``, ``path/to/file.py:Class``, entry point.

Every failure is a ``PolicyError`` that names what was looked for and where (the file, the
module, the attribute, the entry point), so the console can print one line and exit 2. That
includes a policy module or constructor that calls ``sys.exit()`` (or raises any other
``BaseException`` but ``KeyboardInterrupt``): vballoon does not exit with the policy's code,
it says which policy did what.

Loading a policy runs its module's code in this process, with the same rights as vballoon.
``os._exit()`` (or a crash in C code) cannot be contained in-process: the process ends at once,
unwinding nothing. A session writes and flushes its header (``session.start``) before the
policy's ``decide`` first runs, so what was logged up to then is on disk; a policy that ends
the process while it is being loaded ends it before any log is opened. Replay loads only
built-in policies unless told to trust the one a log names (``vballoon replay --help``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from actors.host.policies import BUILTINS
from actors.host.policy import HostPolicy, PolicyError

ENTRY_POINT_GROUP = "vballoon.policies"

T = TypeVar("T")


def _text(show: Callable[[Any], str], value: object, fallback: str) -> str:
    """``show(value)`` -- policy code when it is an exception's ``__str__`` or an exit code's
    ``__repr__`` -- or ``fallback`` if it fails."""
    try:
        return show(value)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return fallback


def _policy_code(spec: str, failed: str, step: Callable[[], T], *,
                 keep_policy_errors: bool = False) -> T:
    """Run one step of loading that executes the policy's own code (its module, its
    ``__init__``). An exception is ``policy SPEC: FAILED: message``; ``sys.exit()`` and other
    BaseExceptions (but Ctrl-C) say what the policy did."""
    try:
        return step()
    except KeyboardInterrupt:
        raise
    except SystemExit as e:
        code = "" if e.code is None else _text(repr, e.code, "...")
        raise PolicyError(f"policy {spec!r} called sys.exit({code}) while loading") from None
    except Exception as e:
        if keep_policy_errors and isinstance(e, PolicyError):
            raise  # already names the policy and the parameter
        message = _text(str, e, f"<{type(e).__name__}>")
        raise PolicyError(f"policy {spec!r}: {failed}: {message}") from None
    except BaseException as e:
        message = _text(str, e, "")
        raise PolicyError(f"policy {spec!r} raised {type(e).__name__} while loading"
                          + (f": {message}" if message else "")) from None


def _check_class(obj: Any, where: str) -> type[HostPolicy]:
    if not (inspect.isclass(obj) and issubclass(obj, HostPolicy)):
        raise PolicyError(f"{where}: {obj!r} is not a HostPolicy subclass")
    return obj


def find_policy(spec: str) -> type[HostPolicy]:
    """Resolve a built-in name, ``module:attr``, ``file.py:Class`` or an entry point."""
    if spec in BUILTINS:
        return BUILTINS[spec]
    module_name, sep, attr = spec.rpartition(":")
    if sep and module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise PolicyError(f"policy {spec!r}: file {path} not found")
        modspec = importlib.util.spec_from_file_location(f"vballoon_policy_{path.stem}", path)
        if modspec is None or modspec.loader is None:
            raise PolicyError(f"policy {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(modspec)
        sys.modules[modspec.name] = module  # dataclasses and typing look the module up here
        loader = modspec.loader
        try:
            _policy_code(spec, f"importing {path} failed", lambda: loader.exec_module(module))
        except BaseException:
            sys.modules.pop(modspec.name, None)
            raise
    elif sep:
        module = _policy_code(spec, f"cannot import module {module_name!r}",
                              lambda: importlib.import_module(module_name))
    else:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec:
                obj = _policy_code(spec, f"loading entry point {ep.value!r} failed", ep.load)
                return _check_class(obj, f"entry point {ep.name!r}")
        close = difflib.get_close_matches(spec, list(BUILTINS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PolicyError(f"unknown host policy {spec!r}{hint}; built-ins: "
                          f"{', '.join(BUILTINS)} "
                          f"(or module:attr, path/to/file.py:Class, or an entry point in "
                          f"{ENTRY_POINT_GROUP})")
    if not hasattr(module, attr):
        raise PolicyError(f"policy {spec!r}: {module_name} has no attribute {attr!r}")
    return _check_class(getattr(module, attr), f"policy {spec!r}")


def make_policy(spec: str, params: Mapping[str, Any]) -> HostPolicy:
    """Load and configure a policy; every failure is a PolicyError naming what and where."""
    cls = find_policy(spec)
    return _policy_code(spec, "bad parameters", lambda: cls(**params), keep_policy_errors=True)
