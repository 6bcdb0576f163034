"""User code loads as Python loads it (issue 20 item 6, issue 25 item 10): ``path/file.py:fn``
puts the file's folder first on ``sys.path``, so a model file imports its neighbours; audit,
run and sweep share that loader; a module that does not load is one line naming the file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wdlab.loading import load_callable
from wdlab.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_imports(monkeypatch):
    """Whatever a test imports from its scratch folders is forgotten afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _work(tmp_path: Path, tag: str) -> Path:
    """A scratch folder ``work`` holding ``<tag>_model.py``, which imports ``<tag>_data`` (its
    neighbour) at the top and ``<tag>_late`` inside the factory, and a set-up for audit."""
    work = tmp_path / "work"
    work.mkdir()
    (work / f"{tag}_data.py").write_text("IN, OUT = 3, 2\n")
    (work / f"{tag}_late.py").write_text("HIDDEN = 5\n")
    (work / f"{tag}_model.py").write_text(
        f"import torch\nfrom torch import nn\nimport {tag}_data\n\n"
        f"def make():\n    import {tag}_late\n"
        f"    return nn.Sequential(nn.Linear({tag}_data.IN, {tag}_late.HIDDEN),\n"
        f"                         nn.Linear({tag}_late.HIDDEN, {tag}_data.OUT))\n\n"
        "def setup():\n    m = make()\n"
        "    return m, torch.optim.AdamW(m.parameters(), weight_decay=0.01)\n"
    )
    return work


def test_a_file_imports_its_neighbours(tmp_path, monkeypatch, clean_imports):
    work = _work(tmp_path, "sib1")
    monkeypatch.chdir(tmp_path)  # as a user would: `--model work/sib1_model.py:make`
    make = load_callable("work/sib1_model.py:make", "model factory ")
    model = make()  # its late import finds the neighbour too
    assert [tuple(p.shape) for p in model.parameters()] == [(5, 3), (5,), (2, 5), (2,)]
    assert sys.path[0] == str(work.resolve())
    # the module is registered under its name, once: a second load is the same module
    assert load_callable("work/sib1_model.py:make") is make
    assert sys.modules["sib1_model"].make is make


def test_an_edited_file_loads_afresh_an_unchanged_one_once(tmp_path, clean_imports):
    path = tmp_path / "edited_mod.py"
    path.write_text("N = 1\ndef make():\n    return N\n")
    first = load_callable(f"{path}:make")
    assert load_callable(f"{path}:make") is first  # not run again
    path.write_text("N = 2\ndef make():\n    return N\n")
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))  # a later modification time
    assert load_callable(f"{path}:make")() == 2  # a notebook user's edit is seen


def test_run_and_sweep_build_the_factory_through_the_same_loader(
    tmp_path, monkeypatch, clean_imports
):
    _work(tmp_path, "sib2")
    monkeypatch.chdir(tmp_path)
    model = ModelSpec("custom", factory="work/sib2_model.py:make").build(seed=0)
    assert isinstance(model, torch.nn.Sequential)


def test_audit_loads_a_setup_that_imports_its_neighbour(tmp_path):
    _work(tmp_path, "sib3")
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", "audit", "work/sib3_model.py:setup", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert "No module named" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr  # 1: the audit found something to say
    assert '"parameters"' in proc.stdout or "findings" in proc.stdout


BROKEN = {
    "syntax": ("def make(:\n    pass\n", 1, "SyntaxError"),
    "raises": ("import torch\nx = 1\nraise RuntimeError('no GPU here')\n", 3, "no GPU here"),
    "zerodiv": ("a = 1\n\nb = a / 0\n", 3, "ZeroDivisionError: division by zero"),
    "exits": ("import sys\nsys.exit(3)\n", 2, "sys.exit(3)"),
    "missing": ("import no_such_module_anywhere\n", 1, "No module named"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_module_that_does_not_load_is_one_line_naming_the_file(tmp_path, kind, clean_imports):
    source, line, fragment = BROKEN[kind]
    path = tmp_path / f"broken_{kind}.py"
    path.write_text(source)
    with pytest.raises(ValueError) as info:
        load_callable(f"{path}:make", "model factory ")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"cannot load model factory '{path}:make': ")
    assert f"{path.name}, line {line}" in text, text
    assert fragment in text, text
    assert f"broken_{kind}" not in sys.modules  # a failed import leaves nothing behind


def test_a_missing_file_or_name_is_one_line(tmp_path, clean_imports):
    with pytest.raises(ValueError, match=r"no file .*nothere\.py"):
        load_callable(f"{tmp_path}/nothere.py:make")
    (tmp_path / "fine_mod.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no attribute 'make'"):
        load_callable(f"{tmp_path}/fine_mod.py:make")
    with pytest.raises(ValueError, match="is not callable"):
        load_callable(f"{tmp_path}/fine_mod.py:x")


@pytest.mark.parametrize("command", ["audit", "run"])
def test_the_cli_names_the_file_of_a_syntax_error_and_exits_2(tmp_path, command):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "bad_model.py").write_text("def make(:\n")
    run = ["run", "--data", "wine", "--model", "work/bad_model.py:make", "--epochs", "1"]
    argv = ["audit", "work/bad_model.py:make"] if command == "audit" else [*run, "--out", "o"]
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
    assert "bad_model.py, line 1: SyntaxError" in lines[0], lines[0]
