"""wdlab.optuna and ``wdlab search``: an Optuna study's trials trained K at a time as one batch,
reported per evaluation (so pruners work), told their validation value; bad input refused
before anything is stored."""

import argparse
import collections
import hashlib
import json
import math
import re
import sqlite3
import subprocess
import sys
import warnings

import pytest
import torch

optuna = pytest.importorskip("optuna")

from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

import wdlab  # noqa: E402
import wdlab.optuna as wo  # noqa: E402
import wdlab.optuna.trials as wo_trials  # noqa: E402
from wdlab.cli import main  # noqa: E402
from wdlab.data import load  # noqa: E402
from wdlab.models import ModelSpec  # noqa: E402
from wdlab.records import RunConfig  # noqa: E402
from wdlab.trainer import train  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": FloatDistribution(1e-3, 1e-1, log=True),
    "weight_decay": FloatDistribution(1e-6, 1.0, log=True),
    "mode": CategoricalDistribution(["decoupled", "l2"]),
}
SMALL = {"epochs": 3, "batch_size": 64}


def study(direction="maximize", sampler=None, pruner=None, storage=None):
    return optuna.create_study(
        direction=direction,
        sampler=sampler or optuna.samplers.TPESampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
        storage=storage,
    )


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_told_values_are_the_batch_runs_values():
    """Each trial's intermediate values and final value are its configuration's validation
    accuracy per epoch, exactly as the same batch trained by wdlab.trainer.train gives them
    (the trainer reorders rows; the values must come back to the right trial)."""
    s = study()
    result = wo.optimize(s, "mlp", "wine", SPACE, n_trials=4, batch=4, **SMALL)
    assert result.batches == 1 and result.counts() == {"complete": 4}
    ds = load("wine")
    spec = ModelSpec(  # "mlp" as named: the [model] defaults, as --model mlp builds it
        "mlp", in_dim=ds.in_dim, out_dim=ds.out_dim, in_shape=ds.in_shape, hidden=(64,),
        activation="relu",
    )  # fmt: skip
    configs = [
        RunConfig(t.params["mode"], t.params["weight_decay"], t.params["lr"], "adamw", (), 0, "x")
        for t in result.trials
    ]
    runs = train(spec, ds, configs, epochs=3, eval_every=1, batch_size=64, shuffle_seed=0)
    for trial, run in zip(result.trials, runs, strict=True):
        assert trial.value == run.final["val_acc"]
        assert trial.intermediate_values == dict(
            zip([e + 1 for e in run.curves.eval_epoch], run.curves["val_acc"], strict=True)
        )
        assert trial.user_attrs["test_acc"] == run.final["test_acc"]
    assert result.metric == "val_acc" and result.direction == "maximize"


class PruneOdd(optuna.pruners.BasePruner):
    """Prunes the odd-numbered trials once they report step 2 (deterministic)."""

    def prune(self, study, trial):
        return trial.number % 2 == 1 and trial.last_step is not None and trial.last_step >= 2


def test_pruned_trials_are_told_during_the_batch_and_frozen():
    s = study(pruner=PruneOdd())
    result = wo.optimize(s, "mlp", "wine", SPACE, n_trials=4, batch=4, epochs=4, batch_size=64)
    by_state = {t.number: t for t in result.trials}
    for n in (1, 3):
        t = by_state[n]
        assert t.state == TrialState.PRUNED
        assert sorted(t.intermediate_values) == [1, 2]  # nothing reported after its pruning
    for n in (0, 2):
        t = by_state[n]
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
        # told while the batch was still training, before any complete trial was told
        assert by_state[1].datetime_complete < t.datetime_complete
    assert result.counts() == {"complete": 2, "pruned": 2}


def test_median_pruner_prunes_later_batches():
    """Optuna's own MedianPruner, fed by the per-epoch reports: trials of later batches that
    fall below the median of the completed ones are pruned."""
    s = study(pruner=optuna.pruners.MedianPruner(n_startup_trials=4))
    space = {"lr": FloatDistribution(1e-5, 1.0, log=True)}
    result = wo.optimize(s, "mlp", "wine", space, n_trials=16, batch=4, **SMALL)
    states = [t.state for t in result.trials]
    assert states[:4] == [TrialState.COMPLETE] * 4  # nothing completed yet: nothing pruned
    assert TrialState.PRUNED in states[4:]
    assert result.batches == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_any_sampler(sampler):
    from wdlab.cli.search import SAMPLERS

    s = study(sampler=SAMPLERS[sampler].make(optuna, 0, 2))
    space = {"lr": SPACE["lr"], "wd": SPACE["weight_decay"]}
    result = wo.optimize(s, "mlp", "wine", space, n_trials=6, batch=3, epochs=2, batch_size=64)
    assert result.counts() == {"complete": 6}
    assert len({t.params["lr"] for t in result.trials}) == 6  # six configurations proposed


def test_parameter_importance_and_seeds():
    """Importance works on the study as on any Optuna study; with seeds each trial's value is
    the mean of its seeds', their spread kept beside it."""
    s = study()
    result = wo.optimize(s, "mlp", "wine", SPACE, n_trials=6, batch=6, seeds=2, **SMALL)
    imp = optuna.importance.get_param_importances(s)
    assert set(imp) == {"lr", "weight_decay", "mode"}
    assert math.isclose(sum(imp.values()), 1.0)
    assert result.importance() == imp
    t = result.trials[0]
    assert t.user_attrs["val_acc_std"] >= 0
    assert 0 <= t.value <= 1 and t.value == result.study.trials[0].value


def test_diverged_trial_is_a_failure():
    """SGD at lr = 1000 on a regression (RMSE: lower is better) diverges: told FAIL."""
    s = study(direction="minimize")
    space = {"lr": CategoricalDistribution([1e3])}
    kw = SMALL | {"optimizer": "sgd"}
    result = wo.optimize(s, "mlp", "diabetes", space, n_trials=1, batch=1, **kw)
    (t,) = result.trials
    assert t.state == TrialState.FAIL and t.user_attrs["status"] == "diverged"
    assert result.best_trial is None and "no complete trial" in repr(result)


def test_optimizer_keywords_and_an_optimizer_choice():
    s = study()
    space = {
        "optimizer": CategoricalDistribution(["sgd", "adamw"]),
        "lr": FloatDistribution(1e-3, 1e-1, log=True),
    }
    result = wo.optimize(s, "mlp", "wine", space, n_trials=4, batch=4, **SMALL)
    assert result.counts() == {"complete": 4}
    s2 = study()
    space2 = {"momentum": FloatDistribution(0.0, 0.99)}
    r2 = wo.optimize(s2, "mlp", "wine", space2, n_trials=2, batch=2, optimizer="sgd", **SMALL)
    assert r2.counts() == {"complete": 2}


def test_a_study_resumes_where_it_stopped(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = study(storage=url)
    wo.optimize(s, "mlp", "wine", SPACE, n_trials=3, batch=3, **SMALL)
    again = optuna.load_study(study_name=s.study_name, storage=url)
    wo.optimize(again, "mlp", "wine", SPACE, n_trials=2, batch=2, **SMALL)
    assert len(again.trials) == 5
    assert again.user_attrs["wdlab"]["data"] == "wine"


class Noisy(torch.utils.data.Dataset):
    """A random transform in ``__getitem__`` (fresh noise each call), counting its calls."""

    def __init__(self, X, y, noise=0.1):
        self.X, self.y, self.noise = X, y, noise
        self.calls = collections.Counter()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.calls[i] += 1
        return self.X[i] + self.noise * torch.randn_like(self.X[i]), self.y[i]


def _mlp(seed=0):
    """A factory: its output width gives the streams' classes (a built-in kind would need
    them counted, one more read of every item)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_a_dataset_with_a_random_transform_is_read_afresh_each_epoch():
    """Datasets stream as in wdlab.sweep (they were read into memory once, the augmentation
    frozen): each training item is read once per epoch to train and once per evaluation pass
    (the train split in eval mode after each epoch), plus the sample the facts are read from;
    the stream's fingerprint joins the search's identity."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    data = {
        "train": Noisy(X[:80], y[:80]),
        "val": Noisy(X[80:100], y[80:100], 0.0),
        "test": Noisy(X[100:], y[100:], 0.0),
    }
    space = {"lr": SPACE["lr"]}
    kw = {"epochs": 2, "batch_size": 16, "eval_every": 1}
    result = wo.optimize(study(), _mlp, data, space, n_trials=2, batch=2, **kw)
    assert result.counts() == {"complete": 2} and result.batches == 1
    calls = data["train"].calls
    assert min(calls[i] for i in range(80)) >= 4  # 2 epochs x (train + evaluation)
    assert max(calls[i] for i in range(80)) <= 5  # ... + the 32 sampled for the facts
    assert min(data["val"].calls[i] for i in range(20)) >= 2  # evaluated each epoch
    assert "fingerprint" in result.study.user_attrs["wdlab"]


def test_one_make_loader_is_the_data_of_every_split():
    """A single ``make_loader(split, seed, epoch)`` given as data is the factory of every split,
    as in wdlab.sweep: the trials are told what the mapping of the three splits to it gives."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()

    def make_loader(split, seed, epoch):
        part = {"train": slice(0, 80), "val": slice(80, 100), "test": slice(100, 120)}[split]
        order = torch.Generator().manual_seed(seed * 1000 + epoch)
        ds = torch.utils.data.TensorDataset(X[part], y[part])
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False, generator=order)

    every = {split: make_loader for split in ("train", "val", "test")}
    told = [
        [t.value for t in wo.optimize(study(), _mlp, data, {"lr": SPACE["lr"]}, n_trials=2,
                                      batch=2, epochs=2).study.trials]
        for data in (make_loader, every)
    ]  # fmt: skip
    assert told[0] == told[1] and all(math.isfinite(v) for v in told[0])


def _wine_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(13, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


RECIPE = {
    "optimizer": "adamw",
    "lr": 0.01,
    "batch_size": 32,
    "steps": 20,
    "schedule": "warmup-cosine:5",
    "clip_grad_norm": 0.5,
    "wd_schedule": "linear:0.01:0.1:20",
    "group_wd": {"0.weight": 0.05},
    "select": "loss",
}


def test_a_trial_trains_the_recipe_wdlab_sweep_trains():
    """steps, warm-up, clipping, a weight-decay schedule and a group's own weight decay reach
    the trials as they reach wdlab.sweep's runs: the trial's value is the sweep's validation
    loss for the same configuration (one plan, one engine: the same computation), and the
    recipe joins the study's identity."""
    swept = wdlab.sweep(_wine_mlp, "wine", weight_decay=[0.01], modes="decoupled", **RECIPE)
    rows = swept.to_pandas()
    (expected,) = rows[rows.weight_decay == 0.01].val_loss
    s = study(direction="minimize")
    space = {"weight_decay": CategoricalDistribution([0.01])}
    wo.optimize(s, _wine_mlp, "wine", space, n_trials=1, batch=1, mode="decoupled", **RECIPE)
    assert math.isclose(s.trials[0].value, expected, rel_tol=1e-6)
    ident = s.user_attrs["wdlab"]
    assert (ident["steps"], ident["clip_grad_norm"]) == (20, 0.5)
    assert ident["wd_schedule"] == "linear:0.01:0.1:20"
    assert ident["group_wd"] == [["0.weight", 0.05]]


def test_a_users_loss_trains_the_trials_as_it_trains_a_sweep_and_joins_the_identity():
    """loss= (label smoothing here): the trial's value is wdlab.sweep's validation loss for
    the same configuration and loss; the study records the loss, and another is refused; a
    loss that is not callable is one line before anything is asked."""
    smooth = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    kw = RECIPE | {"loss": smooth}
    swept = wdlab.sweep(_wine_mlp, "wine", weight_decay=[0.01], modes="decoupled", **kw)
    rows = swept.to_pandas()
    (expected,) = rows[rows.weight_decay == 0.01].val_loss
    plain = wdlab.sweep(_wine_mlp, "wine", weight_decay=[0.01], modes="decoupled", **RECIPE)
    assert not math.isclose(expected, plain.to_pandas().val_loss.iloc[-1], rel_tol=1e-3)
    s = study(direction="minimize")
    space = {"weight_decay": CategoricalDistribution([0.01])}
    wo.optimize(s, _wine_mlp, "wine", space, n_trials=1, batch=1, mode="decoupled", **kw)
    assert math.isclose(s.trials[0].value, expected, rel_tol=1e-6)
    assert s.user_attrs["wdlab"]["loss"]["name"] == "CrossEntropyLoss()"
    with pytest.raises(ValueError, match="loss"):
        wo.optimize(s, _wine_mlp, "wine", space, n_trials=1, batch=1, mode="decoupled", **RECIPE)
    with pytest.raises(ValueError, match="loss must be a function fn"):
        wo.optimize(study(), _wine_mlp, "wine", space, n_trials=1, batch=1, loss=3)
    with pytest.raises(ValueError, match="loss must be a function fn"):
        wdlab.sweep(_wine_mlp, "wine", weight_decay=[0.01], epochs=1, loss="mse")
    bad = torch.nn.CrossEntropyLoss(label_smoothing=1.5)  # torch refused it only as it trained
    with pytest.raises(ValueError, match=r"label_smoothing=1.5\): label smoothing must be between"):
        wdlab.sweep(_wine_mlp, "wine", weight_decay=[0.01], epochs=1, loss=bad)
    with pytest.raises(ValueError, match=r"label_smoothing=1.5\)"):
        wo.optimize(study(), _wine_mlp, "wine", space, n_trials=1, batch=1, loss=bad)
    assert len(s.trials) == 1


def test_the_recipe_is_checked_by_the_config_declaration():
    """optimize's recipe keywords are checked by the config schema's keys, with its words."""
    space = {"weight_decay": CategoricalDistribution([0.01])}
    with pytest.raises(ValueError, match=r"train\.clip_grad_norm") as info:
        wo.optimize(study(), "mlp", "wine", space, n_trials=1, clip_grad_norm=-1.0, **SMALL)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"decay\.wd_schedule"):
        wo.optimize(study(), "mlp", "wine", space, n_trials=1, wd_schedule="nope", **SMALL)


# -- bad input: one line, nothing stored -------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "the space is empty"),
        ({"mode": FloatDistribution(0, 1)}, "mode: a FloatDistribution cannot choose"),
        ({"lr": FloatDistribution(0.0, 1.0)}, "lr: every value must be a finite number > 0"),
        ({"mode": CategoricalDistribution(["decoupled", "nope"])}, "'nope' is not a decay mode"),
        ({"momentum": FloatDistribution(0.0, 0.9)}, "momentum: AdamW has no option 'momentum'"),
        ({"lr": 0.1}, "lr: expected an Optuna distribution"),
        ({"wd": IntDistribution(0, 3), "weight_decay": IntDistribution(0, 3)}, "twice"),
    ],
)
def test_a_bad_space_is_refused_before_anything_is_stored(tmp_path, space, message):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = study(storage=url)
    before = digest(tmp_path / "s.db")
    with pytest.raises(ValueError, match=message) as info:
        wo.optimize(s, "mlp", "wine", space, n_trials=2, batch=2, **SMALL)
    assert "\n" not in str(info.value)
    assert digest(tmp_path / "s.db") == before and s.trials == [] and s.user_attrs == {}


def test_a_study_resumed_with_other_fixed_values_is_refused(tmp_path):
    """What the space does not search is the study's too: resumed with another optimizer,
    weight decay, mode or optimizer option, a search is refused in one line with the storage
    unchanged (all four were accepted and mixed trials no parameter told apart; found by a
    new-user trial). A study recorded before these were kept resumes as before."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    lr_only = {"lr": SPACE["lr"]}
    wo.optimize(study(storage=url), "mlp", "wine", lr_only, n_trials=2, batch=2, **SMALL)
    before = digest(tmp_path / "s.db")
    for other, said in [
        ({"optimizer": "sgd"}, "optimizer = 'adamw', not 'sgd'"),
        ({"weight_decay": 0.5}, "weight_decay = 0.0, not 0.5"),
        ({"mode": "l2", "weight_decay": 0.0}, "mode = 'decoupled', not 'l2'"),
        ({"options": {"betas": (0.5, 0.6)}}, "options = {}, not {'betas': [0.5, 0.6]}"),
    ]:
        s = optuna.load_study(study_name=study_name(url), storage=url)
        with pytest.raises(ValueError, match=re.escape(said)):
            wo.optimize(s, "mlp", "wine", lr_only, n_trials=2, batch=2, **SMALL, **other)
        assert digest(tmp_path / "s.db") == before
    s = optuna.load_study(study_name=study_name(url), storage=url)
    attrs = dict(s.user_attrs["wdlab"])
    s.set_user_attr("wdlab", {k: v for k, v in attrs.items() if k not in wo_trials.FIXED})
    wo.optimize(s, "mlp", "wine", lr_only, n_trials=2, batch=2, **SMALL)  # former: accepted
    assert len(s.trials) == 4


def study_name(url):
    return optuna.get_all_study_names(url)[0]


def test_a_streamed_data_as_made_is_its_own_batch_size_and_seed_in_the_search(tmp_path):
    """The final review: a StreamedData given as made batches and is seeded as stream_splits
    made it, but the search recorded optimize's batch_size (default 128) and no seed: one
    study took trials at batch 8 and at batch 32 (or another seed) as one search."""
    from wdlab.data import stream_splits

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    splits = {"train": (x, y), "val": (x[:16], y[:16]), "test": (x[:16], y[:16])}
    url = f"sqlite:///{tmp_path / 's.db'}"
    lr_only = {"lr": SPACE["lr"]}

    def search(s, **made):
        return wo.optimize(s, "mlp", stream_splits(splits, **made), lr_only, n_trials=2, epochs=1)

    search(study(storage=url), batch_size=8)
    s = optuna.load_study(study_name=study_name(url), storage=url)
    assert s.user_attrs["wdlab"]["batch_size"] == 8
    before = digest(tmp_path / "s.db")
    for other, said in (
        ({"batch_size": 32}, "batch_size = 8, not 32"),
        ({"seed": 5}, "stream_seed"),
    ):
        with pytest.raises(ValueError, match=said):
            search(s, **{"batch_size": 8} | other)
        assert digest(tmp_path / "s.db") == before
    search(s, batch_size=8)
    assert len(s.trials) == 4


def test_another_direction_or_distribution_or_setting_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = study(direction="minimize", storage=url)
    before = digest(tmp_path / "s.db")
    with pytest.raises(ValueError, match=r"set to minimize, but .* higher-is-better"):
        wo.optimize(s, "mlp", "wine", SPACE, n_trials=2, batch=2, **SMALL)
    assert digest(tmp_path / "s.db") == before
    # select="loss" is lower-is-better: the same study is right for it
    wo.optimize(s, "mlp", "wine", SPACE, n_trials=2, batch=2, select="loss", **SMALL)
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 2
    before = digest(tmp_path / "s.db")
    other = dict(SPACE, lr=CategoricalDistribution([0.01, 0.1]))
    with pytest.raises(ValueError, match=r"lr: .* does not match the study's earlier trials"):
        wo.optimize(s, "mlp", "wine", other, n_trials=2, batch=2, select="loss", **SMALL)
    with pytest.raises(ValueError, match="searched with epochs = 3, not 4"):
        kw = SMALL | {"epochs": 4}
        wo.optimize(s, "mlp", "wine", SPACE, n_trials=2, batch=2, select="loss", **kw)
    with pytest.raises(ValueError, match="n_trials must be a positive integer"):
        wo.optimize(s, "mlp", "wine", SPACE, n_trials=0, batch=2, select="loss", **SMALL)
    assert digest(tmp_path / "s.db") == before and len(s.trials) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-6..1:log", FloatDistribution(1e-6, 1.0, log=True)),
        ("0..0.5", FloatDistribution(0.0, 0.5)),
        ("1e-4..1e-2:3", CategoricalDistribution([1e-4, 1e-3, 1e-2])),
        ("0,1e-3", CategoricalDistribution([0.0, 1e-3])),
        ("0.01", 0.01),
    ],
)
def test_ranges_written_as_text(text, expected):
    assert wo.parse_range("wd", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1..1e-6:log", "a range needs LO < HI"),
        ("0..1:log", "a log range needs LO > 0"),
        ("1e-3..1:x", "expected LO..HI, LO..HI:log or LO..HI:N"),
        ("a..b", "expected a number"),
        ("nan", "expected a finite number"),
    ],
)
def test_bad_ranges(text, message):
    with pytest.raises(ValueError, match=message):
        wo.parse_range("wd", text)


# -- the command line --------------------------------------------------------------------------

CLI = ["search", "--data", "wine", "--optimizer", "adamw", "--mode", "decoupled"]
CLI += ["--epochs", "2", "--batch-size", "64"]


def test_cli_search_into_a_sqlite_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = [*CLI, "--lr", "1e-3..1e-1:log", "--wd", "1e-6..1:log", "--mode", "decoupled,l2"]
    code = main([*args, "--trials", "6", "--batch", "3", "--storage", url, "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"complete": 6} and doc["batches"] == 2
    assert doc["study"] == "search-wine" and doc["metric"] == "val_acc"
    s = optuna.load_study(study_name="search-wine", storage=url)
    assert len(s.trials) == 6 and s.direction.name == "MAXIMIZE"
    assert set(optuna.importance.get_param_importances(s)) == {"lr", "wd", "mode"}
    # the same command again resumes the study; the table names the best trials
    assert main([*args, "--trials", "3", "--batch", "3", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "this search: 3 trials (" in out and ") in 1 batch\n" in out
    assert len(optuna.load_study(study_name="search-wine", storage=url).trials) == 9
    # --name names the study, as in sweep and run (a new-user trial: only --study-name did)
    assert main([*args, "--trials", "1", "--batch", "1", "--storage", url, "--name", "b"]) == 0
    assert sorted(optuna.get_all_study_names(url)) == ["b", "search-wine"]


def test_cli_default_space_is_weight_decay(capsys):
    assert main([*CLI, "--trials", "2", "--batch", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["best"]["params"]) == {"wd"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--wd", "1..1e-6:log"], "--wd 1..1e-6:log: a range needs LO < HI, got 1 >= 1e-06"),
        (["--mode", "decoupled,bogus"], "'bogus' is not a decay mode"),
        (["--select", "loss"], "the study is set to maximize"),
        (["--wd", "0,1e-3"], "does not match the study's earlier trials"),
    ],
)
def test_cli_bad_input_is_one_line_and_stores_nothing(tmp_path, capsys, extra, message):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    assert main([*CLI, "--trials", "1", "--batch", "1", "--storage", url]) == 0
    before = digest(db)
    capsys.readouterr()
    assert main([*CLI, "--trials", "1", "--storage", url, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert digest(db) == before
    fresh = tmp_path / "new.db"
    if "--select" not in extra and "0,1e-3" not in extra:
        assert main([*CLI, "--storage", f"sqlite:///{fresh}", *extra]) == 2
        assert not fresh.exists()


def test_cli_a_storage_that_is_not_a_url_is_named(tmp_path, capsys, monkeypatch):
    """--storage foo: one line naming the flag and the forms it takes (it was SQLAlchemy's
    ArgumentError blamed on "your code"; found by a new-user trial); nothing is made."""
    monkeypatch.chdir(tmp_path)
    for bad in ("foo", "sqlite:/x.db"):
        assert main([*CLI, "--trials", "1", "--storage", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--storage {bad}: not a storage URL" in err
        assert "your code" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_leaves_a_foreign_file_alone(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = digest(path)
    assert main([*CLI, "--storage", f"sqlite:///{path}"]) == 2
    assert "is not an Optuna storage; left as it is" in capsys.readouterr().err
    assert digest(path) == before
    # a new-user trial: a query string hid the file from the check, and Optuna's tables
    # were written into it
    assert main([*CLI, "--storage", f"sqlite:///{path}?timeout=30"]) == 2
    assert "is not an Optuna storage; left as it is" in capsys.readouterr().err
    assert digest(path) == before


def test_a_storage_url_with_a_query_resumes_and_memory_is_not_offered_to_a_dashboard(
    tmp_path, capsys
):
    """A new-user trial: the same search again with ``?timeout=30`` on its URL failed with
    "DuplicatedStudyError … (unexpected)"; ``sqlite://`` printed a dashboard command for a
    study that was gone."""
    url = f"sqlite:///{tmp_path / 's.db'}?timeout=30"
    for _ in range(2):
        assert main([*CLI, "--trials", "1", "--batch", "1", "--storage", url]) == 0
    assert len(optuna.load_study(study_name="search-wine", storage=url).trials) == 2
    assert f"dashboard: optuna-dashboard {url}" in capsys.readouterr().out
    assert main([*CLI, "--trials", "1", "--batch", "1", "--storage", "sqlite://"]) == 0
    out = capsys.readouterr().out
    assert "dashboard" not in out and "study: in memory" in out
    hidden = "postgresql://me:secret@db/x"
    assert wdlab.optuna.storage.shown_url(hidden) == "postgresql://me:***@db/x"


def test_search_help_imports_no_optuna():
    code = (
        "import sys; from wdlab.cli import build_parser; build_parser(); "
        "print('optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# -- a new user's mistakes: the rule by name, a failed first search, a misspelt parameter -------

WD_SPACE = {"weight_decay": FloatDistribution(1e-4, 1.0, log=True)}
TINY = {"n_trials": 2, "batch": 2, "epochs": 1, "batch_size": 64}


def test_a_rule_by_name_searches_as_in_sweep_and_is_recorded_by_name():
    """rule="timm" (as wdlab.sweep and --rule take it) trains; the study records "timm", and
    the same rule given as a DecayRule is the same search; another rule is refused."""
    s = study()
    result = wo.optimize(s, "linear", "wine", WD_SPACE, rule="timm", **TINY)
    assert result.counts() == {"complete": 2}
    assert s.user_attrs["wdlab"]["rule"] == "timm"
    wo.optimize(s, "linear", "wine", WD_SPACE, rule=wdlab.DecayRule.preset("timm"), **TINY)
    assert len(s.trials) == 4
    before = (len(s.trials), s.user_attrs)
    with pytest.raises(ValueError, match="searched with rule = 'timm', not 'default'"):
        wo.optimize(s, "linear", "wine", WD_SPACE, **TINY)
    with pytest.raises(ValueError, match="rule: 'timmm' is not a decay rule; valid: default"):
        wo.optimize(s, "linear", "wine", WD_SPACE, rule="timmm", **TINY)
    assert (len(s.trials), s.user_attrs) == before


def test_a_search_that_fails_in_training_leaves_the_study_open(monkeypatch):
    """An error in training after the trials were asked: they are told FAIL, but the study
    records no settings (it compares with nothing), so the same or another call searches it."""
    import wdlab.optuna.trials as trials

    def broken(self):
        raise RuntimeError("the device went away")

    with monkeypatch.context() as m:
        m.setattr(trials.Trainer, "run", broken)
        s = study()
        with pytest.raises(RuntimeError, match="went away"):
            wo.optimize(s, "linear", "wine", WD_SPACE, rule="timm", **TINY)
    assert [t.state for t in s.trials] == [TrialState.FAIL] * 2
    assert "wdlab" not in s.user_attrs
    result = wo.optimize(s, "linear", "wine", WD_SPACE, **TINY)  # another rule: nothing to compare
    assert result.counts() == {"complete": 2} and s.user_attrs["wdlab"]["rule"] == "default"


def test_a_study_recorded_by_the_former_form_is_still_comparable():
    """Studies stored the rule as repr(rule) ("DecayRule(everything=False, …)", or "'timm'"
    where a name was given): the same rule still searches them, their record left as it is;
    one whose record came from a search that stored no value is searched under the new one."""
    s = study()
    wo.optimize(s, "linear", "wine", WD_SPACE, **TINY)
    old = s.user_attrs["wdlab"] | {"rule": repr(wdlab.DecayRule())}
    s.set_user_attr("wdlab", old)
    wo.optimize(s, "linear", "wine", WD_SPACE, **TINY)
    assert len(s.trials) == 4 and s.user_attrs["wdlab"] == old
    failed = study()  # what rule="timm" left before: two FAIL trials and "'timm'"
    failed.set_user_attr("wdlab", old | {"rule": "'timm'"})
    for _ in range(2):
        failed.tell(failed.ask(WD_SPACE), state=TrialState.FAIL)
    wo.optimize(failed, "linear", "wine", WD_SPACE, **TINY)
    assert failed.user_attrs["wdlab"]["rule"] == "default"


@pytest.mark.parametrize(
    ("space", "extra"),
    [
        ({"wdd": FloatDistribution(0.1, 1.0)}, ""),
        ({"batch_size": IntDistribution(16, 64)}, "batch_size is a training setting"),
    ],
)
def test_a_misspelt_parameter_names_what_a_space_searches(space, extra):
    s = study()
    with pytest.raises(ValueError) as info:
        wo.optimize(s, "linear", "wine", space, **TINY)
    text = str(info.value)
    assert "\n" not in text and extra in text
    for name in ("lr", "weight_decay (wd)", "mode", "optimizer", "betas", "eps"):
        assert name in text
    assert s.trials == [] and s.user_attrs == {}


def test_cli_search_refuses_zero_seeds_and_a_missing_database_driver(tmp_path, capsys):
    assert main([*CLI, "--trials", "2", "--batch", "2", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.seeds (--seeds): expected a count >= 1, got 0" in err
    url = "postgresql://user:secret@localhost/db"
    assert main([*CLI, "--trials", "2", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the database driver 'psycopg" in err
    assert "secret" not in err


def test_the_models_decay_settings_are_checked_before_anything_is_asked(tmp_path):
    """A group_wd pattern that matches no decaying tensor failed in training, after the trials
    were asked (told FAIL): it is refused as wdlab.sweep refuses it, the storage untouched."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = study(storage=url)
    before = digest(tmp_path / "s.db")
    with pytest.raises(ValueError, match=r"'nomatch\.\*': the pattern matches no decaying"):
        wo.optimize(s, "linear", "wine", WD_SPACE, group_wd={"nomatch.*": 0.0}, **TINY)
    assert digest(tmp_path / "s.db") == before and s.trials == [] and s.user_attrs == {}


def test_a_conv_search_counts_its_activations_once_per_batch():
    """Trials of a convolutional model on the CPU train one configuration at a time: the
    memory budget holds their activations once beside every trial's weights, so a budget that
    fits that trains the 4 trials as one batch (each trial holding its own activations, as
    counted before, it would take 4)."""
    from torch import nn

    from wdlab.pipelines.memory import memory_need

    def conv(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 2))  # fmt: skip

    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 3, 32, 32, generator=g)
    y = (X[:, 0].mean((1, 2)) > 0).long()
    data = {"train": (X[:64], y[:64]), "val": (X[64:80], y[64:80]), "test": (X[80:], y[80:])}
    spec = ModelSpec("custom", factory=conv)
    ds = wdlab.data.Dataset("c", "multiclass", X[:64], y[:64], X[80:], y[80:], X[64:80],
                            y[64:80], 2)  # fmt: skip
    own, shared = memory_need(spec, ds, 32, 2, 1, "adamw", device=torch.device("cpu"))
    assert shared > own > 0
    budget = (shared + 4.5 * own) / 2**20
    assert budget * 2**20 < 2 * (own + shared)  # one configuration's own activations each: 1
    s = study()
    space = {"weight_decay": FloatDistribution(1e-6, 1.0, log=True)}
    result = wo.optimize(s, conv, data, space, n_trials=4, batch=4, epochs=2, batch_size=32,
                         max_memory_mb=budget)  # fmt: skip
    assert result.batches == 1
    assert len([t for t in s.trials if t.state == TrialState.COMPLETE]) == 4


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--prune"], "train.prune (--prune): successive halving is wdlab sweep's"),
        (["--prune", "--prune-rung", "1"], "train.prune (--prune)"),
        (["--checkpoint", "1"], "train.checkpoint (--checkpoint): a search trains"),
        (["--keep", "all"], "train.keep (--keep): a search keeps no trained weights"),
        (["--early-stopping", "--patience", "3"], "train.patience (--patience): a search never"),
    ],
)
def test_search_refuses_the_sweep_only_flags_it_would_ignore(tmp_path, capsys, flags, said):
    """--prune, --prune-eta/-rung, --checkpoint, --keep and --patience mean nothing to a
    search: each is one line and exit 2, nothing stored (they were accepted and silently
    ignored); its --help does not offer them."""
    flag, usage = flags[-2] if len(flags) > 2 else flags[0], _search_help()
    assert f"[{flag}]" not in usage and f"[{flag} " not in usage
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main([*CLI, "--trials", "2", "--batch", "2", "--storage", url, *flags]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "s.db").exists()


def _search_help() -> str:
    from wdlab.cli import COMMANDS as ALL

    (search,) = [c for c in ALL if c.name == "search"]
    p = argparse.ArgumentParser(prog="wdlab search")
    search.add_flags(p)
    return p.format_help()


def test_a_full_batch_is_named_so_when_a_study_is_refused(tmp_path, capsys):
    """A new-user trial: leaving --batch-size out on a study searched with 128 said "was
    searched with batch_size = 128, not None"; None is the full batch, said so."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    flags = [*CLI, "--wd", "1e-4..1:log", "--trials", "2", "--batch", "2", "--storage", url]
    assert main([*flags, "--batch-size", "16"]) == 0
    capsys.readouterr()
    assert main([*flags, "--batch-size", "0"]) == 2  # the last --batch-size given counts
    assert "was searched with batch_size = 16, not the full batch (--batch-size 0); use " in (
        capsys.readouterr().err
    )


def test_a_study_searched_on_another_network_is_refused(tmp_path, capsys):
    """The network is part of what a study searched: --hidden (a built-in kind's options) and
    a factory of the same name that builds another network are refused, nothing stored
    changed (they added trials of another network to the study)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    flags = [*CLI, "--wd", "1e-4..1:log", "--trials", "2", "--batch", "2", "--storage", url]
    assert main([*flags, "--hidden", "8"]) == 0
    before = digest(tmp_path / "s.db")
    capsys.readouterr()
    assert main([*flags, "--hidden", "16"]) == 2
    assert "was searched with network = {'kind': 'mlp', 'hidden': [8]" in capsys.readouterr().err
    assert digest(tmp_path / "s.db") == before

    def make(seed=0):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(13, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    s = study()
    wo.optimize(s, make, "wine", WD_SPACE, **TINY)
    assert len(s.trials) == 2

    def make(seed=0):  # another network under the same name
        torch.manual_seed(seed)
        return torch.nn.Linear(13, 3)

    with pytest.raises(ValueError, match="was searched with network = a factory's network"):
        wo.optimize(s, make, "wine", WD_SPACE, **TINY)
    assert len(s.trials) == 2
    # a study recorded before the network was: taken as this search's, said, and recorded
    # from then on, so that another network is refused next time
    s.set_user_attr("wdlab", {k: v for k, v in s.user_attrs["wdlab"].items() if k != "network"})
    with pytest.warns(UserWarning, match="searched before wdlab recorded its network"):
        wo.optimize(s, make, "wine", WD_SPACE, **TINY)
    assert len(s.trials) == 4 and "network" in s.user_attrs["wdlab"]


def test_a_file_shared_with_sweep_has_its_sweep_only_keys_warned_not_ignored(tmp_path, capsys):
    """An experiment file may serve wdlab sweep too: its keep, patience, prune… keys are not
    read by a search, and each is a warning (they ran silently; with patience and no early
    stopping the file's refusal sent the user in a circle)."""
    toml = tmp_path / "e.toml"
    toml.write_text(
        '[data]\nsource = "wine"\n[train]\noptimizer = "adamw"\nepochs = 2\nbatch_size = 64\n'
        'patience = 3\nkeep = "all"\nprune_eta = 2\n'
    )
    with pytest.warns(UserWarning) as seen:
        assert main(["search", str(toml), "--trials", "2", "--batch", "2"]) == 0
    said = [str(w.message) for w in seen if "is not read" in str(w.message)]
    assert [m.split(" = ")[0] for m in said] == [
        f"{toml}: train.prune_eta",
        f"{toml}: train.keep",
        f"{toml}: train.patience",
    ]


def test_a_resumed_cli_search_draws_new_trials_not_its_first_ones_again(tmp_path):
    """`wdlab search … --storage` run twice: the second run's sampler is seeded past the
    trials the study holds (--seed + their count), so it does not repeat them (trials 3–5
    repeated 0–2); a new study still draws what --seed draws."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    flags = [*CLI, "--trials", "3", "--batch", "3", "--epochs", "1", "--storage", url]
    assert main(flags) == 0 and main(flags) == 0
    s = optuna.load_study(study_name="search-wine", storage=url)
    wds = [t.params["wd"] for t in s.trials]
    assert len(wds) == 6 and len(set(wds)) == 6
    again = f"sqlite:///{tmp_path / 'again.db'}"
    assert main([*flags[:-1], again]) == 0
    first = optuna.load_study(study_name="search-wine", storage=again)
    assert [t.params["wd"] for t in first.trials] == wds[:3]  # --seed, for a new study


def test_a_study_that_searched_a_value_refuses_a_search_that_fixes_it(tmp_path, capsys):
    """What a space searched is recorded as searched: a later search that fixes it (``lr``
    given, not searched) is another study, and the reverse; refused in one line, the storage
    unchanged (it was taken as a study "searched before wdlab recorded its lr", with a
    warning, and recorded the fixed value; found by a new-user trial). A study stored by the
    wdlab that left searched values out is read the same way."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    lr_and_wd = {"lr": SPACE["lr"], **WD_SPACE}
    wo.optimize(study(storage=url), "mlp", "wine", lr_and_wd, **TINY)
    before = digest(tmp_path / "s.db")
    s = optuna.load_study(study_name=study_name(url), storage=url)
    assert s.user_attrs["wdlab"]["lr"] == "searched"
    with pytest.raises(ValueError, match=r"lr = a range \(the space searched it\), not 0\.05"):
        wo.optimize(s, "mlp", "wine", WD_SPACE, lr=0.05, **TINY)
    assert digest(tmp_path / "s.db") == before
    left_out = {k: v for k, v in s.user_attrs["wdlab"].items() if v != "searched"}
    s.set_user_attr("wdlab", left_out)  # as the wdlab before this record stored it
    with pytest.raises(ValueError, match=r"lr = a range \(the space searched it\), not 0\.05"):
        wo.optimize(s, "mlp", "wine", WD_SPACE, lr=0.05, **TINY)
    wo.optimize(s, "mlp", "wine", lr_and_wd, **TINY)  # the same space: the same study
    assert len(s.trials) == 4
    # the CLI: searched --mode, then no --mode (mode fixed at its default)
    cli = f"sqlite:///{tmp_path / 'cli.db'}"
    flags = [*CLI, "--epochs", "1", "--trials", "2", "--batch", "2", "--storage", cli]
    assert main([*flags, "--wd", "1e-6..1:log", "--mode", "decoupled,l2"]) == 0
    capsys.readouterr()
    assert main([*flags, "--wd", "1e-6..1:log"]) == 2
    assert "searched with mode = a range (the space searched it), not" in capsys.readouterr().err


def test_wd_and_weight_decay_are_one_parameter_in_a_study():
    """The CLI names the weight decay ``wd``, the README's Python space ``weight_decay``: a
    study searched under one name is searched under it by the other (the study held two
    parameters, its sampler's history and importance split between them; found by a
    new-user trial)."""
    s = study()
    wo.optimize(s, "mlp", "wine", {"wd": WD_SPACE["weight_decay"]}, **TINY)
    wo.optimize(s, "mlp", "wine", WD_SPACE, **TINY)
    assert [set(t.params) for t in s.trials] == [{"wd"}] * 4


def test_cli_search_with_every_value_fixed_is_refused_not_overruled(capsys):
    """``--wd 0`` and no range: the default space (wd over 1e-6..1) replaced the value given
    and trained other weight decays without a word (found by a new-user trial). It is
    refused in one line; with a range given, the values not searched are said with the
    answer."""
    assert main([*CLI, "--lr", "0.1", "--wd", "0", "--mode", "coupled", "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to search: the weight decay is fixed at 0" in err
    assert main([*CLI, "--wd", "1e-4..1:log", "--trials", "2", "--batch", "2"]) == 0
    assert (
        "fixed (not searched): optimizer adamw, lr 0.1, mode decoupled" in capsys.readouterr().out
    )
    assert main([*CLI, "--wd", "1e-4..1:log", "--trials", "2", "--batch", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fixed"] == {
        "optimizer": "adamw", "lr": 0.1, "mode": "decoupled"
    }  # fmt: skip


def test_cli_search_evaluates_every_epoch_unless_told_and_says_so(tmp_path):
    """A search reports every epoch (its pruners decide early): its help said "default: 10",
    and a file's ``train.eval_every`` was overruled by that 1 (found by a new-user trial)."""
    assert "evaluate every N epochs (default: 1 in a search)" in " ".join(_search_help().split())
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = [*CLI, "--epochs", "4", "--trials", "1", "--batch", "1", "--wd", "1e-4..1:log"]
    assert main([*base, "--storage", url]) == 0
    (trial,) = optuna.load_study(study_name="search-wine", storage=url).trials
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
    cfg = tmp_path / "every2.toml"
    cfg.write_text("[train]\neval_every = 2\n")
    other = f"sqlite:///{tmp_path / 'o.db'}"
    assert main([*base, str(cfg), "--storage", other]) == 0
    (trial,) = optuna.load_study(study_name="search-wine", storage=other).trials
    assert sorted(trial.intermediate_values) == [1, 3, 4]  # after epochs 1, 1 + 2, the last


def test_a_two_output_binary_model_searches_as_it_sweeps(tmp_path):
    """A 2-output model on binary data trains as 2-class cross-entropy in a search, as in a
    sweep (the search failed with "Target size … must be the same as input size" and left a
    FAIL trial; found by a new-user trial)."""
    ds = load("breast_cancer")

    def make(seed=0):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(ds.in_dim, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 2))  # fmt: skip

    s = study()
    res = wo.optimize(s, make, "breast_cancer", WD_SPACE, **TINY)
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 2
    assert res.metric == "val_acc"


def test_a_factory_that_ignores_its_seed_is_refused_as_in_a_sweep(tmp_path, capsys):
    """``--seeds 2`` with a factory that builds the same weights for every seed: each trial's
    mean over seeds was one run counted twice (std 0); a sweep refused it, the search now does,
    before anything is stored."""
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def make(seed=0):\n    torch.manual_seed(0)\n    return nn.Linear(13, 3)\n"
    )
    db = tmp_path / "s.db"
    flags = [*CLI, "--model", f"{tmp_path / 'm.py'}:make", "--seeds", "2", "--trials", "2"]
    assert main([*flags, "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "built the same initial weights for seeds 0 and 1" in err
    assert not db.exists()


def test_a_list_with_an_empty_value_is_refused_as_in_a_sweep():
    """``--mode decoupled,,l2`` searched decoupled and l2; ``--wd 0,,0.1`` the same: a sweep
    refuses an empty value between commas, and so does a search."""
    for name, text in (("mode", "decoupled,,l2"), ("wd", "0,,0.1")):
        with pytest.raises(ValueError, match=f"--{name}: an empty value between commas"):
            wo.parse_range(name, text)


def test_a_search_that_leaves_the_weight_decay_at_0_or_adamw_coupled_says_so(capsys):
    """Searching only the mode (or the lr) left the weight decay at its default 0, where every
    mode trains alike, without a word; ``--optimizer adamw`` without ``--mode`` trains the
    default mode coupled, Adam's L2, not AdamW's decay: both are warned, in a sweep too."""
    base = ["search", "--data", "wine", "--epochs", "1", "--trials", "2", "--batch", "2"]
    said = "the weight decay is 0 in every trial: mode searched, not it (every mode trains"
    with pytest.warns(UserWarning, match=re.escape(said)) as seen:
        assert main([*base, "--mode", "decoupled,l2"]) == 0
    assert "or fix it with --wd VALUE" in str(seen[0].message)
    with pytest.warns(UserWarning, match=re.escape(said)) as seen:  # --wd 0 given: not "fix it"
        assert main([*base, "--mode", "decoupled,l2", "--wd", "0"]) == 0
    assert "fix it" not in str(next(w.message for w in seen if said in str(w.message)))
    said = "optimizer adamw trains mode coupled (no mode given: the default), which AdamW"
    with pytest.warns(UserWarning, match=re.escape(said)) as seen:
        assert main([*base, "--optimizer", "adamw"]) == 0
    assert not [w for w in seen if "weight decay is 0" in str(w.message)]
    with pytest.warns(UserWarning, match=re.escape(said)):
        assert main(["sweep", "--data", "wine", "--epochs", "1", "--optimizer", "adamw",
                     "--wd", "0,1e-3", "--seeds", "1"]) == 0  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([*base, "--optimizer", "adam"]) == 0  # Adam's own weight_decay is coupled
    assert not [w for w in seen if "optimizer adam " in str(w.message)]
    capsys.readouterr()


def test_a_users_own_wdlab_attribute_is_named_not_overwritten():
    """A study whose own user attribute ``wdlab`` is not wdlab's record: one line naming it
    (it failed with "dictionary update sequence element #0 has length 1")."""
    for own in ("my own note", {"note": "mine"}, {}, {"data": "my data"}, [1, 2]):
        s = study()
        s.set_user_attr("wdlab", own)
        with pytest.raises(ValueError, match="has a user attribute 'wdlab' that wdlab did not"):
            wo.optimize(s, "mlp", "wine", WD_SPACE, **TINY)
        assert s.user_attrs["wdlab"] == own and not s.trials


def test_a_duplicate_value_is_refused_and_one_value_is_fixed(capsys):
    """A new-user trial: ``--wd 0.1,0.1`` searched "a choice" of one value, three identical
    trials and an importance of 1.00 for a parameter that never varied. A later trial: the
    duplicate was then dropped without a word, where run and sweep refuse it; it is refused
    as they refuse it, and a single value is fixed: here, nothing to search."""
    for name, text in (("wd", "0.1,1e-1"), ("mode", "decoupled,decoupled"), ("wd", "0.1,0.1,0.2")):
        with pytest.raises(ValueError, match="is given twice; give each once"):
            wo.parse_range(name, text)
    assert wo.parse_range("wd", "0.1,0.2") == CategoricalDistribution([0.1, 0.2])
    assert main([*CLI, "--wd", "0.1", "--trials", "3"]) == 2
    assert "nothing to search: the weight decay is fixed at 0.1" in capsys.readouterr().err


def test_a_bad_lr_or_wd_range_is_the_one_line_said(capsys):
    """A new-user trial: ``--lr 0..0.1`` printed "the weight decay is 0 in every trial…" before
    the refusal of the lr: two lines on stderr. The range is refused as it is read."""
    base = ["search", "--data", "wine", "--epochs", "1", "--trials", "2"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([*base, "--lr", "0..0.1"]) == 2
        assert main([*base, "--wd=-1..1"]) == 2
    assert [str(w.message) for w in seen] == []
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 2)[-1][:27] for line in err] == [
        "lr: every value must be a f",
        "weight_decay: every value m",
    ]


def test_torchs_switches_are_not_searched_and_say_why():
    """A new-user trial: AdamW's searchable keywords listed maximize, foreach, capturable,
    differentiable and fused: how a step is computed, not hyperparameters."""
    from wdlab.optuna.space import optimizer_keywords

    keywords = optimizer_keywords("adamw")
    assert "amsgrad" in keywords and not {"maximize", "foreach", "fused"} & set(keywords)
    space = {"fused": CategoricalDistribution([True, False])}
    with pytest.raises(ValueError, match="AdamW's 'fused' switches how a step is computed"):
        wo.optimize(study(), "mlp", "wine", space, n_trials=1, **SMALL)


def test_best_params_and_best_value_are_the_studys(tmp_path):
    """What an Optuna user reaches for: ``result.best_params`` and ``best_value``, those of
    ``study.best_trial`` (of every search in the study), None before any trial completes."""
    s = study()
    res = wo.optimize(s, "mlp", "wine", SPACE, n_trials=2, batch=2, **SMALL)
    assert res.best_params == s.best_params and res.best_value == s.best_value


def test_an_interrupt_while_trials_are_asked_leaves_none_running(monkeypatch):
    """A new-user trial: Ctrl-C while a batch's trials were being asked left those asked
    RUNNING for good (the FAIL that training's interrupt tells did not cover asking)."""
    s = study()
    real, asked = s.ask, []

    def ask(*a, **kw):
        if len(asked) == 2:
            raise KeyboardInterrupt
        asked.append(real(*a, **kw))
        return asked[-1]

    monkeypatch.setattr(s, "ask", ask)
    with pytest.raises(KeyboardInterrupt):
        wo.optimize(s, "mlp", "wine", SPACE, n_trials=4, batch=4, **SMALL)
    assert [t.state for t in s.trials] == [TrialState.FAIL] * 2


def test_hyperband_under_steps_sizes_itself_from_what_is_reported(tmp_path):
    """A new-user trial: ``--steps 40 --pruner hyperband`` built Hyperband for the default
    100 epochs (rungs at 27 and 81 never reached) while trials reported 10 epochs."""
    from wdlab.cli.search import PRUNERS, _epochs_known
    from wdlab.config import merge, validate

    cfg = validate({"train": {"epochs": 100}})
    assert _epochs_known(cfg) == 100
    assert _epochs_known(merge(cfg, {"train.steps": 40})) is None
    assert PRUNERS["hyperband"].make(optuna, 0, None)._max_resource == "auto"


def test_show_reads_a_search_back_without_training(tmp_path, capsys):
    """A new-user trial: ``wdlab show search.db`` said "no study in search.db (a file, not a
    folder)" and ``show sqlite:///search.db`` named "sqlite:/search.db": a search's summary
    could not be printed again without more trials. ``show`` reads a search's storage as it
    is (its bytes unchanged): its trials by value, as ``search`` printed them."""
    db = tmp_path / "search.db"
    url = f"sqlite:///{db}"
    args = [*CLI, "--wd", "1e-4..1:log", "--trials", "2", "--batch", "2", "--storage", url]
    assert main([*args, "--json"]) == 0
    searched = json.loads(capsys.readouterr().out)
    before = digest(db)
    for where in (str(db), url):
        assert main(["show", where, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["trials"] == searched["trials"] and shown["best"] == searched["best"]
        assert shown["metric"] == "val_acc" and shown["storage"] == where
    assert main(["show", str(db)]) == 0
    out = capsys.readouterr().out
    assert "the study: 2 trials (2 complete)" in out and f"'search-wine' in {db}" in out
    assert main(["show", str(db), "--name", "other"]) == 2
    assert "holds no study 'other'; it holds: search-wine" in capsys.readouterr().err
    assert main(["show", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "none.db: no such file" in capsys.readouterr().err
    assert digest(db) == before and not (tmp_path / "none.db").exists()
    assert wo.load_search(url).best_params == searched["best"]["params"]
    assert main(["show", "sqlite://"]) == 2  # a checker: an internal error of SQLAlchemy's
    assert "an in-memory storage holds nothing" in capsys.readouterr().err
    other = tmp_path / "other.db"  # another SQLite file: no study, and no -wal/-shm made
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    assert main(["show", str(other)]) == 2
    assert "(a file, not a folder)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("other")) == ["other.db"]


@pytest.mark.parametrize("log", [False, True])
def test_a_refused_enqueued_trial_fails_alone_and_the_search_goes_on(log):
    """A new-user trial: an enqueued ``lr=-0.01`` failed the whole batch (its valid trials
    stored FAIL) where Optuna only warned it out of range, and was left RUNNING where Optuna
    refused it on a log range. That trial alone is FAIL now, warned, and counts as a trial."""
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=log), **{k: SPACE[k] for k in ("mode",)}}
    s = study()
    s.enqueue_trial({"lr": -0.01})
    s.enqueue_trial({"lr": 0.01})
    with pytest.warns(UserWarning, match=r"trial 0: .*-0.01.*; told FAIL, the search goes on"):
        res = wo.optimize(s, "mlp", "wine", space, n_trials=3, batch=3, **SMALL)
    assert [t.state for t in s.trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert len(res.trials) == 3 and s.trials[1].params["lr"] == 0.01
    assert s.trials[0].user_attrs["status"].startswith("refused: ")


def test_a_refused_enqueued_trial_is_told_apart_from_one_another_process_took():
    """The final review: the enqueued trial Optuna refused was taken to be the first enqueued
    one running, which may be a valid trial another process sharing the study has just taken
    (told FAIL under it). Only a trial whose values the space refuses is failed."""
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    s = study()
    s.enqueue_trial({"lr": 0.01})
    s.enqueue_trial({"lr": -0.01})
    waiting = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    other = s.ask(dict(space))  # another process takes trial 0, a valid one
    with pytest.raises(ValueError) as refused:
        s.ask(dict(space))
    with pytest.warns(UserWarning, match=r"trial 1: enqueued \{'lr': -0.01\}"):
        assert wo._refused(s, waiting, space, refused.value) == 1
    assert [t.state for t in s.trials] == [TrialState.RUNNING, TrialState.FAIL]
    assert other.number == 0 and "status" not in s.trials[0].user_attrs


def test_a_grid_sampler_that_runs_out_stops_the_search_with_its_trials_stored():
    """A new-user trial: GridSampler's ``study.stop()`` once its grid was used up raised
    "Study.stop is supposed to be invoked inside an objective function" and no result came
    back. The search stops there, says so, and returns its trials."""
    grid = optuna.samplers.GridSampler({"lr": [1e-3, 1e-2], "weight_decay": [0.0, 1e-2]}, seed=0)
    s = study(sampler=grid)
    space = {"lr": FloatDistribution(1e-4, 1e-1), "weight_decay": FloatDistribution(0.0, 1.0)}
    with pytest.warns(UserWarning, match="the sampler stopped the search after 4 of 6 trials"):
        res = wo.optimize(s, "mlp", "wine", space, n_trials=6, batch=4, **SMALL)
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 4 and len(res.trials) == 4


def test_an_enqueued_name_the_search_does_not_search_is_warned():
    """A new-user trial: ``weight_decay`` enqueued into a study whose trials name it ``wd``
    was ignored by Optuna without a word."""
    s = study()
    space = {"lr": SPACE["lr"], "wd": SPACE["weight_decay"]}
    s.enqueue_trial({"lr": 0.01, "weight_decay": 1e-5})
    with pytest.warns(UserWarning, match=r"enqueued weight_decay, .*\(it searches lr, wd\)"):
        wo.optimize(s, "mlp", "wine", space, n_trials=1, batch=1, **SMALL)


def test_a_refused_trial_another_process_told_first_is_passed_over(monkeypatch):
    """The final review: two processes that each took a refused enqueued trial both picked the
    first, and the second's own was left RUNNING (its search stopped on Optuna's "cannot
    update a finished trial"). One the other process told first is passed over."""
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    s = study()
    s.enqueue_trial({"lr": -0.01})
    s.enqueue_trial({"lr": -0.02})
    waiting = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for _ in range(2):  # both taken and refused, one by each process
        with pytest.raises(ValueError) as refused:
            s.ask(dict(space))
    running = s.get_trials(deepcopy=True, states=(TrialState.RUNNING,))  # read, and then
    s.tell(0, state=TrialState.FAIL)  # the other process tells its own (trial 0) first
    real = s.get_trials
    monkeypatch.setattr(
        s, "get_trials", lambda deepcopy=False, states=None: running if states else real()
    )
    with pytest.warns(UserWarning, match="trial 1: "):
        assert wo._refused(s, waiting, space, refused.value) == 1
    assert [t.state for t in real()] == [TrialState.FAIL] * 2
    assert real()[1].user_attrs["status"].startswith("refused: ")


def test_data_without_a_validation_split_are_named_with_data_that_have_one(capsys):
    """A new-user trial: ``wdlab search`` with no arguments always failed (its default data,
    seed-noise, have no validation split) with a line that named neither the data nor a way
    on."""
    assert main(["search", "--trials", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'seed-noise' has none (e.g. --data wine" in err, err


def test_a_value_given_twice_in_a_search_is_refused_as_in_a_sweep(capsys):
    """A new-user trial: ``wdlab search --mode coupled,coupled`` (or ``--lr 0.1,0.1``) dropped
    the repeat without a word, where run and sweep refuse it."""
    for flag, given, said in (("--mode", "coupled,coupled", "coupled"), ("--lr", "0.1,0.1", "0.1")):
        assert main(["search", "--data", "wine", flag, given, "--trials", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag}: {said} is given twice; give each once" in err
