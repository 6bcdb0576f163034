"""No silent wrong numbers from data (issue 25 items 2, 5, 10): a numeric column with a few
text cells, values beyond float32, NaN or inf in any input, a FIFO for a file, a huge field, a
list column, a feature named twice, a non-finite source option: each is one line naming the
problem, in Python and on the command line alike."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import wdlab
from wdlab.data import Dataset, from_arrays, from_splits, load, read_table, split_indices

N = 60


def _csv(tmp_path, name, column_a, header="a,y"):
    """A CSV whose column a is ``column_a`` (text, one cell per row) and y two classes."""
    y = [0] * (N // 2) + [1] * (N // 2)
    rows = "".join(f"{a},{t}\n" for a, t in zip(column_a, y, strict=True))
    path = tmp_path / name
    path.write_text(header + "\n" + rows)
    return str(path)


def _numbers(seed=0):
    return [f"{v:.3f}" for v in np.random.default_rng(seed).normal(size=N)]


MIXED = [
    ({7: "abc"}, "row 8 'abc'"),
    ({5: "1.5\x00"}, r"row 6 '1.5\x00'"),  # a NUL byte, shown escaped
    ({3: "abc", 40: "?"}, "row 4 'abc', row 41 '?'"),
]


@pytest.mark.parametrize("bad, shown", MIXED)
def test_a_numeric_column_with_text_cells_is_refused_naming_rows_and_values(tmp_path, bad, shown):
    cells = _numbers()
    for i, v in bad.items():
        cells[i] = v
    path = _csv(tmp_path, "mixed.csv", cells)
    with pytest.raises(ValueError) as info:
        read_table(path, "y")
    text = str(info.value)
    assert "\n" not in text and "\x00" not in text
    assert f"column 'a' holds numbers but {len(bad)} of its 60 cells are not numbers" in text
    assert shown in text and "--categorical a" in text


def test_asked_for_as_categorical_the_column_is_one_hot_encoded(tmp_path):
    cells = _numbers()
    cells[7] = "abc"
    ds = read_table(_csv(tmp_path, "mixed.csv", cells), "y", categorical=["a"])
    # 60 distinct cells: one column for each of the 36 the training split holds
    assert ds.in_dim == ds.meta["n_train"] == 36 and ds.meta["one_hot"] == ["a"]
    # an integer-coded column, asked for as categories, is one-hot too
    codes = [str(i % 3) for i in range(N)]
    ds = read_table(_csv(tmp_path, "codes.csv", codes), "y", categorical=["a"])
    assert ds.meta["features"] == ["a_0", "a_1", "a_2"]
    with pytest.raises(ValueError, match="categorical names columns that are not features: b"):
        read_table(_csv(tmp_path, "codes.csv", codes), "y", categorical=["b"])


def test_a_text_column_stays_categorical(tmp_path):
    sizes = ["S", "M", "L"] * (N // 3)
    ds = read_table(_csv(tmp_path, "sizes.csv", sizes), "y")
    assert ds.meta["features"] == ["a_L", "a_M", "a_S"]


def test_a_200000_character_field_is_one_line(tmp_path):
    cells = _numbers()
    cells[5] = "x" * 200_000
    with pytest.raises(ValueError) as info:
        read_table(_csv(tmp_path, "long.csv", cells), "y")
    text = str(info.value)
    assert len(text) < 500 and "(200,000 characters)" in text and "row 6" in text
    path = _csv(tmp_path, "longname.csv", _numbers(), header="a" * 200_000 + ",y")
    with pytest.raises(ValueError, match=r"read longname\.csv: its header row: field larger"):
        read_table(path, "y")


def test_a_parquet_list_column_is_one_line(tmp_path):
    path = tmp_path / "lists.parquet"
    y = [0] * (N // 2) + [1] * (N // 2)
    pd.DataFrame({"a": [[1.0, 2.0]] * N, "b": np.arange(N) * 1.0, "y": y}).to_parquet(path)
    with pytest.raises(ValueError, match=r"column 'a' holds lists, not one value per cell"):
        read_table(str(path), "y")
    assert read_table(str(path), "y", features=["b"]).in_dim == 1


def test_a_feature_named_twice_is_one_line(tmp_path):
    path = _csv(tmp_path, "ok.csv", _numbers())
    with pytest.raises(ValueError, match="features lists 'a' more than once"):
        read_table(path, "y", features=["a", "a"])


@pytest.mark.parametrize("value", [1e200, -1e39])
def test_values_beyond_float32_are_refused_naming_the_column(tmp_path, value):
    cells = _numbers()
    cells[2] = repr(value)
    with pytest.raises(ValueError, match=r"values beyond float32's range .* columns: a \(1\)"):
        read_table(_csv(tmp_path, "big.csv", cells), "y")
    X = np.random.default_rng(0).normal(size=(N, 2))
    X[4, 1] = value
    with pytest.raises(ValueError, match=r"columns: 1 \(1\) \(e\.g\. .* in row 5\)"):
        from_arrays(X, np.arange(N) % 2)


def test_a_large_separating_feature_survives_standardisation():
    """±3e38 fits float32: its moments in float64 are finite and the classes stay apart."""
    y = np.arange(N) % 2
    X = np.where(y == 1, 3e38, -3e38)[:, None].astype(np.float64)
    ds = from_arrays(X, y)
    for Xs, ys in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        assert torch.isfinite(Xs).all()
        assert torch.equal(Xs[:, 0] > 0, ys > 0.5)


def test_a_test_row_that_leaves_float32_after_scaling_is_refused():
    y = np.arange(N) % 2
    _, _, test = split_indices(N, y, 0.2, 0.2, 0)  # the rows from_arrays holds out for test
    X = np.random.default_rng(0).normal(size=(N, 1)) * 1e-30  # training spread: 1e-30
    X[test, 0] = 3e38  # within float32, but 3e68 standard deviations out
    with pytest.raises(ValueError, match=r"column 0: .* 12 rows leave float32's range"):
        from_arrays(X, y)


def _pairs(X, y):
    return {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]), "test": (X[50:], y[50:])}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_in_python_inputs_is_refused(bad):
    X, y = torch.randn(N, 3), torch.randint(0, 2, (N,))
    X[45, 1] = bad  # the validation split's item 5
    with pytest.raises(ValueError, match=r"data\['val'\] inputs: 1 items hold NaN or infinite"):
        from_splits(_pairs(X, y))
    ds = Dataset("d", "multiclass", X[:40], y[:40], X[50:], y[50:], X[40:50], y[40:50], 2)
    with pytest.raises(ValueError, match="data val inputs: 1 items hold NaN or infinite"):
        wdlab.sweep(lambda: nn.Linear(3, 2), ds, epochs=1)
    with pytest.raises(ValueError, match=r"data\['val'\] inputs"):
        wdlab.sweep(lambda: nn.Linear(3, 2), _pairs(X, y), epochs=1)


def test_regression_targets_and_float64_beyond_float32_are_refused():
    X, y = torch.randn(N, 3), torch.randn(N)
    y[3] = math.nan
    with pytest.raises(ValueError, match=r"data\['train'\] targets: 1 items hold NaN"):
        from_splits(_pairs(X, y))
    X64 = torch.randn(N, 3, dtype=torch.float64)
    X64[51, 0] = 1e300
    with pytest.raises(ValueError, match=r"data\['test'\] inputs: 1 items hold values beyond"):
        from_splits(_pairs(X64, torch.randn(N)))


def test_integer_inputs_pass_the_check():
    X, y = torch.randint(0, 9, (N, 3)), torch.randint(0, 2, (N,))
    assert len(from_splits(_pairs(X, y)).y_train) == 40


@pytest.mark.parametrize(
    "source, options, fragment",
    [
        ("teacher", {"noise": math.nan}, "noise must be a finite number, got nan"),
        ("teacher", {"sigma_w": math.inf}, "sigma_w must be a finite number, got inf"),
        ("teacher-classification", {"label_noise": math.nan}, "label_noise must be a finite"),
        ("seed-noise", {"dim": math.inf}, "dim must be a whole number, got inf"),
    ],
)
def test_a_non_finite_source_option_is_one_line(source, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        load(source, **options)


def _cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO read would block for ever: the test fails instead
        cwd=tmp_path,
    )


def _one_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_the_cli_refuses_a_fifo_a_mixed_column_and_nan_noise_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    line = _one_line(_cli(tmp_path, "run", "--data", "pipe.csv", "--target", "y"))
    assert "pipe.csv is not a regular file" in line
    cells = _numbers()
    cells[7] = "abc"
    _csv(tmp_path, "mixed.csv", cells)
    base = ["run", "--data", "mixed.csv", "--target", "y", "--epochs", "1"]
    line = _one_line(_cli(tmp_path, *base, "--features", "a,a"))
    assert "features lists 'a' more than once" in line
    line = _one_line(_cli(tmp_path, *base))
    assert "row 8 'abc'" in line and "--categorical a" in line
    ok = _cli(tmp_path, *base, "--categorical", "a", "--model", "linear", "--out", "o", "--json")
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "nan.toml").write_text('[data]\nsource = "teacher"\noptions = { noise = nan }\n')
    line = _one_line(_cli(tmp_path, "run", "nan.toml", "--out", "o2"))
    assert "noise must be a finite number, got nan" in line


def test_a_data_files_keys_with_another_source_are_refused_not_ignored(tmp_path):
    """``--target`` / ``--features`` / ``--impute`` / ``--categorical`` read a data file's
    columns; with a built-in source they were silently ignored."""
    for flag, value in (("--target", "y"), ("--features", "a,b"), ("--impute", "mean")):
        line = _one_line(_cli(tmp_path, "run", "--data", "digits", flag, value, "--epochs", "1"))
        key = flag.removeprefix("--")
        assert f"data.{key} ({flag}): names columns of a CSV or Parquet file, and 'digits'" in line
    assert not any(tmp_path.iterdir())  # nothing made
