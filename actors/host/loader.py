"""Finding a host policy: built-in name, ``module:attr``, ``path/to/file.py:Class``, entry point.

Every failure is a ``PolicyError`` that names what was looked for and where (the file, the
module, the attribute, the entry point), so the console can print one line and exit 2.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.host.policies import BUILTINS
from actors.host.policy import HostPolicy, PolicyError

ENTRY_POINT_GROUP = "vballoon.policies"


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
        try:
            modspec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(modspec.name, None)
            raise PolicyError(f"policy {spec!r}: importing {path} failed: {e}") from None
    elif sep:
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise PolicyError(f"policy {spec!r}: cannot import module {module_name!r}: {e}") \
                from None
    else:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec:
                try:
                    obj = ep.load()
                except Exception as e:
                    raise PolicyError(f"policy {spec!r}: loading entry point {ep.value!r} "
                                      f"failed: {e}") from None
                return _check_class(obj, f"entry point {ep.name!r}")
        raise PolicyError(f"unknown host policy {spec!r}; built-ins: {', '.join(BUILTINS)} "
                          f"(or module:attr, path/to/file.py:Class, or an entry point in "
                          f"{ENTRY_POINT_GROUP})")
    if not hasattr(module, attr):
        raise PolicyError(f"policy {spec!r}: {module_name} has no attribute {attr!r}")
    return _check_class(getattr(module, attr), f"policy {spec!r}")


def make_policy(spec: str, params: Mapping[str, Any]) -> HostPolicy:
    """Load and configure a policy; every failure is a PolicyError naming what and where."""
    cls = find_policy(spec)
    try:
        return cls(**params)
    except PolicyError:
        raise
    except Exception as e:
        raise PolicyError(f"policy {spec!r}: bad parameters: {e}") from None
