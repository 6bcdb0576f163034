"""A weight-decay schedule (``wd_schedule``) and tensor groups with their own weight decay
(``group_wd``) in the trainer and in sweeps (issue 24 item 3), through the one decay driver.

The rule (:mod:`wdlab.trainer.decays`): in a row that decays, the tensors a pattern matches
decay at the pattern's weight decay, the others at the row's, as ``param_groups(model, decay,
weight_decays=...)`` makes them; a schedule scales each of these by ``schedule(step)/START``,
which is ``Decay(mode, weight_decay=START, schedule=S)`` on groups that each have a weight
decay of their own; a row with wd = 0 is the reference and decays nothing.

* Alone (one configuration: the module's own kernels) each row *is* the plain PyTorch loop
  with ``Decay.attach`` on ``param_groups``: bitwise on the CPU, for every mode.
* In a batch, the same maths through vmap's kernels: its update w_T − w₀ within
  ``per_steps(T)`` of the one alone (:mod:`numerics`).
* The built-in MLP's engines (hand-written backward; the exact Gram path over coefficients)
  give the plain loop's numbers norm-wise.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdlab
from numerics import assert_normwise, per_steps, updates
from wdlab.cli import main
from wdlab.config import validate
from wdlab.data import Dataset
from wdlab.decay import DEFAULT_RULE, Decay, Keys, param_groups
from wdlab.decay.schedules import parse, scaled
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.store import hash_config
from wdlab.trainer import train
from wdlab.trainer.decays import own_per_row

EPOCHS, BATCH, N_TRAIN = 2, 16, 64
STEPS = EPOCHS * N_TRAIN // BATCH  # 8
SCHEDULE = "cosine:0.05:0.4:6"  # ramps 8× within the 8 steps, then stays
GROUP_WD = {"head.weight": 0.02}
WDS = (0.0, 0.01, 0.1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 6, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.3).long()
    return Dataset(
        "t", "multiclass", X[:64], y[:64], X[80:], y[80:], X[64:80], y[64:80], n_classes=3
    )


def plain_loop(data, cfg, schedule=SCHEDULE, group_wd=GROUP_WD):
    """What a user writes: param_groups with the row's weight decay as the rest's own (the
    patterns first, ``*`` takes what they leave), a Decay measured against the schedule's
    start, attached to a torch optimizer; mini-batches drawn as wdlab draws them."""
    torch.manual_seed(cfg.seed)
    model = Net()
    decay = None
    groups = model.parameters()
    if cfg.weight_decay > 0:
        s = parse(schedule)
        decay = Decay(cfg.mode, s.start, schedule=s)
        own = {**group_wd, "*": cfg.weight_decay}
        groups, _ = param_groups(model, decay, DEFAULT_RULE, weight_decays=own)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0, fused=True)
    if decay is not None:
        decay.attach(opt)
    shuffle = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X, y = data.X_train, data.y_train
    for _ in range(EPOCHS):
        perm = torch.randperm(len(X), generator=shuffle)
        for i in range(0, len(X), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss = F.cross_entropy(model(X[idx]), y[idx])
            if decay is not None and cfg.mode == "l2":
                loss = loss + decay.penalty(opt)
            loss.backward()
            opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train(data, configs, **kw):
    spec = ModelSpec("custom", factory=Net, in_dim=6, out_dim=3)
    kw = dict(epochs=EPOCHS, batch_size=BATCH, keep_params=True, device="cpu") | kw
    return train(spec, data, configs, **kw)


PAIRS = [
    ("sgd", "coupled"),
    ("sgd", "l2"),
    ("sgd", "to_init"),
    ("sgd", "builtin"),
    ("adamw", "builtin"),
    ("adamw", "decoupled"),
    ("adamw", "independent"),
    ("adamw", "corrected"),
    ("adamw", "cautious"),
]


@pytest.mark.numerics
@pytest.mark.parametrize("opt, mode", PAIRS, ids=[f"{o}-{m}" for o, m in PAIRS])
def test_each_row_is_the_plain_loop_and_batched_is_alone(opt, mode):
    data = _data()
    lr, options = (0.05, (("momentum", 0.9),)) if opt == "sgd" else (0.01, ())
    configs = [RunConfig(mode, wd, lr, opt, options, seed=0) for wd in WDS]
    kw = dict(wd_schedule=SCHEDULE, group_wd=GROUP_WD)
    batched = _train(data, configs, **kw)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        start = dict(Net().named_parameters())
    for c, b in zip(configs, batched, strict=True):
        alone = _train(data, [c], **kw)[0]
        assert alone.engine.startswith("torch.func: one configuration"), alone.engine
        plain = plain_loop(data, c)
        unequal = [n for n in plain if not torch.equal(alone.params[n], plain[n])]
        assert unequal == [], f"{opt} {mode} wd={c.weight_decay}: alone ≠ plain loop in {unequal}"
        ours, theirs = (updates({n: r.params[n] for n in start}, start) for r in (b, alone))
        assert_normwise(ours, theirs, per_steps(STEPS), f"{mode} wd={c.weight_decay}: batched")
    # neither option is a no-op: without either one the decaying rows train otherwise
    for without in ({"group_wd": GROUP_WD}, {"wd_schedule": SCHEDULE}):
        for off, on in zip(_train(data, configs[1:], **without), batched[1:], strict=True):
            assert not torch.equal(off.params["head.weight"], on.params["head.weight"]), without


def test_the_reference_row_decays_nothing():
    """wd = 0 with group wds and a schedule trains as wd = 0 without them (bitwise alone)."""
    data = _data()
    c = RunConfig("decoupled", 0.0, 0.01, "adamw", seed=0)
    with_them = _train(data, [c], wd_schedule=SCHEDULE, group_wd=GROUP_WD)[0]
    without = _train(data, [c])[0]
    assert all(torch.equal(with_them.params[n], without.params[n]) for n in without.params)


def test_the_sweep_rule_is_decays_rule_for_groups_with_their_own_wd():
    """scaled(S, wd)(t) is Decay(mode, START, schedule=S).wd_at(t) of a group whose own weight
    decay is wd: the same float, bitwise; per row (float64) the same values."""
    s = parse(SCHEDULE)
    decay = Decay("decoupled", s.start, schedule=s)
    rows = torch.tensor([0.0, 0.01, 0.3], dtype=torch.float64)
    for wd in (0.01, 0.3, 1.7e-4):
        for t in range(10):
            assert scaled(s, wd)(t) == decay.wd_at(t, {Keys.OWN_WD: wd})
    for t in range(10):
        expected = [decay.wd_at(t, {Keys.OWN_WD: float(w)}) if w else 0.0 for w in rows]
        assert scaled(s, rows)(t).tolist() == expected
    assert own_per_row(rows, 0.02).tolist() == [0.0, 0.02, 0.02]
    assert own_per_row(0.0, 0.02) == 0.0 and own_per_row(0.1, 0.02) == 0.02


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["coupled", "decoupled", "l2", "builtin", "to_init"])
def test_the_built_in_engines_are_the_plain_loop(mode):
    """The built-in MLP, full batch, SGD: the Gram path (weights as coefficients) and the
    hand-written one give the plain loop's numbers with a schedule and a group wd."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 48, generator=g)
    y = (torch.rand(40, generator=g) > 0.5).float()
    data = Dataset("t", "binary", X[:30], y[:30], X[30:], y[30:])
    spec = ModelSpec("mlp", in_dim=48, hidden=(16,), out_dim=1)
    schedule, group_wd, epochs = "linear:0.1:0.5:10", {"layers.0.weight": 0.3}, 12
    configs = [RunConfig(mode, wd, 0.1, "sgd", (("momentum", 0.9),), seed=0) for wd in WDS]
    kw = dict(epochs=epochs, keep_params=True, device="cpu", wd_schedule=schedule)
    fast = train(spec, data, configs, group_wd=group_wd, fast_path=True, **kw)
    std = train(spec, data, configs, group_wd=group_wd, fast_path=False, **kw)
    assert "Gram" in fast[0].engine and std[0].engine.startswith("standard")
    for c, f, s in zip(configs, fast, std, strict=True):
        assert_normwise(f.params, s.params, per_steps(epochs), f"{mode} Gram vs standard")
        torch.manual_seed(0)
        model = spec.build(0)
        decay, groups = None, model.parameters()
        if c.weight_decay > 0:
            sched = parse(schedule)
            decay = Decay(mode, sched.start, schedule=sched)
            own = {**group_wd, "*": c.weight_decay}
            groups, _ = param_groups(model, decay, DEFAULT_RULE, weight_decays=own)
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        if decay is not None:
            decay.attach(opt)
        for _ in range(epochs):
            loss = F.binary_cross_entropy_with_logits(model(data.X_train).squeeze(-1), y[:30])
            if decay is not None and mode == "l2":
                loss = loss + decay.penalty(opt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain = dict(model.named_parameters())
        assert_normwise(s.params, plain, per_steps(epochs), f"{mode} wd={c.weight_decay}")


def _splits():
    data = _data()
    return {
        "train": (data.X_train, data.y_train),
        "val": (data.X_val, data.y_val),
        "test": (data.X_test, data.y_test),
    }


def test_wdlab_sweep_applies_them_and_they_are_in_its_identity(tmp_path):
    kw = dict(
        optimizer="adamw", lr=0.01, weight_decay=[0.0, 0.01, 0.1], epochs=EPOCHS,
        batch_size=BATCH, eval_every=1,
    )  # fmt: skip
    plain = wdlab.sweep(Net, _splits(), out=tmp_path / "a", **kw)
    ours = wdlab.sweep(
        Net, _splits(), out=tmp_path / "b", wd_schedule=parse(SCHEDULE), group_wd=GROUP_WD, **kw
    )
    assert ours.config["decay"]["wd_schedule"] == SCHEDULE
    assert ours.config["decay"]["group_wd"] == GROUP_WD
    alone = _train(_data(), [r.config for r in ours.runs], wd_schedule=SCHEDULE, group_wd=GROUP_WD)
    for a, b, r in zip(plain.runs, ours.runs, alone, strict=True):
        assert a.config == b.config
        same = a.final["val_loss"] == b.final["val_loss"]
        assert same == (a.config.weight_decay == 0), a.config  # only decaying runs change
        assert_normwise([b.final["val_loss"]], [r.final["val_loss"]], per_steps(STEPS))
    assert "wd_schedule" in ours.config["decay"] and plain.config["decay"]["wd_schedule"] is None


def test_a_config_without_them_keeps_its_identity_and_their_order_counts():
    base = validate({"data": {"source": "wine"}})
    assert "wd_schedule" not in base.identity()["decay"]
    assert "group_wd" not in base.identity()["decay"]
    one = validate({"decay": {"group_wd": {"a*": 0.1, "ab": 0.2}}})
    two = validate({"decay": {"group_wd": {"ab": 0.2, "a*": 0.1}}})
    assert one.decay.group_wd == two.decay.group_wd  # equal as dicts…
    assert hash_config(one.identity()) != hash_config(two.identity())  # …not as what trains
    assert one.identity()["decay"]["group_wd"] == [["a*", 0.1], ["ab", 0.2]]


def test_run_and_sweep_train_them_and_refuse_bad_ones_in_one_line(tmp_path, capsys):
    base = ["--data", "wine", "--model", "linear", "--epochs", "2", "--mode", "decoupled"]
    base += ["--wd", "0,1e-3", "--seeds", "1", "--json"]
    argv = ["--wd-schedule", "linear:0.001:0.01:4", "--group-wd", "weight=0.01"]
    assert main(["run", *base, *argv]) == 0
    capsys.readouterr()
    for extra, fragment in (
        (
            ["--wd-schedule", "linear:0:0.01:4"],
            "(--wd-schedule): weight-decay schedule linear",
        ),
        (["--group-wd", "nothing.*=0.1"], "weight decay for 'nothing.*': the pattern matches no"),
    ):
        out = tmp_path / "study"
        assert main(["sweep", *base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, err
        assert not (out / "study.db").exists()  # refused before anything is stored
