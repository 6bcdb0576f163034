"""The arguments of :func:`wdlab.sweep` (and of :class:`wdlab.TimescaleSettings`), checked
before anything runs: each bad one is one ``ValueError`` line naming the argument (the command
line checks its flags the same way, in :mod:`wdlab.config_keys` and :mod:`wdlab.cli`)."""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import Tensor, nn
from torch.utils.data import DataLoader

from wdlab.config_keys import ordered_pairs
from wdlab.data import Dataset
from wdlab.data.arrays import nonempty
from wdlab.decay import DEFAULT_RULE, DecayRule
from wdlab.decay.rules import RULE_NAMES, as_rule
from wdlab.errors import first_line
from wdlab.warn import warn_user

F = TypeVar("F", bound=Callable[..., Any])


def plain_numbers(fn: F) -> F:
    """``fn`` with its keyword arguments' NumPy and torch numbers as Python's: a scalar
    (``np.int64(3)``) as a number, a vector (``np.logspace(-5, -1, 5)``) as a list, so a
    notebook's values are read as the same values written out."""

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **{k: _plain(v) for k, v in kwargs.items()})

    return plain  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, Tensor)) and value.ndim <= 1:
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


#: The decay rules ``rule=`` takes by name (those of ``--rule``, and the other libraries').


def seed_list(seeds: object) -> list[int] | str:
    """``seeds=`` as the config takes it: a count N as seeds 0..N−1, a list as given, a string
    (``"3"``, ``"0,1,2"``) for the config to read; anything else is one ``ValueError`` line."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"train.seeds: expected a count >= 1, got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, str):
        return seeds
    if isinstance(seeds, (list, tuple, range)):
        return list(seeds)
    raise ValueError(
        f"train.seeds: expected a count (an integer >= 1) or a list of seeds, got {seeds!r}"
    )


def check_arguments(
    max_batch: object, max_memory_mb: object, out: object, factory_timeout: object
) -> None:
    """A one-line ``ValueError`` for the first of these arguments that is not usable."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if max_batch is not None and not (
        isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 1
    ):
        raise ValueError(f"max_batch: expected an integer >= 1 (or None), got {max_batch!r}")
    if not (number(max_memory_mb) and math.isfinite(max_memory_mb) and max_memory_mb > 0):
        raise ValueError(f"max_memory_mb: expected a finite number > 0, got {max_memory_mb!r}")
    if factory_timeout is not None and not (
        number(factory_timeout) and not math.isnan(factory_timeout) and factory_timeout > 0
    ):
        raise ValueError(
            f"factory_timeout: expected seconds > 0 (or None: no limit), got {factory_timeout!r}"
        )
    if out is not None:
        if not isinstance(out, (str, Path)):
            raise ValueError(f"out: expected a folder path, got {type(out).__name__}")
        if Path(out).exists() and not Path(out).is_dir():
            raise ValueError(f"out: {out} is a file, not a study folder; choose another out=")


DEFAULT_EPOCHS = 10  # wdlab.sweep's and wdlab.optuna.optimize's, where neither is given


def epochs_or_steps(
    epochs: int | None, steps: int | None, said: str = "", zero_is_unset: bool = False
) -> int:
    """The epochs of a training given ``epochs`` or ``steps`` (``steps`` then decides; both
    given is refused in one line naming them as ``said``, else ``epochs=E and steps=S``: one
    would be ignored). ``steps=0`` is refused too (it would train the default epochs, silently)
    unless ``zero_is_unset`` (the config's and the command line's way to say "use epochs")."""
    whole = isinstance(steps, int) and not isinstance(steps, bool)
    if steps is not None and (not whole or steps < 0 or (steps == 0 and not zero_is_unset)):
        if zero_is_unset:  # (checked before "give one": --steps -1 beside --epochs said that)
            raise ValueError(
                f"train.steps: expected an integer >= 0 (0: the epochs), got {steps!r}"
            )
        raise ValueError(f"steps={steps!r}: give steps >= 1, or steps=None to train epochs")
    if epochs is not None and steps:
        raise ValueError(
            f"{said or f'epochs={epochs} and steps={steps}'}: give one (steps trains that many "
            "optimizer steps in all, whatever the epochs)"
        )
    return DEFAULT_EPOCHS if epochs is None else epochs


def check_loss(loss: object) -> Any:
    """``loss`` as given (None: the task's own), or a one-line ``ValueError`` for one that is
    not a callable ``fn(outputs, targets) -> scalar tensor``."""
    if loss is not None and not callable(loss):
        raise ValueError(
            f"loss must be a function fn(outputs, targets) -> scalar tensor (e.g. "
            f"nn.CrossEntropyLoss(label_smoothing=0.1)), got {type(loss).__name__} {loss!r:.40}"
        )
    smoothing = getattr(loss, "label_smoothing", None)  # torch's CrossEntropyLoss: refused
    if isinstance(smoothing, (int, float)) and not 0.0 <= smoothing <= 1.0:  # only as it runs
        raise ValueError(
            f"loss: {type(loss).__name__}(label_smoothing={smoothing:g}): label smoothing "
            "must be between 0 and 1"
        )
    return loss


def check_model(model: object) -> None:
    """A one-line ``ValueError`` for a module instance given where a factory is expected (each
    configuration and seed builds its own model)."""
    if isinstance(model, nn.Module):
        raise ValueError(
            "model must be a function that returns an nn.Module (or a ModelSpec or a kind); got "
            f"an nn.Module instance: pass a factory, e.g. lambda: {type(model).__name__}()"
        )


def decay_rule(rule: object) -> DecayRule:
    """``rule`` as a DecayRule: one, or one of :data:`RULE_NAMES`."""
    return as_rule(rule)  # type: ignore[arg-type]


def rule_identity(rule: DecayRule) -> str | dict[str, Any]:
    """How a study records its decay rule: its name where it has one (``default``,
    ``everything``, a preset), else the fields that differ from the default rule."""
    for name, named in RULE_NAMES.items():
        if rule == named:
            return name
    out: dict[str, Any] = {}
    for f in fields(DecayRule):
        value = getattr(rule, f.name)
        if value != getattr(DEFAULT_RULE, f.name):
            if f.name == "exclude_types":
                value = [f"{t.__module__}.{t.__qualname__}" for t in value]
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def checked_data(load: Callable[[Any], Any], data: Any) -> Any:
    """``load(data)``, with inputs it cannot read as numbers, splits whose inputs and targets
    differ in length, and empty splits each refused in one ``ValueError`` line (streamed data
    are checked batch by batch as they are read)."""
    if isinstance(data, Mapping):  # before loading: an empty split fails deep inside it
        for split, v in data.items():
            pair = isinstance(v, (tuple, list)) and len(v) == 2
            if _length(v[1] if pair else v) == 0:
                raise ValueError(f"data: the {split} split is empty")
    try:
        ds = load(data)
    except TypeError as exc:  # e.g. numpy arrays of strings: torch cannot hold them
        raise ValueError(
            f"data: the splits must hold numbers (tensors or arrays): {first_line(exc)}"
        ) from None
    if not isinstance(ds, Dataset):
        return ds
    for split, (X, y) in ds.splits().items():
        n_x = X.shape[0] if isinstance(X, Tensor) else len(X)
        if n_x != len(y):
            raise ValueError(f"data: the {split} split has {n_x} inputs but {len(y)} targets")
        nonempty(split, y)
    return ds


def _length(v: object) -> int | None:
    """Examples in a split, where known: a DataLoader's dataset's (not its batches: with
    ``drop_last`` a split smaller than one batch holds examples, and is evaluated whole)."""
    try:
        return len(v.dataset if isinstance(v, DataLoader) else v)  # type: ignore[arg-type]
    except TypeError:
        return None


#: Keys a ``wdlab.sweep`` study stores that are not part of its identity: ``keep`` and
#: ``checkpoint`` change no number; the keys added later (the recipe's, early stopping's
#: patience, successive halving's) count only when set (a study made before they existed keeps
#: its identity, and resumes).
NOT_IN_IDENTITY = {"keep": None, "checkpoint": None}
LATER = {"steps": 0, "clip_grad_norm": None, "patience": 10}
LATER |= {"prune": False, "prune_eta": 3, "prune_rung": 0}


def sweep_identity(described: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a ``wdlab.sweep`` study: its stored config without ``train.keep``, and
    without the later recipe keys left at their defaults."""
    train = {
        k: v
        for k, v in described["train"].items()
        if k not in NOT_IN_IDENTITY and not (k in LATER and v == LATER[k])
    }
    decay = dict(described["decay"])
    if "group_wd" in decay:
        decay["group_wd"] = ordered_pairs(decay["group_wd"])
    return {**described, "train": train, "decay": decay}


def can_stop(epochs: int, patience: int, every: int) -> None:
    """Warn where early stopping can stop no run before its last evaluation (which ends it
    anyway): it stops after ``patience`` evaluations without improvement on the first's, and
    a run of ``epochs`` is evaluated after epochs 1, 1 + ``every``, … and the last."""
    evaluations = len({*range(0, epochs, every), epochs - 1})
    if evaluations - 2 < patience:
        warn_user(
            f"early stopping can stop no run before its end: it waits {patience} evaluation(s) "
            f"without improvement, and a run of {epochs} epoch(s) evaluated every {every} has "
            f"{evaluations} evaluations; evaluate more often (eval_every, --eval-every) or lower "
            "the patience"
        )


def rising_grid(
    name: str, values: object, at_least: int, whole: bool = False
) -> tuple[int | float, ...]:
    """Check that ``values`` rise: ``at_least`` finite numbers > 0, each above the one before.

    Whole ones where ``whole`` (a size factor); a list, tuple, range or NumPy array; returned
    as a tuple of Python numbers. Anything else is a one-line ``ValueError``."""
    listed = isinstance(values, (list, tuple, range)) or (
        isinstance(values, np.ndarray) and values.ndim == 1
    )
    given = list(values.tolist() if isinstance(values, np.ndarray) else values) if listed else []
    kinds = (numbers.Integral,) if whole else (numbers.Real,)
    ok = all(
        isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in given
    )
    if not ok or len(given) < at_least or any(b <= a for a, b in itertools.pairwise(given)):
        what = "whole numbers >= 1" if whole else "finite numbers > 0"
        raise ValueError(
            f"{name} needs >= {at_least} {what}, each larger than the one before, got {values!r}"
        )
    return tuple(int(v) if whole else float(v) for v in given)


def check_mlp(hidden: object, activation: object, activations: Mapping[str, Any]) -> None:
    """Check an MLP's ``hidden`` widths (one or more, each >= 1) and its ``activation``.

    Anything else is a one-line ``ValueError`` (``activation``: one of ``activations``)."""
    widths = list(hidden) if isinstance(hidden, (list, tuple)) else []
    bad = (isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in widths)
    if not widths or any(bad):
        raise ValueError(f"hidden needs one or more layer widths >= 1, got {hidden!r}")
    if activation not in activations:
        raise ValueError(f"activation must be one of {', '.join(activations)}, got {activation!r}")
