"""A new user's mistakes with streamed data and their own model (a new-user trial's findings),
each refused in one line (``ValueError`` in Python, exit status 2 on the command line) before
anything is stored: class labels that are not whole numbers, NaN among the first training
items, a model with nothing to train, validation inputs the model cannot take, an empty split
from a data function, and a ``make_loader`` given where ``--data`` calls ``make_data()``."""

import math
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import wdlab
from wdlab.cli import main
from wdlab.pipelines.identity import output_probe, probe_difference


class Items(Dataset):
    """``(x, y)`` items read from tensors, one at a time (a streamed split)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.X[i], self.y[i]


def _data(width_val: int = 6, stream: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 6, generator=g)
    y = (X[:, 0] > 0).long()
    Xv = torch.randn(20, width_val, generator=g)
    yv = (Xv[:, 0] > 0).long()
    wrap = Items if stream else (lambda a, b: (a, b))
    return {"train": wrap(X[:80], y[:80]), "val": wrap(Xv, yv), "test": wrap(X[80:], y[80:])}


def _make(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def refused(match: str, model, data, tmp_path: Path, **kw) -> str:
    """``wdlab.sweep`` refused in one line containing ``match``, with no ``out=`` folder made."""
    out = tmp_path / "study"
    with pytest.raises(ValueError) as exc:
        wdlab.sweep(model, data, weight_decay=[0.0, 1e-3], epochs=1, batch_size=16, out=out, **kw)
    text = str(exc.value)
    assert "\n" not in text and match in text, text
    assert not out.exists()
    return text


@pytest.mark.parametrize("stream", [True, False])
def test_class_labels_that_are_not_whole_numbers_are_refused(tmp_path, stream):
    """Before: validation labels 0.7 and 1.7 beside integer training labels were truncated to
    classes 0 and 1 and scored, silently."""
    data = _data(stream=stream)
    X, y = (data["val"].X, data["val"].y) if stream else data["val"]
    bad = y.float() + 0.7
    data["val"] = Items(X, bad) if stream else (X, bad)
    refused("data['val']: label 0.7 is not a class (a whole number)", _make, data, tmp_path)


def test_whole_number_float_labels_are_classes_where_the_task_is_multiclass(tmp_path):
    data = _data()
    data["val"] = Items(data["val"].X, data["val"].y.float())  # 0.0 and 1.0: classes 0 and 1
    result = wdlab.sweep(_make, data, weight_decay=[0.0], epochs=1, batch_size=16)
    assert result.runs[0].status == "done"


def test_nan_in_the_first_training_items_is_refused_naming_the_item(tmp_path):
    """Before: the model's output probe was NaN, stored as null, and comparing it crashed with
    ``TypeError: must be real number, not NoneType``."""
    data = _data()
    X = data["train"].X.clone()
    X[5, 3] = float("nan")
    data["train"] = Items(X, data["train"].y)
    refused("data['train'] (32 items read first) inputs: 1 items hold NaN or infinite values "
            "(the first is item 5)", _make, data, tmp_path)  # fmt: skip


def test_a_probe_that_is_not_finite_is_not_compared():
    """A model whose outputs are NaN on finite inputs has no probe (None), and a probe stored
    with NaN as null (a study written before this fix) compares as unknown, not as a crash."""

    class NaNOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 2)

        def forward(self, x):
            return self.lin(x) * float("nan")

    ds = wdlab.data.from_splits(_data(stream=False))
    assert output_probe(NaNOut(), ds) is None
    assert output_probe(_make(), ds) is not None
    stored = {"model": {"probe": [0.1, None]}}
    assert probe_difference(stored, {"model": {"probe": [0.1, 0.2]}}) == ""


class NoParams(nn.Module):
    def forward(self, x):
        return x[:, :2]


class BuffersOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(6, 2))

    def forward(self, x):
        return x @ self.w


def _frozen(seed: int = 0) -> nn.Module:
    return _make(seed).requires_grad_(False)


@pytest.mark.parametrize(
    "factory, why",
    [(NoParams, "(it has none)"), (BuffersOnly, "(it has none)"),
     (_frozen, "(all 4 have requires_grad=False)")],
)  # fmt: skip
def test_a_model_with_nothing_to_train_is_refused(tmp_path, factory, why):
    """Before: ``RuntimeError: generator raised StopIteration``, or torch's "optimizer got an
    empty parameter list"."""
    text = refused("has no parameters to train", factory, _data(), tmp_path)
    assert why in text and "nothing to decay" in text


def test_validation_inputs_the_model_cannot_take_are_named_up_front(tmp_path):
    """Streamed splits' shapes are not compared (sequences vary); before, validation inputs 7
    wide failed at the first evaluation with torch's shape error, after training."""
    text = refused("fails on data['val']'s (tensor 7 float32)", _make, _data(width_val=7), tmp_path)
    assert text.startswith("the model runs on data['train']'s inputs (tensor 6 float32)")


DATA = """
import torch

def empty_val():
    X = torch.randn(30, 6); y = (X[:, 0] > 0).long()
    return {"train": (X[:20], y[:20]), "val": (X[:0], y[:0]), "test": (X[20:], y[20:])}

def make_loader(split, seed, epoch):
    return []
"""


@pytest.mark.parametrize(
    "function, match",
    [
        ("empty_val", "data: the val split is empty"),
        ("make_loader", "data function '{w}/sm_data.py:make_loader' takes arguments (split, "
         "seed, epoch), and it is called with none: give a make_data() that returns the splits"),
    ],
)  # fmt: skip
def test_a_data_function_mistake_is_one_line_on_the_cli(tmp_path, capsys, function, match):
    """Before: an empty split held as tensors crashed in ``max()`` (the Python API said it in
    one line), and a ``make_loader(split, seed, epoch)`` given to ``--data`` said only that it
    was "missing 3 required positional arguments"."""
    (tmp_path / "sm_data.py").write_text(textwrap.dedent(DATA))
    out = tmp_path / "study"
    argv = ["sweep", "--data", f"{tmp_path}/sm_data.py:{function}", "--epochs", "1"]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match.format(w=tmp_path) in err[0], err
    assert not out.exists()


def test_inspect_still_shows_a_frozen_model(tmp_path, capsys):
    """A checking helper's finding: the "nothing to train" refusal sat in the check every
    built model passes, so ``wdlab inspect`` refused a frozen model it used to list."""
    (tmp_path / "frozen.py").write_text(
        "import torch\ndef make(seed=0):\n    return torch.nn.Linear(6, 2).requires_grad_(False)\n"
    )
    assert main(["inspect", f"{tmp_path}/frozen.py:make"]) == 0
    assert "frozen" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["tensors", "datasets"])
def test_task_binary_refuses_labels_beyond_one(tmp_path, form, capsys, monkeypatch):
    """A new-user trial: ``--task binary`` on labels 0..2 trained a 1-output logit with BCE
    against target 2 (no label 2 could ever be right), exit 0. Binary targets are 0/1 labels
    or probabilities, in [0, 1]: beyond is one line, exit 2, nothing written."""
    (tmp_path / "mine.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch.utils.data import TensorDataset
            g = torch.Generator().manual_seed(0)
            X, y = torch.randn(90, 6, generator=g), torch.randint(0, 3, (90,), generator=g)
            CUTS = {"train": (0, 50), "val": (50, 70), "test": (70, 90)}
            def tensors():
                return {k: (X[a:b], y[a:b]) for k, (a, b) in CUTS.items()}
            def datasets():
                return {k: TensorDataset(X[a:b], y[a:b]) for k, (a, b) in CUTS.items()}
            def one():
                return torch.nn.Linear(6, 1)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    args = ["sweep", "--model", "mine.py:one", "--data", f"mine.py:{form}", "--task", "binary"]
    args += ["--batch-size", "16", "--epochs", "1", "--seeds", "1", "--wd", "0,0.1", "--out"]
    assert main([*args, str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    where = "data['train']" + (" batch 0 (epoch 0)" if form == "datasets" else "")
    assert err == (
        f"wdlab sweep: error: {where}: target 2 is outside [0, 1], and the task is binary (BCE "
        "reads a 0/1 label or a probability): labels 0, 1, 2, … are the task multiclass "
        "(--task multiclass)"
    )
    assert not out.exists()


def test_a_binary_target_below_0_or_not_a_number_is_not_called_a_class():
    """A checker's finding: NaN or -0.5 was refused with the hint that labels 0, 1, 2, … are
    the task multiclass, which only a whole number above 1 suggests."""
    from wdlab.data.arrays import check_labels

    for y, said in ((torch.tensor([0.0, -0.5]), "-0.5"), (torch.tensor([1.0, math.nan]), "nan")):
        with pytest.raises(ValueError, match=rf"^data\['val'\]: target {said} is outside") as e:
            check_labels("data['val']", y, 2)
        assert str(e.value).endswith("(BCE reads a 0/1 label or a probability)")
    with pytest.raises(ValueError, match=r"3 is outside .*: labels 0, 1, 2, … are the task mult"):
        check_labels("data['val']", torch.tensor([3.0]), 2)


def test_task_binary_takes_probabilities():
    """Soft binary targets in [0, 1] (BCE's probabilities) stay accepted, held and streamed."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    X, p = torch.randn(60, 6, generator=g), torch.rand(60, generator=g)
    splits = {"train": (X[:40], p[:40]), "val": (X[40:50], p[40:50]), "test": (X[50:], p[50:])}
    held = wdlab.data.from_splits(splits, task="binary")
    assert held.task == "binary" and torch.equal(held.y_val, p[40:50])
    streamed = wdlab.data.stream_splits(
        {k: TensorDataset(*v) for k, v in splits.items()}, task="binary", batch_size=16
    )
    ys = torch.cat([y for _, y in streamed.streams["train"].epoch(0)])
    assert ys.min() >= 0 and ys.max() <= 1 and len(ys) == 40


class _WithAux(nn.Module):
    """Logits and an auxiliary output, as many research models return them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor):
        return self.fc(x), x.mean()


def test_a_model_returning_a_tuple_on_streamed_data_is_one_line(tmp_path):
    """A new-user trial: held tensors refused a model returning (logits, aux) in one line;
    a streamed Dataset whose classes are read off the model's output raised AttributeError
    "'tuple' object has no attribute 'shape'"."""
    text = refused(
        "the model returns a tuple, not one tensor", lambda: _WithAux(), _data(), tmp_path
    )
    assert text.startswith("the model fails on inputs of shape (6,)")


def test_float_class_labels_are_told_to_be_integers(tmp_path):
    """A new-user trial: labels 0., 1., 2. as floats (a regression, by their type) against a
    3-output model said only that the model must have 1 output."""
    data = _data(stream=False)
    data = {k: (X, y.float() * 2) for k, (X, y) in data.items()}  # 0. and 2.
    make = lambda: nn.Linear(6, 3)  # noqa: E731
    text = refused("give them as integers (y.long())", make, data, tmp_path)
    assert "class labels (whole numbers 0 to 2)" in text


def test_a_dataloaders_own_generator_is_said_to_be_replaced():
    """A new-user trial: ``DataLoader(..., shuffle=True, generator=Generator().manual_seed(42))``
    had its generator replaced by wdlab's seeding without a word: its seed changed nothing.
    It is said, once; without a shuffle nothing is said."""
    from wdlab.data import stream_splits

    x, y = torch.randn(40, 3), torch.arange(40) % 2
    ds = TensorDataset(x, y)
    g = torch.Generator().manual_seed(42)
    with pytest.warns(UserWarning, match="RandomSampler has a generator of its own, which wd"):
        stream_splits({"train": DataLoader(ds, 8, shuffle=True, generator=g), "test": ds})
    for sampler in (
        SubsetRandomSampler(range(30), g),
        WeightedRandomSampler(torch.ones(40), 40, generator=g),
    ):
        with pytest.warns(UserWarning, match=f"{type(sampler).__name__} has a generator of its"):
            stream_splits({"train": DataLoader(ds, 8, sampler=sampler), "val": ds, "test": ds})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream_splits({"train": DataLoader(ds, 8, generator=g), "test": ds})
