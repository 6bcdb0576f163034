"""The article's experiment: `wdlab demo` and its Python API, at small sizes."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from numerics import assert_normwise, per_steps
from wdlab.cli import main
from wdlab.data import seed_noise
from wdlab.pipelines import DemoSettings, run_demo, seed_init

SMALL = DemoSettings(epochs=200, dim=64, lr=0.1, weight_decay=0.1, seed=0, eval_every=10)


@pytest.fixture(scope="module")
def small():
    return run_demo(SMALL, device="cpu")


@pytest.mark.numerics
def test_manual_equals_builtin_bitwise(small):
    by = {r.config.label: r for r in small.runs}
    assert small.check.identical and small.check.max_abs_diff == 0.0
    for name, p in by["manual"].params.items():
        assert torch.equal(p, by["builtin"].params[name]), name
    assert by["manual"].curves["train_loss"] == by["builtin"].curves["train_loss"]
    # and decay really changed something: none differs from manual
    assert not torch.equal(
        by["none"].params["hidden_layer.weight"], by["manual"].params["hidden_layer.weight"]
    )


def test_decay_shrinks_weight_norm(small):
    by = {r.config.label: r for r in small.runs}
    assert by["manual"].final["weight_norm"] < 0.5 * by["none"].final["weight_norm"]
    assert by["builtin"].final["weight_norm"] == by["manual"].final["weight_norm"]


def test_no_decay_overfits(small):
    none = next(r for r in small.runs if r.config.label == "none")
    test_loss = none.curves["test_loss"]
    assert test_loss[-1] > min(test_loss) + 0.01
    assert none.best["epoch"] < SMALL.epochs
    # it memorises the random labels: train accuracy well above the test accuracy
    assert none.final["train_acc"] > none.final["test_acc"] + 0.15


def test_demo_is_deterministic(small):
    again = run_demo(SMALL, device="cpu")
    for a, b in zip(small.runs, again.runs, strict=True):
        assert a.curves == b.curves
        for name in a.params:
            assert torch.equal(a.params[name], b.params[name])
    other = run_demo(DemoSettings(epochs=20, dim=64, seed=1), device="cpu")
    assert other.runs[0].curves["train_loss"][0] != small.runs[0].curves["train_loss"][0]


@pytest.mark.numerics
def test_engine_matches_the_articles_plain_loop():
    """The batched engine trains each regime exactly as the article's loop would, alone."""
    s = DemoSettings(epochs=30, dim=48, eval_every=5)
    ours = {r.config.label: r for r in run_demo(s, device="cpu").runs}
    data = seed_noise(s.dim, s.seed)
    for regime in ("none", "manual", "builtin"):
        model = seed_init(s.dim)(s.seed)
        wd_opt = s.weight_decay if regime == "builtin" else 0.0
        opt = torch.optim.SGD(model.parameters(), lr=s.lr, weight_decay=wd_opt)
        losses = []
        for _ in range(s.epochs + 1):
            loss = F.binary_cross_entropy_with_logits(model(data.X_train).squeeze(-1), data.y_train)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            if regime == "manual":
                for w in model.parameters():
                    w.grad.add_(w, alpha=s.weight_decay)
            opt.step()
        curve = ours[regime].curves["train_loss"]
        assert_normwise(curve, losses, per_steps(s.epochs + 1), f"{regime} losses")
        theirs = dict(model.named_parameters())
        assert_normwise(ours[regime].params, theirs, per_steps(s.epochs + 1), regime)


@pytest.mark.numerics
def test_evaluation_does_not_change_training():
    a = run_demo(DemoSettings(epochs=20, dim=32, eval_every=1), device="cpu")
    b = run_demo(DemoSettings(epochs=20, dim=32, eval_every=7), device="cpu")
    for ra, rb in zip(a.runs, b.runs, strict=True):
        assert ra.curves["train_loss"] == rb.curves["train_loss"]
        assert ra.final.keys() == rb.final.keys()
        for k, v in ra.final.items():  # NaN where a value is undefined (τ without decay)
            assert v == rb.final[k] or (math.isnan(v) and math.isnan(rb.final[k])), k
    assert b.runs[0].curves["eval_epoch"] == [0, 7, 14, 20]


def test_final_train_loss_is_evaluated_after_the_last_update(small):
    r = small.runs[0]
    # the eval at epoch e uses the weights after step e, i.e. the ones step e+1 computes with
    i = r.curves["eval_epoch"].index(100)
    assert r.curves["train_loss_eval"][i] == r.curves["train_loss"][101]


def test_json_contract_and_files(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--epochs", "20", "--dim", "32", "--json", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.loads(printed)  # exactly one JSON document, nothing else
    assert [r["regime"] for r in doc["runs"]] == ["none", "manual", "builtin"]
    for run in doc["runs"]:
        assert set(run["final"]) >= {
            "train_loss",
            "test_loss",
            "train_acc",
            "test_acc",
            "weight_norm",
        }
        c = run["curves"]
        assert c["epoch"] == list(range(21)) and len(c["train_loss"]) == 21
        assert c["test_epoch"] == [0, 10, 20] and len(c["test_loss"]) == 3
        assert isinstance(run["weight_decay"], float)
    assert doc["runs"][0]["weight_decay"] == 0.0 and doc["runs"][1]["weight_decay"] == 0.1
    chk = doc["checks"]["manual_equals_builtin"]
    assert chk["identical"] is True and chk["max_abs_diff"] == 0.0
    assert isinstance(doc["seconds"], float)
    assert json.loads((out / "results.json").read_text())["runs"] == doc["runs"]
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0].startswith("regime,mode,weight_decay,lr,seed,epoch,train_loss,weight_norm")
    assert len(lines) == 1 + 3 * 21
    assert (out / "losses.png").stat().st_size > 10_000


def test_table_output(tmp_path, capsys):
    rc = main(["demo", "--epochs", "10", "--dim", "32", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    for word in ("regime", "none", "manual", "builtin", "IDENTICAL", "losses.png"):
        assert word in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--weight-decay", "-0.1"], "--weight-decay"),
        (["--out", "/proc/wdlab-cannot-write"], "--out"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--lr", "nan"], "--lr"),
    ],
)
def test_bad_input_is_refused_in_one_line(args, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", "demo", "--dim", "8", "--epochs", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert proc.stdout == ""


def test_settings_refuse_bad_values_in_the_api():
    with pytest.raises(ValueError, match="epochs"):
        DemoSettings(epochs=0)
    with pytest.raises(ValueError, match="weight decay"):
        DemoSettings(weight_decay=-1.0)
    with pytest.raises(ValueError, match="lr"):
        DemoSettings(lr=math.inf)


def test_demo_checks_device_memory_and_out_before_training(tmp_path, capsys, monkeypatch):
    import wdlab.pipelines

    ran = []
    monkeypatch.setattr(wdlab.pipelines, "run_demo", lambda *a, **k: ran.append(1))
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "bogus"])
    assert exc.value.code == 2 and "unknown device 'bogus'" in capsys.readouterr().err
    assert main(["demo", "--dim", "300000", "--out", str(tmp_path)]) == 2
    assert "needs about" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["demo", "--epochs", "2", "--dim", "8", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["demo", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "CPU-only" in capsys.readouterr().err
    assert ran == []


def test_a_diverged_demo_is_not_called_identical(tmp_path, capsys):
    """At lr 1e10 every regime diverges; a diverged row's weights are zeroed, not kept, so
    "identical (bitwise), max |Δ| = 0" would compare nothing: the check says it was not made,
    fails, and the command exits 1 with one line saying why; the JSON and a reloaded
    results.json say the same (null, not 0)."""
    from wdlab.records import Result

    result = run_demo(DemoSettings(dim=40, epochs=20, lr=1e10), device="cpu")
    assert [r.status for r in result.runs] == ["diverged"] * 3
    c = result.check
    assert not c.identical and not c.passed and math.isnan(c.max_abs_diff)
    assert c.verdict().startswith("not compared: manual and builtin diverged")
    text = result.table()
    assert "diverged (a non-finite loss): none, manual, builtin" in text
    assert "IDENTICAL" not in text and "NOT COMPARED: manual and builtin diverged" in text
    back = Result.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.answer() == result.answer() == f"manual vs builtin: {c.verdict()}"
    out = tmp_path / "o"
    args = ["demo", "--dim", "40", "--epochs", "20", "--lr", "1e10", "--out", str(out)]
    capsys.readouterr()
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["checks"]["manual_equals_builtin"]["max_abs_diff"] is None
    shouted = [line for line in captured.err.splitlines() if line.startswith("!!!")]
    assert shouted == [f"!!! manual vs builtin {c.verdict()}; lower --lr !!!"]
