"""Data sets → train / validation / test tensors plus the task kind.

Every draw takes an explicit seed; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

TASKS = ("binary", "multiclass", "regression")


@dataclass
class Dataset:
    """Splits as float32 tensors. ``y`` is float for binary/regression, long for multiclass.

    ``X_val``/``y_val`` may be ``None`` (the article's experiment has only train and test);
    ``meta`` carries facts about the data worth storing (e.g. the Bayes-optimal penalty).
    """

    name: str
    task: str
    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    X_val: Tensor | None = None
    y_val: Tensor | None = None
    n_classes: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def in_dim(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    @property
    def out_dim(self) -> int:
        """Model outputs: 1 for binary and regression, the class count for multiclass."""
        return self.n_classes if self.task == "multiclass" else 1

    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The available splits by name: train, val (if any), test."""
        out = {"train": (self.X_train, self.y_train)}
        if self.X_val is not None and self.y_val is not None:
            out["val"] = (self.X_val, self.y_val)
        out["test"] = (self.X_test, self.y_test)
        return out

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        moved = {
            k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()
        }
        return Dataset(**moved)


def shuffle_split(n: int, test_size: float = 0.33, random_state: int = 42) -> tuple[Tensor, Tensor]:
    """(train, test) indices exactly as ``sklearn.model_selection.train_test_split`` draws them.

    sklearn's ShuffleSplit takes ``RandomState(random_state).permutation(n)``, the first
    ``ceil(test_size·n)`` for test and the rest for train. Doing the same here keeps scikit-learn
    (and SciPy, ~60 MiB of resident memory) out of the demo; a test checks the equality.
    """
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(random_state).permutation(n)
    return torch.from_numpy(perm[n_test:]), torch.from_numpy(perm[:n_test])


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


# ---------------------------------------------------------------------------------------------
# More sources. Each returns a Dataset with train / val / test splits.

SOURCES = (
    "seed-noise",
    "teacher",
    "teacher-classification",
    "d2l",
    "digits",
    "breast_cancer",
    "wine",
    "diabetes",
)  # and a path to a .csv / .parquet file
SKLEARN_SETS = ("digits", "breast_cancer", "wine", "diabetes")


def infer_task(y: np.ndarray) -> str:
    """binary, multiclass or regression from the target's values ("single": one value only).

    Non-integer floats, or more than 20 distinct integer-valued floats, are regression;
    everything else (integers, strings, booleans) is classification.
    """
    values = np.unique(y)
    if len(values) < 2:
        return "single"
    if y.dtype.kind in "fc" and (len(values) > 20 or not np.all(np.mod(values, 1) == 0)):
        return "regression"
    return "binary" if len(values) == 2 else "multiclass"


def split_indices(
    n: int, y: np.ndarray | None, val_size: float, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One seeded train / val / test split, stratified on ``y`` when it is given."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    rest, test = train_test_split(
        idx, test_size=test_size, random_state=seed, stratify=None if y is None else y
    )
    rel_val = val_size / (1.0 - test_size)
    train, val = train_test_split(
        rest, test_size=rel_val, random_state=seed + 1, stratify=None if y is None else y[rest]
    )
    return train, val, test


def from_arrays(
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    task: str | None = None,
    name: str = "arrays",
    val_size: float = 0.2,
    test_size: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    meta: dict | None = None,
) -> Dataset:
    """A Dataset from a feature matrix and a target (tensors or numpy arrays).

    The split is seeded and stratified for classification; standardisation (and, for
    regression, the target's centring and scaling) is fitted on the training split only.
    Class labels of any kind are mapped to 0..C−1.
    """
    X = np.asarray(X.cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
    y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be 2-D with one row per target; got X {X.shape}, y {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X has missing or infinite values; impute them first")
    task = task or infer_task(y)
    if task == "single":
        raise ValueError(f"the target has a single value ({np.unique(y)[0]!r}): nothing to learn")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    classes = None
    if task != "regression":
        classes, y_idx = np.unique(y, return_inverse=True)
        if task == "binary" and len(classes) != 2:
            raise ValueError(f"task binary needs 2 classes, the target has {len(classes)}")
        if len(classes) < 2:
            raise ValueError("the target has a single class: nothing to learn")
        counts = np.bincount(y_idx)
        if counts.min() < 3:
            rare = classes[counts.argmin()]
            rare = rare.item() if hasattr(rare, "item") else rare
            raise ValueError(
                f"class {rare!r} has {counts.min()} rows; each class needs >= 3 "
                "to appear in train, validation and test"
            )
        train, val, test = split_indices(len(y), y_idx, val_size, test_size, seed)
        y_num = y_idx
    else:
        y_num = y.astype(np.float64)
        if not np.isfinite(y_num).all():
            raise ValueError("the target has missing or infinite values")
        train, val, test = split_indices(len(y), None, val_size, test_size, seed)
    info = dict(meta or {})
    if standardize:
        mu, sd = X[train].mean(0), X[train].std(0)
        sd[sd == 0] = 1.0
        X = (X - mu) / sd
        info["standardized"] = "features, fitted on the training split"
    if task == "regression" and standardize:
        ym, ys = y_num[train].mean(), y_num[train].std() or 1.0
        y_num = (y_num - ym) / ys
        info["target_scaling"] = {"mean": float(ym), "std": float(ys)}
    as_y = (
        (lambda a: torch.from_numpy(a).long())
        if task == "multiclass"
        else (lambda a: torch.from_numpy(np.asarray(a, np.float64)).float())
    )
    Xt = torch.from_numpy(X).float()
    if classes is not None:
        info["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    return Dataset(
        name=name,
        task=task,
        X_train=Xt[train],
        y_train=as_y(y_num[train]),
        X_val=Xt[val],
        y_val=as_y(y_num[val]),
        X_test=Xt[test],
        y_test=as_y(y_num[test]),
        n_classes=len(classes) if classes is not None else 1,
        meta=info | {"n_train": len(train), "n_val": len(val), "n_test": len(test)},
    )


def sklearn_dataset(name: str, seed: int = 0, **kw: object) -> Dataset:
    """digits, breast_cancer, wine or diabetes, from scikit-learn's bundled files."""
    from sklearn import datasets

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
    """A logistic teacher: only ``informative`` features carry signal; labels flipped with
    probability ``label_noise``."""
    _check_sizes(n=n, d=d, n_test=n_test)
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
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")


def read_table(
    path: str,
    target: str,
    features: list[str] | None = None,
    impute: str | None = None,
    task: str | None = None,
    seed: int = 0,
) -> Dataset:
    """A CSV or Parquet file: ``target`` column, optional ``features`` (default: the rest).

    Numeric columns are used as they are; non-numeric feature columns are one-hot encoded.
    Missing values are refused (the message names the columns and counts the rows) unless
    ``impute`` is ``mean`` or ``median`` (fitted on all rows of the numeric column; rows with a
    missing target are always refused).
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise ValueError(f"data file not found: {path}")
    try:
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
        elif p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise ValueError(f"data file must be .csv or .parquet, got {p.name!r}")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"cannot read {p.name}: {exc}") from None
    if target not in df.columns:
        raise ValueError(
            f"target column {target!r} not in {p.name}; columns: {', '.join(map(str, df.columns))}"
        )
    features = features or [c for c in df.columns if c != target]
    missing_cols = [c for c in features if c not in df.columns]
    if missing_cols:
        raise ValueError(f"feature columns not in {p.name}: {', '.join(missing_cols)}")
    if target in features:
        raise ValueError(f"target column {target!r} is also listed as a feature")
    if df[target].isna().any():
        raise ValueError(
            f"target column {target!r} has {int(df[target].isna().sum())} missing "
            "rows; drop them first"
        )
    X = df[features]
    na = X.isna()
    if na.any().any():
        cols = [f"{c} ({int(na[c].sum())})" for c in features if na[c].any()]
        rows = int(na.any(axis=1).sum())
        if impute not in ("mean", "median"):
            raise ValueError(
                f"missing values in {rows} rows, columns: {', '.join(cols)}; "
                "pass --impute mean|median or clean the file"
            )
        non_num = [c for c in features if na[c].any() and not pd.api.types.is_numeric_dtype(X[c])]
        if non_num:
            raise ValueError(f"cannot impute non-numeric columns: {', '.join(non_num)}")
        X = X.fillna(getattr(X.select_dtypes("number"), impute)())
    categorical = [c for c in features if not pd.api.types.is_numeric_dtype(X[c])]
    if categorical:
        X = pd.get_dummies(X, columns=categorical, dtype=float)
    meta = {
        "file": p.name,
        "target": target,
        "features": list(map(str, X.columns)),
        "one_hot": categorical,
        "impute": impute,
    }
    return from_arrays(
        X.to_numpy(np.float64), df[target].to_numpy(), task=task, name=p.name, seed=seed, meta=meta
    )


def load(name: str, *, seed: int = 0, **options: object) -> Dataset:
    """Any data source by name (see ``SOURCES``), or a .csv / .parquet path."""
    if name == "seed-noise":
        return seed_noise(int(options.pop("dim", 1000)), seed, **options)
    if name == "teacher":
        return teacher_regression(seed=seed, **options)
    if name == "teacher-classification":
        return teacher_classification(seed=seed, **options)
    if name == "d2l":
        return d2l(seed=seed, **options)
    if name in SKLEARN_SETS:
        return sklearn_dataset(name, seed=seed, **options)
    if name.lower().endswith((".csv", ".parquet", ".pq")):
        return read_table(name, seed=seed, **options)
    raise ValueError(f"unknown data {name!r}; valid: {', '.join(SOURCES)}, or a .csv/.parquet path")
