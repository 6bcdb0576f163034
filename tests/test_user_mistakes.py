"""A new user's mistakes with their own data and model, each refused in one line (``ValueError``
in Python, exit status 2 on the command line) before anything is stored: labels outside the
classes, a model whose outputs do not fit the data, NaN in inputs given as several tensors, a
module instance where a factory goes, changed data in an existing study; and a refused command
leaves no empty ``--out`` folder behind. A binary target trains a 2-output model as 2-class
cross-entropy whether it comes from a table or from tensors."""

import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import wdlab
from wdlab.cli import main
from wdlab.data import read_table
from wdlab.loading import load_callable

# Two inputs (a dict: num, cat) and 3 classes; ``bad`` holds the mistakes, ``heads`` the models.
DATA = """
import os
import torch

def make_data():
    g = torch.Generator().manual_seed(0)
    num = torch.randn(200, 8, generator=g); cat = torch.randint(0, 5, (200,), generator=g)
    y = (num[:, 0] > 0).long() + (cat > 2).long()
    cut = int(os.environ.get("UM_TRAIN_ROWS", "120"))
    sl = lambda a, b: ({"num": num[a:b], "cat": cat[a:b]}, y[a:b])
    return {"train": sl(0, cut), "val": sl(120, 160), "test": sl(160, 200)}

def _with(split, row, value):
    d = make_data()
    x, y = d[split]; y = y.clone(); y[row] = value
    d[split] = (x, y)
    return d

def neg_val():
    return _with("val", 7, -1)

def test_only_class():
    return _with("test", 7, 3)

def regression():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g); y = X[:, :2].sum(1, keepdim=True)
    return {"train": (X[:120], y[:120]), "val": (X[120:160], y[120:160]),
            "test": (X[160:], y[160:])}

READS = [0]

class Counted(torch.utils.data.Dataset):
    # 3 classes, streamed; every read counted
    def __init__(self, n, offset, stray=None):
        g = torch.Generator().manual_seed(offset)
        self.X = torch.randn(n, 4, generator=g)
        self.y = (self.X[:, 0] > 0).long() + (self.X[:, 1] > 0).long()
        if stray is not None:
            self.y[stray] = 7
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        READS[0] += 1
        return self.X[i], self.y[i]

def stray_label():
    return {"train": Counted(200, 0, stray=77), "val": Counted(64, 1), "test": Counted(64, 2)}

def reads():
    n, READS[0] = READS[0], 0
    return n
"""
HEADS = """
import torch
from torch import nn

class TwoIn(nn.Module):
    def __init__(self, out=3):
        super().__init__()
        self.a = nn.Linear(8, 16); self.b = nn.Embedding(5, 4); self.head = nn.Linear(20, out)
    def forward(self, num, cat):
        return self.head(torch.cat([torch.relu(self.a(num)), self.b(cat)], 1))

def make(seed=0):
    torch.manual_seed(seed); return TwoIn()

def narrow(seed=0):
    torch.manual_seed(seed); return TwoIn(2)

def wide(seed=0):
    torch.manual_seed(seed); return TwoIn(5)

def reg3(seed=0):
    torch.manual_seed(seed); return nn.Linear(6, 3)

def reg1(seed=0):
    torch.manual_seed(seed); return nn.Linear(6, 1)

def lin3(seed=0):
    torch.manual_seed(seed); return nn.Linear(4, 3)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("mistakes")
    (w / "um_data.py").write_text(textwrap.dedent(DATA))
    (w / "um_heads.py").write_text(textwrap.dedent(HEADS))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    label = np.where(X[:, 0] + 0.5 * rng.normal(size=150) > 0, "yes", "no")
    rows = "".join(
        f"{a:.4f},{b:.4f},{c:.4f},{d:.4f},{t}\n" for (a, b, c, d), t in zip(X, label, strict=True)
    )
    (w / "churn.csv").write_text("a,b,c,d,churned\n" + rows)
    return w


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``wdlab ARGV``."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def refused_cli(capsys, out: Path, match: str, *argv: str) -> str:
    """``wdlab sweep ARGV --out OUT`` refused in one line containing ``match``; OUT not made."""
    code, err = cli(capsys, "sweep", *argv, "--wd", "0,1e-3", "--epochs", "1", "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert not out.exists()  # nothing stored: no study.db, no folder
    return lines[0]


def _split(X, y):
    return {
        "train": (X[:120], y[:120]),
        "val": (X[120:160], y[120:160]),
        "test": (X[160:], y[160:]),
    }


def _blobs():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0).long()  # 3 classes


def refused(match: str, model, data, **kw) -> str:
    with pytest.raises(ValueError) as exc:
        wdlab.sweep(model, data, weight_decay=[0.0], epochs=1, **kw)
    text = str(exc.value)
    assert "\n" not in text and match in text, text
    return text


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_lazy_model_is_refused_in_one_line_and_runs_once_called(seeds, tmp_path):
    """Before: torch's ``Attempted to use an uninitialized parameter`` (one seed), or ``Can't
    access the shape of an uninitialized parameter`` (two), out of wdlab's internals."""
    X, y = _blobs()

    def lazy() -> nn.Module:
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))

    said = refused("returned a model whose 0.weight is not initialised yet", lazy, _split(X, y),
                   seeds=seeds, out=tmp_path / "s")  # fmt: skip
    assert "call the model once on an example inside the factory" in said
    assert not (tmp_path / "s").exists()

    def called() -> nn.Module:
        model = lazy()
        model(torch.zeros(1, 4))
        return model

    res = wdlab.sweep(called, _split(X, y), weight_decay=[0.0], epochs=1, seeds=seeds)
    assert [r.status for r in res.runs] == ["done"] * seeds


# -- 3: labels outside the classes ---------------------------------------------------------------


def test_a_negative_label_in_held_tensors_is_refused_before_training(world, capsys):
    """Before: ``IndexError: Target -1 is out of bounds`` at the first evaluation, after training,
    and a study left with failed runs."""
    line = refused_cli(
        capsys, world / "neg", "data['val']: label -1 is outside 0..2",
        "--data", f"{world}/um_data.py:neg_val", "--model", f"{world}/um_heads.py:make",
    )  # fmt: skip
    assert "IndexError" not in line
    X, y = _blobs()
    y = y.clone()
    y[130] = -1
    refused("data['val']: label -1 is outside 0..2", lambda: nn.Linear(4, 3), _split(X, y))
    data = {k: ({"x": v[0]}, v[1]) for k, v in _split(X, y).items()}  # streamed: the same
    refused("data['val']: label -1 is outside", lambda: _DictIn(), data)


class _DictIn(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(4, out)

    def forward(self, x):
        return self.lin(x)


def test_a_class_only_in_test_is_named_with_its_split(world, capsys):
    refused_cli(
        capsys, world / "testonly", "data['test'] holds label 3, outside 0..2",
        "--data", f"{world}/um_data.py:test_only_class", "--model", f"{world}/um_heads.py:make",
    )  # fmt: skip
    X, y = _blobs()
    y = y.clone()
    y[170] = 3
    text = refused("data['test'] holds label 3", lambda: nn.Linear(4, 3), _split(X, y))
    assert text.startswith("the model outputs 3 values")


def test_a_stray_label_in_streamed_data_is_named_alike_by_the_cli_and_python(world, capsys):
    """Before: ``wdlab sweep --model file.py:make`` was taken for no factory: every split was
    read once more to count classes (8, from a stray label 7) and the model was blamed ('the
    model's last layer must have 8 outputs'). Now the classes are the model's 3 outputs, as in
    Python: the same line naming the label, after the same reads."""
    reads = load_callable(f"{world}/um_data.py:reads")
    reads()
    line = refused_cli(
        capsys, world / "stray", "label 7 is outside 0..2", "--batch-size", "32",
        "--data", f"{world}/um_data.py:stray_label", "--model", f"{world}/um_heads.py:lin3",
    )  # fmt: skip
    cli_reads = reads()
    data = load_callable(f"{world}/um_data.py:stray_label")()
    text = refused("label 7 is outside 0..2", load_callable(f"{world}/um_heads.py:lin3"), data,
                   batch_size=32)  # fmt: skip
    assert line == f"wdlab sweep: error: {text}" and text.startswith("data['train'] batch ")
    assert cli_reads == reads() < 200 + 64 + 64  # no pass over every split
    named = f"{world}/um_heads.py:lin3"  # wdlab.sweep given the factory's name: the same
    assert refused("label 7", named, data, batch_size=32) == text and reads() == cli_reads


def test_declared_classes_check_every_split_of_held_tensors():
    X, y = _blobs()
    refused("data['train']: label 2 is outside 0..1 (n_classes=2)", _lin3, _split(X, y),
            n_classes=2)  # fmt: skip
    res = wdlab.sweep(lambda: nn.Linear(4, 4), _split(X, y), weight_decay=[0.0], epochs=1,
                      n_classes=4)  # fmt: skip
    assert res.counts["done"] == 1  # a declared class absent from the data keeps its output


def _lin3() -> nn.Module:
    return nn.Linear(4, 3)


# -- 4: a model whose outputs do not fit the data ------------------------------------------------


def test_a_model_narrower_than_the_classes_is_refused_up_front(world, capsys):
    """Before: ``the model or its loss fails … IndexError: Target 2 is out of bounds`` and a
    study left with failed runs."""
    refused_cli(
        capsys, world / "narrow", "the model outputs 2 values; the data have 3 classes",
        "--data", f"{world}/um_data.py:make_data", "--model", f"{world}/um_heads.py:narrow",
    )  # fmt: skip
    X, y = _blobs()
    refused("the model outputs 2 values; the data have 3 classes", lambda: nn.Linear(4, 2),
            _split(X, y))  # fmt: skip


def test_a_model_wider_than_the_classes_trains_with_a_warning(world, capsys, tmp_path):
    """Before: it trained silently. A head wider than the labels present can be meant (classes
    absent from this data, a pretrained head), so it trains, and the width is said in one
    warning (``wdlab: warning: …`` on the command line)."""
    said = "the model outputs 5 values; the data have 3 classes (labels 0..2)"
    argv = ["sweep", "--data", f"{world}/um_data.py:make_data", "--model",
            f"{world}/um_heads.py:wide", "--wd", "0", "--epochs", "1"]  # fmt: skip
    with pytest.warns(UserWarning, match=re.escape(said)):
        code, err = cli(capsys, *argv, "--out", str(tmp_path / "wide"))
    assert code == 0, err
    X, y = _blobs()
    with pytest.warns(UserWarning, match=re.escape(said)):
        wdlab.sweep(lambda: nn.Linear(4, 5), _split(X, y), weight_decay=[0.0], epochs=1)


def test_regression_outputs_match_the_targets(world, capsys, tmp_path):
    """Before: ``RuntimeError: expand(...)`` mid-training for 3 outputs and targets of shape
    (n, 1); and 1 output failed too (``size of tensor a (2) must match``): (n, 1) targets are
    one target per example."""
    refused_cli(
        capsys, world / "reg3", "the model outputs 3 values; the data have 1 target",
        "--data", f"{world}/um_data.py:regression", "--model", f"{world}/um_heads.py:reg3",
    )  # fmt: skip
    code, err = cli(
        capsys, "sweep", "--data", f"{world}/um_data.py:regression",
        "--model", f"{world}/um_heads.py:reg1", "--wd", "0", "--epochs", "1",
        "--out", str(tmp_path / "reg1"),
    )  # fmt: skip
    assert code == 0, err
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    y = X[:, :1] * 2.0
    refused("the model outputs 3 values; the data have 1 target", lambda: nn.Linear(4, 3),
            _split(X, y))  # fmt: skip
    res = wdlab.sweep(lambda: nn.Linear(4, 1), _split(X, y), weight_decay=[0.0], epochs=1)
    flat = wdlab.sweep(lambda: nn.Linear(4, 1), _split(X, y[:, 0]), weight_decay=[0.0], epochs=1)
    assert res.runs[0].final["val_loss"] == flat.runs[0].final["val_loss"]  # the same bits


class _Squeezed(nn.Module):
    """A head whose ``squeeze()`` also drops the batch dimension of one example."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.head = nn.Linear(4, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).squeeze()


@pytest.mark.parametrize("streamed", [False, True], ids=["tensors", "dataset"])
def test_outputs_flattened_across_the_batch_are_named_by_their_shape(streamed):
    """Before: ``the model or its loss fails on inputs of shape (4,): RuntimeError: The size of
    tensor a (24) must match the size of tensor b (8)``, the model's outputs unnamed. A
    ``squeeze()`` that mixes nothing but one example's batch dimension still trains."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    for y, k in ((X[:, 0] * 2.0, 1), ((X[:, 0] > 0).long() + (X[:, 1] > 0).long(), 3)):
        data = _split(X, y)
        if streamed:
            data = {s: torch.utils.data.TensorDataset(*xy) for s, xy in data.items()}
        flat = lambda: nn.Sequential(nn.Linear(4, 3), nn.Flatten(0))  # noqa: E731
        text = refused("the model's outputs have shape", flat, data)
        assert "shape (9,) for 3 examples: the loss needs one row per example" in text
        res = wdlab.sweep(lambda k=k: _Squeezed(k), data, weight_decay=[0.0], epochs=1)
        assert res.runs[0].status == "done"


@pytest.mark.parametrize("streamed", [False, True], ids=["tensors", "dataset"])
def test_several_regression_targets_are_nn_mse_loss_and_r2_is_sklearns(tmp_path, streamed):
    """Before: targets of shape (n, 4), and (n, 1) read from a Dataset, crashed the default
    loss (``size of tensor a (2) must match``), and a streamed R² divided the sum of every
    target by the number of rows (0.75 reported where it was -1.8). Now the loss is
    ``nn.MSELoss``'s mean over every element and R² is scikit-learn's ``variance_weighted``,
    recomputed here from the model handed back."""
    from sklearn.metrics import r2_score
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g)
    y = X[:, :4] @ torch.randn(4, 4, generator=g) + torch.tensor([0.0, 3.0, -2.0, 10.0])
    data = _split(X, y)
    if streamed:
        data = {k: TensorDataset(*v) for k, v in data.items()}
    res = wdlab.sweep(lambda: nn.Linear(6, 4), data, weight_decay=[0.0], epochs=3,
                      batch_size=32, out=tmp_path / "s")  # fmt: skip
    model = res.model()
    with torch.no_grad():
        out = model(X[120:160])
    final = res.runs[0].final
    mse = nn.functional.mse_loss(out, y[120:160]).item()
    assert final["val_loss"] == pytest.approx(mse, rel=1e-5)  # float32 sums in another order
    r2 = r2_score(y[120:160].numpy(), out.numpy(), multioutput="variance_weighted")
    assert final["val_r2"] == pytest.approx(r2, rel=1e-5) and final["val_r2"] < 1


def test_multi_label_targets_with_ones_own_loss_say_what_is_chosen_on():
    """0/1 float targets with ``loss=BCEWithLogitsLoss()`` are read as regression: the choice
    was made on the RMSE of the logits without a word. One warning says so, unless a metric
    reads the outputs; real-valued targets with a loss of one's own say nothing."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g)
    labels = (X[:, :3] > 0).float()  # 3 labels per example
    data = {k: TensorDataset(*v) for k, v in _split(X, labels).items()}
    kw = {"weight_decay": [0.0], "epochs": 1, "batch_size": 32, "loss": nn.BCEWithLogitsLoss()}
    with pytest.warns(UserWarning, match=r"floats of 0 and 1 only \(multi-label\?\)"):
        wdlab.sweep(lambda: nn.Linear(6, 3), data, **kw)
    exact = wdlab.Metric(lambda o, y: ((o > 0).float() == y).float().mean(), "label_acc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wdlab.sweep(lambda: nn.Linear(6, 3), data, **kw, metric=exact)
        real = _split(X, X[:, :3] * 2.0)
        wdlab.sweep(lambda: nn.Linear(6, 3), real, **kw | {"loss": nn.MSELoss()})


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_built_in_models_take_several_regression_targets(kind, tmp_path):
    """Before: the built-in kinds (and a factory's ``out_dim``) had 1 output for any regression
    data, and several targets crashed (``Expected size … [2, 3] but got: [2, 1]``)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 6, generator=g)
    y = X[:, :3] @ torch.randn(3, 3, generator=g)
    res = wdlab.sweep(kind, _split(X, y), optimizer="adamw", lr=0.05, weight_decay=[0.0],
                      epochs=3, batch_size=32, out=tmp_path / "s")  # fmt: skip
    with torch.no_grad():
        out = res.model()(X[120:160])
    assert out.shape == (40, 3)
    mse = nn.functional.mse_loss(out, y[120:160]).item()
    assert res.runs[0].final["val_loss"] == pytest.approx(mse, rel=1e-5)


@pytest.mark.parametrize("streamed", [False, True], ids=["tensors", "dataset"])
def test_rmse_and_r2_come_from_the_outputs_with_ones_own_loss(tmp_path, streamed):
    """Before: with ``loss=`` on regression, RMSE was the square root of the user's loss and R²
    1 - loss / variance (an L1 loss gave the RMSE of nothing; ``o.mean()`` gave NaN and R² 16.8).
    They are the outputs' RMSE and R², recomputed here from the model handed back."""
    from sklearn.metrics import r2_score
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 4.0
    data = _split(X, y)
    if streamed:
        data = {k: TensorDataset(*v) for k, v in data.items()}

    def l1(out, target):
        return (out.squeeze(-1) - target).abs().mean()

    res = wdlab.sweep(lambda: nn.Linear(4, 1), data, loss=l1, weight_decay=[0.0], epochs=3,
                      batch_size=32, out=tmp_path / "s")  # fmt: skip
    with torch.no_grad():
        out = res.model()(X[120:160]).squeeze(-1)
    final = res.runs[0].final
    rmse = (out - y[120:160]).pow(2).mean().sqrt().item()
    assert final["val_loss"] == pytest.approx((out - y[120:160]).abs().mean().item(), rel=1e-5)
    assert final["val_rmse"] == pytest.approx(rmse, rel=1e-5)
    assert final["val_r2"] == pytest.approx(r2_score(y[120:160], out), rel=1e-5)


def test_one_target_as_an_n_by_1_column_of_a_dataset_trains_as_a_flat_one():
    """Before: ``y`` of shape (n, 1) from a Dataset crashed the default MSE; it is one target,
    with the numbers of the same targets held flat."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=g)
    y = X[:, :1] * 2.0
    col = {k: TensorDataset(*v) for k, v in _split(X, y).items()}
    flat = {k: TensorDataset(*v) for k, v in _split(X, y[:, 0]).items()}
    kw = {"weight_decay": [0.0, 1e-2], "epochs": 2, "batch_size": 32}
    a = wdlab.sweep(lambda: nn.Linear(4, 1), col, **kw)
    b = wdlab.sweep(lambda: nn.Linear(4, 1), flat, **kw)
    assert [r.final for r in a.runs] == [r.final for r in b.runs]  # the same bits


# -- 5: a binary target and a 2-output model -----------------------------------------------------


def test_a_binary_table_target_trains_a_two_output_model_as_two_classes(world):
    """Before: ``Target size … must be the same as input size`` from the table (BCE on 2
    logits), while 0/1 class tensors trained the same model with cross-entropy. Now both are
    2-class cross-entropy, with the same numbers."""
    csv = str(world / "churn.csv")

    def make() -> nn.Module:
        return nn.Linear(4, 2)

    kw = {"weight_decay": [0.0, 1e-3], "epochs": 2, "batch_size": 32}
    table = wdlab.sweep(make, csv, target="churned", **kw)
    ds = read_table(csv, target="churned")
    held = {k: (X, y.long()) for k, (X, y) in ds.splits().items()}
    tensors = wdlab.sweep(make, held, **kw)
    assert table.task == tensors.task == "multiclass"
    for a, b in zip(table.runs, tensors.runs, strict=True):
        assert a.final["val_loss"] == b.final["val_loss"]  # the same data, loss and order
    one = wdlab.sweep(lambda: nn.Linear(4, 1), csv, target="churned", **kw)
    assert one.task == "binary"  # one logit: BCE, as before
    # 0/1 class tensors train the one-logit model the same way (they were refused)
    tensors_one = wdlab.sweep(lambda: nn.Linear(4, 1), held, **kw)
    assert tensors_one.task == "binary"
    for a, b in zip(one.runs, tensors_one.runs, strict=True):
        assert (
            a.final["val_loss"] == b.final["val_loss"] and a.final["val_acc"] == b.final["val_acc"]
        )


def _logit_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(X).squeeze(-1) > 0).long() == y).float().mean())


def test_one_logit_with_the_users_loss_is_scored_as_a_logit(tmp_path):
    """Before: a ``Linear(d, 1)`` trained with the user's BCE on 0/1 labels was scored by the
    argmax of its one output, class 0 always: every accuracy was the share of label 0 and the
    choice and the verdict were made on it. Now its accuracy reads the logit (> 0: class 1)."""
    X, y = _blobs()
    y = (y > 0).long()
    data = _split(X, y)

    def make(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def bce(out, t):
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), t.float())

    res = wdlab.sweep(make, data, loss=bce, weight_decay=[0.1], epochs=3, batch_size=32,
                      out=tmp_path / "s", keep="all")  # fmt: skip
    run = next(r for r in res.runs if r.config.weight_decay == 0.1)
    model = res.model(seed=0, weight_decay=0.1)
    for split in ("val", "test"):
        Xs, ys = data[split]
        assert run.final[f"{split}_acc"] == pytest.approx(_logit_accuracy(model, Xs, ys), abs=1e-6)
    assert run.final["val_acc"] != pytest.approx(float((data["val"][1] == 0).float().mean()))


def test_fewer_outputs_than_classes_with_the_users_loss_is_refused():
    """Accuracy over 3 classes from 2 outputs (the user's loss reads them, wdlab's accuracy
    takes the largest) would never predict class 2: one line, unless a metric reads them."""
    X, y = _blobs()

    def ce(out, t):
        return nn.functional.cross_entropy(out, t.clamp(max=1))

    refused("the model outputs 2 values; accuracy over the data's 3 classes reads one output per "
            "class", lambda: nn.Linear(4, 2), _split(X, y), loss=ce)  # fmt: skip
    either = wdlab.Metric(lambda out, t: float((out.argmax(1) == t.clamp(max=1)).float().mean()),
                          "acc01", higher=True)  # fmt: skip
    res = wdlab.sweep(lambda: nn.Linear(4, 2), _split(X, y), loss=ce, metric=either,
                      weight_decay=[0.0], epochs=1)  # fmt: skip
    assert res.counts["done"] == 1


def test_declared_classes_beyond_the_models_outputs_are_one_line():
    """Before: ``StopIteration`` from the label check when every split's labels fit the model
    and ``n_classes`` did not."""
    X, y = _blobs()
    y = (y > 0).long()
    refused("the model outputs 2 values; the data have 3 classes (labels 0..2)",
            lambda: nn.Linear(4, 2), _split(X, y), n_classes=3)  # fmt: skip


# -- 6: NaN in inputs given as several tensors ---------------------------------------------------


@pytest.mark.parametrize("form", ["tuple", "dict"])
def test_nan_in_a_tuple_or_dict_input_is_refused(form):
    """Before: every run diverged silently; a plain tensor X was refused."""
    X, y = _blobs()
    Xn = X.clone()
    Xn[3, 1] = float("nan")
    wrap = (lambda t: (t,)) if form == "tuple" else (lambda t: {"x": t})
    data = {k: (wrap(v[0]), v[1]) for k, v in _split(Xn, y).items()}
    where = "inputs[0]" if form == "tuple" else "inputs['x']"
    refused(f"data['train'] {where}: 1 items hold NaN or infinite values (the first is item 3)",
            lambda: _DictIn() if form == "dict" else _lin3(), data)  # fmt: skip


# -- 12: a refused command leaves no --out folder ------------------------------------------------


@pytest.mark.parametrize(
    ("case", "argv", "match"),
    [
        ("wrong target", ["--data", "{w}/churn.csv", "--target", "Churned"], "not in"),
        ("missing csv", ["--data", "{w}/nope.csv", "--target", "churned"], "not found"),
        (
            "bad model",
            ["--data", "{w}/churn.csv", "--target", "churned", "--model", "um_nopkg:make"],
            "um_nopkg",
        ),
        (
            "bad features",
            ["--data", "{w}/churn.csv", "--target", "churned", "--features", "a,zz"],
            "zz",
        ),
    ],
)
def test_a_refused_sweep_leaves_no_out_folder(world, capsys, case, argv, match):
    """Before: ``--out`` was made (empty) before the data and the model were checked."""
    refused_cli(capsys, world / f"t-{case}", match, *[a.format(w=world) for a in argv])


def test_a_bad_lease_leaves_no_out_folder(world, capsys, monkeypatch):
    monkeypatch.setenv("WDLAB_LEASE_SECONDS", "abc")
    refused_cli(
        capsys, world / "lease", "WDLAB_LEASE_SECONDS",
        "--data", f"{world}/churn.csv", "--target", "churned",
    )  # fmt: skip


# -- 14: changed data in an existing study -------------------------------------------------------


def test_changed_data_from_a_data_function_is_named(world, capsys, monkeypatch):
    """Before: ``holds another study (config …, this one …)`` without saying what differs."""
    out = world / "chg"
    model = f"{world}/um_heads.py:make"
    argv = ["sweep", "--data", f"{world}/um_data.py:make_data", "--model", model,
            "--wd", "0", "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert cli(capsys, *argv)[0] == 0
    before = (out / "study.db").read_bytes()
    monkeypatch.setenv("UM_TRAIN_ROWS", "100")  # the function's train slice changed
    code, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds another study: data.fingerprint (the data" in err and "stored" in err, err
    assert (out / "study.db").read_bytes() == before  # the stored study is left as it was


def test_the_same_files_spelt_otherwise_resume_the_same_study(world, capsys, monkeypatch):
    """Found by a new-user trial: a study made with ``--model ./m.py:make`` was "another
    study" to ``--model m.py:make`` (and to the file's absolute path), the same file. Spelt
    otherwise from the same folder, it resumes; a file that is another from here stays
    another study, its stored spelling named."""
    monkeypatch.chdir(world)
    out = world / "spelt"
    grid = ["--wd", "0", "--epochs", "1", "--out", str(out)]
    made = ["sweep", "--data", "./um_data.py:make_data", "--model", "./um_heads.py:make", *grid]
    assert cli(capsys, *made)[0] == 0
    before = (out / "study.db").read_bytes()
    for data, model in [
        ("um_data.py:make_data", "um_heads.py:make"),
        (f"{world}/um_data.py:make_data", f"{world}/../{world.name}/um_heads.py:make"),
    ]:
        code, err = cli(capsys, "sweep", "--data", data, "--model", model, *grid)
        assert code == 0, err
        assert (out / "study.db").read_bytes() == before  # resumed: nothing to train
    monkeypatch.chdir(world.parent)  # ./um_heads.py is another file from here
    model = f"{world.name}/um_heads.py:make"
    code, err = cli(
        capsys, "sweep", "--data", f"{world}/um_data.py:make_data", "--model", model, *grid
    )
    assert code == 2 and 'model.factory: "./um_heads.py:make" stored' in err, err
    assert (out / "study.db").read_bytes() == before


# -- 16: a module instance where a factory goes --------------------------------------------------


def test_a_module_instance_is_refused_as_not_a_factory():
    """Before: ``model factory '_DictIn' raised TypeError: forward() missing 1 required
    positional argument``."""
    X, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any data are read or warned about
        refused(
            "model must be a function that returns an nn.Module (or a ModelSpec or a kind); got "
            "an nn.Module instance: pass a factory, e.g. lambda: Linear()",
            nn.Linear(4, 3),
            _split(X, y),
        )


def test_a_key_stored_as_null_and_absent_now_is_no_difference():
    """A new-user trial: "holds another study" listed ``data.categorical: null stored, none
    now`` (and features, impute) first, before the real difference."""
    from wdlab.pipelines.identity import differences

    stored = {"data": {"categorical": None, "name": "a"}, "train": {"lr": 0.1}}
    assert differences(stored, {"data": {"name": "a"}, "train": {"lr": 0.2}}) == (
        "train.lr: 0.1 stored, 0.2 now"
    )


def test_the_models_outputs_on_other_data_are_no_difference_of_their_own():
    """A new-user trial: changed data were refused with the model's outputs on the first
    training examples beside them, 400 characters of numbers that only repeat the change.
    They are named where the data are the same (the model changed outside its code)."""
    from wdlab.pipelines.identity import differences

    stored = {"data": {"fingerprint": "a"}, "model": {"probe": [0.5, 0.25]}}
    other = {"data": {"fingerprint": "b"}, "model": {"probe": [0.75, 0.5]}}
    said = differences(stored, other)
    assert said.startswith("data.fingerprint (") and "model.probe" not in said
    same_data = {"data": {"fingerprint": "a"}, "model": {"probe": [0.75, 0.5]}}
    assert differences(stored, same_data).startswith("model.probe (")


def test_a_narrow_head_on_streamed_labels_names_the_head_not_the_data():
    """A new-user trial: a 3-output model on a Dataset of 4 classes that does not declare
    them (counted from the outputs) was refused as "data['train']: label 3 is outside 0..2":
    the data blamed for the model's head. The line names the head and the ways out."""
    from torch.utils.data import Dataset

    class Rows(Dataset):
        def __init__(self, n, seed):
            self.X = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))

        def __len__(self):
            return len(self.X)

        def __getitem__(self, i):
            return self.X[i], i % 4

    data = {"train": Rows(96, 0), "val": Rows(32, 1), "test": Rows(32, 2)}
    text = refused("the model outputs 3 values, and streamed labels are counted from the outputs",
                   lambda: nn.Linear(4, 3), data, batch_size=32)  # fmt: skip
    assert "label 3, so the model's last layer needs 4 outputs or more" in text
    assert "n_classes=" in text

    class Late(Rows):  # label 3 at the last row only: not among the 32 rows sampled first
        def __getitem__(self, i):
            return self.X[i], 3 if i == len(self.X) - 1 else i % 3

    late = {"train": Late(2000, 0), "val": Rows(32, 1), "test": Rows(32, 2)}
    said = "label 3 is outside 0..2 (the classes counted from the model's 3 outputs: it needs "
    refused(said + "more, or n_classes=)", lambda: nn.Linear(4, 3), late, batch_size=32)


def test_one_output_on_streamed_binary_labels_says_how_to_train_its_logit():
    """A 1-output model on streamed 0/1 labels: streamed classes are counted from the outputs,
    so it read as one class and the data were blamed ("label 1 is outside 0..0 (1 classes)");
    the line now names the two ways that train it (held tensors train it as a logit)."""
    from torch.utils.data import Dataset

    class Rows(Dataset):  # a Dataset of the user's own, read item by item
        def __init__(self, n, seed):
            self.X = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))

        def __len__(self):
            return len(self.X)

        def __getitem__(self, i):
            return self.X[i], int(self.X[i, 0] > 0)

    data = {"train": Rows(96, 0), "val": Rows(32, 1), "test": Rows(32, 2)}
    text = refused("the model outputs 1 value, and streamed labels are counted from the outputs",
                   lambda: nn.Linear(4, 1), data, batch_size=32)  # fmt: skip
    assert "2 outputs" in text and "--task binary" in text
    from torch.utils.data import TensorDataset  # labels counted first: the same way out named

    tensors = {k: TensorDataset(d.X, (d.X[:, 0] > 0).long()) for k, d in data.items()}
    refused("must have 2 outputs (or, for 1 output, the task binary: wdlab.data.stream_splits(",
            lambda: nn.Linear(4, 1), tensors, batch_size=32)  # fmt: skip
