"""Tables without leaks (issue 20 item 7): imputation and standardisation statistics come from
the training split only, so validation and test rows never move them; ``wdlab.sweep`` reads a
table with ``target=``, ``features=``, ``impute=`` (and ``categorical=``); a table without a
target is one line."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import wdlab
from wdlab.data import from_arrays, load, read_table, split_indices

N = 60


def _frame(seed=0):
    """60 rows, two classes; column b has holes in rows 0..9 (some land in each split)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(N // 2), np.ones(N // 2)].astype(int)
    a = rng.normal(size=N) + y
    b = rng.normal(loc=5.0, size=N).round(4)
    b[:10] = np.nan
    return pd.DataFrame({"a": a, "b": b, "c": rng.integers(0, 3, N), "y": y})


def _splits(y, seed=0):
    """The rows of train, val, test as from_arrays draws them (default sizes)."""
    return split_indices(len(y), np.unique(y, return_inverse=True)[1], 0.2, 0.2, seed)


@pytest.mark.parametrize("impute", ["mean", "median"])
def test_validation_and_test_rows_do_not_move_the_training_rows(tmp_path, impute):
    df = _frame()
    _, val, test = _splits(df["y"].to_numpy())
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.to_csv(a, index=False)
    moved = df.copy()
    held_out = np.r_[val, test]
    moved.loc[held_out, ["a", "b"]] = moved.loc[held_out, ["a", "b"]] * 1000 + 77  # wildly off
    moved.to_csv(b, index=False)
    one = read_table(str(a), "y", impute=impute)
    two = read_table(str(b), "y", impute=impute)
    # the same arithmetic on the same training numbers: equal to the bit
    assert torch.equal(one.X_train, two.X_train)
    assert not torch.equal(one.X_test, two.X_test)  # the held-out rows did change
    assert "training split" in one.meta["impute"] and "training split" in one.meta["standardized"]


def test_a_category_only_held_out_rows_have_does_not_move_the_training(tmp_path):
    """A new-user trial: one-hot categories were collected from every row before the split,
    so a category in 3 test rows added an input column (another width, other initial
    weights: another run). They are the training split's: such a row is all zeros there."""
    df = _frame().assign(plan=lambda d: np.where(d.index % 2 == 0, "basic", "pro"))
    test = _splits(df["y"].to_numpy())[2]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.to_csv(a, index=False)
    df.loc[test[:3], "plan"] = "enterprise"  # a plan no training row has
    df.to_csv(b, index=False)
    one, two = read_table(str(a), "y", impute="mean"), read_table(str(b), "y", impute="mean")
    assert one.meta["features"] == two.meta["features"] == ["a", "b", "c", "plan_basic", "plan_pro"]
    assert torch.equal(one.X_train, two.X_train) and torch.equal(one.X_val, two.X_val)
    rows = [list(map(int, test)).index(i) for i in test[:3]]
    zero = one.X_train[:, -2:].min(0).values  # a 0 of each plan column, standardised
    assert torch.equal(two.X_test[rows][:, -2:], zero.expand(3, 2))  # unseen: no plan set


def test_a_files_split_sizes_are_taken_and_its_options_refused(tmp_path):
    """A new-user trial: ``data.val_size`` / ``test_size`` did nothing for a CSV file (60/20/20
    whatever they said), and ``data.options`` was taken, ignored, into the study's identity."""
    from wdlab.config import validate
    from wdlab.pipelines.experiment import load_data

    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)
    data = {"source": str(path), "target": "y", "impute": "mean"}
    ds = load_data(validate({"data": data | {"val_size": 0.3, "test_size": 0.1}}).data)
    assert (ds.meta["n_train"], ds.meta["n_val"], ds.meta["n_test"]) == (36, 18, 6)
    with pytest.raises(ValueError, match=r"data.options: a CSV or Parquet file takes none"):
        load_data(validate({"data": data | {"options": {"foo": 1}}}).data)


@pytest.mark.parametrize("impute, fit", [("mean", np.nanmean), ("median", np.nanmedian)])
def test_missing_values_are_filled_with_the_training_rows_statistic(impute, fit):
    df = _frame()
    X, y = df[["a", "b"]].to_numpy(), df["y"].to_numpy()
    train, val, test = _splits(y)
    ds = from_arrays(X, y, impute=impute, standardize=False)
    fill = fit(X[train, 1])
    assert fill != pytest.approx(fit(X[:, 1]), rel=1e-6)  # all rows would give another value
    for rows, got in ((train, ds.X_train), (val, ds.X_val), (test, ds.X_test)):
        holes = np.isnan(X[rows, 1])
        assert holes.any()
        assert np.all(got[torch.from_numpy(holes), 1].numpy() == np.float32(fill))
        kept = got[torch.from_numpy(~holes), 1].numpy()
        assert np.array_equal(kept, X[rows, 1][~holes].astype(np.float32))


def test_nothing_to_impute_from_in_the_training_rows_is_one_line():
    df = _frame()
    X, y = df[["a", "b"]].to_numpy(copy=True), df["y"].to_numpy()
    train, _, _ = _splits(y)
    X[train, 1] = np.nan
    with pytest.raises(ValueError, match="no values in the training rows of b"):
        from_arrays(X, y, impute="mean", columns=["a", "b"])


def test_standardisation_uses_the_training_rows_only():
    df = _frame().drop(columns="b")
    X, y = df[["a", "c"]].to_numpy(float), df["y"].to_numpy()
    train, _, test = _splits(y)
    ds = from_arrays(X, y)
    mu, sd = X[train].mean(0), X[train].std(0)
    want = torch.from_numpy((X[test] - mu) / sd).float()
    assert torch.equal(ds.X_test, want)


def make(in_dim):
    torch.manual_seed(0)
    return nn.Linear(in_dim, 1)


def test_sweep_reads_a_table_with_target_features_and_impute(tmp_path):
    path = tmp_path / "churn.csv"
    _frame().to_csv(path, index=False)
    grid = dict(lr=1e-2, weight_decay=[0.0, 1e-2], epochs=1, batch_size=16)
    seen = []

    def factory(seed):
        model = nn.Linear(2, 1)  # a and b: the features asked for, not c
        seen.append(model.in_features)
        return model

    result = wdlab.sweep(
        factory, str(path), target="y", features=["a", "b"], impute="median", **grid
    )
    assert seen and result.best is not None
    facts = result.data
    assert facts["features"] == ["a", "b"] and facts["target"] == "y"
    assert facts["impute"] == "median, fitted on the training split"
    # c as categories: three one-hot columns
    result = wdlab.sweep(
        lambda: nn.Linear(5, 1), str(path), target="y", impute="mean", categorical=["c"], **grid
    )
    assert result.data["features"] == ["a", "b", "c_0", "c_1", "c_2"]


def test_a_table_without_its_target_is_one_line(tmp_path):
    path = tmp_path / "churn.csv"
    _frame().to_csv(path, index=False)
    for call in (
        lambda: wdlab.sweep(make, str(path), epochs=1),
        lambda: load(str(path)),
        lambda: read_table(str(path)),
    ):
        with pytest.raises(ValueError, match="name the target column") as info:
            call()
        assert "\n" not in str(info.value)


def test_table_keywords_on_other_data_are_one_line():
    with pytest.raises(ValueError, match=r"target= applies to a \.csv/\.parquet file"):
        wdlab.sweep(make, "wine", target="y", epochs=1)


def test_a_changed_table_file_is_another_study_on_the_command_line(tmp_path, capsys):
    """The command line's identity held the file's name, not its contents: a sweep into the
    same --out after editing one value of the CSV trained nothing and returned the old runs
    (found by a new-user trial; the Python API refused it already)."""
    from wdlab.cli import main

    frame = _frame().fillna(0.0)
    path, out = tmp_path / "t.csv", tmp_path / "s"
    frame.to_csv(path, index=False)
    args = ["sweep", "--data", str(path), "--target", "y", "--model", "linear", "--epochs", "2"]
    args += ["--wd", "0,0.01", "--mode", "decoupled", "--seeds", "1", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    stored = (out / "study.db").read_bytes()
    capsys.readouterr()
    assert main(args) == 0  # the same file: the same study, nothing to train
    assert "task: binary, from column 'y' (--task sets it)" in capsys.readouterr().out
    frame.loc[3, "a"] += 1.0
    frame.to_csv(path, index=False)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds another study: data.fingerprint" in err and err.count("\n") == 1
    assert (out / "study.db").read_bytes() == stored  # nothing stored changed


def _refusal(tmp_path, frame, capsys, *extra, suffix=".csv"):
    from wdlab.cli import main

    path = tmp_path / f"t{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    args = ["run", "--data", str(path), "--target", "y", "--model", "linear", "--epochs", "1"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_what_a_table_cannot_be_is_said_for_what_it_is(tmp_path, capsys):
    """Each from a new-user trial: a text category "NA" read as missing was told to impute,
    which then refused; a Parquet datetime column "holds numbers but 0 of its 60 cells are
    not numbers"; a stratified split too small gave scikit-learn's "test_size = 1 should be
    greater or equal to the number of classes = 2"; an integer price, 60 classes of 1 row,
    was not told it may be a regression."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    regions = pd.DataFrame({"x": rng.normal(size=60), "region": ["NA", "EU", "None"] * 20})
    err = _refusal(tmp_path, regions.assign(y=y), capsys)
    assert "text columns (region) cannot be imputed" in err and "pandas reads NA" in err
    err = _refusal(tmp_path, regions.assign(y=y), capsys, "--impute", "mean")
    assert "text columns (region) cannot be imputed" in err
    when = pd.DataFrame({"x": rng.normal(size=60), "when": pd.date_range("2024-01-01", periods=60)})
    err = _refusal(tmp_path, when.assign(y=y), capsys, suffix=".parquet")
    assert "column 'when' holds dates or times" in err
    six = pd.DataFrame({"x": rng.normal(size=6), "y": [0, 1] * 3})
    err = _refusal(tmp_path, six, capsys)
    assert "6 rows are too few to split into train, validation and test" in err
    price = pd.DataFrame({"x": rng.normal(size=60)}).assign(y=rng.permutation(60) * 1000 + 7)
    err = _refusal(tmp_path, price, capsys)
    assert "60 numbers may be a quantity: task='regression' (--task regression)" in err


def test_a_files_names_and_separator_are_said_as_they_are(tmp_path, monkeypatch):
    """A new-user trial: a numeric ``plan_basic`` beside a categorical ``plan`` made two
    features of one name, unsaid; a ';'-separated file was one column, with no word of the
    separator; a column name of NUL bytes was printed raw; a relative path not found did not
    say where it was looked for."""
    df = _frame().fillna(0.0).assign(plan=["basic", "pro"] * (N // 2), plan_basic=1.0)
    clash = tmp_path / "clash.csv"
    df.to_csv(clash, index=False)
    with pytest.raises(ValueError, match=r"one-hot column 'plan_basic' has the name of another"):
        read_table(str(clash), "y")
    semi = tmp_path / "semi.csv"
    _frame().fillna(0.0).to_csv(semi, index=False, sep=";")
    with pytest.raises(ValueError, match=r"columns: 'a;b;c;y'; the file looks ';'-separated"):
        read_table(str(semi), "y")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"\x00\x00,z\n1,2\n3,4\n5,6\n7,8\n9,0\n")
    with pytest.raises(ValueError, match=r"columns: '\\x00\\x00', 'z'"):
        read_table(str(nul), "y")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match=rf"data file not found: gone.csv \(looked in {tmp_path}\)"
    ):
        read_table("gone.csv", "y")
    latin = tmp_path / "latin.csv"  # Excel's cp1252: Python's decode error alone said it
    latin.write_bytes(
        b"name,y\n" + "".join(f"caf\u00e9{i},{i % 2}\n" for i in range(9)).encode("cp1252")
    )
    with pytest.raises(ValueError, match=r"can't decode byte 0xe9 .* \(not UTF-8 text: save the"):
        read_table(str(latin), "y")


@pytest.mark.parametrize("name", ["x.tsv", "Book1.XLSX"])
def test_a_table_of_another_format_is_said_for_what_it_is(tmp_path, capsys, name):
    """A new-user trial: ``--data x.tsv --target y`` said --target "names columns of a CSV or
    Parquet file, and 'x.tsv' is not one"; without --target, "unknown data"."""
    from wdlab.cli import main

    for extra in ([], ["--target", "y"]):
        assert main(["run", "--data", name, *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"wdlab reads .csv and .parquet files, not {name[name.rindex('.') :].lower()}" in err
    assert not (tmp_path / "o").exists()
