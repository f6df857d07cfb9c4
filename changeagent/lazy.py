"""Lazy package attributes (PEP 562): a package names what it exports and where each name lives; the
module is imported on first use, so that `changeagent <cmd> --help` never loads torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, table: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: name -> getattr(import_module(table[name]), name),
    cached in the package's `namespace` (its globals()) after the first use."""

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
