"""What a result says and keeps, as a new user met it (issue 20's new-user items 2, 7, 15, 18,
20): ``keep`` never deletes weights another call kept; a study whose every run diverged or
failed says so; a study's model is rebuilt from any folder; ``model()``'s lines name the run
asked for and what the study holds; the answer row's τ_epoch is the recommended wd's."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import pytest
import torch
from torch import nn

import wdlab
from test_selection import run, sweep_result
from wdlab.cli import main
from wdlab.integrations.content import selection_markdown
from wdlab.pipelines import SweepResult, load_study
from wdlab.pipelines.outputs import MANIFEST, record_outputs
from wdlab.pipelines.weights import FOLDER, prune_weights, save_weights, weights_path
from wdlab.records import ALL_PRUNED, Curves, RunConfig, RunResult
from wdlab.report.html import write_report
from wdlab.report.text import answer_line
from wdlab.selection import GAIN, NO_GAIN


def _splits():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 6, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long()
    return {"train": (X[:80], y[:80]), "val": (X[80:100], y[80:100]), "test": (X[100:], y[100:])}


def make(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


KW = dict(optimizer="adamw", lr=1e-2, weight_decay=[1e-3, 1e-1], seeds=3, epochs=2, batch_size=16)


def _files(folder):
    return sorted(p.name for p in (folder / FOLDER).glob("*.pt"))


# ---------------------------------------------------------------------------------------------
# Item 2: keep decides about the runs a call trains; it never deletes what another call kept.


def test_sweeping_again_with_keep_best_deletes_no_weights_kept_with_keep_all(tmp_path):
    out = tmp_path / "s"
    wdlab.sweep(make, _splits(), out=out, keep="all", **KW)
    before = _files(out)
    assert len(before) == 9  # the wd = 0 reference and two weight decays, three seeds each
    r = wdlab.sweep(make, _splits(), out=out, **KW)  # keep="best", the default
    assert _files(out) == before
    manifest = json.loads((out / FOLDER / MANIFEST).read_text())
    assert sorted(manifest) == before  # still recorded: a later call may still replace them
    other = 1e-1 if r.best[0]["use_wd"] != 1e-1 else 1e-3  # a run keep="best" did not choose
    assert isinstance(r.model(seed=1, mode="decoupled", weight_decay=other), nn.Module)


def test_the_cli_keep_best_after_keep_all_keeps_every_file(tmp_path, capsys):
    out = tmp_path / "s"
    flags = ["sweep", "--data", "wine", "--epochs", "1", "--seeds", "0,1", "--mode", "decoupled"]
    flags += ["--wd", "0,0.01", "--out", str(out), "--json"]
    assert main([*flags, "--keep", "all"]) == 0
    before = _files(out)
    assert len(before) == 4
    assert main([*flags, "--keep", "best"]) == 0
    assert _files(out) == before


def _result(wd, seed=0):
    cfg = RunConfig("decoupled", wd, 0.01, "adamw", (), seed)
    return RunResult(cfg, Curves(), {}, params={"w": torch.full((2,), wd)})


def test_only_files_written_under_keep_best_and_not_chosen_are_pruned(tmp_path):
    """A study finished by another call prunes the files an interrupted ``keep="best"`` call
    wrote (their fate was the choice's); files written under ``keep="all"`` or recorded by
    wdlab 0.2 (no ``keep``) stay; so does every file of another source or of the user's."""
    chosen, unchosen, kept_all, old = (_result(w) for w in (0.1, 0.2, 0.3, 0.4))
    save_weights(tmp_path, [chosen, unchosen], "study A", keep="best")
    save_weights(tmp_path, [kept_all], "study A", keep="all")
    folder = tmp_path / FOLDER
    old_path = weights_path(tmp_path, old.config)
    torch.save({"w": torch.zeros(2)}, old_path)
    record_outputs(folder, [old_path], "study A")  # as wdlab 0.2 recorded it: no keep
    (folder / "mine.pt").write_bytes(b"the user's")
    assert prune_weights(tmp_path, [chosen], "study A") == 1
    left = {p.name for p in folder.glob("*.pt")}
    assert weights_path(tmp_path, unchosen.config).name not in left
    names = {weights_path(tmp_path, r.config).name for r in (chosen, kept_all, old)}
    assert left == names | {"mine.pt"}
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest) == names  # the deleted one forgotten, the others as recorded
    assert manifest[weights_path(tmp_path, kept_all.config).name]["keep"] == "all"
    assert prune_weights(tmp_path, [], "study B") == 0  # another study's files: never


# ---------------------------------------------------------------------------------------------
# Item 7: a study whose every run diverged or failed says so (it had a validation split).


def _diverged(mode, wd, seed):
    r = run(mode, wd, seed, 0.5, status="diverged")
    r.final = {"train_loss": float("nan")}
    return r


def test_every_run_diverged_is_said_and_not_blamed_on_the_split(tmp_path):
    runs = [_diverged("none", 0.0, s) for s in range(3)]
    runs += [_diverged("decoupled", 1e-2, s) for s in range(3)]
    res = SweepResult(runs=runs, name="d", task="multiclass", counts={"diverged": 6})
    res.select()
    assert res.selection == []
    text = res.table()
    assert "every run diverged: no weight decay is chosen" in text
    assert "validation split" not in text and "engine:" not in text  # no run said its engine
    assert "every run diverged" in repr(res) and "validation split" not in repr(res)
    html = write_report(res, tmp_path)["report"].read_text()
    assert "Every run diverged: no weight decay is chosen" in html
    assert "validation split" not in html and "engine:" not in html
    # every run's table says each one's status and the validation metric a choice reads
    assert '<th class="">status</th>' in html and '<th class="">val accuracy</th>' in html
    assert html.count('<td class="">diverged</td>') == 6
    assert selection_markdown(res) == "every run diverged: no weight decay is chosen"


def test_the_one_line_answer_names_the_settings_with_nothing_to_choose():
    """A browser trial: ``repr`` of a study whose lr 1e4 diverged on every run gave only the
    answer at lr 0.1 (``show`` and the report named lr 1e4); and a setting whose every wd > 0
    was pruned read "use decoupled lr 0.001: every wd > 0 pruned", advice where none is. Each
    setting now says "use" only where it advises; one where only the wd = 0 reference trained
    is named too (a review: it said "no weight decay chosen")."""
    cells = (("none", 0.0), ("decoupled", 0.01))
    runs = [run(m, wd, s, 0.8) for m, wd in cells for s in range(3)]
    runs += [_diverged(m, wd, s) for m, wd in cells for s in range(3)]
    for r in runs[6:]:
        r.config = replace(r.config, lr=1e4)
    res = SweepResult(runs=runs, task="multiclass", counts={"done": 6, "diverged": 6})
    res.select()
    assert [(u["mode"], u["lr"]) for u in res.unanswered] == [("decoupled", 1e4), ("none", 1e4)]
    assert repr(res).endswith(
        "; decoupled lr 0.01: use wd 0 (no measurable gain); decoupled lr 10000: every run "
        "diverged>"
    )  # the wd = 0 reference's own setting is not one to advise on
    pruned = {"mode": "decoupled", "lr": 1e-3, "verdict": ALL_PRUNED}
    res.selection.append(pruned)
    assert res.answer() == (
        "decoupled lr 0.01: use wd 0 (no measurable gain); decoupled lr 0.001: every wd > 0 "
        "pruned, none compared with wd = 0; decoupled lr 10000: every run diverged"
    )
    alone = SweepResult(runs=[], task="multiclass")
    alone.selection = [pruned]
    assert alone.answer() == "decoupled lr 0.001: every wd > 0 pruned, none compared with wd = 0"
    only_zero = [run("none", 0.0, s, 0.8) for s in range(3)]
    only_zero += [_diverged("decoupled", 0.01, s) for s in range(3)]
    res = SweepResult(runs=only_zero, task="multiclass", counts={"done": 3, "diverged": 3})
    res.select()
    assert res.answer() == "decoupled lr 0.01: every run diverged"


def test_failed_and_diverged_runs_are_counted_and_no_split_is_still_said():
    runs = [_diverged("decoupled", 1e-2, s) for s in range(2)]
    res = SweepResult(runs=runs, task="multiclass", counts={"diverged": 2, "failed": 4})
    assert "every run diverged or failed (2 diverged, 4 failed)" in res.table()
    res = SweepResult(runs=[], task="multiclass", counts={"failed": 3})
    assert res.answer() == "every run failed: no weight decay is chosen"
    assert SweepResult(runs=[]).answer() == "no run: no weight decay is chosen"
    train_test = run("none", 0.0, 0, 0.5)  # the article's data: train and test only
    train_test.final = {k: v for k, v in train_test.final.items() if not k.startswith("val_")}
    res = SweepResult(runs=[train_test], task="multiclass")
    assert "no validation split" in res.table()


def test_a_study_that_diverged_says_so_in_show(tmp_path, capsys):
    out = tmp_path / "d"
    flags = ["sweep", "--data", "wine", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3"]
    assert main([*flags, "--seeds", "0,1", "--wd", "0,0.01", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    said = capsys.readouterr().out
    assert "every run diverged: no weight decay is chosen" in said
    assert "validation split" not in said
    assert "every run diverged" in repr(load_study(out))


# ---------------------------------------------------------------------------------------------
# Item 15: a factory named by a relative path is found from any folder.

NET = """
import torch
from torch import nn

def make(in_dim, out_dim, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_dim, 4), nn.Tanh(), nn.Linear(4, out_dim))
"""


def _net_study(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "net.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(work)
    flags = ["sweep", "--data", "wine", "--model", "net.py:make", "--epochs", "1"]
    flags += ["--seeds", "0,1", "--wd", "0,0.01", "--mode", "decoupled", "--keep", "all"]
    assert main([*flags, "--out", "studies/net", "--json"]) == 0
    return work, flags


def test_a_study_read_back_elsewhere_finds_its_factory_file(tmp_path, monkeypatch, capsys):
    work, _ = _net_study(tmp_path, monkeypatch)
    here = load_study(work / "studies" / "net").model(1).state_dict()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    back = load_study(work / "studies" / "net")
    assert back.config["model"]["factory"] == "net.py:make"  # stored as given: same identity
    state = back.model(1).state_dict()
    assert all(torch.equal(state[k], here[k]) for k in here)


def test_the_working_folder_is_no_part_of_the_identity(tmp_path, monkeypatch, capsys):
    work, flags = _net_study(tmp_path, monkeypatch)
    second = tmp_path / "second"
    second.mkdir()
    (second / "net.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(second)
    capsys.readouterr()
    assert main([*flags, "--out", str(work / "studies" / "net"), "--json"]) == 0  # resumes
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 4  # nothing new


def test_a_factory_file_found_nowhere_is_one_line_that_names_factory(tmp_path, monkeypatch):
    work, _ = _net_study(tmp_path, monkeypatch)
    (work / "net.py").rename(work / "moved.py")
    back = load_study(work / "studies" / "net")
    with pytest.raises(ValueError) as exc:
        back.model()
    line = str(exc.value)
    assert "\n" not in line and "no file net.py in" in line and "(where the sweep ran)" in line
    assert "give model(factory=" in line
    back.data.pop("ran_in")  # a study made before wdlab recorded where its sweep ran
    with pytest.raises(ValueError, match=r"does not record where its sweep ran.*model\(factory="):
        back.model()
    moved = back.model(factory=str(work / "moved.py") + ":make")  # the keyword it names
    assert isinstance(moved, nn.Module)


# ---------------------------------------------------------------------------------------------
# Item 18: model()'s lines name the run asked for and what the study holds.


def test_model_lines_name_the_run_asked_for_and_what_the_study_holds(tmp_path):
    r = wdlab.sweep(make, _splits(), out=tmp_path / "none", keep="none", **KW)
    with pytest.raises(ValueError) as exc:
        r.model()
    line = str(exc.value)
    assert "of the wd = 0 run at lr 0.01, seed 0 were not kept" in line and "none at" not in line
    assert "keeps no run's weights" in line and "keep='none'" in line
    r = wdlab.sweep(make, _splits(), out=tmp_path / "best", **KW)
    with pytest.raises(ValueError) as exc:
        r.model(seed=7, weight_decay=0)
    line = str(exc.value)
    assert "decoupled at lr 0.01, wd 0 (wd = 0: the none reference runs) with seed 7" in line
    assert line.endswith("its seeds are 0, 1, 2")
    with pytest.raises(ValueError) as exc:
        r.model(weight_decay=0.5)
    assert str(exc.value) == (
        "no run of decoupled at lr 0.01, wd 0.5: the study's weight decays for decoupled at "
        "lr 0.01 are 0 (the none reference), 0.001, 0.1"
    )
    unchosen = 1e-1 if r.best[0]["use_wd"] != 1e-1 else 1e-3
    with pytest.raises(ValueError) as exc:
        r.model(weight_decay=unchosen)
    line = str(exc.value)
    assert f"wd {unchosen:g}, seed 0 were not kept" in line
    assert "the study keeps the weights of " in line and "(seeds 0, 1, 2)" in line


def test_model_of_a_study_with_no_choice_says_why(tmp_path):
    runs = [_diverged("decoupled", 1e-2, s) for s in range(3)]
    res = SweepResult(runs=runs, task="multiclass", directory=tmp_path, counts={"diverged": 3})
    with pytest.raises(ValueError, match=r"^no trained model to return: every run diverged"):
        res.model()


# ---------------------------------------------------------------------------------------------
# Item 20: the τ_epoch beside the weight decay to use is that weight decay's.


def test_the_answer_row_shows_the_tau_of_the_wd_it_recommends(tmp_path):
    nogain = sweep_result()  # use wd 0 (the best mean: 0.0316, τ_epoch 12.5)
    (row,) = [s for s in nogain.selection if s["mode"] == "decoupled"]
    assert row["verdict"] == NO_GAIN and row["tau_epoch"] == 12.5
    assert "12" not in answer_line(row).split("  ")[0]
    assert "τ_epoch" not in nogain.table()  # no recommended wd has a timescale
    html = write_report(nogain, tmp_path / "a")["report"].read_text()
    assert "τ_epoch" not in html[html.index("<body>") :]
    gain = sweep_result({0.0: [0.80, 0.80, 0.81], 1e-3: [0.85, 0.86, 0.85]})
    (row,) = [s for s in gain.selection if s["mode"] == "decoupled"]
    assert row["verdict"] == GAIN
    lines = gain.table().splitlines()
    head = next(ln for ln in lines if ln.startswith("mode") and "τ_epoch" in ln)
    mine = next(ln for ln in lines[lines.index(head) :] if ln.startswith("decoupled"))
    ref = next(ln for ln in lines[lines.index(head) :] if ln.startswith("none"))
    assert mine.split()[2:4] == ["0.001", "12.5"] and ref.split()[2:4] == ["0", "—"]
