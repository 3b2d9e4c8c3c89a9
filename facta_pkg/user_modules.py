"""Importing the user's own modules by name (``--projections``, ``--aggregates``).

One rule for every option that names the user's modules: the current folder is on
``sys.path`` (as ``python -m`` puts it there), so ``shop.domain`` and ``shop.projections``
are found when a command runs from the project's folder, whether facta was installed or
run from a checkout.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

__all__ = ["import_failure", "import_user_module", "is_module_name"]


def is_module_name(name: str) -> bool:
    """``package.module``: dotted Python identifiers."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def import_user_module(module_name: str) -> ModuleType:
    """Import ``module_name`` with the current folder on ``sys.path``. Raises what the
    import raises (:class:`ImportError`, or anything the module raises while it runs);
    :func:`import_failure` turns that into one line."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    return importlib.import_module(module_name)


def import_failure(exc: BaseException) -> str:
    """Why an import failed, on one line: ``ModuleNotFoundError: No module named 'shop'``."""
    text = " ".join(str(exc).split())
    return type(exc).__name__ + (f": {text}" if text else "")
