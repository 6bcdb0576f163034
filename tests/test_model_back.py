"""The trained model back (issue 22 item 3): a sweep keeps the chosen configurations' trained
weights in its study folder (``keep="best" | "all" | "none"``), ``result.best`` says where,
``result.model()`` rebuilds the ready ``nn.Module``; it equals the configuration retrained
alone (bit for bit on the CPU with ``max_batch=1``, norm-wise from a batch); files are written
into the study folder only, recorded, and a corrupt one is one line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import wdlab
from numerics import assert_normwise, per_steps
from wdlab.data import Dataset
from wdlab.models import ModelSpec
from wdlab.pipelines import load_study
from wdlab.pipelines.weights import FOLDER, kept_runs, load_weights, weights_path
from wdlab.records import RunConfig
from wdlab.store import config_key
from wdlab.trainer import train


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    return Dataset("t", "multiclass", X[:80], y[:80], X[100:], y[100:], X[80:100], y[80:100], 2)


def make(seed=0):
    torch.manual_seed(seed)
    # bias=False before the norm: a bias there gets rounding noise for a gradient (zerograd)
    return nn.Sequential(
        nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)
    )


def _splits():
    return dict(_data().splits())


KW = dict(optimizer="adamw", lr=1e-2, weight_decay=[1e-3, 1e-1], seeds=3, epochs=3, batch_size=16)
SPEC = ModelSpec("custom", factory=make, in_dim=6, out_dim=2, label="make")


def _retrained(config: RunConfig, **kw):
    return train(SPEC, _data(), [config], epochs=3, batch_size=16, keep_params=True, **kw)[0]


def test_the_best_model_returned_equals_a_retrained_one(tmp_path):
    """``max_batch=1``: every seed of the answer's runs, bit for bit, buffers included."""
    r = wdlab.sweep(make, _splits(), out=tmp_path / "s", max_batch=1, **KW)
    row = r.best[0]
    assert sorted(row["weights"]) == [0, 1, 2]
    for seed in (0, 1, 2):
        model = r.model(seed)
        assert isinstance(model, nn.Module) and not model.training  # ready, in eval mode
        run = next(
            x
            for x in r.runs
            if x.config.seed == seed
            and x.config.lr == row["lr"]
            and x.config.weight_decay == row["use_wd"]
            and (x.config.mode == row["mode"] or row["use_wd"] == 0)
        )
        again = _retrained(run.config)
        state = model.state_dict()
        assert set(state) == set(again.params)
        assert [n for n in state if not torch.equal(state[n], again.params[n])] == []


@pytest.mark.numerics
def test_the_model_from_a_batch_is_its_run_alone_normwise(tmp_path):
    r = wdlab.sweep(make, _splits(), out=tmp_path / "s", **KW)
    chosen = r.best[0]["weight_decay"]
    model = r.model(1, weight_decay=chosen)
    cfg = RunConfig(r.best[0]["mode"], chosen, r.best[0]["lr"], "adamw", seed=1)
    cfg = next(x.config for x in r.runs if x.config.weight_decay == chosen and x.config.seed == 1)
    again = _retrained(cfg)
    weights = {n: t for n, t in model.state_dict().items() if t.is_floating_point()}
    assert_normwise(weights, {n: again.params[n] for n in weights}, per_steps(15))


def _files(folder):
    return sorted(p.name for p in (folder / FOLDER).glob("*.pt"))


def test_keep_chooses_what_is_kept_and_only_the_study_folder_is_written(tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    runs = {}
    for keep in ("all", "best", "none"):
        out = tmp_path / keep
        r = wdlab.sweep(make, _splits(), out=out, keep=keep, **KW)
        runs[keep] = (r, _files(out))
    r, files = runs["all"]
    assert len(files) == len(r.runs) == 9  # wd 0 reference + 2 wd, 3 seeds each
    r, files = runs["best"]
    expected = sorted(
        weights_path(r.directory, x.config).name for x in kept_runs(r.runs, r.selection)
    )
    assert files == expected and 3 <= len(files) <= 6
    manifest = json.loads((r.directory / FOLDER / ".wdlab-files.json").read_text())
    assert sorted(manifest) == files  # recorded, and the pruned ones no longer
    r, files = runs["none"]
    assert files == [] and r.best[0]["weights"] == {}
    with pytest.raises(ValueError, match=r"were not kept .*keep='none'"):
        r.model()
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == sorted([*before, "all", "best", "none"])  # nothing outside the studies


def test_a_study_read_back_builds_its_model_with_the_factory(tmp_path):
    out = tmp_path / "s"
    r = wdlab.sweep(make, _splits(), out=out, **KW)
    back = load_study(out)
    with pytest.raises(ValueError, match="cannot be built by name: give factory="):
        back.model()
    a, b = r.model(2).state_dict(), back.model(2, factory=make).state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_corrupt_weights_file_is_one_line(tmp_path):
    out = tmp_path / "s"
    r = wdlab.sweep(make, _splits(), out=out, **KW)
    path = next(iter(r.best[0]["weights"].values()))
    data = Path(path).read_bytes()
    with open(path, "wb") as fh:  # cut short, as an interrupted copy leaves it
        fh.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^weights file .* changed since wdlab wrote it"):
        r.model()
    loose = tmp_path / "loose.pt"  # a file wdlab has no record of: read, and refused if corrupt
    loose.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^weights file .* cannot be read: [^\n]*$"):
        load_weights(loose)


def test_weights_not_kept_name_no_file_that_is_not_there(tmp_path):
    """A new-user trial: a run whose weights keep="best" did not keep was refused naming a
    path, as if the file were there; it says there is no file."""
    out = tmp_path / "s"
    r = wdlab.sweep(make, _splits(), out=out, **KW)
    kept = {x.config for x in kept_runs(r.runs, r.selection)}
    other = next(x for x in r.runs if x.config not in kept).config
    with pytest.raises(ValueError, match=r"were not kept \(no file .*\.pt\); the study keeps"):
        r.model(other.seed, mode=other.mode, lr=other.lr, weight_decay=other.weight_decay)


def test_show_warns_of_a_damaged_kept_weights_file(tmp_path):
    """A new-user trial: a kept weights file cut short went unsaid by ``wdlab show`` (and a
    re-run sweep), exit 0, ``best.weights`` still naming it; only ``model()`` found it. Now
    each command that shows the answer warns of it, in one line, and changes nothing."""
    from wdlab.cli import main

    out = tmp_path / "s"
    r = wdlab.sweep(make, _splits(), out=out, **KW)
    seed, path = next(iter(r.best[0]["weights"].items()))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["show", str(out)]) == 0
    assert said == []
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:500])
    for argv in (["show", str(out)], ["show", str(out), "--json"]):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert main(argv) == 0
        assert [str(w.message) for w in said] == [
            f"weights file {path} changed since wdlab wrote it (its bytes are not those "
            "recorded): model() refuses it; restore it, or sweep into a new --out to train again"
        ]
    assert Path(path).read_bytes() == data[:500]
    Path(path).unlink()  # deleted: said so too, and by model()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["show", str(out)]) == 0
    assert [str(w.message) for w in said] == [
        f"1 weights file wdlab wrote in {out / 'weights'} is gone ({Path(path).name}): model() "
        "cannot build those runs; sweep into a new --out to train them again"
    ]
    with pytest.raises(ValueError, match=r"were not kept \(no file .* \(wdlab wrote it; del"):
        wdlab.load_study(out).model(seed, factory=make)


def test_a_weights_file_replaced_by_another_runs_is_refused(tmp_path):
    """The folder's record holds each file's hash: one run's weights copied over another's
    (a valid state dict, the wrong run) is refused in one line, not loaded as that run."""
    out = tmp_path / "s"
    r = wdlab.sweep(make, _splits(), out=out, keep="all", **KW)
    (s0, f0), (_, f1) = list(r.best[0]["weights"].items())[:2]
    Path(f0).write_bytes(Path(f1).read_bytes())
    with pytest.raises(ValueError, match=r"^weights file .* changed since wdlab wrote it"):
        r.model(s0)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.head = nn.Linear(8, 12, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.emb(x).mean(1))


def test_a_tied_model_comes_back_tied(tmp_path):
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 12, (96, 5), generator=g)
    y = X[:, 0]
    splits = {"train": (X[:64], y[:64]), "val": (X[64:80], y[64:80]), "test": (X[80:], y[80:])}
    r = wdlab.sweep(lambda seed: Tied(), splits, out=tmp_path / "s", **(KW | {"seeds": 1}))
    model = r.model()
    assert model.head.weight is model.emb.weight
    assert not torch.equal(model.emb.weight, Tied().emb.weight)  # trained


def test_with_early_stopping_the_model_back_is_the_one_of_the_reported_epoch(tmp_path):
    """Early stopping reports each run at its best validation epoch, and stops it `patience`
    evaluations later: the model handed back is the one of that best epoch (as Keras's
    restore_best_weights), so it scores what the answer says, not the stopped epoch's."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 20, generator=g)
    y = (X[:, :3].sum(1) > 0).long()
    noisy = y.clone()  # label noise: the training set is overfitted within the epochs
    noisy[torch.randperm(200, generator=g)[:60]] = torch.randint(0, 2, (60,), generator=g)
    data = {"train": (X[:100], noisy[:100]), "val": (X[100:150], y[100:150]),
            "test": (X[150:], y[150:])}  # fmt: skip

    def net(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))

    r = wdlab.sweep(net, data, lr=3e-2, weight_decay=[1e-3, 1e-1], seeds=3, epochs=60,
                    batch_size=32, early_stopping=True, patience=3, out=tmp_path / "s",
                    keep="all")  # fmt: skip
    assert any(run.status == "early" or run.epochs < 60 for run in r.runs)
    row = r.best[0]

    def acc(model, a, b):
        with torch.no_grad():
            return float((model(X[a:b]).argmax(1) == y[a:b]).float().mean())

    models = [r.model(s) for s in row["weights"]]
    assert abs(sum(acc(m, 100, 150) for m in models) / len(models) - row["val"]) < 1e-6
    assert abs(sum(acc(m, 150, 200) for m in models) / len(models) - row["test_mean"]) < 1e-6
    # each run says the same: its best is that epoch on the metric stopped on (it named the
    # lowest validation loss's epoch), and its numbers there are the model's
    chosen = next(s for s in r.selection if s["lr"] == row["lr"] and s["mode"] == row["mode"])
    for seed, model in zip(row["weights"], models, strict=True):
        run = next(x for x in r.runs if x.config.seed == seed and x.config.weight_decay
                   == row["use_wd"] and x.config.lr == row["lr"])  # fmt: skip
        assert run.best["metric"] == "val_acc"
        assert run.best["epoch"] == chosen["epochs"][sorted(row["weights"]).index(seed)]
        assert run.reported["test_acc"] == pytest.approx(acc(model, 150, 200), abs=1e-6)
        frame = r.to_pandas().query("seed == @seed and weight_decay == @run.config.weight_decay")
        assert frame["best_epoch_test_acc"].item() == run.reported["test_acc"]


def test_kept_weights_files_are_the_same_bytes_from_two_sweeps(tmp_path):
    """Each weights file's zip archive was named after its temporary file, which holds the
    process id, so two identical studies kept files that differed in bytes while their
    tensors were equal (found by a new-user trial)."""
    from wdlab.cli import main

    flags = ["--data", "wine", "--model", "linear", "--optimizer", "adam", "--lr", "0.01"]
    flags += ["--mode", "decoupled", "--wd", "0,1e-2", "--epochs", "2", "--keep", "all"]
    for name in ("a", "b"):
        assert main(["sweep", *flags, "--out", str(tmp_path / name)]) == 0
    files = sorted(p.name for p in (tmp_path / "a" / FOLDER).glob("*.pt"))
    assert files and files == sorted(p.name for p in (tmp_path / "b" / FOLDER).glob("*.pt"))
    for name in files:
        a, b = (tmp_path / d / FOLDER / name for d in ("a", "b"))
        assert a.read_bytes() == b.read_bytes(), name


def test_a_builtin_kind_named_in_python_is_the_clis_and_comes_back_by_name(tmp_path):
    """``wdlab.sweep("mlp", ...)`` builds the model ``wdlab sweep --model mlp`` builds (the
    ``[model]`` section's defaults: 64 hidden units, relu), and the study read back rebuilds it
    by that name."""
    from wdlab.config import ModelConfig
    from wdlab.pipelines.experiment import model_spec
    from wdlab.pipelines.own import resolve_model

    ds = _data()
    spec, cli = resolve_model("mlp", ds)[0], model_spec(ModelConfig(kind="mlp"), ds)
    assert spec.describe() == cli.describe() == "mlp 6-64-2 relu"
    a, b = (torch.manual_seed(0) and s.build().state_dict() for s in (spec, cli))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r = wdlab.sweep("mlp", ds, weight_decay=[0.0], lr=[0.01], seeds=1, epochs=1, out=tmp_path)
    # the study records the network the name built: a study of another "mlp" is another
    stored = load_study(tmp_path).config["model"]
    assert (stored["hidden"], stored["activation"], stored["layernorm"]) == ([64], "relu", False)
    back = load_study(tmp_path).model()
    assert [p.shape for p in back.parameters()] == [(64, 6), (64,), (2, 64), (2,)]
    for a, b in zip(back.state_dict().values(), r.model().state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_diverged_runs_model_is_refused_not_handed_back_as_zeros(tmp_path):
    """keep="all" writes a diverged run's file (its weights zeroed): asking for its model is
    one line saying it diverged, and the runs offered instead leave it out (it came back as a
    model of zeros)."""
    r = wdlab.sweep(
        "linear", "wine", optimizer="sgd", modes=["coupled"], lr=[0.01, 1e6],
        weight_decay=[1e-3], seeds=1, epochs=3, batch_size=None, keep="all", out=tmp_path,
    )  # fmt: skip
    (bad,) = [x for x in r.runs if x.status == "diverged" and x.config.mode == "coupled"]
    c = bad.config
    with pytest.raises(ValueError, match="diverged \\(its numbers mean nothing\\)") as exc:
        r.model(c.seed, mode=c.mode, lr=c.lr, weight_decay=c.weight_decay)
    assert "lr 1e+06" not in str(exc.value).split("keeps the weights of", 1)[-1]
    only = [x for x in r.runs if x.status == "diverged"]  # as a study whose every run diverged
    with pytest.raises(ValueError, match="keeps the weights of diverged runs only") as exc:
        type(r)(runs=only, name=r.name, task=r.task, directory=r.directory).model(
            c.seed, mode=c.mode, lr=c.lr, weight_decay=c.weight_decay
        )
    assert "keep='none'" not in str(exc.value)  # a checking helper: it said it was swept so


def test_a_sweep_without_out_hands_its_model_back_from_memory(tmp_path, monkeypatch):
    """No ``out=``: the kept weights are read into the result before its temporary study
    goes, so ``result.model()`` builds the answer's model in the notebook, equal to a
    retrained one (it said no weights were kept, after training; found by a new-user
    trial); ``keep="none"`` keeps none and says so."""
    monkeypatch.chdir(tmp_path)
    r = wdlab.sweep(make, _splits(), max_batch=1, **KW)
    assert r.directory is None and not list(tmp_path.iterdir())  # nothing written here
    row = r.best[0]
    model = r.model(1)
    run = next(
        x
        for x in r.runs
        if (x.config.seed, x.config.lr, x.config.weight_decay) == (1, row["lr"], row["use_wd"])
    )
    again = _retrained(run.config).params
    assert [n for n, t in model.state_dict().items() if not torch.equal(t, again[n])] == []
    kept = {x.config for x in kept_runs(r.runs, r.selection)}
    other = next(x for x in r.runs if x.config not in kept)
    assert set(r.held) == {config_key(c) for c in kept}
    with pytest.raises(ValueError, match=r"were not kept \(none held in memory: the sweep had "):
        r.model(mode=other.config.mode, lr=other.config.lr, weight_decay=other.config.weight_decay)
    none = wdlab.sweep(make, _splits(), keep="none", **KW)
    with pytest.raises(ValueError, match="with keep='none'; sweep with keep='best' or keep='all'"):
        none.model()
