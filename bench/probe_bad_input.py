"""Probe: bad and hostile input, and scripted faults, through the real command line and API.

    .venv/bin/python bench/probe_bad_input.py [--wdlab PATH/TO/.venv/bin/wdlab] [--json]
        [--jobs 2] [--timeout 60] [--only REGEX] [--no-faults] [--keep]
        [--before BEFORE.json] [--from AFTER.json]

A measurement, like the benches: it prints a table and totals and asserts nothing. Point
``--wdlab`` at another checkout's console script to measure that checkout (its API cases run in
the Python of that script); ``--json`` prints one JSON document instead, and ``--before`` takes
such a document from an earlier run and prints each count as before → after (``--from``
prints a saved document instead of running).

Each case is one bad or hostile input (a CLI command, or a few lines of the Python API run in a
child process of that Python) or one fault scenario (signals, concurrent writers, a stopped
holder), in a temporary folder of its own; the fixtures it reads (tables, TOML files, a finished
study, user code) are made once per probe with the checkout under test. Every case states its
expected class, and its outcome is classified automatically:

- ``one-line``: exit status 2 (130 for Ctrl-C), exactly one line on stderr besides
  ``wdlab: warning:`` lines, naming the problem (in Python: a ``ValueError`` of one line);
- ``ok``: an expected success (its output checked where the case says what it must hold);
- ``traceback``: a traceback on stderr (in Python: an exception other than ``ValueError``);
- ``multi-line``: an error of more than one line;
- ``wrong-exit``: an exit status other than the expected one (0 for bad input, a signal…);
- ``hang``: still running at the per-case timeout (killed, with its process group);
- ``unexpected``: a message containing "(unexpected";
- ``changed``: a stored or foreign file altered or removed (hashed before and after);
- ``partial``: a study answer printed with exit 0 while the study is not whole, unmarked;
- ``wrong-line``: one line, but not naming the problem (an unknown flag of an older version,
  a message that does not name the file);
- ``wrong-output``: exit 0, but the output the case checks is wrong (JSON polluted by user
  code, a report not written or with a raw ``<script>``, an infinite result, runs trained twice
  or numbers that differ from an uninterrupted run);
- ``skipped``: the case could not be set up here (a fault whose state never appeared, root
  without ``setpriv`` for the read-only store); counted apart.

Categories: the "Why" items 1-10 of issue 25 and its "What held up", and the bad input of issues
20 and 24. Not scripted: a full disk, Ray workers killed, Chromium rendering (they need a mount,
a Ray cluster or a browser).

How it runs: the fault scenarios first, one at a time (they are about timing between
processes), then the other cases ``--jobs`` at a time. API cases run after :data:`PRELUDE` (60
rows ``X``, ``Y``, ``pairs()``, a seeded ``make``, and ``sweep()``: ``wdlab.sweep`` with
``epochs=1, weight_decay=[0.01]``), many to a child process; a case still running after the
timeout is killed and the rest go on in a fresh one. Every process runs with its address space
capped (``--memory``, 8 GiB, with ``prlimit`` where there is one), so a case that reads without
end fails alone instead of taking the machine's memory. Run as root, the read-only store cases
drop the capability to override file permissions (``setpriv``), so the store is read-only to
them as it is to a user. Commands are printed with ``{w}`` for the fixtures' folder and ``{t}``
for the case's own (user code on ``PYTHONPATH={w}/code``); ``--keep`` keeps both.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ["one-line", "ok", "traceback", "multi-line", "wrong-exit", "hang", "unexpected",
           "changed", "partial", "wrong-line", "wrong-output", "skipped"]  # fmt: skip
CATEGORIES = {
    "1": "a study is whole or says so",
    "2": "no silent wrong numbers from data",
    "3": "weight decay silently ignored",
    "4": "names are text",
    "5": "foreign files untouched",
    "6": "no hang",
    "7": "Python API errors in one line",
    "8": "user code",
    "9": "arithmetic and bounds",
    "10": "a named problem, not 'unexpected'",
    "held": "what held up (must keep holding)",
    "i20": "issue 20's bad input",
    "i24": "issue 24's bad input",
}
HOSTILE = "<script>alert(1)</script> $x^2_y$"  # a study name: HTML and mathtext
USAGE = re.compile(r"unrecognized arguments|invalid choice")
N = 60  # rows of the fixture tables

# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Run:
    """What one process did."""

    rc: int | None
    out: str
    err: str
    hung: bool
    seconds: float


@dataclass
class Case:
    """One bad input (``argv`` for the CLI, ``code`` for the API) or one fault (``fault``).

    Paths in ``argv`` and ``keep`` use ``{w}`` (the fixtures) and ``{t}`` (the case's folder);
    API code reads them from ``T`` and ``W``. ``names`` is a regex the one line must match;
    ``check(t, run)`` says what is wrong with an expected success (a reason, or a
    ``(class, reason)``), None when right."""

    cat: str
    name: str
    argv: list[str] | None = None
    code: str | None = None
    fault: Callable[[Ctx, Path], tuple[str, str]] | None = None
    expect: str = "one-line"
    rc: int = 2
    names: str = ""
    usage: bool = False
    setup: Callable[[Path, Path], Callable[[], None] | None] | None = None
    keep: tuple[str, ...] = ()
    check: Callable[[Path, Run], str | tuple[str, str] | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    read_only: bool = False
    closed_stdout: bool = False
    alt: tuple[str, ...] = ()

    def command(self) -> str:
        """How to reproduce it (``{w}``/``{t}`` as in the case)."""
        if self.argv is not None:
            env = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
            return env + "wdlab " + shlex.join(self.argv)
        if self.code is not None:
            return "python (after PRELUDE): " + self.code.strip()
        return f"fault scenario: {self.fault.__name__}"  # type: ignore[union-attr]


def cli(cat, name, argv, expect="one-line", **kw) -> Case:
    """A command-line case."""
    return Case(cat, name, argv=list(argv), expect=expect, **kw)


def api(cat, name, code, expect="one-line", **kw) -> Case:
    """A Python API case (``code`` runs after :data:`PRELUDE` in a child process)."""
    return Case(cat, name, code=code, expect=expect, **kw)


TINY = ["--data", "wine", "--model", "linear", "--epochs", "2", "--eval-every", "1"]
SW = [*TINY, "--optimizer", "adam", "--lr", "0.01", "--mode", "decoupled", "--wd", "1e-3,1e-2"]
LONG = ["--data", "breast_cancer", "--model", "mlp", "--hidden", "32", "--optimizer", "sgd",
        "--lr", "0.05", "--mode", "coupled", "--wd", "1e-4..1e-1:5",
        "--eval-every", "100"]  # fmt: skip
LONG_RUNS = 6  # five weight decays and the wd = 0 reference


def run_(*extra):
    """``run`` on the tiny study into the case's folder."""
    return ["run", *TINY, "--out", "{t}/o", *extra]


def sweep_(*extra, out="{t}/s"):
    """``sweep`` of the tiny study (3 runs) into the case's folder."""
    return ["sweep", *SW, "--out", out, *extra]


def csv_run(name, *extra):
    """``run`` on a fixture table (target ``y``)."""
    return ["run", "--data", f"{{w}}/{name}", "--target", "y", "--model", "linear", "--epochs",
            "2", "--eval-every", "1", "--out", "{t}/o", *extra]  # fmt: skip


def toml_run(name, *extra):
    """``run`` of a fixture TOML file."""
    return ["run", f"{{w}}/toml/{name}", "--out", "{t}/o", *extra]


# setups: each prepares the case's folder t from the fixtures w (and may return a closer)


def copy_study(dst="s", src="study"):
    def setup(t, w):
        shutil.copytree(w / src, t / dst)

    return setup


def tamper(column, value):
    def setup(t, w):
        shutil.copytree(w / "study", t / "s")
        with contextlib.closing(sqlite3.connect(t / "s" / "study.db")) as db, db:
            db.execute(f"UPDATE runs SET {column} = ? WHERE id = 2", (value,))

    return setup


def leave_running(t, w):
    """A finished study with one run marked running, as while another process trains it."""
    shutil.copytree(w / "study", t / "s")
    with contextlib.closing(sqlite3.connect(t / "s" / "study.db")) as db, db:
        db.execute("UPDATE runs SET status = 'running' WHERE id = 3")


def foreign_wal(t, w):
    """Another program's SQLite file in WAL mode, its connection open (so -wal and -shm stay)
    while the case runs: the closer ends that program."""
    (t / "theirs").mkdir()
    owner = sqlite3.connect(t / "theirs" / "study.db", check_same_thread=False)
    owner.execute("PRAGMA journal_mode=WAL")
    owner.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    owner.execute("INSERT INTO notes (text) VALUES ('mine')")
    owner.commit()
    return owner.close


def foreign_file(rel, data=b"<p>my own notes</p>", study=False):
    def setup(t, w):
        if study:
            shutil.copytree(w / "study", t / "s")
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    return setup


def fifo(rel):
    def setup(t, w):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(t / rel)

    return setup


def symlink(rel, target):
    def setup(t, w):
        os.symlink(target.replace("{t}", str(t)).replace("{w}", str(w)), t / rel)

    return setup


def file_at(rel, data):
    def setup(t, w):
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def copy_fixture(src, dst):
    def setup(t, w):
        shutil.copy(w / src, t / dst)

    return setup


def read_only_study(t, w):
    """A copy of the finished study, its files and folder read-only (the case runs without the
    capabilities that let root write there anyway)."""
    shutil.copytree(w / "study", t / "s")
    for p in (t / "s").iterdir():
        p.chmod(0o444)
    (t / "s").chmod(0o555)


def chain(*setups):
    def setup(t, w):
        closers = [s(t, w) for s in setups]
        return lambda: [c() for c in closers if c]

    return setup


# checks of an expected success


def json_doc(t, run):
    """stdout is exactly one JSON document."""
    try:
        json.loads(run.out)
    except ValueError:
        return f"stdout is not one JSON document ({len(run.out):,} characters: {run.out[:60]!r}…)"
    return None


def report(rel, forbid=(), must=()):
    """A report written at ``rel``; no raw ``forbid`` in it; each of ``must`` in it."""

    def check(t, run):
        p = t / rel
        if not p.is_file():
            return f"no {rel} written"
        html = p.read_text(errors="replace")
        for f in forbid:
            if f in html:
                return f"{rel} holds {f!r} as raw HTML"
        for m in must:
            if m.lower() not in html.lower():
                return ("partial", f"{rel} does not say {m!r}") if m == "partial" else f"no {m!r}"
        return None

    return check


def marked_partial(t, run):
    """``show --json`` of a study that is not whole says so."""
    bad = json_doc(t, run)
    if bad:
        return bad
    doc = json.loads(run.out)
    if doc.get("partial") is not True:
        return "partial", "the JSON document of a study that is not whole lacks partial: true"
    return None


def says_partial(t, run):
    if "partial" not in run.out.lower():
        return "partial", "the table of a study that is not whole is not marked partial"
    return None


def nothing_escaped(t, run):
    """Nothing written outside the study folder by a name holding ``../``."""
    stray = sorted(p.name for p in t.iterdir() if p.name != "s")
    for folder in (t.parent, t.parent.parent):
        stray += [str(p) for p in folder.glob("escaped*")]
    return f"wrote outside the study folder: {stray}" if stray else None


def transfer_exact(t, run):
    if "inf" in run.out or "1e+100" not in run.out:
        return f"the answer is not 1e+100: {run.out.splitlines()[0] if run.out else ''!r}"
    return None


def transfer_json_exact(t, run):
    bad = json_doc(t, run)
    if bad:
        return bad
    text = run.out
    if "Infinity" in text or "1e+100" not in text:
        return "the JSON result is not 1e+100"
    return None


def both(*checks):
    def check(t, run):
        for c in checks:
            bad = c(t, run)
            if bad:
                return bad
        return None

    return check


# --------------------------------------------------------------------------------------------
# Fixtures: made once per probe, with the checkout under test

FACTORIES = '''
"""Model factories for the probe: each misbehaves in one way."""
import os, sys, time
import torch
from torch import nn


class Boom(BaseException):
    """Not an Exception: what a user's code may raise."""


def ok(in_dim, out_dim):
    return nn.Linear(in_dim, out_dim)


def raises(in_dim, out_dim):
    raise RuntimeError("boom from the factory")


def not_module(in_dim, out_dim):
    return "a string"


def returns_none(in_dim, out_dim):
    return None


def exits(in_dim, out_dim):
    sys.exit(3)


def base_exception(in_dim, out_dim):
    raise Boom("the factory gave up")


def sleeps(in_dim, out_dim):
    time.sleep(10**6)
    return nn.Linear(in_dim, out_dim)


def meta(in_dim, out_dim):
    with torch.device("meta"):
        return nn.Linear(in_dim, out_dim)


class NoSuper(nn.Module):
    def __init__(self, in_dim, out_dim):
        self.lin = nn.Linear(in_dim, out_dim)


def no_super(in_dim, out_dim):
    return NoSuper(in_dim, out_dim)


def ignores_seed(in_dim, out_dim):
    torch.manual_seed(0)  # every seed gets the same weights
    return nn.Linear(in_dim, out_dim)


def wrong_width(in_dim, out_dim):
    return nn.Linear(in_dim + 3, out_dim)


class Chatty(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        print("chatty forward says hello")
        os.write(1, b"chatty forward writes to fd 1\\n")
        return self.lin(x)


def chatty(in_dim, out_dim):
    print("the factory prints too")
    return Chatty(in_dim, out_dim)


class Explodes(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        if torch.is_grad_enabled():
            raise Boom("the user's forward gave up")
        return self.lin(x)


def explodes(in_dim, out_dim):
    return Explodes(in_dim, out_dim)


class Interrupted(Explodes):
    def forward(self, x):
        if torch.is_grad_enabled():
            raise KeyboardInterrupt
        return self.lin(x)


def interrupted(in_dim, out_dim):
    return Interrupted(in_dim, out_dim)
'''

TOMLS = {
    "invalid.toml": "[train\n",
    "unknown.toml": "[train]\nepochz = 3\n",
    "seed.toml": "[data]\nseed = 1099511627776\n",
    "splits.toml": '[data]\nsource = "wine"\nval_size = 0.5\ntest_size = 0.5\n',
    "wd.toml": "[decay]\nweight_decay = 1e308\n",
    "fast.toml": '[train]\noptimizer = "sgd"\noptions = { momentum = "fast" }\n',
    "momentun.toml": '[train]\noptimizer = "sgd"\noptions = { momentun = 0.9 }\n',
    "negmomentum.toml": "[train]\noptions = { momentum = -1.0 }\n",
    "nesterov.toml": "[train]\noptions = { nesterov = true }\n",
    "capturable.toml": '[train]\noptimizer = "adam"\noptions = { capturable = true }\n',
    "deep.toml": "x = " + "[" * 3000 + "]" * 3000 + "\n",
    "noise_nan.toml": '[data]\nsource = "teacher"\noptions = { noise = nan }\n',
    "sigma_inf.toml": '[data]\nsource = "teacher"\noptions = { sigma_w = inf }\n',
    "label_nan.toml": '[data]\nsource = "teacher-classification"\n'
    "options = { label_noise = nan }\n",
    "dim_inf.toml": '[data]\nsource = "seed-noise"\noptions = { dim = inf }\n',
    "rprop.toml": '[train]\noptimizer = "rprop"\n[decay]\nmodes = ["builtin"]\n'
    "weight_decay = [0.01, 1.0]\n",
    "empty.toml": "",
}


def _rng_cells(seed, scale=1.0):
    import random

    r = random.Random(seed)
    return [f"{r.gauss(0, 1) * scale:.3f}" for _ in range(N)]


def _table(path, columns, header=None):
    names = list(columns) if header is None else header
    rows = zip(*columns.values(), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows))


def make_tables(w: Path) -> None:
    """The CSV and Parquet fixtures: a 60-row table of features a, b and a 0/1 target y, then
    each with one thing wrong."""
    y = ["0"] * (N // 2) + ["1"] * (N // 2)
    a, b = _rng_cells(0), _rng_cells(1)

    def with_a(name, changes, bcol=None):
        cells = list(a)
        for i, v in changes.items():
            cells[i] = v
        _table(w / name, {"a": cells, "b": bcol or b, "y": y})

    _table(w / "ok.csv", {"a": a, "b": b, "y": y})
    with_a("mixed.csv", {7: "abc"})
    with_a("nul.csv", {5: "1.5\x00"})
    with_a("twobad.csv", {3: "abc", 40: "?"})
    with_a("neg1e39.csv", {2: "-1e39"})
    with_a("over.csv", {4: "1e400"})
    with_a("longfield.csv", {5: "x" * 200_000})
    _table(w / "sep1e200.csv", {"a": [("-1e200", "1e200")[int(v)] for v in y], "b": b, "y": y})
    _table(w / "inf.csv", {"a": a, "b": ["inf"] * 3 + b[3:], "y": y})
    _table(w / "nan.csv", {"a": a, "b": [""] * 2 + b[2:], "y": y})
    (w / "header.csv").write_text("a,b,y\n")
    _table(w / "duptarget.csv", {"a": a, "y": y, "y2": y}, header=["a", "y", "y"])
    _table(w / "dupfeature.csv", {"a": a, "a2": a, "y": y}, header=["a", "a", "y"])
    _table(w / "single.csv", {"a": a, "b": b, "y": ["1"] * N})
    _table(w / "rare.csv", {"a": a, "b": b, "y": [*y[:-1], "2"]})
    _table(w / "longheader.csv", {"a": a, "y": y}, header=["a" * 200_000, "y"])
    _table(w / "hostile_cols.csv", {"a": a, "b": b, "y": y}, header=["$a^2_x$", "<i>b</i>", "y"])
    ids = [f"u{i:05d}" for i in range(30_000)]
    (w / "ids.csv").write_text(
        "id,v,y\n" + "".join(f"{u},{i % 7},{i % 2}\n" for i, u in enumerate(ids))
    )
    text = (w / "ok.csv").read_text()
    (w / "utf16.csv").write_bytes(text.encode("utf-16"))
    (w / "empty.csv").write_bytes(b"")
    (w / "binary.csv").write_bytes(bytes((i * 7919 + 13) % 256 for i in range(4096)))
    lines = text.splitlines()
    lines[9] += ",extra"
    (w / "ragged.csv").write_text("\n".join(lines) + "\n")
    try:
        import pandas as pd

        pd.DataFrame({"a": [[1.0, 2.0]] * N, "b": [float(v) for v in b], "y": [int(v) for v in y]}
                     ).to_parquet(w / "lists.parquet")  # fmt: skip
    except ImportError:  # no pandas/pyarrow in the probe's Python: that case is skipped
        pass


def make_world(ctx: Ctx) -> None:
    """Fixtures in ``ctx.w``: tables, TOML files, user code, stores, and a finished study."""
    w = ctx.w
    make_tables(w)
    (w / "toml").mkdir()
    for name, text in TOMLS.items():
        (w / "toml" / name).write_text(text)
    (w / "toml" / "latin1.toml").write_bytes("[data]\nsource = 'caf\xe9'\n".encode("latin-1"))
    (w / "toml" / "folder.toml").mkdir()
    (w / "code").mkdir()
    (w / "code" / "probefactories.py").write_text(FACTORIES)
    (w / "code" / "syntaxerr.py").write_text("def make(in_dim, out_dim)\n    return None\n")
    (w / "code" / "importboom.py").write_text('raise RuntimeError("boom at import")\n')
    (w / "folder.csv").mkdir()
    (w / "afile").write_text("not a folder")
    stores = w / "stores"
    (stores / "foreign").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(stores / "foreign" / "study.db")) as db, db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    (stores / "corrupt").mkdir()
    (stores / "corrupt" / "study.db").write_bytes(bytes((i * 31 + 7) % 256 for i in range(8192)))
    (w / "deepresults").mkdir()
    (w / "deepresults" / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    (w / "badresults").mkdir()
    (w / "badresults" / "results.json").write_text("{not json")
    (w / "listresults").mkdir()
    (w / "listresults" / "results.json").write_text("[]")
    (w / "futureresults").mkdir()
    (w / "futureresults" / "results.json").write_text(
        '{"schema": "wdlab.results", "version": 99, "kind": "run"}'
    )
    made = ctx.process(["sweep", *SW, "--out", str(w / "study")], w)
    if made.rc != 0:
        raise SystemExit(f"probe: the fixture study could not be made: {made.err[-2000:]}")
    made = ctx.process(["sweep", *SW, "--name", HOSTILE, "--out", str(w / "hostile")], w)
    if made.rc != 0:
        raise SystemExit(f"probe: the fixture study could not be made: {made.err[-2000:]}")
    data = (w / "study" / "study.db").read_bytes()
    (stores / "truncated").mkdir()
    (stores / "truncated" / "study.db").write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------------------------
# The case list


def cases_1() -> list[Case]:
    return [
        Case("1", "survivor after the holder of a batch is SIGKILLed", fault=fault_survivor,
             expect="ok", alt=("one-line",)),
        Case("1", "holder SIGSTOPped, WDLAB_LEASE_SECONDS=2: another sweep", fault=fault_stopped,
             expect="ok", alt=("one-line",)),
        cli("1", "show --json of a study with a run still running",
            ["show", "{t}/s", "--json"], "ok", setup=leave_running, check=marked_partial,
            keep=("{t}/s",)),
        cli("1", "show of a study with a run still running", ["show", "{t}/s"], "ok",
            setup=leave_running, check=says_partial, keep=("{t}/s",)),
        cli("1", "report of a study with a run still running",
            ["report", "{t}/s", "--out", "{t}/r"], "ok", setup=leave_running,
            check=report("r/report.html", must=("partial",)), keep=("{t}/s",)),
        cli("1", "WDLAB_LEASE_SECONDS=nan", sweep_(), env={"WDLAB_LEASE_SECONDS": "nan"},
            names="WDLAB_LEASE_SECONDS"),
        cli("1", "WDLAB_LEASE_SECONDS=0.01", sweep_(), env={"WDLAB_LEASE_SECONDS": "0.01"},
            names="WDLAB_LEASE_SECONDS"),
    ]  # fmt: skip


def cases_2() -> list[Case]:
    numeric = r"'a'|abc|row"
    return [
        cli("2", "an 'abc' in a numeric column", csv_run("mixed.csv"), names=numeric),
        cli("2", "an 'abc' in a numeric column (sweep)",
            ["sweep", "--data", "{w}/mixed.csv", "--target", "y", *SW[2:], "--out", "{t}/s"],
            names=numeric),
        cli("2", "a NUL byte in a numeric cell", csv_run("nul.csv"), names=r"'a'|row|NUL|\\x00"),
        cli("2", "two text cells in a numeric column", csv_run("twobad.csv"), names=numeric),
        cli("2", "the 'abc' column asked for as categorical",
            csv_run("mixed.csv", "--categorical", "a"), "ok"),
        cli("2", "a separating feature of +-1e200", csv_run("sep1e200.csv"),
            names=r"float32|range|1e\+?200"),
        cli("2", "a value of -1e39 (beyond float32)", csv_run("neg1e39.csv"),
            names=r"float32|range|1e\+?39"),
        cli("2", "a value of 1e400 (inf when parsed)", csv_run("over.csv"),
            names=r"float32|range|infinite|inf"),
        cli("2", "teacher noise = nan", toml_run("noise_nan.toml", "--epochs", "2"),
            names="noise"),
        cli("2", "teacher sigma_w = inf", toml_run("sigma_inf.toml", "--epochs", "2"),
            names="sigma_w"),
        cli("2", "teacher-classification label_noise = nan",
            toml_run("label_nan.toml", "--epochs", "2"), names="label_noise"),
        cli("2", "seed-noise dim = inf", toml_run("dim_inf.toml", "--epochs", "2"), names="dim"),
        api("2", "sweep: NaN in X", "Xn = X.clone(); Xn[45, 1] = math.nan\n"
            "sweep(data=pairs(Xn))", names=r"(?i)nan"),
        api("2", "sweep: inf in X", "Xn = X.clone(); Xn[3, 0] = math.inf\n"
            "sweep(data=pairs(Xn))", names=r"(?i)inf"),
        api("2", "sweep: NaN in a regression target",
            "yr = torch.randn(60); yr[3] = math.nan\n"
            "sweep(model=lambda: nn.Linear(4, 1), data=pairs(X, yr))",
            names=r"(?i)nan|target"),
        api("2", "sweep: float64 numpy inputs holding inf",
            "Xd = X.double().numpy().copy(); Xd[50, 2] = np.inf\n"
            "sweep(data=pairs(Xd, Y.numpy()))", names=r"(?i)inf"),
        api("2", "sweep: a Dataset holding NaN",
            "Xn = X.clone(); Xn[45, 1] = math.nan\n"
            "ds = wdlab.Dataset('d', 'multiclass', Xn[:40], Y[:40], Xn[50:], Y[50:], Xn[40:50],"
            " Y[40:50], 2)\nsweep(data=ds)", names=r"(?i)nan"),
        api("2", "from_splits: NaN in the validation inputs",
            "Xn = X.clone(); Xn[45, 1] = math.nan\nfrom_splits(pairs(Xn))", names=r"(?i)nan"),
        api("2", "from_splits: float64 1e300",
            "Xd = X.double(); Xd[51, 0] = 1e300\nfrom_splits(pairs(Xd, torch.randn(60)))",
            names=r"float32|range"),
        api("2", "from_arrays: NaN in X",
            "Xn = X.numpy().copy(); Xn[4, 1] = np.nan\nfrom_arrays(Xn, Y.numpy())",
            names=r"(?i)nan|missing"),
        api("2", "from_arrays: 1e200 in X",
            "Xd = X.double().numpy().copy(); Xd[4, 1] = 1e200\nfrom_arrays(Xd, Y.numpy())",
            names=r"float32|range"),
        api("2", "from_arrays: a separating feature of +-1e200",
            "Xd = np.where(Y.numpy()[:, None] == 1, 1e200, -1e200)\nfrom_arrays(Xd, Y.numpy())",
            names=r"float32|range"),
        api("2", "from_arrays: a separating feature of +-3e38 survives standardisation",
            "Xd = np.where(Y.numpy()[:, None] == 1, 3e38, -3e38).astype(np.float64)\n"
            "ds = from_arrays(Xd, Y.numpy())\n"
            "ok = torch.isfinite(ds.X_train).all() and torch.equal(ds.X_train[:, 0] > 0,"
            " ds.y_train > 0.5)\nCHECK = None if ok else 'standardised to non-separating values'",
            "ok"),
        api("2", "from_arrays: a test row that leaves float32 once standardised",
            "from wdlab.data import split_indices\n"
            "yy = np.arange(60) % 2\n_, _, test = split_indices(60, yy, 0.2, 0.2, 0)\n"
            "Xd = np.random.default_rng(0).normal(size=(60, 1)) * 1e-30\nXd[test, 0] = 3e38\n"
            "from_arrays(Xd, yy)", names=r"float32|range"),
        api("2", "load('teacher', noise=nan)", "load('teacher', noise=math.nan)", names="noise"),
        api("2", "load('teacher', sigma_w=inf)", "load('teacher', sigma_w=math.inf)",
            names="sigma_w"),
        api("2", "load('teacher-classification', label_noise=nan)",
            "load('teacher-classification', label_noise=math.nan)", names="label_noise"),
        api("2", "load('seed-noise', dim=inf)", "load('seed-noise', dim=math.inf)",
            names="dim"),
    ]  # fmt: skip


def cases_3() -> list[Case]:
    rprop = ["--optimizer", "rprop", "--mode", "builtin", "--wd", "0.01,1.0"]
    names = r"(?i)rprop|weight_decay|builtin"
    return [
        cli("3", "rprop with builtin decay (run)", ["run", *TINY, *rprop, "--out", "{t}/o"],
            names=names),
        cli("3", "rprop with builtin decay (sweep)", ["sweep", *TINY, *rprop, "--out", "{t}/s"],
            names=names),
        cli("3", "rprop with builtin decay (TOML)", toml_run("rprop.toml", *TINY), names=names),
        cli("3", "rprop with builtin decay (inspect)",
            ["inspect", "linear", "--in-dim", "4", "--optimizer", "rprop", "--mode", "builtin",
             "--wd", "0.1"], names=names),
        cli("3", "rprop with coupled decay (works)",
            ["run", *TINY, "--optimizer", "rprop", "--mode", "coupled", "--wd", "0.01",
             "--out", "{t}/o"], "ok"),
        api("3", "sweep(optimizer='rprop', modes='builtin')",
            "sweep(optimizer='rprop', modes='builtin', weight_decay=[0.01, 1.0])", names=names),
        api("3", "Decay('builtin').attach(Rprop)",
            "m = nn.Linear(4, 2)\nopt = torch.optim.Rprop(m.parameters())\n"
            "wdlab.Decay('builtin', weight_decay=0.1).attach(opt)", names=names),
    ]  # fmt: skip


def cases_4() -> list[Case]:
    raw = "<script>alert(1)</script>"
    return [
        cli("4", "a data file named prices_$US_vs_$EU.csv (sweep)",
            ["sweep", "--data", "{t}/prices_$US_vs_$EU.csv", "--target", "y", *SW[2:],
             "--out", "{t}/s"], "ok", setup=copy_fixture("ok.csv", "prices_$US_vs_$EU.csv"),
            check=report("s/report.html")),
        cli("4", "a data file named $x^2_y$.csv (run)",
            ["run", "--data", "{t}/$x^2_y$.csv", "--target", "y", *TINY[2:], "--out", "{t}/o"],
            "ok", setup=copy_fixture("ok.csv", "$x^2_y$.csv"), check=report("o/report.html")),
        cli("4", "a study named $\\alpha$_^{x}", sweep_("--name", "$\\alpha$_^{x}"), "ok",
            check=report("s/report.html")),
        cli("4", "a study named <script>", sweep_("--name", raw), "ok",
            check=report("s/report.html", forbid=(raw,))),
        cli("4", "a study folder named <b>$s$</b>", sweep_(out="{t}/<b>$s$</b>"), "ok",
            check=report("<b>$s$</b>/report.html", forbid=("<b>$s$</b>",))),
        cli("4", "feature columns named $a^2_x$ and <i>b</i>",
            ["sweep", "--data", "{w}/hostile_cols.csv", "--target", "y", *SW[2:], "--out",
             "{t}/s"], "ok", check=report("s/report.html", forbid=("<i>b</i>",))),
        cli("4", "a demo folder named $demo$",
            ["demo", "--epochs", "4", "--dim", "8", "--eval-every", "2", "--out", "{t}/$demo$"],
            "ok", check=report("$demo$/report.html")),
        cli("4", "show --json of a study named <script>$x$", ["show", "{t}/s", "--json"], "ok",
            setup=copy_study("s", "hostile"), check=json_doc),
        cli("4", "show of a study named <script>$x$", ["show", "{t}/s"], "ok",
            setup=copy_study("s", "hostile")),
        cli("4", "report of a study named <script>$x$", ["report", "{t}/s", "--out", "{t}/r"],
            "ok", setup=copy_study("s", "hostile"), check=report("r/report.html", forbid=(
                "<script>alert",))),
        cli("4", "a study named ../../escaped", sweep_("--name", "../../escaped"), "ok",
            check=both(report("s/report.html"), nothing_escaped)),
        cli("4", "ls of a folder of hostile study names", ["ls", "{t}", "--json"], "ok",
            setup=chain(copy_study("$x$"), copy_study("<script>", "hostile"), copy_study("..x")),
            check=json_doc),
    ]  # fmt: skip


def cases_5() -> list[Case]:
    wal = ("{t}/theirs",)
    mine = b"<p>my own notes</p>"
    return [
        cli("5", "show of a foreign SQLite file in WAL mode", ["show", "{t}/theirs"],
            setup=foreign_wal, keep=wal, names="theirs|study.db|not a wdlab"),
        cli("5", "ls beside a foreign SQLite file in WAL mode", ["ls", "{t}"], "ok",
            setup=foreign_wal, keep=wal),
        cli("5", "sweep into a foreign SQLite file in WAL mode", sweep_(out="{t}/theirs"),
            setup=foreign_wal, keep=wal, names="theirs|study.db|not a wdlab"),
        cli("5", "export of a foreign SQLite file in WAL mode",
            ["export", "{t}/theirs", "--out", "{t}/e"], setup=foreign_wal, keep=wal,
            names="theirs|study.db|not a wdlab"),
        cli("5", "report of a foreign SQLite file in WAL mode",
            ["report", "{t}/theirs", "--out", "{t}/r"], setup=foreign_wal, keep=wal,
            names="theirs|study.db|not a wdlab"),
        cli("5", "sweep --out over a report.html not written by wdlab", sweep_(),
            setup=foreign_file("s/report.html", mine), keep=("{t}/s/report.html",),
            names="report.html"),
        cli("5", "sweep --out over a foreign report.html, --force", sweep_("--force"), "ok",
            setup=foreign_file("s/report.html", mine), check=report("s/report.html")),
        cli("5", "export --out over a runs.csv not written by wdlab",
            ["export", "{t}/s", "--out", "{t}/e"],
            setup=foreign_file("e/runs.csv", b"a,b\n1,2\n", study=True),
            keep=("{t}/e/runs.csv", "{t}/s"), names="runs.csv"),
        cli("5", "export --format parquet over a foreign runs.parquet",
            ["export", "{t}/s", "--format", "parquet", "--out", "{t}/e"],
            setup=foreign_file("e/runs.parquet", b"PAR1 mine", study=True),
            keep=("{t}/e/runs.parquet", "{t}/s"), names="runs.parquet"),
        cli("5", "report --out over a losses.png not written by wdlab",
            ["report", "{t}/s", "--out", "{t}/r"],
            setup=foreign_file("r/losses.png", b"my picture", study=True),
            keep=("{t}/r/losses.png", "{t}/s"), names="losses.png"),
        cli("5", "report --out over a report.html not written by wdlab",
            ["report", "{t}/s", "--out", "{t}/r"],
            setup=foreign_file("r/report.html", mine, study=True),
            keep=("{t}/r/report.html", "{t}/s"), names="report.html"),
        cli("5", "run --out over a results.json not written by wdlab", run_(),
            setup=foreign_file("o/results.json", b'{"mine": true}'),
            keep=("{t}/o/results.json",), names="results.json"),
        cli("5", "run --out over a curves.csv not written by wdlab", run_(),
            setup=foreign_file("o/curves.csv", b"epoch,loss\n1,2\n"),
            keep=("{t}/o/curves.csv",), names="curves.csv"),
        cli("5", "demo --out over a report.html not written by wdlab",
            ["demo", "--epochs", "4", "--dim", "8", "--eval-every", "2", "--out", "{t}/d"],
            setup=foreign_file("d/report.html", mine), keep=("{t}/d/report.html",),
            names="report.html"),
        cli("5", "report of a run folder whose results.json is someone else's",
            ["report", "{t}/o"], setup=foreign_file("o/results.json", b'{"mine": true}'),
            keep=("{t}/o/results.json",), names="results.json"),
    ]  # fmt: skip


def cases_6() -> list[Case]:
    timeout = r"(?i)time|seconds|return"
    reg = r"(?i)fifo|pipe|not a regular file|device"
    return [
        cli("6", "a FIFO as the config (run)", ["run", "{t}/exp.toml", "--out", "{t}/o"],
            setup=fifo("exp.toml"), names=reg),
        cli("6", "a FIFO as the config (sweep)", ["sweep", "{t}/exp.toml", "--out", "{t}/s"],
            setup=fifo("exp.toml"), names=reg),
        cli("6", "a FIFO as the CSV (run)", ["run", "--data", "{t}/pipe.csv", "--target", "y",
            "--out", "{t}/o"], setup=fifo("pipe.csv"), names=reg),
        cli("6", "a FIFO as the CSV (sweep)", ["sweep", "--data", "{t}/pipe.csv", "--target",
            "y", *SW[2:], "--out", "{t}/s"], setup=fifo("pipe.csv"), names=reg),
        cli("6", "a symlink to a FIFO as the config", ["run", "{t}/link.toml", "--out", "{t}/o"],
            setup=chain(fifo("exp.toml"), symlink("link.toml", "{t}/exp.toml")), names=reg),
        cli("6", "/dev/null as the config", ["run", "/dev/null", *TINY, "--out", "{t}/o"],
            names=reg),
        cli("6", "null.csv -> /dev/null as the CSV", ["run", "--data", "{t}/null.csv",
            "--target", "y", "--out", "{t}/o"], setup=symlink("null.csv", "/dev/null"),
            names=reg),
        cli("6", "a FIFO as results.json (report)", ["report", "{t}/o"],
            setup=fifo("o/results.json"), names=reg + "|results.json"),
        cli("6", "a FIFO as study.db (show)", ["show", "{t}/s"], setup=fifo("s/study.db"),
            names=reg),
        cli("6", "a factory that never returns, --factory-timeout 3 (run)",
            run_("--model", "probefactories:sleeps", "--factory-timeout", "3"), names=timeout),
        cli("6", "a factory that never returns, --factory-timeout 3 (sweep)",
            sweep_("--model", "probefactories:sleeps", "--factory-timeout", "3"),
            names=timeout),
        api("6", "sweep: a factory that never returns, factory_timeout=3",
            "import time\ndef slow(seed=0):\n    time.sleep(10**6)\n"
            "sweep(model=slow, factory_timeout=3)", names=timeout),
        api("6", "sweep(max_batch=-1)", "sweep(max_batch=-1)", names="max_batch"),
        api("6", "sweep: a Dataset whose __getitem__ never returns",
            "import time\nfrom torch.utils.data import Dataset as TD\n"
            "class Stuck(TD):\n    def __len__(self):\n        return 40\n"
            "    def __getitem__(self, i):\n        time.sleep(10**6)\n"
            "sweep(data=pairs() | {'train': Stuck()})", names=timeout),
    ]  # fmt: skip


API_7 = [
    ("max_batch=0", "sweep(max_batch=0)", "max_batch"),
    ("max_batch=2.5", "sweep(max_batch=2.5)", "max_batch"),
    ("seeds=2.5", "sweep(seeds=2.5)", "seeds"),
    ("seeds=0", "sweep(seeds=0)", "seeds"),
    ("seeds=None", "sweep(seeds=None)", "seeds"),
    ("an empty train split", "sweep(data=pairs() | {'train': (X[:0], Y[:0])})", "train"),
    (
        "X and y of different lengths",
        "sweep(data=pairs() | {'train': (X[:40], Y[:39])})",
        "train|40|39",
    ),
    (
        "string inputs",
        "w = np.array([['a', 'b', 'c', 'd']] * 40)\nsweep(data=pairs() | {'train': (w, Y[:40])})",
        "number|string|str",
    ),
    (
        "string targets",
        "sweep(data=pairs() | {'train': (X[:40], np.array(['yes'] * 40))})",
        "number|string|str|target",
    ),
    (
        "out= an existing file",
        "p = os.path.join(T, 'notes.txt'); open(p, 'w').write('mine')\nsweep(out=p)",
        "notes.txt|file",
    ),
    ("rule='all'", "sweep(rule='all')", "rule|all"),
    ("rule=3", "sweep(rule=3)", "rule"),
    ("max_memory_mb=inf", "sweep(max_memory_mb=math.inf)", "max.memory"),
    ("max_memory_mb=nan", "sweep(max_memory_mb=math.nan)", "max.memory"),
    ("max_memory_mb=0", "sweep(max_memory_mb=0)", "max.memory"),
    ("max_memory_mb=-5", "sweep(max_memory_mb=-5)", "max.memory"),
    ("max_memory_mb='2048'", "sweep(max_memory_mb='2048')", "max.memory"),
    ("factory_timeout=0", "sweep(factory_timeout=0)", "factory_timeout"),
    ("factory_timeout=nan", "sweep(factory_timeout=math.nan)", "factory_timeout"),
    ("epochs=0", "sweep(epochs=0)", "epochs"),
    ("epochs=-1", "sweep(epochs=-1)", "epochs"),
    ("epochs=2.5", "sweep(epochs=2.5)", "epochs"),
    ("epochs='2'", "sweep(epochs='2')", "epochs"),
    ("weight_decay=[-1]", "sweep(weight_decay=[-1.0])", "weight.decay|-1"),
    ("weight_decay=[nan]", "sweep(weight_decay=[math.nan])", "weight.decay|nan"),
    ("weight_decay='abc'", "sweep(weight_decay='abc')", "weight.decay|abc"),
    ("weight_decay=[]", "sweep(weight_decay=[])", "weight.decay|empty"),
    ("lr=0", "sweep(lr=0.0)", r"\blr\b|learning rate"),
    ("lr=nan", "sweep(lr=math.nan)", r"\blr\b|learning rate"),
    ("modes='bogus'", "sweep(modes='bogus')", "bogus"),
    ("modes=[]", "sweep(modes=[])", "mode"),
    ("optimizer='bogus'", "sweep(optimizer='bogus')", "bogus"),
    ("batch_size=-1", "sweep(batch_size=-1)", "batch"),
    ("device='bogus'", "sweep(device='bogus')", "bogus|device"),
    ("eval_every=0", "sweep(eval_every=0)", "eval_every"),
    ("select='bogus'", "sweep(select='bogus')", "bogus|select"),
    ("data=None", "wdlab.sweep(make, None, epochs=1)", "data"),
    ("data='nosuchsource'", "sweep(data='nosuchsource')", "nosuchsource"),
    ("data without 'test'", "d = pairs(); del d['test']\nsweep(data=d)", "test"),
    ("data a list", "sweep(data=[X, Y])", "data"),
    ("model=None", "wdlab.sweep(None, pairs(), epochs=1)", "model"),
    ("model='nomodule:make'", "sweep(model='nomodule:make')", "nomodule"),
    ("model=42", "sweep(model=42)", "model|42"),
    ("options={'momentun': 0.9}", "sweep(optimizer='sgd', options={'momentun': 0.9})", "momentun"),
    ("Decay('bogus')", "wdlab.Decay('bogus', weight_decay=0.1)", "bogus"),
    ("Decay(weight_decay=-1)", "wdlab.Decay('coupled', weight_decay=-1.0)", "weight.decay|-1"),
    (
        "Decay(weight_decay=nan)",
        "wdlab.Decay('coupled', weight_decay=math.nan)",
        "weight.decay|nan",
    ),
    ("Decay(weight_decay='0.1')", "wdlab.Decay('coupled', weight_decay='0.1')", "weight.decay"),
    (
        "Decay.attach('not an optimizer')",
        "wdlab.Decay('coupled', weight_decay=0.1).attach('not an optimizer')",
        "optimizer",
    ),
    ("transfer(n=0)", "wdlab.transfer(0.1, 1e-3, 0, 256)", r"\bn\b|N|size"),
    (
        "from_arrays: X and y of different lengths",
        "from_arrays(X.numpy(), Y.numpy()[:59])",
        "60|59|length|rows",
    ),
    (
        "from_arrays: a target of one value",
        "from_arrays(X.numpy(), np.ones(60))",
        "single|one value|class",
    ),
    ("from_arrays: no rows", "from_arrays(np.zeros((0, 4)), np.zeros(0))", "empty|rows|0"),
    ("from_splits: no 'train'", "d = pairs(); del d['train']\nfrom_splits(d)", "train"),
]


def cases_7() -> list[Case]:
    return [api("7", name, code, names=names) for name, code, names in API_7] + [
        api("7", "rule='everything' (works)", "sweep(rule='everything')", "ok"),
    ]


def cases_8() -> list[Case]:
    f = "probefactories:"
    return [
        cli("8", "a factory raising a BaseException subclass",
            run_("--model", f + "base_exception"), names=r"Boom|gave up"),
        cli("8", "a forward raising a BaseException subclass while training",
            sweep_("--model", f + "explodes"), names=r"Boom|gave up"),
        cli("8", "a factory that prints, under --json (sweep)",
            sweep_("--model", f + "chatty", "--json"), "ok", check=json_doc),
        cli("8", "a factory that prints, under --json (run)",
            run_("--model", f + "chatty", "--json"), "ok", check=json_doc),
        cli("8", "Ctrl-C raised in the forward: exit 130", sweep_("--model", f + "interrupted"),
            rc=130, names="interrupted"),
        cli("8", "a factory calling sys.exit", run_("--model", f + "exits"),
            names="SystemExit|exit"),
        cli("8", "a factory raising RuntimeError", run_("--model", f + "raises"),
            names="boom from the factory"),
        cli("8", "a factory returning a string", run_("--model", f + "not_module"),
            names="Module"),
        cli("8", "a factory returning None", run_("--model", f + "returns_none"),
            names="Module|None"),
        cli("8", "a model that rejects the inputs", run_("--model", f + "wrong_width"),
            names=r"(?i)shape|input|size|model"),
        cli("8", "a factory module that does not exist", run_("--model", "nomodule:make"),
            names="nomodule"),
        cli("8", "a factory name the module lacks", run_("--model", f + "nope"), names="nope"),
        api("8", "sweep: a forward raising a BaseException subclass",
            "class Boom(BaseException):\n    pass\n"
            "class M(nn.Linear):\n    def forward(self, x):\n"
            "        if torch.is_grad_enabled():\n            raise Boom('gave up')\n"
            "        return super().forward(x)\n"
            "sweep(model=lambda: M(4, 2))", names="Boom|gave up"),
        api("8", "sweep: a metric returning a string",
            "sweep(metric=lambda out, y: 'high')", names="metric"),
        api("8", "sweep: a Dataset whose items are not (x, y)",
            "from torch.utils.data import Dataset as TD\n"
            "class Odd(TD):\n    def __len__(self):\n        return 40\n"
            "    def __getitem__(self, i):\n        return X[i]\n"
            "sweep(data=pairs() | {'train': Odd()})", names=r"\(x, y\)|pair|item"),
        api("8", "sweep: a model that rejects the inputs",
            "sweep(model=lambda: nn.Linear(7, 2))", names=r"(?i)shape|input|size|model"),
    ]  # fmt: skip


def transfer_(*extra, wd="1", lr="1", n="1", bs="1"):
    """``transfer`` from a setting of ones (each overridable) with ``extra`` flags."""
    return ["transfer", "--wd", wd, "--lr", lr, "--n", n, "--batch-size", bs, *extra]


def cases_9() -> list[Case]:
    tiny = ["--to-lr", "1e-200", "--to-n", "1e-200", "--to-batch-size", "1e-300"]
    rng = r"(?i)float|range|overflow|finite"
    return [
        cli("9", "transfer to 1e-200 lr and N (the exact answer is 1e100)", transfer_(*tiny),
            "ok", check=transfer_exact),
        cli("9", "transfer to 1e-200 lr and N, --json", transfer_(*tiny, "--json"), "ok",
            check=transfer_json_exact),
        cli("9", "transfer beyond float range (1e330)",
            transfer_("--to-lr", "1e-300", wd="1e30"), names=rng),
        cli("9", "transfer below float range (1e-360)",
            transfer_("--to-lr", "1e30", "--to-n", "1e30", wd="1e-300"),
            names=rng + "|underflow|zero"),
        cli("9", "transfer --wd nan", transfer_(wd="nan"), names="wd|weight"),
        cli("9", "transfer --wd inf", transfer_(wd="inf"), names="wd|weight"),
        cli("9", "transfer --wd -1", transfer_(wd="-1"), names="wd|weight"),
        cli("9", "transfer --lr 0", transfer_(lr="0"), names="lr"),
        cli("9", "transfer --n 0", transfer_(n="0"), names=r"--n\b| N\b|size"),
        cli("9", "transfer --batch-size 0", transfer_(bs="0"), names="batch"),
        cli("9", "transfer --n 1e400", transfer_(n="1e400"), names=r"--n\b| N\b|inf|finite"),
        cli("9", "transfer --to-epochs without --epochs", transfer_("--to-epochs", "5"),
            names="epochs"),
        cli("9", "transfer --to-batch-size -5", transfer_("--to-batch-size", "-5"),
            names="batch"),
        api("9", "transfer() beyond float range",
            "wdlab.transfer(1e30, 1.0, 1.0, 1.0, to_lr=1e-300)", names=rng),
        api("9", "transfer() to 1e-200 lr and N",
            "r = wdlab.transfer(1.0, 1.0, 1.0, 1.0, to_lr=1e-200, to_n=1e-200,"
            " to_batch_size=1e-300)\nwd = r.weight_decay\n"
            "CHECK = None if math.isfinite(wd) and abs(wd / 1e100 - 1) < 1e-9 else f'{wd!r}'",
            "ok"),
        cli("9", "run --wd 1e308", run_("--wd", "1e308"), names="1e\\+?308|float32|overflow"),
        cli("9", "sweep --lr 1e308", sweep_("--lr", "1e308"), names="1e\\+?308|float32|overflow"),
        cli("9", "demo --weight-decay 1e308", ["demo", "--weight-decay", "1e308", "--out",
            "{t}/d"], names="1e\\+?308|float32|overflow"),
        cli("9", "run --lr nan", run_("--lr", "nan"), names="lr|nan"),
        cli("9", "run --wd -0.1", run_("--wd", "-0.1"), names=r"wd|weight|-0\.1"),
        cli("9", "run --epochs 1000000000000", ["run", "--data", "wine", "--epochs",
            "1000000000000", "--out", "{t}/o"], names="memory|epochs"),
        cli("9", "demo --dim 300000", ["demo", "--dim", "300000", "--out", "{t}/d"],
            names="memory|needs|dim"),
        cli("9", "run --seeds 100000000", run_("--seeds", "100000000"), names="seeds|1,000,000"),
        cli("9", "sweep --wd 1e-6..1:100000000", sweep_("--wd", "1e-6..1:100000000"),
            names="values|1,000,000|wd"),
        cli("9", "sweep of 20,001 configurations", sweep_("--wd", "1e-6..1:20000"),
            names="configurations|max-configs"),
        cli("9", "sweep --max-memory 0.001", sweep_("--max-memory", "0.001"), names="memory"),
        cli("9", "inspect --in-dim 1e11", ["inspect", "--in-dim", "1e11"], names="in-dim|integer",
            usage=True),
        cli("9", "inspect --in-dim 100000000000", ["inspect", "--in-dim", "100000000000"],
            names="memory"),
        cli("9", "timescale --smallest 0", ["timescale", "--smallest", "0"], names="smallest"),
        cli("9", "timescale --seeds 0", ["timescale", "--seeds", "0"], names="seeds"),
    ]  # fmt: skip


def cases_10() -> list[Case]:
    f = "probefactories:"
    damaged = r"study\.db"
    return [
        cli("10", "a TOML file nested 3,000 deep", toml_run("deep.toml"), names="deep.toml"),
        cli("10", "a results.json nested 100,000 deep", ["report", "{w}/deepresults", "--out",
            "{t}/r"], names="results.json"),
        cli("10", "Adam's capturable = true", toml_run("capturable.toml", *TINY),
            names="capturable"),
        cli("10", "a 200,000-character CSV field", csv_run("longfield.csv"),
            names=r"row|200,000|field"),
        cli("10", "a 200,000-character CSV header", csv_run("longheader.csv"),
            names=r"header|field"),
        cli("10", "a Parquet list column", csv_run("lists.parquet"), names=r"'a'|list"),
        cli("10", "--features a,a", csv_run("ok.csv", "--features", "a,a"), names="'a'|twice"),
        cli("10", "a meta-device model", run_("--model", f + "meta"), names="meta"),
        cli("10", "a module missing super().__init__()", run_("--model", f + "no_super"),
            names=r"super|__init__"),
        cli("10", "a SyntaxError in the factory's module", run_("--model", "syntaxerr:make"),
            names=r"syntaxerr|SyntaxError"),
        cli("10", "audit of a module with a SyntaxError", ["audit", "{w}/code/syntaxerr.py:make"],
            names=r"syntaxerr|SyntaxError"),
        cli("10", "an exception at import in the factory's module",
            run_("--model", "importboom:make"), names=r"importboom|boom at import"),
        cli("10", "--backend ray --cpus-per-task nan", sweep_("--backend", "ray",
            "--cpus-per-task", "nan"), names="cpus-per-task"),
        cli("10", "--backend ray --gpus-per-task -1", sweep_("--backend", "ray",
            "--gpus-per-task", "-1"), names="gpus-per-task"),
        cli("10", "a run row whose config is not JSON (show)", ["show", "{t}/s"],
            setup=tamper("config", "{not json"), keep=("{t}/s",), names=damaged),
        cli("10", "a run row whose final is a list (show)", ["show", "{t}/s"],
            setup=tamper("final", "[1, 2]"), keep=("{t}/s",), names=damaged),
        cli("10", "a run row nested 100,000 deep (show)", ["show", "{t}/s"],
            setup=tamper("config", "[" * 100_000 + "]" * 100_000), keep=("{t}/s",),
            names=damaged),
        cli("10", "a run row whose config is not JSON (export)",
            ["export", "{t}/s", "--out", "{t}/e"], setup=tamper("config", "{not json"),
            keep=("{t}/s",), names=damaged),
        cli("10", "a run row whose config is not JSON (report)",
            ["report", "{t}/s", "--out", "{t}/r"], setup=tamper("config", "{not json"),
            keep=("{t}/s",), names=damaged),
        cli("10", "a binary file as the CSV", csv_run("binary.csv"), names="binary.csv"),
        cli("10", "a UTF-16 CSV", csv_run("utf16.csv"), names="utf16.csv|UTF"),
        cli("10", "an empty CSV", csv_run("empty.csv"), names="empty"),
        cli("10", "a ragged CSV row", csv_run("ragged.csv"), names=r"ragged.csv|row|line|field"),
        cli("10", "a results.json that is not JSON", ["report", "{w}/badresults", "--out",
            "{t}/r"], names="results.json"),
        cli("10", "a results.json that is a list", ["report", "{w}/listresults", "--out",
            "{t}/r"], names="results.json"),
        cli("10", "a results.json from a newer wdlab", ["report", "{w}/futureresults", "--out",
            "{t}/r"], names=r"results.json"),
    ]  # fmt: skip


def cases_held() -> list[Case]:
    """What held up: faults, stores and output folders."""
    st = ("{t}/s",)
    nb = "not a wdlab|foreign|notes"
    return [
        Case("held", "SIGINT mid-sweep, then resume: bitwise", fault=fault_signal("SIGINT"),
             expect="ok"),
        Case("held", "SIGTERM mid-sweep, then resume: bitwise", fault=fault_signal("SIGTERM"),
             expect="ok"),
        Case("held", "SIGKILL mid-sweep, then resume: bitwise", fault=fault_signal("SIGKILL"),
             expect="ok"),
        Case("held", "three writers, one SIGKILLed: each run once", fault=fault_three,
             expect="ok", alt=("one-line",)),
        Case("held", "readers (show, ls) during writes", fault=fault_readers, expect="ok"),
        cli("held", "read-only store: show", ["show", "{t}/s"], "ok", setup=read_only_study,
            keep=st, read_only=True),
        cli("held", "read-only store: ls", ["ls", "{t}"], "ok", setup=read_only_study,
            keep=st, read_only=True),
        cli("held", "read-only store: export --out elsewhere", ["export", "{t}/s", "--out",
            "{t}/e"], "ok", setup=read_only_study, keep=st, read_only=True),
        cli("held", "read-only store: report --out elsewhere", ["report", "{t}/s", "--out",
            "{t}/r"], "ok", setup=read_only_study, keep=st, read_only=True),
        cli("held", "read-only store: sweep into it", sweep_(), setup=read_only_study, keep=st,
            read_only=True, names=r"(?i)read-only|permission|write"),
        cli("held", "read-only store: report into it", ["report", "{t}/s"],
            setup=read_only_study, keep=st, read_only=True,
            names=r"(?i)read-only|permission|write"),
        cli("held", "show of a foreign SQLite file", ["show", "{t}/f"],
            setup=copy_study("f", "stores/foreign"), keep=("{t}/f",), names=nb),
        cli("held", "sweep into a foreign SQLite file", sweep_(out="{t}/f"),
            setup=copy_study("f", "stores/foreign"), keep=("{t}/f",), names=nb),
        cli("held", "show of a corrupt store", ["show", "{t}/c"],
            setup=copy_study("c", "stores/corrupt"), keep=("{t}/c",), names="SQLite|corrupt"),
        cli("held", "sweep into a corrupt store", sweep_(out="{t}/c"),
            setup=copy_study("c", "stores/corrupt"), keep=("{t}/c",), names="SQLite|corrupt"),
        cli("held", "show of a truncated store", ["show", "{t}/c"],
            setup=copy_study("c", "stores/truncated"), keep=("{t}/c",),
            names="store|SQLite|study.db"),
        cli("held", "ls marks broken stores", ["ls", "{t}"], "ok",
            setup=chain(copy_study("a", "stores/foreign"), copy_study("b", "stores/corrupt"),
                        copy_study("c")), keep=("{t}/a", "{t}/b", "{t}/c")),
        cli("held", "show of nothing", ["show", "{t}/nothing"], names="nothing|no study"),
        cli("held", "another config into the study", sweep_("--lr", "0.02"), setup=copy_study(),
            keep=st, names="another study|holds"),
        cli("held", "another rule into the study (CLI)", sweep_("--rule", "everything"),
            setup=copy_study(), keep=st, names="another study|holds"),
        cli("held", "the same sweep again (resume of a whole study)", sweep_("--json"), "ok",
            setup=copy_study(), check=json_doc),
        cli("held", "a reader that left (closed stdout)", ["ls", "{w}", "--json"], "ok",
            closed_stdout=True),
        cli("held", "run --out a file", ["run", *TINY, "--out", "{w}/afile"], names="afile"),
        cli("held", "export --out a file", ["export", "{t}/s", "--out", "{w}/afile"],
            setup=copy_study(), keep=("{t}/s",), names="afile"),
    ]  # fmt: skip


def cases_held_inputs() -> list[Case]:
    """What held up: files and flags refused in one line."""
    return [
        cli("held", "a TOML path that is a folder", toml_run("folder.toml"), names="folder"),
        cli("held", "a CSV path that is a folder", ["run", "--data", "{w}/folder.csv",
            "--target", "y", "--out", "{t}/o"], names="folder"),
        cli("held", "a CSV that does not exist", ["run", "--data", "{w}/missing.csv",
            "--target", "y", "--out", "{t}/o"], names="missing.csv"),
        cli("held", "a TOML file that is not TOML", toml_run("invalid.toml"), names="TOML"),
        cli("held", "a Latin-1 TOML file", toml_run("latin1.toml"), names="UTF-8"),
        cli("held", "a TOML file with an unknown key", toml_run("unknown.toml"), names="epochz"),
        cli("held", "TOML splits leaving nothing to train", toml_run("splits.toml"),
            names="10%|size"),
        cli("held", "TOML weight decay 1e308", toml_run("wd.toml"), names="overflows|float32"),
        cli("held", "option momentun (misspelt)", toml_run("momentun.toml", *TINY),
            names="momentun"),
        cli("held", "nesterov without momentum", toml_run("nesterov.toml", *TINY),
            names="(?i)nesterov"),
        cli("held", "a CSV with a header and no rows", csv_run("header.csv"), names="rows"),
        cli("held", "a target named twice", csv_run("duptarget.csv"), names="'y'"),
        cli("held", "a duplicate feature column (works)", csv_run("dupfeature.csv", "--json"),
            "ok", check=json_doc),
        cli("held", "a target of a single value", csv_run("single.csv"), names="single|value"),
        cli("held", "a class of 1 row", csv_run("rare.csv"), names="class 2|rows"),
        cli("held", "infinite values", csv_run("inf.csv", "--impute", "mean"),
            names="infinite|inf"),
        cli("held", "missing values", csv_run("nan.csv"), names="missing|impute"),
        cli("held", "one-hot of 30,000 distinct ids", csv_run("ids.csv"), names="'id'|distinct"),
        cli("held", "a CSV without --target", ["run", "--data", "{w}/ok.csv", "--out", "{t}/o"],
            names="target"),
        cli("held", "--target of a column that does not exist", ["run", "--data", "{w}/ok.csv",
            "--target", "nope", "--out", "{t}/o"], names="nope"),
        cli("held", "--device bogus (run)", run_("--device", "bogus"), names="bogus"),
        cli("held", "--device bogus (demo)", ["demo", "--device", "bogus", "--out", "{t}/d"],
            names="bogus"),
        cli("held", "--device cuda:99", run_("--device", "cuda:99"), names="cuda"),
        cli("held", "--max-batch 0", sweep_("--max-batch", "0"), names="max-batch"),
        cli("held", "--max-batch -1", sweep_("--max-batch", "-1"), names="max-batch"),
        cli("held", "--epochs 0", run_("--epochs", "0"), names="epochs"),
        cli("held", "--eval-every 0", run_("--eval-every", "0"), names="eval-every|eval_every"),
        cli("held", "--batch-size -1", run_("--batch-size", "-1"), names="batch"),
        cli("held", "--lr abc", run_("--lr", "abc"), names="abc|lr"),
        cli("held", "--mode bogus", run_("--mode", "bogus"), names="bogus"),
        cli("held", "--optimizer bogus", run_("--optimizer", "bogus"), names="bogus"),
        cli("held", "--schedule step:0:0.5", run_("--schedule", "step:0:0.5"),
            names="step|schedule"),
        cli("held", "--select bogus", run_("--select", "bogus"), names="bogus|select"),
        cli("held", "--data nosuchsource", ["run", "--data", "nosuchsource", "--out", "{t}/o"],
            names="nosuchsource"),
        cli("held", "--train-size -1", run_("--train-size", "-1"), names="train-size|train_size"),
        cli("held", "--precision fp16", run_("--precision", "fp16"), names="fp16", usage=True),
        cli("held", "export --format xlsx", ["export", "{t}/s", "--format", "xlsx"],
            setup=copy_study(), keep=("{t}/s",), names="xlsx", usage=True),
        cli("held", "a misspelt flag", ["sweep", "--weigth-decay", "1"], names="weigth",
            usage=True),
        cli("held", "a grid within a raised --max-configs (works)",
            run_("--wd", "1e-3..1e-1:4", "--max-configs", "5", "--json"), "ok", check=json_doc),
        cli("held", "inspect nomodule:make", ["inspect", "nomodule:make", "--in-dim", "4"],
            names="nomodule"),
        cli("held", "inspect --hidden 0", ["inspect", "mlp", "--hidden", "0"], names="hidden|0"),
        cli("held", "verify --out a file", ["verify", "--out", "{w}/afile"], names="afile"),
        cli("held", "report of a file", ["report", "{w}/afile"], names="afile|nothing"),
        cli("held", "audit of a file that does not exist", ["audit", "{t}/nope.py:setup"],
            names="nope.py"),
    ]  # fmt: skip


def cases_i20() -> list[Case]:
    seed = r"(?i)seed|same weights|identical"
    other = r"another|differ|holds|rule|loss"
    return [
        cli("i20", "a factory that ignores its seed (run --seeds 2)",
            run_("--model", "probefactories:ignores_seed", "--seeds", "2"), names=seed),
        cli("i20", "a factory that ignores its seed (sweep --seeds 2)",
            sweep_("--model", "probefactories:ignores_seed", "--seeds", "2"), names=seed),
        api("i20", "sweep: a factory make(seed=0) that ignores its seed",
            "def fixed(seed=0):\n    torch.manual_seed(0)\n    return nn.Linear(4, 2)\n"
            "sweep(model=fixed, seeds=2)", names=seed),
        api("i20", "sweep: a factory of no argument that reseeds",
            "def fixed():\n    torch.manual_seed(0)\n    return nn.Linear(4, 2)\n"
            "sweep(model=fixed, seeds=2)", names=seed),
        api("i20", "sweep: another decay rule into the same study",
            "out = os.path.join(T, 's')\nsweep(out=out)\n"
            "sweep(out=out, rule=wdlab.EVERYTHING)", names=other),
        api("i20", "sweep: another loss into the same study",
            "out = os.path.join(T, 's')\nsweep(out=out)\n"
            "sweep(out=out, loss=lambda o, t: nn.functional.cross_entropy(o, t) * 2)",
            names=other),
        api("i20", "sweep: a data tuple of three items",
            "sweep(data=pairs() | {'train': (X[:40], Y[:40], Y[:40])})",
            names=r"train|pair|\(X, y\)|3|items"),
        api("i20", "sweep: Dataset items of three",
            "from torch.utils.data import TensorDataset\n"
            "sweep(data=pairs() | {'train': TensorDataset(X[:40], Y[:40], Y[:40])})",
            names=r"train|pair|\(x, y\)|3|items"),
        api("i20", "sweep: a table without target=",
            "sweep(data=os.path.join(W, 'ok.csv'))", names="target"),
        api("i20", "sweep: a table with a target it lacks",
            "sweep(data=os.path.join(W, 'ok.csv'), target='nope')", names="nope"),
        api("i20", "from_splits: a dict of a single split", "from_splits({'train': (X, Y)})",
            names=r"val|test"),
    ]  # fmt: skip


def cases_i24() -> list[Case]:
    tb = r"(?i)tensorboard|afile|writ"
    ml = r"(?i)mlflow|127\.0\.0\.1|reach|connect"
    return [
        cli("i24", "search --wd 1..1e-6:log", ["search", *TINY, "--wd", "1..1e-6:log",
            "--trials", "2", "--batch", "2"], names=r"1e-0?6|LO|HI|range"),
        cli("i24", "search --lr 1..0.1:log", ["search", *TINY, "--lr", "1..0.1:log",
            "--trials", "2", "--batch", "2"], names=r"0\.1|LO|HI|range"),
        cli("i24", "sweep --wd 1..1e-6:3", sweep_("--wd", "1..1e-6:3"),
            names=r"1e-0?6|LO|HI|range"),
        cli("i24", "search --storage of a foreign SQLite file",
            ["search", *TINY, "--wd", "1e-4..1e-1:log", "--trials", "2", "--batch", "2",
             "--storage", "sqlite:///{t}/f/study.db"], setup=copy_study("f", "stores/foreign"),
            keep=("{t}/f",), names=r"(?i)optuna|study.db|storage"),
        cli("i24", "sweep --log tensorboard into a path under a file",
            sweep_("--log", "tensorboard:{w}/afile/tb"), names=tb),
        cli("i24", "export --to tensorboard into a path under a file",
            ["export", "{t}/s", "--to", "tensorboard", "{w}/afile/tb"], setup=copy_study(),
            keep=("{t}/s",), names=tb),
        cli("i24", "sweep --log mlflow:http://127.0.0.1:9", sweep_("--log",
            "mlflow:http://127.0.0.1:9"), names=ml),
        cli("i24", "export --to mlflow http://127.0.0.1:9",
            ["export", "{t}/s", "--to", "mlflow", "http://127.0.0.1:9"], setup=copy_study(),
            keep=("{t}/s",), names=ml),
        cli("i24", "sweep --log mlflow into a foreign SQLite file",
            sweep_("--log", "mlflow:sqlite:///{t}/f/study.db"),
            setup=copy_study("f", "stores/foreign"), keep=("{t}/f",),
            names=r"(?i)mlflow|study.db"),
        cli("i24", "sweep --log bogus:x", sweep_("--log", "bogus:x"), names="bogus"),
        cli("i24", "search --trials 0", ["search", *TINY, "--wd", "1e-4..1e-1:log",
            "--trials", "0"], names="trials"),
    ]  # fmt: skip


def all_cases() -> list[Case]:
    groups = (cases_1, cases_2, cases_3, cases_4, cases_5, cases_6, cases_7, cases_8, cases_9,
              cases_10, cases_held, cases_held_inputs, cases_i20, cases_i24)  # fmt: skip
    return [case for group in groups for case in group()]


# --------------------------------------------------------------------------------------------
# Running and classifying


PRELUDE = """
import math, os, sys
import numpy as np
import torch
from torch import nn
import wdlab
from wdlab.data import from_arrays, from_splits, load
torch.set_num_threads(1)
T, W = os.environ["PROBE_T"], os.environ["PROBE_W"]
_g = torch.Generator().manual_seed(0)
X = torch.randn(60, 4, generator=_g)
Y = (X[:, 0] > 0).long()
def pairs(X=X, y=Y):
    return {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]), "test": (X[50:], y[50:])}
def make(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(4, 2)
def sweep(model=make, data=None, **kw):
    kw = {"epochs": 1, "weight_decay": [0.01], **kw}
    return wdlab.sweep(model, pairs() if data is None else data, **kw)
CHECK = None
"""
BATCH = """
import json, os, sys, time, traceback

prelude, cases = json.loads(open(sys.argv[1]).read())
for case in cases:
    os.environ["PROBE_T"] = case["t"]
    os.chdir(case["t"])
    ns = {"__name__": "__probe__"}
    t0 = time.perf_counter()
    try:
        exec(compile(prelude + case["code"], "<case>", "exec"), ns)
        result = {"status": "returned", "check": ns.get("CHECK")}
    except ValueError as exc:
        result = {"status": "ValueError", "msg": str(exc)}
    except BaseException as exc:
        result = {"status": type(exc).__name__, "msg": str(exc),
                  "tb": traceback.format_exc()[-1500:]}
    result["seconds"] = time.perf_counter() - t0
    with open(os.path.join(case["t"], "result.json"), "w") as fh:
        json.dump(result, fh)
"""


@dataclass
class Ctx:
    """Where the checkout under test is and how to run it."""

    wdlab: str
    python: str
    root: Path
    timeout: float
    memory_gib: float = 8.0

    def limit(self) -> list[str]:
        """``prlimit`` capping a case's address space, so a case that reads without end fails
        alone instead of taking the machine's memory (nothing where prlimit is missing)."""
        if not self.memory_gib or not shutil.which("prlimit"):
            return []
        return ["prlimit", f"--as={int(self.memory_gib * 2**30)}", "--"]

    @property
    def w(self) -> Path:
        return self.root / "w"

    def env(self, t: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("WDLAB_", "MLFLOW_", "PYTHON", "OMP_", "MKL_"))}  # fmt: skip
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                "PYTHONPATH": str(self.w / "code"), "PYTHONDONTWRITEBYTECODE": "1",
                "PROBE_T": str(t), "PROBE_W": str(self.w)}  # fmt: skip
        return env | (extra or {})

    def popen(self, argv, t, env=None, **kw) -> subprocess.Popen:
        cmd = [*self.limit(), self.wdlab, *argv]
        return subprocess.Popen(cmd, cwd=t, env=self.env(t, env), text=True,
                                start_new_session=True, errors="replace", **kw)  # fmt: skip

    def process(self, argv, t, env=None, stdin=None, seconds=None, prefix=(), **kw) -> Run:
        """Run ``wdlab ARGV`` (or, with ``argv[0] == python``, that) to its end or the timeout."""
        cmd = [*prefix, *self.limit(), *([] if argv[0] == self.python else [self.wdlab]), *argv]
        kw.setdefault("stdout", subprocess.PIPE)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=t, env=self.env(t, env), text=True, errors="replace",
                             stdin=stdin or subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True, **kw)  # fmt: skip
        return finish(p, seconds or self.timeout, t0)


def finish(p: subprocess.Popen, timeout: float, t0: float | None = None) -> Run:
    """Wait for ``p`` (killing its process group at the timeout)."""
    t0 = time.perf_counter() if t0 is None else t0
    try:
        out, err = p.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        hung = True
    return Run(p.returncode, out or "", err or "", hung, time.perf_counter() - t0)


def kill_group(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGCONT)
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        p.kill()


def expand(s: str, t: Path, w: Path) -> str:
    return s.replace("{t}", str(t)).replace("{w}", str(w))


def digest(paths: list[Path]) -> dict[str, str]:
    """Every file at or under ``paths`` with a hash of its bytes."""
    out = {}
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for p in files:
            if p.is_file() and not p.is_symlink() and not stat_fifo(p):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stat_fifo(p: Path) -> bool:
    import stat

    return stat.S_ISFIFO(p.lstat().st_mode)


def changed(before: dict[str, str], after: dict[str, str]) -> str | None:
    for name, h in before.items():
        if name not in after:
            return f"{Path(name).name} was removed"
        if after[name] != h:
            return f"{Path(name).name} was changed"
    return None


def errors_of(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("wdlab: warning:")]


def one_line(case: Case, rc: int | None, stderr: str) -> tuple[str, str]:
    """The class of a refusal (rc != 0) on the command line."""
    errs = errors_of(stderr)
    if "Traceback (most recent call last)" in stderr:
        return "traceback", tail(stderr)
    if any("(unexpected" in ln for ln in errs):
        return "unexpected", next(ln for ln in errs if "(unexpected" in ln)
    if not errs:
        return "wrong-exit", f"exit {rc}, nothing on stderr"
    if len(errs) != 1:
        return "multi-line", f"{len(errs)} lines: {tail(stderr)}"
    line = errs[0]
    if rc != case.rc:
        return "wrong-exit", f"exit {rc}: {line}"
    if USAGE.search(line) and not case.usage:
        return "wrong-line", line
    if case.names and not re.search(case.names, line):
        return "wrong-line", line
    return "one-line", line


def tail(text: str, n: int = 300) -> str:
    text = " | ".join(ln for ln in text.strip().splitlines()[-4:])
    return text[-n:]


def study_counts(folder: Path) -> Counter | None:
    db = folder / "study.db"
    if not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
            return Counter(dict(c.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")))
    except sqlite3.Error:
        return None


def not_whole(counts: Counter | None) -> str | None:
    if not counts:
        return None
    left = {s: n for s, n in counts.items() if s not in ("done", "diverged")}
    return ", ".join(f"{n} {s}" for s, n in left.items()) or None


def out_of(argv: list[str]) -> str | None:
    return argv[argv.index("--out") + 1] if "--out" in argv else None


def classify_cli(case: Case, run: Run, t: Path, argv: list[str]) -> tuple[str, str]:
    if run.hung:
        return "hang", f"killed after {run.seconds:.0f} s"
    if "Traceback (most recent call last)" in run.err:
        return "traceback", tail(run.err)
    if run.rc != 0:
        return one_line(case, run.rc, run.err)
    if argv[0] == "sweep" and (out := out_of(argv)):
        left = not_whole(study_counts(Path(out)))
        if left:
            return "partial", f"exit 0 with {left}"
    if case.expect != "ok":
        return "wrong-exit", "exit 0" + (f": {tail(run.err)}" if run.err.strip() else "")
    bad = case.check(t, run) if case.check else None
    if isinstance(bad, tuple):
        return bad
    if bad:
        return "wrong-output", bad
    return "ok", ""


def classify_api(case: Case, run: Run, res: dict | None) -> tuple[str, str]:
    if res is None and run.hung:
        return "hang", f"killed after {run.seconds:.0f} s"
    if res is None:
        return "traceback", f"the child ended with exit {run.rc}: {tail(run.err)}"
    status, msg = res["status"], res.get("msg", "")
    if status == "returned":
        if case.expect != "ok":
            return "wrong-exit", "returned without an error"
        return ("wrong-output", res["check"]) if res.get("check") else ("ok", "")
    if status != "ValueError":
        return "traceback", f"{status}: {msg[:240]}"
    if "(unexpected" in msg:
        return "unexpected", msg[:300]
    if "\n" in msg.strip():
        return "multi-line", msg[:300]
    if case.names and not re.search(case.names, msg):
        return "wrong-line", msg[:300]
    return "one-line", msg[:300]


def run_case(ctx: Ctx, case: Case, index: int) -> dict:
    """Set the case up in a folder of its own, run it, classify it."""
    t = case_dir(ctx, index)
    closer = None
    t0 = time.perf_counter()
    try:
        if case.fault is not None:
            cls, detail = case.fault(ctx, t)
        else:
            if case.read_only and os.geteuid() == 0 and not shutil.which("setpriv"):
                raise Skip("root writes a read-only store anyway, and setpriv is missing")
            if case.setup is not None:
                closer = case.setup(t, ctx.w)
            keep = [Path(expand(k, t, ctx.w)) for k in case.keep]
            before = digest(keep)
            cls, detail = (run_cli if case.argv is not None else run_api)(ctx, case, t)
            if cls != "hang" and (what := changed(before, digest(keep))):
                cls, detail = "changed", what
    except Skip as exc:
        cls, detail = "skipped", str(exc)
    except (OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        cls, detail = "skipped", f"set-up failed: {type(exc).__name__}: {exc}"
    finally:
        if closer:
            closer()
    return outcome(case, cls, detail, time.perf_counter() - t0)


def run_batch(ctx: Ctx, indexed: list[tuple[int, Case]]) -> dict[int, dict]:
    """API cases with no set-up, in shared child processes."""
    t0 = time.perf_counter()
    classes = run_api_batch(ctx, [(c, case_dir(ctx, i)) for i, c in indexed])
    each = (time.perf_counter() - t0) / max(1, len(indexed))
    return {i: outcome(c, *cd, each) for (i, c), cd in zip(indexed, classes, strict=True)}


def case_dir(ctx: Ctx, index: int) -> Path:
    t = ctx.root / f"c{index:03d}"
    t.mkdir(exist_ok=True)
    return t


def outcome(case: Case, cls: str, detail: str, seconds: float) -> dict:
    return {"category": case.cat, "case": case.name, "expected": case.expect,
            "alt": list(case.alt), "class": cls, "detail": detail,
            "as_expected": cls == case.expect or cls in case.alt,
            "command": case.command(), "seconds": round(seconds, 1)}  # fmt: skip


class Skip(Exception):
    """The case cannot be set up here."""


def run_cli(ctx: Ctx, case: Case, t: Path) -> tuple[str, str]:
    argv = [expand(a, t, ctx.w) for a in case.argv]  # type: ignore[union-attr]
    env = {k: expand(v, t, ctx.w) for k, v in case.env.items()}
    kw: dict = {}
    if case.read_only and os.geteuid() == 0:  # root without the right to override permissions
        kw = {"prefix": ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]}
    if case.closed_stdout:
        r, wfd = os.pipe()
        os.close(r)
        try:
            run = ctx.process(argv, t, env, stdout=wfd, **kw)
        finally:
            os.close(wfd)
        if run.rc == 0 and run.err.strip() and not run.hung:
            return "multi-line" if len(errors_of(run.err)) > 1 else "wrong-output", tail(run.err)
    else:
        run = ctx.process(argv, t, env, **kw)
    return classify_cli(case, run, t, argv)


def run_api(ctx: Ctx, case: Case, t: Path) -> tuple[str, str]:
    """One API case in a child process of its own."""
    return run_api_batch(ctx, [(case, t)])[0]


def run_api_batch(ctx: Ctx, items: list[tuple[Case, Path]]) -> list[tuple[str, str]]:
    """API cases in as few child processes as it takes (one import of torch, not one per
    case). A case that has not ended after the timeout is a hang: the child is killed and the
    cases left run in a fresh one; so are they when a case ends the child."""
    out: list[tuple[str, str]] = []
    while len(out) < len(items):
        todo = items[len(out) :]
        job = ctx.root / f"batch-{len(out)}-{id(todo)}.json"
        job.write_text(json.dumps([PRELUDE, [{"t": str(t), "code": c.code} for c, t in todo]]))
        (ctx.root / "batch.py").write_text(BATCH)
        log = job.with_suffix(".err")
        with open(log, "w") as err:
            cmd = [*ctx.limit(), ctx.python, str(ctx.root / "batch.py"), str(job)]
            quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": err}
            p = subprocess.Popen(cmd, cwd=ctx.root, env=ctx.env(ctx.root), start_new_session=True,
                                 **quiet)  # fmt: skip
            hung = watch(p, [t / "result.json" for _, t in todo], ctx.timeout)
        run = Run(p.returncode, "", log.read_text(errors="replace"), hung, ctx.timeout)
        for case, t in todo:
            if not (t / "result.json").is_file():  # the case the child was on: it hung or ended it
                out.append(classify_api(case, run, None))
                break
            out.append(classify_api(case, run, json.loads((t / "result.json").read_text())))
    return out


def watch(p: subprocess.Popen, results: list[Path], timeout: float) -> bool:
    """Wait for ``p`` while each case ends within ``timeout``; kill it (True) when one does not."""
    done, since = 0, time.perf_counter()
    while p.poll() is None:
        while done < len(results) and results[done].is_file():
            done, since = done + 1, time.perf_counter()
        if time.perf_counter() - since > timeout:
            kill_group(p)
            p.wait()
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------------------------
# Fault scenarios: real processes, signals; waits poll the store with a deadline


def wait_for(pred: Callable[[], bool], deadline: float) -> bool:
    end = time.time() + deadline
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def count(folder: Path, status: str) -> int:
    return (study_counts(folder) or Counter()).get(status, 0)


def owners(folder: Path) -> set[str]:
    db = folder / "study.db"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
            rows = c.execute("SELECT DISTINCT owner FROM runs WHERE status = 'running'")
            return {o for (o,) in rows if o}
    except sqlite3.Error:
        return set()


def end_of_sweep(run: Run, folder: Path, total: int) -> tuple[str, str]:
    """Whole or says so: exit 0 with every run stored, or one line naming what is unfinished."""
    if run.hung:
        return "hang", f"waited {run.seconds:.0f} s with no end and no message"
    if "Traceback (most recent call last)" in run.err:
        return "traceback", tail(run.err)
    counts = study_counts(folder) or Counter()
    if run.rc == 0:
        left = not_whole(counts)
        stored = counts.get("done", 0) + counts.get("diverged", 0)
        if left or stored != total:
            return "partial", f"exit 0 with {left or f'{stored} of {total} stored'}"
        return "ok", ""
    case = Case("", "", names=r"(?i)unfinished|not whole|again")
    return one_line(case, run.rc, run.err)


def fault_survivor(ctx: Ctx, t: Path) -> tuple[str, str]:
    """A holds a batch and is stopped; B trains the rest; A is SIGKILLed while B is busy."""
    out = t / "s"
    args = ["sweep", *LONG, "--epochs", "400", "--max-batch", "2", "--out", str(out)]
    a = ctx.popen(args, t, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = None
    try:
        if not wait_for(lambda: count(out, "running") == 2 or a.poll() is not None, 60):
            raise Skip("A never claimed a batch")
        a.send_signal(signal.SIGSTOP)
        if count(out, "done"):
            raise Skip("A finished a batch before it was stopped")
        b = ctx.popen([*args, "--json"], t, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: count(out, "running") >= 4 or b.poll() is not None, 60)
        a.kill()
        a.wait()
        return end_of_sweep(finish(b, ctx.timeout), out, LONG_RUNS)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                kill_group(p)
                p.wait()


def fault_stopped(ctx: Ctx, t: Path) -> tuple[str, str]:
    """A holds every run and is stopped (SIGSTOP), lease 2 s; B must take over; A, continued,
    must not store twice nor end in error."""
    out, env = t / "s", {"WDLAB_LEASE_SECONDS": "2"}
    args = ["sweep", *LONG, "--epochs", "500", "--out", str(out), "--json"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    a = ctx.popen(args, t, env, **pipes)
    b = None
    try:
        if not wait_for(lambda: count(out, "running") == LONG_RUNS or a.poll() is not None, 60):
            raise Skip("A never claimed the runs")
        a.send_signal(signal.SIGSTOP)
        if a.poll() is not None or count(out, "running") != LONG_RUNS:
            raise Skip("A finished before it was stopped")
        b = ctx.popen(args, t, env, **pipes)
        cls, detail = end_of_sweep(finish(b, ctx.timeout), out, LONG_RUNS)
        a.send_signal(signal.SIGCONT)
        if cls not in ("ok", "one-line"):
            return cls, detail
        a_cls, a_detail = end_of_sweep(finish(a, ctx.timeout), out, LONG_RUNS)
        if a_cls not in ("ok", "one-line"):
            return a_cls, f"the stopped holder, continued: {a_detail}"
        return cls, detail
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                kill_group(p)
                p.wait()


def fault_three(ctx: Ctx, t: Path) -> tuple[str, str]:
    """Three sweeps on one study, one SIGKILLed while it holds a batch: every run stored once,
    each survivor whole or says so."""
    out, epochs = t / "s", 300
    args = ["sweep", *LONG, "--epochs", str(epochs), "--max-batch", "2", "--out", str(out)]
    procs = [ctx.popen(args, t, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    wait_for(lambda: (out / "study.db").exists(), 30)
    procs += [ctx.popen(args, t, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for _ in range(2)]  # fmt: skip
    try:
        victim = []

        def holder():
            held = owners(out)
            victim.extend(p for p in procs if any(re.search(f":{p.pid}(:|$)", o) for o in held))
            return bool(victim)

        if not wait_for(holder, 60):
            raise Skip("no process was seen holding a batch")
        victim[0].kill()
        victim[0].wait()
        runs = [finish(p, ctx.timeout) for p in procs if p is not victim[0]]
        classes = [end_of_sweep(r, out, LONG_RUNS) for r in runs]
        for cls, detail in classes:
            if cls not in ("ok", "one-line"):
                return cls, detail
        db = out / "study.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            stored = c.execute("SELECT COUNT(*) FROM curves WHERE metric = 'train_loss'")
            n = stored.fetchone()[0]
        if n != LONG_RUNS * epochs:
            return "wrong-output", f"{n} train-loss points stored, not {LONG_RUNS * epochs}"
        if all(c == "one-line" for c, _ in classes):
            return "one-line", classes[0][1]
        return "ok", ""
    finally:
        for p in procs:
            if p.poll() is None:
                kill_group(p)
                p.wait()


def finals(folder: Path) -> dict[str, str]:
    db = folder / "study.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return dict(c.execute("SELECT key, final FROM runs"))


_REFERENCE: dict[str, dict[str, str]] = {}
SMALL = [*LONG, "--epochs", "150", "--max-batch", "1"]


def reference(ctx: Ctx) -> dict[str, str]:
    """The finals of the study trained without interruption (made once)."""
    if "ref" not in _REFERENCE:
        ref = ctx.root / "reference"
        ref.mkdir(exist_ok=True)
        run = ctx.process(["sweep", *SMALL, "--out", str(ref / "s")], ref)
        if run.rc != 0:
            raise Skip(f"the uninterrupted reference failed: {tail(run.err)}")
        _REFERENCE["ref"] = finals(ref / "s")
    return _REFERENCE["ref"]


def fault_signal(name: str) -> Callable[[Ctx, Path], tuple[str, str]]:
    def fault(ctx: Ctx, t: Path) -> tuple[str, str]:
        ref = reference(ctx)
        out = t / "s"
        p = ctx.popen(["sweep", *SMALL, "--out", str(out)], t, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)  # fmt: skip
        try:
            if not wait_for(lambda: count(out, "done") >= 2 or p.poll() is not None, 60):
                raise Skip("no run was stored within 60 s")
            if p.poll() is not None:
                raise Skip("the sweep ended before the signal")
            p.send_signal(getattr(signal, name))
            stopped = finish(p, ctx.timeout)
        finally:
            if p.poll() is None:
                kill_group(p)
                p.wait()
        if stopped.hung:
            return "hang", f"still running {ctx.timeout:.0f} s after {name}"
        if "Traceback (most recent call last)" in stopped.err:
            return "traceback", f"after {name}: {tail(stopped.err)}"
        if name == "SIGINT" and (stopped.rc != 130 or len(errors_of(stopped.err)) != 1):
            return "wrong-exit", f"after SIGINT: exit {stopped.rc}, {tail(stopped.err)}"
        resumed = ctx.process(["sweep", *SMALL, "--out", str(out), "--json"], t)
        cls, detail = end_of_sweep(resumed, out, LONG_RUNS)
        if cls != "ok":
            return cls, f"the resumed sweep: {detail}"
        got = finals(out)
        differ = [k for k in ref if got.get(k) != ref[k]]
        if differ or set(got) != set(ref):
            return "wrong-output", f"{len(differ)} runs differ from the uninterrupted sweep"
        return "ok", f"{name}: exit {stopped.rc}; resumed bitwise"

    fault.__name__ = f"fault_{name.lower()}"
    return fault


def fault_readers(ctx: Ctx, t: Path) -> tuple[str, str]:
    """``show`` and ``ls`` while a sweep writes the study: each ends well."""
    out = t / "s"
    p = ctx.popen(["sweep", *LONG, "--epochs", "300", "--max-batch", "1", "--out", str(out)], t,
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        if not wait_for(lambda: count(out, "running") >= 1 or p.poll() is not None, 60):
            raise Skip("the sweep never started a batch")
        for _ in range(2):
            for argv in (["show", str(out), "--json"], ["ls", str(t), "--json"]):
                r = ctx.process(argv, t)
                if r.hung or r.rc != 0 or "Traceback" in r.err:
                    case = Case("", "", expect="ok")
                    cls, detail = classify_cli(case, r, t, argv)
                    return cls, f"{argv[0]} during writes: {detail}"
                if json_doc(t, r):
                    return "wrong-output", f"{argv[0]} during writes: {json_doc(t, r)}"
        return end_of_sweep(finish(p, ctx.timeout), out, LONG_RUNS)
    finally:
        if p.poll() is None:
            kill_group(p)
            p.wait()


# --------------------------------------------------------------------------------------------
# The table


def tally(results: list[dict]) -> dict[str, dict]:
    """Per category (and ``total``): cases, as expected, not, skipped, and the classes."""
    out: dict[str, dict] = {}
    for key in [*CATEGORIES, "total"]:
        rows = [r for r in results if key in ("total", r["category"])]
        counted = [r for r in rows if r["class"] != "skipped"]
        out[key] = {
            "cases": len(counted),
            "expected": sum(r["as_expected"] for r in counted),
            "not": sum(not r["as_expected"] for r in counted),
            "skipped": len(rows) - len(counted),
            "classes": dict(Counter(r["class"] for r in rows).most_common()),
        }
    return out


def label(doc: dict) -> str:
    """The version and commit a document measured."""
    return ", ".join(x for x in (doc.get("version"), doc.get("commit")) if x)


def arrow(key: str, now: dict, before: dict | None, field_: str) -> str:
    """A count, or ``before → now``."""
    if before is None:
        return str(now[key][field_])
    was = before.get(key, {}).get(field_, 0)
    return f"{was} → {now[key][field_]}"


def classes_text(now: dict, before: dict | None) -> str:
    """The classes of a row with their counts (before→now with a baseline)."""
    if before is None:
        return ", ".join(f"{c} {n}" for c, n in now["classes"].items())
    keys = [c for c in CLASSES if c in now["classes"] or c in before.get("classes", {})]
    return ", ".join(
        f"{c} {before.get('classes', {}).get(c, 0)}→{now['classes'].get(c, 0)}" for c in keys
    )


def print_table(doc: dict, before: dict | None) -> None:
    """The table per category, then every case not as expected with its command."""
    tl, bt = doc["tally"], (before or {}).get("tally")
    print(f"# probe_bad_input: {doc['wdlab']} ({label(doc)}), {doc['cases']} cases "
          f"({doc['inputs']} inputs, {doc['faults']} fault scenarios), {doc['jobs']} jobs, "
          f"timeout {doc['timeout']:.0f} s, {doc['seconds']:.0f} s")  # fmt: skip
    for d in (doc, before or {}):
        if d.get("commit_at_end", d.get("commit")) != d.get("commit"):
            print(f"# warning: {d['wdlab']} changed while it was probed ({d['commit']} → "
                  f"{d['commit_at_end']}): its figures mix two versions; run it again")  # fmt: skip
    if before is not None:
        print(f"# before: {before['wdlab']} ({label(before)})")
    print(f"{'category':<40} {'cases':>9} {'expected':>10} {'not':>9} {'skipped':>8}  classes")
    for key in [*CATEGORIES, "total"]:
        if not (tl[key]["cases"] or tl[key]["skipped"] or (bt or {}).get(key, {}).get("cases")):
            continue
        title = "total" if key == "total" else f"{key:>4} {CATEGORIES[key]}"
        print(f"{title:<40} {arrow(key, tl, bt, 'cases'):>9} {arrow(key, tl, bt, 'expected'):>10}"
              f" {arrow(key, tl, bt, 'not'):>9} {arrow(key, tl, bt, 'skipped'):>8}  "
              f"{classes_text(tl[key], None if bt is None else bt.get(key, {}))}")  # fmt: skip
    bad = [r for r in doc["results"] if not r["as_expected"]]
    if bad:
        print(f"\nnot as expected ({len(bad)}):")
    for r in bad:
        print(f"  [{r['category']}] {r['case']}: {r['class']} (expected {r['expected']})")
        if r["detail"]:
            print(f"      {r['detail'][:400]}")
        command = r["command"].replace("\n", "\n        ")
        print(f"      $ {command[:800]}")
    if before is not None:
        was = {(r["category"], r["case"]): r for r in before["results"]}

        def was_ok(r):
            return was.get((r["category"], r["case"]), {}).get("as_expected")

        fixed = [r for r in doc["results"] if r["as_expected"] and was_ok(r) is False]
        print(f"\nnot as expected before, as expected now: {len(fixed)}")
        worse = [r for r in bad if was_ok(r)]
        if worse:
            print(f"as expected before, not now: {len(worse)}")
            for r in worse:
                print(f"  [{r['category']}] {r['case']}: {r['class']}")


def version(wdlab: str) -> str:
    """``wdlab --version`` of the checkout under test."""
    try:
        p = subprocess.run([wdlab, "--version"], capture_output=True, text=True, timeout=60)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "version unknown"


def commit_of(wdlab: str) -> str:
    """The commit of the checkout whose ``.venv/bin/wdlab`` this is (where it is one), with
    ``+dirty`` when its tracked files differ from that commit."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        git = ["git", "-C", str(Path(wdlab).parents[2])]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        if head.returncode != 0:
            return ""
        status = [*git, "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True, timeout=30).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    return ""


def python_of(wdlab: Path) -> str:
    """The interpreter the console script runs (its ``#!`` line), else its sibling python."""
    with contextlib.suppress(OSError, UnicodeDecodeError, IndexError):
        first = wdlab.read_bytes()[:400].split(b"\n", 1)[0].decode()
        if first.startswith("#!") and Path(first[2:].split()[0]).exists():
            return first[2:].split()[0]
    sibling = wdlab.with_name("python")
    return str(sibling) if sibling.exists() else sys.executable


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(sys.executable).with_name("wdlab")
    ap.add_argument("--wdlab", default=str(here), help="the console script under test")
    ap.add_argument("--jobs", type=int, default=2, help="cases at once (faults run alone)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (hang)")
    ap.add_argument("--memory", type=float, default=8.0, help="GiB per process (0: no cap)")
    ap.add_argument("--only", help="run the cases whose category or name match this regex")
    ap.add_argument("--no-faults", action="store_true", help="leave out the fault scenarios")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--before", help="a --json document of an earlier run: print before → after")
    ap.add_argument("--from", dest="saved", help="print this --json document instead of running")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    return ap.parse_args()


def run_all(ctx: Ctx, cases: list[Case], jobs: int) -> list[dict]:
    """The fault scenarios one at a time, then the rest ``jobs`` at a time (the API cases
    without set-up together, in shared child processes); results in the order of ``cases``."""
    results: dict[int, dict] = {}
    lock = threading.Lock()

    def record(found: dict[int, dict]) -> None:
        with lock:
            results.update(found)
            for r in found.values():
                progress(r, len(results), len(cases))

    indexed = list(enumerate(cases))
    for i, c in indexed:
        if c.fault is not None:
            record({i: run_case(ctx, c, i)})
    batch = [(i, c) for i, c in indexed if c.code is not None and not (c.setup or c.keep)]
    batched = {i for i, _ in batch}
    rest = [(i, c) for i, c in indexed if c.fault is None and i not in batched]
    work = [lambda: record(run_batch(ctx, batch))] if batch else []
    work += [lambda i=i, c=c: record({i: run_case(ctx, c, i)}) for i, c in rest]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for f in [pool.submit(w) for w in work]:
            f.result()
    return [results[i] for i in sorted(results)]


def remove(root: Path) -> None:
    """Remove the probe's folder (read-only folders made writable first)."""
    for p in root.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Build the fixtures, run every case, print the table."""
    args = parse_args()
    # Started in the background (nohup, `&`), this process ignores SIGINT, and so would every
    # wdlab it starts (an ignored signal stays ignored across exec): the Ctrl-C scenario would
    # measure nothing. A handler of our own is reset to the default in each child instead.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cases = [c for c in all_cases() if not args.only or re.search(args.only, f"{c.cat} {c.name}")]
    cases = [c for c in cases if not (args.no_faults and c.fault)]
    if args.list:
        for c in cases:
            command = c.command().replace("\n", "\n    ")
            print(f"[{c.cat}] {c.name} (expect {c.expect}): {command}")
        return
    doc = json.loads(Path(args.saved).read_text()) if args.saved else probe(args, cases)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print_table(doc, json.loads(Path(args.before).read_text()) if args.before else None)


def probe(args: argparse.Namespace, cases: list[Case]) -> dict:
    """Make the fixtures, run the cases, and the document of what came out."""
    wdlab = str(Path(args.wdlab).absolute())
    root = Path(tempfile.mkdtemp(prefix="wdlab-probe-"))
    ctx = Ctx(wdlab, python_of(Path(wdlab)), root, args.timeout, args.memory)
    t0, commit = time.perf_counter(), commit_of(wdlab)
    try:
        ctx.w.mkdir()
        make_world(ctx)
        results = run_all(ctx, cases, args.jobs)
    finally:
        if args.keep:
            print(f"# kept: {root}", file=sys.stderr)
        else:
            remove(root)
    return {"schema": "wdlab.probe_bad_input", "wdlab": wdlab, "version": version(wdlab),
            "commit": commit, "commit_at_end": commit_of(wdlab),
            "python": ctx.python, "cases": len(results),
            "inputs": sum(c.fault is None for c in cases),
            "faults": sum(c.fault is not None for c in cases), "jobs": args.jobs,
            "timeout": args.timeout, "seconds": round(time.perf_counter() - t0, 1),
            "tally": tally(results), "results": results}  # fmt: skip


def progress(r: dict, done: int, total: int) -> None:
    """One line per finished case on stderr, on a terminal only."""
    if sys.stderr.isatty():
        mark = "  " if r["as_expected"] else "!!"
        print(f"{mark} {done:>3}/{total} [{r['category']}] {r['case']}: {r['class']}",
              file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
