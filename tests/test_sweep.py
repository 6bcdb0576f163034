"""Sweeps: the store, resume after SIGKILL, divergence, ls/show/export, notebook objects."""

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from matplotlib.figure import Figure

from numerics import assert_normwise, per_steps
from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import load_study, plan_batches, run_sweep
from wdlab.records import RunConfig

SMALL = {
    "data": {"source": "wine"},
    "model": {"kind": "mlp", "hidden": [8]},
    "train": {"optimizer": "adam", "lr": [0.01], "epochs": 6, "eval_every": 2, "seeds": [0, 1]},
    "decay": {"modes": ["l2", "decoupled"], "weight_decay": [1e-3, 1e-2]},
}


def test_sweep_stores_everything_and_reads_back(tmp_path):
    cfg = validate(SMALL)
    res = run_sweep(cfg, tmp_path / "s", max_batch=3)
    # 2 modes × 2 wd × 2 seeds + the wd = 0 reference for each seed
    assert len(res.runs) == 10 and res.counts["done"] == 10
    assert {r.config.mode for r in res.runs} == {"none", "l2", "decoupled"}
    r = res.runs[0]
    assert r.curves["epoch"] == list(range(6)) and r.curves["eval_epoch"] == [0, 2, 4, 5]
    assert len(r.curves["val_acc"]) == 4 and "test_loss" in r.final
    sel = {(s["mode"], s["lr"]): s for s in res.selection}
    assert sel[("l2", 0.01)]["chosen_on"] == "val" and sel[("l2", 0.01)]["seeds"] == 2
    assert sel[("l2", 0.01)]["best_wd"] in (1e-3, 1e-2)
    assert sel[("l2", 0.01)]["test_acc_at_wd0"] == sel[("none", 0.01)]["test_acc_mean"]
    # running it again trains nothing and changes nothing
    again = run_sweep(cfg, tmp_path / "s", max_batch=3)
    assert [x.final for x in again.runs] == [x.final for x in res.runs]
    with sqlite3.connect(tmp_path / "s" / "study.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT MAX(attempts) FROM runs").fetchone()[0] == 1


def test_notebook_objects(tmp_path):
    res = run_sweep(validate(SMALL), tmp_path / "s")
    html = res._repr_html_()
    # "use wd": the column the terminal and the report name so too
    assert html.startswith("<table") and "decoupled" in html and "use wd" in html
    assert isinstance(res.plot("wd"), Figure) and isinstance(res.plot("loss"), Figure)
    with pytest.raises(ValueError, match="unknown plot"):
        res.plot("pie")


def test_divergence_is_stored_and_the_batch_goes_on(tmp_path):
    cfg = validate(
        {
            "data": {"source": "diabetes"},
            "model": {"kind": "linear"},
            "train": {"optimizer": "sgd", "lr": [0.01, 50.0], "epochs": 30, "eval_every": 5},
            "decay": {"modes": ["coupled"], "weight_decay": [0.0]},
        }
    )
    res = run_sweep(cfg, tmp_path / "d")
    by = {r.config.lr: r for r in res.runs}
    assert by[50.0].status == "diverged" and by[50.0].diverged_epoch is not None
    assert by[0.01].status == "done" and by[0.01].final["test_rmse"] < 1.0
    assert res.counts == {"pending": 0, "running": 0, "done": 1, "diverged": 1, "failed": 0}
    # runs.csv says when (a new-user trial: only show --json and to_pandas did)
    pd = pytest.importorskip("pandas")
    from wdlab.pipelines import export_study

    runs = pd.read_csv(export_study(tmp_path / "d", "csv", tmp_path / "e")["runs"])
    assert runs.set_index("lr")["diverged_epoch"].fillna(-1).to_dict() == {
        0.01: -1,
        50.0: by[50.0].diverged_epoch,
    }


def test_plan_batches_respects_the_budget():
    cfgs = [RunConfig(mode="coupled", weight_decay=w, lr=0.1) for w in range(10)]
    cfgs += [RunConfig(mode="coupled", weight_decay=w, lr=0.1, optimizer="adam") for w in range(3)]
    batches = plan_batches(cfgs, per_config=2**20, max_memory_mb=4)
    assert [len(b) for b in batches] == [4, 4, 2, 3]
    assert all(len({c.optimizer for c in b}) == 1 for b in batches)
    with pytest.raises(ValueError, match="max-memory"):
        plan_batches(cfgs, 1, 0)


def test_another_config_in_the_same_folder_is_refused(tmp_path, capsys):
    run_sweep(validate(SMALL), tmp_path / "s")
    other = dict(SMALL, train=dict(SMALL["train"], epochs=7))
    with pytest.raises(ValueError, match="holds another study"):
        run_sweep(validate(other), tmp_path / "s")
    rc = main(["sweep", "--data", "wine", "--epochs", "2", "--out", str(tmp_path / "s")])
    assert rc == 2 and "holds another study" in capsys.readouterr().err


def test_an_optimizer_spelt_otherwise_is_the_same_study(tmp_path):
    """Found by a new-user trial: ``--optimizer SGD`` and ``--optimizer sgd`` train the same
    runs, but the name was stored as spelt: the second was refused as another study, and
    each had a default folder of its own. The short name is stored, however it is spelt."""
    assert [validate({"train": {"optimizer": o}}).train.optimizer for o in ("SGD", "AdamW")] == [
        "sgd",
        "adamw",
    ]
    first = run_sweep(
        validate(dict(SMALL, train=dict(SMALL["train"], optimizer="SGD"))), tmp_path / "s"
    )
    again = run_sweep(
        validate(dict(SMALL, train=dict(SMALL["train"], optimizer="sgd"))), tmp_path / "s"
    )
    assert [r.final for r in again.runs] == [r.final for r in first.runs]


def test_ls_show_export_cli(tmp_path, capsys):
    root = tmp_path / "studies"
    assert (
        main(
            [
                "sweep",
                "--data",
                "wine",
                "--model",
                "linear",
                "--optimizer",
                "adam",
                "--lr",
                "0.01",
                "--mode",
                "decoupled",
                "--wd",
                "1e-3..1e-1:3",
                "--epochs",
                "4",
                "--out",
                str(root / "a"),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["done"] == 4 and doc["selection"]
    assert main(["ls", str(root), "--json"]) == 0
    studies = json.loads(capsys.readouterr().out)["studies"]
    assert len(studies) == 1 and studies[0]["done"] == 4 and studies[0]["data"] == "wine"
    assert main(["show", str(root / "a")]) == 0
    assert "chosen on val accuracy" in capsys.readouterr().out
    for fmt in ("csv", "parquet"):
        assert main(["export", str(root / "a"), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        runs = read(tmp_path / fmt / f"runs.{fmt}")
        curves = read(tmp_path / fmt / f"curves.{fmt}")
        assert len(runs) == 4 and set(runs["status"]) == {"done"}
        assert set(curves.columns) == {"run_id", "metric", "epoch", "value"}
        assert len(curves[curves.metric == "train_loss"]) == 4 * 4
    capsys.readouterr()
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "no study in" in capsys.readouterr().err


def test_sigkill_halfway_then_resume(tmp_path):
    """Kill a real sweep with SIGKILL after its first batches; the same command finishes it
    without redoing finished runs, losing or duplicating anything."""
    out = tmp_path / "crash"
    cmd = [
        sys.executable,
        "-m",
        "wdlab.cli",
        "sweep",
        "--data",
        "breast_cancer",
        "--model",
        "mlp",
        "--hidden",
        "32",
        "--optimizer",
        "sgd",
        "--mode",
        "coupled",
        "--wd",
        "1e-4..1e-1:11",
        "--lr",
        "0.05",
        "--epochs",
        "400",
        "--eval-every",
        "50",
        "--max-batch",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db_path = out / "study.db"
    deadline = time.time() + 120
    done_before = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=5) as db:
                try:
                    done_before = db.execute(
                        "SELECT COUNT(*) FROM runs WHERE status = 'done'"
                    ).fetchone()[0]
                except sqlite3.OperationalError:
                    done_before = 0
            if done_before >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db_path) as db:
        before = dict(db.execute("SELECT key, final FROM runs WHERE status = 'done'").fetchall())
        total = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert 2 <= len(before) < total == 12  # 11 wd + the wd = 0 reference
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT key, status, attempts, final FROM runs").fetchall()
        n_curves = db.execute("SELECT COUNT(*) FROM curves WHERE metric = 'train_loss'").fetchone()[
            0
        ]
        dupes = db.execute(
            "SELECT COUNT(*) FROM (SELECT key FROM runs GROUP BY key HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    assert len(rows) == 12 and dupes == 0 and n_curves == 12 * 400
    assert all(status == "done" for _, status, _, _ in rows)
    for key, _, attempts, final in rows:
        if key in before:  # finished before the kill: not redone, unchanged
            assert attempts == 1 and final == before[key]
    assert load_study(out).counts["done"] == 12


@pytest.mark.numerics
def test_divergence_is_dated_at_its_first_non_finite_loss_and_spares_the_batch():
    """Divergence is checked at evaluation epochs, yet the epoch stored is the first one whose
    loss was not finite (the same as checking every step), and the healthy rows of the batch
    train exactly as they would alone."""
    from wdlab import data as D
    from wdlab.models import ModelSpec
    from wdlab.trainer import train

    data = D.load("diabetes")
    spec = ModelSpec("mlp", in_dim=data.in_dim, hidden=(8,), activation="tanh")
    bad = RunConfig(mode="coupled", weight_decay=0.0, lr=3.0)
    good = RunConfig(mode="coupled", weight_decay=1e-3, lr=0.01)
    every = train(spec, data, [bad], epochs=40, eval_every=1, device="cpu")[0]
    assert every.status == "diverged" and 0 < every.diverged_epoch < 30
    e = every.diverged_epoch
    assert all(math.isfinite(v) for v in every.curves["train_loss"][:e])
    lazy = train(spec, data, [good, bad], epochs=40, eval_every=30, device="cpu", keep_params=True)
    assert lazy[1].status == "diverged" and lazy[1].diverged_epoch == e
    assert all(v == 0 for t in lazy[1].params.values() for v in t.flatten().tolist())
    alone = train(spec, data, [good], epochs=40, eval_every=30, device="cpu", keep_params=True)[0]
    assert lazy[0].status == "done"
    assert_normwise(lazy[0].params, alone.params, per_steps(40), "healthy row")


def test_a_finite_blow_up_is_stored_as_diverged_and_not_retrained(tmp_path):
    """Loss above 1000 × max(first epoch's loss, 1) is divergence even while finite: plain
    SGD at lr 1 on diabetes multiplies the loss ~20× an epoch, passing 1000× at epoch 3 and
    staying finite for all 12 epochs."""
    cfg = validate(
        {
            "data": {"source": "diabetes"},
            "model": {"kind": "linear"},
            "train": {"optimizer": "sgd", "lr": [0.01, 1.0], "epochs": 12, "eval_every": 4},
            "decay": {"modes": ["coupled"], "weight_decay": [0.0]},
        }
    )
    res = run_sweep(cfg, tmp_path / "s")
    by = {r.config.lr: r for r in res.runs}
    blown = by[1.0]
    assert blown.status == "diverged" and blown.diverged_epoch == 3
    kept = [v for v in blown.curves["train_loss"] if math.isfinite(v)]
    assert kept[-1] < 1000 * kept[0]  # stored up to the last healthy epoch
    assert by[0.01].status == "done"
    again = run_sweep(cfg, tmp_path / "s")  # a rerun retries failed runs, never diverged ones
    assert again.counts == res.counts
    with sqlite3.connect(tmp_path / "s" / "study.db") as db:
        assert db.execute("SELECT MAX(attempts) FROM runs").fetchone()[0] == 1


class FakeBar:
    def __init__(self, total=math.inf):
        self.n, self.updates, self.postfix, self.total = 0.0, [], "", total

    def update(self, k):
        self.n += k
        self.updates.append(k)
        assert self.n <= self.total  # tqdm warns "clamping frac" and shows a negative ETA

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        pass


def test_progress_advances_per_epoch_and_counts_optimizer_steps(tmp_path, monkeypatch):
    import wdlab.pipelines.job as job

    bar, jobs = FakeBar(4), []
    monkeypatch.setattr(job, "_progress", lambda total, done: bar)
    real_run = job.Job.run

    def run(job, *a, **kw):
        jobs.append(job)
        return real_run(job, *a, **kw)

    monkeypatch.setattr(job.Job, "run", run)
    cfg = validate(
        {
            "data": {"source": "wine"},  # 106 training rows: 4 mini-batches of 32 an epoch
            "model": {"kind": "linear"},
            "train": {"optimizer": "adam", "lr": [0.01], "epochs": 5, "batch_size": 32},
            "decay": {"modes": ["decoupled"], "weight_decay": [1e-3, 1e-2, 1e-1]},
        }
    )
    run_sweep(cfg, tmp_path / "s", max_batch=2, progress=True)
    # 4 configurations in batches of 2 and 2: the bar moves after every epoch of a batch
    assert len([u for u in bar.updates if u > 0]) >= 2 * 5
    assert bar.n == pytest.approx(4) and "model-steps/s" in bar.postfix
    assert jobs[0].steps == 4 * 5 * 4  # configurations × epochs × optimizer steps per epoch


def test_the_bar_ends_at_its_total_never_past_it(tmp_path, monkeypatch):
    """18 rows over 60 epochs add 18/60 a time: 18.00000000000002 in floats, past the total
    (tqdm then warned "clamping frac to range [0, 1]" above the table; a new-user trial)."""
    import wdlab.pipelines.job as job

    bar = FakeBar()
    monkeypatch.setattr(job, "_progress", lambda total, done: setattr(bar, "total", total) or bar)
    cfg = validate(
        {
            "data": {"source": "wine"},
            "model": {"kind": "linear"},
            "train": {"optimizer": "sgd", "lr": [0.01], "epochs": 60, "seeds": [0, 1, 2]},
            "decay": {"modes": ["coupled"], "weight_decay": [1e-3, 1e-2, 1e-1, 0.3, 1.0]},
        }
    )
    run_sweep(cfg, tmp_path / "s", progress=True)
    assert sum(18 / 60 for _ in range(60)) > 18  # the floats' sum
    assert bar.n == 18 and len(bar.updates) >= 60


def test_seconds_is_the_wall_time_of_the_sweep(tmp_path):
    cfg = validate(SMALL)
    t0 = time.perf_counter()
    res = run_sweep(cfg, tmp_path / "s", max_batch=3)  # 4 batches
    wall = time.perf_counter() - t0
    batch_times = {r.seconds for r in res.runs}
    assert 0 < res.seconds <= wall
    assert res.seconds >= max(batch_times)  # covers every batch, each counted once
    again = run_sweep(cfg, tmp_path / "s")  # nothing left to train adds no time
    assert again.seconds == res.seconds and load_study(tmp_path / "s").seconds == res.seconds


def test_a_batch_that_holds_one_configuration_s_activations_plans_more_per_batch():
    """Convolutions on the CPU train one configuration at a time: the activations count once
    per batch, not once per configuration, so a budget that holds them once beside 16 sets of
    weights plans one batch of 16 (it planned 2 per batch when every configuration held its
    own); an MLP, vmapped, still counts them per configuration."""
    import torch
    from torch import nn

    from wdlab.data import Dataset
    from wdlab.models import ModelSpec
    from wdlab.pipelines.memory import memory_need, planning_bytes

    def conv(seed=0):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 2))  # fmt: skip

    def mlp(seed=0):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8), nn.ReLU(), nn.Linear(8, 2))

    X, y = torch.randn(64, 3, 32, 32), torch.arange(64) % 2
    ds = Dataset("img", "multiclass", X[:32], y[:32], X[48:], y[48:], X[32:48], y[32:48], 2)
    cpu = torch.device("cpu")
    own, shared = memory_need(ModelSpec("custom", factory=conv), ds, 32, device=cpu)
    assert shared > own > 0  # the activations are the bulk
    assert memory_need(ModelSpec("custom", factory=conv), ds, 32) == (own + shared, 0)
    budget_mb = (shared + 16 * own) / 2**20
    cfgs = [RunConfig("decoupled", w, 0.1, seed=s) for w in (0.0, 1e-3, 1e-2, 1e-1)
            for s in range(4)]  # fmt: skip
    together = plan_batches(cfgs, planning_bytes(own, shared, budget_mb), budget_mb)
    assert [len(b) for b in together] == [16]
    assert max(len(b) for b in plan_batches(cfgs, own + shared, budget_mb)) < 16
    m_own, m_shared = memory_need(ModelSpec("custom", factory=mlp), ds, 32, device=cpu)
    assert m_shared == 0 and m_own > 0


def test_bars_are_drawn_as_the_environment_draws_them():
    """A new-user trial: in a notebook the bars were terminal text (cursor-up escapes that the
    output area stacks into dozens of lines), and the sweep's count of configs jumped 0 → 1 →
    3 → 4 of 4 (shares of an epoch, rounded). tqdm.auto's bars (a widget in a notebook), and
    the count with its share: 1.3 of 4."""
    import io

    from tqdm.auto import tqdm

    import wdlab.pipelines.job as job
    from wdlab.progress import progress_bar

    assert isinstance(progress_bar(3, "x", "y", file=io.StringIO()), tqdm)
    bar = job._progress(4, 0)
    bar.fp = io.StringIO()
    bar.update(4 / 3)
    assert " 1.3/4 configs " in str(bar)
    bar.close()
