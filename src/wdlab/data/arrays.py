"""Arrays to a Dataset: task inference, seeded (stratified) splits, imputation and
standardisation fitted on the training split, and the checks that inputs are numbers training
can use (finite, within float32)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wdlab.data.dataset import Dataset
from wdlab.extras import require
from wdlab.tasks import TASKS

#: How missing feature values may be filled (None: they are refused).
IMPUTERS = (None, "mean", "median")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # training computes in float32


def shuffle_split(n: int, test_size: float = 0.33, random_state: int = 42) -> tuple[Tensor, Tensor]:
    """(train, test) indices exactly as ``sklearn.model_selection.train_test_split`` draws them.

    sklearn's ShuffleSplit takes ``RandomState(random_state).permutation(n)``, the first
    ``ceil(test_size·n)`` for test and the rest for train. Doing the same here keeps scikit-learn
    (and SciPy, ~60 MiB of resident memory) out of the demo; a test checks the equality.
    """
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(random_state).permutation(n)
    return torch.from_numpy(perm[n_test:]), torch.from_numpy(perm[:n_test])


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
    """One seeded train / val / test split, stratified on ``y`` when it is given.

    Too few rows to hold each class in each split: one line saying so, not scikit-learn's."""
    train_test_split = require("sklearn.model_selection", "a stratified split").train_test_split

    idx = np.arange(n)
    try:
        rest, test = train_test_split(
            idx, test_size=test_size, random_state=seed, stratify=None if y is None else y
        )
        rel_val = val_size / (1.0 - test_size)
        train, val = train_test_split(
            rest, test_size=rel_val, random_state=seed + 1, stratify=None if y is None else y[rest]
        )
    except ValueError as exc:
        if y is None or "greater or equal to the number of classes" not in str(exc):
            raise
        k = len(np.unique(y))
        raise ValueError(
            f"{n} rows are too few to split into train, validation and test with each of the "
            f"{k} classes in each (val_size {val_size:g}, test_size {test_size:g} of the rows); "
            f"give more rows (at least {k} per split)"
        ) from None
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
    impute: str | None = None,
    columns: list[str] | None = None,
) -> Dataset:
    """A Dataset from a feature matrix and a target (tensors or numpy arrays).

    The split is seeded and stratified for classification; imputation (``impute``: ``mean`` or
    ``median`` fills missing values, NaN) and standardisation (and, for regression, the
    target's centring and scaling) are fitted on the training split only, so validation and
    test rows never move them. Class labels of any kind are mapped to 0..C−1. Infinite values,
    missing ones without ``impute``, and values beyond float32's range are refused, naming
    the ``columns`` (or their indices).
    """
    if impute not in IMPUTERS:
        raise ValueError(f"impute must be one of {', '.join(map(str, IMPUTERS))}, got {impute!r}")
    X = np.asarray(X.cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
    y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(
            f"X must be 2-D with one row per target; got X {tuple(X.shape)}, y {tuple(y.shape)}"
        )
    if len(y) < 5:
        raise ValueError(f"{len(y)} rows: at least 5 are needed for train, validation and test")
    check_finite(X, columns, missing_ok=impute is not None)
    check_float32(X, columns)
    task = task or infer_task(y)
    if task == "single":
        raise ValueError(
            f"the target has a single value ({plain(np.unique(y)[0])!r}): nothing to learn"
        )
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    classes, y_num, (train, val, test) = _split(y, task, val_size, test_size, seed)
    info = dict(meta or {}) | {"seed": seed}  # the split's, and a sweep's shuffle's
    if impute is not None:
        X = _impute(X, train, impute, columns)
        info["impute"] = f"{impute}, fitted on the training split"
    if standardize:
        X = _standardize(X, train, columns)
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
        info["classes"] = [plain(c) for c in classes]
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


def _split(
    y: np.ndarray, task: str, val_size: float, test_size: float, seed: int
) -> tuple[np.ndarray | None, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The classes, the encoded target, and the seeded split (stratified for classes)."""
    classes, y_num = _encode_target(y, task)
    stratify = y_num if classes is not None else None
    return classes, y_num, split_indices(len(y), stratify, val_size, test_size, seed)


def training_rows(
    y: np.ndarray, task: str | None, val_size: float = 0.2, test_size: float = 0.2, seed: int = 0
) -> np.ndarray | None:
    """The rows :func:`from_arrays` trains on for these arguments (what a table's one-hot
    categories are fitted on), or None where it would refuse the target (it says why)."""
    try:
        task = task or infer_task(y)
        return _split(y, task, val_size, test_size, seed)[2][0] if task in TASKS else None
    except ValueError:
        return None


def _impute(X: np.ndarray, train: np.ndarray, how: str, columns: list[str] | None) -> np.ndarray:
    """X with each column's missing values filled by the mean or median of its training rows."""
    missing = np.isnan(X)
    if not missing.any():
        return X
    fit = X[train]
    empty = np.flatnonzero(np.isnan(fit).all(0) & missing.any(0))
    if len(empty):
        names = _names(columns, X.shape[1])
        raise ValueError(
            "nothing to impute from: no values in the training rows of "
            + ", ".join(names[j] for j in empty[:10])
        )
    with warnings.catch_warnings():  # all-NaN columns without a missing value: left as they are
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nanmean(fit, 0) if how == "mean" else np.nanmedian(fit, 0)
    return np.where(missing, fill, X)


def _standardize(X: np.ndarray, train: np.ndarray, columns: list[str] | None) -> np.ndarray:
    """(X − μ)/σ with μ and σ of the training rows (σ = 1 where a column is constant there).

    Inputs are within float32's range, so the float64 moments cannot overflow; a validation
    or test row far outside the training rows' spread can still leave float32's range after
    scaling, and is refused rather than turned into an infinity.
    """
    mu, sd = X[train].mean(0), X[train].std(0)
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    big = ~(np.abs(Z) <= FLOAT32_MAX)
    if big.any():
        j = int(np.flatnonzero(big.any(0))[0])
        raise ValueError(
            f"column {_names(columns, X.shape[1])[j]}: standardised with the training rows' "
            f"mean and std ({mu[j]:.3g}, {sd[j]:.3g}), {int(big[:, j].sum())} rows leave "
            "float32's range; rescale that column yourself or leave it out"
        )
    return Z


def plain(v: object) -> object:
    """A NumPy scalar as the Python value it holds (messages say 1, not np.int64(1))."""
    return v.item() if isinstance(v, np.generic) else v


def _names(columns: list[str] | None, n: int) -> list[str]:
    return list(columns) if columns is not None else [str(i) for i in range(n)]


def check_finite(X: np.ndarray, columns: list[str] | None = None, missing_ok: bool = False) -> None:
    """A one-line ``ValueError`` when X has infinite values, or missing (NaN) ones unless
    ``missing_ok``, naming the columns (or their indices) and counting the rows; infinities
    cannot be imputed."""
    nan, inf = np.isnan(X), np.isinf(X)
    if not (inf.any() or (nan.any() and not missing_ok)):
        return
    bad = inf if inf.any() else nan
    names = _names(columns, X.shape[1])
    cols = [f"{names[j]} ({int(bad[:, j].sum())})" for j in np.flatnonzero(bad.any(0))]
    rows = int(bad.any(1).sum())
    if inf.any():
        raise ValueError(
            f"infinite values in {rows} rows, columns: {', '.join(cols[:10])}; imputing fills "
            "only missing values: replace or drop them"
        )
    raise ValueError(
        f"missing values in {rows} rows, columns: {', '.join(cols[:10])}; impute them first"
    )


def check_float32(X: np.ndarray, columns: list[str] | None = None) -> None:
    """A one-line ``ValueError`` when finite values of X lie beyond float32's range (about
    ±3.4e38), which training would turn into infinities: the columns, rows and a value."""
    big = np.abs(X) > FLOAT32_MAX  # NaN compares False
    if not big.any():
        return
    names = _names(columns, X.shape[1])
    cols = [f"{names[j]} ({int(big[:, j].sum())})" for j in np.flatnonzero(big.any(0))]
    i, j = np.argwhere(big)[0]
    raise ValueError(
        f"values beyond float32's range (±{FLOAT32_MAX:.3g}) in {int(big.any(1).sum())} rows, "
        f"columns: {', '.join(cols[:10])} (e.g. {X[i, j]:g} in row {i + 1}); training computes "
        "in float32: rescale them"
    )


def check_values(where: str, value: object, item: str | Callable[[int], str] = "item {}") -> None:
    """A one-line ``ValueError`` when a floating tensor or array in ``value`` (or in a tuple,
    list or dict of them) holds NaN, ±inf or values beyond float32's range; ``where`` names it
    (e.g. ``data['train'] inputs``), ``item`` the first bad row (a format string or a function
    of the row: a batch's rows are not the dataset's items). Integer tensors (classes, token
    ids) pass as they are."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_values(f"{where}[{k!r}]", v, item)
        return
    if isinstance(value, (tuple, list)):
        for k, v in enumerate(value):
            check_values(f"{where}[{k}]", v, item)
        return
    t = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.numel() == 0:
        return
    rows = t.reshape(len(t), -1) if t.dim() else t.reshape(1, 1)
    bad = ~torch.isfinite(rows).all(1)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(
            f"{where}: {int(bad.sum())} items hold NaN or infinite values (the first is "
            f"{_row(item, first)}); training cannot use them: drop or fill them first"
        )
    if t.dtype == torch.float64:
        big = (rows.abs() > FLOAT32_MAX).any(1)
        if big.any():
            first = int(big.nonzero()[0])
            raise ValueError(
                f"{where}: {int(big.sum())} items hold values beyond float32's range "
                f"(±{FLOAT32_MAX:.3g}; the first is {_row(item, first)}); training computes in "
                "float32: rescale them"
            )


def nonempty(split: str, y: Tensor) -> Tensor:
    """The targets of split ``split``; a ``ValueError`` line where it holds no example."""
    if len(y) == 0:
        raise ValueError(f"data: the {split} split is empty")
    return y


def check_pair(
    where: str, batch: Any, item: str | Callable[[int], str] = "item {}", targets: bool = True
) -> Any:
    """``batch``, an ``(inputs, targets)`` pair, once :func:`check_values` passed both (the
    inputs alone where not ``targets``; ``where`` names the split: ``data['train']``)."""
    check_values(f"{where} inputs", batch[0], item)  # every tensor of a tuple or a dict
    if targets:
        check_values(f"{where} targets", batch[1], item)
    return batch


def _row(item: str | Callable[[int], str], row: int) -> str:
    return item(row) if callable(item) else item.format(row)


def check_labels(where: str, y: Tensor, n_classes: int, why: str = "") -> None:
    """A one-line ``ValueError`` when a class label in ``y`` is outside ``0..n_classes-1``
    (``where`` names the split, e.g. ``data['val']``; ``why`` says where the count came from),
    or, for 2 classes as a binary task's float targets, outside [0, 1]."""
    if y.numel() == 0:
        return
    if y.is_floating_point():
        outside = (y < 0) | (y > 1) | y.isnan()
        if n_classes == 2 and outside.any():
            bad = float(y[outside][0])
            classes = bad > 1 and bad == round(bad)  # 2, 3, …: classes, perhaps
            raise ValueError(
                f"{where}: target {bad:g} is outside [0, 1], and the task is binary (BCE reads "
                "a 0/1 label or a probability)"
                + (
                    ": labels 0, 1, 2, … are the task multiclass (--task multiclass)"
                    if classes
                    else ""
                )
            )
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        tail = f" ({why})" if why else ""
        raise ValueError(f"{where}: label {bad} is outside 0..{n_classes - 1}{tail}")


def as_targets(where: str, y: Tensor, dtype: torch.dtype) -> Tensor:
    """``y`` as ``dtype``; class labels (an integer ``dtype``) given as floats must be whole
    numbers (0.7 would be truncated to class 0), one per example (not one-hot rows): else a
    one-line ``ValueError``."""
    if not dtype.is_floating_point and y.dim() > 1 and y[0].numel() > 1:
        raise ValueError(
            f"{where}: class labels shaped {tuple(y.shape[1:])} per example: give one class "
            "number per example (one-hot rows: y.argmax(1)), or float targets for regression"
        )
    if not dtype.is_floating_point and y.is_floating_point() and y.numel():
        bad = ~(torch.isfinite(y) & (y == y.round()))
        if bad.any():
            raise ValueError(
                f"{where}: label {float(y[bad][0]):g} is not a class (a whole number), and the "
                "task is multiclass: give every split whole-number labels, or task='regression' "
                "(--task regression) for a numeric target"
            )
    return y.to(dtype)


def one_target_column(y: Tensor) -> Tensor:
    """Targets of shape ``(n, 1)`` as ``(n,)``: one target per example, as the losses take
    them (other shapes are left as they are)."""
    return y.reshape(-1) if y.dim() == 2 and y.shape[1] == 1 else y


def subsample_train(ds: Dataset, size: int, seed: int, key: str = "train_size") -> Dataset:
    """``ds`` with a seeded random subsample of ``size`` training rows (kept in their order);
    validation and test are unchanged. The facts (``meta``) record the sizes."""
    n = len(ds.y_train)
    if size > n:
        raise ValueError(f"{key}: {size} is more than the {n} training rows of {ds.name}")
    if size == n:
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:size].sort().values
    return ds.with_train_rows(idx, train_size=size, n_train_full=n)


def _encode_target(y: np.ndarray, task: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(classes, class indices 0..C−1) for classification, checked for a usable split;
    (None, float targets) for regression."""
    if task == "regression":
        try:
            y_num = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"task regression needs a numeric target; it holds values like {plain(y[0])!r}"
            ) from None
        if not np.isfinite(y_num).all():
            raise ValueError("the target has missing or infinite values")
        if (np.abs(y_num) > FLOAT32_MAX).any():
            raise ValueError(
                f"the target has values beyond float32's range (±{FLOAT32_MAX:.3g}), in which "
                "wdlab trains: rescale it"
            )
        return None, y_num
    classes, y_idx = np.unique(y, return_inverse=True)
    if task == "binary" and len(classes) != 2:
        raise ValueError(f"task binary needs 2 classes, the target has {len(classes)}")
    if len(classes) < 2:
        raise ValueError("the target has a single class: nothing to learn")
    counts = np.bincount(y_idx)
    if counts.min() < 3:
        rare = plain(classes[counts.argmin()])
        many = len(classes) > 20 and y.dtype.kind in "iuf"  # a quantity, perhaps
        hint = f"; {len(classes)} numbers may be a quantity: task='regression' (--task regression)"
        raise ValueError(
            f"class {rare!r} has {int(counts.min())} rows; each class needs >= 3 "
            "to appear in train, validation and test" + (hint if many else "")
        )
    return classes, y_idx
