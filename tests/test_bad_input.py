"""Bad input never ends in a traceback: every case succeeds, or says what is wrong in one line
on stderr with exit status 2 (warnings, ``wdlab: warning: …``, may come before it).

The categories of issue 14 (SQLite, file system, user factories, memory, devices, overflow,
CSV contents, optimizer options, grid size, Ctrl-C during the start-up imports, a closed pipe)
run through the real entry point in subprocesses: one subprocess runs the whole table of cases
(one import of torch, not one per case), a few cases need a process of their own. A
property-based part (hypothesis, derandomized) generates CSV contents, TOML values and flag
values and drives ``wdlab.cli.main`` in this process. Afterwards the study the cases aimed at is
byte-for-byte unchanged, and the foreign SQLite file is untouched.
"""

import hashlib
import json
import math
import os
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import run_sweep

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1")  # one torch thread: CI has 2 cores
STUDY = {
    "data": {"source": "wine"},
    "model": {"kind": "linear"},
    "train": {"optimizer": "adam", "lr": [0.02], "epochs": 3, "eval_every": 1},
    "decay": {"modes": ["decoupled"], "weight_decay": [0.003]},
}
FACTORIES = """
import os, sys
from torch import nn

def raises(in_dim, out_dim):
    raise RuntimeError("boom from the factory")

def not_module(in_dim, out_dim):
    return "a string"

def typeerror(in_dim, out_dim):
    with open(os.environ["WDLAB_TEST_CALLS"], "a") as fh:
        fh.write("x")
    raise TypeError("bad argument inside the factory")
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digest(path):
    path = Path(path)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the cases point at, and the digests of those that must not change."""
    w = tmp_path_factory.mktemp("bad")
    run_sweep(validate(STUDY), w / "studies" / "study")
    foreign = w / "studies" / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "study.db") as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.close()
    corrupt = w / "studies" / "corrupt"
    corrupt.mkdir()
    (corrupt / "study.db").write_bytes(np.random.default_rng(0).bytes(8192))
    truncated = w / "truncated"
    truncated.mkdir()
    data = (w / "studies" / "study" / "study.db").read_bytes()
    (truncated / "study.db").write_bytes(data[: len(data) // 2])
    (w / "afile").write_text("not a folder")
    (w / "folder.toml").mkdir()
    (w / "folder.csv").mkdir()
    (w / "factories").mkdir()
    (w / "factories" / "badfactories.py").write_text(FACTORIES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=60).round(3)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    pd.DataFrame({"a": x, "y": y}).to_csv(w / "ok.csv", index=False)
    _csv(w / "header.csv", "a,b,y\n")
    _csv(
        w / "duptarget.csv",
        "a,y,y\n" + "".join(f"{v},{t},{t}\n" for v, t in zip(x, y, strict=True)),
    )
    _csv(
        w / "dupfeature.csv",
        "a,a,y\n" + "".join(f"{v},{v},{t}\n" for v, t in zip(x, y, strict=True)),
    )
    _csv(w / "single.csv", "a,y\n" + "".join(f"{v},1\n" for v in x))
    _csv(
        w / "rare.csv",
        "a,y\n" + "".join(f"{v},{t}\n" for v, t in zip(x, [*y[:-1], 2], strict=True)),
    )
    b_inf = ["inf"] * 3 + [str(v) for v in x[3:]]  # infinities, which imputing cannot fix
    b_nan = [""] * 2 + [str(v) for v in x[2:]]
    for name, b in (("inf.csv", b_inf), ("nan.csv", b_nan)):
        rows = "".join(f"{v},{bv},{t}\n" for v, bv, t in zip(x, b, y, strict=True))
        _csv(w / name, "a,b,y\n" + rows)
    n = 30_000  # a unique-ID column: one-hot would be a 30,000 x 30,001 matrix (6.7 GiB)
    ids = {"id": [f"u{i:05d}" for i in range(n)], "v": np.arange(n) % 7, "y": np.arange(n) % 2}
    pd.DataFrame(ids).to_csv(w / "ids.csv", index=False)
    tomls = {
        "fast.toml": '[train]\noptimizer = "sgd"\noptions = { momentum = "fast" }\n',
        "momentun.toml": '[train]\noptimizer = "sgd"\noptions = { momentun = 0.9 }\n',
        "negmomentum.toml": "[train]\noptions = { momentum = -1.0 }\n",
        "nesterov.toml": "[train]\noptions = { nesterov = true }\n",
        "invalid.toml": "[train\n",
        "unknown.toml": "[train]\nepochz = 3\n",
        "seed.toml": "[data]\nseed = 1099511627776\n",
        "splits.toml": '[data]\nsource = "wine"\nval_size = 0.5\ntest_size = 0.5\n',
        "wd.toml": "[decay]\nweight_decay = 1e308\n",
    }
    for name, text in tomls.items():
        (w / name).write_text(text)
    (w / "latin1.toml").write_bytes("[data]\nsource = 'caf\xe9'\n".encode("latin-1"))
    (w / "calls").write_text("")
    keep = {p: digest(p) for p in (w / "studies" / "study", foreign)}
    return w, keep


def tiny(*extra):
    return ["--data", "wine", "--model", "linear", "--epochs", "1", *extra]


# (case, argv with {w} for the world's folder, expected exit status, fragment of the message)
# fmt: off
CASES = [
    # SQLite: corrupt, foreign, truncated stores
    ("show corrupt", ["show", "{w}/studies/corrupt"], 2, "not an SQLite database"),
    ("export corrupt", ["export", "{w}/studies/corrupt"], 2, "not an SQLite database"),
    ("report corrupt", ["report", "{w}/studies/corrupt"], 2, "not an SQLite database"),
    ("sweep into corrupt", ["sweep", *tiny("--out", "{w}/studies/corrupt")], 2, "not an SQLite"),
    ("show foreign", ["show", "{w}/studies/foreign"], 2, "not a wdlab study store (notes)"),
    ("report foreign", ["report", "{w}/studies/foreign", "--out", "{w}/r1"], 2, "not a wdlab"),
    ("export foreign", ["export", "{w}/studies/foreign", "--out", "{w}/e1"], 2, "not a wdlab"),
    ("sweep into foreign", ["sweep", *tiny("--out", "{w}/studies/foreign")], 2, "not a wdlab"),
    ("show truncated", ["show", "{w}/truncated"], 2, "study store"),
    ("ls marks the bad ones", ["ls", "{w}/studies"], 0, ""),
    ("show nothing", ["show", "{w}/nothing"], 2, "no study in"),
    # the file system
    ("demo --out file", ["demo", "--epochs", "2", "--dim", "8", "--out", "{w}/afile"], 2,
     "is a file"),
    ("run --out file", ["run", *tiny("--out", "{w}/afile")], 2, "is a file"),
    ("sweep --out file", ["sweep", *tiny("--out", "{w}/afile")], 2, "is a file"),
    ("report --out file", ["report", "{w}/studies/study", "--out", "{w}/afile"], 2, "is a file"),
    ("export --out file", ["export", "{w}/studies/study", "--out", "{w}/afile"], 2, "is a file"),
    ("verify --out file", ["verify", "--out", "{w}/afile"], 2, "is a file"),
    ("toml is a folder", ["run", "{w}/folder.toml", "--out", "{w}/o"], 2, "is a folder"),
    ("data is a folder", ["run", "--data", "{w}/folder.csv", "--target", "y", "--out", "{w}/o"],
     2, "is a folder"),
    ("report of nothing", ["report", "{w}/afile"], 2, "nothing to report"),
    # a study's own file, and an empty path, which read as the current folder (new-user trial)
    ("report of a study.db", ["report", "{w}/studies/study/study.db"], 2,
     "study.db (a file, not a folder): give its folder"),
    ("report of ''", ["report", ""], 2, "argument path: expected a folder, got an empty path"),
    ("show of ''", ["show", ""], 2, "argument study: expected a folder, got an empty path"),
    ("export of ''", ["export", ""], 2, "argument study: expected a folder, got an empty path"),
    ("ls of ''", ["ls", ""], 2, "argument root: expected a folder, got an empty path"),
    # user model factories
    ("factory raises", ["run", *tiny("--model", "badfactories:raises", "--out", "{w}/o")], 2,
     "boom from the factory"),
    ("factory non-module", ["run", *tiny("--model", "badfactories:not_module", "--out", "{w}/o")],
     2, "not a torch.nn.Module"),
    ("factory sys:exit", ["run", *tiny("--model", "sys:exit", "--out", "{w}/o")], 2,
     "SystemExit"),
    ("factory TypeError", ["run", *tiny("--model", "badfactories:typeerror", "--out", "{w}/o")],
     2, "bad argument inside the factory"),
    ("factory missing", ["run", *tiny("--model", "nomodule:make", "--out", "{w}/o")], 2,
     "cannot load model factory"),
    # memory
    ("epochs 1e12", ["run", "--data", "wine", "--epochs", "1000000000000", "--out", "{w}/o"], 2,
     "more than max_memory_mb=2048 (--max-memory)"),
    ("demo dim 300000", ["demo", "--dim", "300000", "--out", "{w}/o"], 2, "needs about"),
    ("demo epochs 1e12", ["demo", "--epochs", "1000000000000", "--out", "{w}/o"], 2,
     "needs about"),
    ("in-dim 1e11", ["inspect", "--in-dim", "1e11"], 2, "expected a positive integer"),
    ("in-dim 10^11", ["inspect", "--in-dim", "100000000000"], 2, "out of memory"),
    ("tiny budget", ["sweep", *tiny("--max-memory", "0.001", "--out", "{w}/o")], 2,
     "more than max_memory_mb=0.001 (--max-memory)"),
    # devices
    ("run device bogus", ["run", *tiny("--device", "bogus", "--out", "{w}/o")], 2,
     "unknown device 'bogus'"),
    ("sweep device bogus", ["sweep", *tiny("--device", "bogus", "--out", "{w}/o")], 2,
     "unknown device 'bogus'"),
    ("demo device bogus", ["demo", "--device", "bogus", "--out", "{w}/o"], 2, "unknown device"),
    # overflow
    ("run wd 1e308", ["run", *tiny("--wd", "1e308", "--out", "{w}/o")], 2, "overflows float32"),
    ("sweep lr 1e308", ["sweep", *tiny("--lr", "1e308", "--out", "{w}/o")], 2, "overflows"),
    ("demo wd 1e308", ["demo", "--weight-decay", "1e308", "--out", "{w}/o"], 2, "overflows"),
    ("toml wd 1e308", ["run", "{w}/wd.toml", "--out", "{w}/o"], 2, "overflows float32"),
    # CSV contents
    ("header only", ["run", "--data", "{w}/header.csv", "--target", "y", "--out", "{w}/o"], 2,
     "has a header but no rows"),
    ("duplicate target", ["run", "--data", "{w}/duptarget.csv", "--target", "y", "--out",
     "{w}/o"], 2, "2 columns named 'y'"),
    ("one-hot explosion", ["run", "--data", "{w}/ids.csv", "--target", "y", "--out", "{w}/o"],
     2, "'id' has 30,000 distinct values"),
    ("single value", ["run", "--data", "{w}/single.csv", "--target", "y", "--out", "{w}/o"], 2,
     "the target has a single value (1)"),
    ("rare class", ["run", "--data", "{w}/rare.csv", "--target", "y", "--out", "{w}/o"], 2,
     "class 2 has 1 rows"),
    ("infinite values", ["run", "--data", "{w}/inf.csv", "--target", "y", "--impute", "mean",
     "--out", "{w}/o"], 2, "infinite values in 3 rows, columns: b (3)"),
    ("missing values", ["run", "--data", "{w}/nan.csv", "--target", "y", "--out", "{w}/o"], 2,
     "missing values in 2 rows, columns: b (2); pass --impute"),
    # optimizer options
    ("option type", ["run", "{w}/fast.toml", "--out", "{w}/o"], 2,
     "train.options.momentum: expected a number"),
    ("option misspelt", ["run", "{w}/momentun.toml", "--out", "{w}/o"], 2,
     "SGD has no option 'momentun'; valid: momentum, dampening"),
    ("option value", ["run", "{w}/negmomentum.toml", "--out", "{w}/o"], 2, "SGD refuses"),
    ("option combination", ["run", "{w}/nesterov.toml", "--out", "{w}/o"], 2, "Nesterov"),
    # TOML files
    ("toml invalid", ["run", "{w}/invalid.toml", "--out", "{w}/o"], 2, "is not valid TOML"),
    ("toml latin-1", ["run", "{w}/latin1.toml", "--out", "{w}/o"], 2, "not UTF-8"),
    ("toml unknown key", ["run", "{w}/unknown.toml", "--out", "{w}/o"], 2, "unknown key"),
    ("toml seed", ["run", "{w}/seed.toml", "--out", "{w}/o"], 2,
     "data.seed (--data-seed): expected an integer"),
    ("toml splits", ["run", "{w}/splits.toml", "--out", "{w}/o"], 2, "must leave >= 10%"),
    # the grid
    ("log range 1e8", ["sweep", *tiny("--wd", "1e-6..1:100000000", "--out", "{w}/o")], 2,
     "at most 1,000,000 values"),
    ("grid 20001", ["sweep", *tiny("--wd", "1e-6..1:20000", "--out", "{w}/o")], 2,
     "the grid has 20,001 configurations, more than the limit of 10,000; pass --max-configs"),
    ("grid over a lowered limit", ["run", *tiny("--wd", "1e-3..1e-1:4", "--max-configs", "4",
     "--out", "{w}/o")], 2, "more than the limit of 4"),
    ("seeds 1e8", ["run", *tiny("--seeds", "100000000", "--out", "{w}/o")], 2,
     "at most 1,000,000"),
    # the study must stay as it is
    ("another config into the study", ["sweep", *tiny("--out", "{w}/studies/study")], 2,
     "holds another study"),
    ("export bad format", ["export", "{w}/studies/study", "--format", "xlsx"], 2,
     "invalid choice"),
    # and some that succeed
    ("grid within a raised limit", ["run", *tiny("--wd", "1e-3..1e-1:4", "--max-configs", "5",
     "--out", "{w}/ok1", "--json")], 0, ""),
    ("duplicate feature", ["run", "--data", "{w}/dupfeature.csv", "--target", "y", "--model",
     "linear", "--epochs", "1", "--out", "{w}/ok2", "--json"], 0, ""),
]
# fmt: on
if torch.cuda.is_available():
    CASES.append(("cuda 99", ["run", *tiny("--device", "cuda:99")], 2, "is not available"))
else:
    CASES.append(("cuda on a CPU torch", ["run", *tiny("--device", "cuda")], 2, "CPU-only"))

CHILD = """
import contextlib, io, json, sys, traceback
from wdlab.cli import main
out = {}
for name, argv in json.loads(sys.stdin.read()).items():
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
        except BaseException:
            rc, err = "escaped", io.StringIO(traceback.format_exc())
    out[name] = {"rc": rc, "err": err.getvalue(), "out": std.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(world):
    """Every case of CASES through ``wdlab.cli.main``, in one subprocess."""
    w, _ = world
    cases = {name: [a.replace("{w}", str(w)) for a in argv] for name, argv, _, _ in CASES}
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(w / "factories"), ENV.get("PYTHONPATH", "")]),
               WDLAB_TEST_CALLS=str(w / "calls"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=w,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_outcome(rc, err, expected_rc=None, fragment=""):
    """Success, or exit 2 with exactly one error line (after any warnings); no traceback, and
    no error that the CLI did not anticipate."""
    assert "Traceback" not in err, err
    assert rc in (0, 2) if expected_rc is None else rc == expected_rc, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith("wdlab: warning:")]
    if rc == 2:
        assert len(errors) == 1, err
        assert ": error: " in errors[0] and "unexpected" not in errors[0], errors[0]
        assert fragment in errors[0], (fragment, errors[0])
        assert "np.int64" not in errors[0] and "np.float64" not in errors[0]
    else:
        assert errors == [], err
    return errors[0] if errors else ""


@pytest.mark.parametrize("name, expected_rc, fragment", [(c[0], c[2], c[3]) for c in CASES])
def test_case(results, name, expected_rc, fragment):
    r = results[name]
    line = check_outcome(r["rc"], r["err"], expected_rc, fragment)
    if name == "infinite values":
        assert "impute them first" not in line and "replace or drop them" in line
    if name == "duplicate feature":
        assert "duplicate column names: 'a' (2 times)" in r["err"]
    if name == "ls marks the bad ones":
        shown = r["out"]
        assert shown.count("unreadable:") == 2 and "not a wdlab study store" in shown
        assert "wine" in shown  # the good study is listed with its data


def test_a_factory_that_raises_typeerror_runs_once(results, world):
    assert results["factory TypeError"]["rc"] == 2
    assert (world[0] / "calls").read_text() == "x"  # called once: no second call hiding it


def test_the_study_and_the_foreign_file_are_unchanged(results, world):
    _, keep = world
    assert results  # every case has run
    assert {p: digest(p) for p in keep} == keep


def test_verify_refuses_a_bad_out_before_running_its_checks(tmp_path, capsys, monkeypatch):
    import wdlab.verify

    ran = []
    monkeypatch.setattr(wdlab.verify, "run_checks", lambda **kw: ran.append(1) or [])
    (tmp_path / "f").write_text("")
    assert main(["verify", "--out", str(tmp_path / "f")]) == 2
    assert ran == [] and "is a file" in capsys.readouterr().err


def test_a_bad_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import wdlab.executors

    trained = []
    monkeypatch.setattr(wdlab.executors, "train", lambda *a, **k: trained.append(1))
    (tmp_path / "f").write_text("")
    for cmd in ("run", "sweep"):
        assert main([cmd, *tiny("--out", str(tmp_path / "f"))]) == 2
        assert "is a file" in capsys.readouterr().err
    assert trained == []


def test_inspect_refuses_a_hidden_size_of_zero(capsys):
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse exits, status 2
        main(["inspect", "mlp", "--hidden", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "positive integers" in err[0]


# ---------------------------------------------------------------------------------------------
# Processes of their own: Ctrl-C while torch is imported, a reader that left

INTERRUPT_AT_IMPORT = """
import importlib.abc, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt  # as if Ctrl-C came while torch was being imported
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["wdlab", "ls", "/nonexistent"]
from wdlab.cli import main  # what the console script does
raise SystemExit(main())
"""


def test_ctrl_c_during_the_start_up_imports_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_AT_IMPORT], capture_output=True, text=True, env=ENV
    )
    # torch is imported once the command is parsed (building the parser imports none), so the
    # line names the command
    assert proc.returncode == 130 and proc.stderr.strip() == "wdlab ls: interrupted", proc.stderr


def test_a_reader_that_left_is_not_an_error(world):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "wdlab.cli", "ls", str(world[0] / "studies"), "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# ---------------------------------------------------------------------------------------------
# Property-based: generated CSV contents, TOML values and flag values

PROPERTY = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_main(capsys, argv):
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    return rc, capsys.readouterr().err


junk_cells = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(["", "a", "NA", "inf", "-inf", "1e400", '"x,y"', "é", "True"]),
)
# What can be wrong with a table; most drawn tables have none or one of these, so generated
# cases reach the split and training too, not only the reader.
MUTATIONS = ["nan", "inf", "text", "junk", "duplicate", "no name", "ragged", "one class",
             "no rows", "float target", "text target", "few rows"]  # fmt: skip


@st.composite
def csv_tables(draw):
    """CSV text (a valid table of a feature and a 0/1 target, then up to two mutations) and
    the target to ask for."""
    n = draw(st.sampled_from([30, 12]))
    finite = st.floats(-10, 10, allow_nan=False).map(lambda v: f"{v:.3g}")
    cols = {
        "a": draw(st.lists(finite, min_size=n, max_size=n)),
        "y": [str(i % 2) for i in range(n)],
    }
    names = ["a", "y"]
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), max_size=2))
    for m in mutations:
        i = draw(st.integers(0, n - 1))
        if m in ("nan", "inf"):
            cols["a"][i] = "" if m == "nan" else draw(st.sampled_from(["inf", "-inf"]))
        elif m == "text":
            cols["c"] = [draw(st.sampled_from(["red", "green", "blue"])) for _ in range(n)]
            names.append("c")
        elif m == "junk":
            cols["a"] = draw(st.lists(junk_cells, min_size=n, max_size=n))
        elif m == "duplicate":
            cols["a2"] = list(cols["a"])
            names.append(draw(st.sampled_from(["a", "y"])))
        elif m == "no name":
            names[0] = ""
        elif m == "one class":
            cols["y"] = ["1"] * n
        elif m == "float target":
            cols["y"] = draw(st.lists(finite, min_size=n, max_size=n))
        elif m == "text target":
            cols["y"] = [("cat", "dog")[j % 2] for j in range(n)]
    rows = [",".join(r) for r in zip(*cols.values(), strict=True)]
    if "ragged" in mutations:
        rows[draw(st.integers(0, n - 1))] += ",extra"
    if "few rows" in mutations:
        rows = rows[: draw(st.integers(1, 6))]
    if "no rows" in mutations:
        rows = []
    text = "\n".join([",".join(names), *rows]) + "\n"
    target = "y" if draw(st.integers(0, 5)) else draw(st.sampled_from(["a", "", "missing"]))
    return text, target


@PROPERTY
@given(table=csv_tables(), impute=st.sampled_from([[], ["--impute", "mean"]]))
def test_generated_csv_contents(tmp_path, capsys, table, impute):
    text, target = table
    path = tmp_path / "gen.csv"
    path.write_text(text)
    argv = ["run", "--data", str(path), "--target", target, *impute, "--model", "linear",
            "--epochs", "1", "--out", str(tmp_path / "o"), "--json"]  # fmt: skip
    check_outcome(*run_main(capsys, argv))


toml_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**40, -(2**62), 10**18]),
    st.floats(allow_nan=False, width=64).filter(lambda v: not math.isinf(v)),
    st.sampled_from(["1e308", "nan", "inf", "1e-3..1e-1:3", "3", "", "0,1", "fast"]),
    st.text(string.ascii_letters + ":.,-_ ", max_size=8),
    st.booleans(),
    st.lists(st.one_of(st.integers(-2, 70), st.floats(-1, 2), st.text(max_size=3)), max_size=3),
    st.fixed_dictionaries({}, optional={"momentum": st.floats(-1, 2) | st.text(max_size=3),
                                        "n": st.integers(-1, 60), "zz": st.booleans()}),
)  # fmt: skip
KEYS = {
    "data": ["source", "seed", "target", "features", "impute", "task", "val_size", "test_size",
             "options", "train_size", "nonsense"],
    "model": ["kind", "hidden", "activation", "layernorm", "dropout", "batchnorm", "bogus"],
    "train": ["optimizer", "lr", "options", "schedule", "epochs", "batch_size", "eval_every",
              "seeds", "device", "precision", "select", "early_stopping", "diagnostics"],
    "decay": ["modes", "weight_decay", "rule", "exclude", "include"],
}  # fmt: skip


def toml_literal(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else "inf")
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_literal(x)}" for k, x in v.items()) + " }"
    return str(v)


@st.composite
def toml_files(draw):
    out = []
    for section in draw(st.lists(st.sampled_from([*KEYS, "extra"]), unique=True, max_size=3)):
        out.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(KEYS.get(section, ["k"])), unique=True,
                                 max_size=3)):  # fmt: skip
            out.append(f"{key} = {toml_literal(draw(toml_values))}")
    return "\n".join(out) + "\n"


@PROPERTY
@given(text=toml_files())
def test_generated_toml_values(tmp_path, capsys, text):
    path = tmp_path / "gen.toml"
    path.write_text(text)
    argv = ["run", str(path), "--data", "wine", "--model", "linear", "--epochs", "1",
            "--out", str(tmp_path / "o"), "--json"]  # fmt: skip
    check_outcome(*run_main(capsys, argv))


FLAGS = ["--data", "--target", "--impute", "--task", "--model", "--hidden", "--activation",
         "--optimizer", "--lr", "--mode", "--wd", "--seeds", "--epochs", "--batch-size",
         "--eval-every", "--schedule", "--rule", "--device", "--precision", "--dropout",
         "--select", "--diagnostics", "--train-size", "--max-configs", "--data-seed"]  # fmt: skip
flag_values = st.one_of(
    st.sampled_from(["0", "-1", "1", "3", "1e308", "1e-3..1e-1:3", "nan", "inf", "wine", "d2l",
                     "x.csv", "mlp", "linear", "adam", "cosine", "step:2:0.5", "cpu", "bogus",
                     "bf16", "1,2", "0.5", "loss", "rotation", "99999999999999999999", ""]),
    st.text(string.printable, max_size=6),
)  # fmt: skip


@PROPERTY
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), flag_values), max_size=4))
def test_generated_flag_values(tmp_path, capsys, flags):
    argv = ["run", "--data", "wine", "--model", "linear", "--epochs", "1"]
    for flag, value in flags:
        argv += [flag, value]
    if "--epochs" in dict(flags):  # a generated epoch count stays small when it is valid
        argv += ["--eval-every", "1"]
    argv += ["--out", str(tmp_path / "o"), "--json"]
    check_outcome(*run_main(capsys, argv))
