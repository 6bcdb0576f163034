"""Experiment configs: TOML files, dicts or flags, validated key by key into frozen objects.

An experiment has four sections; every key is optional and unknown keys are refused::

    [data]    source, seed, target, features, impute, task, val_size, test_size, options,
              train_size, categorical
    [model]   kind, hidden, activation, layernorm, factory, batchnorm, dropout, factory_timeout
    [train]   optimizer, lr, options, schedule, epochs, batch_size, eval_every, seeds, device,
              precision, select, early_stopping, patience, diagnostics, prune, prune_eta,
              prune_rung, checkpoint
    [decay]   modes, weight_decay, rule, exclude, include

``lr``, ``modes``, ``weight_decay`` and ``seeds`` take one value or a list (the grid is their
product); ``weight_decay`` also takes ``"LO..HI:N"`` (N log-spaced values). ``seeds`` also takes
an integer count written as ``"N"`` (seeds 0..N−1). Numbers the engine computes with must fit
float32; a log range or a seed count has at most :data:`MAX_RANGE` values, and a grid more than
:data:`MAX_CONFIGS` configurations is refused unless the caller raises that limit.

The section dataclasses below *are* the schema: each field carries its default, its checker,
what it allows and its command-line flag, so the TOML keys, the Python objects and the CLI flags
(:func:`wdlab.cli`) come from one place. Allowed values come from the registries (modes,
optimizers, model kinds, data sources, schedules, tasks).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import math
import os
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from wdlab.data import SOURCES, Dataset, is_table_path, load, read_table
from wdlab.data.arrays import subsample_train
from wdlab.decay import (
    DEFAULT_RULE,
    EVERYTHING,
    MODES,
    PRESETS,
    REFERENCE_MODE,
    DecayRule,
    get_mode,
)
from wdlab.decay.schedules import parse as parse_wd_schedule
from wdlab.devices import check_device_name
from wdlab.diagnostics import DIAGNOSTICS
from wdlab.models import ACTIVATIONS, MODEL_KINDS, ModelSpec
from wdlab.optimizers import OPTIMIZERS, optimizer_spec
from wdlab.records import RunConfig
from wdlab.tasks import TASKS
from wdlab.trainer.plan import PRECISIONS, check_checkpoint
from wdlab.trainer.schedules import SCHEDULES, parse_schedule
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT

#: The rules ``decay.rule`` (``--rule``) names: wdlab's default, everything, and the presets of
#: other libraries (:data:`wdlab.decay.PRESETS`: timm, nanoGPT, the Hugging Face Trainer).
RULES: dict[str, DecayRule] = {"default": DEFAULT_RULE, "everything": EVERYTHING, **PRESETS}
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # weights, lr and wd are float32 in training
MAX_RANGE = 1_000_000  # values in one log range or seed count (a hard limit)
MAX_CONFIGS = 10_000  # configurations in a grid, unless the caller raises it (--max-configs)
MAX_SEED = 2**32 - 2  # NumPy and scikit-learn take seeds below 2**32 (the split uses seed + 1)
SELECT_METRICS = ("acc", "rmse", "r2")  # besides "auto" and "loss"
KNOWN_DIAGNOSTICS = ("rotation",)  # accepted by the config; available when registered
# Keys added after wdlab 0.2: left out of a study's identity while at their defaults, so a
# study made before keeps its hash (and its default folder) and resumes.
LATER_KEYS = {
    "data": ("train_size", "categorical"),
    "model": ("batchnorm", "dropout"),
    "train": (
        "select",
        "early_stopping",
        "diagnostics",
        "patience",
        "prune",
        "prune_eta",
        "prune_rung",
    ),
    "decay": ("wd_schedule", "group_wd"),
}
#: What ``wdlab sweep`` tries when neither the file nor the flags name a grid (none of these
#: keys given): two modes, weight decay 0 and a log range of five decades, three seeds.
SWEEP_GRID: dict[str, Any] = {
    "decay.modes": ["coupled", "decoupled"],
    "decay.weight_decay": [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
    "train.seeds": [0, 1, 2],
}
# Keys that change no number a run gives: never part of a study's identity.
NOT_IDENTITY = {"model": ("factory_timeout",), "train": ("checkpoint",)}
# Keys added with successive halving and early stopping's patience: left out of every study's
# identity while at their defaults (wdlab.sweep's studies hashed every key before them).
HALVING_KEYS = {"train": ("patience", "prune", "prune_eta", "prune_rung")}


def parse_float_list(text: str | float | list, key: str) -> list[float]:
    """A number, a list, ``"a,b,c"`` or a log range ``"LO..HI:N"`` → list of floats."""
    if isinstance(text, bool):
        raise ValueError(f"{key}: expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        return [float(text)]
    if isinstance(text, list):
        return [v for item in text for v in parse_float_list(item, key)]
    if not isinstance(text, str):
        raise ValueError(f"{key}: expected a number or a list, got {text!r}")
    text = text.strip()
    if ".." in text:
        try:
            rng, _, count = text.partition(":")
            lo, _, hi = rng.partition("..")
            lo_f, hi_f, n = float(lo), float(hi), int(count)
        except ValueError:
            raise ValueError(
                f"{key}: expected LO..HI:N (e.g. 1e-6..1e-1:11), got {text!r}"
            ) from None
        if not (0 < lo_f < hi_f < math.inf) or n < 2:
            raise ValueError(f"{key}: a log range needs 0 < LO < HI and N >= 2, got {text!r}")
        if n > MAX_RANGE:
            raise ValueError(f"{key}: a log range has at most {MAX_RANGE:,} values, got {n:,}")
        step = (math.log10(hi_f) - math.log10(lo_f)) / (n - 1)
        return [float(f"{10 ** (math.log10(lo_f) + i * step):.6g}") for i in range(n)]
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{key}: expected numbers separated by commas, got {text!r}") from None


def _float32(values: list[float], key: str, what: str) -> list[float]:
    """``values`` if each fits float32 (what training computes in), else one line."""
    big = [v for v in values if abs(v) > FLOAT32_MAX]
    if big:
        raise ValueError(
            f"{key}: {what} {big[0]:g} overflows float32, in which wdlab trains "
            f"(at most {FLOAT32_MAX:.3g})"
        )
    return values


# ---------------------------------------------------------------------------------------------
# Checkers: (value, "section.key") -> the normalised value, or ValueError naming the key.


@dataclass(frozen=True)
class Key:
    """One config key's checker and its CLI flag (what it allows: its help and choices).

    ``cli`` is how the flag's text is read before checking: ``str`` (the checker parses it),
    ``int``, ``flag`` (a switch that sets True) or ``append`` (repeatable; the checker gets the
    list). ``choices`` lists the allowed values.
    """

    check: Callable[[Any, str], Any]
    flag: str | None = None
    help: str = ""
    cli: str = "str"
    choices: tuple[str, ...] | None = None


def key(
    default: Any,
    check: Callable[[Any, str], Any],
    flag: str | None = None,
    help: str = "",
    cli: str = "str",
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field: its default and its :class:`Key`."""
    meta = {"key": Key(check, flag, help, cli, choices)}
    return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)


def one_of(options: Mapping[str, Any] | tuple[str, ...]) -> Callable[[Any, str], Any]:
    """A checker accepting one of ``options`` (a registry or a tuple of names)."""

    def check(v: Any, key: str) -> Any:
        if v not in options:
            raise ValueError(f"{key}: {v!r} is not allowed; valid: {', '.join(options)}")
        return v

    return check


def integer(lo: int = 0, hi: int | None = None) -> Callable[[Any, str], Any]:
    """A checker accepting an integer ≥ ``lo`` (and ≤ ``hi``)."""

    def check(v: Any, key: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{key}: expected an integer >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise ValueError(f"{key}: expected an integer <= {hi}, got {v!r}")
        return v

    return check


def _dropout(v: Any, key: str) -> float:
    if isinstance(v, str):  # from the command line
        with contextlib.suppress(ValueError):
            v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"{key}: expected a probability in [0, 1), got {v!r}")
    return float(v)


def _device(v: Any, key: str) -> Any:
    return None if v is None else check_device_name(v, key)


def _select(v: Any, key: str) -> str:
    valid = ("auto", "loss", *SELECT_METRICS, *(t.metric for t in TASKS.values()))
    if not isinstance(v, str) or v not in valid:
        raise ValueError(f"{key}: {v!r} is not allowed; valid: {', '.join(dict.fromkeys(valid))}")
    return v


def _diagnostics(v: Any, key: str) -> list[str]:
    names = _str_list(v, key)
    valid = tuple(dict.fromkeys((*DIAGNOSTICS, *KNOWN_DIAGNOSTICS)))
    for n in names:
        if n not in valid:
            raise ValueError(f"{key}: unknown diagnostic {n!r}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _seconds(v: Any, key: str) -> float:
    if isinstance(v, str):  # from the command line
        with contextlib.suppress(ValueError):
            v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"{key}: expected seconds > 0 (inf: no limit), got {v!r}")
    return float(v)


def _fraction(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 0.9:
        raise ValueError(f"{key}: expected a fraction in (0, 0.9), got {v!r}")
    return float(v)


def _str_or_none(v: Any, key: str) -> Any:
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v


def _str_list(v: Any, key: str) -> list[str]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError(f"{key}: expected a list of strings, got {v!r}")
    return v


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{key}: expected true or false, got {v!r}")
    return v


def _table(v: Any, key: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{key}: expected a table of options, got {v!r}")
    return v


def _hidden(v: Any, key: str) -> list[int]:
    if isinstance(v, str):
        try:
            v = [int(s) for s in v.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"{key}: expected sizes like 64,32, got {v!r}") from None
    if not isinstance(v, list) or not all(isinstance(h, int) and h > 0 for h in v):
        raise ValueError(f"{key}: expected a list of positive integers, got {v!r}")
    return v


def _model_kind(v: Any, key: str) -> str:
    if isinstance(v, str) and ":" in v:  # module:function, a custom factory
        return v
    return one_of(MODEL_KINDS)(v, key)


def _modes(v: Any, key: str) -> list[str]:
    modes = _str_list(v, key)
    for m in modes:
        one_of(MODES)(m, key)
    if not modes:
        raise ValueError(f"{key}: give at least one mode; valid: {', '.join(MODES)}")
    return modes


def _wds(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values or any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"{key}: weight decays must be finite numbers >= 0, got {_short(v)}")
    return _float32(values, key, "weight decay")


def _lrs(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values or any(not math.isfinite(w) or w <= 0 for w in values):
        raise ValueError(f"{key}: learning rates must be numbers > 0, got {_short(v)}")
    return _float32(values, key, "learning rate")


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters, for messages."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seeds(v: Any, key: str) -> list[int]:
    if isinstance(v, str) and v.strip().isdigit():
        n = int(v)
        if n > MAX_RANGE:
            raise ValueError(f"{key}: at most {MAX_RANGE:,} seeds, got {n:,}")
        return list(range(n))
    if isinstance(v, str) and "," in v:
        with contextlib.suppress(ValueError):
            v = [int(s) for s in v.split(",") if s.strip()]
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"{key}: seeds must be integers in 0..{MAX_SEED}, got {bad[0]}")
        return v
    raise ValueError(
        f'{key}: expected a seed, a list of seeds, or a count like "3", got {_short(v)}'
    )


def _optimizer(v: Any, key: str) -> str:
    try:
        optimizer_spec(v)
    except (ValueError, TypeError):
        raise ValueError(
            f"{key}: unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)}"
        ) from None
    return v


def _option_type(name: str, value: Any, default: Any, key: str) -> Any:
    """One optimizer keyword's value, checked against the type of torch's default; lists
    become tuples (``betas = [0.9, 0.99]``)."""
    number = lambda x: (  # noqa: E731
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    )
    if isinstance(default, bool) or (default is None and name in ("foreach", "fused")):
        if not isinstance(value, bool):
            raise ValueError(f"{key}.{name}: expected true or false, got {_short(value)}")
        return value
    if isinstance(default, tuple):
        if not (
            isinstance(value, (list, tuple))
            and len(value) == len(default)
            and all(number(x) for x in value)
        ):
            raise ValueError(
                f"{key}.{name}: expected {len(default)} numbers like {list(default)}, "
                f"got {_short(value)}"
            )
        return tuple(value)
    if number(default) and not number(value):
        raise ValueError(
            f"{key}.{name}: expected a number (default {default}), got {_short(value)}"
        )
    return value


def check_optimizer_options(optimizer: str, options: Mapping[str, Any], lr: float) -> dict:
    """``options`` checked for ``optimizer``: every key one of its keywords (a misspelt key is
    refused, naming the valid ones), every value of the type its default has, and torch's own
    checks passed on one step of a tiny tensor. Returns them normalised."""
    cls = optimizer_spec(optimizer).cls
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n in params if n not in ("self", "params", "lr", "weight_decay")]
    out = {}
    for name, value in options.items():
        if name in ("lr", "weight_decay", "params"):
            where = {"lr": "train.lr", "weight_decay": "decay.weight_decay"}.get(name, "wdlab")
            raise ValueError(f"train.options: {name} is set by {where}, not in options")
        if name not in valid:
            raise ValueError(
                f"train.options: {cls.__name__} has no option {name!r}; valid: {', '.join(valid)}"
            )
        out[name] = _option_type(name, value, params[name].default, "train.options")
    try:  # torch's own value checks, and those only a step makes
        p = torch.zeros(2, requires_grad=True)
        opt = cls([p], lr=lr, **out)
        p.grad = torch.ones(2)
        opt.step()
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:  # torch asserts some
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"train.options: {cls.__name__} refuses {out}: {first}") from None
    return out


def _schedule(v: Any, key: str) -> str:
    try:
        parse_schedule(v if isinstance(v, str) else repr(v))
    except ValueError:
        valid = ", ".join(s.syntax for s in SCHEDULES.values())
        raise ValueError(f"{key}: {v!r} is not allowed; valid: {valid}") from None
    return v


def _wd_schedule(v: Any, key: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected cosine|linear:START:END:STEPS, got {_short(v)}")
    try:
        s = parse_wd_schedule(v)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    _float32([s.start, s.end], key, "weight decay")
    return v


def _group_wd(v: Any, key: str) -> dict[str, float]:
    """``{pattern: wd}``, or ``PATTERN=WD`` strings (the repeatable flag) → {pattern: wd}."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        pairs = {}
        for item in v:
            pattern, sep, value = item.rpartition("=") if isinstance(item, str) else ("", "", "")
            if not sep or not pattern:
                raise ValueError(f"{key}: expected PATTERN=WD, e.g. 'emb.*=1e-5', got {item!r}")
            try:
                pairs[pattern] = float(value)
            except ValueError:
                raise ValueError(f"{key}: {item!r}: the weight decay is not a number") from None
        v = pairs
    if not isinstance(v, dict) or not all(isinstance(p, str) and p for p in v):
        raise ValueError(f"{key}: expected a table of pattern = weight decay, got {_short(v)}")
    out = {}
    for pattern, wd in v.items():
        out[pattern] = _wds(wd, f"{key}.{pattern}")
        if len(out[pattern]) != 1:
            raise ValueError(f"{key}.{pattern}: expected one weight decay, got {_short(wd)}")
        out[pattern] = out[pattern][0]
    return out


# ---------------------------------------------------------------------------------------------
# The sections: each field is one key.


class _Section:
    """Read a section like a dict: ``section["epochs"]``."""

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of key ``name``, or ``default``."""
        return getattr(self, name, default)


@dataclass(frozen=True)
class DataConfig(_Section):
    """[data]: which data, its seed and split."""

    source: str = key(
        "seed-noise",
        _str_or_none,
        "--data",
        f"{', '.join(SOURCES)}, or a .csv/.parquet path",
    )
    seed: int = key(
        0,
        integer(0, MAX_SEED),
        "--data-seed",
        "seed of the data draw and split",
        "int",
    )
    target: str | None = key(None, _str_or_none, "--target", "target column of a data file")
    features: list[str] | None = key(
        None,
        _str_list,
        "--features",
        "feature columns of a data file, comma-separated",
    )
    impute: str | None = key(
        None,
        one_of(("mean", "median")),
        "--impute",
        "fill missing feature values (mean or median of the training split)",
        choices=("mean", "median"),
    )
    categorical: list[str] | None = key(
        None,
        _str_list,
        "--categorical",
        "columns of a data file to one-hot encode as categories, comma-separated",
    )
    task: str | None = key(
        None, one_of(TASKS), "--task", "override the inferred task", choices=tuple(TASKS)
    )
    val_size: float = key(0.2, _fraction)
    test_size: float = key(0.2, _fraction)
    options: dict = key({}, _table)
    train_size: int = key(
        0,
        integer(0),
        "--train-size",
        "train on a seeded subsample of N training rows (validation and test unchanged)",
        "int",
    )

    def load(self) -> Dataset:
        """The Dataset this section describes (its training split subsampled to
        ``train_size`` rows when that is set)."""
        ds = self._load()
        if self.train_size:
            ds = subsample_train(ds, self.train_size, self.seed, "data.train_size")
        return ds

    def _load(self) -> Dataset:
        if is_table_path(self.source):
            return read_table(
                self.source,
                self.target,
                self.features,
                self.impute,
                self.task,
                seed=self.seed,
                categorical=self.categorical,
            )
        options = dict(self.options)
        source = SOURCES.get(self.source)
        if source is not None and source.split_sizes:
            options.setdefault("val_size", self.val_size)
            options.setdefault("test_size", self.test_size)
        try:
            ds = load(self.source, seed=self.seed, **options)
        except TypeError as exc:
            raise ValueError(f"data.options: {exc}") from None
        if self.task and self.task != ds.task:
            raise ValueError(f"data.task: {self.source} is a {ds.task} data set, not {self.task}")
        return ds


@dataclass(frozen=True)
class ModelConfig(_Section):
    """[model]: which model (a kind, or a ``module:function`` factory) and its sizes."""

    kind: str = key(
        "mlp",
        _model_kind,
        "--model",
        f"{', '.join(k for k in MODEL_KINDS if k != 'custom')} or module:factory",
    )
    hidden: list[int] = key([64], _hidden, "--hidden", "hidden sizes, e.g. 64,32")
    activation: str = key(
        "relu",
        one_of(ACTIVATIONS),
        "--activation",
        "activation",
        choices=tuple(ACTIVATIONS),
    )
    layernorm: bool = key(False, _bool, "--layernorm", "LayerNorm after hidden layers", "flag")
    factory: str | None = key(None, _str_or_none)
    batchnorm: bool = key(False, _bool, "--batchnorm", "BatchNorm after convolutions (cnn)", "flag")
    dropout: float = key(0.0, _dropout, "--dropout", "dropout before the head (cnn)")
    factory_timeout: float = key(
        DEFAULT_FACTORY_TIMEOUT,
        _seconds,
        "--factory-timeout",
        f"stop a model factory that has not returned after S seconds ({DEFAULT_FACTORY_TIMEOUT:g})",
    )

    def spec(self, ds: Dataset) -> ModelSpec:
        """The ModelSpec, sized to the data (``in_shape`` for signals and images; flat rows
        leave it empty, and a CNN reads them as one-channel signals)."""
        return ModelSpec(
            self.kind,
            in_dim=ds.in_dim,
            out_dim=ds.out_dim,
            hidden=tuple(self.hidden),
            activation=self.activation,
            layernorm=self.layernorm,
            factory=self.factory,
            batchnorm=self.batchnorm,
            dropout=self.dropout,
            in_shape=ds.in_shape if len(ds.in_shape) > 1 else (),
            factory_timeout=self.factory_timeout,
        )


@dataclass(frozen=True)
class TrainConfig(_Section):
    """[train]: optimizer, learning rates, schedule, epochs, batches, seeds, device."""

    optimizer: str = key("sgd", _optimizer, "--optimizer", ", ".join(OPTIMIZERS))
    lr: list[float] = key([0.1], _lrs, "--lr", "learning rate(s): 0.1 or 1e-3,3e-3")
    options: dict = key({}, _table)
    schedule: str = key(
        "constant",
        _schedule,
        "--schedule",
        ", ".join(s.syntax for s in SCHEDULES.values()),
    )
    epochs: int = key(100, integer(1), "--epochs", "epochs", "int")
    batch_size: int = key(
        0,
        integer(0),
        "--batch-size",
        "0: full batch (default)",
        "int",
    )
    eval_every: int = key(10, integer(1), "--eval-every", "evaluate every N epochs", "int")
    seeds: list[int] = key([0], _seeds, "--seeds", "seeds: a count like 3, or a list like 0,1,2")
    device: str | None = key(None, _device, "--device", "cpu or cuda (default: cuda if present)")
    precision: str = key(
        "fp32",
        one_of(PRECISIONS),
        "--precision",
        "bf16: autocast forward passes",
        choices=PRECISIONS,
    )
    select: str = key(
        "auto",
        _select,
        "--select",
        "choose wd on: auto (the task's metric), loss, or a metric such as acc or rmse",
    )
    early_stopping: bool = key(
        False,
        _bool,
        "--early-stopping",
        "choose on each run's best-validation epoch instead of its last, and stop training a "
        "run whose validation metric has not improved for --patience evaluations",
        "flag",
    )
    patience: int = key(
        10,
        integer(1),
        "--patience",
        "early stopping: evaluations without a new best validation score before a run stops",
        "int",
    )
    diagnostics: list[str] = key(
        [],
        _diagnostics,
        "--diagnostics",
        "opt-in recordings per layer, comma-separated (e.g. rotation)",
    )
    prune: bool = key(
        False,
        _bool,
        "--prune",
        "successive halving: at each rung keep the best 1/eta of the mode × lr × wd cells "
        "(on validation) and stop training the rest",
        "flag",
    )
    prune_eta: int = key(
        3, integer(2), "--prune-eta", "successive halving: keep the best 1/ETA at each rung", "int"
    )
    prune_rung: int = key(
        0,
        integer(0),
        "--prune-rung",
        "successive halving: the first rung, in epochs (rungs at R, R·eta, R·eta²…; 0: "
        "chosen from the epochs)",
        "int",
    )
    checkpoint: Any = key(
        "auto",
        check_checkpoint,
        "--checkpoint",
        "save each batch's training state every N epochs, or auto (every 5 minutes of a "
        "batch's training) or off; a killed sweep resumes from it",
    )

    def train_kwargs(self, shuffle_seed: int) -> dict[str, Any]:
        """The keywords of :func:`wdlab.trainer.train` this section sets."""
        return {
            "epochs": self.epochs,
            "eval_every": self.eval_every,
            "schedule": self.schedule,
            "device": self.device,
            "batch_size": self.batch_size or None,
            "shuffle_seed": shuffle_seed,
            "precision": self.precision,
            "diagnostics": tuple(self.diagnostics),
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class DecayConfig(_Section):
    """[decay]: the modes and weight decays of the grid, and which tensors decay."""

    modes: list[str] = key(["coupled"], _modes, "--mode", "decay mode(s): coupled or l2,decoupled")
    weight_decay: list[float] = key(
        [0.0],
        _wds,
        "--wd",
        "weight decay(s): 0,1e-4,1e-3 or LO..HI:N (log-spaced)",
    )
    rule: str = key(
        "default",
        one_of(RULES),
        "--rule",
        "which tensors decay: wdlab's default (ndim >= 2), everything, or the rule of timm, "
        "nanoGPT or the Hugging Face Trainer",
        choices=tuple(RULES),
    )
    exclude: list[str] = key([], _str_list)
    include: list[str] = key([], _str_list)
    wd_schedule: str | None = key(
        None,
        _wd_schedule,
        "--wd-schedule",
        "weight decay by step, e.g. cosine:0.04:0.4:1000 (DINO's ramp)",
    )
    group_wd: dict = key(
        {},
        _group_wd,
        "--group-wd",
        "PATTERN=WD: a weight decay of its own for the decaying tensors PATTERN matches "
        "(repeatable)",
        "append",
    )

    def decay_rule(self) -> DecayRule:
        """The no-decay rule: the named one, with ``exclude`` and ``include`` added."""
        base = RULES[self.rule]
        if self.rule in PRESETS:
            return replace(
                base,
                exclude=(*base.exclude, *self.exclude),
                include=(*base.include, *self.include),
            )
        return DecayRule(
            everything=base.everything, exclude=tuple(self.exclude), include=tuple(self.include)
        )


SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "decay": DecayConfig,
}


def section_keys(section: str) -> Iterator[tuple[Field, Key]]:
    """The fields of a section with their :class:`Key`."""
    for f in fields(SECTIONS[section]):
        yield f, f.metadata["key"]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: four typed sections, read as ``cfg.train.epochs`` or
    ``cfg["train"]["epochs"]``."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    decay: DecayConfig

    def __getitem__(self, section: str) -> Any:
        return getattr(self, section)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The plain dict (TOML's shape): what the store keeps."""
        return {name: asdict(getattr(self, name)) for name in SECTIONS}

    def identity(self) -> dict[str, dict[str, Any]]:
        """What identifies a study (hashed by the store and the default folder name): the
        plain dict without the keys of :data:`LATER_KEYS` that are at their defaults, and
        without :data:`NOT_IDENTITY` (a user's factory adds its fingerprint when it is built:
        :func:`wdlab.pipelines.study.run_study`)."""
        return self._without(LATER_KEYS)

    def every_key_identity(self) -> dict[str, dict[str, Any]]:
        """:meth:`identity` as :func:`wdlab.sweep` has always made it: every key, but those
        of :data:`HALVING_KEYS` at their defaults (and :data:`NOT_IDENTITY`)."""
        return self._without(HALVING_KEYS)

    def _without(self, later: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
        """The plain dict without the keys of ``later`` at their defaults, nor
        :data:`NOT_IDENTITY`."""
        out = self.to_dict()
        for section, names in later.items():
            for f, _ in section_keys(section):
                if f.name in names and out[section][f.name] == f.default_factory():
                    del out[section][f.name]
        for section, names in NOT_IDENTITY.items():
            for name in names:
                del out[section][name]
        return out

    def grid_size(self) -> int:
        """How many configurations :meth:`grid` makes, counted without making them."""
        t, dec = self.train, self.decay
        wds = set(dec.weight_decay)
        per = sum(len(wds) if get_mode(m).decays else 1 for m in set(dec.modes))
        if not (0.0 in wds or any(not get_mode(m).decays for m in dec.modes)):
            per += 1
        return per * len(set(t.lr)) * len(set(t.seeds))

    def grid(self) -> list[RunConfig]:
        """mode × weight decay × lr × seed, one RunConfig each.

        Every (lr, seed) also gets the wd = 0 reference (mode ``none``) unless the grid already
        has a zero-decay run for it: a weight decay is only worth choosing against no decay.
        """
        t, dec = self.train, self.decay
        options = tuple(sorted(t.options.items()))
        out: list[RunConfig] = []
        seen: set[tuple] = set()

        def add(mode: str, wd: float, lr: float, seed: int) -> None:
            if (mode, wd, lr, seed) not in seen:
                seen.add((mode, wd, lr, seed))
                label = f"{mode} wd={wd:g}"
                out.append(RunConfig(mode, wd, lr, t.optimizer, options, seed, label))

        if not (0.0 in dec.weight_decay or any(not get_mode(m).decays for m in dec.modes)):
            for lr, seed in itertools.product(t.lr, t.seeds):
                add(REFERENCE_MODE, 0.0, lr, seed)
        for mode, wd, lr, seed in itertools.product(dec.modes, dec.weight_decay, t.lr, t.seeds):
            add(mode, wd if get_mode(mode).decays else 0.0, lr, seed)
        return out


def validate(raw: Mapping[str, Any] | Experiment) -> Experiment:
    """Check every section and key; return the typed config with defaults filled and values
    normalised. Raises ``ValueError`` naming the key and what it allows."""
    if isinstance(raw, Experiment):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise ValueError("an experiment config must be a table")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}]; valid: {', '.join(SECTIONS)}")
    sections = {}
    for section, cls in SECTIONS.items():
        given = raw.get(section, {})
        if not isinstance(given, Mapping):
            raise ValueError(f"[{section}] must be a table")
        names = [f.name for f in fields(cls)]
        bad = sorted(set(given) - set(names))
        if bad:
            raise ValueError(f"unknown key {section}.{bad[0]}; valid: {', '.join(names)}")
        values = {}
        for f, k in section_keys(section):
            value = copy.deepcopy(given[f.name]) if f.name in given else f.default_factory()
            values[f.name] = value if value is None else k.check(value, f"{section}.{f.name}")
        sections[section] = values
    model = sections["model"]
    if ":" in model["kind"]:
        model["kind"], model["factory"] = "custom", model["kind"]
    if model["kind"] == "custom" and not model["factory"]:
        raise ValueError("model.factory: model kind 'custom' needs factory = 'module:function'")
    if is_table_path(sections["data"]["source"] or "") and not sections["data"]["target"]:
        raise ValueError("data.target: a data file needs the target column")
    data = sections["data"]
    if data["val_size"] + data["test_size"] > 0.9:
        raise ValueError(
            f"data.val_size + data.test_size must leave >= 10% for training, got "
            f"{data['val_size']:g} + {data['test_size']:g}"
        )
    train = sections["train"]
    train["options"] = check_optimizer_options(train["optimizer"], train["options"], train["lr"][0])
    return Experiment(**{name: SECTIONS[name](**v) for name, v in sections.items()})


def load_config(path: str | Path) -> Experiment:
    """Read and validate a TOML experiment file."""
    return validate(read_config(path))


def read_config(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML experiment file as written (not validated: the keys it gives); a
    regular file only (a pipe or a device is refused at once, never waited on)."""
    p = Path(path)
    try:
        return tomllib.loads(_read_regular(p).decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise ValueError(f"config file {p} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ValueError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p.name} is not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p.name} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{p.name}: arrays or tables nested too deeply to read") from None


def names_grid(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> bool:
    """Whether a raw config or its overrides name any key of the grid (:data:`SWEEP_GRID`)."""
    for dotted in SWEEP_GRID:
        section, _, name = dotted.partition(".")
        table = raw.get(section)
        if overrides.get(dotted) is not None or (isinstance(table, Mapping) and name in table):
            return True
    return False


FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _read_regular(p: Path) -> bytes:
    """The bytes of ``p`` if it is a regular file; a one-line ``ValueError`` for a pipe, a
    device or a socket (opened without blocking, checked on the open file, never read)."""
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(p)
        if not stat.S_ISREG(mode):
            kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise ValueError(f"config file {p} is {kind}, not a TOML file; wdlab reads files only")
        return fh.read()


def merge(config: Experiment | Mapping[str, Any], overrides: Mapping[str, Any]) -> Experiment:
    """Apply ``{"section.key": value}`` overrides (CLI flags) and validate again."""
    raw = config.to_dict() if isinstance(config, Experiment) else copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        raw.setdefault(section, {})[name] = value
    return validate(raw)
