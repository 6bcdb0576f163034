"""User tables: CSV and Parquet files.

Non-numeric feature columns are one-hot encoded, within a limit: the encoded matrix (float64,
rows × columns) may take at most :data:`MAX_TABLE_BYTES`; a table whose categorical columns
would make it larger (an ID column, free text) is refused, naming those columns and their
numbers of distinct values.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wdlab.data.arrays import check_finite, from_arrays
from wdlab.data.dataset import Dataset
from wdlab.extras import require

FILE_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_TABLE_BYTES = 2**30  # the one-hot encoded matrix, float64: 1 GiB


def is_table_path(name: str) -> bool:
    """Whether ``name`` is a path to a CSV or Parquet file (by its suffix)."""
    return isinstance(name, str) and name.lower().endswith(FILE_SUFFIXES)


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
    pd = require("pandas", "reading CSV and Parquet files")
    p = Path(path)
    df = _read(p, target)
    if len(df) == 0:
        raise ValueError(f"{p.name} has a header but no rows")
    features = features or [c for c in df.columns if c != target]
    missing_cols = [c for c in features if c not in df.columns]
    if missing_cols:
        raise ValueError(f"feature columns not in {p.name}: {', '.join(map(str, missing_cols))}")
    if target in features:
        raise ValueError(f"target column {target!r} is also listed as a feature")
    if df[target].isna().any():
        raise ValueError(
            f"target column {target!r} has {int(df[target].isna().sum())} missing "
            "rows; drop them first"
        )
    if not features:
        raise ValueError(f"{p.name} has no feature columns besides the target {target!r}")
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
        empty = [str(c) for c in features if X[c].isna().all()]
        if empty:
            raise ValueError(f"nothing to impute from: no values at all in {', '.join(empty)}")
    categorical = [c for c in features if not pd.api.types.is_numeric_dtype(X[c])]
    if categorical:
        _check_one_hot(X, categorical, p.name)
        X = pd.get_dummies(X, columns=categorical, dtype=float)
    columns = list(map(str, X.columns))
    values = X.to_numpy(np.float64)
    check_finite(values, columns)
    meta = {
        "file": p.name,
        "target": target,
        "features": columns,
        "one_hot": categorical,
        "impute": impute,
    }
    y = df[target].to_numpy()
    if y.dtype == object:  # mixed text and numbers: compare them as text
        y = y.astype(str)
    return from_arrays(values, y, task=task, name=p.name, seed=seed, meta=meta)


def _read(p: Path, target: str) -> Any:
    """The table at ``p`` as a DataFrame, with its target column checked; duplicate column
    names are said (a warning), or refused where the target is one of them."""
    pd = require("pandas", "reading CSV and Parquet files")
    if not p.exists():
        raise ValueError(f"data file not found: {p}")
    if p.is_dir():
        raise ValueError(f"data file {p} is a folder")
    suffix = p.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"data file must be .csv or .parquet, got {p.name!r}")
    try:
        if suffix == ".csv":
            header = _csv_header(p)
            df = pd.read_csv(p)
        else:
            df = pd.read_parquet(p)
            header = [str(c) for c in df.columns]
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot read {p.name}: {first}") from None
    dupes = {c: n for c, n in Counter(header).items() if n > 1}
    if target in dupes:
        raise ValueError(f"{p.name} has {dupes[target]} columns named {target!r} (the target)")
    if dupes:
        said = ", ".join(f"{c!r} ({n} times)" for c, n in dupes.items())
        copies = ", ".join(repr(f"{c}.1") for c in dupes)
        warnings.warn(
            f"{p.name} has duplicate column names: {said}; the copies are read as {copies}…",
            UserWarning,
            stacklevel=3,
        )
    if target not in df.columns:
        cols = ", ".join(map(str, df.columns[:20])) + ("…" if len(df.columns) > 20 else "")
        raise ValueError(f"target column {target!r} not in {p.name}; columns: {cols}")
    return df


def _csv_header(p: Path) -> list[str]:
    """The first row of a CSV file as written (pandas renames duplicates)."""
    with open(p, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def _check_one_hot(X: Any, categorical: list[str], name: str) -> None:
    """Refuse one-hot encoding that would make the matrix larger than MAX_TABLE_BYTES,
    naming the categorical columns by their numbers of distinct values."""
    distinct = {c: int(X[c].nunique()) for c in categorical}
    width = X.shape[1] - len(categorical) + sum(distinct.values())
    size = 8 * len(X) * width
    if size <= MAX_TABLE_BYTES:
        return
    worst = sorted(distinct.items(), key=lambda kv: -kv[1])
    said = ", ".join(f"{c!r} has {n:,} distinct values" for c, n in worst[:5])
    raise ValueError(
        f"one-hot encoding {name} would make a {len(X):,} x {width:,} matrix "
        f"({size / 2**30:.1f} GiB, more than the {MAX_TABLE_BYTES / 2**30:.0f} GiB limit): {said}; "
        "leave such columns out with --features, or encode them yourself"
    )
