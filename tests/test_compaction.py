"""Rows that stop leave the batch: a configuration stopped mid-training (pruned, stopped early,
diverged) is dropped from the engine's stacked tensors, the optimizer's state and the decay's,
so later epochs compute the others alone, and the others' numbers are those they get when
nothing stops.

* The others go on through the same maths with fewer rows, which some kernels block
  differently: measured, the hand-batched MLP's survivors are mostly bit for bit the unstopped
  runs, but a 53-row tail mini-batch through a 4-row batched matrix product rounded otherwise
  than through a 7-row one (MKL picks its kernels by the whole call). So no bits are promised:
  the survivors' updates w_T − w₀ agree norm-wise within ``per_steps(T)`` (:mod:`numerics`),
  the bound batched ≡ alone uses, on every engine (hand-batched MLP, exact Gram path, grouped
  CNN, torch.func with BatchNorm).
* Bit for bit where the kernels are the same: the batch's state (:mod:`wdlab.trainer.state`)
  survives ``torch.save`` and ``torch.load(weights_only=True)``, and continuing it (the same
  rows) gives the uninterrupted run's numbers, every weight and every curve.
"""

import io
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from numerics import assert_normwise, per_steps, updates
from wdlab import data as D
from wdlab.data import stream_splits
from wdlab.devices import exact_float32
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.trainer import Plan, Trainer
from wdlab.trainer.plan import EarlyStop

EPOCHS = 6


def _grid(mode, optimizer, lr):
    cfgs = [
        RunConfig(mode=mode, weight_decay=w, lr=lr, optimizer=optimizer, seed=s)
        for w in (1e-4, 1e-3, 1e-2)
        for s in (0, 1)
    ]
    return [*cfgs, RunConfig(mode=mode, weight_decay=1e-3, lr=2 * lr, optimizer=optimizer)]


def _train(spec, data, cfgs, stop_at=None, which=(), **kw):
    """Train ``cfgs`` together; after epoch ``stop_at`` (0-based) configurations ``which``
    stop. Returns the Trained results (with row_steps)."""
    box = {}

    def on_epoch(epoch):
        if epoch == stop_at:
            box["trainer"].stop(list(which))

    kw = {"epochs": EPOCHS, "eval_every": 2, "device": "cpu", "keep_params": True} | kw
    box["trainer"] = Trainer(Plan(spec, data, tuple(cfgs), on_epoch=on_epoch, **kw))
    with exact_float32():
        return box["trainer"].run()


def _mlp(source):
    data = D.load(source)
    return ModelSpec("mlp", in_dim=data.in_dim, out_dim=data.out_dim, hidden=(16,)), data


def _stopped_and_survivors(spec, data, cfgs, **kw):
    """Train ``cfgs`` whole, with rows 1, 2, 4 stopped after epoch 2, and for one epoch (the
    updates' base); check the stopped rows; return (whole, stopped, base, steps)."""
    full = _train(spec, data, cfgs, **kw)
    part = _train(spec, data, cfgs, stop_at=2, which=(1, 2, 4), **kw)
    base = _train(spec, data, cfgs, **(kw | {"epochs": 1}))
    for i in (1, 2, 4):
        b = part[i]
        assert b.status == "pruned" and b.epochs == 3
        assert len(b.curves["train_loss"]) == 3 and b.curves.eval_epoch[-1] == 2
        assert math.isfinite(b.final.get("val_acc", b.final["val_loss"]))
    steps = EPOCHS * (-(-len(data.y_train) // kw["batch_size"]) if "batch_size" in kw else 1)
    return full, part, base, steps


def _cnn():
    data = D.load("mnist1d")
    spec = ModelSpec(
        "cnn", in_dim=data.in_dim, out_dim=data.out_dim, hidden=(8,), in_shape=data.in_shape
    )
    return spec, data


class BNNet(nn.Module):
    """A small module wdlab did not write (torch.func engine): BatchNorm between layers, its
    Linear without bias (a bias before BatchNorm has no gradient but rounding noise, which
    Adam turns into lr-sized steps: :mod:`wdlab.zerograd`)."""

    def __init__(self, in_dim=64, out_dim=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, 16, bias=False), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, out_dim)
        )

    def forward(self, x):
        return self.net(x)


def _func():
    data = D.load("digits")
    spec = ModelSpec("custom", factory=BNNet, in_dim=data.in_dim, out_dim=data.out_dim)
    return spec, data


ENGINES = {
    "mlp-adam-decoupled-cosine": (
        lambda: _mlp("digits"),
        "adam",
        "decoupled",
        0.01,
        {"schedule": "cosine"},
    ),
    "mlp-sgd-to_init-minibatch": (
        lambda: _mlp("digits"),
        "sgd",
        "to_init",
        0.05,
        {"batch_size": 128},
    ),
    "mlp-sgd-cautious": (lambda: _mlp("digits"), "sgd", "cautious", 0.05, {}),
    "gram-sgd-coupled": (lambda: _mlp("d2l"), "sgd", "coupled", 0.05, {}),
    "grouped-cnn-adam": (_cnn, "adam", "decoupled", 3e-3, {"batch_size": 256}),
    "torch.func-bn-adam": (_func, "adam", "decoupled", 3e-3, {"batch_size": 256}),
}


@pytest.mark.numerics
@pytest.mark.parametrize("case", ENGINES)
def test_survivors_are_the_unstopped_runs(case):
    make, optimizer, mode, lr, kw = ENGINES[case]
    spec, data = make()
    cfgs = _grid(mode, optimizer, lr)
    full, part, base, steps = _stopped_and_survivors(spec, data, cfgs, **kw)
    assert ("Gram" in full[0].engine) == case.startswith("gram")
    for i in (0, 3, 5, 6):
        a, b = full[i], part[i]
        assert b.status == "done" and b.epochs == EPOCHS
        got, want = updates(b.params, base[i].params), updates(a.params, base[i].params)
        assert_normwise(got, want, per_steps(steps), f"row {i}")
        assert_normwise(b.curves["train_loss"], a.curves["train_loss"], per_steps(steps))


def test_compute_drops_with_the_rows_stopped():
    """Row-steps: every epoch costs one step per row still training."""
    spec, data = _mlp("digits")
    cfgs = _grid("decoupled", "adam", 0.01)
    full = _train(spec, data, cfgs, batch_size=256)
    part = _train(spec, data, cfgs, stop_at=1, which=(0, 1, 2, 3), batch_size=256)
    steps = -(-len(data.y_train) // 256)
    assert full.row_steps == len(cfgs) * EPOCHS * steps
    assert part.row_steps == (4 * 2 + 3 * EPOCHS) * steps
    assert sum(r.epochs for r in part) * steps == part.row_steps


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


PAUSED = {
    "mlp-adam-decoupled-cosine-early": ("digits", "adam", "decoupled", 0.01, {}),
    "mlp-sgd-to_init-minibatch-rotation": (
        "digits",
        "sgd",
        "to_init",
        0.05,
        {"batch_size": 128, "diagnostics": ("rotation",)},
    ),
    "gram-sgd-coupled": ("d2l", "sgd", "coupled", 0.05, {}),
}


@pytest.mark.parametrize("case", PAUSED)
def test_a_paused_batch_continues_bit_for_bit(case):
    """Paused after 5 of 8 epochs (a row pruned before, early stopping on), saved and loaded
    back safely, and continued: the numbers of the uninterrupted training, every bit."""
    source, optimizer, mode, lr, kw = PAUSED[case]
    spec, data = _mlp(source)
    cfgs = _grid(mode, optimizer, lr)
    metric = "val_acc" if data.task != "regression" else "val_loss"
    kw = kw | {
        "epochs": 8,
        "schedule": "cosine",
        "early_stop": EarlyStop(metric, metric == "val_acc", 2),
    }
    whole = _train(spec, data, cfgs, stop_at=2, which=(1,), **kw)
    first = _train(spec, data, cfgs, stop_at=2, which=(1,), stop=5, **kw)
    assert {r.status for i, r in enumerate(first) if i != 1 and r.epochs == 5} <= {"paused"}
    second = _train(spec, data, cfgs, start=_roundtrip(first.state), **kw)
    for i, (a, b) in enumerate(zip(whole, second, strict=True)):
        assert (a.status, a.epochs) == (b.status, b.epochs)
        assert all(torch.equal(a.params[n], b.params[n]) for n in a.params), f"row {i}"
        assert str(a.curves.to_dict()) == str(b.curves.to_dict()), f"row {i}"  # NaN == NaN
    assert second.row_steps == whole.row_steps


def test_a_state_of_other_configurations_is_refused():
    spec, data = _mlp("digits")
    cfgs = _grid("decoupled", "adam", 0.01)
    first = _train(spec, data, cfgs, stop=2)
    with pytest.raises(ValueError, match="other configurations"):
        _train(spec, data, cfgs[:3], start=first.state)


def test_early_stopping_stops_training_the_rows_it_stops():
    """A run whose validation accuracy has not improved for ``patience`` evaluations stops
    there (status done, fewer epochs); its compute is saved; the others are unchanged."""
    spec, data = _mlp("digits")
    cfgs = [
        RunConfig(mode="decoupled", weight_decay=1e-3, lr=lr, optimizer="adam", seed=0)
        for lr in (1e-4, 3e-2, 0.3)
    ]
    kw = {"epochs": 40, "eval_every": 1, "batch_size": 128}
    plain = _train(spec, data, cfgs, **kw)
    early = _train(spec, data, cfgs, early_stop=EarlyStop("val_acc", True, 3), **kw)
    stopped = [r for r in early if r.epochs < 40]
    assert stopped and all(r.status == "done" for r in early)
    for r in stopped:  # stopped after 3 evaluations without a new best
        vals = r.curves["val_acc"]
        best = vals.index(max(vals))
        assert len(vals) == best + 4 and r.epochs == len(vals)
    for a, b in zip(plain, early, strict=True):
        if b.epochs == 40:
            assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)
    assert early.row_steps < plain.row_steps


def test_a_diverged_row_leaves_the_batch_and_its_compute_stops():
    data = D.load("diabetes")
    spec = ModelSpec("mlp", in_dim=data.in_dim, hidden=(8,), activation="tanh")
    good = RunConfig(mode="coupled", weight_decay=1e-3, lr=0.01)
    bad = RunConfig(mode="coupled", weight_decay=0.0, lr=3.0)
    runs = _train(spec, data, [good, bad], epochs=150, eval_every=10)
    assert runs[1].status == "diverged" and runs[1].epochs == 101  # checked after ~100 epochs
    assert runs.row_steps == 150 + 101
    assert all(v == 0 for t in runs[1].params.values() for v in t.flatten().tolist())


def test_a_batch_whose_every_row_diverged_ends_there_and_stores_them_diverged():
    """Found by a checking helper: a batch whose every row diverged at the check after ~100
    epochs ended there (nothing left to train), but its results were read to the planned
    epochs (evaluations after 100 that never ran), and every run failed ("zip() argument 2 is
    shorter than argument 1"); 101 epochs or fewer passed. Each run is stored diverged, with
    its curves to the epoch the batch ended, NaN from its divergence on."""
    data = D.load("diabetes")
    spec = ModelSpec("mlp", in_dim=data.in_dim, hidden=(8,), activation="tanh")
    bad = [RunConfig(mode="coupled", weight_decay=w, lr=3.0) for w in (0.0, 1e-3)]
    runs = _train(spec, data, bad, epochs=128, eval_every=10)
    assert [r.status for r in runs] == ["diverged", "diverged"]
    assert [r.epochs for r in runs] == [101, 101] and runs.row_steps == 2 * 101
    for r in runs:
        assert r.curves.epoch == list(range(101)) and r.curves.eval_epoch[-1] == 100
        for name in r.curves.series:
            assert len(r.curves[name]) == len(r.curves.axis(name))
        assert math.isnan(r.curves["val_loss"][-1]) and math.isnan(r.final["val_loss"])


# -- streamed data: the stream goes on for the rows left ----------------------------------------


class Noisy(Dataset):
    """Fresh noise in ``__getitem__`` each read (a random transform, drawn from the random
    state the stream seeds per epoch)."""

    def __init__(self, X, y, noise):
        self.X, self.y, self.noise = X, y, noise

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.X[i] + self.noise * torch.randn_like(self.X[i]), self.y[i]


class DropNet(nn.Module):
    """A module wdlab did not write, with Dropout (its masks: torch's global generator)."""

    def __init__(self, in_dim=6, out_dim=2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, out_dim)
        )

    def forward(self, x):
        return self.net(x)


def _streamed():
    """120 training examples with augmentation, streamed in batches of 32 (4 a epoch)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    parts = {"train": (0, 120, 0.1), "val": (120, 160, 0.0), "test": (160, 200, 0.0)}
    splits = {k: Noisy(X[a:b], y[a:b], noise) for k, (a, b, noise) in parts.items()}
    data = stream_splits(splits, batch_size=32, n_classes=2)
    return ModelSpec("custom", factory=DropNet, in_dim=6, out_dim=2), data


def test_a_streamed_batch_drops_rows_and_its_stream_goes_on_for_the_rest():
    """Each mini-batch is read once and fed to the rows still training: the stopped rows'
    compute stops, the survivors get their unstopped numbers (norm-wise)."""
    spec, data = _streamed()
    cfgs = _grid("decoupled", "adam", 3e-3)
    full, part, base, _ = _stopped_and_survivors(spec, data, cfgs)
    steps = EPOCHS * 4
    for i in (0, 3, 5, 6):
        a, b = full[i], part[i]
        assert b.status == "done" and b.epochs == EPOCHS
        got, want = updates(b.params, base[i].params), updates(a.params, base[i].params)
        assert_normwise(got, want, per_steps(steps), f"row {i}")
    assert full.row_steps == len(cfgs) * EPOCHS * 4
    assert part.row_steps == (3 * 3 + 4 * EPOCHS) * 4


def test_a_paused_streamed_batch_continues_bit_for_bit():
    """Streamed, with augmentation, Dropout, steps= (the last epoch cut short) and a per-step
    warm-up schedule: paused after 3 epochs (a row stopped before), saved, loaded back and
    continued, it gives the uninterrupted training's numbers, every bit."""
    spec, data = _streamed()
    cfgs = _grid("decoupled", "adam", 3e-3)
    kw = {"steps": 22, "schedule": "warmup-cosine:5"}  # 6 epochs, the last of 2 steps
    whole = _train(spec, data, cfgs, stop_at=1, which=(1,), **kw)
    first = _train(spec, data, cfgs, stop_at=1, which=(1,), stop=3, **kw)
    second = _train(spec, data, cfgs, start=_roundtrip(first.state), **kw)
    for i, (a, b) in enumerate(zip(whole, second, strict=True)):
        assert (a.status, a.epochs) == (b.status, b.epochs)
        assert all(torch.equal(a.params[n], b.params[n]) for n in a.params), f"row {i}"
        assert str(a.curves.to_dict()) == str(b.curves.to_dict()), f"row {i}"
    assert second.row_steps == whole.row_steps == (2 * 4 + 6 * 22) * 1
