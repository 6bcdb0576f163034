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


def load_callable(target: object, what: str = "") -> Any:
    """``module:function`` or ``file.py:function`` → the function; anything else, a module that
    does not import or a name that is missing or not callable is one ``ValueError`` line, whose
    text names ``what`` it was meant to be (e.g. ``"model factory "``)."""
    where, _, attr = target.rpartition(":") if isinstance(target, str) else ("", "", "")
    if not where or not attr:
        raise ValueError(
            f"expected MODULE:FUNCTION or FILE.py:FUNCTION for {what or 'the target '}"
            f"(e.g. mytrain:setup), got {target!r}"
        )
    try:
        func = getattr(import_module(where), attr)
    except (ImportError, AttributeError, OSError) as exc:
        raise ValueError(f"cannot load {what}{target!r}: {exc}") from None
    if not callable(func):
        raise ValueError(f"{what}{target!r} is not callable")
    return func
