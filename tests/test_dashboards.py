"""A study on TensorBoard and MLflow: ``wdlab export --to`` and ``--log`` / ``log=`` during a
sweep, read back with each package's own reader (TensorBoard's EventAccumulator; MLflow's
MlflowClient on a local SQLite store, no server); bad targets refused in one line with nothing
stored."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wdlab
from wdlab.cli import main
from wdlab.integrations.content import run_name, safe_name
from wdlab.pipelines import export_to, load_study
from wdlab.records import is_per_epoch, use_wd

SWEEP = {"weight_decay": [0.0, 1e-3, 1e-1], "seeds": 2, "epochs": 3, "batch_size": 64}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "wine-study"
    wdlab.sweep("mlp", "wine", out=out, **SWEEP)
    return out


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def accumulator(path: Path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def f32(v: float) -> float:
    """A value as TensorBoard keeps a scalar (float32)."""
    return float(np.float32(v))


def check_tensorboard(root: Path, result) -> None:
    """Every run's curves, final metrics and hyperparameters, and the selection, as
    TensorBoard reads them back."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [safe_name(run_name(r.config)) for r in result.runs] + ["selection"]
    )
    for run in result.runs:
        ea = accumulator(root / safe_name(run_name(run.config)))
        for key, values in run.curves.series.items():
            epochs = run.curves.epoch if is_per_epoch(key) else run.curves.eval_epoch
            got = [(e.step, e.value) for e in ea.Scalars(key)]
            assert got == [(ep, f32(v)) for ep, v in zip(epochs, values, strict=True)]
        assert ea.Scalars("final/val_acc")[0].value == f32(run.final["val_acc"])
        content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hp["mode"].string_value == run.config.mode
        assert hp["weight_decay"].number_value == run.config.weight_decay
        assert hp["seed"].number_value == run.config.seed
    sel = accumulator(root / "selection")
    text = sel.Tensors("selection/text_summary")[0].tensor_proto.string_val[0].decode()
    (row,) = result.selection
    assert row["verdict"] in text and "| use wd | chosen wd |" in text
    (chosen,) = sel.Scalars("chosen_wd/decoupled/lr=0.001")
    assert chosen.value == f32(row["weight_decay"])
    (use,) = sel.Scalars("use_wd/decoupled/lr=0.001")  # the answer, as the report gives it
    assert use.value == f32(use_wd(row))


def test_export_to_tensorboard_round_trip(study_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    before = digest(study_dir / "study.db")
    assert main(["export", str(study_dir), "--to", "tensorboard", str(tmp_path / "tb")]) == 0
    assert "6 runs and the selection logged to tensorboard" in capsys.readouterr().out
    check_tensorboard(tmp_path / "tb" / "wine-study", load_study(study_dir))
    assert digest(study_dir / "study.db") == before  # read-only
    # the same folder again: refused, nothing added
    files = sorted((tmp_path / "tb").rglob("*"))
    assert main(["export", str(study_dir), "--to", "tensorboard", str(tmp_path / "tb")]) == 2
    assert "holds logs already" in capsys.readouterr().err
    assert sorted((tmp_path / "tb").rglob("*")) == files


def check_mlflow(uri: str, name: str, result) -> None:
    """Every run as a child run (params, metric history, final metrics, status), the
    selection and the report on the parent, as MlflowClient reads them back."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.info.run_name == name]
    children = {r.info.run_name: r for r in runs if r.info.run_name != name}
    assert sorted(children) == sorted(run_name(r.config) for r in result.runs)
    for run in result.runs:
        child = children[run_name(run.config)]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["wdlab.status"] == run.status == "done"
        assert float(child.data.params["weight_decay"]) == run.config.weight_decay
        assert child.data.params["mode"] == run.config.mode
        history = client.get_metric_history(child.info.run_id, "val_acc")
        got = sorted((m.step, m.value) for m in history)
        assert got == list(zip(run.curves.eval_epoch, run.curves["val_acc"], strict=True))
        assert child.data.metrics["final/test_acc"] == run.final["test_acc"]
        assert child.info.status == "FINISHED"
    assert parent.data.params["train.epochs"] == "3"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"selection.json", "selection.md", "report"} <= arts
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.html" in report
    path = client.download_artifacts(parent.info.run_id, "selection.json")
    strict = json.loads(Path(path).read_text(), parse_constant=pytest.fail)  # no NaN in it
    assert strict[0]["verdict"] == result.selection[0]["verdict"]
    assert strict[0]["use_wd"] == use_wd(result.selection[0])
    key = f"use_wd/decoupled/lr_{result.selection[0]['lr']:g}"
    assert parent.data.metrics[key] == use_wd(result.selection[0])
    db = Path(uri.removeprefix("sqlite:///"))
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(db.parent / "mlruns")  # beside the store, not in the cwd


def test_export_to_mlflow_round_trip(study_dir, mlflow_uri, capsys):
    assert main(["export", str(study_dir), "--to", "mlflow", mlflow_uri, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["to"] == "mlflow" and doc["runs"] == 6  # a count, not a string
    check_mlflow(mlflow_uri, "wine-study", load_study(study_dir))
    # a second export into the same experiment is refused, the store left as it is
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    before = digest(db)
    with pytest.raises(ValueError, match="holds runs already"):
        export_to(study_dir, "mlflow", mlflow_uri)
    assert digest(db) == before


def test_a_deleted_mlflow_experiment_is_refused_before_anything_is_stored(
    study_dir, tmp_path, capsys
):
    """A new-user trial: deleted as the refusal said (MLflow keeps a deleted experiment's name
    until ``mlflow gc``), the experiment passed the checks; a sweep then trained every run and
    failed at its first logged run ("must be in the 'active' state"), and so did every rerun."""
    MlflowClient = pytest.importorskip("mlflow").MlflowClient
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # its own store
    export_to(study_dir, "mlflow", mlflow_uri)
    client = MlflowClient(tracking_uri=mlflow_uri)
    client.delete_experiment(client.get_experiment_by_name("wine-study").experiment_id)
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    before = digest(db)
    with pytest.raises(ValueError, match=r"is deleted but not purged.*restore it.*mlflow gc"):
        export_to(study_dir, "mlflow", mlflow_uri)
    out = tmp_path / "again"
    args = ["sweep", "--data", "wine", "--epochs", "2", "--wd", "0,0.1", "--out", str(out)]
    assert main([*args, "--name", "wine-study", "--log", f"mlflow:{mlflow_uri}"]) == 2
    assert "is deleted but not purged" in capsys.readouterr().err
    assert not (out / "study.db").exists() and digest(db) == before


def test_live_logs_during_a_sweep(tmp_path, mlflow_uri, capsys):
    """--log during a sweep logs what an export of the finished study logs."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "live-study"
    args = ["sweep", "--data", "wine", "--optimizer", "adamw", "--lr", "0.001", "--epochs", "3"]
    args += ["--mode", "decoupled", "--wd", "0,0.001,0.1", "--seeds", "2", "--batch-size", "64"]
    args += ["--out", str(out), "--max-batch", "2", "--json"]
    args += ["--log", f"tensorboard:{tmp_path / 'tb'}", "--log", f"mlflow:{mlflow_uri}"]
    assert main(args) == 0
    json.loads(capsys.readouterr().out)  # still exactly one JSON document
    result = load_study(out)
    check_tensorboard(tmp_path / "tb" / "live-study", result)
    check_mlflow(mlflow_uri, "live-study", result)


def test_live_logs_keep_studies_apart_and_resume_in_place(tmp_path, mlflow_uri):
    """Another study of the same name logs beside the first (TensorBoard: ``<name>-2``, as
    Lightning takes a new version; MLflow: a parent run of its own), never into it; the same
    study again logs nothing twice (no run is trained again, its summary is there)."""
    pytest.importorskip("tensorboard")
    from mlflow import MlflowClient

    logs = [f"tensorboard:{tmp_path / 'tb'}", f"mlflow:{mlflow_uri}"]
    kw = {"weight_decay": [0.0, 1e-3], "epochs": 2, "log": logs, "name": "same"}
    first = wdlab.sweep("mlp", "wine", out=tmp_path / "a", **kw)
    events = sorted((tmp_path / "tb").rglob("events.*"))
    with pytest.warns(UserWarning, match="holds another study's logs; this study's go to"):
        other = wdlab.sweep("mlp", "wine", out=tmp_path / "b", **(kw | {"epochs": 3}))
    check_tensorboard(tmp_path / "tb" / "same", first)
    check_tensorboard(tmp_path / "tb" / "same-2", other)
    wdlab.sweep("mlp", "wine", out=tmp_path / "a", **kw)  # the first study again: all stored
    assert sorted((tmp_path / "tb" / "same").rglob("events.*")) == [
        e for e in events if e.is_relative_to(tmp_path / "tb" / "same")
    ]
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("same")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2  # one per study, none for the rerun
    for parent, result in zip(
        sorted(parents, key=lambda r: r.info.start_time), (first, other), strict=True
    ):
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(kids) == len(result.runs)


def test_python_sweep_log(tmp_path):
    pytest.importorskip("tensorboard")
    result = wdlab.sweep("mlp", "wine", log=f"tensorboard:{tmp_path}", name="py", **SWEEP)
    check_tensorboard(tmp_path / "py", result)


# -- bad targets: one line, exit 2, nothing stored ---------------------------------------------


def test_unreachable_mlflow_server_fails_fast(study_dir, tmp_path, capsys):
    pytest.importorskip("mlflow")
    before = digest(study_dir / "study.db")
    url = "http://127.0.0.1:9"  # the discard port: nothing listens there
    assert main(["export", str(study_dir), "--to", "mlflow", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the tracking server {url} is unreachable" in err
    assert digest(study_dir / "study.db") == before
    out = tmp_path / "never"
    args = ["sweep", "--data", "wine", "--epochs", "2", "--out", str(out), "--log", f"mlflow:{url}"]
    assert main(args) == 2
    assert "unreachable" in capsys.readouterr().err
    assert not (out / "study.db").exists()


def test_unwritable_tensorboard_folder(study_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target, message in (
        (blocker, "is a file, not a folder"),
        (blocker / "sub", f"{blocker} is a file, not a folder"),
    ):
        assert main(["export", str(study_dir), "--to", "tensorboard", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    out = tmp_path / "never"
    args = ["sweep", "--data", "wine", "--epochs", "2", "--out", str(out)]
    assert main([*args, "--log", f"tensorboard:{blocker / 'sub'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not (out / "study.db").exists() and blocker.read_text() == "not a folder"


def test_a_foreign_sqlite_file_is_not_an_mlflow_store(study_dir, tmp_path, capsys):
    import sqlite3

    pytest.importorskip("mlflow")
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = digest(path)
    assert main(["export", str(study_dir), "--to", "mlflow", f"sqlite:///{path}"]) == 2
    assert "is not an MLflow store; left as it is" in capsys.readouterr().err
    assert digest(path) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--log", "wandb:x"], "unknown dashboard 'wandb'"),
        (["--log", "tensorboard"], "tensorboard needs a folder"),
    ],
)
def test_bad_log_specs(tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    assert main(["sweep", "--data", "wine", "--epochs", "2", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "study.db").exists()


def test_export_to_flags(study_dir, tmp_path, capsys):
    args = ["export", str(study_dir), "--to", "tensorboard", str(tmp_path), "x"]
    assert main(args) == 2
    assert "--to takes a dashboard and one target" in capsys.readouterr().err
    assert main(["export", str(study_dir), "--to", "tensorboard", str(tmp_path), "--out", "y"]) == 2
    assert "--out, --format and --force are for files" in capsys.readouterr().err
    # --format csv (its default value) beside --to was ignored; it is refused as any --format
    to = ["export", str(study_dir), "--to", "tensorboard", str(tmp_path / "tb")]
    assert main([*to, "--format", "csv"]) == 2
    assert "--out, --format and --force are for files" in capsys.readouterr().err
    assert main([*to, "--force"]) == 2  # (it was taken and did nothing; found by a new user)
    assert "never over this study's logs there" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()


def test_import_wdlab_imports_no_dashboard_or_optuna():
    code = (
        "import sys, wdlab; wdlab.sweep; wdlab.train; import wdlab.pipelines; "
        "from wdlab.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('optuna', 'tensorboard', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_early_stopping_runs_log_the_numbers_they_are_reported_at(tmp_path):
    """With early stopping a run is reported (and chosen) at its best epoch: the dashboards
    get that epoch's numbers as ``best/<metric>`` beside ``final/<metric>`` (they had only
    the last evaluation's; found by a new-user trial)."""
    pytest.importorskip("tensorboard")
    result = wdlab.sweep("mlp", "wine", lr=0.3, weight_decay=[0.0, 1e-3], epochs=8,
                         eval_every=1, early_stopping=True, patience=2, name="es",
                         log=f"tensorboard:{tmp_path}")  # fmt: skip
    for run in result.runs:
        ea = accumulator(tmp_path / "es" / safe_name(run_name(run.config)))
        assert ea.Scalars("best/val_loss")[0].value == f32(run.best["at"]["val_loss"])
        assert ea.Scalars("final/val_loss")[0].value == f32(run.final["val_loss"])


# -- found by a new-user trial (stop 37) ------------------------------------------------------


def test_run_names_keep_close_weight_decays_apart():
    """Names rounded to 6 digits put wd 0.001 and 0.0010000001 into one TensorBoard folder,
    their curves interleaved; a number that reads back as itself keeps its short form."""
    from wdlab.records import RunConfig

    a, b = (RunConfig("decoupled", wd, 1e-3, "adamw") for wd in (0.001, 0.0010000001))
    assert run_name(a) == "decoupled_wd=0.001_lr=0.001_adamw_seed=0"
    assert run_name(b) == "decoupled_wd=0.0010000001_lr=0.001_adamw_seed=0"


def test_live_logs_get_the_runs_pruned_at_a_rung(tmp_path, mlflow_uri):
    """Runs stopped by successive halving never reached a live log (only an export had them):
    they are logged when their rung is decided, and end KILLED in MLflow."""
    pytest.importorskip("tensorboard")
    from mlflow import MlflowClient

    logs = [f"tensorboard:{tmp_path / 'tb'}", f"mlflow:{mlflow_uri}"]
    result = wdlab.sweep("mlp", "wine", lr=[0.03, 3.0], weight_decay=[0.0, 1e-3, 1e-2, 1e-1],
                         epochs=9, eval_every=1, prune=True, name="pruned", log=logs)  # fmt: skip
    pruned = [r for r in result.runs if r.status == "pruned"]
    assert pruned and len(pruned) < len(result.runs)
    folders = {p.name for p in (tmp_path / "tb" / "pruned").iterdir() if p.is_dir()}
    assert folders == {safe_name(run_name(r.config)) for r in result.runs} | {"selection"}
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("pruned")
    kids = {
        r.info.run_name: r
        for r in client.search_runs([exp.experiment_id], max_results=100)
        if "mlflow.parentRunId" in r.data.tags
    }
    assert len(kids) == len(result.runs)
    for run in pruned:
        kid = kids[run_name(run.config)]
        assert kid.info.status == "KILLED" and kid.data.tags["wdlab.status"] == "pruned"
        history = client.get_metric_history(kid.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == run.curves.eval_epoch  # up to its rung


def test_group_wd_patterns_reach_mlflow_as_one_parameter(tmp_path, mlflow_uri):
    """``layers.*`` is no MLflow parameter name: the sweep trained, was stored, then stopped
    with MLflow's error, and every later log of the study failed alike."""
    from mlflow import MlflowClient

    wdlab.sweep("mlp", "wine", weight_decay=[0.0, 1e-2], epochs=2, group_wd={"layers.*": 1e-5},
                name="groups", out=tmp_path / "s", log=f"mlflow:{mlflow_uri}")  # fmt: skip
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("groups")
    (parent,) = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=100)
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert json.loads(parent.data.params["decay.group_wd"]) == {"layers.*": 1e-5}


def test_a_sweep_refused_after_its_logs_were_opened_leaves_nothing_there(tmp_path, capsys):
    """Another study in ``--out``: refused, but the TensorBoard log had made its folder and
    marker already (``tb/<study>-2/.wdlab-study``), and a new MLflow SQLite file was made."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    args = ["sweep", "--data", "wine", "--epochs", "2", "--out", str(tmp_path / "s")]
    assert main([*args, "--wd", "0,0.01", "--seeds", "1"]) == 0
    capsys.readouterr()
    logs = ["--log", f"tensorboard:{tmp_path / 'tb'}", "--log", f"mlflow:sqlite:///{tmp_path}/m.db"]
    assert main([*args, "--wd", "0,0.1", "--seeds", "1", *logs]) == 2
    assert "holds another study" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists() and not (tmp_path / "m.db").exists()


def test_log_and_study_of_the_wrong_kind_are_one_line():
    with pytest.raises(ValueError, match=r"^log: expected 'tensorboard:DIR'.* got 5$"):
        wdlab.sweep("mlp", "wine", epochs=1, log=5)
    pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution

    from wdlab.optuna import optimize

    space = {"lr": FloatDistribution(1e-3, 1e-1)}
    with pytest.raises(ValueError, match=r"^study must be an optuna\.Study .* got a str$"):
        optimize("study", "mlp", "wine", space, n_trials=1)


def test_two_studies_of_one_name_opened_together_log_apart(tmp_path):
    """A checking helper's finding: with the folder made only at the first run logged, a second
    study opened before then took the same folder, its marker overwriting the first's."""
    pytest.importorskip("tensorboard")
    from wdlab.integrations.tensorboard import TensorBoardLog

    first = TensorBoardLog(str(tmp_path), "same", {}, fresh=False, key="a")
    with pytest.warns(UserWarning, match="holds another study's logs; this study's go to"):
        second = TensorBoardLog(str(tmp_path), "same", {}, fresh=False, key="b")
    assert (first.root.name, second.root.name) == ("same", "same-2")
    second.close()  # nothing logged: its folder goes, the first's stays taken
    assert not second.root.exists() and (first.root / ".wdlab-study").read_text() == "a\n"


HOT_JOURNAL = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE metrics SET value = value + 1")
os.kill(os.getpid(), 9)  # dies mid-write: its journal stays behind, hot
"""


def test_a_store_left_mid_write_by_a_kill_is_still_logged_to(study_dir, tmp_path):
    """Found by a new-user trial: a sweep killed (kill -9) while MLflow wrote its SQLite store
    left a hot journal there, and the same command again was refused ("cannot read …: attempt
    to write a readonly database"): the store was checked read-only, and a read-only connection
    may not roll a journal back. It is checked from the file as it is; MLflow rolls it back."""
    from mlflow import MlflowClient

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    assert main(["export", str(study_dir), "--to", "mlflow", uri]) == 0
    subprocess.run([sys.executable, "-c", HOT_JOURNAL, str(path)], check=False)
    assert Path(f"{path}-journal").stat().st_size > 0  # hot: a reader must roll it back
    kw = {"weight_decay": [0.0, 1e-3], "epochs": 2, "log": f"mlflow:{uri}"}
    result = wdlab.sweep("mlp", "wine", out=tmp_path / "again", **kw)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(result.name)
    assert len(client.search_runs([exp.experiment_id])) == 1 + len(result.runs)


def test_runs_a_killed_sweep_stored_but_did_not_log_are_logged_when_it_resumes(
    tmp_path, mlflow_uri, monkeypatch
):
    """Found by a new-user trial: a sweep killed while it logged left its dashboards without
    the runs it had stored but not yet logged (the resumed sweep logs what it trains), and
    with half-logged ones (an MLflow child run left RUNNING, part of a run's events). The
    sweep that resumes it alone logs what they lack, once each: here after a stop inside
    TensorBoard's third run, then inside MLflow's logging of a run."""
    pytest.importorskip("tensorboard")
    from mlflow import MlflowClient

    import wdlab.integrations.tensorboard as tb

    def stop_at(module, name, n):
        calls, real = [], getattr(module, name)

        def counted(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt  # as a kill there would leave it
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    out = tmp_path / "killed"
    logs = [f"tensorboard:{tmp_path / 'tb'}", f"mlflow:{mlflow_uri}"]
    kw = {"weight_decay": [0.0, 1e-3, 1e-1], "seeds": 2, "epochs": 3, "batch_size": 64}
    kw |= {"lr": 0.001, "max_batch": 2, "log": logs, "name": "killed"}
    stop_at(tb, "finals", 3)  # after the third run's curves were written
    with pytest.raises(KeyboardInterrupt):
        wdlab.sweep("mlp", "wine", optimizer="adamw", out=out, **kw)
    monkeypatch.undo()
    stop_at(MlflowClient, "set_terminated", 1)  # a child run's metrics logged, not finished
    with pytest.raises(KeyboardInterrupt):
        wdlab.sweep("mlp", "wine", optimizer="adamw", out=out, **kw)
    monkeypatch.undo()
    result = wdlab.sweep("mlp", "wine", optimizer="adamw", out=out, **kw)
    check_tensorboard(tmp_path / "tb" / "killed", result)
    check_mlflow(mlflow_uri, "killed", result)
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("killed")
    assert len(client.search_runs([exp.experiment_id])) == 1 + len(result.runs)  # once each
    for run in result.runs:  # once each: one events file per run
        folder = tmp_path / "tb" / "killed" / safe_name(run_name(run.config))
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    # a log written before runs were marked whole: its runs again, not its summary (a
    # checking helper found the summary logged twice)
    for mark in (tmp_path / "tb" / "killed").rglob(".wdlab-logged"):
        mark.unlink()
    wdlab.sweep("mlp", "wine", optimizer="adamw", out=out, **kw)
    check_tensorboard(tmp_path / "tb" / "killed", result)
    assert len(list((tmp_path / "tb" / "killed" / "selection").glob("events.*"))) == 1


KILLED_WHILE_MADE = """
import os, sys
import mlflow.store.db.utils as db
import wdlab
if sys.argv[3] == "tables":
    db._upgrade_db = lambda engine: os.kill(os.getpid(), 9)  # dies while MLflow makes them
else:  # dies once the store has its name, before its other name goes
    link = os.link
    os.link = lambda *a: (link(*a), os.kill(os.getpid(), 9))
wdlab.sweep("mlp", "wine", out=sys.argv[1], weight_decay=[0.0, 1e-3], epochs=3,
            log="mlflow:sqlite:///" + sys.argv[2])
"""


def test_a_kill_while_mlflow_makes_its_store_leaves_no_store_behind(tmp_path):
    """Found by a checking helper: a sweep killed (kill -9) while MLflow made a new SQLite store
    left a half-made file under the store's name, and every later sweep was refused ("is not
    an MLflow store"). The store is made in a file of the process's own and takes its name
    whole; what a killed maker left is removed by the next sweep that logs there."""
    from mlflow import MlflowClient

    path = tmp_path / "mlflow.db"
    out = tmp_path / "s"
    kill = [sys.executable, "-c", KILLED_WHILE_MADE, str(out), str(path)]
    assert subprocess.run([*kill, "tables"]).returncode == -9
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".wdlab-new-")]
    assert left and not path.exists()  # the half-made tables are in the killed process's file
    uri = f"sqlite:///{path}"
    result = wdlab.sweep(
        "mlp", "wine", out=out, weight_decay=[0.0, 1e-3], epochs=3, log=f"mlflow:{uri}"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mlruns") == ["mlflow.db", "s"]
    check_mlflow(uri, result.name, result)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(result.name)
    assert len(client.search_runs([exp.experiment_id])) == 1 + len(result.runs)
    two = tmp_path / "two"  # and a kill once a new store had its name, before its other went:
    two.mkdir()
    kill = [sys.executable, "-c", KILLED_WHILE_MADE, str(two / "s"), str(two / "mlflow.db")]
    assert subprocess.run([*kill, "link"]).returncode == -9  # a second name of the store
    assert any(p.name.startswith(".wdlab-new-") for p in two.iterdir())
    log = f"mlflow:sqlite:///{two / 'mlflow.db'}"
    wdlab.sweep("mlp", "wine", out=two / "t", weight_decay=[0.0], epochs=1, log=log)
    assert not any(p.name.startswith(".wdlab-new-") for p in two.iterdir())


def test_a_partial_study_is_marked_partial_in_the_dashboards_and_an_empty_one_refused(
    study_dir, tmp_path, mlflow_uri, capsys
):
    """A new-user trial: a study stopped part-way and exported looked final in the dashboards
    (a FINISHED parent run with use_wd, a selection text without a word of it); only the
    terminal warned. A study without a finished run wrote an empty log that then blocked the
    real export."""
    import shutil
    import sqlite3

    part = tmp_path / "part"
    shutil.copytree(study_dir, part)
    with sqlite3.connect(part / "study.db") as db:
        db.execute("UPDATE runs SET status = 'pending' WHERE id IN (SELECT id FROM runs LIMIT 3)")
    db.close()
    with pytest.warns(UserWarning, match=r"partial \(3 of 6 runs unfinished\): tensorboard gets"):
        export_to(part, "tensorboard", str(tmp_path / "tb"))
    sel = accumulator(tmp_path / "tb" / "wine-study" / "selection")
    text = sel.Tensors("selection/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("**Partial study (3 of 6 runs unfinished): the answer below is not")
    with pytest.warns(UserWarning, match="the study is partial"):
        export_to(part, "mlflow", mlflow_uri.replace("mlflow.db", "partial.db"))
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri.replace("mlflow.db", "partial.db"))
    (exp,) = [e for e in client.search_experiments() if e.name == "wine-study"]
    tags = [r.data.tags.get("partial") for r in client.search_runs([exp.experiment_id])]
    assert "partial: 3 of 6 runs unfinished" in tags
    with sqlite3.connect(part / "study.db") as db:
        db.execute("UPDATE runs SET status = 'pending'")
    db.close()
    with pytest.raises(ValueError, match="no run of the study has results yet: nothing to export"):
        export_to(part, "tensorboard", str(tmp_path / "tb2"))
    assert not (tmp_path / "tb2").exists()
