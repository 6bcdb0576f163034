"""The exact Gram-matrix fast path gives the standard path's numbers, and is chosen honestly."""

import pytest
import torch

import wdlab
from numerics import assert_normwise, per_steps
from wdlab import decay as D
from wdlab.data import Dataset, seed_noise
from wdlab.models import ModelSpec
from wdlab.pipelines import DemoSettings, run_demo, seed_init
from wdlab.records import RunConfig
from wdlab.trainer import train

pytestmark = pytest.mark.numerics  # every test here compares kernel paths

MODES = [
    ("none", 0.0),
    ("l2", 0.05),
    ("coupled", 0.05),
    ("builtin", 0.05),
    ("decoupled", 0.1),
    ("independent", 0.01),
    ("to_init", 0.1),
]


def _data(n=30, d=48, seed=0, task="binary"):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + 10, d, generator=g)
    if task == "multiclass":
        y = torch.randint(0, 3, (n + 10,), generator=g)
        return Dataset("t", task, X[:n], y[:n], X[n:], y[n:], n_classes=3)
    y = (torch.rand(n + 10, generator=g) > 0.5).float()
    return Dataset("t", task, X[:n], y[:n], X[n:], y[n:])


@pytest.mark.parametrize(
    "spec, task",
    [
        (ModelSpec("seed-mlp", in_dim=48), "binary"),
        (
            ModelSpec(
                "mlp", in_dim=48, hidden=(16, 8), out_dim=3, activation="relu", layernorm=True
            ),
            "multiclass",
        ),
        (ModelSpec("linear", in_dim=48, out_dim=1), "binary"),
    ],
)
@pytest.mark.parametrize(
    "options", [(), (("momentum", 0.9),), (("momentum", 0.9), ("nesterov", True))]
)
def test_fast_path_equals_standard_path_for_every_mode(spec, task, options):
    data = _data(task=task)
    configs = [
        RunConfig(
            mode=m, weight_decay=wd, lr=0.05, optimizer="sgd", options=options, seed=i % 2, label=m
        )
        for i, (m, wd) in enumerate(MODES)
    ]
    kw = dict(epochs=40, eval_every=5, keep_params=True, device="cpu", rule=D.DEFAULT_RULE)
    fast = train(spec, data, configs, fast_path=True, **kw)
    std = train(spec, data, configs, fast_path=False, **kw)
    assert "Gram" in fast[0].engine and std[0].engine.startswith("standard")
    for f, s in zip(fast, std, strict=True):
        for curve in ("train_loss", "weight_norm", "test_loss"):
            assert_normwise(f.curves[curve], s.curves[curve], per_steps(40), curve)
        assert_normwise(f.params, s.params, per_steps(40), f.config.mode)


def test_fast_path_is_chosen_only_where_it_applies():
    data = _data()
    spec = ModelSpec("seed-mlp", in_dim=48)
    sgd = [RunConfig(mode="coupled", weight_decay=0.1, lr=0.1)]
    assert "n_train 30 < d_in 48" in train(spec, data, sgd, epochs=2, device="cpu")[0].engine
    adam = [RunConfig(mode="coupled", weight_decay=0.1, lr=0.01, optimizer="adam")]
    run = train(spec, data, adam, epochs=2, device="cpu")[0]
    assert run.engine.startswith("standard path") and "Adam" in run.engine
    with pytest.raises(ValueError, match="not an SGD-family"):
        train(spec, data, adam, epochs=2, device="cpu", fast_path=True)
    tall = _data(n=60, d=20)
    run = train(ModelSpec("seed-mlp", in_dim=20), tall, sgd, epochs=2, device="cpu")[0]
    assert "n_train 60 >= d_in 20" in run.engine


def test_demo_fast_and_standard_agree_and_stay_bitwise():
    s = DemoSettings(epochs=60, dim=64)
    fast, std = run_demo(s, device="cpu"), run_demo(s, device="cpu", fast_path=False)
    assert "Gram" in fast.runs[0].engine
    assert fast.check.identical and std.check.identical
    for f, r in zip(fast.runs, std.runs, strict=True):
        assert_normwise([f.final["test_loss"]], [r.final["test_loss"]], per_steps(s.epochs + 1))


def test_fast_path_reproduces_a_plain_torch_loop():
    """Independent of the standard path: SGD with momentum on an nn.Module, the article's way."""
    data = seed_noise(40, 0)
    spec = ModelSpec("seed-mlp", in_dim=40)
    cfg = RunConfig(mode="coupled", weight_decay=0.05, lr=0.1, options=(("momentum", 0.9),))
    run = train(
        spec,
        data,
        [cfg],
        epochs=30,
        rule=D.EVERYTHING,
        init=seed_init(40),
        keep_params=True,
        device="cpu",
        fast_path=True,
    )[0]
    model = seed_init(40)(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(data.X_train).squeeze(-1), data.y_train
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_normwise(run.params, dict(model.named_parameters()), per_steps(30), "momentum")


def test_bf16_precision_runs_close_to_fp32_and_declines_the_fast_path():
    """Changed deliberately (a new-user trial): the fast path under bf16 rounded only its Gram
    products, so its "bf16" run stayed near float32, unlike a plain autocast loop. Under bf16
    the standard path runs (the engine line says why), the same numbers with or without
    ``--no-fast-path``; ``fast_path=True`` is refused in one line."""
    s = DemoSettings(epochs=40, dim=64)
    fp32 = run_demo(s, device="cpu")
    assert fp32.runs[0].engine.startswith("exact Gram fast path")
    bf16 = run_demo(s, device="cpu", precision="bf16")
    assert bf16.runs[0].engine.startswith("standard path (the fast path is exact in float32, not")
    assert bf16.check.identical
    off = run_demo(s, device="cpu", fast_path=False, precision="bf16")
    losses = lambda d: [(r.final["train_loss"], r.final["test_loss"]) for r in d.runs]  # noqa: E731
    assert losses(off) == losses(bf16)
    for f, b in zip(fp32.runs, bf16.runs, strict=True):
        assert b.final["test_loss"] == pytest.approx(f.final["test_loss"], rel=5e-2)
        assert b.final["test_loss"] != f.final["test_loss"]  # it really ran in bf16
    with pytest.raises(ValueError, match=r"the fast path does not apply: .* not under bf16"):
        run_demo(s, device="cpu", fast_path=True, precision="bf16")
    tall = wdlab.sweep("mlp", "wine", optimizer="sgd", batch_size=None, epochs=1,
                       weight_decay=[0.0], precision="bf16")  # fmt: skip
    assert "no saving" in tall.engine_note  # n_train >= d_in: so in fp32 too, not "bf16"
    with pytest.raises(ValueError, match="precision"):
        train(ModelSpec("linear", in_dim=48), _data(), [RunConfig()], epochs=1, precision="fp8")
