"""Streams into the trainer (issue 22 item 1): a split given as a Dataset, a DataLoader or a
factory trains from its stream through ``wdlab.sweep``: ``__getitem__`` afresh each epoch, each
mini-batch read once for every configuration of a batch, evaluation streamed, seeded (the same
sweep twice gives the same numbers; ``max_batch=1`` the batched run's), inputs as the model
wants them (tuples, dicts, integer token ids), a second run into the same study resumed, and
bad streams one line with nothing stored."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import wdlab
from numerics import assert_normwise, per_steps
from wdlab.data import stream_splits
from wdlab.models import ModelSpec
from wdlab.pipelines.memory import bytes_per_config

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(lr=1e-2, weight_decay=[0.0, 0.1], epochs=2, batch_size=16)


def _xy(n=120, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).long()


class Noisy(Dataset):
    """A random transform in ``__getitem__`` (fresh noise each call), counting its calls."""

    def __init__(self, X, y, noise=0.1):
        self.X, self.y, self.noise = X, y, noise
        self.calls: Counter = Counter()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.calls[i] += 1
        return self.X[i] + self.noise * torch.randn_like(self.X[i]), self.y[i]


def _splits(noise=0.1):
    X, y = _xy()
    return {
        "train": Noisy(X[:80], y[:80], noise),
        "val": Noisy(X[80:100], y[80:100], 0.0),
        "test": Noisy(X[100:], y[100:], 0.0),
    }


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


def test_getitem_is_called_afresh_every_epoch():
    """Each training item is read once per epoch to train and once per evaluation pass (the
    train split in eval mode, after each epoch): 2 epochs, 4 reads, plus the sample the
    facts are read from. It was read once, augmentation frozen."""
    data = _splits()
    wdlab.sweep(mlp, data, seeds=1, eval_every=1, **SMALL)
    calls = data["train"].calls
    assert min(calls[i] for i in range(80)) >= 4  # 2 epochs x (train + evaluation)
    assert max(calls[i] for i in range(80)) <= 5  # ... + the 32 sampled for the facts
    assert min(data["val"].calls[i] for i in range(20)) >= 2  # evaluated each epoch


def test_the_same_sweep_twice_gives_the_same_numbers_whatever_the_caller_draws():
    a = wdlab.sweep(mlp, _splits(), seeds=2, **SMALL)
    torch.manual_seed(123)  # the caller's RNG: not the streams'
    torch.rand(7)
    b = wdlab.sweep(mlp, _splits(), seeds=2, **SMALL)
    for x, y in zip(a.runs, b.runs, strict=True):
        assert x.config == y.config
        assert x.final == y.final


def test_two_epochs_train_on_different_augmented_inputs():
    """A configuration alone (max_batch=1: the module's own forward, real tensors) sees the
    same 80 items in both epochs, with fresh noise: the inputs of epoch 1 are not epoch 0's
    in another order (a frozen read gave the same inputs every epoch)."""
    seen = []

    def make(seed=0):
        model = mlp(seed)
        model.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach().sum(1)) if m.training else None
        )
        return model

    wdlab.sweep(make, _splits(0.5), seeds=1, max_batch=1, **(SMALL | {"weight_decay": 0.0}))
    steps = seen[-10:]  # the 2 epochs' 5 steps (probes ran before, evaluation is in eval mode)
    epoch0, epoch1 = (torch.cat(steps[:5]).sort().values, torch.cat(steps[5:]).sort().values)
    assert len(epoch0) == len(epoch1) == 80
    assert not torch.allclose(epoch0, epoch1)


@pytest.mark.numerics
def test_batched_equals_alone_under_a_shuffled_multiworker_dataloader():
    """A shuffled DataLoader with two workers and a random transform (re-seeded by wdlab,
    said once), Dropout in the model: each configuration of the batch gives the val loss it
    gives alone (max_batch=1), within per_steps(steps)."""
    data = _splits()
    data["train"] = DataLoader(data["train"], batch_size=16, shuffle=True, num_workers=2)
    kw = dict(SMALL, seeds=2, optimizer="sgd", lr=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        batched = wdlab.sweep(mlp, data, **kw)
    told = [w for w in caught if "has no generator" in str(w.message)]
    assert len(told) == 1  # said once, at the user's line (not inside wdlab)
    assert (told[0].filename, told[0].lineno) == (__file__, line)
    alone = wdlab.sweep(mlp, data, max_batch=1, **kw)
    assert "vmap" in batched.engine_note and "one configuration" in alone.engine_note
    steps = 2 * 5
    for b, a in zip(batched.runs, alone.runs, strict=True):
        assert b.config == a.config
        for k in ("val_loss", "test_loss", "train_loss"):
            assert_normwise([b.final[k]], [a.final[k]], per_steps(steps), f"{k} {b.config}")


def test_a_second_run_into_the_same_study_resumes(tmp_path):
    """The stream's fingerprint comes from a seeded sample: the same code gives the same
    study, so a second run returns it (it was refused: the frozen read drew from the
    caller's RNG)."""
    out = tmp_path / "study"
    first = wdlab.sweep(mlp, _splits(), seeds=1, out=out, **SMALL)
    data = _splits()
    again = wdlab.sweep(mlp, data, seeds=1, out=out, **SMALL)
    assert [r.final for r in again.runs] == [r.final for r in first.runs]
    assert sum(data["train"].calls.values()) <= 32  # the sample: nothing trained again


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x, extra):
        return self.head(torch.relu(self.a(x) + self.b(extra)))


class Keywords(TwoInputs):
    def forward(self, *, image, side):
        return super().forward(image, side)


def _two_input_items(n, seed, as_dict):
    X, y = _xy(n, seed=seed)
    extra = X[:, :3] * 2
    if as_dict:
        return [({"image": X[i], "side": extra[i]}, y[i]) for i in range(n)]
    return [((X[i], extra[i]), y[i]) for i in range(n)]


@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_and_dict_items_reach_the_model_as_args_and_kwargs(as_dict):
    cls = Keywords if as_dict else TwoInputs
    data = {
        "train": _two_input_items(64, 0, as_dict),
        "val": _two_input_items(16, 1, as_dict),
        "test": _two_input_items(16, 2, as_dict),
    }
    r = wdlab.sweep(lambda seed: cls(), data, seeds=1, **SMALL)
    assert r.engine_note.startswith("torch.func: vmap")
    assert all(math.isfinite(x.final["val_loss"]) for x in r.runs)


def test_tensors_with_two_inputs_are_held_in_memory():
    X, y = _xy(96)
    extra = X[:, :3] * 2
    data = {
        "train": ((X[:64], extra[:64]), y[:64]),
        "val": ((X[64:80], extra[64:80]), y[64:80]),
        "test": ((X[80:], extra[80:]), y[80:]),
    }
    r = wdlab.sweep(lambda seed: TwoInputs(), data, seeds=1, **SMALL)
    assert all(math.isfinite(x.final["test_loss"]) for x in r.runs)


class Tokens(Dataset):
    """Integer token ids; the label: whether token 1 occurs."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 12, (n, 8), generator=g)
        self.y = (self.x == 1).any(1).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        assert ids.dtype == torch.int64  # token ids stay integer
        return self.head(self.emb(ids).mean(1))


def test_integer_token_ids_reach_an_embedding():
    data = {"train": Tokens(64, 0), "val": Tokens(16, 1), "test": Tokens(16, 2)}
    r = wdlab.sweep(lambda seed: Bag(), data, seeds=1, **SMALL)
    assert all(math.isfinite(x.final["val_loss"]) for x in r.runs)


def test_a_model_that_does_not_take_the_inputs_is_one_line():
    """Two inputs for a model of one: the model's error, in one line (not a TypeError)."""
    data = {k: _two_input_items(32, i, False) for i, k in enumerate(("train", "val", "test"))}
    with pytest.raises(ValueError, match=r"the model fails on inputs of shape .*: TypeError"):
        wdlab.sweep(lambda seed: nn.Linear(6, 2), data, seeds=1, **SMALL)


def test_a_builtin_kind_refuses_several_inputs_in_one_line():
    data = {k: _two_input_items(32, i, False) for i, k in enumerate(("train", "val", "test"))}
    with pytest.raises(ValueError, match="built-in model kinds take one tensor"):
        wdlab.sweep("mlp", data, seeds=1, **SMALL)


def test_builtin_cnn_trains_from_a_stream_of_images():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 1, 8, 8, generator=g)
    y = (X.mean((1, 2, 3)) > 0).long()
    data = {
        "train": TensorDataset(X[:64], y[:64]),
        "val": TensorDataset(X[64:80], y[64:80]),
        "test": TensorDataset(X[80:], y[80:]),
    }
    r = wdlab.sweep("cnn", data, seeds=1, **SMALL)
    assert r.engine_note.startswith("hand-batched GroupedCNN")
    assert all(math.isfinite(x.final["val_loss"]) for x in r.runs)


class Unlabelled(Noisy):
    """No ``targets`` or ``classes`` attribute: its classes are not declared."""


def test_classes_come_from_the_models_output_without_a_full_read():
    X, y = _xy()
    data = {
        "train": Unlabelled(X[:80], y[:80]),
        "val": Unlabelled(X[80:100], y[80:100]),
        "test": Unlabelled(X[100:], y[100:]),
    }
    r = wdlab.sweep(mlp, data, seeds=1, **SMALL)
    assert r.data.get("name") and r.task == "multiclass"
    bad = Unlabelled(X[:80], y[:80] * 3)  # labels 0 and 3 for a model of 2 outputs
    with pytest.raises(ValueError, match=r"the model outputs 2 values.* has label 3, so the mo"):
        wdlab.sweep(mlp, {**data, "train": bad}, seeds=1, **SMALL)


class Lazy(Dataset):
    """N class-conditional 3x32x32 images made in ``__getitem__`` (nothing held)."""

    def __init__(self, n, offset=0):
        self.n, self.offset = n, offset
        self.protos = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.offset + i)
        y = int(torch.randint(0, 4, (), generator=g))
        return self.protos[y] + 2.0 * torch.randn(3, 32, 32, generator=g), y


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 4),
    )  # fmt: skip


def test_memory_estimate_counts_a_batch_not_the_data():
    """A stream's estimate is the same for 1,000 and 100,000 examples: one batch at a time."""
    kw = {"n_classes": 4}
    small = stream_splits({"train": Lazy(1_000), "val": Lazy(200, 10**6), "test": Lazy(200)}, **kw)
    large = stream_splits(
        {"train": Lazy(100_000), "val": Lazy(5_000, 10**6), "test": Lazy(200)}, **kw
    )
    spec = ModelSpec("custom", factory=tiny_cnn, in_dim=3072, out_dim=4)
    est = [bytes_per_config(spec, d, 128, 1, 1, "sgd") for d in (small, large)]
    assert est[0] == est[1]


def test_bad_streams_are_one_line_and_store_nothing(tmp_path):
    out = tmp_path / "study"
    good = _splits()
    wdlab.sweep(mlp, good, seeds=1, out=out, **SMALL)
    db = (out / "study.db").read_bytes()

    class Dicts(Noisy):
        pass

    def as_dict(items):
        return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    bad = dict(good, train=DataLoader(good["train"], batch_size=16, collate_fn=as_dict))
    with pytest.raises(ValueError, match=r"the collate_fn's batch is dict, not an \(x, y\) pair"):
        wdlab.sweep(mlp, bad, seeds=1, out=out, **SMALL)
    assert (out / "study.db").read_bytes() == db  # nothing stored changed


def short_loader(split, seed, epoch):
    """A ``make_loader`` factory whose epoch 1 stops after 3 of its 5 batches (a generator: no
    len(), so the first epoch's count is the expected one)."""
    X, y = _xy(80)
    stop = 3 if epoch == 1 else 5
    return ((X[i : i + 16], y[i : i + 16]) for i in range(0, 16 * stop, 16))


@pytest.mark.parametrize("checkpoint", ["auto", 1])
def test_a_stream_that_ends_early_is_one_line_and_its_runs_stay_pending(tmp_path, checkpoint):
    """One line; a new study with nothing of value is removed (tests/test_failed_start.py), one
    with a checkpoint keeps its runs pending there: run it again to retry."""
    out = tmp_path / "study"
    X, y = _xy()
    data = {"train": short_loader, "val": (X[80:100], y[80:100]), "test": (X[100:], y[100:])}
    with pytest.raises(
        ValueError, match=r"data\['train'\] ended early: 3 of 5 batches \(epoch 1\)"
    ):
        wdlab.sweep(mlp, data, seeds=1, out=out, n_classes=2, checkpoint=checkpoint, **SMALL)
    if checkpoint == "auto":  # none written in a second of training
        assert not out.exists()
        return
    with sqlite3.connect(out / "study.db") as db:
        rows = set(db.execute("SELECT status, epochs FROM runs"))
    assert rows == {("pending", 1)}  # not failed, nothing finished: run it again to retry


class _Understated(torch.utils.data.IterableDataset):
    """A stream of 48 items whose ``len()`` says 16 (one batch of 16, where it gives 3)."""

    def __iter__(self):
        X, y = _xy(48)
        return iter(list(zip(X, y, strict=True)))

    def __len__(self):
        return 16


def test_a_training_stream_longer_than_its_length_is_one_line(tmp_path):
    """A per-step schedule and ``steps=`` count an epoch's steps from the stream's length: one
    that yields more batches than it says trained all of them on a schedule built for fewer
    (warm-up + cosine restarting every step; found by a new-user trial). One line."""
    X, y = _xy()
    train = DataLoader(_Understated(), batch_size=16)
    data = {"train": train, "val": (X[80:100], y[80:100]), "test": (X[100:], y[100:])}
    said = r"data\['train'\] gave more than 1 batches, while its length"
    with pytest.raises(ValueError, match=said):
        wdlab.sweep(mlp, data, seeds=1, n_classes=2, schedule="warmup-cosine:1", **SMALL)


def every_split(split, seed, epoch):
    """One ``make_loader`` for train, val and test (the README's factory form)."""
    X, y = _xy()
    part = {"train": slice(0, 80), "val": slice(80, 100), "test": slice(100, 120)}[split]
    ds = Noisy(X[part], y[part], 0.1 if split == "train" else 0.0)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return DataLoader(ds, batch_size=16, shuffle=split == "train", generator=g)


def test_one_make_loader_is_the_data_of_every_split(tmp_path, capsys):
    """``wdlab.sweep(make, make_loader)``, and a ``make_data`` returning it on the command
    line, train as ``{split: make_loader for split in (train, val, test)}`` does (it was
    refused: 'data must map ...; got function'); another callable is one line naming the
    factory form."""
    from wdlab.cli import main

    every = {k: every_split for k in ("train", "val", "test")}
    one = wdlab.sweep(mlp, every_split, seeds=1, **SMALL)
    mapped = wdlab.sweep(mlp, every, seeds=1, **SMALL)
    assert [r.final for r in one.runs] == [r.final for r in mapped.runs]
    with pytest.raises(ValueError, match=r"^data is mlp, a callable that does not take \(split"):
        wdlab.sweep(mlp, mlp, seeds=1, **SMALL)
    (tmp_path / "factory_data.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_pipeline import every_split, mlp\n\ndef make_data():\n    return every_split\n"
    )
    f = tmp_path / "factory_data.py"
    flags = ["--model", f"{f}:mlp", "--data", f"{f}:make_data", "--optimizer", "adamw"]
    flags += ["--mode", "decoupled"]
    flags += ["--lr", "1e-2", "--wd", "0,0.1", "--epochs", "2", "--batch-size", "16"]
    flags += ["--seeds", "1", "--out", str(tmp_path / "s"), "--json"]
    assert main(["sweep", *flags]) == 0, capsys.readouterr().err
    cli = json.loads(capsys.readouterr().out)["runs"]
    assert {(r["config"]["weight_decay"], r["final"]["test_loss"]) for r in cli} == {
        (r.config.weight_decay, r.final["test_loss"]) for r in one.runs
    }


def test_cli_takes_the_users_data_function(tmp_path):
    """``wdlab sweep --model file.py:make --data file.py:make_data``: the function's folder is
    importable, its Datasets stream; a function that raises is one line, exit status 2."""
    (tmp_path / "mydata.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch.utils.data import TensorDataset
            from helper import rows

            def make_data():
                X, y = rows()
                return {"train": TensorDataset(X[:64], y[:64]), "val": (X[64:80], y[64:80]),
                        "test": TensorDataset(X[80:], y[80:])}

            def broken():
                raise RuntimeError("no such folder")
            """
        )
    )
    (tmp_path / "helper.py").write_text(
        "import torch\n\ndef rows():\n    g = torch.Generator().manual_seed(0)\n"
        "    X = torch.randn(96, 6, generator=g)\n    return X, (X[:, 0] > 0).long()\n"
    )
    (tmp_path / "mymodel.py").write_text(
        "import torch\nfrom torch import nn\n\ndef make(seed=0):\n    torch.manual_seed(seed)\n"
        "    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "wdlab.cli",
        "sweep",
        "--model",
        "mymodel.py:make",
        "--epochs",
        "2",
    ]
    cmd += ["--batch-size", "16", "--wd", "0,0.1", "--seeds", "1", "--out", "s", "--json"]
    ok = subprocess.run(
        [*cmd, "--data", "mydata.py:make_data"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [*cmd, "--data", "mydata.py:broken"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "data function 'mydata.py:broken' raised RuntimeError: no such folder" in bad.stderr


def _kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        return "VmHWM"
    except OSError:
        return "VmRSS"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status")
def test_a_100k_lazily_generated_set_trains_in_bounded_memory():
    """100,000 class-conditional 3x32x32 images made in ``__getitem__`` (1.2 GB as float32)
    train through ``wdlab.sweep`` (20 steps of 256, then the evaluation of every split, the
    training split included) while the process's peak resident memory grows by less than
    200 MiB. The read-into-memory path stacked the split first: 1.2 GB before the first step.

    The bound: a batch is 3 MiB of inputs; training holds one or two (the one collated, the one
    trained on) and the K = 2 configurations' activations of a tiny CNN (under 10 MiB); the
    evaluation keeps no outputs (means per batch). A warm-up sweep on 2,000 items first runs
    every code path once, so the imports and the allocator's first growth are not counted;
    what is left of 200 MiB is the allocator keeping freed chunks (glibc and torch)."""
    kw = dict(optimizer="sgd", lr=0.05, weight_decay=[0.0, 5e-4], seeds=1, batch_size=256)
    warm = {"train": Lazy(2_000), "val": Lazy(500, 10**6), "test": Lazy(500, 2 * 10**6)}
    wdlab.sweep(tiny_cnn, warm, steps=4, n_classes=4, **kw)
    data = {"train": Lazy(100_000), "val": Lazy(2_000, 10**6), "test": Lazy(2_000, 2 * 10**6)}
    field = _reset_peak()
    start = _kib("VmRSS")
    r = wdlab.sweep(tiny_cnn, data, steps=20, n_classes=4, **kw)
    grew = (_kib(field) - start) / 1024
    assert len(r.runs[0].curves["train_loss"]) == 1  # 20 steps: one epoch, cut short
    print(f"peak RSS grew by {grew:.0f} MiB")
    assert grew < 200, f"peak RSS grew by {grew:.0f} MiB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a GPU machine runs it)")
def test_cuda_streamed_training_steps_do_not_sync_with_the_host():
    """Streamed batches are pinned and copied asynchronously, labels checked on the host before
    the copy, the epoch's loss and the clipping factor kept on the device: the synchronising
    calls counted by torch's sync debug mode do not grow with the number of epochs."""
    from wdlab.records import RunConfig
    from wdlab.trainer import train

    data = stream_splits(_splits(), batch_size=16, n_classes=2)
    spec = ModelSpec("custom", factory=mlp, in_dim=6, out_dim=2)
    configs = [RunConfig("decoupled", wd, 1e-2, "adamw", seed=s) for wd in (0, 0.1) for s in (0, 1)]

    def syncs(epochs):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(
                    spec, data, configs, epochs=epochs, eval_every=1000, device="cuda",
                    clip_grad_norm=1.0, schedule="warmup-linear:3",
                )  # fmt: skip
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(4) == syncs(8)


def test_a_data_function_named_in_python_is_what_data_takes_on_the_cli(tmp_path, monkeypatch):
    """``wdlab.sweep(model, "file.py:make_data")`` calls that function for its splits, as
    ``--data file.py:make_data`` does; the same numbers as the splits given directly."""
    (tmp_path / "named_data.py").write_text(
        textwrap.dedent("""
        import torch

        def make_data():
            g = torch.Generator().manual_seed(0)
            X = torch.randn(90, 4, generator=g)
            y = (X[:, 0] > 0).long()
            return {"train": (X[:60], y[:60]), "val": (X[60:75], y[60:75]),
                    "test": (X[75:], y[75:])}
        """)
    )
    monkeypatch.chdir(tmp_path)
    named = wdlab.sweep("linear", "named_data.py:make_data", seeds=1, **SMALL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import named_data

    given = wdlab.sweep("linear", named_data.make_data(), seeds=1, **SMALL)
    assert [r.final for r in named.runs] == [r.final for r in given.runs]
    with pytest.raises(ValueError, match=r"cannot load data function 'none\.py:make_data'"):
        wdlab.sweep("linear", "none.py:make_data", seeds=1, **SMALL)


def test_a_modelspec_is_sized_to_the_data_or_refused_in_one_line():
    """A ModelSpec left at in_dim=0 takes the data's sizes; one sized otherwise is refused
    before training (it failed inside a loss with a raw RuntimeError)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(90, 5, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    data = {"train": (X[:60], y[:60]), "val": (X[60:75], y[60:75]), "test": (X[75:], y[75:])}
    r = wdlab.sweep(ModelSpec("mlp", hidden=(8,)), data, seeds=1, **SMALL)
    assert all(math.isfinite(x.final["val_loss"]) for x in r.runs)
    with pytest.raises(ValueError, match="the ModelSpec has out_dim=1; the data need out_dim=3"):
        wdlab.sweep(ModelSpec("mlp", in_dim=5, hidden=(8,)), data, seeds=1, **SMALL)
    with pytest.raises(ValueError, match="the ModelSpec has out_dim=7; the data need out_dim=3"):
        wdlab.sweep(ModelSpec("mlp", out_dim=7, hidden=(8,)), data, seeds=1, **SMALL)
