"""Data sources, tasks, models, splits and experiment configs (`wdlab run`)."""

import csv
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from numerics import assert_normwise, per_steps
from wdlab import data as D
from wdlab.cli import main
from wdlab.config import merge, validate
from wdlab.config_keys import parse_float_list
from wdlab.models import ModelSpec
from wdlab.pipelines import run_experiment
from wdlab.pipelines.experiment import grid, load_config, load_data, model_spec
from wdlab.records import RunConfig
from wdlab.trainer import train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize(
    "name, task, classes",
    [
        ("digits", "multiclass", 10),
        ("breast_cancer", "binary", 2),
        ("wine", "multiclass", 3),
        ("diabetes", "regression", 1),
    ],
)
def test_sklearn_sets_split_stratified_and_standardised(name, task, classes):
    ds = D.load(name, seed=0)
    assert ds.task == task and ds.n_classes == classes
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert abs(len(ds.y_test) / n - 0.2) < 0.02 and abs(len(ds.y_val) / n - 0.2) < 0.02
    # standardisation fitted on the training split only
    assert ds.X_train.mean(0).abs().max() < 1e-4
    assert ds.X_test.mean(0).abs().max() > 1e-3
    if task != "regression":
        fr = lambda y: torch.bincount(y.long(), minlength=max(2, classes)).float() / len(y)  # noqa: E731
        assert (fr(ds.y_train) - fr(ds.y_test)).abs().max() < 0.05  # stratified
    assert D.load(name, seed=0).X_train.equal(ds.X_train)  # seeded


def test_teacher_records_bayes_alpha_and_d2l_shapes():
    t = D.teacher_regression(n=100, d=10, noise=2.0, sigma_w=0.5, seed=1)
    assert t.meta["alpha_star"] == pytest.approx(16.0)
    assert t.task == "regression" and len(t.y_train) == 75 and len(t.y_val) == 25
    c = D.teacher_classification(n=200, d=8, informative=3, label_noise=0.1, seed=0)
    assert c.task == "binary" and set(c.y_train.unique().tolist()) <= {0.0, 1.0}
    d = D.d2l()
    assert d.X_train.shape == (20, 200) and d.X_val.shape == (100, 200) and d.task == "regression"
    with pytest.raises(ValueError, match="informative"):
        D.teacher_classification(d=4, informative=9)


def test_arrays_from_numpy_and_tensors_infer_the_task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4))
    assert D.from_arrays(X, rng.integers(0, 2, 90)).task == "binary"
    assert D.from_arrays(torch.tensor(X), torch.tensor(rng.integers(0, 3, 90))).task == "multiclass"
    assert D.from_arrays(X, rng.normal(size=90)).task == "regression"
    labels = np.array(["cat", "dog"] * 45)
    ds = D.from_arrays(X, labels)
    assert ds.meta["classes"] == ["cat", "dog"]
    assert D.from_arrays(X, rng.integers(0, 2, 90).astype(float), task="regression").task == (
        "regression"
    )
    with pytest.raises(ValueError, match="single value"):
        D.from_arrays(X, np.ones(90))
    with pytest.raises(ValueError, match=r"class 2\.0 has 1 rows"):
        D.from_arrays(X, np.r_[np.zeros(45), np.ones(44), [2]])


def _table(tmp_path, suffix=".csv", **cols):
    df = pd.DataFrame(cols)
    path = tmp_path / f"data{suffix}"
    df.to_parquet(path) if suffix == ".parquet" else df.to_csv(path, index=False)
    return str(path)


def test_files_one_hot_impute_and_refuse(tmp_path):
    rng = np.random.default_rng(1)
    n = 60
    a = rng.normal(size=n)
    colour = np.array(["red", "green", "blue"] * 20)
    y = (a > 0).astype(int)
    path = _table(tmp_path, a=a, colour=colour, y=y)
    ds = D.read_table(path, "y")
    assert ds.task == "binary" and ds.in_dim == 4 and ds.meta["one_hot"] == ["colour"]
    pq = _table(tmp_path, ".parquet", a=a, colour=colour, y=y)
    assert D.read_table(pq, "y").X_train.equal(ds.X_train)
    assert D.read_table(path, "y", features=["a"]).in_dim == 1
    a_missing = a.copy()
    a_missing[[3, 7]] = np.nan
    holes = _table(tmp_path, a=a_missing, b=a, y=y)
    with pytest.raises(ValueError, match=r"missing values in 2 rows, columns: a \(2\)"):
        D.read_table(holes, "y")
    assert D.read_table(holes, "y", impute="median").in_dim == 2
    with pytest.raises(ValueError, match="target column 'z' not in"):
        D.read_table(path, "z")
    with pytest.raises(ValueError, match="single value"):
        D.read_table(_table(tmp_path, a=a, y=np.zeros(n)), "y")


def test_every_model_kind_trains():
    ds = D.load("wine")
    for spec in (
        ModelSpec("mlp", hidden=(8, 6), activation="gelu", layernorm=True),
        ModelSpec("linear"),
        ModelSpec("custom", factory="custom_model:make"),
    ):
        runs = train(
            spec,
            ds,
            [RunConfig(mode="decoupled", weight_decay=0.01, lr=1e-2, optimizer="adam")],
            epochs=5,
            device="cpu",
        )
        assert runs[0].status == "done" and 0 <= runs[0].final["test_acc"] <= 1


@pytest.mark.numerics
def test_minibatch_batched_equals_alone():
    ds = D.load("breast_cancer")
    spec = ModelSpec("mlp", hidden=(8,), activation="tanh")
    cfgs = [
        RunConfig(mode=m, weight_decay=wd, lr=0.05, optimizer="sgd", seed=s)
        for m, wd, s in [("coupled", 0.01, 0), ("decoupled", 0.05, 1), ("l2", 0.02, 0)]
    ]
    both = train(spec, ds, cfgs, epochs=4, batch_size=64, keep_params=True, device="cpu")
    assert both[0].engine.startswith("standard path")
    for c, r in zip(cfgs, both, strict=True):
        alone = train(spec, ds, [c], epochs=4, batch_size=64, keep_params=True, device="cpu")[0]
        # 4 epochs of 6 mini-batches (341 training rows / 64): 24 steps
        assert_normwise(r.curves["train_loss"], alone.curves["train_loss"], per_steps(24))
        assert_normwise(r.params, alone.params, per_steps(24), c.mode)


def _test_rmse(cfg):
    res = run_experiment(validate(cfg))
    return {r.config.weight_decay: r.final["test_rmse"] for r in res.runs}, res


def test_decay_lowers_test_error_on_d2l():
    rmse, res = _test_rmse(
        {
            "data": {"source": "d2l"},
            "model": {"kind": "linear"},
            "train": {"lr": 0.003, "epochs": 60, "batch_size": 5},
            "decay": {"modes": ["l2"], "weight_decay": [0, 3]},
        }
    )
    assert rmse[3.0] < 0.5 * rmse[0.0]  # measured here: 0.14 vs 0.50
    assert res.selection[0]["best_wd"] == 3.0 and res.selection[0]["chosen_on"] == "val"
    head = res.table().splitlines()[0].split()  # the metric's columns by its key: not "RMS"
    assert head[-4:] == ["rmse", "test", "rmse", "|w|"] and "RMS" not in head


def test_decay_lowers_test_error_on_teacher_regression():
    rmse, res = _test_rmse(
        {
            "data": {
                "source": "teacher",
                "options": {"n": 80, "d": 60, "noise": 2.0, "sigma_w": 0.5},
            },
            "model": {"kind": "linear"},
            "train": {"lr": 0.05, "epochs": 200},
            "decay": {"modes": ["coupled"], "weight_decay": [0, 0.1, 0.5, 2.0]},
        }
    )
    best = res.selection[0]["best_wd"]
    assert best > 0 and rmse[best] < rmse[0.0] - 0.05
    assert res.data["alpha_star"] == pytest.approx(16.0)


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match=r"unknown key train\.epoch; valid: optimizer, lr"):
        validate({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"unknown section \[trian\]"):
        validate({"trian": {}})
    with pytest.raises(ValueError, match=r"decay\.modes: 'adamw' is not allowed; valid: none"):
        validate({"decay": {"modes": ["adamw"]}})
    with pytest.raises(ValueError, match=r"train\.epochs: expected an integer >= 1"):
        validate({"train": {"epochs": 0}})
    with pytest.raises(ValueError, match=r"decay\.weight_decay: weight decays must be"):
        validate({"decay": {"weight_decay": [-1]}})
    with pytest.raises(ValueError, match=r"data\.target"):
        validate({"data": {"source": "x.csv"}})
    assert parse_float_list("1e-4..1e-1:4", "k") == [1e-4, 1e-3, 1e-2, 1e-1]
    assert validate({"train": {"seeds": "3"}})["train"]["seeds"] == [0, 1, 2]


def test_flags_override_the_file(tmp_path):
    cfg = load_config(ROOT / "examples" / "d2l.toml")
    assert cfg["train"]["epochs"] == 100
    merged = merge(cfg, {"train.epochs": 7, "decay.weight_decay": "0,1"})
    assert merged["train"]["epochs"] == 7 and merged["decay"]["weight_decay"] == [0.0, 1.0]
    assert merged["train"]["lr"] == cfg["train"]["lr"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_run_at_reduced_size(path, tmp_path, capsys):
    args = [
        "run",
        str(path),
        "--epochs",
        "3",
        "--eval-every",
        "1",
        "--out",
        str(tmp_path),
        "--json",
    ]
    if "article" in path.name:
        args += ["--data", "seed-noise"]
    rc = main(args)
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] and all(r["status"] == "done" for r in doc["runs"])
    assert (tmp_path / "losses.png").exists() and (tmp_path / "curves.csv").exists()
    with (tmp_path / "curves.csv").open() as fh:  # each run's rows are told apart
        rows = list(csv.DictReader(fh))
    named = {tuple(r[k] for k in ("mode", "weight_decay", "lr", "seed")) for r in rows}
    assert len(named) == len(doc["runs"]) and len(rows) == 3 * len(doc["runs"])


@pytest.mark.parametrize(
    "source, model",
    [
        ("seed-noise", "seed-mlp"),
        ("teacher", "linear"),
        ("teacher-classification", "mlp"),
        ("d2l", "linear"),
        ("digits", "mlp"),
        ("breast_cancer", "linear"),
        ("wine", "mlp"),
        ("diabetes", "mlp"),
    ],
)
def test_every_source_runs_from_the_cli(source, model, tmp_path, capsys):
    args = [
        "run",
        "--data",
        source,
        "--model",
        model,
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
        "--json",
    ]
    if source == "seed-noise":
        args += ["--data-seed", "0"]
    if model == "mlp":
        args += ["--hidden", "8"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"]["name"] == source and doc["runs"]


def test_run_cli_custom_model_and_table(tmp_path, capsys):
    rc = main(
        [
            "run",
            "--data",
            "wine",
            "--model",
            "custom_model:make",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--mode",
            "l2,decoupled",
            "--wd",
            "0,1e-3",
            "--epochs",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "chosen on val accuracy" in out and "decoupled" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        # each named by its key and flag, as the README says (a new-user trial: the first and
        # the group_wd were not)
        (["--data", "mnist"], "data.source (--data): unknown data 'mnist'"),
        (["--data", "/nonexistent/x.csv", "--target", "y"], "data file not found"),
        (
            ["--data", "wine", "--group-wd", "zzz.*=1e-3"],
            "decay.group_wd (--group-wd): weight decay for 'zzz.*': the pattern matches no",
        ),
        (["--data", "wine", "--mode", "bogus"], "decay.modes"),
        (["--data", "wine", "--wd", "-1"], "decay.weight_decay"),
        (["--data", "wine", "--model", "nomodule:make"], "cannot load model factory"),
        (["/nonexistent.toml"], "config file not found"),
    ],
)
def test_run_bad_input(args, fragment, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", "run", *args, "--epochs", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_run_bad_file_input(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    a[0] = np.nan
    path = _table(tmp_path, a=a, y=rng.integers(0, 2, 30))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wdlab.cli",
            "run",
            "--data",
            path,
            "--target",
            "y",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "missing values in 1 rows, columns: a (1)" in proc.stderr
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train]\nepochz = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", "run", str(bad_toml), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown key train.epochz" in proc.stderr


def test_new_config_keys_are_checked_and_reach_the_engine(tmp_path):
    cfg = validate(
        {
            "data": {"source": "wine", "train_size": 40},
            "model": {"kind": "cnn", "hidden": [4], "batchnorm": True, "dropout": 0.25},
            "train": {"select": "loss", "early_stopping": True, "diagnostics": ["rotation"]},
        }
    )
    ds = load_data(cfg.data)
    spec = model_spec(cfg.model, ds)
    assert (spec.batchnorm, spec.dropout, spec.in_shape) == (True, 0.25, ())  # flat rows
    assert spec.build()(ds.X_train[:3]).shape == (3, 3)  # a CNN reads them as signals
    images = validate({"data": {"source": "digits-images"}, "model": {"kind": "cnn"}})
    assert model_spec(images.model, load_data(images.data)).in_shape == (1, 8, 8)
    assert cfg.train.select == "loss" and cfg.train.early_stopping is True
    assert cfg.train.train_kwargs(0)["diagnostics"] == ("rotation",)
    for raw, fragment in [
        ({"model": {"dropout": 1.0}}, r"model\.dropout: expected a probability in \[0, 1\)"),
        ({"model": {"batchnorm": "yes"}}, r"model\.batchnorm: expected true or false"),
        ({"train": {"select": "f1"}}, r"train\.select: 'f1' is not allowed; valid: auto, loss"),
        ({"train": {"diagnostics": ["spin"]}}, r"train\.diagnostics: unknown diagnostic 'spin'"),
        ({"data": {"train_size": -1}}, r"data\.train_size: expected an integer >= 0"),
        ({"train": {"device": "bogus"}}, r"train\.device: unknown device 'bogus'"),
        ({"train": {"options": {"amsgrad": 1}, "optimizer": "adam"}}, "amsgrad: expected true"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            validate(raw)
    # the flags are generated from the schema like every other key
    args = [
        "--data", "wine", "--model", "cnn", "--batchnorm", "--dropout", "0.5", "--select",
        "acc", "--early-stopping", "--diagnostics", "rotation", "--train-size", "30",
    ]  # fmt: skip
    from wdlab.cli import build_parser
    from wdlab.cli.experiment import experiment_config

    merged = experiment_config(build_parser().parse_args(["run", *args]))
    assert merged.model.batchnorm and merged.model.dropout == 0.5
    assert merged.train.select == "acc" and merged.train.early_stopping
    assert merged.train.diagnostics == ["rotation"] and merged.data.train_size == 30
    # a kind that has no such option says it ignores it: linear has no BatchNorm
    with pytest.warns(UserWarning, match=r"model\.batchnorm is not one of the linear model's"):
        validate({"model": {"kind": "linear", "batchnorm": True}})


def test_a_model_option_its_kind_does_not_read_is_said_to_be_ignored(capsys):
    """``--model seed-mlp --hidden 5 --layernorm`` trained the article's MLP without them, in
    silence (found by a new-user trial). Each kind names the options it reads
    (``ModelKind.options``); another one set away from its default is one warning, in the
    config and in inspect. Not a refusal: the same file with another ``--model`` still runs,
    and a study made with such an option resumes (its identity is unchanged)."""
    import warnings

    from wdlab.cli import main
    from wdlab.models import MODEL_KINDS, MODEL_OPTIONS

    assert all(set(k.options) <= set(MODEL_OPTIONS) for k in MODEL_KINDS.values())
    for kind, option, value, whose in [
        ("seed-mlp", "hidden", [5], "the seed-mlp model's options (it has none)"),
        ("seed-mlp", "layernorm", True, "the seed-mlp model's"),
        ("linear", "activation", "gelu", "the linear model's"),
        ("cnn", "layernorm", True, "the cnn model's options (hidden, batchnorm, dropout)"),
        ("mlp", "dropout", 0.5, "the mlp model's"),
        ("tests/custom_model.py:make", "hidden", [8], "a model factory's"),
    ]:
        with pytest.warns(UserWarning, match=rf"model\.{option} is not one of {re.escape(whose)}"):
            cfg = validate({"model": {"kind": kind, option: value}})
        assert getattr(cfg.model, option) == value  # kept: the study's identity is unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate({"model": {"kind": "seed-mlp", "hidden": [64]}})  # the default: nothing set
        validate({"model": {"kind": "mlp", "hidden": [8], "activation": "gelu"}})
    assert main(["inspect", "seed-mlp", "--in-dim", "3", "--hidden", "5"]) == 0
    assert "--hidden is not one of the seed-mlp model's options" in capsys.readouterr().err


def test_a_factory_in_the_file_names_the_model_unless_a_built_in_kind_is_named():
    """Found by a new-user trial: ``[model] factory = "file.py:make"`` with no ``kind``
    trained the built-in MLP (kind's default) in silence, and ``model()`` gave it back. A
    factory with no kind is kind ``custom``; beside a built-in kind named in the file (or by
    ``--model mlp`` over such a file) it is not read, and one warning says so."""
    cfg = validate({"model": {"factory": "tests/custom_model.py:make"}})
    assert (cfg.model.kind, cfg.model.factory) == ("custom", "tests/custom_model.py:make")
    with pytest.warns(UserWarning, match=r"model\.factory '.*' is not read: kind 'mlp' is a"):
        cfg = validate({"model": {"kind": "mlp", "factory": "tests/custom_model.py:make"}})
    assert cfg.model.kind == "mlp"
    file = validate({"model": {"factory": "tests/custom_model.py:make"}})
    with pytest.warns(UserWarning, match="is not read: kind 'linear'"):
        merge(file, {"model.kind": "linear"})


def test_a_cli_command_says_each_warning_once(tmp_path):
    """Found by a checking helper: ``wdlab sweep c.toml`` printed "model.factory … is not
    read" twice (the file's config is checked, then checked again with the flags applied).
    A command says each warning line once."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[data]\nsource = "wine"\n[model]\nkind = "mlp"\n'
        f'factory = "{Path("tests/custom_model.py").resolve()}:make"\n'
        "[train]\nepochs = 1\n[decay]\nweight_decay = [0.0, 0.01]\n"
    )
    argv = ["sweep", str(config), "--out", str(tmp_path / "s"), "--seeds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *argv], capture_output=True, text=True, timeout=600
    )  # as a shell runs it: pytest records warnings in process
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sum("model.factory" in line and "is not read" in line for line in lines) == 1


def test_split_keys_a_data_function_does_not_read_are_said_to_be_ignored(tmp_path):
    """Found by a new-user trial: ``val_size = 0.5`` with ``source = "file.py:make_data"``
    (no val split returned) was accepted and stored, and 20% of the training rows were held
    out. The keys that build splits from a built-in source or a table are one warning there."""
    from wdlab.pipelines.experiment import load_data

    (tmp_path / "d.py").write_text(
        "import torch\n"
        "def make_data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.randn(50, 3, generator=g), torch.randint(0, 2, (50,), generator=g)\n"
        "    return {'train': (x[:40], y[:40]), 'test': (x[40:], y[40:])}\n"
    )
    source = f"{tmp_path / 'd.py'}:make_data"
    cfg = validate({"data": {"source": source, "val_size": 0.5, "options": {"n": 5}}})
    with pytest.warns(UserWarning, match=r"^data\.val_size, data\.options: not read for "):
        ds = load_data(cfg.data)
    assert len(ds.y_val) == 8  # 20% of the 40 training rows: val_size was not read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(validate({"data": {"source": source}}).data)  # nothing set: nothing said


def test_train_size_subsamples_the_training_split_only():
    full = load_data(validate({"data": {"source": "wine"}}).data)
    part = load_data(validate({"data": {"source": "wine", "train_size": 25}}).data)
    again = load_data(validate({"data": {"source": "wine", "train_size": 25}}).data)
    assert len(part.y_train) == 25 and part.X_train.equal(again.X_train)  # seeded
    assert part.X_val.equal(full.X_val) and part.X_test.equal(full.X_test)
    rows = {tuple(r) for r in full.X_train.tolist()}
    assert all(tuple(r) in rows for r in part.X_train.tolist())
    assert part.meta["train_size"] == 25 and part.meta["n_train_full"] == len(full.y_train)
    with pytest.raises(ValueError, match=r"data\.train_size: 5000 is more than the 106"):
        load_data(validate({"data": {"source": "wine", "train_size": 5000}}).data)


def test_a_study_made_before_the_new_keys_keeps_its_identity():
    """Keys added after wdlab 0.2 are left out of the identity at their defaults, so a study
    made by 0.2 (whose stored config lacks them) resumes, in the same default folder."""
    from wdlab.config import LATER_KEYS, NOT_IDENTITY
    from wdlab.pipelines import default_out
    from wdlab.store import hash_config

    cfg = validate({"data": {"source": "wine"}})
    old = cfg.to_dict()
    for keys in (LATER_KEYS, NOT_IDENTITY):  # (keys that change no number: never identity)
        for section, names in keys.items():
            for name in names:
                del old[section][name]
    assert cfg.identity() == old
    assert default_out(cfg).name == f"sweep-wine-{hash_config(old)}"
    changed = validate({"data": {"source": "wine"}, "train": {"select": "loss"}})
    assert hash_config(changed.identity()) != hash_config(old)


def test_optimizer_options_are_normalised():
    cfg = validate({"train": {"optimizer": "adam", "options": {"betas": [0.8, 0.99]}}})
    assert cfg.train.options == {"betas": (0.8, 0.99)}
    assert grid(cfg)[0].options == (("betas", (0.8, 0.99)),)


def test_a_factory_in_the_current_directory_loads_by_module_or_by_path(tmp_path):
    """``wdlab`` (the installed script, whose sys.path lacks the current directory) finds
    ``mypkg.models:make`` and ``mypkg/models.py:make`` where the user stands; a factory that
    seeds torch with its ``seed`` is never given ``None``."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "import torch\n\n\n"
        "def make(in_dim, out_dim, seed):\n"
        "    torch.manual_seed(seed)\n"
        "    return torch.nn.Linear(in_dim, out_dim)\n"
    )
    script = Path(sys.executable).with_name("wdlab")
    for i, model in enumerate(["mypkg.models:make", "mypkg/models.py:make"]):
        args = ["run", "--data", "wine", "--model", model, "--seeds", "2", "--epochs", "2"]
        proc = subprocess.run(
            [str(script), *args, "--out", f"o{i}", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        runs = json.loads(proc.stdout)["runs"]
        assert {r["config"]["seed"] for r in runs} == {0, 1}


@pytest.mark.parametrize("kind", ["mlp", "linear", "seed-mlp"])
def test_the_flat_built_in_models_train_on_images(kind, tmp_path):
    """A new-user trial: ``wdlab run --data digits-images`` (the default model, mlp) was
    refused, "the model fails on inputs of shape (1, 8, 8)": the trainer feeds a built-in MLP
    its images flat, but the memory estimate's forward gave it one unflattened. Now the
    estimate reads the example as the trainer feeds it, and the run trains."""
    cfg = {
        "data": {"source": "digits-images", "train_size": 64},
        "model": {"kind": kind},
        "train": {"epochs": 1, "lr": [0.01], "seeds": [0]},
        "decay": {"modes": ["decoupled"], "weight_decay": [1e-3]},
    }
    res = run_experiment(cfg)
    assert res.counts["done"] == sum(res.counts.values()) == 2  # wd 1e-3 and wd = 0


def test_a_flag_switches_off_what_the_file_switched_on(tmp_path, capsys):
    """A new-user trial: a file's ``early_stopping = true`` (or batchnorm, layernorm, prune)
    could not be switched off from the command line: the flags only set true. Each has its
    ``--no-`` form, and a flag given neither way leaves the file's value."""
    toml = tmp_path / "on.toml"
    toml.write_text(
        '[data]\nsource = "wine"\n[model]\nkind = "mlp"\nhidden = [4]\nbatchnorm = true\n'
        "[train]\nepochs = 2\nseeds = 1\nlr = [0.01]\nearly_stopping = true\n"
        "[decay]\nweight_decay = [0.001]\n"
    )
    for extra, expected in (([], True), (["--no-early-stopping", "--no-batchnorm"], False)):
        assert main(["run", str(toml), "--json", *extra]) == 0
        config = json.loads(capsys.readouterr().out)["config"]
        assert config["train"]["early_stopping"] is expected
        assert config["model"]["batchnorm"] is expected


def test_a_key_written_at_the_top_of_a_file_is_told_its_section():
    """A new-user trial: a file starting ``epochs = 3`` was told "unknown section [epochs]"."""
    with pytest.raises(ValueError, match=r"^epochs is a key of \[train\], not a section"):
        validate({"epochs": 3})
    with pytest.raises(ValueError, match=r"^unknown section \[trian\]; valid: data, model"):
        validate({"trian": {"epochs": 3}})
