"""Experiment configs: TOML files, dicts or flags, validated key by key into frozen objects.

An experiment has four sections; every key is optional and unknown keys are refused::

    [data]    source, seed, target, features, impute, task, val_size, test_size, options,
              train_size, categorical
    [model]   kind, hidden, activation, layernorm, factory, batchnorm, dropout, factory_timeout
    [train]   optimizer, lr, options, schedule, epochs, batch_size, eval_every, seeds, device,
              precision, select, early_stopping, diagnostics, steps, clip_grad_norm, keep,
              patience, prune, prune_eta, prune_rung, checkpoint
    [decay]   modes, weight_decay, rule, exclude, include, wd_schedule, group_wd

``lr``, ``modes`` and ``weight_decay`` take one value or a list (the grid is their product with
the seeds); ``weight_decay`` also takes ``"LO..HI:N"`` (N log-spaced values). ``seeds`` is a
count, ``N`` or ``"N"`` (seeds 0..N−1, as ``seeds=N`` and ``--seeds N`` mean), or a list of
seeds (``[3]``: seed 3 alone). Numbers the engine computes with must fit float32; a log range
or a seed count has at most :data:`wdlab.textlists.MAX_RANGE` values, and a grid more than
:data:`MAX_CONFIGS` configurations is refused unless the caller raises that limit.

The section dataclasses below *are* the schema: each field carries its default, its checker,
what it allows and its command-line flag (declared with :func:`wdlab.config_keys.key`, where
the checkers are), so the TOML keys, the Python objects and the CLI flags (:func:`wdlab.cli`)
come from one place. Allowed values come from the registries (modes, optimizers, model kinds,
data sources, schedules, tasks). Reading a TOML file, loading the data a config names, sizing
its model and expanding its grid: :mod:`wdlab.pipelines.experiment`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import Field, asdict, dataclass, fields, replace
from typing import Any

from wdlab.config_keys import (
    MAX_SEED,
    Key,
    _bool,
    _clip,
    _device,
    _diagnostics,
    _dropout,
    _fraction,
    _group_wd,
    _hidden,
    _lrs,
    _modes,
    _optimizer,
    _schedule,
    _seconds,
    _select,
    _str_list,
    _str_or_none,
    _table,
    _wd_schedule,
    _wds,
    check_switches,
    integer,
    key,
    model_kind,
    one_of,
    ordered_pairs,
    seed_values,
)
from wdlab.data import SOURCES
from wdlab.data.sources import check_source
from wdlab.data.tables import check_data_keys
from wdlab.decay import DEFAULT_RULE, EVERYTHING, PRESETS, DecayRule
from wdlab.models import ACTIVATIONS, MODEL_KINDS, factory_kind, unread_options
from wdlab.optimizers import OPTIMIZERS, check_optimizer_options
from wdlab.tasks import TASKS
from wdlab.trainer.plan import PRECISIONS, check_checkpoint
from wdlab.trainer.schedules import SCHEDULES
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT
from wdlab.warn import warn_user

#: The rules ``decay.rule`` (``--rule``) names: wdlab's default, everything, and the presets of
#: other libraries (:data:`wdlab.decay.PRESETS`: timm, nanoGPT, the Hugging Face Trainer).
RULES: dict[str, DecayRule] = {"default": DEFAULT_RULE, "everything": EVERYTHING, **PRESETS}
MAX_CONFIGS = 10_000  # configurations in a grid, unless the caller raises it (--max-configs)
# Keys added after wdlab 0.2: left out of a study's identity while at their defaults, so a
# study made before keeps its hash (and its default folder) and resumes.
LATER_KEYS = {
    "data": ("train_size", "categorical"),
    "model": ("batchnorm", "dropout"),
    "train": (
        *("select", "early_stopping", "diagnostics", "steps", "clip_grad_norm", "patience"),
        *("prune", "prune_eta", "prune_rung"),
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
NOT_IDENTITY = {"model": ("factory_timeout",), "train": ("keep", "checkpoint")}
#: What a sweep keeps of the trained weights in its study (``train.keep``, ``--keep``); the
#: first two keep some.
KEEP = ("best", "all", "none")


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
        check_source,
        "--data",
        f"{', '.join(SOURCES)}, a .csv/.parquet path, or file.py:make_data (a function "
        "returning the splits: Datasets, DataLoaders or (X, y) tensors)",
    )
    seed: int = key(
        0, integer(0, MAX_SEED), "--data-seed", "seed of the data draw and split", "int"
    )
    target: str | None = key(None, _str_or_none, "--target", "target column of a data file")
    features: list[str] | None = key(
        None, _str_list, "--features", "feature columns of a data file, comma-separated"
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


@dataclass(frozen=True)
class ModelConfig(_Section):
    """[model]: which model (a kind, or a ``module:function`` factory) and its sizes."""

    kind: str = key(
        "mlp",
        model_kind,
        "--model",
        f"{', '.join(k for k in MODEL_KINDS if k != 'custom')}, file.py:factory or module:factory",
    )
    hidden: list[int] = key([64], _hidden, "--hidden", "hidden sizes, e.g. 64,32")
    activation: str = key(
        "relu", one_of(ACTIVATIONS), "--activation", "activation", choices=tuple(ACTIVATIONS)
    )
    layernorm: bool = key(False, _bool, "--layernorm", "LayerNorm after hidden layers", "flag")
    factory: str | None = key(None, _str_or_none)
    batchnorm: bool = key(False, _bool, "--batchnorm", "BatchNorm after convolutions (cnn)", "flag")
    dropout: float = key(0.0, _dropout, "--dropout", "dropout before the head (cnn)")
    factory_timeout: float = key(
        DEFAULT_FACTORY_TIMEOUT,
        _seconds,
        "--factory-timeout",
        "stop a model factory that has not returned after S seconds",
    )


@dataclass(frozen=True)
class TrainConfig(_Section):
    """[train]: optimizer, learning rates, schedule, epochs, batches, seeds, device."""

    optimizer: str = key("sgd", _optimizer, "--optimizer", ", ".join(OPTIMIZERS))
    lr: list[float] = key([0.1], _lrs, "--lr", "learning rate(s): 0.1 or 1e-3,3e-3")
    options: dict = key({}, _table)
    schedule: str = key(
        "constant", _schedule, "--schedule", ", ".join(s.syntax for s in SCHEDULES.values())
    )
    epochs: int = key(100, integer(1), "--epochs", "epochs", "int")
    batch_size: int = key(0, integer(0), "--batch-size", "0: full batch (default)", "int")
    eval_every: int = key(10, integer(1), "--eval-every", "evaluate every N epochs", "int")
    seeds: list[int] = key(
        [0], seed_values, "--seeds", "seeds: a count like 3, or a list like 0,1,2 (default: seed 0)"
    )
    device: str | None = key(
        None, _device, "--device", "cpu, cuda, cuda:N or mps (default: cuda if present)"
    )
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
    diagnostics: list[str] = key(
        [],
        _diagnostics,
        "--diagnostics",
        "opt-in recordings per layer, comma-separated (e.g. rotation)",
    )

    steps: int = key(
        0,
        integer(0),
        "--steps",
        "train N optimizer steps in all instead of --epochs (0: use --epochs)",
        "int",
    )
    clip_grad_norm: float | None = key(
        None,
        _clip,
        "--clip-grad-norm",
        "clip each configuration's gradient to this total norm, as clip_grad_norm_ does alone",
        "float",
    )
    keep: str = key(
        "best",
        one_of(KEEP),
        "--keep",
        "trained weights kept in the study: best (the chosen configurations), all, or none",
        choices=KEEP,
    )
    patience: int = key(
        10, integer(1), "--patience", "early stopping: evaluations without a new best", "int"
    )
    prune: bool = key(
        False, _bool, "--prune", "successive halving: stop the losing cells at each rung", "flag"
    )
    prune_eta: int = key(
        3, integer(2), "--prune-eta", "successive halving: keep the best 1/ETA at each rung", "int"
    )
    prune_rung: int = key(
        0, integer(0), "--prune-rung", "successive halving: the first rung (0: chosen)", "int"
    )
    checkpoint: Any = key(
        "auto", check_checkpoint, "--checkpoint", "save training state: every N epochs, auto, off"
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
            "steps": self.steps or None,
            "clip_grad_norm": self.clip_grad_norm,
            "keep_params": self.keep in KEEP[:2],  # best, all
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class DecayConfig(_Section):
    """[decay]: the modes and weight decays of the grid, and which tensors decay."""

    modes: list[str] = key(["coupled"], _modes, "--mode", "decay mode(s): coupled or l2,decoupled")
    weight_decay: list[float] = key(
        [0.0], _wds, "--wd", "weight decay(s): 0,1e-4,1e-3 or LO..HI:N (log-spaced)"
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

    def train_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`wdlab.trainer.train` this section sets (besides the grid):
        the decay rule, the weight-decay schedule and the tensor groups' own weight decays
        (:mod:`wdlab.trainer.decays` says how they combine with each row's weight decay)."""
        return {
            "rule": self.decay_rule(),
            "wd_schedule": self.wd_schedule,
            "group_wd": dict(self.group_wd),
        }


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
        out = self.to_dict()
        for section, names in LATER_KEYS.items():
            for f, _ in section_keys(section):
                if f.name in names and out[section][f.name] == f.default_factory():
                    del out[section][f.name]
        for section, names in NOT_IDENTITY.items():
            for name in names:
                del out[section][name]
        if "group_wd" in out["decay"]:
            out["decay"]["group_wd"] = ordered_pairs(out["decay"]["group_wd"])
        return out


def validate(raw: Mapping[str, Any] | Experiment) -> Experiment:
    """Check every section and key; return the typed config with defaults filled and values
    normalised. Raises ``ValueError`` naming the key and what it allows."""
    if isinstance(raw, Experiment):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise ValueError("an experiment config must be a table")
    if unknown := sorted(set(raw) - set(SECTIONS)):  # a key at the top names its section
        home = [s for s in SECTIONS for f, _ in section_keys(s) if f.name == unknown[0]][:1]
        what = f"unknown section [{unknown[0]}]" if not home else f"{unknown[0]} is a key of"
        where = f" [{home[0]}], not a section" if home else ""
        raise ValueError(f"{what}{where}; valid: {', '.join(SECTIONS)}")
    sections: dict[str, dict[str, Any]] = {}
    defaults: dict[str, dict[str, Any]] = {}
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
            default = f.default_factory()
            defaults.setdefault(section, {})[f.name] = f.default_factory()
            value = copy.deepcopy(given[f.name]) if f.name in given else default
            optional = value is None and default is None  # None: not set, where it may be
            values[f.name] = value if optional else k.check(value, f"{section}.{f.name}")
        sections[section] = values
    model = sections["model"]
    said = factory_kind(model, "kind" in (raw.get("model") or {}))
    for line in said + unread_options(model["kind"], model, defaults["model"], "model."):
        warn_user(line)
    check_data_keys(sections["data"])
    train = sections["train"]
    check_switches(train, defaults["train"])
    train["options"] = check_optimizer_options(train["optimizer"], train["options"], train["lr"][0])
    return Experiment(**{name: SECTIONS[name](**v) for name, v in sections.items()})


def merge(config: Experiment | Mapping[str, Any], overrides: Mapping[str, Any]) -> Experiment:
    """Apply ``{"section.key": value}`` overrides (CLI flags) and validate again."""
    raw = config.to_dict() if isinstance(config, Experiment) else copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        raw.setdefault(section, {})[name] = value
    return validate(raw)
