"""Files that are not what wdlab expects, and files wdlab must not touch.

A foreign SQLite file in WAL mode (with its ``-wal`` and ``-shm``) is left byte for byte as it
was by ``show``, ``ls``, ``sweep`` and ``export``; a report, export or results file that wdlab
did not write to this study is never replaced without ``--force``; a FIFO or a device given as
the config file is refused at once; a TOML file or a results.json nested too deeply, an
optimizer option torch asserts on, a damaged run row, a Ray resource of ``nan``, a model that
prints to stdout under ``--json`` or raises a ``BaseException`` subclass while training: each
ends in one line (exit 2), or a clean JSON document, never a traceback, a hang or "unexpected".
Cases run through ``wdlab.cli.main`` in this process, except those that could hang or need
their own stdout (a subprocess each, with a timeout as a safety net).
"""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import run_sweep

# what an interrupted sweep says it keeps
RESUMES = "; the study keeps its finished runs and any checkpoints: the same command resumes"

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
TINY = {
    "data": {"source": "wine"},
    "model": {"kind": "linear"},
    "train": {"optimizer": "adam", "lr": [0.01], "epochs": 3, "eval_every": 1},
    "decay": {"modes": ["decoupled"], "weight_decay": [1e-3, 1e-2]},
}
TINY_FLAGS = [
    "--data", "wine", "--model", "linear", "--optimizer", "adam", "--lr", "0.01",
    "--mode", "decoupled", "--wd", "1e-3,1e-2", "--epochs", "3", "--eval-every", "1",
]  # fmt: skip
USER_CODE = '''
import os, sys
import torch
from torch import nn


class Boom(BaseException):
    """Not an Exception: what a user's code may raise."""


class Chatty(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        print("chatty forward says hello")  # Python's stdout
        os.write(1, b"chatty forward writes to fd 1\\n")  # below Python, as C code would
        return self.lin(x)


class Explodes(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        if torch.is_grad_enabled():  # training, not the memory estimate (under no_grad)
            raise Boom("the user's forward gave up")
        return self.lin(x)


class Interrupted(Explodes):
    def forward(self, x):
        if torch.is_grad_enabled():
            raise KeyboardInterrupt
        return self.lin(x)


def chatty(in_dim, out_dim):
    print("the factory prints too")
    return Chatty(in_dim, out_dim)


def explodes(in_dim, out_dim):
    return Explodes(in_dim, out_dim)


def interrupted(in_dim, out_dim):
    return Interrupted(in_dim, out_dim)
'''


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "wdlab: warning:" not in ln]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


def digest(folder):
    """Every file of a folder (dot files included) with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    }


def cli(*args, timeout=120, cwd=None):
    """``wdlab ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT / "tests",
        env=ENV,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study (read by several cases; none may change it)."""
    out = tmp_path_factory.mktemp("study") / "s"
    run_sweep(validate(TINY), out)
    return out


# ---------------------------------------------------------------------------------------------
# A foreign SQLite file in WAL mode


def test_a_foreign_sqlite_file_in_wal_mode_keeps_its_wal_and_shm(tmp_path, capsys):
    folder = tmp_path / "theirs"
    folder.mkdir()
    owner = sqlite3.connect(folder / "study.db")  # another program, still running
    try:
        owner.execute("PRAGMA journal_mode=WAL")
        owner.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        owner.execute("INSERT INTO notes (text) VALUES ('mine')")
        owner.commit()
        assert {"study.db-wal", "study.db-shm"} <= set(os.listdir(folder))
        before = digest(folder)
        for argv in (
            ["show", folder],
            ["ls", tmp_path],
            ["sweep", *TINY_FLAGS, "--out", folder],
            ["export", folder, "--out", tmp_path / "e"],
        ):
            code = main(list(map(str, argv)))
            err = capsys.readouterr().err
            if argv[0] == "ls":
                assert code == 0
            else:
                assert code == 2 and "not a wdlab study store" in one_error_line(err)
            assert digest(folder) == before, argv[0]  # study.db, -wal and -shm, byte for byte
        assert owner.execute("SELECT text FROM notes").fetchall() == [("mine",)]
    finally:
        owner.close()


# ---------------------------------------------------------------------------------------------
# Files wdlab did not write are not replaced


def test_sweep_refuses_to_replace_a_report_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "report.html").write_text("<p>my own notes</p>")
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / 'report.html'} exists and was not written by wdlab" in line
    assert "--force" in line
    assert (out / "report.html").read_text() == "<p>my own notes</p>"
    assert not (out / "study.db").exists()  # refused before anything was trained
    assert main(["sweep", *TINY_FLAGS, "--out", str(out), "--force"]) == 0
    assert "wdlab report" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0  # its own: replaced quietly
    assert main(["report", str(out)]) == 0


def test_a_sweep_killed_while_writing_its_report_runs_again(tmp_path, capsys, monkeypatch):
    """A new user's trial: ``kill -9`` as ``losses.png`` appeared left files not yet recorded,
    and every rerun was refused ("losses.png exists and was not written by wdlab"). The files
    are now claimed for the study before they are written."""
    import wdlab.report.html as html

    out = tmp_path / "s"
    real = html.write_report

    def killed(result, folder):
        (Path(folder) / "losses.png").write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt  # the process ends here, as under kill -9 (or Ctrl-C)

    monkeypatch.setattr(html, "write_report", killed)
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) != 0
    monkeypatch.setattr(html, "write_report", real)
    capsys.readouterr()
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "other"  # the claim is the study's: another study's export is refused
    run_sweep(validate({**TINY, "train": {**TINY["train"], "lr": [0.02]}}), other)
    assert main(["export", str(other), "--out", str(out)]) == 0  # runs.csv: not the report's
    assert main(["report", str(other), "--out", str(out)]) == 2
    assert "was written by wdlab for another study" in one_error_line(capsys.readouterr().err)


def test_export_and_report_refuse_files_of_others(tmp_path, study, capsys):
    before = digest(study)
    target = tmp_path / "e"
    target.mkdir()
    (target / "runs.csv").write_text("a,b\n1,2\n")
    assert main(["export", str(study), "--out", str(target)]) == 2
    assert f"{target / 'runs.csv'} exists and was not written by wdlab" in one_error_line(
        capsys.readouterr().err
    )
    assert (target / "runs.csv").read_text() == "a,b\n1,2\n"
    assert not (target / "curves.csv").exists()
    assert main(["export", str(study), "--out", str(target), "--force"]) == 0
    assert main(["export", str(study), "--out", str(target)]) == 0  # wdlab's, this study's
    other = tmp_path / "other"
    run_sweep(validate({**TINY, "train": {**TINY["train"], "lr": [0.02]}}), other)
    capsys.readouterr()
    assert main(["export", str(other), "--out", str(target)]) == 2
    assert "was written by wdlab for another study" in one_error_line(capsys.readouterr().err)
    report = tmp_path / "r"
    report.mkdir()
    (report / "losses.png").write_bytes(b"my picture")
    assert main(["report", str(study), "--out", str(report)]) == 2
    assert f"{report / 'losses.png'} exists" in one_error_line(capsys.readouterr().err)
    assert (report / "losses.png").read_bytes() == b"my picture"
    assert digest(study) == before


def test_run_refuses_to_replace_results_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "results.json").write_text('{"mine": true}')
    assert main(["run", *TINY_FLAGS, "--out", str(out)]) == 2
    assert "results.json exists and was not written by wdlab" in one_error_line(
        capsys.readouterr().err
    )
    assert (out / "results.json").read_text() == '{"mine": true}'
    (out / "results.json").write_text("{}")  # a hand edit of a file wdlab wrote is kept too
    assert main(["run", *TINY_FLAGS, "--out", str(out), "--force"]) == 0
    assert main(["run", *TINY_FLAGS, "--out", str(out)]) == 0
    (out / "curves.csv").write_text("edited")
    capsys.readouterr()
    assert main(["run", *TINY_FLAGS, "--out", str(out)]) == 2
    assert "curves.csv exists and was changed since wdlab wrote it" in one_error_line(
        capsys.readouterr().err
    )


# ---------------------------------------------------------------------------------------------
# The config file: a FIFO or a device, nested too deeply


def test_a_fifo_as_the_config_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "experiment.toml"
    os.mkfifo(fifo)
    proc = cli("run", fifo, "--out", tmp_path / "o", timeout=120)  # a hang fails by timeout
    assert proc.returncode == 2
    assert "is a FIFO (named pipe), not a TOML file" in one_error_line(proc.stderr)


def test_a_device_as_the_config_file_is_refused(tmp_path, capsys):
    assert main(["run", os.devnull, *TINY_FLAGS, "--out", str(tmp_path / "o")]) == 2
    assert "is a character device, not a TOML file" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_a_toml_file_nested_3000_deep_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    assert main(["run", str(deep), "--out", str(tmp_path / "o")]) == 2
    assert "deep.toml: arrays or tables nested too deeply" in one_error_line(
        capsys.readouterr().err
    )


def test_a_toml_file_with_a_byte_order_mark_reads_as_without(tmp_path):
    """A new-user trial: a file saved by a Windows editor (UTF-8 with a BOM) was "not valid
    TOML: Invalid statement (at line 1, column 1)", which never said why."""
    from wdlab.pipelines.experiment import read_config

    text = '[data]\nsource = "wine"\n[train]\nepochs = 2\n'
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.toml").write_text(text)
    assert read_config(tmp_path / "bom.toml") == read_config(tmp_path / "plain.toml")


def test_a_results_json_nested_100000_deep_is_one_line_naming_it(tmp_path, capsys):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(folder)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{folder / 'results.json'}: arrays or objects nested too deeply" in line


# ---------------------------------------------------------------------------------------------
# Options and stored rows


def test_an_optimizer_option_torch_asserts_on_is_one_line(tmp_path, capsys):
    toml = tmp_path / "e.toml"
    toml.write_text('[train]\noptimizer = "adam"\noptions = { capturable = true }\n')
    assert main(["run", str(toml), "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "train.options: Adam refuses {'capturable': True}" in line


@pytest.mark.parametrize(
    "column, value",
    [("config", "{not json"), ("final", "[1, 2]"), ("config", "[" * 100_000 + "]" * 100_000)],
)
def test_a_tampered_run_row_names_the_file_and_the_run(tmp_path, capsys, column, value):
    out = tmp_path / "s"
    run_sweep(validate(TINY), out)
    with sqlite3.connect(out / "study.db") as db:
        db.execute(f"UPDATE runs SET {column} = ? WHERE id = 2", (value,))
    db.close()
    for argv in (["show", str(out)], ["export", str(out), "--out", str(tmp_path / "e")]):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{out / 'study.db'}: run 2 is damaged" in line and "changed outside" in line


# ---------------------------------------------------------------------------------------------
# Flags checked before anything starts


@pytest.mark.parametrize(
    "flag, value", [("--cpus-per-task", "nan"), ("--gpus-per-task", "-1"), ("--cpus-per-task", "0")]
)
def test_ray_resources_are_checked_before_ray_or_anything_starts(tmp_path, capsys, flag, value):
    out = tmp_path / "s"
    argv = ["sweep", *TINY_FLAGS, "--backend", "ray", flag, value, "--out", str(out)]
    assert main(argv) == 2
    assert flag in one_error_line(capsys.readouterr().err)
    assert not out.exists()  # nothing made, nothing trained


# ---------------------------------------------------------------------------------------------
# User code: stdout under --json, BaseException subclasses, Ctrl-C


@pytest.fixture
def user_code(tmp_path):
    path = tmp_path / "usercode.py"
    path.write_text(USER_CODE)
    return path


def test_user_code_never_writes_into_the_json_document(tmp_path, user_code):
    proc = cli(
        "sweep", "--data", "wine", "--model", f"{user_code}:chatty", "--epochs", "2",
        "--eval-every", "1", "--wd", "0.01", "--mode", "decoupled", "--optimizer", "adam",
        "--lr", "0.01", "--out", tmp_path / "s", "--json", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON document, nothing else
    assert doc["counts"]["done"] == 2 and doc["partial"] is False
    assert "chatty forward says hello" in proc.stderr  # the user's output is not lost
    assert "chatty forward writes to fd 1" in proc.stderr
    assert "the factory prints too" in proc.stderr


def test_a_base_exception_from_user_code_while_training_is_one_line(tmp_path, user_code, capsys):
    out = tmp_path / "s"
    flags = ["--data", "wine", "--epochs", "2", "--wd", "0.01", "--mode", "decoupled"]
    assert main(["sweep", *flags, "--model", f"{user_code}:explodes", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "training stopped: user code raised Boom: the user's forward gave up" in line
    assert not out.exists()  # the study it made held nothing of value: out= as it was


def test_a_base_exception_from_user_code_is_a_value_error_in_python(tmp_path, user_code):
    import importlib.util

    import wdlab

    spec = importlib.util.spec_from_file_location("usercode", user_code)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    data = {"train": (X[:24], y[:24]), "val": (X[24:32], y[24:32]), "test": (X[32:], y[32:])}
    with pytest.raises(ValueError, match="user code raised Boom"):
        wdlab.sweep(lambda: mod.Explodes(3, 2), data, epochs=2, weight_decay=[0.01])


def test_ctrl_c_in_user_code_while_training_stays_exit_130(tmp_path, user_code, capsys):
    out = tmp_path / "s"
    flags = ["--data", "wine", "--epochs", "2", "--wd", "0.01", "--mode", "decoupled"]
    assert main(["sweep", *flags, "--model", f"{user_code}:interrupted", "--out", str(out)]) == 130
    assert one_error_line(capsys.readouterr().err) == "wdlab sweep: interrupted" + RESUMES
    with sqlite3.connect(out / "study.db") as db:  # what it held went back to pending
        assert {s for (s,) in db.execute("SELECT status FROM runs")} == {"pending"}
    db.close()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"mine": true}', "is not a wdlab results document (no runs, no wdlab schema)"),
        ("[]", "results.json: a results document must be a JSON object"),
        (
            '{"schema": "wdlab.results", "version": 99, "kind": "run"}',
            "results.json: results written by a newer wdlab (schema version 99)",
        ),
    ],
)
def test_report_refuses_a_results_json_it_did_not_write_naming_the_file(tmp_path, content, said):
    """A foreign or future results.json is one line naming the file; no report is written
    beside it (a JSON object of someone else's made a report of nothing, warnings and all)."""
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text(content)
    p = cli("report", tmp_path / "o")
    assert p.returncode == 2 and said in p.stderr and len(p.stderr.splitlines()) == 1
    assert sorted(x.name for x in (tmp_path / "o").iterdir()) == ["results.json"]


def test_a_damaged_results_json_is_refused_and_nothing_beside_it_changes(tmp_path, capsys):
    """A new-user trial: ``"selection": null`` made a report that said no weight decay had a
    finite score (every run was done and finite) and deleted wd_curve.png; ``runs`` removed
    made one of "9 runs (9 done)" and no figures; a test mean of "x" said "Unknown format code
    'f'", a curve cut short gave matplotlib's "x and y must have same first dimension"."""
    out = tmp_path / "r"
    argv = ["run", "--data", "wine", "--epochs", "2", "--wd", "0,0.01", "--seeds", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    good = json.loads((out / "results.json").read_text())

    def damaged(doc):
        doc["runs"][0]["curves"]["val_acc"].pop()

    cases = {
        "selection is null, not a list": lambda doc: doc.update(selection=None),
        "runs is not a list of runs": lambda doc: doc.pop("runs"),
        "selection[0].test_mean is not a number": lambda doc: doc["selection"][0].update(
            test_mean="x"
        ),
        "runs[0]: curve val_acc is not one value per epoch": damaged,
    }
    for said, change in cases.items():
        doc = json.loads(json.dumps(good))
        change(doc)
        (out / "results.json").write_text(json.dumps(doc))
        before = digest(out)
        capsys.readouterr()
        assert main(["report", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.endswith(
            f"results.json is damaged: {said}; run the command again to rewrite it"
        )
        assert digest(out) == before


@pytest.mark.parametrize(("command", "name"), [("report", "results.json"), ("show", "study.db")])
def test_a_fifo_where_a_study_or_results_file_goes_is_refused_at_once(tmp_path, command, name):
    """A FIFO named results.json or study.db is refused in one line (report hung reading it;
    show said there was no study.db)."""
    (tmp_path / "o").mkdir()
    os.mkfifo(tmp_path / "o" / name)
    p = cli(command, tmp_path / "o", timeout=60)
    assert p.returncode == 2 and "is not a regular file" in p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_a_damaged_record_of_wdlabs_files_is_named(tmp_path, study, capsys):
    """A truncated ``.wdlab-files.json`` was reported as "report.html exists and was not
    written by wdlab": the file named was not the one damaged."""
    out = tmp_path / "r"
    assert main(["report", str(study), "--out", str(out)]) == 0
    (out / ".wdlab-files.json").write_text('{"report.html": {"sou')
    before = digest(out)
    capsys.readouterr()
    assert main(["report", str(study), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / '.wdlab-files.json'}, wdlab's record of the files it wrote there" in line
    assert digest(out) == before
    assert main(["report", str(study), "--out", str(out), "--force"]) == 0
    assert main(["report", str(study), "--out", str(out)]) == 0  # the record is whole again


def test_a_damaged_store_is_named_and_ls_of_no_folder_is_an_error(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0
    with open(out / "study.db", "r+b") as fh:
        fh.truncate(4096)
    before = digest(out)
    capsys.readouterr()
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / 'study.db'}: the study store is damaged" in line, line  # it named no file
    assert digest(out) == before
    assert main(["ls", str(tmp_path / "nope")]) == 2  # it said "no studies under" and exit 0
    assert one_error_line(capsys.readouterr().err).endswith("nope: no such folder")


def test_ls_before_any_sweep_lists_no_study(tmp_path, capsys, monkeypatch):
    """The default folder (wdlab-out) not made yet: no study yet, exit 0 (a folder given
    that does not exist stays an error)."""
    monkeypatch.chdir(tmp_path)
    assert main(["ls"]) == 0
    assert capsys.readouterr().out == "no studies under wdlab-out\n"
    assert main(["ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"studies": []}
    assert not (tmp_path / "wdlab-out").exists()  # nothing made


def test_ls_lines_up_a_data_name_longer_than_its_column(tmp_path, capsys, monkeypatch):
    """A data name over 14 characters pushed that line's counts out of their columns."""
    import wdlab.cli.study as study

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.db").touch()
    rows = {"a": "digits", "b": "customer_churn_2026_q3"}
    counts = dict(runs=12, done=9, diverged=1, pruned=0, failed=2, running=0, pending=0)

    def row(d):
        return {"study": str(d), "created": "2026-12-08 10:00:00", "data": rows[d.name], **counts}

    monkeypatch.setattr(study, "study_row", row)
    monkeypatch.setattr("wdlab.store.find_studies", lambda root: sorted(root.iterdir()))
    assert main(["ls", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1, lines


def test_a_store_damaged_inside_is_refused_not_read_in_part(tmp_path, capsys):
    """Bytes overwritten inside study.db (not cut short) were read silently: show and report
    exited 0 with a run's curves missing, and sweep failed with a KeyError after rewriting
    wdlab's record (found by a new-user trial). SQLite's quick_check now runs on every open."""
    out = tmp_path / "s"
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0
    db = sqlite3.connect(out / "study.db")
    page = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'curves'").fetchone()[0]
    db.close()
    with open(out / "study.db", "r+b") as fh:  # the curves table's b-tree page header
        fh.seek((root - 1) * page)
        fh.write(b"X" * 16)
    before = digest(out)
    for command in (["show", str(out)], ["report", str(out)], ["sweep", *TINY_FLAGS]):
        capsys.readouterr()
        args = [*command, "--out", str(out)] if command[0] == "sweep" else command
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{out / 'study.db'}: the study store is damaged (" in line, line
        assert digest(out) == before


@pytest.mark.parametrize("sub", ["checkpoints", "weights"])
def test_a_damaged_record_of_checkpoints_or_weights_stops_the_sweep_first(tmp_path, capsys, sub):
    """A damaged checkpoints/ or weights/ record was replaced by an empty one: the resumed
    runs then failed as "not written by wdlab" on every retry, and kept weights went unchecked
    and undeleted (found by a new-user trial). It is one line before anything runs."""
    out = tmp_path / "s"
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0
    (out / sub).mkdir(exist_ok=True)
    (out / sub / ".wdlab-files.json").write_text('{"broken')
    before = digest(out)
    capsys.readouterr()
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / sub / '.wdlab-files.json'}, wdlab's record of the " in line, line
    assert "cannot be read (damaged)" in line and f"or delete {out / sub}" in line
    assert digest(out) == before


def test_a_sweep_leaves_no_claim_on_figures_it_did_not_draw(tmp_path):
    """Every sweep left ``"pending": "writing"`` entries for heatmap.png, rotation.png and
    rungs.png, which it had no data to draw, so a file of the user's by such a name passed as
    wdlab's unfinished write (found by a new-user trial)."""
    from wdlab.pipelines.outputs import check_outputs, study_source, written_outputs

    out = tmp_path / "s"
    assert main(["sweep", *TINY_FLAGS, "--out", str(out)]) == 0
    record = written_outputs(out)
    assert record and not [n for n, e in record.items() if e.get("pending")]
    assert all((out / n).is_file() for n in record)
    drawn = {n for n in record if n.endswith(".png")}
    mine = next(n for n in ("rotation.png", "rungs.png", "heatmap.png") if n not in drawn)
    (out / mine).write_bytes(b"the user's")
    with pytest.raises(ValueError, match=f"{mine} exists and was not written by wdlab"):
        check_outputs(out, [mine], study_source(out))


@pytest.mark.parametrize(
    "model, said",
    [("mymodel.py", "'mymodel.py' names a file; name the function that builds the model too: "
                    "mymodel.py:FUNCTION"),
     ("resnet", "'resnet' is not a model; valid: seed-mlp, mlp, linear, cnn, or FILE.py:FUNCTION")],
)  # fmt: skip
def test_a_model_that_is_not_one_says_how_to_name_your_own(tmp_path, capsys, model, said):
    """It listed the built-in kinds and 'custom' (not a value a flag takes), never FILE.py:F."""
    assert main(["sweep", "--data", "wine", "--model", model, "--out", str(tmp_path / "s")]) == 2
    assert said in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "s").exists()


def test_timescale_and_verify_keep_files_they_did_not_write(tmp_path, capsys):
    """Both wrote their files over whatever was there (a file of the user's included), and
    left an empty --out folder behind when refused."""
    out = tmp_path / "t"
    out.mkdir()
    (out / "timescale.json").write_text("mine")
    (out / "verify.json").write_text("mine too")
    small = ["--smallest", "64", "--seeds", "1", "--epochs", "2", "--out", str(out)]
    assert main(["timescale", *small]) == 2
    assert "timescale.json exists and was not written by wdlab" in one_error_line(
        capsys.readouterr().err
    )
    assert main(["verify", "--out", str(out)]) == 2  # refused before any check runs
    assert "verify.json exists and was not written by wdlab" in one_error_line(
        capsys.readouterr().err
    )
    assert (out / "timescale.json").read_text() == "mine"
    assert (out / "verify.json").read_text() == "mine too"
    assert main(["timescale", *small, "--force"]) == 0
    assert main(["timescale", *small]) == 0  # its own files: replaced
    assert main(["timescale", "--data", "nope", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
