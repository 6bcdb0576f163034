"""``wdlab.sweep``: a user's own model and data, through the whole pipeline (store, batches,
choice on validation, report), as the issue's user runs it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdlab
from numerics import ONE_PASS, assert_normwise, per_steps
from test_own_model import _signals
from wdlab.pipelines import build_report


def make_model(seed):
    """A user's factory: seed -> nn.Module (BatchNorm and Dropout)."""
    return nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(4 * 16, 3),
    )


def _splits(d):
    datasets = torch.utils.data.TensorDataset
    return {
        "train": datasets(d.X_train, d.y_train),
        "val": datasets(d.X_val, d.y_val),
        "test": (d.X_test, d.y_test),
    }


GRID = dict(
    optimizer="adamw", lr=[1e-3, 3e-3], weight_decay=[1e-3, 1e-1], seeds=2, epochs=2, batch_size=32
)


def test_a_users_model_and_datasets_end_to_end(tmp_path):
    d = _signals()
    res = wdlab.sweep(make_model, _splits(d), out=tmp_path / "cnn", **GRID)
    assert res.engine.startswith("torch.func")  # which path ran, and why
    # 2 lr x 2 wd x 2 seeds, plus wd = 0 for each lr and seed
    assert len(res.runs) == 12 and res.counts["done"] == 12
    rows = res.best
    assert [(r["mode"], r["lr"]) for r in rows] == [("decoupled", 1e-3), ("decoupled", 3e-3)]
    for r in rows:
        assert {"weight_decay", "val", "test_mean", "test_std", "test_at_zero"} <= set(r)
        assert isinstance(r["better_than_zero"], bool)
    assert "val_loss" in res.runs[0].final and len(res.to_pandas()) == 12
    again = wdlab.sweep(make_model, _splits(d), out=tmp_path / "cnn", **GRID)  # resumes
    assert [r.final for r in again.runs] == [r.final for r in res.runs]
    assert (build_report(tmp_path / "cnn")["report"]).exists()


@pytest.mark.numerics
def test_max_batch_one_is_the_reference_the_batch_matches():
    d = _signals()

    def no_dropout(seed):
        return nn.Sequential(*[m for m in make_model(seed) if not isinstance(m, nn.Dropout)])

    kw = dict(GRID, seeds=1, epochs=2)
    batched = wdlab.sweep(no_dropout, d, **kw)
    alone = wdlab.sweep(no_dropout, d, max_batch=1, **kw)
    by = {r.config: r for r in alone.runs}
    for r in batched.runs:
        other = by[r.config]
        assert_normwise([r.final["val_loss"]], [other.final["val_loss"]], per_steps(6) + ONE_PASS)
        assert_normwise(r.curves["train_loss"], other.curves["train_loss"], per_steps(6))


def test_custom_loss_and_metric_choose_with_their_direction():
    d = _signals()

    def error_rate(out, y):
        return (out.argmax(1) != y).float().mean()

    res = wdlab.sweep(
        "cnn",
        d,
        loss=lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1),
        metric=wdlab.Metric(error_rate, "err", higher=False),
        weight_decay=[0.0, 0.1],
        epochs=2,
        batch_size=32,
    )
    row = res.selection[0]
    assert "val_err" in res.runs[0].final and row["higher"] is False
    assert res.runs[0].engine == "hand-batched GroupedCNN"


@pytest.mark.parametrize("loss", [nn.MSELoss(), F.l1_loss, nn.HuberLoss()])
def test_a_pointwise_loss_that_would_broadcast_is_refused(tmp_path, loss):
    """torch's MSELoss of (n, 1) outputs against (n,) targets only warns and trains on an
    (n, n) loss. One output per example reads its target as (n, 1), whichever shape the
    targets came in (wdlab keeps them as (n,)): the same numbers as a flat head. Shapes that
    differ otherwise are refused in one line naming both, before anything is stored."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randn(40, generator=g)
    kw = dict(loss=loss, weight_decay=[0.0, 0.1], lr=0.1, epochs=1)

    def runs(make, targets):
        splits = {"train": (x, targets), "val": (x, targets), "test": (x, targets)}
        return [r.final["train_loss"] for r in wdlab.sweep(make, splits, **kw).runs]

    flat = runs(lambda: nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)), y)
    for targets in (y, y[:, None]):
        torch.manual_seed(0)
        assert runs(lambda: nn.Linear(5, 1), targets) == flat
    splits = {"train": (x, y), "val": (x, y), "test": (x, y)}
    match = r"outputs have shape \(8, 2\) and the targets \(8,\); torch would broadcast"
    with pytest.raises(ValueError, match=match):
        wdlab.sweep(lambda: nn.Linear(5, 2), splits, out=tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


def _error_rate(out, y):
    return (out.argmax(1) != y).float().mean()


def test_a_metric_must_say_which_way_is_better(tmp_path):
    """A plain function as metric= is refused in one line, before anything is stored (an
    error rate read as higher-is-better chose the worst weight decay and called it a gain)."""
    with pytest.raises(ValueError, match=r"^metric=_error_rate: a plain function does not say"):
        wdlab.sweep("mlp", _signals(), metric=_error_rate, weight_decay=[0.1], epochs=1,
                    out=tmp_path / "s")  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_select_may_name_the_users_metric_and_no_other(tmp_path):
    """select= naming the user's metric chooses on it, as select='auto' does; a metric the
    study does not record is refused before anything trains."""
    kw = dict(metric=wdlab.Metric(_error_rate, "err", higher=False), weight_decay=[0.0, 0.1],
              epochs=2, batch_size=32)  # fmt: skip
    named = wdlab.sweep("mlp", _signals(), select="err", **kw)
    auto = wdlab.sweep("mlp", _signals(), **kw)
    assert [r.final for r in named.runs] == [r.final for r in auto.runs]
    assert named.selection == auto.selection and named.selection[0]["higher"] is False
    with pytest.raises(ValueError, match=r"^select='acc': with metric=err the choice is made on"):
        wdlab.sweep("mlp", _signals(), select="acc", out=tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "model, data, fragment",
    [
        (lambda s: 3, None, "returned an int, not a torch.nn.Module"),
        (lambda s: nn.Linear(2, 2), None, "fails on inputs of shape"),
        (make_model, {"train": [1, 2], "test": [3]}, "not an (x, y) pair"),
        (make_model, 42, "data must map"),
    ],
)
def test_bad_input_is_one_line(model, data, fragment):
    data = _splits(_signals()) if data is None else data
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        wdlab.sweep(model, data, epochs=1, batch_size=32, weight_decay=[0.1])


SCALE = [1.0]  # a module-level setting the model below reads in its forward


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * SCALE[0]


def test_a_model_changed_outside_its_code_is_another_study(tmp_path):
    """A change the code's fingerprint cannot see (a global the forward reads, a helper it
    calls) moves the model's outputs on the first training examples: the study folder then
    refuses the sweep in one line, and its runs are left as they were, never returned."""
    import sqlite3

    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 10, generator=g)
    y = (X[:, 0] > 0).long()
    data = {"train": (X[:200], y[:200]), "val": (X[200:250], y[200:250]),
            "test": (X[250:], y[250:])}  # fmt: skip
    kw = dict(lr=1e-2, weight_decay=[1e-2], seeds=2, epochs=2, out=tmp_path / "s")

    def rows():
        with sqlite3.connect(tmp_path / "s" / "study.db") as db:
            return db.execute("SELECT * FROM runs ORDER BY id").fetchall()

    first = wdlab.sweep(_Scaled, data, **kw)
    assert [r.final for r in wdlab.sweep(_Scaled, data, **kw).runs] == [
        r.final for r in first.runs
    ]  # the same model: the same study, read back
    before = rows()
    SCALE[0] = 0.0
    try:
        with pytest.raises(ValueError, match=r"holds another study: model\.probe \(the model's"):
            wdlab.sweep(_Scaled, data, **kw)
    finally:
        SCALE[0] = 1.0
    assert rows() == before


def test_a_last_batch_of_one_example_for_batchnorm_is_one_line(tmp_path):
    """257 training rows in batches of 64 leave a last batch of 1, which BatchNorm cannot
    train on: refused in one line naming the sizes, before anything is stored (torch stopped
    the sweep after the first epoch with a message naming no batch)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(457, 10, generator=g)
    y = (X[:, 0] > 0).long()
    data = {"train": (X[:257], y[:257]), "val": (X[257:357], y[257:357]),
            "test": (X[357:], y[357:])}  # fmt: skip

    def make(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))

    with pytest.raises(ValueError, match=r"^data\['train'\]: its last mini-batch holds 1 example "
                                         r"\(257 = 4 × 64 \+ 1\)"):  # fmt: skip
        wdlab.sweep(make, data, weight_decay=[1e-2], epochs=1, batch_size=64, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    assert wdlab.sweep(make, data, weight_decay=[1e-2], epochs=1, batch_size=50).runs


def test_a_seeded_source_shuffles_as_the_cli_does_with_its_data_seed(tmp_path):
    """``wdlab.sweep(model, wdlab.data.load("wine", seed=1))`` is ``wdlab run --data wine
    --data-seed 1``: the data seed orders the mini-batches in both (it shuffled with 0 in
    Python), bit for bit; the seed is part of the study, so seed 0's study is another."""
    cfg = {
        "data": {"source": "wine", "seed": 1},
        "model": {"kind": "mlp", "hidden": [8]},
        "train": {"optimizer": "sgd", "lr": [0.05], "epochs": 3, "batch_size": 32},
        "decay": {"modes": ["coupled"], "weight_decay": [0, 0.01]},
    }
    cli = wdlab.pipelines.run_sweep(cfg, tmp_path / "cli")
    spec = wdlab.models.ModelSpec("mlp", hidden=(8,), activation="relu")  # the config's default
    kw = dict(optimizer="sgd", lr=0.05, epochs=3, batch_size=32, modes=["coupled"])
    api = wdlab.sweep(spec, wdlab.data.load("wine", seed=1), weight_decay=[0, 0.01], **kw)
    assert [r.final for r in api.runs] == [r.final for r in cli.runs]
    seed0 = wdlab.sweep(spec, wdlab.data.load("wine"), weight_decay=[0, 0.01], **kw)
    assert [r.final for r in seed0.runs] != [r.final for r in api.runs]
    wdlab.sweep(
        spec, wdlab.data.load("wine", seed=1), weight_decay=[0, 0.01], out=tmp_path / "a", **kw
    )
    with pytest.raises(ValueError, match="holds another study"):  # the same tensors, but …
        d = wdlab.data.load("wine", seed=1)
        d.meta["seed"] = 2  # … said to be seeded otherwise: another order
        wdlab.sweep(spec, d, weight_decay=[0, 0.01], out=tmp_path / "a", **kw)


def test_a_settings_warning_is_given_once_per_sweep_not_per_seed():
    """A new-user trial: with every warning shown (a notebook's filters, ``always``), Adam's
    L2 warning and lr·wd ≥ 1 came once for each seed of the configuration."""
    import warnings

    d = _signals()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wdlab.sweep(make_model, d, optimizer="adam", modes="builtin", weight_decay=[0.1],
                    seeds=3, epochs=1, batch_size=32)  # fmt: skip
    said = [str(w.message) for w in caught if str(w.message).startswith("Adam(weight_decay")]
    assert len(said) == 1


def test_labels_that_read_as_classes_are_said_and_a_binary_stream_is_taken(tmp_path):
    """A new-user trial: float 0/1 targets trained as regression without a word; the
    refusal of a 1-output model on 0/1 class labels in a Dataset named only --task binary
    (wdlab.sweep took no StreamedData); int one-hot labels failed in the probe with torch's
    "repeat dims" message."""
    from torch.utils.data import TensorDataset

    from wdlab.data import stream_splits

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long()

    def splits(labels):
        ds = TensorDataset(x, labels)
        return {"train": ds, "val": ds, "test": ds}

    kw = dict(weight_decay=[0.0, 0.01], lr=0.1, epochs=1)
    with pytest.warns(UserWarning, match="floats of 0 and 1 only: they train as regression"):
        wdlab.sweep(lambda: nn.Linear(6, 1), splits(y.float()), **kw)
    with pytest.raises(ValueError, match=r"stream_splits\(splits, task='binary'\)"):
        wdlab.sweep(lambda: nn.Linear(6, 1), splits(y), **kw)
    binary = stream_splits(splits(y.float()), task="binary", batch_size=32)
    res = wdlab.sweep(lambda: nn.Linear(6, 1), binary, **kw)
    assert "val_acc" in res.runs[0].final and "val_rmse" not in res.runs[0].final
    with pytest.warns(UserWarning, match="batch size 16 .* is not used: a StreamedData"):
        wdlab.sweep(lambda: nn.Linear(6, 1), binary, batch_size=16, **kw)
    onehot = torch.nn.functional.one_hot(y, 2)
    for data in (splits(onehot), {"train": (x, onehot), "test": (x, onehot)}):
        with pytest.raises(ValueError, match=r"class labels shaped \(2,\) per example: .*argmax"):
            wdlab.sweep(lambda: nn.Linear(6, 2), data, out=tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


def test_a_streamed_data_as_made_is_its_own_batch_size_and_seed_in_the_study(tmp_path):
    """A StreamedData given as made batches and is seeded as stream_splits made it: another
    batch size or seed into the same ``out=`` is another study (it resumed the first one's
    runs), and the stored config says the stream's batch size, not the sweep's default."""
    from wdlab.data import stream_splits

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, generator=g)
    splits = {"train": (x, y), "val": (x[:16], y[:16]), "test": (x[:16], y[:16])}
    kw = dict(weight_decay=[0.0, 0.01], lr=0.05, epochs=1, out=tmp_path / "s")
    res = wdlab.sweep(lambda: nn.Linear(4, 1), stream_splits(splits, batch_size=8), **kw)
    assert res.config["train"]["batch_size"] == 8
    for other in ({"batch_size": 32}, {"batch_size": 8, "seed": 1}):
        with pytest.raises(ValueError, match=r"holds another study: (train.batch_size|data.seed)"):
            wdlab.sweep(lambda: nn.Linear(4, 1), stream_splits(splits, **other), **kw)
    again = wdlab.sweep(lambda: nn.Linear(4, 1), stream_splits(splits, batch_size=8), **kw)
    assert [r.final for r in again.runs] == [r.final for r in res.runs]
