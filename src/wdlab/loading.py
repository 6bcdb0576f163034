"""Loading a user's code by name: ``module:function`` or ``path/to/file.py:function``.

One loader for every place that takes user code on the command line (a model factory, the
set-up function ``wdlab audit`` lints): a dotted module is imported with the current directory
importable, as ``python -m`` would; a ``.py`` path is loaded from that file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def import_module(where: str) -> ModuleType:
    """A module by dotted name (the current directory importable) or by ``.py`` file path."""
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ImportError(f"no file {where}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(where)


def load_attribute(target: str) -> Any:
    """``module:name`` or ``file.py:name`` → the object; ImportError/AttributeError/OSError
    propagate for the caller to word."""
    where, _, attr = target.rpartition(":")
    return getattr(import_module(where), attr)
