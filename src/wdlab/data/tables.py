"""User tables: CSV and Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wdlab.data.arrays import from_arrays
from wdlab.data.dataset import Dataset
from wdlab.extras import require

FILE_SUFFIXES = (".csv", ".parquet", ".pq")


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
