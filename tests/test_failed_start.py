"""A sweep that fails before storing any result leaves ``out=`` as the user left it, so the
fixed data or model runs into the same folder; what the user's data raises is one line naming
the item or batch; and the other mistakes a new user made on the way (a per-step schedule on a
stream without ``len()``, ``val: None``, a full batch for a Dataset, a prune setting without
pruning), each one clear line."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

import wdlab
from wdlab.cli import main
from wdlab.data.streamed import SAMPLE
from wdlab.pipelines import load_study
from wdlab.pipelines.fresh import undone_on_failure

G = torch.Generator().manual_seed(0)
X = torch.randn(120, 4, generator=G)
Y = (X[:, 0] > 0).long()


def make(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(4, 2)


class Stream(IterableDataset):
    """``n`` examples it says it has (``len()``), of which it yields ``stop`` (default all)."""

    def __init__(self, a, b, stop=None, length=True):
        self.a, self.b, self.stop, self.length = a, b, stop, length

    def __iter__(self):
        xs, ys = X[self.a : self.b][: self.stop], Y[self.a : self.b][: self.stop]
        yield from zip(xs, ys, strict=True)

    def __len__(self):
        if not self.length:
            raise TypeError("no len")
        return self.b - self.a


class Items(Dataset):
    """A map-style split whose ``__getitem__`` raises IndexError from item ``bad`` on, or
    once it has been called ``calls`` times."""

    def __init__(self, a, b, bad=None, calls=None):
        self.a, self.b, self.bad, self.calls, self.n = a, b, bad, calls, 0

    def __len__(self):
        return self.b - self.a

    def __getitem__(self, i):
        self.n += 1
        if (self.bad is not None and i >= self.bad) or (self.calls and self.n > self.calls):
            raise IndexError(f"item {i} is not there")
        return X[self.a + i], Y[self.a + i]


def splits(train):
    return {"train": train, "val": Stream(80, 100), "test": Stream(100, 120)}


def sweep(data, out, **kw):
    kw = {"lr": 0.1, "weight_decay": [0, 1e-3], "epochs": 2, "batch_size": 16, **kw}
    return wdlab.sweep(make, data, n_classes=2, out=out, **kw)


def test_a_stream_that_ends_early_leaves_no_study_and_the_fixed_one_trains(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=r"data\['train'\] ended early: 4 of 5 batches"):
        sweep(splits(Stream(0, 80, stop=60)), out)
    assert not out.exists()
    assert len(sweep(splits(Stream(0, 80)), out).runs) == 2  # the same out=, fixed data


def test_a_folder_that_existed_keeps_what_it_held(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="ended early"):
        sweep(splits(Stream(0, 80, stop=60)), out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_model_that_raises_leaves_no_study_and_the_fixed_one_trains(tmp_path):
    class Broken(nn.Linear):
        def forward(self, x):
            raise RuntimeError("shape mismatch in my model")

    def broken(seed=0):
        torch.manual_seed(seed)
        return Broken(4, 2)

    out = tmp_path / "s"
    with pytest.raises(Exception, match="shape mismatch in my model"):
        wdlab.sweep(broken, splits(Stream(0, 80)), n_classes=2, lr=0.1, weight_decay=[0, 1e-3],
                    epochs=2, batch_size=16, out=out)  # fmt: skip
    assert not out.exists()
    assert len(sweep(splits(Stream(0, 80)), out).runs) == 2


def test_a_study_with_results_is_never_removed(tmp_path):
    """A new study that stored results before the failure is kept whole, and so is a folder
    that held a study before."""
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="after"), undone_on_failure(out):
        first = sweep(splits(Stream(0, 80)), out)
        raise RuntimeError("after the runs were stored")
    assert [r.final for r in load_study(out).runs] == [r.final for r in first.runs]
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError, match="later"), undone_on_failure(out):
        (out / "new.txt").write_text("made by the failing call")
        raise RuntimeError("a later failure")
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "new.txt"])


def test_what_a_datasets_getitem_raises_is_one_line_naming_the_item(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=r"^data\['train'\]\[\d+\] raised IndexError: item"):
        sweep(splits(Items(0, 80, bad=40)), out)  # met while sampling the split
    with pytest.raises(
        ValueError, match=r"batch \d+ \(evaluation\): the data raised IndexError: item"
    ):
        sweep(splits(Items(0, 80, calls=SAMPLE + 100)), out)  # met while training
    assert not out.exists()


def test_a_per_step_schedule_on_a_stream_without_len_is_refused_before_the_store(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(ValueError, match="runs per step and needs the number of steps"):
        sweep(splits(Stream(0, 80, length=False)), out, schedule="warmup-cosine:0.1")
    assert not out.exists()


def test_val_none_is_no_validation_split(tmp_path):
    data = {"train": (X[:80], Y[:80]), "val": None, "test": (X[100:], Y[100:])}
    assert len(sweep(data, tmp_path / "s").runs) == 2


def test_a_dataset_with_the_full_batch_names_the_batch_size(tmp_path, capsys):
    (tmp_path / "d.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def make_data():\n    X = torch.randn(40, 4); y = (X[:, 0] > 0).long()\n"
        "    return {'train': TensorDataset(X, y), 'test': (X, y)}\n"
        "def make(seed=0):\n    torch.manual_seed(seed); return torch.nn.Linear(4, 2)\n"
    )
    f = str(tmp_path / "d.py")
    flags = ["--model", f"{f}:make", "--data", f"{f}:make_data", "--batch-size", "0"]
    assert main(["sweep", *flags, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the batch size is the full batch" in err[0], err
    assert "give a positive batch size" in err[0]


@pytest.mark.parametrize("prune", [{"prune_eta": 2}, {"prune_rung": 3}])
def test_a_prune_setting_without_pruning_is_refused(tmp_path, prune):
    cfg = {
        "data": {"source": "wine"},
        "model": {"kind": "mlp", "hidden": [8]},
        "train": {"epochs": 9, **prune},
        "decay": {"weight_decay": [0, 1e-3]},
    }
    from wdlab.pipelines import run_sweep

    with pytest.raises(ValueError, match=r"set a successive halving that is off: add train\.prune"):
        run_sweep(cfg, tmp_path / "s")
    assert not (tmp_path / "s").exists()


class Jpegs(Dataset):
    """Items from ``bad`` on raise in a DataLoader worker (as a corrupt file would)."""

    def __init__(self, bad):
        self.bad = bad

    def __len__(self):
        return 80

    def __getitem__(self, i):
        if i >= self.bad and torch.utils.data.get_worker_info() is not None:
            raise ValueError(f"corrupt jpeg at {i}")
        return X[i], Y[i]


def test_what_a_worker_raises_keeps_its_message(tmp_path):
    """A DataLoader worker's error arrives as "Caught ValueError in DataLoader worker process
    0." with the worker's traceback: the line gives the worker's own last line."""
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(Jpegs(40), batch_size=16, shuffle=True, num_workers=2, generator=g)
    with pytest.raises(ValueError, match=r"the data raised ValueError: corrupt jpeg at \d+$"):
        sweep(splits(loader), tmp_path / "s")


@pytest.mark.parametrize("error", ["RuntimeError", "ValueError"])
def test_an_error_in_the_users_forward_names_the_users_line(error, tmp_path, capsys):
    """On the command line, an exception from the user's model while training names the
    file and line it came from, not "unexpected" (which says: a wdlab bug); a ValueError too,
    which read as a refusal of wdlab's own: "error: boom" alone (a new-user trial)."""
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\nN = [0]\n"
        "class M(nn.Linear):\n"
        "    def forward(self, x):\n"
        "        if self.training and torch.is_grad_enabled():\n"
        "            N[0] += 1\n"
        "            if N[0] > 30:\n"
        f"                raise {error}('boom')\n"
        "        return super().forward(x)\n"
        "def make(in_dim, out_dim, seed=0):\n"
        "    torch.manual_seed(seed)\n    return M(in_dim, out_dim)\n"
    )
    flags = ["--data", "wine", "--model", f"{tmp_path / 'm.py'}:make", "--epochs", "20"]
    out = tmp_path / "s"
    assert main(["sweep", *flags, "--batch-size", "16", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{error}: boom (raised in your code, {tmp_path / 'm.py'}:9;" in line
    assert "unexpected" not in line and not out.exists()


def test_any_kept_run_comes_back_named_in_full(tmp_path):
    """keep="all": the wd = 0 reference's runs (mode none, added where the grid has no wd =
    0) come back when named by mode and lr, as any run named by mode, lr and weight_decay
    (the lr may go unnamed where the mode has one); a mode with no answer row names the rows
    there are."""
    data = {"train": (X[:80], Y[:80]), "val": (X[80:100], Y[80:100]), "test": (X[100:], Y[100:])}
    res = wdlab.sweep(make, data, lr=[0.1], weight_decay=[1e-3, 1e-2], epochs=2, keep="all",
                      out=tmp_path / "s")  # fmt: skip
    assert {r.config.mode for r in res.runs} == {"decoupled", "none"}
    ref = res.model(mode="none", lr=0.1, seed=0)
    other = res.model(mode="decoupled", lr=0.1, weight_decay=1e-2, seed=0)
    assert not ref.training and not torch.equal(ref.weight, other.weight)
    # the study's one lr need not be named
    assert torch.equal(res.model(mode="none", weight_decay=0, seed=0).weight, ref.weight)
    assert torch.equal(res.model(mode="decoupled", weight_decay=1e-2, seed=0).weight, other.weight)
    with pytest.raises(ValueError, match=r"no answer for mode='l2'.*name its mode, lr and"):
        res.model(mode="l2")
