"""Honest answers: seeds reach every factory (one path for the CLI and Python), a verdict that
means what it says with the seeds at hand (a paired t-test whose error rate is stated and held
here), everything that changes the numbers in the study's identity, and a user's factory that
raises, hangs or returns a broken module stopped in one line."""

import contextlib
import math
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from torch import nn

import wdlab
from test_selection import grid, row, sweep_result
from wdlab import selection
from wdlab.cli import main
from wdlab.data import from_splits
from wdlab.jsonsafe import dumps
from wdlab.models import ModelSpec
from wdlab.pipelines import load_study
from wdlab.pipelines.own import resolve_model
from wdlab.report.html import write_report
from wdlab.selection import GAIN, NO_GAIN, select

# Names added with these behaviours are read where they are used, so that on a wdlab without
# them each test fails on its own rather than the whole file at import.


def _data(n=120, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    a, b = int(n * 0.6), int(n * 0.8)
    return {"train": (X[:a], y[:a]), "val": (X[a:b], y[a:b]), "test": (X[b:], y[b:])}


TINY = dict(optimizer="sgd", lr=0.1, weight_decay=[1e-2], modes=["coupled"], epochs=2)


def one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def cli_error(capsys, argv):
    """``wdlab ARGV`` in this process: exit status 2 and its one line of error."""
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------------------------------------
# Seeds reach every factory, one way for the CLI and Python


def test_a_factory_with_a_seed_default_gets_every_seed():
    calls = []

    def make(seed=0):  # the common way to write a seeded factory
        calls.append(seed)
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))

    res = wdlab.sweep(make, _data(), seeds=3, **TINY)
    assert {0, 1, 2} <= set(calls)
    norms = {r.config.seed: r.final["weight_norm"] for r in res.runs if r.config.mode == "coupled"}
    assert len(set(norms.values())) == 3  # three seeds, three different runs


def test_sizes_and_the_seed_go_by_name_and_a_lone_parameter_gets_the_seed():
    calls = []

    def make(in_dim, out_dim=1, seed=0):
        calls.append((in_dim, out_dim, seed))
        return nn.Linear(in_dim, out_dim)

    wdlab.sweep(make, _data(), seeds=2, **TINY)
    assert set(calls) == {(6, 2, 0), (6, 2, 1)}
    lone = []

    def positional(s):  # a single required parameter of another name: the seed, positionally
        lone.append(s)
        return nn.Linear(6, 2)

    wdlab.sweep(positional, _data(), seeds=2, **TINY)
    assert set(lone) == {0, 1}


def test_the_cli_and_python_build_a_factory_the_same_way(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def make(in_dim, out_dim=1, seed=0):
                torch.manual_seed(seed + 100)
                return nn.Sequential(nn.Linear(in_dim, 5), nn.Tanh(), nn.Linear(5, out_dim))
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mymodel

    ds = from_splits(_data())
    python, _ = resolve_model(mymodel.make, ds, 300.0)
    cli = ModelSpec("custom", in_dim=ds.in_dim, out_dim=ds.out_dim, factory="mymodel.py:make")
    for seed in (0, 3):
        a, b = python.build(seed).state_dict(), cli.build(seed).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(python.build(0)[0].weight, python.build(3)[0].weight)
    # the CLI gives each seed its own weights too
    flags = ["--data", "wine", "--model", "mymodel.py:make", "--epochs", "1", "--seeds", "2"]
    assert main(["sweep", *flags, "--out", "s", "--json"]) == 0
    norms = [r.final["weight_norm"] for r in load_study(tmp_path / "s").runs]
    assert len(set(norms)) == 2


def test_a_factory_that_ignores_the_seed_is_refused_before_anything_is_stored(tmp_path, capsys):
    def make(seed=0):
        torch.manual_seed(0)  # every seed gets seed 0's weights
        return nn.Linear(6, 2)

    with pytest.raises(ValueError) as exc:
        wdlab.sweep(make, _data(), seeds=2, out=tmp_path / "s", **TINY)
    assert "same initial weights for seeds 0 and 1" in one_line(exc)
    assert "def make(seed=0): torch.manual_seed(seed)" in str(exc.value)
    assert not (tmp_path / "s" / "study.db").exists()
    wdlab.sweep(make, _data(), seeds=1, **TINY)  # one seed: nothing to compare, it runs
    (tmp_path / "fixed.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def make(seed=0):\n    torch.manual_seed(0)\n    return nn.Linear(13, 3)\n"
    )
    flags = ["--data", "wine", "--model", f"{tmp_path}/fixed.py:make", "--seeds", "2"]
    line = cli_error(capsys, ["sweep", *flags, "--epochs", "1", "--out", str(tmp_path / "c")])
    assert "same initial weights for seeds 0 and 1" in line


# ---------------------------------------------------------------------------------------------
# The verdict: a one-sided paired t-test over seeds, its error rate stated and held


def test_the_t_distribution_matches_its_closed_forms_and_scipy():
    from wdlab.stats import t_quantile, t_sf

    for t in (0.0, 0.3, 1.0, 2.5, 7.0, 40.0, -1.5):
        assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
        assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-11)
    assert t_quantile(0.95, 1) == pytest.approx(math.tan(math.pi * 0.45), rel=1e-12)
    assert t_quantile(0.95, 2) == pytest.approx(2.919985580355516, rel=1e-12)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 10, 30, 200, 2.5):
        for t in (-3.0, 0.0, 0.5, 1.0, 2.0, 4.0, 10.0, 100.0):
            assert t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-10, abs=1e-300)
        for q in (0.6, 0.9, 0.95, 0.99, 0.999, 0.9999):
            assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-10)


def test_two_seeds_are_too_few_to_tell_and_say_how_many_are_needed(tmp_path):
    # the case: two seeds, each ahead of wd = 0 by the same validation row
    r = row(select(grid({0.0: [0.80, 0.82], 1e-2: [0.82, 0.84]}), "multiclass"))
    assert r["better_than_zero"] is False and r["verdict"].startswith(selection.TOO_FEW)
    assert f"needs {selection.MIN_SEEDS} or more" in r["verdict"]
    res = sweep_result({0.0: [0.80, 0.82], 1e-2: [0.82, 0.84]})
    table, html = res.table(), write_report(res, tmp_path)["report"].read_text()
    few, need = selection.TOO_FEW, selection.MIN_SEEDS
    summary = f"{few} whether weight decay beats wd = 0: run {need} or more seeds"
    assert summary in table and summary[1:] in html  # the report capitalises its first letter
    doc = dumps(res.to_dict())
    assert selection.TOO_FEW in doc and '"better_than_zero": false' in doc


def test_a_gain_of_one_and_a_half_standard_errors_is_not_evidence():
    from wdlab.stats import t_sf

    # gains 0.03, 0.00, 0.015 over wd = 0: mean 0.015, SE 0.0087, t = 1.73 < t(0.95, 2) = 2.92
    r = row(select(grid({0.0: [0.80] * 3, 1e-2: [0.83, 0.80, 0.815]}), "multiclass"))
    assert r["better_than_zero"] is False and r["verdict"] == NO_GAIN
    assert r["p_value"] == pytest.approx(t_sf(0.015 / (0.015 / math.sqrt(3)), 2), rel=1e-6)
    # gains 0.03, 0.02, 0.025: t = 8.7, p = 0.0065 < 0.05: a gain the test supports
    r = row(select(grid({0.0: [0.80] * 3, 1e-2: [0.83, 0.82, 0.825]}), "multiclass"))
    assert r["better_than_zero"] is True and r["verdict"] == GAIN and r["level"] == selection.ALPHA


def test_a_lead_the_same_on_every_seed_is_the_sign_flip_tests():
    """A new user's trial: breast_cancer's validation accuracy 112 against 111 of 114 rows on
    each of 3 seeds (no spread) said "better than wd = 0" with p = 0 (an infinite t), while
    the test accuracy was lower. No spread leaves the t-test without its assumption; the exact
    sign-flip test holds without it: p = 1/2^n."""
    lead = {0.0: [111 / 114] * 3, 1e-2: [112 / 114] * 3}
    r = row(select(grid(lead), "multiclass"))
    assert r["p_value"] == 1 / 8 and r["better_than_zero"] is False and r["verdict"] == NO_GAIN
    five = row(select(grid({0.0: [111 / 114] * 5, 1e-2: [112 / 114] * 5}), "multiclass"))
    assert five["p_value"] == 1 / 32 < five["level"] and five["better_than_zero"] is True
    swept = {0.0: [111 / 114] * 5, 1e-2: [112 / 114] * 5}  # 4 weight decays: level 0.05 / 4
    swept |= {wd: [0.5] * 5 for wd in (1e-3, 1e-1, 1.0)}
    four = row(select(grid(swept), "multiclass"))
    assert four["level"] == 0.0125 < four["p_value"] and four["better_than_zero"] is False


def test_ties_within_the_test_still_go_to_the_smaller_weight_decay():
    # 1e-2 leads 1e-3 by (0.03, 0.0, 0.015): 1.7 standard errors, not a lead the test supports
    # (and 1e-3 leads wd = 0 by (0.40, 0.41, 0.42): a gain the test does support)
    runs = grid({0.0: [0.5] * 3, 1e-3: [0.90, 0.91, 0.92], 1e-2: [0.93, 0.91, 0.935]})
    r = row(select(runs, "multiclass"))
    assert r["best_mean_wd"] == 1e-2 and r["weight_decay"] == 1e-3


def test_the_stated_error_rate_holds_when_no_weight_decay_helps():
    """Validation scores with no effect of weight decay at all (every setting drawn from one
    distribution, seed effects shared): how often does a row claim 'better than wd = 0'? At
    most selection.ALPHA, up to Monte-Carlo error (3 standard errors of the estimated rate)."""
    rng = random.Random(0)
    trials, claims = 600, 0
    wds = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
    for _ in range(trials):
        seed_effect = [rng.gauss(0.8, 0.05) for _ in range(3)]
        table = {w: [s + rng.gauss(0, 0.01) for s in seed_effect] for w in wds}
        claims += row(select(grid(table), "multiclass"))["better_than_zero"]
    rate = claims / trials
    assert rate <= selection.ALPHA + 3 * math.sqrt(
        selection.ALPHA * (1 - selection.ALPHA) / trials
    ), rate


# ---------------------------------------------------------------------------------------------
# Everything that changes the numbers is in the study's identity


def _make_factory(hidden):
    def make(seed):
        return nn.Sequential(
            nn.Linear(6, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    return make


def _rows(folder):
    with sqlite3.connect(folder / "study.db") as db:
        return db.execute("SELECT key, status, final FROM runs ORDER BY id").fetchall()


def test_another_decay_rule_loss_metric_or_model_is_refused_naming_it(tmp_path):
    out, make = tmp_path / "s", _make_factory(8)
    first = wdlab.sweep(make, _data(), out=out, **TINY)
    again = wdlab.sweep(make, _data(), out=out, **TINY)  # the same study: resumed as it is
    assert [r.final for r in again.runs] == [r.final for r in first.runs]
    before = _rows(out)
    changes = {
        "decay.rule": dict(rule=wdlab.DecayRule(everything=True)),
        "train.loss": dict(
            loss=lambda o, t: nn.functional.cross_entropy(o, t, label_smoothing=0.1)
        ),
        "decay.metric": dict(metric=wdlab.Metric(lambda o, t: -float(o.std()), "spread")),
        "model.fingerprint": dict(model=_make_factory(16)),
    }
    for what, kw in changes.items():
        kw = {"model": make, **kw}
        with pytest.raises(ValueError) as exc:
            wdlab.sweep(kw.pop("model"), _data(), out=out, **kw, **TINY)
        assert "holds another study" in one_line(exc) and what in str(exc.value), what
    assert _rows(out) == before  # nothing stored changed
    smoothed = dict(loss=nn.CrossEntropyLoss(label_smoothing=0.1))
    wdlab.sweep(make, _data(), out=tmp_path / "l", **smoothed, **TINY)
    with pytest.raises(ValueError, match=r"train\.loss\.code \(the loss: its code or settings"):
        wdlab.sweep(make, _data(), out=tmp_path / "l", loss=nn.CrossEntropyLoss(), **TINY)
    # a batch size of 0 is the full batch: said so ("0 stored, 7 now" read oddly)
    full = dict(batch_size=None, **smoothed)
    wdlab.sweep(make, _data(), out=tmp_path / "f", **full, **TINY)
    with pytest.raises(ValueError, match=r"train\.batch_size \(0: the full batch\): 0 stored, 7"):
        wdlab.sweep(make, _data(), out=tmp_path / "f", batch_size=7, **smoothed, **TINY)
    with pytest.raises(ValueError, match=r"train\.batch_size: 128 stored, 7 now"):
        wdlab.sweep(make, _data(), out=tmp_path / "l", batch_size=7, **smoothed, **TINY)
    # a named rule is accepted and recorded by name; a fresh study with it gives other numbers
    other = wdlab.sweep(make, _data(), rule="everything", out=tmp_path / "e", **TINY)
    assert other.config["decay"]["rule"] == "everything"
    assert first.config["decay"]["rule"] == "default"
    assert [r.final["weight_norm"] for r in other.runs] != [
        r.final["weight_norm"] for r in first.runs
    ]


SMOOTHING = 0.0  # a module-level setting the loss below reads


def _smoothed_loss(out, target):
    return nn.functional.cross_entropy(out, target, label_smoothing=SMOOTHING)


class _Dropped(nn.Module):
    """A model whose dropout rate is a plain attribute, read by ``F.dropout`` in forward."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.lin = nn.Linear(6, 2)

    def forward(self, x):
        return self.lin(nn.functional.dropout(x, self.p, self.training))


def test_a_setting_the_loss_or_model_reads_outside_its_code_is_part_of_the_study(
    tmp_path, monkeypatch
):
    """A global the loss reads (``label_smoothing=SMOOTHING``) and a plain attribute of the
    user's module (``self.p`` for ``F.dropout``) are part of the study: changed, the sweep
    into the same folder is refused (it resumed the old study and handed back its numbers;
    found by a new-user trial). Unchanged, it resumes."""
    wdlab.sweep("linear", _data(), loss=_smoothed_loss, out=tmp_path / "l", **TINY)
    wdlab.sweep("linear", _data(), loss=_smoothed_loss, out=tmp_path / "l", **TINY)
    monkeypatch.setattr(sys.modules[__name__], "SMOOTHING", 0.5)
    with pytest.raises(ValueError, match=r"holds another study.*train\.loss\.code"):
        wdlab.sweep("linear", _data(), loss=_smoothed_loss, out=tmp_path / "l", **TINY)
    wdlab.sweep(lambda seed: _Dropped(0.0), _data(), out=tmp_path / "m", **TINY)
    wdlab.sweep(lambda seed: _Dropped(0.0), _data(), out=tmp_path / "m", **TINY)
    with pytest.raises(ValueError, match=r"holds another study.*model\.fingerprint"):
        wdlab.sweep(lambda seed: _Dropped(0.9), _data(), out=tmp_path / "m", **TINY)


def test_a_changed_model_file_is_another_study_from_the_command_line(tmp_path, capsys):
    src = "import torch\nfrom torch import nn\ndef make(seed):\n    return nn.Linear(13, {})\n"
    (tmp_path / "net.py").write_text(src.format(3))
    flags = ["--data", "wine", "--model", f"{tmp_path}/net.py:make", "--epochs", "1"]
    out = ["--out", str(tmp_path / "s")]
    assert main(["sweep", *flags, *out, "--json"]) == 0
    assert main(["sweep", *flags, *out, "--json"]) == 0  # unchanged: resumes
    capsys.readouterr()
    (tmp_path / "net.py").write_text(
        src.format(3).replace("nn.Linear(13, 3)", "nn.Sequential(nn.Linear(13, 3))")
    )
    line = cli_error(capsys, ["sweep", *flags, *out])
    assert "holds another study" in line and "model.fingerprint" in line


# ---------------------------------------------------------------------------------------------
# A user's factory that raises, hangs or returns a broken module: one line


class Stop(BaseException):
    """Not an Exception: user code may raise it."""


class NoInit(nn.Module):
    def __init__(self):  # forgets super().__init__()
        pass


def test_a_factory_raising_a_base_exception_or_returning_a_broken_module_is_one_line(capsys):
    def raises(seed):
        raise Stop("boom")

    def meta(seed):
        with torch.device("meta"):
            return nn.Linear(6, 2)

    cases = {
        raises: "raised Stop: boom",
        lambda seed: NoInit(): "NoInit whose __init__ never called super().__init__()",
        lambda seed: nn.Sequential(nn.Linear(6, 2), NoInit()): "submodule 1 (NoInit)",
        meta: "on the meta device (weight has no data)",
    }
    for factory, message in cases.items():
        with pytest.raises(ValueError) as exc:
            wdlab.sweep(factory, _data(), **TINY)
        assert message in one_line(exc)

    def interrupted(seed):
        raise KeyboardInterrupt

    from wdlab.usercode import call_factory

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops wdlab
        call_factory(interrupted, "interrupted", (0,))


def test_a_factory_that_does_not_return_is_stopped_and_leaves_nothing_running(tmp_path, capsys):
    def hangs(seed):
        with contextlib.suppress(Exception):  # one that swallows exceptions is stopped too
            time.sleep(600)
        return nn.Linear(6, 2)

    handler, threads = signal.getsignal(signal.SIGALRM), threading.active_count()
    with pytest.raises(ValueError) as exc:
        wdlab.sweep(hangs, _data(), factory_timeout=0.2, **TINY)
    assert "did not return within 0.2 s" in one_line(exc) and "factory_timeout" in str(exc.value)
    assert signal.getsignal(signal.SIGALRM) == handler and threading.active_count() == threads
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    (tmp_path / "slow.py").write_text("import time\ndef make(seed):\n    time.sleep(600)\n")
    flags = ["--data", "wine", "--model", f"{tmp_path}/slow.py:make", "--epochs", "1"]
    line = cli_error(
        capsys, ["sweep", *flags, "--factory-timeout", "0.2", "--out", str(tmp_path / "o")]
    )
    assert "did not return within 0.2 s" in line


def test_a_time_limit_restores_an_outer_timer():
    from wdlab.usercode import time_limit

    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with time_limit(5.0):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < left <= 30.0 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_the_identity_is_the_same_in_another_process(tmp_path):
    """Fingerprints hold no memory addresses or other per-process facts: the same script run
    twice resumes its study (the second run trains nothing and finds the same runs)."""
    script = tmp_path / "study.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch
            from torch import nn
            import wdlab

            X = torch.linspace(-1, 1, 120).reshape(60, 2)
            y = (X[:, 0] > X[:, 1]).long()
            data = {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]),
                    "test": (X[50:], y[50:])}

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.body = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
                    self.act = lambda t: t  # a repr with an address would break the identity

                def forward(self, x):
                    return self.act(self.body(x))

            smooth = 0.05
            res = wdlab.sweep(
                lambda seed: Net(), data, epochs=1, seeds=2, out=sys.argv[1],
                loss=lambda o, t: nn.functional.cross_entropy(o, t, label_smoothing=smooth),
                metric=wdlab.Metric(nn.CrossEntropyLoss(), "xent", higher=False),
            )
            print(json.dumps([r.final["val_loss"] for r in res.runs]))
            """
        )
    )
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "s")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout
    config = load_study(tmp_path / "s").config  # what made the numbers, recorded
    assert len(config["model"]["fingerprint"]) == 16
    assert config["train"]["loss"]["name"] == "<lambda>" and config["train"]["loss"]["code"]
    assert config["decay"]["metric"]["code"] and config["decay"]["rule"] == "default"


def test_a_partial_study_without_its_wd0_runs_advises_nothing_yet():
    """A study whose wd = 0 runs are not done yet (killed early) has nothing to compare with:
    its row says so, and neither the table's verdict nor the one-line answer says "use wd = 0"
    (advice about a weight decay it has not trained)."""
    from wdlab.records import Curves, RunConfig, RunResult, use_text
    from wdlab.report.text import verdict_text
    from wdlab.selection import select

    runs = []
    for wd in (0.01, 0.1):
        for seed in range(3):
            cfg = RunConfig(mode="decoupled", weight_decay=wd, lr=0.01, optimizer="adam", seed=seed)
            acc = 0.8 + wd + 0.01 * seed + (0.01 * seed * seed if wd == 0.1 else 0.0)
            curves = Curves([0], [0], {"val_acc": [acc], "val_loss": [1.0]})
            runs.append(RunResult(cfg, curves, {"val_acc": acc, "test_acc": acc}, status="done"))
    (row,) = select(runs, "multiclass")
    assert row["verdict"] == "no wd = 0 run to compare with" and row["weight_decay"] == 0.1
    assert "use wd = 0" not in verdict_text(row) and verdict_text(row).endswith("yet")
    assert use_text(row) == "wd 0.1 chosen, no wd = 0 run to compare with yet"


def test_another_study_is_named_by_what_identifies_it_only(tmp_path):
    """``keep`` and ``checkpoint`` are no part of a study's identity: beside a real
    difference, the refusal listed them too, and a user could change the wrong one (found by
    a new-user trial)."""
    wdlab.sweep("linear", _data(), out=tmp_path / "s", **TINY)
    with pytest.raises(ValueError, match="holds another study") as exc:
        wdlab.sweep("linear", _data(), out=tmp_path / "s", keep="none", checkpoint=1,
                    **(TINY | {"epochs": 3}))  # fmt: skip
    line = one_line(exc)
    assert "train.epochs: 2 stored, 3 now" in line
    assert "train.keep" not in line and "train.checkpoint" not in line


def test_a_loss_given_since_is_named_by_its_name_not_its_code(tmp_path):
    """A new-user trial: a loss given where the stored study had none was said as
    ``{"code": "cfe7ed2c5c5d3969", "name": "C…`` (its JSON, cut at 40 characters)."""
    from torch import nn

    make = lambda: nn.Linear(13, 3)  # noqa: E731
    wdlab.sweep(make, "wine", out=tmp_path / "s", **TINY)
    with pytest.raises(ValueError, match="holds another study") as exc:
        wdlab.sweep(make, "wine", out=tmp_path / "s", loss=nn.CrossEntropyLoss(), **TINY)
    assert 'train.loss: null stored, "CrossEntropyLoss()" now' in one_line(exc)
