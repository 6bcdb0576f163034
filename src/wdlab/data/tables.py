"""User tables: CSV and Parquet files.

Non-numeric feature columns are one-hot encoded, within a limit: the encoded matrix (float64,
rows × columns) may take at most :data:`MAX_TABLE_BYTES`; a table whose categorical columns
would make it larger (an ID column, free text) is refused, naming those columns and their
numbers of distinct values. A column that looks numeric but has a few cells that are not
numbers (a typo, ``n/a``, a NUL byte) is refused, naming the rows and the values, unless it is
named in ``categorical``; cells that hold lists (a Parquet list column) are refused. Only
regular files are read (a FIFO or a device is refused, never waited on).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wdlab.data.arrays import IMPUTERS, from_arrays, training_rows
from wdlab.data.dataset import Dataset
from wdlab.errors import first_line
from wdlab.extras import require
from wdlab.warn import warn_user

FILE_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_TABLE_BYTES = 2**30  # the one-hot encoded matrix, float64: 1 GiB


OTHER_TABLES = (".tsv", ".txt", ".xlsx", ".xls", ".json", ".jsonl", ".feather", ".h5")


def is_table_path(name: str) -> bool:
    """Whether ``name`` is a path to a CSV or Parquet file (by its suffix)."""
    return isinstance(name, str) and name.lower().endswith(FILE_SUFFIXES)


def check_data_keys(data: Mapping[str, Any], prefix: str = "data.") -> None:
    """The ``[data]`` section's rules between keys (each named ``prefix`` + key): a data file
    needs ``target``, and any other source refuses the keys that read a file's columns, since
    it would ignore them; ``val_size`` + ``test_size`` leave >= 10% for training."""
    source = data.get("source") or ""
    table = is_table_path(source)
    suffix = Path(source).suffix.lower() if isinstance(source, str) else ""
    if suffix in OTHER_TABLES:  # (it was told "unknown data", or that --target needs a file)
        raise ValueError(
            f"{prefix}source: wdlab reads .csv and .parquet files, not {suffix}: save "
            f"{Path(source).name} as CSV (pandas: read it, then .to_csv)"
        )
    if table and not data.get("target"):
        raise ValueError(f"{prefix}target: a data file needs the target column")
    keys = ("target", "features", "impute", "categorical")
    given = [k for k in keys if data.get(k) and not table]
    if given:
        raise ValueError(
            f"{prefix}{given[0]}: names columns of a CSV or Parquet file, and "
            f"{data.get('source')!r} is not one"
        )
    val, test = data.get("val_size", 0.0), data.get("test_size", 0.0)
    if val + test > 0.9:
        raise ValueError(
            f"{prefix}val_size + {prefix}test_size must leave >= 10% for training, got "
            f"{val:g} + {test:g}"
        )


def read_table(
    path: str,
    target: str | None = None,
    features: list[str] | None = None,
    impute: str | None = None,
    task: str | None = None,
    seed: int = 0,
    categorical: list[str] | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
) -> Dataset:
    """A CSV or Parquet file: ``target`` column, optional ``features`` (default: the rest).

    Numeric columns are used as they are; non-numeric feature columns, and those named in
    ``categorical``, are one-hot encoded, their categories those of the *training split* (a
    category only held-out rows have is all zeros there: those rows never move the training).
    ``val_size`` and ``test_size`` are the split's fractions. Missing values are refused (the
    message names the columns and counts the rows) unless ``impute`` is ``mean`` or
    ``median`` of the numeric column over the *training split* only (as the standardisation
    is; rows with a missing target are always refused).
    """
    pd = require("pandas", "reading CSV and Parquet files")
    p = Path(path)
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"{p.name}: name the target column (target='y' in Python, --target y on the command "
            "line)"
        )
    if impute not in IMPUTERS:
        raise ValueError(f"impute must be one of {', '.join(map(str, IMPUTERS))}, got {impute!r}")
    df = _read(p, target)
    if len(df) == 0:
        raise ValueError(f"{p.name} has a header but no rows")
    features = _features(df, target, features, p.name)
    categorical = _named(categorical, "categorical", features)
    if df[target].isna().any():
        raise ValueError(
            f"target column {target!r} has {int(df[target].isna().sum())} missing "
            "rows; drop them first"
        )
    X = df[features]
    _check_cells(X, categorical)
    na = X.isna()
    if na.any().any():
        cols = [f"{c} ({int(na[c].sum())})" for c in features if na[c].any()]
        rows = int(na.any(axis=1).sum())
        non_num = [
            str(c)
            for c in features
            if na[c].any() and (c in categorical or not pd.api.types.is_numeric_dtype(X[c]))
        ]
        text = (  # pandas reads these words as missing too: a category named "NA" is one
            f"text columns ({', '.join(non_num)}) cannot be imputed: fill their empty cells "
            "in the file (pandas reads NA, N/A, None, null and NaN there as missing too)"
        )
        if impute is None:
            raise ValueError(
                f"missing values in {rows} rows, columns: {', '.join(cols)}; "
                + (text if non_num else "pass --impute mean|median or clean the file")
            )
        if non_num:
            raise ValueError(f"missing values in {rows} rows; {text}")
    y = df[target].to_numpy()
    if y.dtype == object:  # mixed text and numbers: compare them as text
        y = y.astype(str)
    one_hot = [c for c in features if c in categorical or not pd.api.types.is_numeric_dtype(X[c])]
    if one_hot:
        _check_one_hot(X, one_hot, p.name)
        X = X.astype({c: str for c in categorical})  # the values as categories: 1 and 2 too
        X = _one_hot(X, one_hot, training_rows(y, task, val_size, test_size, seed), p.name)
    columns = list(map(str, X.columns))
    meta = {"file": p.name, "target": target, "features": columns, "one_hot": one_hot}
    values = X.to_numpy(np.float64)
    kw = {"task": task, "name": p.name, "seed": seed, "meta": meta, "columns": columns}
    return from_arrays(values, y, impute=impute, val_size=val_size, test_size=test_size, **kw)


def _one_hot(X: Any, one_hot: list[str], train: np.ndarray | None, name: str) -> Any:
    """``X`` with the ``one_hot`` columns one-hot encoded over the categories of the ``train``
    rows (all rows where None: the target is refused after); a clash of names refused."""
    pd = require("pandas", "reading CSV and Parquet files")
    seen = X if train is None else X.iloc[train]
    X = X.assign(**{c: pd.Categorical(X[c], sorted(seen[c].unique())) for c in one_hot})
    X = pd.get_dummies(X, columns=one_hot, dtype=float)
    clash = [c for c, n in Counter(map(str, X.columns)).items() if n > 1]  # plan_basic: twice
    if clash:
        raise ValueError(
            f"{name}: the one-hot column {clash[0]!r} has the name of another column; rename "
            "one of them"
        )
    return X


def _features(df: Any, target: str, features: list[str] | None, name: str) -> list[str]:
    """The feature columns: given (each once, each in the file, not the target) or the rest."""
    if features is None:
        features = [c for c in df.columns if c != target]
    elif isinstance(features, str) or not isinstance(features, (list, tuple)):
        raise ValueError(f"features must be a list of column names, got {features!r}")
    features = list(features)
    twice = [str(c) for c, n in Counter(features).items() if n > 1]
    if twice:
        raise ValueError(f"features lists {', '.join(map(repr, twice))} more than once")
    missing_cols = [c for c in features if c not in df.columns]
    if missing_cols:
        raise ValueError(f"feature columns not in {name}: {', '.join(map(str, missing_cols))}")
    if target in features:
        raise ValueError(f"target column {target!r} is also listed as a feature")
    if not features:
        raise ValueError(f"{name} has no feature columns besides the target {target!r}")
    return features


def _named(columns: list[str] | None, what: str, features: list[str]) -> list[str]:
    """``columns`` (e.g. ``categorical``) checked: a list of feature columns, each once."""
    if columns is None:
        return []
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise ValueError(f"{what} must be a list of column names, got {columns!r}")
    twice = [str(c) for c, n in Counter(columns).items() if n > 1]
    if twice:
        raise ValueError(f"{what} lists {', '.join(map(repr, twice))} more than once")
    strays = [str(c) for c in columns if c not in features]
    if strays:
        raise ValueError(f"{what} names columns that are not features: {', '.join(strays)}")
    return list(columns)


def _check_cells(X: Any, categorical: list[str]) -> None:
    """Refuse cells that hold lists or arrays (a Parquet list column), and text cells in a
    column that otherwise holds numbers (unless the column is asked for as categorical)."""
    pd = require("pandas", "reading CSV and Parquet files")
    for c in X.columns:
        col = X[c]
        if pd.api.types.is_numeric_dtype(col):
            continue
        if pd.api.types.is_datetime64_any_dtype(col) or pd.api.types.is_timedelta64_dtype(col):
            raise ValueError(
                f"column {c!r} holds dates or times, which wdlab does not turn into features; "
                "convert it to numbers (e.g. days since a date) or leave it out (--features)"
            )
        nested = col.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))
        if nested.any():
            i = int(np.flatnonzero(nested.to_numpy())[0])
            raise ValueError(
                f"column {c!r} holds lists, not one value per cell (row {i + 1}: "
                f"{_shown(col.iloc[i])}); flatten it into columns or leave it out of the features"
            )
        if c in categorical:
            continue
        present = col.notna().to_numpy()
        numeric = pd.to_numeric(col, errors="coerce").notna().to_numpy()
        text = present & ~numeric
        if (present & numeric).sum() > text.sum():  # mostly numbers: the text is a mistake
            rows = np.flatnonzero(text)
            said = ", ".join(f"row {i + 1} {_shown(col.iloc[i])}" for i in rows[:5])
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            raise ValueError(
                f"column {c!r} holds numbers but {len(rows)} of its {int(present.sum())} cells "
                f"are not numbers: {said}{more} (rows counted from 1 after the header); fix "
                f"them, or pass categorical=[{str(c)!r}] (--categorical {c}) to treat the "
                "column as categories"
            )


def _shown(value: object, limit: int = 40) -> str:
    """A cell as a short literal: repr (so NUL bytes show as \\x00), cut to ``limit``."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else type(value).__name__
    return f"{text[: limit - 1]}… ({size})"


def _read(p: Path, target: str) -> Any:
    """The table at ``p`` as a DataFrame, with its target column checked; duplicate column
    names are said (a warning), or refused where the target is one of them."""
    pd = require("pandas", "reading CSV and Parquet files")
    if not p.exists():  # (a relative path is the current folder's, not a config file's)
        where = "" if p.is_absolute() else f" (looked in {Path.cwd()})"
        raise ValueError(f"data file not found: {p}{where}")
    if p.is_dir():
        raise ValueError(f"data file {p} is a folder")
    if not p.is_file():  # checked without opening it: a FIFO would block the read forever
        raise ValueError(f"data file {p} is not a regular file (a FIFO, socket or device)")
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
        hint = " (not UTF-8 text: save the file as UTF-8)" * isinstance(exc, UnicodeDecodeError)
        raise ValueError(f"cannot read {p.name}: {first_line(exc)}{hint}") from None
    dupes = {c: n for c, n in Counter(header).items() if n > 1}
    if target in dupes:
        raise ValueError(f"{p.name} has {dupes[target]} columns named {target!r} (the target)")
    if dupes:
        said = ", ".join(f"{c!r} ({n} times)" for c, n in dupes.items())
        copies = ", ".join(repr(f"{c}.1") for c in dupes)
        warn_user(f"{p.name} has duplicate column names: {said}; the copies are read as {copies}…")
    if target not in df.columns:
        shown = [_shown(str(c)) for c in df.columns[:20]]  # (a NUL byte: its escape)
        cols = ", ".join(shown) + ("…" if len(df.columns) > 20 else "")
        semi = len(df.columns) == 1 and ";" in str(df.columns[0])
        hint = "; the file looks ';'-separated: wdlab reads commas (save it as such)" * semi
        raise ValueError(f"target column {target!r} not in {p.name}; columns: {cols}{hint}")
    return df


def _csv_header(p: Path) -> list[str]:
    """The first row of a CSV file as written (pandas renames duplicates)."""
    with open(p, newline="", encoding="utf-8-sig") as fh:
        try:
            return next(csv.reader(fh), [])
        except csv.Error as exc:  # e.g. a 200,000-character name: over the field limit
            raise ValueError(f"its header row: {exc}") from None


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
