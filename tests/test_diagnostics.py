"""The ``rotation`` diagnostic (Kosson et al., ICML 2024): recorded values, predictions, figure."""

import itertools
import math

import pytest
import torch
from matplotlib.figure import Figure

from numerics import assert_normwise
from wdlab.data import Dataset
from wdlab.diagnostics import PREFIX, Rotation, equilibrium, make
from wdlab.models import ModelSpec
from wdlab.optimizers import optimizer_spec
from wdlab.records import Result, RunConfig
from wdlab.report.rotation import ROTATION, reached, rotation_figure
from wdlab.trainer import default_init, train

ADAMW = RunConfig("decoupled", 0.5, 0.01, "adamw")
SGDM = RunConfig("coupled", 0.005, 0.1, "sgd", (("momentum", 0.9),))
# Angles here are ≥ 0.01 rad; float32 unit vectors carry ~√C·2⁻²⁴ ≈ 2e-7 of error, so the
# float32 angles agree with float64 arccos to ≤ 2e-5 relative; norms to a few 1e-7.
ANGLE_BOUND, NORM_BOUND = 5e-5, 1e-6


def _angles64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-neuron angle in float64 by arccos, (K, out)."""
    a, b = a.double().flatten(2), b.double().flatten(2)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.arccos(cos.clamp(-1, 1))


def _rms64(w: torch.Tensor) -> torch.Tensor:
    return w.double().flatten(2).pow(2).sum(-1).mean(-1).sqrt()


def test_recorded_values_match_a_direct_computation():
    """Two epochs of 2 and 3 steps, a matrix and a conv-shaped weight, K = 2 rows."""
    g = torch.Generator().manual_seed(0)
    w = {"lin": torch.randn(2, 3, 4, generator=g), "conv": torch.randn(2, 5, 2, 3, generator=g)}
    configs = [SGDM, SGDM]
    rot = Rotation(list(w), configs, optimizer_spec("sgd"))
    expected: dict[str, list] = {f"{n}.{k}": [] for n in w for k in ("norm", "angle", "grad")}
    for steps in (2, 3):
        acc = {n: [] for n in w}
        gsq = {n: [] for n in w}
        for _ in range(steps):
            for n, t in w.items():
                t.grad = torch.randn(t.shape, generator=g)
                wn, gn = t.double().flatten(2), t.grad.double().flatten(2)
                sq = wn.pow(2).sum(-1, keepdim=True)
                tangent = gn - (gn * wn).sum(-1, keepdim=True) / sq * wn
                gsq[n].append((tangent.pow(2).sum(-1) * sq.squeeze(-1)).mean(-1))
            rot.before_step(w)
            new = {n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in w.items()}
            for n in w:
                acc[n].append(_angles64(w[n], new[n]).mean(-1))
            rot.after_step(new)
            w = new
        rot.end_epoch(0)
        for n in w:
            expected[f"{n}.norm"].append(_rms64(w[n]))
            expected[f"{n}.angle"].append(torch.stack(acc[n]).mean(0))
            expected[f"{n}.grad"].append(torch.stack(gsq[n]).mean(0))
    for row in (0, 1):
        got = rot.series(row)
        for n in w:
            norm = [float(e[row]) for e in expected[f"{n}.norm"]]
            angle = [float(e[row]) for e in expected[f"{n}.angle"]]
            assert_normwise(got[f"{PREFIX}{n}.norm"], norm, NORM_BOUND, f"{n} norm")
            assert_normwise(got[f"{PREFIX}{n}.angle"], angle, ANGLE_BOUND, f"{n} angle")
            # SGD: the predicted norm uses each epoch's measured ĝ² (checked through it)
            want = [
                (0.1 * float(gs[row]) / (2 * 0.005 * (1 - 0.9))) ** 0.25
                for gs in expected[f"{n}.grad"]
            ]
            assert_normwise(got[f"{PREFIX}{n}.norm_eq"], want, NORM_BOUND, f"{n} norm_eq")
            assert got[f"{PREFIX}{n}.angle_eq"] == pytest.approx(
                [math.sqrt(2 * 0.1 * 0.005 / 1.9)] * 2
            )


def test_equilibrium_values_are_kosson_et_al():
    norm, angle, _ = equilibrium(ADAMW, neuron_size=64)
    assert norm == pytest.approx(math.sqrt(0.01 * 64 / (2 * 0.5)))
    assert angle == pytest.approx(math.sqrt(2 * 0.01 * 0.5 * 0.1 / 1.9))
    betas = RunConfig("decoupled", 0.5, 0.01, "adamw", (("betas", (0.5, 0.99)),))
    assert equilibrium(betas, 64)[1] == pytest.approx(math.sqrt(2 * 0.01 * 0.5 * 0.5 / 1.5))
    # SGD with momentum α and torch's coupled decay: (η·ĝ²/(2λ(1−α)))^¼ and √(2ηλ/(1+α))
    norm, angle, _ = equilibrium(SGDM, 64, grad_sq=63.0)
    assert norm == pytest.approx((0.1 * 63 / (2 * 0.005 * 0.1)) ** 0.25)
    assert angle == pytest.approx(math.sqrt(2 * 0.1 * 0.005 / 1.9))
    # decoupled SGD (decay outside the momentum): derived, √(2ηλ(1−α)/(1+α))
    sgdw = RunConfig("decoupled", 0.005, 0.1, "sgd", (("momentum", 0.9),))
    assert equilibrium(sgdw, 64, 63.0)[1] == pytest.approx(math.sqrt(2 * 0.1 * 0.005 * 0.1 / 1.9))


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (RunConfig("cautious", 0.1, 0.01, "adamw"), "mask"),
        (RunConfig("to_init", 0.1, 0.01, "sgd"), "toward w₀"),
        (RunConfig("coupled", 0.1, 0.01, "adam"), "rescales"),
        (RunConfig("none", 0.0, 0.01, "adamw"), "no decay"),
        (RunConfig("decoupled", 0.0, 0.01, "adamw"), "no decay"),
        (RunConfig("coupled", 0.1, 0.01, "sgd", (("momentum", 0.9), ("nesterov", True))), "SGD"),
        (RunConfig("decoupled", 0.1, 0.01, "rmsprop"), "RMSprop"),
    ],
)
def test_no_equilibrium_where_no_formula_applies(config, why):
    norm, angle, reason = equilibrium(config, 64, 1.0)
    assert math.isnan(norm) and math.isnan(angle) and why in reason


BETAS = (("betas", (0.9, 0.99)),)


@pytest.mark.parametrize(
    "config",
    [RunConfig("builtin", 0.5, 0.01, "adamw", BETAS), SGDM],
)
def test_a_scale_invariant_random_walk_reaches_the_predicted_equilibrium(config):
    """Kosson et al.'s model: each step's gradient is Gaussian noise orthogonal to the neuron,
    scaled by 1/‖ω‖ (scale invariance). After ≫ 1/(2r) = 100 steps both recorded values must
    sit at the prediction. The formulas are first order in the decay rate r: for AdamW (r = ηλ
    = 5e-3) the ~10-step momentum window, over which each gradient's share already decays,
    puts the norm 2.7% below √(ηC/(2λ)) here (0.3% with β₁ = 0, 0.8% at r = 1e-3), so 5% bounds
    it and the fluctuation of 32 neurons. (β₂ = 0.99: v̂ must forget the start, where ‖ω‖ and so
    ‖g‖ differed 3×.)"""
    g = torch.Generator().manual_seed(0)
    w = (0.3 * torch.randn(1, 32, 64, generator=g)).requires_grad_(True)  # ‖ω‖ ≈ 2.4
    opts = dict(config.options) | {"lr": config.lr, "weight_decay": config.weight_decay}
    opt = optimizer_spec(config.optimizer).cls([w], **opts)
    rot = Rotation(["w"], [config], optimizer_spec(config.optimizer))
    for epoch in range(20):
        for _ in range(100):
            with torch.no_grad():
                n = w.norm(dim=-1, keepdim=True)
                xi = torch.randn(w.shape, generator=g)
                w.grad = (xi - (xi * w).sum(-1, keepdim=True) / n**2 * w) / n
            rot.before_step({"w": w})
            opt.step()
            rot.after_step({"w": w})
        rot.end_epoch(epoch)
    s = rot.series(0)
    for kind in ("norm", "angle"):
        measured, predicted = s[f"{PREFIX}w.{kind}"][-1], s[f"{PREFIX}w.{kind}_eq"][-1]
        assert measured == pytest.approx(predicted, rel=0.05), kind
        assert reached(s[f"{PREFIX}w.{kind}"], s[f"{PREFIX}w.{kind}_eq"]) is not None


SPEC = ModelSpec("mlp", in_dim=6, hidden=(8, 5), out_dim=3, activation="tanh", layernorm=True)


def _data() -> Dataset:
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    return Dataset("t", "multiclass", X, y, X[:8], y[:8], n_classes=3)


@pytest.fixture(scope="module")
def runs():
    configs = [ADAMW, RunConfig("decoupled", 0.1, 0.01, "adamw", seed=1)]
    return train(SPEC, _data(), configs, epochs=3, diagnostics=("rotation",), device="cpu")


def test_the_engine_records_rotation(runs):
    """Full batch, one step per epoch: the angle of epoch e is that between the weights after
    epochs e − 1 and e (the initial weights for e = 0), computed here from the same engine's
    weights trained for 1, 2 and 3 epochs."""
    cfg = ADAMW
    data = _data()
    after = [
        train(SPEC, data, [cfg], epochs=e, keep_params=True, device="cpu")[0].params
        for e in (1, 2, 3)
    ]
    start = {n: p.detach() for n, p in default_init(SPEC)(cfg.seed).named_parameters()}
    series = runs[0].curves.series
    for name in ("layers.0.weight", "layers.1.weight", "head.weight"):
        ws = [start[name][None]] + [a[name][None] for a in after]
        angles = [float(_angles64(a, b).mean()) for a, b in itertools.pairwise(ws)]
        norms = [float(_rms64(w)[0]) for w in ws[1:]]
        assert_normwise(series[f"{PREFIX}{name}.angle"], angles, ANGLE_BOUND, name)
        assert_normwise(series[f"{PREFIX}{name}.norm"], norms, NORM_BOUND, name)
        c = ws[0].shape[-1]
        assert series[f"{PREFIX}{name}.norm_eq"] == pytest.approx([math.sqrt(0.01 * c)] * 3)
    assert not any(k.startswith(PREFIX + "norms") or "bias" in k for k in series)


def test_the_figure_renders(runs):
    result = Result("run", runs=runs)
    assert ROTATION.applies(result) and "Kosson" in ROTATION.caption(result)
    fig = ROTATION.draw(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["layers.0.weight", "layers.1.weight", "head.weight"]
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    assert len(fig.axes[0].get_lines()) >= 2 * len(runs)  # measured and predicted per run
    plain = train(SPEC, _data(), [ADAMW], epochs=1, device="cpu")
    assert not ROTATION.applies(Result("run", runs=plain))
    with pytest.raises(ValueError, match="diagnostics"):
        rotation_figure(plain)


def test_reached_needs_every_later_mean_in_band():
    """Trailing means of 2 values: 2.0, 1.5, 1.025, 1.45, 1.25, 1.0, 1.05 → in the 20% band
    from index 5 on (index 2 drops out again)."""
    measured = [2.0, 1.0, 1.05, 1.85, 0.65, 1.35, 0.75]
    assert reached(measured, [1.0] * 7, window=2) == 5
    assert reached(measured, [1.0] * 7, tol=0.01, window=1) is None
    assert reached([1.0, 1.0], [math.nan, math.nan]) is None


def test_unknown_diagnostics_are_refused():
    with pytest.raises(ValueError, match="rotation"):
        make("spin", [], [ADAMW], optimizer_spec("adamw"))
    with pytest.raises(ValueError, match="unknown diagnostics"):
        train(SPEC, _data(), [ADAMW], epochs=1, diagnostics=("spin",), device="cpu")


def test_curves_csv_writes_each_epochs_diagnostics(tmp_path):
    """Diagnostics are per-epoch series: curves.csv has their value on every epoch's row, not
    an evaluation's value on the evaluation rows only."""
    import csv

    from wdlab.report.files import write_curves_csv

    runs = train(
        SPEC, _data(), [ADAMW], epochs=5, eval_every=4, diagnostics=("rotation",), device="cpu"
    )
    write_curves_csv(runs, tmp_path / "c.csv")
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    c = runs[0].curves
    names = [k for k in c.series if k.startswith(PREFIX)]
    assert names and [int(r["epoch"]) for r in rows] == c.epoch
    for k in names:
        assert [float(r[k]) for r in rows] == pytest.approx(c[k], nan_ok=True)
