"""Experiment configs: TOML files (or dicts), validated before any training.

An experiment has four sections; every key is optional and unknown keys are refused::

    [data]    source, seed, target, features, impute, task, val_size, test_size, options
    [model]   kind, hidden, activation, layernorm, factory
    [train]   optimizer, lr, options, schedule, epochs, batch_size, eval_every, seeds, device,
              precision
    [decay]   modes, weight_decay, rule, exclude, include

``lr``, ``modes``, ``weight_decay`` and ``seeds`` take one value or a list (the grid is their
product); ``weight_decay`` also takes ``"LO..HI:N"`` (N log-spaced values). ``seeds`` also takes
an integer count written as ``"N"`` (seeds 0..N−1).
"""

from __future__ import annotations

import contextlib
import copy
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wdlab.decay import MODES
from wdlab.engine import OPTIMIZERS, optimizer_class
from wdlab.models import ACTIVATIONS


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
        if not (0 < lo_f < hi_f) or n < 2:
            raise ValueError(f"{key}: a log range needs 0 < LO < HI and N >= 2, got {text!r}")
        step = (math.log10(hi_f) - math.log10(lo_f)) / (n - 1)
        return [float(f"{10 ** (math.log10(lo_f) + i * step):.6g}") for i in range(n)]
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{key}: expected numbers separated by commas, got {text!r}") from None


@dataclass(frozen=True)
class Key:
    """One config key: its default, a checker/normaliser, and what it allows (for messages)."""

    default: Any
    check: Callable[[Any, str], Any]
    allowed: str


def _one_of(options: tuple[str, ...]) -> Callable[[Any, str], Any]:
    def check(v: Any, key: str) -> Any:
        if v not in options:
            raise ValueError(f"{key}: {v!r} is not allowed; valid: {', '.join(options)}")
        return v

    return check


def _int(lo: int = 0) -> Callable[[Any, str], Any]:
    def check(v: Any, key: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{key}: expected an integer >= {lo}, got {v!r}")
        return v

    return check


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


def _modes(v: Any, key: str) -> list[str]:
    modes = _str_list(v, key)
    for m in modes:
        _one_of(MODES)(m, key)
    if not modes:
        raise ValueError(f"{key}: give at least one mode; valid: {', '.join(MODES)}")
    return modes


def _wds(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values or any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"{key}: weight decays must be finite numbers >= 0, got {v!r}")
    return values


def _lrs(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values or any(not math.isfinite(w) or w <= 0 for w in values):
        raise ValueError(f"{key}: learning rates must be numbers > 0, got {v!r}")
    return values


def _seeds(v: Any, key: str) -> list[int]:
    if isinstance(v, str) and v.strip().isdigit():
        return list(range(int(v)))
    if isinstance(v, str) and "," in v:
        with contextlib.suppress(ValueError):
            v = [int(s) for s in v.split(",") if s.strip()]
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        return v
    raise ValueError(f'{key}: expected a seed, a list of seeds, or a count like "3", got {v!r}')


def _optimizer(v: Any, key: str) -> str:
    try:
        optimizer_class(v)
    except (ValueError, TypeError):
        raise ValueError(
            f"{key}: unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)}"
        ) from None
    return v


def _schedule(v: Any, key: str) -> str:
    if v in ("constant", "cosine") or (isinstance(v, str) and v.startswith("step:")):
        if isinstance(v, str) and v.startswith("step:"):
            parts = v.split(":")
            try:
                assert len(parts) == 3 and int(parts[1]) > 0 and float(parts[2]) > 0
            except (AssertionError, ValueError):
                raise ValueError(f"{key}: expected step:SIZE:GAMMA, got {v!r}") from None
        return v
    raise ValueError(f"{key}: {v!r} is not allowed; valid: constant, cosine, step:SIZE:GAMMA")


SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "source": Key("seed-noise", _str_or_none, "a source name or a .csv/.parquet path"),
        "seed": Key(0, _int(0), "integer >= 0"),
        "target": Key(None, _str_or_none, "the target column (files)"),
        "features": Key(None, _str_list, "list of feature columns (files)"),
        "impute": Key(None, _one_of(("mean", "median")), "mean or median"),
        "task": Key(None, _one_of(("binary", "multiclass", "regression")), "task"),
        "val_size": Key(0.2, _fraction, "fraction in (0, 0.9)"),
        "test_size": Key(0.2, _fraction, "fraction in (0, 0.9)"),
        "options": Key({}, _table, "source options, e.g. {n = 200, d = 50}"),
    },
    "model": {
        "kind": Key("mlp", _one_of(("seed-mlp", "mlp", "linear", "custom")), "model kind"),
        "hidden": Key([64], _hidden, "hidden sizes"),
        "activation": Key("relu", _one_of(tuple(ACTIVATIONS)), "activation"),
        "layernorm": Key(False, _bool, "true or false"),
        "factory": Key(None, _str_or_none, "module:function"),
    },
    "train": {
        "optimizer": Key("sgd", _optimizer, "optimizer name"),
        "lr": Key([0.1], _lrs, "learning rate(s) > 0"),
        "options": Key({}, _table, "optimizer options, e.g. {momentum = 0.9}"),
        "schedule": Key("constant", _schedule, "constant, cosine or step:SIZE:GAMMA"),
        "epochs": Key(100, _int(1), "integer >= 1"),
        "batch_size": Key(0, _int(0), "integer >= 0 (0: full batch)"),
        "eval_every": Key(10, _int(1), "integer >= 1"),
        "seeds": Key([0], _seeds, "seeds"),
        "device": Key(None, _str_or_none, "cpu or cuda"),
        "precision": Key("fp32", _one_of(("fp32", "bf16")), "fp32 or bf16 (autocast)"),
    },
    "decay": {
        "modes": Key(["coupled"], _modes, "decay modes"),
        "weight_decay": Key([0.0], _wds, "weight decay(s) >= 0 or LO..HI:N"),
        "rule": Key("default", _one_of(("default", "everything")), "default or everything"),
        "exclude": Key([], _str_list, "fnmatch patterns"),
        "include": Key([], _str_list, "fnmatch patterns"),
    },
}


def validate(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check every section and key; return the config with defaults filled and values
    normalised. Raises ``ValueError`` naming the key and what it allows."""
    if not isinstance(raw, dict):
        raise ValueError("an experiment config must be a table")
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}]; valid: {', '.join(SCHEMA)}")
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ValueError(f"[{section}] must be a table")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise ValueError(f"unknown key {section}.{bad[0]}; valid: {', '.join(keys)}")
        out[section] = {}
        for name, key in keys.items():
            value = given.get(name, copy.deepcopy(key.default))
            out[section][name] = value if value is None else key.check(value, f"{section}.{name}")
    if out["model"]["kind"] == "custom" and not out["model"]["factory"]:
        raise ValueError("model.factory: model kind 'custom' needs factory = 'module:function'")
    src = out["data"]["source"] or ""
    if src.lower().endswith((".csv", ".parquet", ".pq")) and not out["data"]["target"]:
        raise ValueError("data.target: a data file needs the target column")
    return out


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate a TOML experiment file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p.name} is not valid TOML: {exc}") from None
    return validate(raw)


def merge(
    config: dict[str, dict[str, Any]], overrides: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Apply ``{"section.key": value}`` overrides (CLI flags) and validate again."""
    raw = copy.deepcopy(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    return validate(raw)
