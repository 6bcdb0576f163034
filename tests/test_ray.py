"""The Ray backend, on a real local Ray runtime bound to 127.0.0.1 (one runtime per module:
Ray takes seconds and ~1 GB to start). Only what this module starts is stopped."""

import os

# Before Ray is imported (it reads these at import): a local runtime then binds and advertises
# 127.0.0.1 only, and sends no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import json
import math
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from numerics import ONE_PASS, assert_normwise, per_steps
from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import run_sweep

ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")

from wdlab.executors import RayExecutor  # noqa: E402

# what an interrupted sweep says it keeps
RESUMES = "; the study keeps its finished runs and any checkpoints: the same command resumes"

CFG = {
    "data": {"source": "wine"},
    "model": {"kind": "mlp", "hidden": [8]},
    "train": {"optimizer": "adam", "lr": [0.01], "epochs": 6, "eval_every": 2, "seeds": [0, 1]},
    "decay": {"modes": ["l2", "decoupled"], "weight_decay": [1e-3, 1e-2]},
}


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    pid_dir = tmp / "pids"
    pid_dir.mkdir()
    ex = RayExecutor(local_cpus=2, temp_dir=str(tmp / "rt"), pid_dir=str(pid_dir), max_retries=3)
    ex._init()
    yield ex
    ex.close()  # ray.shutdown() of our own runtime; never a bare `ray stop`


def test_binds_and_advertises_loopback_only(executor):
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    ours = {str(p) for p in _ray_pids()}
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    checked = 0
    for line in listening.splitlines():
        if not any(f"pid={p}," in line for p in ours):
            continue
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line
        checked += 1
    assert checked >= 3  # gcs_server, raylet, workers


def _ray_pids():
    out = subprocess.run(["ps", "-eo", "pid,comm,args"], capture_output=True, text=True).stdout
    session = ray.get_runtime_context().gcs_address.split(":")[-1]
    pids = []
    for line in out.splitlines()[1:]:
        pid, rest = line.strip().split(None, 1)
        if "gcs_server" in rest or "raylet" in rest or "ray::" in rest or session in rest:
            pids.append(int(pid))
    return [*pids, os.getpid()]


def test_ray_gives_the_local_answers(executor, tmp_path):
    cfg = validate(CFG)
    local = run_sweep(cfg, tmp_path / "local", max_batch=3)
    remote = run_sweep(cfg, tmp_path / "ray", max_batch=3, executor=executor)
    a = {r.config: r for r in local.runs}
    b = {r.config: r for r in remote.runs}
    assert a.keys() == b.keys() and len(a) == 10
    for c in a:  # the same batches in another process: the same maths (6 epochs)
        assert a[c].final.keys() == b[c].final.keys()
        nan = [k for k, v in a[c].final.items() if math.isnan(v)]
        assert nan == [k for k, v in b[c].final.items() if math.isnan(v)], c
        finite = [k for k in a[c].final if k not in nan]
        mine, theirs = [a[c].final[k] for k in finite], [b[c].final[k] for k in finite]
        assert_normwise(theirs, mine, per_steps(6) + ONE_PASS, str(c))
    assert local.selection == remote.selection


def test_a_killed_worker_is_retried_and_nothing_is_lost(executor, tmp_path):
    cfg = validate(
        {
            "data": {"source": "breast_cancer"},
            "model": {"kind": "mlp", "hidden": [32]},
            "train": {"optimizer": "sgd", "lr": [0.05], "epochs": 1000, "eval_every": 50},
            "decay": {"modes": ["coupled"], "weight_decay": [1e-4, 1e-3, 1e-2, 1e-1]},
        }
    )
    pid_dir = executor.pid_dir
    for f in os.listdir(pid_dir):
        os.remove(os.path.join(pid_dir, f))
    out = tmp_path / "faulty"
    box = {}
    worker = threading.Thread(
        target=lambda: box.update(res=run_sweep(cfg, out, max_batch=2, executor=executor))
    )
    worker.start()
    deadline = time.time() + 60
    victim = None
    while time.time() < deadline and victim is None:
        files = sorted(os.listdir(pid_dir))
        if files:
            victim = int(files[0].rsplit("-", 1)[1].split(".")[0])
        time.sleep(0.05)
    assert victim is not None, "no batch started"
    os.kill(victim, signal.SIGKILL)
    worker.join(timeout=300)
    assert not worker.is_alive()
    res = box["res"]
    assert res.counts["done"] == 5 and len(res.runs) == 5  # 4 wd + the wd = 0 reference
    with sqlite3.connect(out / "study.db") as db:
        keys = db.execute("SELECT COUNT(DISTINCT key), COUNT(*) FROM runs").fetchone()
        n_curves = db.execute("SELECT COUNT(*) FROM curves WHERE metric = 'train_loss'").fetchone()[
            0
        ]
    assert keys == (5, 5) and n_curves == 5 * 1000
    started = os.listdir(pid_dir)
    assert len(started) > 3  # 3 batches, and the killed one started again


def test_cli_backend_ray_and_its_refusals(executor, tmp_path, capsys, monkeypatch):
    rc = main(
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
            "1e-3,1e-2",
            "--epochs",
            "3",
            "--backend",
            "ray",
            "--out",
            str(tmp_path / "c"),
            "--json",
        ]
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 3
    assert ray.is_initialized()  # the CLI joined the running runtime and left it running
    assert (
        main(["sweep", "--data", "wine", "--address", "127.0.0.1:1", "--out", str(tmp_path / "d")])
        == 2
    )
    assert "--address needs --backend ray" in capsys.readouterr().err
    import wdlab.executors as ex

    monkeypatch.setattr(ex, "ray_available", lambda: False)
    assert main(["sweep", "--data", "wine", "--backend", "ray", "--out", str(tmp_path / "e")]) == 2
    assert "pip install 'wdlab[ray]'" in capsys.readouterr().err


def test_an_address_nothing_answers_at_is_one_line_before_anything_is_stored(tmp_path, capsys):
    """--address of no cluster: one line and exit 2 within seconds, no study folder (Ray's own
    connect retried for minutes, silently, after the store was made; found by a new-user
    trial); an address that is not HOST:PORT is named."""
    out = tmp_path / "s"
    flags = ["--data", "wine", "--epochs", "2", "--wd", "0,1e-2", "--backend", "ray"]
    assert main(["sweep", *flags, "--address", "127.0.0.1:1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers at 127.0.0.1:1 within 5 s" in err[0]
    assert not out.exists()
    with pytest.raises(ValueError, match="expected HOST:PORT of a Ray cluster"):
        RayExecutor(address="nowhere")


@pytest.mark.parametrize(
    "flag, says",
    [
        (
            ["--cpus-per-task", "3"],
            "--cpus-per-task (num_cpus) 3: the local Ray runtime has 2 CPUs",
        ),
        (["--gpus-per-task", "0.5"], "--gpus-per-task (num_gpus) 0.5: the local Ray runtime has 0"),
    ],
)
def test_a_task_the_local_runtime_cannot_take_is_refused_before_anything_is_stored(
    flag, says, tmp_path, capsys, monkeypatch
):
    """A new-user trial: ``--cpus-per-task 3`` on 2 CPUs (or a GPU on a CPU-only machine) hung
    for ever, silently, with the runs held: no node could take a task, and Ray's warning was
    not shown. One line, exit 2, no study folder."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    out = tmp_path / "s"
    flags = ["--data", "wine", "--epochs", "2", "--wd", "0,1e-2", "--backend", "ray", *flag]
    assert main(["sweep", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "so no task could start" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_sigterm_to_a_ray_sweep_is_said_as_terminated(tmp_path):
    """A new-user trial: Ray's driver sets its own SIGTERM handler, which exits through
    ``sys.exit(1)`` with a C++ stack dump: the sweep said "code called sys.exit(1)", or died
    of SIGABRT. The command's own handler is kept: "terminated", exit 143, runs pending."""
    out = tmp_path / "s"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wdlab.cli", "sweep", "--data", "wine", "--model", "mlp",
         "--mode", "decoupled", "--wd", "0,1e-3,1e-2,1e-1", "--seeds", "2", "--epochs", "20000",
         "--max-batch", "2", "--backend", "ray", "--out", str(out)],
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and not _held(out):
        time.sleep(0.3)
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    time.sleep(2)  # the tasks submitted and training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "wdlab sweep: terminated" + RESUMES, err
    assert "sys.exit" not in err and "SIGTERM received" not in err


def _held(out) -> bool:
    """Whether a study's runs are held (a Ray driver marks them as it submits)."""
    try:
        with sqlite3.connect(f"file:{out}/study.db?mode=ro", uri=True, timeout=1) as db:
            return (
                db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0] > 0
            )
    except sqlite3.Error:
        return False


def _factory_config(model: str, weight_decays: list[float]):
    """A sweep of a factory file's model on wine: AdamW, decoupled, 2 epochs, seeds 0, 1, 2."""
    return validate(
        {
            "data": {"source": "wine"},
            "model": {"kind": model},
            "train": {"optimizer": "adamw", "lr": [0.01], "epochs": 2, "seeds": [0, 1, 2]},
            "decay": {"modes": ["decoupled"], "weight_decay": weight_decays},
        }
    )


MAKE = """
import torch
from torch import nn

def make(seed=0):
    if seed == 2:
        raise RuntimeError("seed 2 breaks")
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
"""


def test_a_batch_that_fails_on_a_worker_fails_alone_and_says_why_in_one_line(
    executor, tmp_path, monkeypatch
):
    """A factory that raises on a Ray worker: the user's own error, one line (it was Ray's
    remote traceback, coloured and cut before the cause); only that batch's runs are stored
    failed, with that error, and the batches still in flight go back to pending, as on the
    local backend (every unfinished run was stored failed, "RayTaskError(ValueError): ray::…").
    The factory file is named relative to the folder the sweep runs in, which is not the
    folder the runtime started in: the task runs in the driver's folder (it was "no file")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MAKE)
    cfg = _factory_config("m.py:make", [0.0, 1e-3, 1e-2])
    with pytest.raises(ValueError) as exc:
        run_sweep(cfg, tmp_path / "s", max_batch=1, executor=executor)
    line = str(exc.value)
    assert "\n" not in line and "raised RuntimeError: seed 2 breaks" in line
    assert "ray::" not in line and "\x1b" not in line
    db = sqlite3.connect(next((tmp_path / "s").glob("*.db")))
    rows = db.execute("SELECT status, COALESCE(error, '') FROM runs").fetchall()
    failed = [e for s, e in rows if s == "failed"]
    assert len(failed) == 1 and "seed 2 breaks" in failed[0] and "RayTaskError" not in failed[0]
    assert {s for s, _ in rows} <= {"done", "pending", "failed"} and len(rows) == 9


LATE = """
import sys
from torch import nn

CALLS = [0]

class Late(nn.Linear):
    def forward(self, x):
        CALLS[0] += 1
        if "worker" in sys.argv[0] and CALLS[0] > 8:  # on a Ray worker, past the checks
            raise ValueError("late boom")
        return super().forward(x)

def make(in_dim, out_dim, seed=0):
    return Late(in_dim, out_dim)
"""


def test_a_users_error_on_a_worker_names_the_users_line(executor, tmp_path, capsys, monkeypatch):
    """A review: the user's exception comes back from a Ray task without its traceback, so a
    ValueError from the user's forward read as wdlab's own refusal ("error: late boom"). The
    task records where the user's code raised it: the line names it, as on the local backend."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(LATE)
    flags = ["--data", "wine", "--model", "m.py:make", "--wd", "0,1e-2", "--epochs", "2"]
    assert main(["sweep", *flags, "--backend", "ray", "--out", str(tmp_path / "s")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    where = f"{(tmp_path / 'm.py').resolve()}:11"
    assert f"ValueError: late boom (raised in your code, {where};" in line, line


HALF = {  # a package whose import takes 4 s, its first submodule reading the second later
    "halfpkg/__init__.py": "from . import first\nimport sys, time\n"  # the marker: in a worker
    "open('in', 'w') if 'worker' in sys.argv[0] else None\ntime.sleep(4)\nfrom . import second",
    "halfpkg/first.py": "import halfpkg\n\n\ndef width():\n    return halfpkg.second.WIDTH\n",
    "halfpkg/second.py": "WIDTH = 8\n",
}

CANCELLED = """
import os
import sys
import time

import torch
from torch import nn

def make(seed=0):
    if seed == 0 and BREAKS and "worker" in sys.argv[0]:  # a Ray worker, not the driver
        open(f"breaks-{os.getpid()}", "w")
        deadline = time.time() + 120
        while not os.path.exists("in") and time.time() < deadline:
            time.sleep(0.05)  # until another batch (seed 1's or 2's) is inside its import
        raise RuntimeError("seed 0 breaks")
    import halfpkg.first

    torch.manual_seed(seed)
    width = halfpkg.first.width()
    return nn.Sequential(nn.Linear(13, width), nn.ReLU(), nn.Linear(width, 3))
"""


def test_a_batch_cancelled_mid_import_leaves_no_half_imported_worker_behind(
    executor, tmp_path, monkeypatch
):
    """After one batch fails, the others in flight are cancelled. A cancel was a
    KeyboardInterrupt inside the task: one landing in the middle of an import (torch.optim's
    first optimizer imports torch._dynamo for ~1 s) left the worker with half a package, and
    Ray gave that worker the next sweep's task, which failed with "partially initialized
    module 'torch._dynamo' has no attribute 'decorators'" (a CI run). A cancelled batch's
    worker is now ended with it: the next sweep in the same runtime trains."""
    monkeypatch.chdir(tmp_path)
    for name, text in HALF.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "b.py").write_text("BREAKS = True\n" + CANCELLED)
    (tmp_path / "ok.py").write_text("BREAKS = False\n" + CANCELLED)
    monkeypatch.syspath_prepend(str(tmp_path))  # (the workers find halfpkg in their cwd)
    pid_dir = executor.pid_dir
    before = set(os.listdir(pid_dir))
    with pytest.raises(ValueError, match="seed 0 breaks"):
        run_sweep(
            _factory_config("b.py:make", [0.0]), tmp_path / "s", max_batch=1, executor=executor
        )
    (breaks,) = [int(f.name.split("-")[1]) for f in tmp_path.glob("breaks-*")]
    started = [int(f.rsplit("-", 1)[1].split(".")[0]) for f in set(os.listdir(pid_dir)) - before]
    cancelled = [pid for pid in started if pid != breaks]  # (Ray may start seed 2 before 1)
    assert cancelled, "no other batch started"
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(pid) for pid in cancelled):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in cancelled)
    res = run_sweep(
        _factory_config("ok.py:make", [0.0]), tmp_path / "t", max_batch=1, executor=executor
    )
    assert res.counts["done"] == 3 and not res.counts.get("failed")  # seeds 0, 1, 2


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_without_an_address_a_new_local_runtime_starts_quietly(monkeypatch):
    """No --address: ``ray.init(address="local")``, a runtime of wdlab's own (plain
    ``ray.init()`` joined a cluster that ``ray start --head`` had recorded on the machine and
    then refused wdlab's num_cpus); Ray's INFO and WARNING lines are not printed (an error exit
    was not one line)."""
    import logging

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    RayExecutor(local_cpus=2)._init()
    assert seen["address"] == "local" and seen["num_cpus"] == 2
    assert seen["logging_level"] == logging.ERROR and seen["log_to_driver"] is False


DIES = """
import os
import sys
import time

import torch
from torch import nn

def make(seed=0):
    if seed == 1 and "worker" in sys.argv[0]:  # a Ray worker's process, not the driver
        time.sleep(3)  # the other batches finish first: the study is kept
        os._exit(7)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3))
"""


def test_a_worker_that_dies_fails_its_batch_alone_in_one_line(executor, tmp_path, monkeypatch):
    """A worker process that dies (os._exit, out of memory) with no retry left: Ray's
    WorkerCrashedError failed every unfinished run, "(unexpected; WDLAB_DEBUG=1 …)"; now its
    batch alone, one line saying its task ended without results, the others back to pending."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.py").write_text(DIES)
    cfg = _factory_config("d.py:make", [0.0, 1e-2])
    ex = RayExecutor(max_retries=0)  # joins the module's runtime
    with pytest.raises(
        ValueError, match=r"^the batch's Ray task ended without results: WorkerCrashedError"
    ) as e:
        run_sweep(cfg, tmp_path / "s", max_batch=1, executor=ex)
    assert "\n" not in str(e.value)
    db = sqlite3.connect(next((tmp_path / "s").glob("*.db")))
    statuses = [s for (s,) in db.execute("SELECT status FROM runs")]
    assert statuses.count("failed") == 1 and "running" not in statuses
