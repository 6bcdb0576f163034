"""Configurations side by side (``parallel=n``, :mod:`wdlab.sidebyside`): on the CPU, a batch
that runs its configurations one after another (a model with convolutions) runs them in ``n``
threads, each with its share of torch's threads.

The promise tested here: each configuration's numbers are those it gets alone with the lane's
share of threads, bit for bit, so ``parallel=2`` equals ``parallel=1`` run with that share
(its kernels, one thread of Python per configuration; its gradient in its own rows). With
torch's own thread count the numbers are the same maths, rounded by other kernels' splits.
"""

import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdlab
from test_batched_alone import _configs, image_splits, images
from wdlab.models import ModelSpec
from wdlab.pipelines.memory import memory_need
from wdlab.sidebyside import RandomDraws, SideBySide, check_parallel
from wdlab.trainer import train

EPOCHS, BATCH = 2, 16
SINGLE = (("foreach", False), ("fused", False))  # torch's single-tensor AdamW (see below)


class Net(nn.Module):
    """A small CNN with BatchNorm (running statistics per configuration) and a residual add."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h = F.gelu(self.bn(self.conv1(x)))
        h = F.gelu(self.conv2(h) + h)
        return self.fc(self.drop(h.mean((2, 3))))


def _share(n=2):
    """Each lane's threads, as SideBySide gives them."""
    return max(1, torch.get_num_threads() // n)


def _train(configs, parallel=1, threads=None, model=Net, **kw):
    data = images()
    spec = ModelSpec("custom", factory=model, in_dim=data.in_dim, out_dim=data.n_classes)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return train(
            spec,
            data,
            configs,
            epochs=EPOCHS,
            batch_size=BATCH,
            keep_params=True,
            device="cpu",
            parallel=parallel,
            rule=wdlab.DecayRule(everything=True),
            **kw,
        )
    finally:
        torch.set_num_threads(before)


def _unequal(a, b):
    return [n for n in a.params if not torch.equal(a.params[n], b.params[n])]


def _assert_same_runs(ours, ref):
    for a, b in zip(ours, ref, strict=True):
        assert _unequal(a, b) == [], f"{a.config}: weights differ in {_unequal(a, b)}"
        assert a.curves == b.curves, a.config


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_side_by_side_is_one_after_another_with_the_lane_s_threads(opt):
    """parallel=2 gives, bit for bit, the weights, BatchNorm statistics and curves (train and
    evaluation) of parallel=1 run with each lane's share of threads; the note says how it
    ran, and torch's thread count is as it was."""
    threads = torch.get_num_threads()
    configs = _configs(opt)
    ours = _train(configs, parallel=2)
    assert torch.get_num_threads() == threads
    assert f"2 configurations side by side, {_share()} thread" in ours[0].engine
    ref = _train(configs, parallel=1, threads=_share())
    assert "side by side" not in ref[0].engine
    _assert_same_runs(ours, ref)


def test_each_configuration_side_by_side_is_its_run_alone():
    """A row of a parallel=3 batch of four (lanes of one and two configurations) is that
    configuration trained alone with the lane's threads, bit for bit (torch's single-tensor
    AdamW: its fused kernel rounds a group of rows otherwise, see test_batched_alone)."""
    configs = [replace(c, options=SINGLE) for c in _configs("adamw")]
    ours = _train(configs, parallel=3)
    for c, b in zip(configs, ours, strict=True):
        alone = _train([c], threads=_share(3))[0]
        assert _unequal(b, alone) == [], f"{c}: differs from alone in {_unequal(b, alone)}"
        assert b.final["val_loss"] == alone.final["val_loss"]


def test_bf16_autocast_reaches_the_lanes():
    """precision="bf16": the lanes run under the autocast of the thread that started them (per
    thread in torch), in training and evaluation: parallel=2 equals parallel=1, bit for bit, and
    differs from float32."""
    configs = _configs("sgd")
    ours = _train(configs, parallel=2, precision="bf16")
    _assert_same_runs(ours, _train(configs, threads=_share(), precision="bf16"))
    fp32 = _train(configs, threads=_share())
    assert ours[0].final["val_loss"] != fp32[0].final["val_loss"]


def test_a_model_drawing_random_numbers_is_refused_side_by_side():
    """Dropout draws from torch's one global generator, whose order the lanes would change from
    run to run: one ValueError naming it, and the thread count restored."""
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"draws random numbers.*parallel=1"):
        _train(_configs("sgd"), parallel=2, model=lambda: Net(dropout=0.5))
    assert torch.get_num_threads() == threads
    _train(_configs("sgd")[:2], parallel=1, model=lambda: Net(dropout=0.5))  # trains alone


class Flat(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.GELU(), nn.Linear(8, 3))


def test_parallel_is_unused_where_the_configurations_run_together():
    """A model without convolutions is vmapped (all configurations in one computation), and a
    batch of one has nothing beside it: parallel=2 is unused there, and the note says so."""
    vmapped = _train(_configs("sgd"), parallel=2, model=Flat)
    assert vmapped[0].engine.startswith("torch.func: vmap")
    assert "parallel=2 unused" in vmapped[0].engine
    alone = _train(_configs("sgd")[:1], parallel=2)
    assert "parallel=2 unused" in alone[0].engine


def test_sweep_takes_parallel_and_keeps_one_study():
    """wdlab.sweep(parallel=2) trains as parallel=1 with the lane's threads, and it is how the
    study runs, not what it is: the same folder resumes either way."""
    splits = image_splits()
    kw = dict(lr=0.05, weight_decay=[0.0, 0.1], seeds=2, epochs=EPOCHS, batch_size=BATCH)
    ours = wdlab.sweep(lambda seed: Net(), splits, parallel=2, **kw)
    assert "side by side" in ours.engine_note
    before = torch.get_num_threads()
    torch.set_num_threads(_share())
    try:
        ref = wdlab.sweep(lambda seed: Net(), splits, **kw)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(ours.runs, ref.runs, strict=True):
        assert a.config == b.config and a.curves == b.curves


def test_resuming_with_another_parallel_is_the_same_study(tmp_path):
    splits = image_splits("train", "test")
    kw = dict(lr=0.05, weight_decay=[0.0, 0.1], epochs=1, batch_size=BATCH, out=tmp_path / "s")
    first = wdlab.sweep(lambda seed: Net(), splits, parallel=2, **kw)
    again = wdlab.sweep(lambda seed: Net(), splits, **kw)
    assert [r.curves for r in again.runs] == [r.curves for r in first.runs]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_parallel_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ValueError, match="parallel must be a whole number >= 1"):
        check_parallel(bad)
    with pytest.raises(ValueError, match="parallel must be"):
        _train(_configs("sgd")[:2], parallel=bad)


@pytest.mark.parametrize("command", ["sweep", "search"])
@pytest.mark.parametrize("value", ["0", "abc"])
def test_cli_bad_parallel_is_one_line_and_exit_2(tmp_path, command, value):
    """--parallel means the same in sweep and search, and is checked the same way."""
    out = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", command, "--parallel", value, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--parallel" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_a_lane_s_error_is_raised_by_the_caller_after_every_lane_stopped():
    """An error in a lane's thread reaches the caller, once every lane has stopped (none is
    left running on the shared tensors), with torch's thread count restored."""
    side = SideBySide(nn.Linear(2, 2), 2, lambda m: nn.Linear(2, 2))
    threads, ran = torch.get_num_threads(), []

    def job(k, module):
        ran.append((k, threading.current_thread() is threading.main_thread()))
        if k == 1:
            raise RuntimeError("lane one")
        return k

    with pytest.raises(RuntimeError, match="lane one"):
        side.map(4, job)
    assert torch.get_num_threads() == threads
    assert sorted(k for k, _ in ran) == [0, 1, 2]  # lane 1 stopped at its error
    assert {k: main for k, main in ran} == {0: True, 1: False, 2: True}
    assert side.map(5, lambda k, m: k * k) == [0, 1, 4, 9, 16]


def test_random_draws_in_a_lane_are_refused():
    side = SideBySide(nn.Linear(2, 2), 2, lambda m: nn.Linear(2, 2))
    with pytest.raises(RandomDraws):
        side.map(2, lambda k, m: torch.rand(1))
    assert side.map(2, lambda k, m: torch.ones(1).sum().item()) == [1.0, 1.0]


class NoisyEval(Net):
    """Net that adds noise to its outputs in eval mode only (no draws while training)."""

    def forward(self, x):
        out = super().forward(x)
        return out if self.training else out + 0.1 * torch.randn_like(out)


def test_a_model_drawing_random_numbers_in_evaluation_is_refused_too():
    with pytest.raises(ValueError, match="draws random numbers"):
        _train(_configs("sgd"), parallel=2, model=NoisyEval)


def test_lanes_are_at_most_the_batch_s_configurations():
    """parallel=8 over four configurations runs four side by side, and says four."""
    runs = _train(_configs("sgd"), parallel=8)
    assert f"4 configurations side by side, {_share(4)} thread" in runs[0].engine


def test_parallel_counts_memory_only_for_lanes_that_run(tmp_path):
    """The budget counts the lanes a batch can run: none beside a batch of one (max_batch=1,
    one configuration); and a refusal by the lanes' memory names parallel."""
    from wdlab.pipelines import memory

    splits = image_splits("train", "test")
    seen = []

    def spy(*args, **kw):
        seen.append(kw.get("parallel", 1))
        return need(*args, **kw)

    need = memory.memory_need
    kw = dict(lr=0.05, epochs=1, batch_size=BATCH, parallel=4)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("wdlab.pipelines.study.memory_need", spy)
        wdlab.sweep(lambda seed: Net(), splits, weight_decay=[0.0, 0.1], max_batch=1, **kw)
        wdlab.sweep(lambda seed: Net(), splits, weight_decay=[0.0], **kw)
        wdlab.sweep(lambda seed: Net(), splits, weight_decay=[0.0, 0.1], **kw)
    assert seen == [1, 1, 2]
    with pytest.raises(ValueError, match=r"2 configurations side by side need .*parallel=2"):
        memory.check_budget(3 * 2**20, 2, lanes=2)


def test_memory_counts_the_activations_of_every_lane():
    """Side by side, the batch holds the activations of as many configurations as lanes."""
    data = images()
    spec = ModelSpec("custom", factory=Net, in_dim=data.in_dim, out_dim=data.n_classes)
    one = memory_need(spec, data, BATCH, model=Net(), device=torch.device("cpu"))
    two = memory_need(spec, data, BATCH, model=Net(), device=torch.device("cpu"), parallel=2)
    assert one[1] > 0 and two == (one[0], 2 * one[1])


class Seen(Net):
    """Net that notes whether its inputs came in channels_last, when run on the stacked weights
    (not the set-up's own checks of the module, which see the data as given)."""

    formats: ClassVar[set] = set()

    def forward(self, x):
        if not isinstance(self.conv1.weight, nn.Parameter):
            Seen.formats.add(x.is_contiguous(memory_format=torch.channels_last))
        return super().forward(x)


def _plain_channels_last(data, cfg):
    """A plain loop that draws mini-batches as wdlab does (``test_batched_alone.plain_loop``)
    and hands the model ``x.contiguous(memory_format=torch.channels_last)``."""
    torch.manual_seed(cfg.seed)
    model = Net()
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
    )
    shuffle, (X, y) = torch.Generator().manual_seed(0), (data.X_train, data.y_train)
    torch.manual_seed(0)
    for _ in range(EPOCHS):
        perm = torch.randperm(len(X), generator=shuffle)
        for i in range(0, len(X), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            x = X[idx].contiguous(memory_format=torch.channels_last)
            F.cross_entropy(model(x), y[idx]).backward()
            opt.step()
    return {n: t.detach() for n, t in model.state_dict(keep_vars=True).items()}


def test_channels_last_alone_is_the_plain_loop_that_converts_its_inputs():
    """channels_last=True: a configuration alone is, bit for bit, a plain loop giving its model
    channels_last inputs; in a batch (one after another) each row is its run alone; the model
    sees only channels_last inputs, in training and evaluation."""
    data, configs = images(), _configs("sgd")
    Seen.formats = set()
    batched = _train(configs, channels_last=True, model=Seen)
    assert Seen.formats == {True}
    assert "channels_last inputs" in batched[0].engine
    for c, b in zip(configs, batched, strict=True):
        alone = _train([c], channels_last=True)[0]
        assert _unequal(b, alone) == [], c
        plain = _plain_channels_last(data, c)
        unequal = [n for n in plain if not torch.equal(alone.params[n], plain[n])]
        assert unequal == [], f"{c}: alone differs from the plain loop in {unequal}"


def test_channels_last_side_by_side_is_channels_last_one_after_another():
    configs = _configs("sgd")
    ours = _train(configs, parallel=2, channels_last=True)
    assert "side by side" in ours[0].engine and "channels_last" in ours[0].engine
    _assert_same_runs(ours, _train(configs, threads=_share(), channels_last=True))


def test_channels_last_leaves_other_inputs_and_built_in_models_alone():
    """Token ids (2-D) reach a model as they are, and the note says channels_last is unused
    there; a built-in model says it is unused."""
    from test_batched_alone import TokenTransformer, tokens

    data = tokens()
    spec = ModelSpec("custom", factory=TokenTransformer, in_dim=data.in_dim, out_dim=3)
    runs = train(spec, data, _configs("sgd")[:2], epochs=1, batch_size=BATCH, channels_last=True)
    assert all(r.final["val_loss"] == r.final["val_loss"] for r in runs)  # trained, not NaN
    assert "channels_last unused (no images)" in runs[0].engine
    r = wdlab.sweep("mlp", "wine", weight_decay=[0, 1e-3], epochs=1, channels_last=True)
    assert "channels_last unused" in r.engine_note


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_channels_last_must_be_true_or_false(bad):
    with pytest.raises(ValueError, match="channels_last must be True or False"):
        wdlab.sweep("mlp", "wine", weight_decay=[0, 1e-3], epochs=1, channels_last=bad)


def test_cli_sweep_takes_parallel_and_channels_last(tmp_path):
    """--parallel 2 --channels-last on the command line: the study's engine says both."""
    (tmp_path / "d.py").write_text(
        "import torch\n"
        "def make_data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    X = torch.randn(48, 3, 8, 8, generator=g); y = (X[:, 0].mean((1, 2)) > 0).long()\n"
        "    return {'train': (X[:32], y[:32]), 'val': (X[32:40], y[32:40]), "
        "'test': (X[40:], y[40:])}\n"
        "def make(seed=0):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), "
        "torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))\n"
    )
    f = str(tmp_path / "d.py")
    argv = ["sweep", "--model", f"{f}:make", "--data", f"{f}:make_data", "--epochs", "1"]
    argv += ["--weight-decay", "0,0.01", "--batch-size", "16", "--parallel", "2"]
    argv += ["--channels-last", "--out", str(tmp_path / "s"), "--json"]
    out = subprocess.run([sys.executable, "-m", "wdlab.cli", *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "2 configurations side by side" in text and "channels_last inputs" in text


def test_an_optuna_search_runs_side_by_side_as_one_after_another():
    """wdlab.optuna.optimize takes parallel and channels_last as wdlab.sweep does: the values
    told are those of parallel=1 with the lane's threads, and a study searched one way takes
    more trials the other way (how the trials run is not what they are)."""
    optuna = pytest.importorskip("optuna")
    from wdlab.optuna import optimize

    splits = image_splits()
    space = {"weight_decay": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    kw = dict(n_trials=4, batch=4, epochs=1, batch_size=BATCH, select="loss")

    def search(study=None, **how):
        study = study or optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        optimize(study, lambda seed: Net(), splits, space, **kw, **how)
        return study

    ours = search(parallel=2, channels_last=True)
    before = torch.get_num_threads()
    torch.set_num_threads(_share())
    try:
        ref = search(channels_last=True)
    finally:
        torch.set_num_threads(before)
    assert [t.value for t in ours.trials] == [t.value for t in ref.trials]
    assert len(search(ours).trials) == 8  # the same study, searched on without them


def test_a_refusal_side_by_side_leaves_a_study_s_runs_pending(tmp_path, monkeypatch):
    """A study whose second batch waits (the sweep was interrupted there), resumed with
    parallel=2 and a Dropout model: refused in one ValueError, the waiting runs still pending
    (not failed: the setting, not the runs, was wrong); resumed with parallel=1 it finishes."""
    from wdlab.trainer.loop import Trainer

    splits = image_splits("train", "test")
    kw = dict(lr=0.05, weight_decay=[0.0, 0.1], seeds=2, epochs=1, batch_size=BATCH)
    kw |= dict(out=tmp_path / "s", max_batch=2)
    run, calls = Trainer.run, []

    def second_interrupted(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(self)

    monkeypatch.setattr(Trainer, "run", second_interrupted)
    with pytest.raises(KeyboardInterrupt):
        wdlab.sweep(lambda seed: Net(dropout=0.5), splits, **kw)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="draws random numbers"):
        wdlab.sweep(lambda seed: Net(dropout=0.5), splits, parallel=2, **kw)
    with sqlite3.connect(tmp_path / "s" / "study.db") as db:
        statuses = sorted(s for (s,) in db.execute("SELECT status FROM runs"))
    db.close()
    assert statuses == ["done", "done", "pending", "pending"]
    assert len(wdlab.sweep(lambda seed: Net(dropout=0.5), splits, **kw).runs) == 4


class Flattens(nn.Module):
    """A convolution flattened with .view, which its channels_last output refuses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.conv(x).view(len(x), -1))


def test_a_model_failing_on_channels_last_inputs_is_told_so():
    _train(_configs("sgd")[:2], model=Flattens)  # NCHW: it trains
    with pytest.raises(ValueError, match=r"view.*inputs in torch\.channels_last"):
        _train(_configs("sgd")[:2], channels_last=True, model=Flattens)


def _lanes_in_child(queue):
    side = SideBySide(nn.Linear(2, 2), 2, lambda m: nn.Linear(2, 2))
    queue.put(side.map(4, lambda k, m: k + 1))


def test_a_forked_child_runs_lanes_of_its_own():
    """A process forked after lanes ran (a DataLoader worker, multiprocessing) gets threads of
    its own when it runs lanes; the parent's pool would wait on threads it does not have."""
    import multiprocessing

    side = SideBySide(nn.Linear(2, 2), 2, lambda m: nn.Linear(2, 2))
    assert side.map(2, lambda k, m: k) == [0, 1]  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_lanes_in_child, args=(queue,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert queue.get(timeout=5) == [1, 2, 3, 4]


def test_an_optuna_search_counts_memory_for_the_lanes_a_batch_of_trials_can_run(monkeypatch):
    """parallel=4 with batches of one trial of two seeds: two rows, so two lanes counted."""
    optuna = pytest.importorskip("optuna")
    from wdlab.optuna import optimize, trials

    seen, need = [], trials.memory_need

    def spy(*args, **kw):
        seen.append(kw["parallel"])
        return need(*args, **kw)

    monkeypatch.setattr(trials, "memory_need", spy)
    splits = image_splits()
    space = {"weight_decay": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optimize(
        study, lambda seed: Net(), splits, space, n_trials=1, batch=1, seeds=2, epochs=1,
        batch_size=BATCH, select="loss", parallel=4,
    )  # fmt: skip
    assert seen == [2]
