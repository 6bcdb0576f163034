"""Loading a user's code by name: ``module:function`` or ``path/to/file.py:function``.

One loader for every place that takes user code by name (a model factory for ``wdlab run`` and
``wdlab sweep``, the set-up function ``wdlab audit`` lints), and it loads code as Python does:
a dotted module is imported with the current directory first on ``sys.path``, as ``python -m``
would; a ``.py`` file is loaded with its own folder first on ``sys.path``, as ``python
path/to/file.py`` would, so it can import its neighbours (``a_model.py`` doing ``import
a_data``), and that folder stays importable for the imports its functions make later. A module
that does not load (a missing file, a ``SyntaxError``, an exception while it runs) is one
``ValueError`` line naming the file, the line and the error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

_LOADED: dict[Path, int] = {}  # file → its modification time when this loader ran it


def import_module(where: str) -> ModuleType:
    """A module by dotted name (the current directory importable) or by ``.py`` file path
    (its folder importable, the module registered in ``sys.modules`` under its file name)."""
    if where.endswith(".py"):
        return _import_file(Path(where))
    _importable(os.getcwd())
    return importlib.import_module(where)


def _import_file(path: Path) -> ModuleType:
    """Load ``path`` as Python runs a script's imports: its folder first on ``sys.path``."""
    if not path.is_file():
        there = path.exists() or path.is_symlink()  # a folder or a FIFO is not code to run
        raise ImportError(f"{path} is not a regular file" if there else f"no file {path}")
    path = path.resolve()
    _importable(str(path.parent))
    name = path.stem
    loaded = sys.modules.get(name)
    ours = loaded is not None and _same_file(getattr(loaded, "__file__", None), path)
    if ours and _LOADED.get(path) in (None, path.stat().st_mtime_ns):
        return loaded  # already imported (e.g. by a neighbour): one module, not two copies
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    registered = ours or name not in sys.modules  # never shadow another module of that name
    if registered:
        sys.modules[name] = module  # as an import would: pickling, dataclasses, cycles work
    _LOADED[path] = path.stat().st_mtime_ns  # an edited file (a notebook) loads afresh
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if registered:
            sys.modules.pop(name, None)
        _LOADED.pop(path, None)
        raise
    return module


def _importable(folder: str) -> None:
    """Put ``folder`` first on ``sys.path`` (once)."""
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def _same_file(a: str | None, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b
    except OSError:
        return False


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
    if "/" in where and not where.endswith(".py"):  # a folder or a file that is not Python
        raise ValueError(f"cannot load {what}{target!r}: {where!r} is a path, not a FILE.py")
    try:
        module = import_module(where)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # user code: SyntaxError, anything raised at import, exit()
        raise ValueError(f"cannot load {what}{target!r}: {import_error(exc)}") from None
    func = getattr(module, attr, None)
    if func is None:
        raise ValueError(f"cannot load {what}{target!r}: {where} has no attribute {attr!r}")
    if not callable(func):
        raise ValueError(f"{what}{target!r} is not callable")
    return func


def import_error(exc: BaseException) -> str:
    """What went wrong while importing user code, in one line: the file and line where it
    happened (a syntax error's own position, else the deepest frame in a file outside Python's
    import machinery) and the error."""
    text = " ".join(str(exc).split()) if not isinstance(exc, SyntaxError) else exc.msg
    kind = type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}: {kind}: {text}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _users(f.filename)]
    if not frames and isinstance(exc, ImportError):  # no such file or module: the text says so
        return text
    where = f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""
    if isinstance(exc, SystemExit):
        return f"{where}the module called sys.exit({exc.code!r}) while loading"
    return f"{where}{kind}: {text}" if text else f"{where}{kind}"


def _users(filename: str) -> bool:
    """Whether a traceback frame is in user code (not the import machinery, not this file)."""
    return not (
        filename.startswith("<frozen")
        or filename == __file__
        or Path(filename).parent == Path(importlib.__file__).parent
    )
