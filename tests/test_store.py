"""The study store with several processes, failures, read-only folders and foreign files.

Behaviours about processes (two sweeps on one folder, simultaneous first opens, Ctrl-C, a
process killed while another waits on it, read-only permissions, the CLI on a foreign file) run
real subprocesses; the rest runs in this process. Waiting loops poll the store with a deadline
as a safety net only: no assertion depends on how long anything took.
"""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import load_study, run_sweep
from wdlab.store import APPLICATION_ID, SCHEMA_VERSION, Store, StoreError, identify

# what an interrupted sweep says it keeps
RESUMES = "; the study keeps its finished runs and any checkpoints: the same command resumes"

ROOT = Path(__file__).resolve().parents[1]
# One torch thread per process: CI has 2 cores, and these tests run several processes at once
# (oversubscribed intra-op threads make small steps ~10x slower; no result here depends on it).
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {
    "data": {"source": "wine"},
    "model": {"kind": "linear"},
    "train": {"optimizer": "adam", "lr": [0.01], "epochs": 4, "eval_every": 2},
    "decay": {"modes": ["decoupled"], "weight_decay": [1e-3, 1e-2]},
}
TINY_FLAGS = [
    "--data", "wine", "--model", "linear", "--optimizer", "adam", "--lr", "0.01",
    "--mode", "decoupled", "--wd", "1e-3,1e-2", "--epochs", "4", "--eval-every", "2",
]  # fmt: skip
# The schema of wdlab 0.1 / 0.2 (commit 2fff670): no application id, no user_version.
V1_SCHEMA = """
CREATE TABLE study (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL,
    config TEXT NOT NULL, config_hash TEXT NOT NULL, code_version TEXT NOT NULL,
    created TEXT NOT NULL, data TEXT, task TEXT);
CREATE TABLE runs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, final TEXT, best TEXT, engine TEXT,
    diverged_epoch INTEGER, seconds REAL, error TEXT, updated REAL);
CREATE TABLE curves (run_id INTEGER NOT NULL REFERENCES runs(id), metric TEXT NOT NULL,
    epoch INTEGER NOT NULL, value REAL, PRIMARY KEY (run_id, metric, epoch)) WITHOUT ROWID;
"""


def cli(*args, timeout=300, **kw):
    """``wdlab ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT / "tests",
        env=ENV,
        **kw,
    )


def one_error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def digest(folder):
    """Every file of a folder with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    }


def rows(folder, sql="SELECT key, status, attempts FROM runs ORDER BY id"):
    with sqlite3.connect(Path(folder) / "study.db", timeout=30) as db:
        return db.execute(sql).fetchall()


def wait_for(predicate, what, deadline=180):
    end = time.time() + deadline
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_count(folder, status):
    try:
        return rows(folder, f"SELECT COUNT(*) FROM runs WHERE status = '{status}'")[0][0]
    except sqlite3.Error:
        return 0


# ---------------------------------------------------------------------------------------------
# Foreign files and older stores


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("INSERT INTO notes (text) VALUES ('mine')")
    db.close()
    before = digest(folder)
    proc = cli("sweep", *TINY_FLAGS, "--out", folder)  # a real process, as a user runs it
    assert proc.returncode == 2
    assert "not a wdlab study store (notes)" in one_error_line(proc.stderr)
    for args in (
        ["show"],
        ["export", "--out", tmp_path / "x"],
        ["report", "--out", tmp_path / "y"],
    ):
        assert main([args[0], str(folder), *map(str, args[1:])]) == 2
        assert "not a wdlab study store" in one_error_line(capsys.readouterr().err)
    assert digest(folder) == before  # same bytes, and no -wal or -shm beside it
    with pytest.raises(StoreError, match="not a wdlab study store"):
        Store(folder)


def test_random_bytes_and_other_programs_are_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "study.db").write_bytes(bytes(range(256)) * 40)
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "study.db") as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE study (id INTEGER)")
    db.close()
    before = {d: digest(d) for d in (junk, other)}
    with pytest.raises(StoreError, match="not an SQLite database"):
        identify(junk / "study.db")
    with pytest.raises(StoreError, match="another program"):
        Store(other)
    assert {d: digest(d) for d in (junk, other)} == before


def make_v1(src, dst):
    """A schema-1 store (as wdlab 0.1/0.2 wrote them) with the rows of the v2 store ``src``."""
    dst.mkdir()
    db = sqlite3.connect(dst / "study.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA)
    db.execute("ATTACH DATABASE ? AS v2", (f"file:{src / 'study.db'}?mode=ro",))
    cols = "name, config, config_hash, code_version, created, data, task"
    db.execute(f"INSERT INTO study (id, {cols}) SELECT 1, {cols} FROM v2.study")
    cols = "id, key, config, status, attempts, final, best, engine, diverged_epoch, seconds"
    db.execute(
        f"INSERT INTO runs ({cols}, error, updated) SELECT {cols}, error, updated FROM v2.runs"
    )
    db.execute("INSERT INTO curves SELECT * FROM v2.curves")
    db.execute("DETACH DATABASE v2")
    db.close()


def test_a_v1_store_is_read_as_it_is_then_migrated_by_a_sweep(tmp_path, capsys):
    cfg = validate(TINY)
    v2 = run_sweep(cfg, tmp_path / "v2")
    old = tmp_path / "old"
    make_v1(tmp_path / "v2", old)
    assert identify(old / "study.db") == 1
    before = digest(old)
    assert main(["show", str(old), "--json"]) == 0  # read-only: no migration, no new file
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["done"] == 3 and digest(old) == before
    assert load_study(old).selection == v2.selection
    again = run_sweep(cfg, old)  # the same config: resumes, trains nothing, migrates
    assert [r.final for r in again.runs] == [r.final for r in v2.runs]
    assert {a for _, _, a in rows(old)} == {1}
    head = (old / "study.db").read_bytes()[:100]
    assert int.from_bytes(head[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(head[60:64], "big") == SCHEMA_VERSION == identify(old / "study.db")


def test_a_store_from_a_newer_wdlab_is_refused_in_one_line(tmp_path, capsys):
    run_sweep(validate(TINY), tmp_path / "s")
    with sqlite3.connect(tmp_path / "s" / "study.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = digest(tmp_path / "s")
    assert main(["show", str(tmp_path / "s")]) == 2
    assert "newer wdlab" in one_error_line(capsys.readouterr().err)
    with pytest.raises(StoreError, match="newer wdlab"):
        run_sweep(validate(TINY), tmp_path / "s")
    assert digest(tmp_path / "s") == before


# ---------------------------------------------------------------------------------------------
# Failed runs are retried; diverged ones stay


def test_failed_runs_are_retried_and_show_and_the_report_say_why(tmp_path, capsys, monkeypatch):
    import wdlab.executors as ex

    cfg2 = validate(
        {
            "data": {"source": "diabetes"},
            "model": {"kind": "linear"},
            "train": {"optimizer": "sgd", "lr": [0.01, 50.0], "epochs": 30, "eval_every": 5},
            "decay": {"modes": ["coupled"], "weight_decay": [0.0, 1e-3, 1.0]},
        }
    )
    out2 = tmp_path / "s2"
    real = ex.train
    calls = []

    def flaky(*a, **kw):
        calls.append(len(a[2]))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a, **kw)

    monkeypatch.setattr(ex, "train", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        run_sweep(cfg2, out2, max_batch=2)
    monkeypatch.setattr(ex, "train", real)
    failed = status_count(out2, "failed")
    assert failed == calls[1] and status_count(out2, "running") == 0
    assert main(["show", str(out2)]) == 0
    shown = capsys.readouterr().out
    assert f"failed: {failed} runs: RuntimeError: CUDA out of memory (simulated)" in shown
    assert main(["report", str(out2), "--out", str(tmp_path / "rep")]) == 0  # the report too
    page = (tmp_path / "rep" / "report.html").read_text()
    assert f"failed: {failed} runs: RuntimeError: CUDA out of memory (simulated)" in page
    diverged_before = rows(out2, "SELECT key, attempts FROM runs WHERE status = 'diverged'")
    proc = cli("sweep", "--out", out2, *_flags(cfg2))  # the rerun, a real process
    assert proc.returncode == 0, proc.stderr
    after = {k: (s, a) for k, s, a in rows(out2)}
    assert {s for s, _ in after.values()} == {"done", "diverged"}
    assert [a for _, a in after.values()].count(2) == failed  # retried, once each
    for key, attempts in diverged_before:  # diverged runs stay stored, not retrained
        assert after[key] == ("diverged", attempts)


def _flags(cfg):
    """The CLI flags of a validated config of the shape used here."""
    t, d = cfg.train, cfg.decay
    return [
        "--data", cfg.data.source, "--model", cfg.model.kind, "--optimizer", t.optimizer,
        "--lr", ",".join(map(str, t.lr)), "--mode", ",".join(d.modes),
        "--wd", ",".join(map(str, d.weight_decay)), "--epochs", str(t.epochs),
        "--eval-every", str(t.eval_every), "--max-batch", "2",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Processes: Ctrl-C, two sweeps on one folder, simultaneous first opens, a killed holder

LONG = [
    "--data", "breast_cancer", "--model", "mlp", "--hidden", "32", "--optimizer", "sgd",
    "--lr", "0.05", "--mode", "coupled", "--wd", "1e-4..1e-1:5", "--eval-every", "100",
]  # fmt: skip


def _ctrl_c_reaches_it() -> None:
    """In the child: Ctrl-C's default action, as on a terminal (a suite started in the
    background, e.g. under nohup, has SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_puts_the_runs_in_flight_back_to_pending(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wdlab.cli", "sweep", *LONG, "--epochs", "5000", "--max-batch",
         "2", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=_ctrl_c_reaches_it,
    )  # fmt: skip
    wait_for(lambda: status_count(out, "running") > 0 or proc.poll() is not None, "a batch")
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert one_error_line(err) == "wdlab sweep: interrupted" + RESUMES
    statuses = [s for _, s, _ in rows(out)]
    assert "running" not in statuses and statuses.count("pending") >= 2
    assert rows(out, "SELECT COUNT(*) FROM workers")[0][0] == 0


def test_sigterm_puts_the_runs_in_flight_back_to_pending_and_says_so(tmp_path):
    """SIGTERM (a scheduler's stop, ``timeout``): the process died silently with exit 143 and
    its runs stayed ``running`` until its lease was found dead. It is now unwound as a Ctrl-C
    is: one line, exit 143, the runs back to pending, this worker gone; the next run resumes
    (found by a new-user trial of ``wdlab search``, whose batch stayed RUNNING in Optuna)."""
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wdlab.cli", "sweep", *LONG, "--epochs", "5000", "--max-batch",
         "2", "--out", str(out), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )  # fmt: skip
    wait_for(lambda: status_count(out, "running") > 0 or proc.poll() is not None, "a batch")
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert one_error_line(err) == "wdlab sweep: terminated" + RESUMES
    assert json.loads(stdout) == {"error": "terminated" + RESUMES, "status": 143}
    statuses = [s for _, s, _ in rows(out)]
    assert "running" not in statuses and statuses.count("pending") >= 2
    assert rows(out, "SELECT COUNT(*) FROM workers")[0][0] == 0


WORKERS_DATA = """
import torch
from torch.utils.data import DataLoader, Dataset

class Noisy(Dataset):
    def __init__(self, n, seed):
        self.X = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    def __len__(self):
        return len(self.X)
    def __getitem__(self, i):
        return self.X[i] + 0.1 * torch.randn(8), int(self.X[i, 0] > 0)

def make_data():
    train = DataLoader(Noisy(256, 0), batch_size=32, shuffle=True, num_workers=2)
    return {"train": train, "val": Noisy(64, 1), "test": Noisy(64, 2)}
"""


def test_sigterm_to_the_process_group_with_dataloader_workers_leaves_no_run_held(tmp_path):
    """A scheduler's SIGTERM reaches the DataLoader's workers too: they died first and torch's
    SIGCHLD handler raised its own error inside the clean-up, which left runs ``running``
    (2 of 8 tries) and said "interrupted", exit 130 (4 of 8). Now: exit 143, "terminated",
    the runs in flight back to pending."""
    (tmp_path / "wdata.py").write_text(WORKERS_DATA)
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wdlab.cli", "sweep", "--data", "wdata.py:make_data", "--model",
         "mlp", "--epochs", "5000", "--wd", "0,0.01,0.1", "--seeds", "1", "--max-batch", "2",
         "--batch-size", "32", "--out", str(out)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: status_count(out, "running") > 0 or proc.poll() is not None, "a batch")
    time.sleep(1)  # into the epochs, workers up
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert (
        err.strip().splitlines()[-1] == "wdlab sweep: terminated" + RESUMES
        and "Traceback" not in err
    )
    statuses = [s for _, s, _ in rows(out)]
    assert "running" not in statuses and statuses.count("pending") >= 2
    assert rows(out, "SELECT COUNT(*) FROM workers")[0][0] == 0


SWEEP_JSON = [*LONG, "--epochs", "200", "--max-batch", "1", "--json"]


def test_two_sweeps_on_one_folder_share_the_work_and_both_print_the_whole_answer(tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *SWEEP_JSON, "--out", str(out)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for _ in range(2)
    ]
    docs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert "Traceback" not in stderr
        docs.append(json.loads(stdout))
    total = len(rows(out))
    assert total == 6  # 5 wd + the wd = 0 reference
    for doc in docs:  # never a partial answer printed as final
        assert doc["counts"]["done"] == total and doc["counts"]["pending"] == 0
    assert docs[0]["selection"] == docs[1]["selection"]
    # no configuration trained twice: one attempt each, one curve each
    assert {a for _, _, a in rows(out)} == {1}
    assert rows(out, "SELECT COUNT(*) FROM curves WHERE metric = 'train_loss'")[0][0] == 6 * 200


OPEN_AT_ONCE = """
import os, sys, time
from pathlib import Path
from wdlab.config import validate
from wdlab.pipelines.experiment import grid
from wdlab.store import Store
cfg = validate(TINY)
go = Path(sys.argv[2])
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.001)
with Store(sys.argv[1]) as s:
    s.init_study("race", cfg.to_dict(), grid(cfg), "test", identity=cfg.identity())
print("ok")
"""


def test_simultaneous_first_opens_make_one_study(tmp_path):
    out, go = tmp_path / "s", tmp_path / "go"
    code = OPEN_AT_ONCE.replace("TINY", repr(TINY))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(out), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(4)
    ]
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 4, "every child at the barrier")
    go.touch()
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0 and stdout.strip() == "ok", stderr
    assert rows(out, "SELECT COUNT(*) FROM study")[0][0] == 1
    assert len(rows(out)) == 3 and identify(out / "study.db") == SCHEMA_VERSION


def test_a_waiting_sweep_takes_over_the_runs_of_a_killed_one(tmp_path):
    """A holds every run (one batch) and hangs (SIGSTOP: alive, doing nothing); B finds nothing
    to claim and waits, naming A; A is killed; B reclaims A's runs, trains them and prints the
    whole study."""
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *TINY_FLAGS[:-4], "--wd", "1e-4..1e-1:5",
           "--epochs", "12000", "--eval-every", "400", "--json", "--out", str(out)]  # fmt: skip
    # 12,000 epochs: A's batch lasts several seconds, so a loaded machine that delays this
    # process's polls (every 0.05 s) still sees A holding its runs before A can finish them
    env = dict(ENV, WDLAB_LEASE_SECONDS="600")  # A, stopped, keeps its runs until it is killed
    a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(lambda: status_count(out, "running") == 6 or a.poll() is not None, "A's claim")
    a.send_signal(signal.SIGSTOP)
    assert a.poll() is None and status_count(out, "running") == 6, "A finished too soon"
    b_err = tmp_path / "b.err"
    with open(b_err, "w") as err:
        b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        wait_for(lambda: "waiting for the runs held by" in b_err.read_text(), "B to wait")
        a.send_signal(signal.SIGKILL)
        a.wait()
        stdout, _ = b.communicate(timeout=300)
    assert b.returncode == 0, b_err.read_text()
    assert f":{a.pid} (6 runs)" in b_err.read_text()  # the holder is named
    doc = json.loads(stdout)
    assert doc["counts"]["done"] == 6  # B trained what A held, and printed the whole study
    assert {(st, n) for _, st, n in rows(out)} == {("done", 2)}  # A's attempt, then B's
    assert rows(out, "SELECT COUNT(*) FROM curves WHERE metric = 'train_loss'")[0][0] == 6 * 12000


# ---------------------------------------------------------------------------------------------
# Read-only studies


READ_AS_OTHER = """
import sys
from wdlab.cli import main
codes = [main(a.split("|")) for a in sys.argv[1:]]
print(" ".join(map(str, codes)))
"""


def _drop_dac() -> None:
    """In the child, before exec: root loses the right to ignore file permissions."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: out of the bounding set
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _without_write_rights(cwd, commands):
    """Run ``main`` on each command (``|``-separated args) in one subprocess that file
    permissions bind (root, which writes anywhere, drops that capability first)."""
    kw = {"preexec_fn": _drop_dac} if os.geteuid() == 0 else {}
    try:
        return subprocess.run(
            [sys.executable, "-c", READ_AS_OTHER, *commands],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=cwd,
            env=ENV,
            **kw,
        )
    except subprocess.SubprocessError as exc:  # no CAP_SETPCAP to drop it with
        pytest.skip(f"cannot run without write rights here: {exc}")


def test_a_read_only_study_can_be_read_and_is_not_written(tmp_path):
    study = tmp_path / "studies" / "s"
    run_sweep(validate(TINY), study)
    bad = tmp_path / "studies" / "broken"
    bad.mkdir()
    (bad / "study.db").write_bytes(b"not a database at all" * 10)
    out = tmp_path / "out"
    out.mkdir()
    for p in (study / "study.db", study, bad / "study.db", bad):
        p.chmod(0o444 if p.is_file() else 0o555)
    before = digest(study)
    try:
        proc = _without_write_rights(
            tmp_path,
            [
                f"show|{study}",
                f"export|{study}|--out|{out / 'e'}",
                f"report|{study}|--out|{out / 'r'}",
                f"ls|{tmp_path / 'studies'}|--json",
                f"export|{study}",
                f"sweep|{'|'.join(TINY_FLAGS)}|--out|{study}",
            ],
        )
    finally:
        for p in (study, bad):
            p.chmod(0o755)
    codes = proc.stdout.strip().splitlines()[-1]
    assert codes == "0 0 0 0 2 2", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 2 and all("cannot write there" in e for e in errors), errors
    assert "write the files elsewhere with --out DIR" in errors[0]
    assert (out / "e" / "runs.csv").exists() and (out / "r" / "report.html").exists()
    listed = json.loads(next(ln for ln in proc.stdout.splitlines() if '"studies"' in ln))
    by = {Path(s["study"]).name: s for s in listed["studies"]}
    assert by["s"]["done"] == 3 and "not a wdlab study store" in by["broken"]["error"]
    assert digest(study) == before


def test_an_export_carries_the_numbers_early_stopping_reports(tmp_path):
    """With early stopping a run is reported at its best epoch: the export's runs file has
    that epoch and its numbers (``best_epoch``, ``best_epoch_val_loss``…) beside the last
    evaluation's ``final_*`` (it had only the latter; found by a new-user trial)."""
    import wdlab
    from wdlab.pipelines import export_study

    pd = pytest.importorskip("pandas")
    out = tmp_path / "s"
    result = wdlab.sweep("mlp", "wine", lr=0.3, weight_decay=[0.0, 1e-3], epochs=12,
                         eval_every=1, early_stopping=True, patience=2, out=out)  # fmt: skip
    paths = export_study(out, "csv", tmp_path / "e")
    runs = pd.read_csv(paths["runs"])
    assert len(runs) == len(result.runs)
    for run in result.runs:
        c = run.config
        row = runs[(runs["weight_decay"] == c.weight_decay) & (runs["seed"] == c.seed)]
        row = row[row["mode"] == c.mode]
        (epoch,) = row["best_epoch"]
        assert epoch == run.best["epoch"]
        assert row["best_epoch_val_loss"].item() == pytest.approx(
            run.best["at"]["val_loss"], rel=1e-12
        )


def test_a_study_given_as_a_file_or_a_missing_folder_says_which(tmp_path):
    """A new-user trial: ``wdlab show FILE`` and ``wdlab show MISSING`` both said "no study in
    X (no study.db)"; ``ls`` told them apart."""

    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    said = {}
    for name in ("afile", "missing", "empty"):
        with pytest.raises(StoreError) as e:
            Store(tmp_path / name, readonly=True)
        said[name] = str(e.value).rsplit("(", 1)[1]
    assert said == {"afile": "a file, not a folder)", "missing": "no such folder)",
                    "empty": "no study.db)"}  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty"]  # nothing made
