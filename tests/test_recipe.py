"""The recipe's knobs (issue 22 item 2) in ``wdlab.sweep``, the config and the CLI: lr schedules
per step with a linear warm-up, gradient clipping by each configuration's own norm,
``steps=``, ``precision="bf16"``, label smoothing through ``loss=``; each alone is the plain
PyTorch loop that uses torch's own pieces (``LambdaLR``, ``clip_grad_norm_``), bit for bit on
the CPU, and a batched configuration is its run alone, norm-wise."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

import wdlab
from numerics import assert_normwise, per_steps
from wdlab.cli import main
from wdlab.config import validate
from wdlab.data import Dataset
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.trainer import train
from wdlab.trainer.schedules import parse_schedule, warmup_factor, warmup_steps


def _data(n=100):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 10, generator=g)
    y = (X[:, 0] > 0).long()
    return Dataset("t", "multiclass", X[:64], y[:64], X[80:], y[80:], X[64:80], y[64:80], 2)


def make():
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))


SPEC = ModelSpec("custom", factory=make, in_dim=10, out_dim=2)


def hf(kind, step, warmup, total):
    """The Hugging Face schedules' factors, as transformers writes them."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_warmup_schedules_are_the_hugging_face_factors(kind):
    for warmup, total in ((0, 10), (3, 10), (10, 10), (4, 1000)):
        for step in range(total + 1):
            assert warmup_factor(kind, step, warmup, total) == hf(kind, step, warmup, total)
    assert warmup_steps(0.1, 1000) == 100 and warmup_steps(7, 1000) == 7
    assert parse_schedule(f"warmup-{kind}:0.0") == parse_schedule(f"warmup-{kind}:0")  # none
    # a fraction rounds up, as transformers' TrainingArguments.get_warmup_steps does (it was
    # rounded to the nearest: 2 steps where Hugging Face warms up for 3)
    assert warmup_steps(0.3, 7) == 3 and warmup_steps(0.5, 7) == 4 and warmup_steps(0.01, 7) == 1
    schedule, args = parse_schedule(f"warmup-{kind}:0.05")
    assert schedule.per_step and args == (0.05,)


def plain(data, lr, steps, schedule, clip):
    """A plain loop: the model built after manual_seed(0), torch's RNG seeded with the data
    seed, one randperm per epoch, LambdaLR stepped after each optimizer step, clip_grad_norm_
    before it."""
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = None
    if schedule is not None:
        _, (warmup,) = parse_schedule(schedule)
        kind, w = schedule.split(":")[0].removeprefix("warmup-"), warmup_steps(warmup, steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_factor(kind, s, w, steps))
    shuffle = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X, y = data.X_train, data.y_train
    done = 0
    while done < steps:
        perm = torch.randperm(len(X), generator=shuffle)
        for i in range(0, len(X), 16):
            if done == steps:
                break
            idx = perm[i : i + 16]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            done += 1
    return model.state_dict()


@pytest.mark.parametrize(
    "schedule, clip",
    [
        ("warmup-cosine:3", None),
        ("warmup-linear:0.25", 0.5),
        ("warmup-constant:2", 0.5),
        (None, 0.5),
    ],
)
def test_alone_is_the_plain_loop_with_lambda_lr_and_clip_grad_norm(schedule, clip):
    """10 steps at 4 batches an epoch: 3 epochs, the last cut short; bit for bit."""
    data = _data()
    cfg = RunConfig("builtin", 0.0, 0.5, "sgd", seed=0)
    kw = dict(epochs=1, batch_size=16, keep_params=True, schedule=schedule, clip_grad_norm=clip)
    run = train(SPEC, data, [cfg], steps=10, **kw)[0]
    assert len(run.curves["train_loss"]) == 3
    expected = plain(data, 0.5, 10, schedule, clip)
    unequal = [n for n, t in expected.items() if not torch.equal(run.params[n], t)]
    assert unequal == []


@pytest.mark.numerics
def test_each_configuration_is_clipped_by_its_own_norm():
    """l2 with a large weight decay makes a large gradient, wd = 0 a small one: clipped at a
    norm between them, each configuration of the batch is its run alone (a norm taken over
    the batch would clip the small one too), and one that stays below the clip trains as
    without it."""
    data = _data()
    configs = [RunConfig("l2", wd, 0.05, "sgd", seed=s) for wd in (0.0, 20.0) for s in (0, 1)]
    kw = dict(epochs=2, batch_size=16, keep_params=True, clip_grad_norm=1.5)
    batched = train(SPEC, data, configs, **kw)
    for c, b in zip(configs, batched, strict=True):
        alone = train(SPEC, data, [c], **kw)[0]
        assert_normwise(b.params, alone.params, per_steps(8), str(c))
    huge = train(SPEC, data, configs[:1], **(kw | {"clip_grad_norm": 1e9}))[0]
    free = train(SPEC, data, configs[:1], **(kw | {"clip_grad_norm": None}))[0]
    assert all(torch.equal(huge.params[n], free.params[n]) for n in free.params)
    clipped = train(SPEC, data, configs[2:3], **kw)[0]
    unclipped = train(SPEC, data, configs[2:3], **(kw | {"clip_grad_norm": None}))[0]
    assert not torch.equal(clipped.params["0.weight"], unclipped.params["0.weight"])


def _splits():
    d = _data()
    return {k: v for k, v in d.splits().items()}


def test_sweep_takes_the_recipe_and_each_knob_is_part_of_the_study(tmp_path):
    out = tmp_path / "s"
    kw = dict(lr=0.05, optimizer="sgd", weight_decay=[0.0, 1e-2], seeds=1, batch_size=16)
    kw |= dict(schedule="warmup-linear:0.25", clip_grad_norm=1.0, steps=6, precision="bf16")
    r = wdlab.sweep(lambda seed: make(), _splits(), out=out, **kw)
    assert "bf16 autocast" in r.engine_note
    assert r.config["train"]["steps"] == 6 and r.config["train"]["clip_grad_norm"] == 1.0
    assert len(r.runs[0].curves["train_loss"]) == 2  # 6 steps, 4 a epoch
    with pytest.raises(ValueError, match=r"holds another study: train\.clip_grad_norm"):
        wdlab.sweep(lambda seed: make(), _splits(), out=out, **(kw | {"clip_grad_norm": 2.0}))
    again = wdlab.sweep(lambda seed: make(), _splits(), out=out, **(kw | {"keep": "none"}))
    assert [x.final for x in again.runs] == [x.final for x in r.runs]  # keep: not identity


@pytest.mark.numerics
def test_label_smoothing_through_loss_is_the_plain_loops_loss(tmp_path):
    """``loss=nn.CrossEntropyLoss(label_smoothing=0.1)``: the configuration alone trains as a
    plain loop with that loss (norm-wise: wdlab calls it under vmap), and another smoothing
    is another study."""
    data = _data()
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    kw = dict(lr=0.5, optimizer="sgd", weight_decay=0.0, seeds=1, batch_size=16, epochs=2)
    r = wdlab.sweep(
        lambda seed: make(), _splits(), loss=smooth, max_batch=1, out=tmp_path / "s", **kw
    )
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    shuffle, X, y = torch.Generator().manual_seed(0), data.X_train, data.y_train
    torch.manual_seed(0)
    for _ in range(2):
        perm = torch.randperm(len(X), generator=shuffle)
        for i in range(0, len(X), 16):
            idx = perm[i : i + 16]
            opt.zero_grad()
            smooth(model(X[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        val = smooth(model(data.X_val), data.y_val).item()
    run = next(x for x in r.runs if x.config.weight_decay == 0.0)
    assert_normwise([run.final["val_loss"]], [val], per_steps(8))
    other = nn.CrossEntropyLoss(label_smoothing=0.2)
    with pytest.raises(ValueError, match=r"holds another study: train\.loss"):
        wdlab.sweep(lambda seed: make(), _splits(), loss=other, out=tmp_path / "s", **kw)


class Endless(IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(64):
            x = torch.randn(10, generator=g)
            yield x, int(x[0] > 0)


def test_a_per_step_schedule_or_steps_need_a_stream_with_a_length():
    data = {"train": Endless(), "val": _splits()["val"], "test": _splits()["test"]}
    kw = dict(seeds=1, batch_size=16, n_classes=2, weight_decay=0.0)
    with pytest.raises(ValueError, match="runs per step and needs the number of steps"):
        wdlab.sweep(lambda seed: make(), data, schedule="warmup-cosine:2", **kw)
    with pytest.raises(
        ValueError, match=r"steps \(steps=, --steps\) needs the number of batches per epoch"
    ):
        wdlab.sweep(lambda seed: make(), data, steps=5, **kw)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("schedule", "warmup-cosine:x", "train.schedule: 'warmup-cosine:x' is not allowed"),
        ("schedule", "warmup-linear:1.5", "is not allowed"),
        ("clip_grad_norm", -1, "train.clip_grad_norm: expected a norm > 0"),
        ("keep", "some", "train.keep: 'some' is not allowed; valid: best, all, none"),
        ("steps", -3, "train.steps: expected an integer >= 0"),
    ],
)
def test_bad_recipe_values_are_one_line(key, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate({"train": {key: value}})


def test_the_cli_takes_the_recipe_flags(tmp_path, capsys):
    ok = validate(
        {
            "train": {
                "schedule": "warmup-cosine:100",
                "steps": 50,
                "clip_grad_norm": 1.5,  # a float: the flag reads one (text is refused)
                "keep": "all",
            }
        }
    )
    assert ok.train.clip_grad_norm == 1.5 and ok.train.steps == 50
    argv = ["sweep", "--data", "seed-noise", "--wd", "0", "--seeds", "1"]
    argv += ["--steps", "3", "--clip-grad-norm", "1", "--schedule", "warmup-linear:1"]
    argv += ["--keep", "none", "--out", str(tmp_path / "s"), "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        main([*argv[:-3], "--keep", "every", "--out", str(tmp_path / "t")])
    assert bad.value.code == 2
    assert "train.keep (--keep): invalid choice: 'every'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    # early stopping now stops training (issue 23, deliberately changed: it said "every epoch
    # still trains")
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "stop training a run whose validation metric has not improved for --patience" in help_text
    )


def test_epochs_and_steps_together_are_refused(tmp_path, capsys):
    """epochs= and steps= both given: one would be ignored, so it is one line (exit 2 on the
    command line), in Python, in wdlab.optuna and in an experiment file; steps alone decides."""
    with pytest.raises(ValueError, match=r"^epochs=2 and steps=10: give one"):
        wdlab.sweep("mlp", "wine", weight_decay=[0.1], epochs=2, steps=10)
    optuna = pytest.importorskip("optuna")
    from wdlab.optuna import optimize

    with pytest.raises(ValueError, match=r"^epochs=2 and steps=10: give one"):
        optimize(optuna.create_study(), "mlp", "wine", {}, n_trials=1, epochs=2, steps=10)
    assert main(["sweep", "--data", "wine", "--epochs", "2", "--steps", "10"]) == 2
    assert "--epochs and --steps: give one" in capsys.readouterr().err
    (tmp_path / "e.toml").write_text("[train]\nepochs = 2\nsteps = 10\n")
    assert main(["sweep", str(tmp_path / "e.toml"), "--data", "wine"]) == 2
    assert "train.epochs and train.steps: give one" in capsys.readouterr().err
    assert (
        wdlab.sweep("mlp", "wine", weight_decay=[0.1], steps=10, batch_size=None).runs[0].epochs
        == 10
    )
    # search too (a new-user trial: it trained --steps and ignored --epochs, without a word)
    pytest.importorskip("optuna")
    search = ["search", "--data", "wine", "--trials", "1", "--wd", "0,0.1"]
    assert main([*search, "--epochs", "2", "--steps", "10"]) == 2
    assert "--epochs and --steps: give one" in capsys.readouterr().err
    assert main([*search, str(tmp_path / "e.toml")]) == 2
    assert "train.epochs and train.steps: give one" in capsys.readouterr().err


def test_epochs_on_the_command_line_win_over_a_files_steps(tmp_path, capsys):
    """A flag overrides the file: ``--epochs 3`` over a file's ``steps = 5`` trained the 5
    steps without a word (a checking helper's finding). It trains the epochs, and a new-user
    trial found that silent too: one warning says the flag replaced the file's steps."""
    (tmp_path / "s.toml").write_text("[train]\nsteps = 5\n")
    args = ["run", str(tmp_path / "s.toml"), "--data", "wine", "--epochs", "3", "--json"]
    with pytest.warns(UserWarning, match=r"^--epochs 3 replaces the file's steps = 5$"):
        assert main([*args, "--out", str(tmp_path / "r")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["train"]["steps"] == 0 and doc["runs"][0]["epochs"] == 3


def test_steps_on_the_command_line_win_over_a_files_epochs_and_say_so(
    tmp_path, capsys, monkeypatch
):
    """The other way round (a new-user trial): ``--steps 7`` over a file's ``epochs = 5``
    trained the steps without a word, and stored epochs = 5 beside them, a config its own
    file reader refuses ("give one"). It says so, and stores what a file of steps alone does."""
    (tmp_path / "e.toml").write_text("[train]\nepochs = 5\n")
    (tmp_path / "s.toml").write_text("[train]\nsteps = 7\n")
    monkeypatch.chdir(tmp_path)  # run's results: wdlab-out/run here
    args = ["run", "--data", "wine", "--batch-size", "32", "--json"]
    with pytest.warns(UserWarning, match=r"^--steps 7 replaces the file's epochs = 5$"):
        assert main(["run", str(tmp_path / "e.toml"), *args[1:], "--steps", "7"]) == 0
    flagged = json.loads(capsys.readouterr().out)
    assert main(["run", str(tmp_path / "s.toml"), *args[1:]]) == 0
    filed = json.loads(capsys.readouterr().out)
    assert flagged["config"] == filed["config"]
    assert [r["final"] for r in flagged["runs"]] == [r["final"] for r in filed["runs"]]


def test_steps_0_in_python_is_refused_not_read_as_the_default_epochs(capsys):
    """A new-user trial: ``steps=0`` trained the default 10 epochs without a word, and
    ``steps=0, epochs=3`` passed the "give one" rule. On the command line ``--steps 0`` is the
    documented way to say "use --epochs" (and the config's default)."""
    with pytest.raises(ValueError, match=r"^steps=0: give steps >= 1, or steps=None"):
        wdlab.sweep("mlp", "wine", weight_decay=[0.1], steps=0)
    optuna = pytest.importorskip("optuna")
    from wdlab.optuna import optimize

    with pytest.raises(ValueError, match=r"^steps=0: give steps >= 1"):
        optimize(optuna.create_study(), "mlp", "wine", {}, n_trials=1, steps=0, epochs=3)
    # a negative count is said as one, in Python as steps=0 is, and on the command line
    # before the "give one" rule (a new-user trial: --steps -1 beside --epochs said "give one")
    with pytest.raises(ValueError, match=r"^steps=-1: give steps >= 1, or steps=None"):
        wdlab.sweep("mlp", "wine", weight_decay=[0.1], steps=-1, epochs=2)
    assert main(["sweep", "--data", "wine", "--epochs", "2", "--steps", "-1"]) == 2
    err = capsys.readouterr().err
    assert "train.steps (--steps): expected an integer >= 0 (0: the epochs), got -1" in err


def test_a_clip_norm_given_as_text_is_refused_outside_the_command_line(tmp_path, capsys):
    """``clip_grad_norm="0.3"`` was read as 0.3 in Python and in a file, where every other
    number given as text (``steps = "13"``) is refused; the flag's text is parsed as a float."""
    with pytest.raises(ValueError, match=r"clip_grad_norm: expected a norm > 0 .* got '0\.3'"):
        wdlab.sweep("mlp", "wine", weight_decay=[0.1], epochs=1, clip_grad_norm="0.3")
    (tmp_path / "c.toml").write_text('[train]\nclip_grad_norm = "0.3"\n')
    assert main(["run", str(tmp_path / "c.toml"), "--data", "wine"]) == 2
    assert "expected a norm > 0 (a finite number), got '0.3'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["run", "--data", "wine", "--clip-grad-norm", "abc"])
    assert bad.value.code == 2
    err = capsys.readouterr().err  # argparse's words, under the key and flag (a new-user trial)
    assert "train.clip_grad_norm (--clip-grad-norm): invalid float value: 'abc'" in err


def test_early_stopping_that_cannot_stop_a_run_is_said(tmp_path, capsys):
    """``--early-stopping --patience 1`` over 4 epochs with the default ``--eval-every 10``
    evaluates after epochs 1 and 4 only: it can stop no run before its end, and ran without a
    word (found by a new-user trial). Said in one warning; evaluating each epoch, nothing."""
    flags = ["sweep", "--data", "wine", "--epochs", "4", "--early-stopping", "--patience", "1"]
    flags += ["--wd", "0,0.1", "--seeds", "1", "--json"]
    with pytest.warns(
        UserWarning,
        match=r"no run before its end: .* a run of 4 epoch\(s\) evaluated every 10 has 2 ev",
    ):
        assert main([*flags, "--out", str(tmp_path / "a")]) == 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main([*flags, "--out", str(tmp_path / "b"), "--eval-every", "1"]) == 0
    assert not [w for w in said if "can stop no run" in str(w.message)]


def test_a_step_schedule_that_overflows_float32_is_refused_before_training(capsys):
    """A new-user trial: ``--schedule step:1:10 --epochs 60`` (and ``step:1:1e30``) failed
    mid-training with torch's "value cannot be converted to type float without overflow",
    called unexpected. It is refused before training, in one line; a rise that fits trains."""
    from wdlab.cli import main
    from wdlab.trainer.schedules import check_peak

    for gamma in ("10", "1e30"):
        argv = ["run", "--data", "wine", "--schedule", f"step:1:{gamma}", "--epochs", "60"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "-fold within 60 epochs, beyond float32" in err, err
    check_peak("step:1:10", 38, 1.0)  # lr 1e37 at its last epoch: fits
    check_peak("step:1:0.1", 10_000, 1.0)  # falling: never refused
    with pytest.raises(ValueError, match="rises 10\\^39-fold"):
        check_peak("step:1:10", 40, 1.0)
