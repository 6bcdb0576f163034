"""Built-in data sources, each one registry entry: nothing is downloaded, every draw is seeded.

Adding a source is one :class:`Source` entry in :data:`SOURCES` (and its test).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wdlab.data.arrays import from_arrays, shuffle_split, split_indices
from wdlab.data.dataset import Dataset
from wdlab.data.tables import is_table_path, read_table
from wdlab.extras import require

SKLEARN_SETS = ("digits", "breast_cancer", "wine", "diabetes")


def seed_noise_tensors(dim: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The article's X and y, drawn exactly as it draws them from torch's global RNG.

    ``torch.manual_seed(seed)`` then ``X = torch.randn((dim, dim), dtype=float64)``; y is
    ``dim//2`` zeros then ``dim - dim//2`` ones. The global RNG is left as the article leaves
    it, so a model built right after gets the article's initial weights.
    """
    torch.manual_seed(seed)
    X = torch.randn((dim, dim), dtype=torch.float64)
    y = torch.cat(
        (
            torch.zeros(dim // 2, dtype=torch.float64),
            torch.ones(dim - dim // 2, dtype=torch.float64),
        )
    )
    return X, y


def seed_noise(dim: int = 1000, seed: int = 0, test_size: float = 0.33) -> Dataset:
    """The article's data: a dim×dim N(0,1) matrix, half-0/half-1 labels, a 67/33 split.

    The split is ``train_test_split(test_size=0.33, random_state=42)`` as in the article; the
    labels are random with respect to X, so nothing can be learnt, only memorised.
    """
    if dim < 4:
        raise ValueError(f"dim must be >= 4, got {dim}")
    with torch.random.fork_rng(devices=[]):
        X, y = seed_noise_tensors(dim, seed)
    train, test = shuffle_split(dim, test_size, 42)
    return Dataset(
        name="seed-noise",
        task="binary",
        X_train=X[train].float(),
        y_train=y[train].float(),
        X_test=X[test].float(),
        y_test=y[test].float(),
        meta={"dim": dim, "seed": seed, "labels": "random (nothing to learn)"},
    )


def sklearn_dataset(name: str, seed: int = 0, **kw: object) -> Dataset:
    """digits, breast_cancer, wine or diabetes, from scikit-learn's bundled files."""
    datasets = require("sklearn.datasets", f"data set {name!r}")
    if name not in SKLEARN_SETS:
        raise ValueError(
            f"unknown scikit-learn data set {name!r}; valid: {', '.join(SKLEARN_SETS)}"
        )
    bunch = getattr(datasets, f"load_{name}")()
    task = "regression" if name == "diabetes" else None
    return from_arrays(bunch.data, bunch.target, task=task, name=name, seed=seed, **kw)


def _teacher_splits(name: str, task: str, X: Tensor, y: Tensor, n: int, meta: dict) -> Dataset:
    """The first n rows split 3:1 into train and validation; the rest are the test rows."""
    n_tr = n - max(1, n // 4)
    f = lambda t: t.float()  # noqa: E731
    return Dataset(
        name,
        task,
        f(X[:n_tr]),
        f(y[:n_tr]),
        f(X[n:]),
        f(y[n:]),
        f(X[n_tr:n]),
        f(y[n_tr:n]),
        meta=meta,
    )


def teacher_regression(
    n: int = 200,
    d: int = 50,
    noise: float = 1.0,
    sigma_w: float = 1.0,
    seed: int = 0,
    n_test: int = 1000,
) -> Dataset:
    """y = X·w* + ε with w* ~ N(0, σ_w²), ε ~ N(0, σ²); n rows split train/val, n_test held out.

    The Bayes-optimal ridge penalty for ‖y − Xw‖² + α‖w‖² is α* = σ²/σ_w² (in the raw,
    unstandardised units; recorded in ``meta``). Features are N(0, 1) and not rescaled.
    """
    _check_sizes(n=n, d=d, n_test=n_test)
    _check_finite(noise=noise, sigma_w=sigma_w)
    if noise < 0 or sigma_w <= 0:
        raise ValueError("noise must be >= 0 and sigma_w > 0")
    g = torch.Generator().manual_seed(seed)
    w = sigma_w * torch.randn(d, generator=g, dtype=torch.float64)
    X = torch.randn(n + n_test, d, generator=g, dtype=torch.float64)
    y = X @ w + noise * torch.randn(n + n_test, generator=g, dtype=torch.float64)
    meta = {
        "n": n,
        "d": d,
        "noise": noise,
        "sigma_w": sigma_w,
        "seed": seed,
        "alpha_star": noise**2 / sigma_w**2,
        "alpha_star_note": "Bayes-optimal alpha for ||y - Xw||^2 + alpha ||w||^2",
    }
    return _teacher_splits("teacher", "regression", X, y, n, meta)


def teacher_classification(
    n: int = 400,
    d: int = 20,
    informative: int = 5,
    label_noise: float = 0.1,
    seed: int = 0,
    n_test: int = 1000,
) -> Dataset:
    """A logistic teacher: only ``informative`` features carry signal.

    Labels are flipped with probability ``label_noise``."""
    _check_sizes(n=n, d=d, n_test=n_test)
    _check_finite(label_noise=label_noise)
    if not 1 <= informative <= d:
        raise ValueError(f"informative must be in 1..d={d}, got {informative}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(d, dtype=torch.float64)
    w[:informative] = 2.0 * torch.randn(informative, generator=g, dtype=torch.float64)
    X = torch.randn(n + n_test, d, generator=g, dtype=torch.float64)
    p = torch.sigmoid(X @ w)
    y = (torch.rand(n + n_test, generator=g, dtype=torch.float64) < p).double()
    flip = torch.rand(n + n_test, generator=g, dtype=torch.float64) < label_noise
    y = torch.where(flip, 1 - y, y)
    meta = {"n": n, "d": d, "informative": informative, "label_noise": label_noise, "seed": seed}
    return _teacher_splits("teacher-classification", "binary", X, y, n, meta)


def d2l(
    seed: int = 0, n_train: int = 20, n_val: int = 100, n_test: int = 100, d: int = 200
) -> Dataset:
    """The Dive into Deep Learning weight-decay setting: y = 0.05 + Σ 0.01·x_i + N(0, 0.01²).

    d = 200 features and only 20 training rows, so an unregularised linear model overfits and
    decay visibly helps. Validation and test rows are drawn from the same distribution.
    """
    _check_sizes(n=n_train, d=d, n_test=n_test)
    g = torch.Generator().manual_seed(seed)
    total = n_train + n_val + n_test
    X = torch.randn(total, d, generator=g)
    y = 0.05 + 0.01 * X.sum(1) + 0.01 * torch.randn(total, generator=g)
    a, b = n_train, n_train + n_val
    return Dataset(
        "d2l",
        "regression",
        X[:a],
        y[:a],
        X[b:],
        y[b:],
        X[a:b],
        y[a:b],
        meta={
            "d": d,
            "n_train": n_train,
            "seed": seed,
            "formula": "y = 0.05 + sum(0.01 x_i) + N(0, 0.01^2)",
        },
    )


def _check_sizes(**sizes: int) -> None:
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")


def _check_finite(**values: float) -> None:
    """Each option a finite number (NaN passes every comparison test silently)."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{k} must be a finite number, got {v!r}")


def mnist1d(seed: int = 0, num_samples: int = 5000, val_size: float = 0.2) -> Dataset:
    """MNIST-1D (Greydanus, 2020): 10 classes of 1-D signals of length 40.

    Made with the ``mnist1d`` package's generator (never its download). ``num_samples`` are
    split 80/20 into train and test by the generator; ``val_size`` of the training rows
    (stratified, seeded) become the validation split. Inputs are (1, 40) signals."""
    _check_sizes(num_samples=num_samples)
    if num_samples < 100:
        raise ValueError(
            f"num_samples must be >= 100 (10 per class and a split), got {num_samples}"
        )
    data_mod = require("mnist1d.data", "data set 'mnist1d'")
    args = data_mod.get_dataset_args()
    args.num_samples, args.seed = int(num_samples), int(seed)
    state_np, state_py = np.random.get_state(), random.getstate()
    try:  # the generator reseeds Python's and NumPy's global RNGs: leave them as they were
        raw = data_mod.make_dataset(args)
    finally:
        np.random.set_state(state_np)
        random.setstate(state_py)
    x, y = raw["x"], raw["y"]
    split = require("sklearn.model_selection", "data set 'mnist1d'").train_test_split
    train, val = split(np.arange(len(y)), test_size=val_size, random_state=seed, stratify=y)
    signal = lambda a: torch.from_numpy(np.asarray(a, np.float64)).float().unsqueeze(1)  # noqa: E731
    label = lambda a: torch.from_numpy(np.asarray(a)).long()  # noqa: E731
    return Dataset(
        name="mnist1d",
        task="multiclass",
        X_train=signal(x[train]),
        y_train=label(y[train]),
        X_val=signal(x[val]),
        y_val=label(y[val]),
        X_test=signal(raw["x_test"]),
        y_test=label(raw["y_test"]),
        n_classes=10,
        meta={
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(raw["y_test"]),
            "generator": "mnist1d.data.make_dataset (no download)",
            "num_samples": num_samples,
            "seed": seed,
        },
    )


def digits_images(seed: int = 0, val_size: float = 0.2, test_size: float = 0.2) -> Dataset:
    """scikit-learn's digits as 1×8×8 images with values in [0, 1] (pixel / 16).

    Split 60/20/20, stratified and seeded like the other scikit-learn sets."""
    datasets = require("sklearn.datasets", "data set 'digits-images'")
    bunch = datasets.load_digits()
    X = torch.from_numpy(bunch.data / 16.0).float().view(-1, 1, 8, 8)
    y = torch.from_numpy(bunch.target).long()
    train, val, test = split_indices(len(y), bunch.target, val_size, test_size, seed)
    return Dataset(
        name="digits-images",
        task="multiclass",
        X_train=X[train],
        y_train=y[train],
        X_val=X[val],
        y_val=y[val],
        X_test=X[test],
        y_test=y[test],
        n_classes=10,
        meta={
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "scaled": "/16",
            "seed": seed,
        },
    )


def _whole(name: str, value: object) -> int:
    """``value`` as an int if it is a whole number (``1000`` or ``1000.0``), else one line."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return value


@dataclass(frozen=True)
class Source:
    """One data source: its name, task, a one-line description and how to load it.

    ``load`` takes ``seed`` and the source's ``options`` as keywords (``[data] options``);
    ``split_sizes``: it also takes ``val_size`` and ``test_size`` (sources split by wdlab, not
    by their generator).
    """

    name: str
    task: str
    help: str
    load: Callable[..., Dataset]
    split_sizes: bool = False
    options: tuple[str, ...] = ()


_SKLEARN_OPTIONS = ("val_size", "test_size", "standardize")  # from_arrays' keywords


def _sklearn(name: str) -> Callable[..., Dataset]:
    return lambda seed=0, **kw: sklearn_dataset(name, seed=seed, **kw)


_SOURCES = [
    Source(
        "seed-noise",
        "binary",
        "the article's data: N(0,1) dim x dim, random half-0/half-1 labels, its 67/33 split",
        lambda seed=0, dim=1000, **kw: seed_noise(_whole("dim", dim), seed, **kw),
        options=("dim", "test_size"),
    ),
    Source(
        "teacher",
        "regression",
        "y = X w* + noise; the Bayes-optimal ridge alpha is stored (options n, d, noise, ...)",
        teacher_regression,
        options=("n", "d", "noise", "sigma_w", "n_test"),
    ),
    Source(
        "teacher-classification",
        "binary",
        "a logistic teacher with a few informative features (options n, d, informative, ...)",
        teacher_classification,
        options=("n", "d", "informative", "label_noise", "n_test"),
    ),
    Source(
        "d2l",
        "regression",
        "Dive into Deep Learning's setting: d = 200, 20 rows",
        d2l,
        options=("n_train", "n_val", "n_test", "d"),
    ),
    Source(
        "digits",
        "multiclass",
        "scikit-learn's 8x8 digits, 10 classes",
        _sklearn("digits"),
        True,
        _SKLEARN_OPTIONS,
    ),
    Source(
        "breast_cancer",
        "binary",
        "scikit-learn's breast cancer set",
        _sklearn("breast_cancer"),
        True,
        _SKLEARN_OPTIONS,
    ),
    Source(
        "wine",
        "multiclass",
        "scikit-learn's wine set, 3 classes",
        _sklearn("wine"),
        True,
        _SKLEARN_OPTIONS,
    ),
    Source(
        "diabetes",
        "regression",
        "scikit-learn's diabetes set",
        _sklearn("diabetes"),
        True,
        _SKLEARN_OPTIONS,
    ),
    Source(
        "mnist1d",
        "multiclass",
        "MNIST-1D: 10 classes of length-40 signals, from the mnist1d generator (option "
        "num_samples)",
        mnist1d,
        options=("num_samples", "val_size"),
    ),
    Source(
        "digits-images",
        "multiclass",
        "scikit-learn's digits as 1x8x8 images",
        digits_images,
        True,
        ("val_size", "test_size"),
    ),
]

#: Every built-in data source by name (a .csv / .parquet path is a source too).
SOURCES: dict[str, Source] = {s.name: s for s in _SOURCES}


def check_source(v: object, key: str) -> object:
    """``data.source`` checked as a config key: a built-in source by name (or None); a path or
    ``file.py:FUNCTION`` is read (and any refusal made) where it is loaded."""
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    if v is None or v in SOURCES or ":" in v or "/" in v or "." in v:
        return v
    raise ValueError(f"{key}: {_unknown(v)}")  # (said without its key where it is loaded)


def _unknown(name: str) -> str:
    return (
        f"unknown data {name!r}; valid: {', '.join(SOURCES)}, a .csv/.parquet path or "
        "file.py:make_data"
    )


def load(name: str, *, seed: int = 0, **options: object) -> Dataset:
    """Any data source by name (see :data:`SOURCES`), or a .csv / .parquet path."""
    if name in SOURCES:
        return SOURCES[name].load(seed=seed, **options)
    if is_table_path(name):
        return read_table(name, seed=seed, **options)
    if name.endswith(".py"):  # a file, without the function that returns the splits
        raise ValueError(
            f"data {name!r} names a file; name the function that returns the splits too: "
            f"{name}:FUNCTION (e.g. {name}:make_data)"
        )
    raise ValueError(_unknown(name))
