"""A user's code as wdlab runs it: model factories, and fingerprints of user code.

**Calling a factory** (:func:`factory_arguments`, :func:`call_factory`): wdlab offers a factory
``seed``, ``in_dim`` and ``out_dim``, each by keyword where the factory has a parameter of that
name (with or without a default); a factory whose single required parameter has another name
gets the seed positionally. Any other required parameter is refused in one line. Whatever the
factory raises (``BaseException`` subclasses and ``sys.exit`` included; Ctrl-C still stops
wdlab), whatever it returns that is not a working ``nn.Module`` (``super().__init__()``
missing, weights on the meta device), and a factory that does not return within its time limit,
are one ``ValueError`` line each.

**The time limit** (:func:`time_limit`) is a ``SIGALRM`` timer (``signal.setitimer``), armed in
the main thread only: the factory runs in this thread, the alarm raises inside it, and nothing
is left running afterwards. A watchdog thread could not stop the factory (Python cannot kill a
thread: it would run on forever), and a child process could not hand back the module it builds.
The cost: off the main thread (a Ray worker's task thread, a thread of the user's own) and on
platforms without ``setitimer`` (Windows) there is no limit, and a factory blocked inside one
C call (not Python code) is stopped only when that call returns.

**Seeds** (:func:`check_seeds_differ`): two seeds that build the same initial weights would
train the same run twice: a standard error of 0 and a verdict from duplicates.

**Fingerprints** (:func:`module_fingerprint`, :func:`code_fingerprint`): hashes that go into a
study's identity, so that a changed model, loss or metric is another study, never old runs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from wdlab.errors import gist

#: A time limit this long (over three years) or longer is none (the timer would overflow).
NO_LIMIT = 1e8

#: A factory's time limit in seconds, unless the caller sets another (``factory_timeout``).
DEFAULT_FACTORY_TIMEOUT = 300.0
_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class FactoryTimeout(BaseException):
    """Raised inside a factory that ran past its time limit (a ``BaseException``, so that the
    factory's own ``except Exception`` cannot swallow it)."""


def a_type(obj: object) -> str:
    """``a dict``, ``an int``: the type of ``obj`` with its article, for one-line errors."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def factory_arguments(
    factory: Callable[..., object], label: str, offered: dict[str, object]
) -> tuple[tuple[object, ...], dict[str, object]]:
    """(positional, keyword) arguments for ``factory``: each of ``offered`` (``seed``,
    ``in_dim``, ``out_dim``) it has a parameter for, by keyword; the seed positionally to a
    single required parameter of another name. A required parameter wdlab cannot fill is one
    ``ValueError`` line."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        return (), {}
    kwargs = {k: v for k, v in offered.items() if k in params and params[k].kind in _BY_NAME}
    unfilled = (*_POSITIONAL, inspect.Parameter.KEYWORD_ONLY)
    required = [p for p in params.values() if p.default is p.empty and p.kind in unfilled]
    required = [p for p in required if p.name not in kwargs]
    if not required:
        return (), kwargs
    first = next(iter(params.values()))
    positional = required[0] is first and first.kind in _POSITIONAL
    sizes = [p.name for p in required if p.name in ("in_dim", "out_dim")]
    if len(required) == 1 and "seed" not in kwargs and positional and not sizes:
        return (offered["seed"],), kwargs
    if sizes:  # a size the data (or the flags) do not give: not the seed in its place
        raise ValueError(
            f"model factory {label!r} requires {', '.join(sizes)}, which is not known here (the "
            "inputs are several tensors, or no size was given, as inspect's --in-dim and "
            "--out-dim give them): give it a default, or the size"
        )
    names = ", ".join(p.name for p in required)
    raise ValueError(
        f"model factory {label!r} requires {names}: wdlab gives a factory only seed, in_dim and "
        "out_dim by name (or the seed to its one required parameter); give the others defaults "
        "or bind them with functools.partial"
    )


def call_factory(
    factory: Callable[..., object],
    name: object,
    args: Sequence[object] = (),
    kwargs: dict[str, object] | None = None,
    timeout: float | None = None,
) -> nn.Module:
    """Run a user's model factory within ``timeout`` seconds (None: no limit); anything it
    raises, a non-module or a broken module it returns, and running out of time each become one
    ``ValueError`` line naming the factory."""
    label = name if isinstance(name, str) else getattr(factory, "__qualname__", repr(factory))
    return check_module(call_user(factory, label, args, kwargs, timeout), label)


def call_user(
    func: Callable[..., Any],
    label: str,
    args: Sequence[object] = (),
    kwargs: dict[str, object] | None = None,
    timeout: float | None = None,
    what: str = "model factory",
) -> Any:
    """``func(*args, **kwargs)``, a user's function (``what`` names its role in messages),
    within ``timeout`` seconds (None: no limit): anything it raises and running out of time
    are each one ``ValueError`` line naming it; Ctrl-C still stops wdlab."""
    try:
        with time_limit(timeout):
            return func(*args, **(kwargs or {}))
    except KeyboardInterrupt:
        raise
    except FactoryTimeout:
        raise ValueError(
            f"{what} {label!r} did not return within {timeout:g} s; if it needs longer, "
            "raise factory_timeout (--factory-timeout, model.factory_timeout)"
        ) from None
    except BaseException as exc:  # user code: SystemExit and BaseException subclasses too
        raise ValueError(f"{what} {label!r} {_what_it_raised(exc)}") from None


def _what_it_raised(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, SystemExit):
        return f"raised SystemExit: it called sys.exit({text})"
    if isinstance(exc, AttributeError) and "before Module.__init__() call" in text:
        hint = "a module's __init__ must call super().__init__() first"
        return f"raised AttributeError: {text} ({hint})"
    return f"raised {gist(exc)}"


def check_module(model: object, what: object) -> nn.Module:
    """``model`` if it is an ``nn.Module`` that wdlab can train, else a one-line
    ``ValueError``: not a module, a module (or submodule) whose ``__init__`` skipped
    ``super().__init__()``, lazy weights not initialised yet, or weights on the meta device
    (no data)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {what!r} returned {a_type(model)}, not a torch.nn.Module")
    broken = _without_init(model)
    if broken is not None:
        part = f"submodule {broken[0]} ({broken[1]})" if broken[0] else "__init__"
        raise ValueError(
            f"model factory {what!r} returned {a_type(model)} whose {part} never "
            "called super().__init__(): make that the first line of its __init__"
        )
    tensors = [*model.named_parameters(), *model.named_buffers()]
    lazy = next((n for n, t in tensors if is_lazy(t)), None)
    if lazy is not None:
        raise ValueError(
            f"model factory {what!r} returned a model whose {lazy} is not initialised yet "
            "(nn.LazyLinear and kin): call the model once on an example inside the factory "
            "(e.g. model(torch.zeros(1, n_features))), so its weights exist"
        )
    meta = next((n for n, t in tensors if t.is_meta), None)
    if meta is not None:
        raise ValueError(
            f"model factory {what!r} returned a model on the meta device ({meta} has no data): "
            "build it on the CPU, or call .to_empty(device='cpu') and initialise its weights"
        )
    return model


def check_trainable(model: nn.Module) -> nn.Module:
    """``model`` if it has a parameter to train, else a one-line ``ValueError`` (no
    parameters, or every one frozen): checked before a sweep or a search trains it, not where
    a model is only shown (``wdlab inspect`` lists a frozen model's tensors)."""
    params = list(model.parameters())
    if not any(p.requires_grad for p in params):
        why = f"all {len(params)} have requires_grad=False" if params else "it has none"
        raise ValueError(
            f"the model ({a_type(model)}) has no parameters to train ({why}): there is "
            "nothing to decay"
        )
    return model


def _without_init(model: nn.Module) -> tuple[str, str] | None:
    """(name, class) of a module in ``model`` whose ``nn.Module.__init__`` never ran."""
    stack, seen = [("", model)], set()
    while stack:
        name, m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        state = vars(m)
        if "_parameters" not in state or "_modules" not in state:
            return name, type(m).__name__
        for key, child in state["_modules"].items():
            if child is not None:
                stack.append((f"{name}.{key}" if name else key, child))
    return None


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`FactoryTimeout` in this thread after ``seconds``: a ``SIGALRM`` timer in
    the main thread (see the module's notes); elsewhere, or with ``None``, no limit. The
    previous handler, and what is left of a timer set before, are restored."""
    usable = (
        seconds is not None
        and seconds < NO_LIMIT  # (longer: setitimer's OverflowError, said as the user's)
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) is not None  # None: a handler set outside Python
    )
    if not usable:
        yield
        return
    armed = [True]

    def alarm(_signum: int, _frame: object) -> None:
        if armed[0]:
            raise FactoryTimeout

    old = signal.signal(signal.SIGALRM, alarm)
    t0 = time.monotonic()
    before, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            armed[0] = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            if before:  # another timer was running: what is left of it
                left = max(before - (time.monotonic() - t0), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, left, interval)


def check_seeds_differ(a: nn.Module, b: nn.Module, seeds: Sequence[int], label: str) -> None:
    """A one-line ``ValueError`` when the modules built for two different seeds hold the same
    parameters bit for bit (the factory ignores the seed wdlab gives it)."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    same = bool(pa) and pa.keys() == pb.keys()
    same = same and all(pa[k].shape == pb[k].shape and torch.equal(pa[k], pb[k]) for k in pa)
    if same:
        raise ValueError(
            f"model factory {label!r} built the same initial weights for seeds {seeds[0]} and "
            f"{seeds[1]}, so every seed would repeat one run; give it a seed parameter and use "
            "it (def make(seed=0): torch.manual_seed(seed) ...), or do not seed torch in it "
            "(wdlab seeds torch before each call)"
        )


# ---------------------------------------------------------------------------------------------
# Fingerprints for a study's identity.

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def module_fingerprint(model: nn.Module) -> str:
    """A hash of a module's structure (its repr), its parameters' and buffers' names, shapes,
    dtypes and values, and the code of its own (non-torch) module classes."""
    h = hashlib.sha256(_ADDRESS.sub("0x", repr(model)).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(_tensor_bytes(t) if isinstance(t, torch.Tensor) else repr(t).encode())
    classes = {type(m) for m in model.modules()}
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        if not _library(cls):
            h.update(_source(cls).encode())
    settings = [
        (name, own)
        for name, m in model.named_modules()
        if not _library(type(m)) and (own := _settings(vars(m)))
    ]  # a user module's own numbers (self.p = 0.3 read by F.dropout): its repr omits them
    if settings:
        h.update(repr(settings).encode())
    return h.hexdigest()[:16]


def _settings(attrs: dict[str, Any]) -> dict[str, Any]:
    """The plain values (numbers, text, and tuples of them) among an object's attributes."""
    return {
        k: v for k, v in attrs.items() if not k.startswith("_") and k != "training" and _plain(v)
    }


def _plain(v: object) -> bool:
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def code_identity(obj: object) -> dict[str, str] | None:
    """A loss's or metric's identity as a study keeps it: its name and
    :func:`code_fingerprint` (None: not given)."""
    if not obj:
        return None
    name = getattr(obj, "__qualname__", getattr(obj, "name", repr(obj)))
    return {"name": str(name), "code": code_fingerprint(obj)}


def code_fingerprint(obj: object) -> str:
    """A hash of a callable (a loss, a metric): its code (its source where Python has it,
    else its bytecode), and the values it holds or closes over."""
    h = hashlib.sha256()
    _feed(h, obj, 0)
    return h.hexdigest()[:16]


def _feed(h: Any, obj: object, depth: int) -> None:
    if depth > 4:
        return
    if obj is None or isinstance(obj, (str, bytes, int, float, complex)):
        h.update(repr(obj).encode())
    elif isinstance(obj, torch.Tensor):
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, (list, tuple, set, frozenset, dict)):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in sorted(items, key=lambda kv: repr(kv[0])):
            h.update(repr(k).encode())
            _feed(h, v, depth + 1)
    elif isinstance(obj, nn.Module):  # and its settings (a loss module's label_smoothing…)
        h.update(module_fingerprint(obj).encode())
        settings = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        _feed(h, settings, depth + 1)
    elif isinstance(obj, functools.partial):
        _feed(h, (obj.func, obj.args, obj.keywords), depth + 1)
    elif _library(obj) and isinstance(obj, (type, types.FunctionType)):
        h.update(f"{obj.__module__}.{obj.__qualname__}".encode())  # by name: stable across versions
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        fn = getattr(obj, "__func__", obj)
        h.update(_source(fn).encode())
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        _feed(h, (cells, getattr(obj, "__self__", None)), depth + 1)
        read = {n: fn.__globals__[n] for n in fn.__code__.co_names if n in fn.__globals__}
        if numbers := _settings(read):  # the module-level numbers it reads (label_smoothing=LS)
            _feed(h, numbers, depth + 1)
    elif isinstance(obj, type):
        h.update(_source(obj).encode())
    elif isinstance(obj, (types.BuiltinFunctionType, types.ModuleType)):
        h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}".encode())
    else:  # another object: its class (by name, or its code) and its attributes
        _feed(h, type(obj), depth + 1)
        _feed(h, dict(getattr(obj, "__dict__", {})), depth + 1)


def _library(obj: Any) -> bool:
    """Whether a class or function comes from an installed library or the standard library
    (torch, numpy, …): named, not hashed by its code, so that a library upgrade is not a new
    study. The user's own code, an editable install of it included, is hashed."""
    name = getattr(obj, "__module__", None) or ""
    root = name.partition(".")[0]
    if root in sys.stdlib_module_names or root in ("builtins", "torch", "wdlab"):
        return True
    path = str(getattr(sys.modules.get(name), "__file__", "") or "")
    return "site-packages" in path or "dist-packages" in path


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell
        return False
    return True


def _source(obj: Any) -> str:
    """The source of a function or class, else (no source: a notebook, a REPL) its name and
    its bytecode."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        pass
    name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if isinstance(obj, type):
        members = sorted(vars(obj).items())
        return name + "".join(_code_text(getattr(v, "__code__", None)) for _, v in members)
    return name + _code_text(getattr(obj, "__code__", None))


def _code_text(code: types.CodeType | None) -> str:
    if code is None:
        return ""
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}{code.co_names}{consts}"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    head = f"{t.dtype}{tuple(t.shape)}".encode()
    if t.is_sparse or t.is_quantized:
        return head + repr(t).encode()
    return head + t.reshape(-1).view(torch.uint8).numpy().tobytes()
