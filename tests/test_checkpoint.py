"""Checkpoints: a batch's training state saved into the study directory every N epochs (or by
time), and a killed or interrupted sweep resumed mid-training to the numbers of an
uninterrupted one, bit for bit on the CPU (the same batches, the same kernels, the saved random
states). A checkpoint that cannot be used is refused in one line, nothing stored changed.
"""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch

import wdlab
from wdlab.cli import main
from wdlab.pipelines import job, run_sweep, study
from wdlab.trainer import state as trainer_state
from wdlab.trainer.state import Cadence

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
CFG = {
    "data": {"source": "wine"},
    "model": {"kind": "mlp", "hidden": [8]},
    "train": {
        "optimizer": "adam",
        "lr": [0.003, 0.03],
        "epochs": 40,
        "eval_every": 5,
        "seeds": [0, 1],
        "batch_size": 64,
        "schedule": "cosine",
        "checkpoint": 6,
    },
    "decay": {"modes": ["decoupled"], "weight_decay": [0, 1e-2, 1e-1]},
}
FLAGS = [
    "--data", "wine", "--model", "mlp", "--hidden", "8", "--optimizer", "adam",
    "--lr", "0.003,0.03", "--mode", "decoupled", "--wd", "0,1e-2,1e-1", "--seeds", "2",
    "--eval-every", "5", "--batch-size", "64", "--schedule", "cosine",
]  # fmt: skip


def _rows(folder, sql):
    with sqlite3.connect(Path(folder) / "study.db", timeout=30) as db:
        return db.execute(sql).fetchall()


def _stored(folder):
    """Everything a study stores about its runs: status, epochs, finals, every curve value."""
    return (
        _rows(folder, "SELECT key, status, epochs, final, best FROM runs ORDER BY key"),
        _rows(
            folder,
            "SELECT r.key, c.metric, c.epoch, c.value FROM curves c JOIN runs r ON r.id = c.run_id "
            "ORDER BY 1, 2, 3",
        ),
        _rows(folder, "SELECT rung, detail FROM decisions ORDER BY rung"),
    )


def test_the_cadence():
    every = Cadence(3, True)
    assert [e for e in range(1, 10) if every.due(e)] == [3, 6, 9]
    assert not any(Cadence("off", True).due(e) for e in range(1, 10))
    assert not any(Cadence(3, False).due(e) for e in range(1, 10))  # nobody receives it
    auto = Cadence("auto", True)
    assert not auto.due(1)  # the first after CHECKPOINT_SECONDS of training
    auto.last -= trainer_state.CHECKPOINT_SECONDS
    assert auto.due(2) and not auto.due(3)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised once a checkpoint is written."""


def _interrupt_after_checkpoints(monkeypatch, n):
    """The sweep is interrupted (Ctrl-C) right after its n-th checkpoint is stored."""
    real = job.Job._checkpoint
    seen = []

    def checkpoint(self, batch, state):
        real(self, batch, state)
        seen.append(state["epoch"])
        if len(seen) == n:
            raise Interrupted

    monkeypatch.setattr(job.Job, "_checkpoint", checkpoint)
    return seen


def test_an_interrupted_sweep_resumes_mid_training_bit_for_bit(tmp_path, monkeypatch):
    whole = run_sweep(CFG, tmp_path / "whole")
    seen = _interrupt_after_checkpoints(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run_sweep(CFG, tmp_path / "cut")
    assert seen == [6, 12]
    held = _rows(tmp_path / "cut", "SELECT status, epochs, checkpoint FROM runs")
    assert {(s, e) for s, e, _ in held} == {("pending", 12)} and all(n for _, _, n in held)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"resuming 12 runs from their checkpoints \(epoch 12\)"):
        resumed = run_sweep(CFG, tmp_path / "cut")
    assert _stored(tmp_path / "cut") == _stored(tmp_path / "whole")
    assert [r.final for r in resumed.runs] == [r.final for r in whole.runs]
    assert not (tmp_path / "cut" / "checkpoints").exists()  # every one removed, and the folder


def test_a_resumed_runs_seconds_count_the_training_before_the_interruption(tmp_path, monkeypatch):
    """A new-user trial: a run resumed from a checkpoint said only the seconds trained after
    the resume. The checkpoint holds the seconds so far (here made 1000 s), which count."""
    import types

    _interrupt_after_checkpoints(monkeypatch, 1)
    slow = types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + 1000.0, monotonic=time.monotonic
    )
    monkeypatch.setattr(trainer_state, "time", slow)  # 1000 s before the first checkpoint
    with pytest.raises(Interrupted):
        run_sweep(CFG, tmp_path / "cut")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="resuming 12 runs from their checkpoints"):
        resumed = run_sweep(CFG, tmp_path / "cut")
    assert all(r.seconds >= 1000.0 for r in resumed.runs)


def test_an_interrupted_study_says_where_its_runs_stand(tmp_path, monkeypatch, capsys):
    """Interrupted after its first checkpoint, a study's views say its runs are saved mid-way
    (not "not trained yet"), its notebook view says no run has finished (not an empty table),
    and an export of it warns that it is partial, its integer columns kept whole."""
    cfg = {**CFG, "train": {**CFG["train"], "epochs": 12}}
    _interrupt_after_checkpoints(monkeypatch, 1)
    with pytest.raises(Interrupted):
        run_sweep(cfg, tmp_path / "cut")
    assert main(["show", str(tmp_path / "cut")]) == 0
    out = capsys.readouterr().out
    assert (
        "incomplete: 12 runs not finished (12 saved at epoch 6 in checkpoints: run the sweep "
        "again to resume them)" in out
    )
    assert "seed" not in out and "---" not in out  # no table header over no run (a trial's)
    html = wdlab.load_study(tmp_path / "cut")._repr_html_()
    assert "12 runs (12 pending)" in html and "no run has finished yet" in html
    assert "<table" not in html
    with pytest.warns(UserWarning, match=r"partial \(12 of 12 runs unfinished\): runs.csv lists"):
        wdlab.pipelines.export_study(tmp_path / "cut", "csv", tmp_path / "e")
    header, first = (tmp_path / "e" / "runs.csv").read_text().splitlines()[:2]
    row = dict(zip(header.split(","), first.split(","), strict=False))
    assert (row["status"], row["epochs"], row["seed"]) == ("pending", "6", "0")
    # a new-user trial: the numbers stored with the checkpoint (epoch 6 of 12) were written as
    # the run's final_* and best_*: no results yet are written as none
    results = {k: v for k, v in row.items() if k.startswith(("final_", "best_"))}
    assert results and not any(results.values()), results


def test_an_export_writes_no_results_for_a_run_paused_mid_training(tmp_path):
    """A new-user trial: a pruned sweep killed while its runs waited at a rung exported the
    numbers stored at the rung (epoch 2 of 12) as the runs' final_* and best_epoch: run 1's
    final test loss 0.28, 0.058 once finished. An unfinished run's results are left empty."""
    cfg = {**CFG, "train": {**CFG["train"], "epochs": 4}}
    run_sweep(cfg, tmp_path / "s")
    with sqlite3.connect(tmp_path / "s" / "study.db") as db:  # as a rung's pause leaves it
        db.execute("UPDATE runs SET status = 'running', epochs = 2 WHERE id = 1")
    with pytest.warns(UserWarning, match=r"partial \(1 of 12 runs unfinished\)"):
        wdlab.pipelines.export_study(tmp_path / "s", "csv", tmp_path / "e")
    pd = pytest.importorskip("pandas")
    runs = pd.read_csv(tmp_path / "e" / "runs.csv").set_index("run_id")
    results = [c for c in runs.columns if c.startswith(("final_", "best_"))]
    assert runs.loc[2, ["final_test_loss", "best_epoch"]].notna().all()
    assert runs.loc[1, results].isna().all() and runs.loc[1, "status"] == "running"


def test_an_interrupted_early_stopping_sweep_keeps_the_uninterrupted_weights(tmp_path, monkeypatch):
    """With early stopping each run's weights at its best evaluation are part of the batch's
    state: interrupted after a checkpoint and resumed, the sweep keeps the weights files of
    an uninterrupted one, bit for bit (and they are not all the last epoch's)."""
    train = {**CFG["train"], "early_stopping": True, "patience": 2, "keep": "all", "lr": [0.3]}
    cfg = {**CFG, "train": train}
    run_sweep(cfg, tmp_path / "whole")
    _interrupt_after_checkpoints(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run_sweep(cfg, tmp_path / "cut")
    monkeypatch.undo()
    run_sweep(cfg, tmp_path / "cut")
    files = sorted(p.name for p in (tmp_path / "whole" / "weights").glob("*.pt"))
    assert files and files == sorted(p.name for p in (tmp_path / "cut" / "weights").glob("*.pt"))
    for name in files:
        a = torch.load(tmp_path / "whole" / "weights" / name, weights_only=True)
        b = torch.load(tmp_path / "cut" / "weights" / name, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.name.startswith("study.db")
    }


class Code:
    """A pickle that would run code when loaded (weights_only refuses it)."""

    def __reduce__(self):
        return (os.system, ("echo never",))


def _interrupted_with_a_checkpoint(monkeypatch, out):
    """A sweep into ``out`` interrupted after its first checkpoint; that file's path."""
    _interrupt_after_checkpoints(monkeypatch, 1)
    with pytest.raises(Interrupted):
        run_sweep(CFG, out)
    monkeypatch.undo()
    (name,) = {n for (n,) in _rows(out, "SELECT checkpoint FROM runs")}
    return out / "checkpoints" / name


def _flip(p):
    """200 bytes of the last tensor's data inverted: the file still loads, with other weights."""
    b = bytearray(p.read_bytes())
    at = len(b) // 2
    b[at : at + 200] = bytes(255 - v for v in b[at : at + 200])
    p.write_bytes(bytes(b))


class Foreign:
    """A class torch's weights-only reader does not allow."""


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "random bytes": lambda p: p.write_bytes(os.urandom(4096)),
    "code": lambda p: torch.save({"format": 1, "x": Code()}, p),
    "a foreign class": lambda p: torch.save({"format": 1, "x": Foreign()}, p),
    "another state": lambda p: torch.save({"format": 1, "configs": []}, p),
    "flipped bytes": _flip,
}


def _rehash(path):
    """The folder's record made to hold the damaged file's hash, as if wdlab had written it:
    the file's contents are then what refuses it."""
    record = path.parent / ".wdlab-files.json"
    doc = json.loads(record.read_text())
    doc[path.name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    record.write_text(json.dumps(doc))


@pytest.mark.parametrize("recorded", [False, True], ids=["as damaged", "record rewritten"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_one_line_and_nothing_stored_changes(
    tmp_path, monkeypatch, capsys, damage, recorded
):
    """Refused in one line before anything trains: by the recorded hash, and where the
    record was rewritten too, by what the file holds (torch's advice to unpickle it anyway
    left out)."""
    if recorded and damage == "flipped bytes":
        pytest.skip("loads as a batch state: only the recorded hash can tell")
    out = tmp_path / "s"
    path = _interrupted_with_a_checkpoint(monkeypatch, out)
    DAMAGE[damage](path)
    if recorded:
        _rehash(path)
    before, files = _stored(out), _digest(out)
    assert main(["sweep", *FLAGS, "--epochs", "40", "--checkpoint", "6", "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"checkpoint {path} is" in err[0], err
    assert "left as it is" in err[0] and "Traceback" not in err[0]
    assert "weights_only" not in err[0] and "PyTorch 2.6" not in err[0]
    if not recorded:
        assert "its bytes changed since wdlab wrote it" in err[0]
    elif damage == "a foreign class":
        assert "not plain tensors and data (Unsupported global: " in err[0], err[0]
    assert _stored(out) == before and _digest(out) == files


def test_a_damaged_checkpoint_of_a_dead_process_is_refused_before_its_runs_are_taken_over(
    tmp_path, monkeypatch, capsys
):
    """A new-user trial: a sweep killed with -9 holds its runs ``running``; the next sweep
    took them over (back to pending, the dead process's row deleted) and warned so, then
    refused the damaged checkpoint: two lines, and the study changed. The checkpoints of the
    runs a dead process held are now read first: one line, nothing stored changed."""
    import socket

    out = tmp_path / "s"
    path = _interrupted_with_a_checkpoint(monkeypatch, out)
    dead = f"{socket.gethostname()}:999999999:1"  # no such process: gone
    with sqlite3.connect(out / "study.db") as db:
        db.execute(
            "UPDATE runs SET status = 'running', owner = ? WHERE status = 'pending'", (dead,)
        )
        db.execute(
            "INSERT INTO workers (id, host, pid, started, beat, lease) VALUES (?,?,?,?,?,?)",
            (dead, socket.gethostname(), 999999999, 0.0, 0.0, 60.0),
        )
    db.close()
    DAMAGE["truncated"](path)
    before = _stored(out), _rows(out, "SELECT key, status, owner FROM runs ORDER BY key")
    workers = _rows(out, "SELECT * FROM workers")
    assert main(["sweep", *FLAGS, "--epochs", "40", "--checkpoint", "6", "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"checkpoint {path} is damaged" in err[0], err
    after = _stored(out), _rows(out, "SELECT key, status, owner FROM runs ORDER BY key")
    assert after == before and _rows(out, "SELECT * FROM workers") == workers
    assert {status for _, status, _ in before[1]} >= {"running"}


def test_a_deleted_checkpoint_trains_its_runs_from_the_start(tmp_path, monkeypatch):
    """The damaged-checkpoint message advises deleting it: then its runs train again from the
    start, a warning says so, and they end with an uninterrupted sweep's numbers."""
    whole = run_sweep(CFG, tmp_path / "whole")
    out = tmp_path / "s"
    path = _interrupted_with_a_checkpoint(monkeypatch, out)
    path.unlink()
    name = path.name
    with pytest.warns(UserWarning, match=rf"checkpoint .*{name} is missing: its 12 runs train"):
        resumed = run_sweep(CFG, out)
    assert [r.final for r in resumed.runs] == [r.final for r in whole.runs]
    assert _stored(out) == _stored(tmp_path / "whole")


def test_what_a_killed_writer_left_half_written_is_swept_and_a_live_ones_kept(
    tmp_path, monkeypatch
):
    """A process killed while writing a checkpoint or the folder's record leaves its
    temporary file (named with its pid): the next sweep removes those of dead processes (a
    SIGKILL in the record's write left one behind) and never a live process's."""
    out = tmp_path / "s"
    path = _interrupted_with_a_checkpoint(monkeypatch, out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid whose process is gone
    dead.wait()
    left = [f".wdlab-files.json.{dead.pid}.tmp", f".{path.name}.{dead.pid}.tmp"]
    live = f".wdlab-files.json.{os.getppid()}.tmp"  # a live process other than this one
    for name in [*left, live]:
        (path.parent / name).write_text("half written")
    run_sweep(CFG, out)
    assert sorted(os.listdir(path.parent)) == sorted([".wdlab-files.json", live])


def test_a_killed_writers_weights_temporaries_are_swept_and_a_live_ones_kept(tmp_path, monkeypatch):
    """The same for the weights folder: a process killed while writing a run's weights (or
    their record) leaves ``.<key>.pt.<pid>.tmp``; the next sweep of the study removes those of
    dead processes, keeps a live process's, and writes the weights it keeps beside them."""
    out = tmp_path / "s"
    _interrupted_with_a_checkpoint(monkeypatch, out)
    folder = out / "weights"
    folder.mkdir(exist_ok=True)
    before = set(os.listdir(folder))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid whose process is gone
    dead.wait()
    left = [f".wdlab-files.json.{dead.pid}.tmp", f".{'0' * 16}.pt.{dead.pid}.tmp"]
    live = f".{'1' * 16}.pt.{os.getppid()}.tmp"  # a live process other than this one
    for name in [*left, live]:
        (folder / name).write_text("half written")
    run_sweep(CFG, out)
    after = set(os.listdir(folder)) - before
    assert live in after and not set(left) & after
    assert {n for n in after if n.startswith(".") and n != live} <= {".wdlab-files.json"}
    assert any(n.endswith(".pt") and not n.startswith(".") for n in after)


def test_a_file_wdlab_did_not_write_is_never_replaced(tmp_path, capsys):
    """A file of the user's under the checkpoint's name: refused in one line, left as is."""
    out = tmp_path / "s"
    run_sweep({**CFG, "train": {**CFG["train"], "epochs": 3}}, out)  # makes the study
    configs = study.load_study(out).runs
    from wdlab.pipelines.checkpoints import name_of

    batch = [r.config for r in configs]
    (out / "checkpoints").mkdir(exist_ok=True)
    mine = out / "checkpoints" / name_of(batch, batch)
    mine.write_text("the user's own file")
    flags = [*FLAGS, "--epochs", "40", "--checkpoint", "6", "--out", str(out / "t")]
    os.makedirs(out / "t" / "checkpoints")
    (out / "t" / "checkpoints" / mine.name).write_text("the user's own file")
    assert main(["sweep", *flags]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "was not written by wdlab" in err[0], err
    assert (out / "t" / "checkpoints" / mine.name).read_text() == "the user's own file"


@pytest.mark.slow
def test_a_sigkilled_sweep_resumes_mid_training_bit_for_bit(tmp_path):
    """A real SIGKILL in a subprocess, after its third checkpoint (every 7 epochs of 300);
    run again, it takes its runs over and ends with an uninterrupted sweep's numbers."""
    flags = [*FLAGS, "--epochs", "300", "--checkpoint", "7"]

    def sweep(out):
        cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *flags, "--out", str(out), "--json"]
        return subprocess.Popen(
            cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    w, p = sweep(whole), sweep(killed)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        try:
            reached = _rows(killed, "SELECT MIN(epochs) FROM runs WHERE status = 'running'")
        except sqlite3.Error:
            reached = [(None,)]
        if reached[0][0] is not None and reached[0][0] >= 21:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the sweep ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    held = {e for (e,) in _rows(killed, "SELECT epochs FROM runs")} - {None}
    assert held and all(21 <= e < 300 for e in held), held  # mid-training, after the 3rd
    w.communicate(timeout=600)
    again = sweep(killed)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "took over" in err
    assert _stored(killed) == _stored(whole)
    assert not (killed / "checkpoints").exists()  # every checkpoint removed, and its folder


KILL = """
import os, signal, sys
from wdlab.cli import main
from wdlab.pipelines import checkpoints
from wdlab.store import Store

where, nth, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
owner, name = {
    "before the rename": (checkpoints, "expect_output"),
    "after the rename": (checkpoints, "settle_output"),
    "before the store notes it": (Store, "note_checkpoint"),
    "before the file goes": (checkpoints, "remove"),
}[where]
real, calls = getattr(owner, name), []

def killed(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        if where == "before the rename":
            real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(owner, name, killed)
sys.exit(main(["sweep", *flags]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    [
        "before the rename",
        "after the rename",
        "before the store notes it",
        "before the file goes",
    ],
)
def test_a_sweep_killed_anywhere_in_writing_a_checkpoint_resumes_bit_for_bit(tmp_path, where):
    """SIGKILL at each point of writing the second checkpoint (the folder's record noting the
    new file, the rename, the record, the store pointing at it), or as the last one is removed
    once all runs are stored: run again, the sweep takes the runs left over (never refusing its
    own file as changed) and ends with an uninterrupted sweep's numbers, no checkpoint left."""
    last = where == "before the file goes"
    flags = [*FLAGS, "--epochs", "40", "--checkpoint", "6"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["sweep", *flags, "--out", str(whole)]) == 0
    cmd = [sys.executable, "-c", KILL, where, "1" if last else "2", *flags, "--out", str(killed)]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *flags, "--out", str(killed)]
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert ("took over" in again.stderr) != last
    assert _stored(killed) == _stored(whole)
    assert not (killed / "checkpoints").exists()  # every checkpoint removed, and its folder


KILL_SAVE = """
import os, signal, sys
import wdlab.pipelines.weights as weights
from wdlab.cli import main
from wdlab.store import Store

where, flags = sys.argv[1], sys.argv[2:]
owner, name = (Store, "save_batch") if where == "rung" else (weights, "record_outputs")
real = getattr(owner, name)

def killed(*args, **kwargs):
    if where == "weights" or kwargs.get("checkpoint"):  # a batch paused at a rung
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(owner, name, killed)
sys.exit(main(["sweep", *flags]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["rung", "weights"])
def test_a_sweep_killed_while_storing_a_batch_resumes_bit_for_bit(tmp_path, where):
    """A crash-safety trial's findings. ``rung``: SIGKILL after a batch's state at a rung was
    written, before the store took it; that file was the one the store pointed the runs at
    (an earlier epoch's), now ahead of the store at an undecided rung: every resume spun
    forever. ``weights``: SIGKILL after the weights files were renamed into place, before they
    were recorded: every resume refused them as "not written by wdlab"."""
    flags = [*FLAGS, "--epochs", "40", "--checkpoint", "6", "--keep", "all"]
    flags += ["--prune"] if where == "rung" else []
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["sweep", *flags, "--out", str(whole)]) == 0
    cmd = [sys.executable, "-c", KILL_SAVE, where, *flags, "--out", str(killed)]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *flags, "--out", str(killed)]
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _stored(killed) == _stored(whole)
    weights = [sorted(os.listdir(d / "weights")) for d in (whole, killed)]
    assert weights[0] == weights[1] and len(weights[0]) > 1
    for name in (n for n in weights[0] if n.endswith(".pt")):  # the same bytes
        assert (whole / "weights" / name).read_bytes() == (killed / "weights" / name).read_bytes()
    assert not (killed / "checkpoints").exists()  # every checkpoint removed, and its folder


def test_a_checkpoint_missing_from_the_record_is_refused_before_training(
    tmp_path, monkeypatch, capsys
):
    """The checkpoints' record deleted: the sweep resumed from a file it would not replace,
    trained, was refused at its next checkpoint and stored every run ``failed``, again at
    each try (found by a new-user trial). One line before anything trains; nothing stored
    changes."""
    out = tmp_path / "s"
    path = _interrupted_with_a_checkpoint(monkeypatch, out)
    (path.parent / ".wdlab-files.json").unlink()
    before, files = _stored(out), _digest(out)
    flags = ["sweep", *FLAGS, "--epochs", "40", "--checkpoint", "6", "--out", str(out)]
    assert main(flags) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"checkpoint {path} is not in wdlab's record" in err[0], err
    assert _stored(out) == before and _digest(out) == files


@pytest.mark.parametrize("where", ["weights", "checkpoints"])
def test_a_file_where_a_study_folder_goes_is_one_line_before_training(tmp_path, capsys, where):
    """A file named ``weights`` (or ``checkpoints``) in the study folder: training ran to the
    end and failed writing there, every run stored ``failed`` (found by a new-user trial)."""
    out = tmp_path / "s"
    out.mkdir()
    (out / where).write_text("x")
    flags = ["sweep", *FLAGS, "--epochs", "12", "--checkpoint", "6", "--out", str(out)]
    assert main([*flags, "--keep", "all"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"{out / where} is a file, not a folder" in err[0], err
    assert not (out / "study.db").exists() and (out / where).read_text() == "x"


def test_a_users_file_where_a_runs_weights_go_is_never_replaced(tmp_path, capsys):
    """A file wdlab did not write, under the name a run's kept weights take: it was replaced
    by the weights (found by a new-user trial). One line before anything trains."""
    from wdlab.pipelines.weights import weights_path

    out = tmp_path / "s"
    cfg = {**CFG, "train": {**CFG["train"], "epochs": 3, "keep": "all"}}
    first = run_sweep(cfg, tmp_path / "first")
    mine = weights_path(out, first.runs[0].config)
    mine.parent.mkdir(parents=True)
    mine.write_text("my data")
    flags = ["sweep", *FLAGS, "--epochs", "3", "--checkpoint", "6", "--keep", "all"]
    assert main([*flags, "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"{mine} exists and was not written by wdlab" in err[0], err
    assert mine.read_text() == "my data"


def test_a_full_disk_while_writing_is_one_line_naming_the_file(tmp_path):
    """torch's archive writer, out of space, says "unexpected pos …": the line names the file
    and the space left (the disk is faked full), and the temporary file is gone."""
    from wdlab.pipelines.outputs import save_to

    path, tmp = tmp_path / "a.pt", tmp_path / ".a.pt.tmp"
    full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6016 vs 5910")
    for raised, line in (
        (full, f"cannot write {path}: no space left on its device (0 bytes free)"),
        (OSError(28, "No space left on device"), f"cannot write {path}: No space left on device"),
    ):
        with (
            mock.patch("torch.save", side_effect=raised),
            mock.patch("shutil.disk_usage", return_value=shutil._ntuple_diskusage(10, 10, 0)),
            pytest.raises(ValueError) as said,
        ):
            save_to(tmp, {"w": torch.zeros(2)}, path, sync=True)
        assert str(said.value) == line
        assert not tmp.exists()


def test_a_full_disk_while_recording_a_file_is_one_line_and_leaves_no_temporary(tmp_path):
    """A crash-safety trial: a full disk as the checkpoints' record (.wdlab-files.json) was
    written gave "No space left on device" with no path, and left its temporary file."""
    from wdlab.pipelines.outputs import MANIFEST, claim_outputs

    real = Path.write_text

    def full(self, *args, **kw):
        if self.name.startswith(f"{MANIFEST}."):
            real(self, "", encoding="utf-8")  # the temporary is made, then the disk is full
            raise OSError(28, "No space left on device")
        return real(self, *args, **kw)

    with mock.patch.object(Path, "write_text", full), pytest.raises(ValueError) as said:
        claim_outputs(tmp_path, ["a.pt"], "sweep")
    assert str(said.value) == f"cannot write {tmp_path / MANIFEST}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_noted_and_never_written_leaves_no_folder_once_the_study_is_whole(tmp_path):
    """A pruned sweep's kill test (under load) found the checkpoint folder left after the
    resumed sweep ended whole: a process killed before its rename had noted a file (a rung's,
    under a name no resume wrote again) that was never there, and the record kept it. Once the
    study is whole, the record forgets such names and the folder goes; a file of the user's
    there keeps it."""
    from wdlab.pipelines.outputs import expect_output

    out = tmp_path / "s"
    flags = [*FLAGS, "--epochs", "12", "--checkpoint", "5", "--out", str(out)]
    assert main(["sweep", *flags]) == 0
    where = out / "checkpoints"
    for mine in (False, True):
        where.mkdir()
        (where / ".x-epoch9.pt.99999999.tmp").write_bytes(b"half")
        expect_output(where, "x-epoch9.pt", where / ".x-epoch9.pt.99999999.tmp", "study s")
        (where / ".x-epoch9.pt.99999999.tmp").unlink()  # as the next sweep removes it
        if mine:
            (where / "notes.txt").write_text("mine")
        assert main(["sweep", *flags]) == 0
        assert where.exists() == mine
    assert sorted(p.name for p in where.iterdir()) == [".wdlab-files.json", "notes.txt"]
