"""Lazy public names for packages: a name is imported from its module on first access.

A package keeps a ``{name: module}`` map and takes its ``__getattr__`` and ``__dir__`` from
:func:`lazy_exports` (PEP 562), so importing the package (or one light submodule of it, for a
command's ``--help``) does not load torch, transformers or xgrammar.

Example:
    >>> _EXPORTS = {"load_model": "fints_agent.models"}
    >>> __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names load lazily.

    Args:
        package: The package's ``__name__``.
        exports: Public name to the module that defines it.
        namespace: The package's ``globals()`` (a loaded name is kept there).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
