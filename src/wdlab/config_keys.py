"""Config keys: how one key of :mod:`wdlab.config`'s schema is declared (:func:`key`: its
default and its :class:`Key`, the checker and the command-line flag) and the checkers the
schema's keys use. A checker takes ``(value, "section.key")`` and returns the normalised value,
or raises a one-line ``ValueError`` naming the key and what it allows; allowed values come
from the registries (modes, optimizers, model kinds, schedules, tasks).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from wdlab.decay import MODES
from wdlab.decay.schedules import parse as parse_wd_schedule
from wdlab.decay.schedules import scaled
from wdlab.devices import check_device_name
from wdlab.diagnostics import DIAGNOSTICS
from wdlab.models import MODEL_KINDS
from wdlab.optimizers import OPTIMIZERS, optimizer_spec
from wdlab.tasks import TASKS
from wdlab.textlists import MAX_RANGE, comma_items, first_repeat, parse_float_list
from wdlab.trainer.plan import check_clip
from wdlab.trainer.schedules import SCHEDULES, parse_schedule

FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # weights, lr and wd are float32 in training
MAX_SEED = 2**32 - 2  # NumPy and scikit-learn take seeds below 2**32 (the split uses seed + 1)
SELECT_METRICS = ("acc", "rmse", "r2")  # besides "auto" and "loss"
KNOWN_DIAGNOSTICS = ("rotation",)  # accepted by the config; available when registered


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
    ``int``, ``float``, ``flag`` (a switch that sets True) or ``append`` (repeatable; the
    checker gets the list). ``choices`` lists the allowed values.
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


def positive_seconds(v: Any) -> float:
    """A time limit: seconds > 0 (``inf``: no limit), a number or its text (from the command
    line); else one ``ValueError`` line showing what was given."""
    given = v
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"expected seconds > 0 (inf: no limit), got {given!r}")
    return float(v)


def _seconds(v: Any, key: str) -> float:
    try:
        return positive_seconds(v)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _clip(v: Any, key: str) -> float:
    try:
        return check_clip(v)
    except ValueError:
        raise ValueError(f"{key}: expected a norm > 0 (a finite number), got {_short(v)}") from None


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
        items = comma_items(v, key)  # an empty value between commas: its own line
        try:
            v = [int(s) for s in items]
        except ValueError:
            raise ValueError(f"{key}: expected sizes like 64,32, got {v!r}") from None
    if not isinstance(v, list) or not all(isinstance(h, int) and h > 0 for h in v):
        raise ValueError(f"{key}: expected a list of positive integers, got {v!r}")
    return v


def model_kind(v: Any, key: str) -> str:
    """A model's name as every command takes it: a built-in kind or ``FILE.py:FUNCTION`` (a
    file without its function, or an unknown kind, is one line naming ``key``)."""
    if isinstance(v, str) and ":" in v:  # module:function, a custom factory
        return v
    if isinstance(v, str) and v.endswith(".py"):  # a file, without the function to call
        raise ValueError(
            f"{key}: {v!r} names a file; name the function that builds the model too: "
            f"{v}:FUNCTION (e.g. {v}:make)"
        )
    kinds = [k for k in MODEL_KINDS if k != "custom"]
    try:
        return one_of(MODEL_KINDS)(v, key)
    except ValueError:
        raise ValueError(
            f"{key}: {v!r} is not a model; valid: {', '.join(kinds)}, or FILE.py:FUNCTION "
            "(your own)"
        ) from None


def _once(values: list[Any], key: str, what: str) -> list[Any]:
    """``values``, each given once (a repeat was dropped without a word: refused, as a seed
    given twice is)."""
    twice = first_repeat(values)  # (one pass: a grid of 100,000 spun for minutes, pairwise)
    if twice is not None:
        shown = f"{twice:g}" if isinstance(twice, float) else str(twice)
        raise ValueError(f"{key}: {what} {shown} is given twice; give each once")
    return values


def _modes(v: Any, key: str) -> list[str]:
    modes = _str_list(v, key)
    for m in modes:
        one_of(MODES)(m, key)
    if not modes:
        raise ValueError(f"{key}: give at least one mode; valid: {', '.join(MODES)}")
    return _once(modes, key, "mode")


def _wds(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values:
        raise ValueError(f"{key}: no weight decay was given; give at least one, e.g. [0, 1e-4]")
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"{key}: weight decays must be finite numbers >= 0, got {_short(v)}")
    return _once(_float32(values, key, "weight decay"), key, "weight decay")


def _lrs(v: Any, key: str) -> list[float]:
    values = parse_float_list(v, key)
    if not values:
        raise ValueError(f"{key}: no learning rate was given; give at least one, e.g. [1e-3]")
    if any(not math.isfinite(w) or w <= 0 for w in values):
        raise ValueError(f"{key}: learning rates must be numbers > 0, got {_short(v)}")
    return _once(_float32(values, key, "learning rate"), key, "learning rate")


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters, for messages."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def seed_values(v: Any, key: str) -> list[int]:
    """Seeds as every command takes them: a count (3 or "3": seeds 0..2, as ``seeds=3`` and
    ``--seeds 3`` mean), or distinct seeds (a list, or "3," / "0,1,2"); else a ``ValueError``
    naming ``key``."""
    if (isinstance(v, str) and v.strip().isdigit()) or (
        isinstance(v, int) and not isinstance(v, bool)
    ):
        n = int(v)
        if n < 1:
            raise ValueError(f"{key}: expected a count >= 1, got {n}")
        if n > MAX_RANGE:
            raise ValueError(f"{key}: at most {MAX_RANGE:,} seeds, got {n:,}")
        return list(range(n))
    if isinstance(v, str) and "," in v:
        items = comma_items(v, key)  # an empty value between commas is refused, not dropped
        with contextlib.suppress(ValueError):
            v = [int(s) for s in items]
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"{key}: seeds must be integers in 0..{MAX_SEED}, got {bad[0]}")
        twice = first_repeat(v)
        if twice is not None:  # one run per seed: a repeat would be dropped, not run again
            raise ValueError(f"{key}: seed {twice} is given twice; each seed is one run")
        return v
    raise ValueError(
        f"{key}: expected a count like 3 or a list of seeds like [0, 1, 2], got {_short(v)}"
    )


def _optimizer(v: Any, key: str) -> str:
    """An optimizer's short name, however it was spelt (``SGD``, ``sgd``: one study)."""
    try:
        spec = optimizer_spec(v)
    except (ValueError, TypeError):
        raise ValueError(
            f"{key}: unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)}"
        ) from None
    return next(name for name, known in OPTIMIZERS.items() if known is spec)


def _schedule(v: Any, key: str) -> str:
    if not isinstance(v, str):
        valid = ", ".join(s.syntax for s in SCHEDULES.values())
        raise ValueError(f"{key}: {v!r} is not allowed; valid: {valid}")
    try:
        parse_schedule(v)
    except ValueError as exc:  # "lr schedule 'X' is not allowed[: why]; valid: …"
        raise ValueError(f"{key}: {str(exc).removeprefix('lr schedule ')}") from None
    return v


def _wd_schedule(v: Any, key: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected cosine|linear:START:END:STEPS, got {_short(v)}")
    try:
        s = parse_wd_schedule(v)
        scaled(s, 0.0)  # a sweep scales it to each row's weight decay: START > 0
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
            if pattern in pairs:  # the last one took it, without a word
                raise ValueError(f"{key}: the pattern {pattern!r} is given twice; give each once")
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


def ordered_pairs(group_wd: Mapping[str, float]) -> list[list[Any]] | dict:
    """``group_wd`` as ``[pattern, wd]`` pairs, in order, for a study's identity (which is
    hashed with sorted keys): the first pattern to match a tensor takes it, so the order is
    part of what trains. None given: ``{}`` as it was."""
    return [[p, wd] for p, wd in group_wd.items()] if group_wd else {}


#: A switch of ``[train]`` and the keys that set it (a file that turns it off drops them).
SWITCHES = {"prune": ("prune_eta", "prune_rung"), "early_stopping": ("patience",)}


def switched_off(doc: dict[str, Any]) -> dict[str, Any]:
    """A config file's tables, less the settings of a switch the file turns off by name
    (``prune = false`` beside ``prune_eta``): unused, and no part of the study's identity."""
    train = doc.get("train")
    if isinstance(train, dict):
        for switch, keys in SWITCHES.items():
            if train.get(switch) is False:
                doc["train"] = train = {k: v for k, v in train.items() if k not in keys}
    return doc


def check_switches(
    train: Mapping[str, Any], unset: Mapping[str, Any], given: Collection[str] = ()
) -> None:
    """A one-line ``ValueError`` for a setting of a switch that is off: successive halving's
    ``prune_eta`` / ``prune_rung`` without ``prune``, ``patience`` without early stopping. A
    setting is a value other than ``unset``'s, or a key named in ``given`` (a file's key or a
    flag, even at its default value)."""
    if not train["prune"] and any(
        train[k] != unset[k] or k in given for k in ("prune_eta", "prune_rung")
    ):
        raise ValueError(
            "train.prune_eta / prune_rung set a successive halving that is off: add train.prune "
            "= true (--prune, prune=True)"
        )
    if not train["early_stopping"] and (
        train["patience"] != unset["patience"] or "patience" in given
    ):
        raise ValueError(
            f"train.patience = {train['patience']} sets an early stopping that is off: add "
            "train.early_stopping = true (--early-stopping, early_stopping=True)"
        )
