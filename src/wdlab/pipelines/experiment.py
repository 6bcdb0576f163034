"""An experiment config made concrete: its TOML file read (a regular file only), the data its
``[data]`` section names loaded, the model sized to them, and its grid of configurations (mode
× weight decay × lr × seed, with the wd = 0 reference; whether a file and flags name one)."""

from __future__ import annotations

import itertools
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wdlab.config import SWEEP_GRID, DataConfig, Experiment, ModelConfig, validate
from wdlab.config_keys import switched_off
from wdlab.data import (
    SOURCES,
    Dataset,
    from_function,
    is_data_function,
    is_table_path,
    load,
    read_table,
)
from wdlab.data.arrays import subsample_train
from wdlab.decay import REFERENCE_MODE, get_mode
from wdlab.models import ModelSpec, kind_options
from wdlab.pipelines.userdata import with_classes
from wdlab.records import RunConfig
from wdlab.warn import warn_user


def load_config(path: str | Path) -> Experiment:
    """Read and validate a TOML experiment file."""
    return validate(read_config(path))


def read_config(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML experiment file as written (not validated: the keys it gives, less
    those of a switch it turns off); a regular file only (a pipe or a device is refused at
    once, never waited on), UTF-8 with or without a byte-order mark."""
    p = Path(path)
    try:
        text = _read_regular(p).decode("utf-8-sig")  # a BOM (Windows editors) is no key
        return switched_off(tomllib.loads(text))
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


def load_data(
    data: DataConfig,
    batch_size: int | None = None,
    progress: bool = False,
    *,
    model: ModelConfig | None = None,
) -> Any:
    """The data a config's ``[data]`` section describes: a Dataset (its training split subsampled to
    ``train_size`` rows when that is set), or, for ``file.py:make_data``, its splits held
    or streamed (:func:`wdlab.data.from_function`; ``batch_size`` for bare Datasets,
    ``progress`` while a split is read). Streamed classes that are not declared are found from
    ``model`` as :func:`wdlab.sweep` finds them (:func:`wdlab.pipelines.userdata.with_classes`;
    ``None``: counted)."""
    if is_data_function(data.source):
        if data.train_size:
            raise ValueError(
                "data.train_size (--train-size) applies to built-in sources and tables, not to "
                f"a data function ({data.source}): subsample in it"
            )
        _unread_by_a_function(data)
        ds = from_function(
            data.source, seed=data.seed, batch_size=batch_size, progress=progress,
            task=data.task, count_classes=model is None,
        )  # fmt: skip
        if model is None:
            return ds

        def spec(_model: object, d: Any, _timeout: object) -> tuple[ModelSpec, str]:
            return model_spec(model, d), model.factory or model.kind

        return with_classes(ds, model.factory or model.kind, model.factory_timeout, spec)
    ds = _load(data)
    if data.train_size:
        ds = subsample_train(ds, data.train_size, data.seed, "data.train_size")
    return ds


#: The [data] keys that build splits from a built-in source or a table; a data function
#: returns its own (``train_size`` is refused there: its runs would differ from what it says).
SPLIT_KEYS = ("target", "features", "impute", "categorical", "val_size", "test_size", "options")


def _unread_by_a_function(data: DataConfig) -> None:
    """One warning naming the [data] keys set that a ``file.py:make_data`` does not read."""
    default = DataConfig()
    unread = [f"data.{k}" for k in SPLIT_KEYS if getattr(data, k) != getattr(default, k)]
    if unread:
        warn_user(
            f"{', '.join(unread)}: not read for {data.source} (its function returns the "
            "splits; without a val split, 20% of the training rows are held out): ignored"
        )


def _load(data: DataConfig) -> Dataset:
    if is_table_path(data.source):
        if data.options:  # (it was taken, ignored, into the study's identity)
            raise ValueError(
                f"data.options: a CSV or Parquet file takes none, got {sorted(data.options)}; "
                "its settings are data.target, features, categorical, impute and the sizes"
            )
        return read_table(
            data.source,
            data.target,
            data.features,
            data.impute,
            data.task,
            seed=data.seed,
            categorical=data.categorical,
            val_size=data.val_size,
            test_size=data.test_size,
        )
    options = dict(data.options)
    source = SOURCES.get(data.source)
    unknown = [k for k in options if source is not None and k not in source.options]
    if unknown:  # (it was Python's "seed_noise() got an unexpected keyword argument")
        valid = ", ".join(source.options) or "none"  # type: ignore[union-attr]
        raise ValueError(
            f"data.options: {data.source} has no option {unknown[0]!r}; valid: {valid}"
        )
    if source is not None and source.split_sizes:
        options.setdefault("val_size", data.val_size)
        options.setdefault("test_size", data.test_size)
    try:
        ds = load(data.source, seed=data.seed, **options)
    except TypeError as exc:
        raise ValueError(f"data.options: {exc}") from None
    except ValueError as exc:  # "dim must be >= 4": the option named as the file names it
        if not str(exc).startswith(tuple(f"{k} " for k in data.options)):
            raise
        raise ValueError(f"data.options.{exc}") from None
    if data.task and data.task != ds.task:
        raise ValueError(f"data.task: {data.source} is a {ds.task} data set, not {data.task}")
    return ds


def model_spec(model: ModelConfig, ds: Dataset) -> ModelSpec:
    """The ModelSpec a config's ``[model]`` section describes, sized to the data (``in_shape``
    for signals and images; flat rows leave it empty, and a CNN reads them as one-channel
    signals)."""
    several = getattr(getattr(ds, "layout", None), "kind", "tensor") != "tensor"
    if several and model.kind == "custom":  # a model with several inputs: no sizes
        return ModelSpec(
            model.kind, out_dim=ds.out_dim, factory=model.factory,
            factory_timeout=model.factory_timeout,
        )  # fmt: skip
    return ModelSpec(
        model.kind,
        in_dim=ds.in_dim,
        out_dim=ds.out_dim,
        factory=model.factory,
        in_shape=ds.in_shape if len(ds.in_shape) > 1 else (),
        factory_timeout=model.factory_timeout,
        **kind_options(model.kind, model),
    )


def grid_size(config: Experiment) -> int:
    """How many configurations :func:`grid` makes, counted without making them."""
    t, dec = config.train, config.decay
    wds = set(dec.weight_decay)
    per = sum(len(wds) if get_mode(m).decays else 1 for m in set(dec.modes))
    if not (0.0 in wds or any(not get_mode(m).decays for m in dec.modes)):
        per += 1
    return per * len(set(t.lr)) * len(set(t.seeds))


def grid(config: Experiment) -> list[RunConfig]:
    """mode × weight decay × lr × seed, one RunConfig each.

    Every (lr, seed) also gets the wd = 0 reference (mode ``none``) unless the grid already
    has a zero-decay run for it: a weight decay is only worth choosing against no decay.
    """
    t, dec = config.train, config.decay
    if any(dec.weight_decay) and not any(get_mode(m).decays for m in dec.modes):
        given = [f"{w:g}" for w in dec.weight_decay if w]
        these = f"decays {', '.join(given)} are" if len(given) > 1 else f"decay {given[0]} is"
        warn_user(
            f"mode {', '.join(dec.modes)} trains without weight decay: weight {these} not "
            "swept, only wd = 0 trains; add a mode that decays (--mode, modes=)"
        )
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


def grid_keys_named(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """The keys of the grid (:data:`wdlab.config.SWEEP_GRID`) that a raw config or its
    overrides name."""
    named = []
    for dotted in SWEEP_GRID:
        section, _, name = dotted.partition(".")
        table = raw.get(section)
        if overrides.get(dotted) is not None or (isinstance(table, Mapping) and name in table):
            named.append(dotted)
    return named
