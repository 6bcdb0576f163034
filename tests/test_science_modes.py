"""Modes ``cautious`` (CWD) and ``corrected`` (AdamC) against the papers' updates, written out.

The references below are independent transcriptions in plain tensor loops (gradients from
autograd, nothing from wdlab):

* Chen et al., "Cautious Weight Decay" (arXiv 2510.12402), Algorithm 1:
  x ← x − η_t·(u_t + λ·𝟙(u_t ⊙ x_t ≥ 0) ⊙ x_t), u_t the optimizer's update direction;
* Defazio, "Why Gradients Rapidly Increase Near the End of Training" (arXiv 2506.02285), AdamC:
  x ← x − η_t·u_t − (η_t²/η_max)·λ·x_t on normalized layers (every Linear except the output
  layer), x ← x − η_t·u_t − η_t·λ·x_t on the other decaying tensors.

u_t is SGD's momentum buffer (b ← μ·b + g, b₁ = g) or Adam's m̂/(√v̂ + ε). Biases and LayerNorm
weights (ndim < 2) do not decay.

Bounds: through ``Decay.attach`` the runs are in float64, where the reference and torch differ
only by the order of operations: 40 steps add at most ~40·4·2⁻⁵³ ≈ 2e-14 of relative rounding,
so 1e-11 leaves a wide margin and still fails for a wrong formula (which moves the weights by
≥ 1e-3, see test_the_oracles_discriminate). The batched engine runs in float32: per_steps(T).
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from numerics import assert_normwise, per_steps, rel_dist
from wdlab import verify
from wdlab.data import Dataset
from wdlab.decay import Decay, param_groups
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.trainer import default_init, train

STEPS = 40
NORMALIZED = {"layers.0.weight", "layers.1.weight"}  # every Linear except the output layer
SPEC = ModelSpec("mlp", in_dim=8, hidden=(16, 12), out_dim=3, activation="gelu", layernorm=True)
FLOAT64 = 1e-11


def _data(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(48, 8, generator=g, dtype=dtype), torch.randint(0, 3, (48,), generator=g)


def _module(seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    return default_init(SPEC)(seed).to(dtype)


# -- the papers' updates, transcribed ---------------------------------------------------------


def _direction(opt: str, state: dict, g: Tensor, momentum: float = 0.9) -> Tensor:
    """u_t: SGD's momentum buffer, or Adam's bias-corrected m̂/(√v̂ + ε)."""
    if opt == "sgd":
        state["b"] = g.clone() if "b" not in state else momentum * state["b"] + g
        return state["b"]
    b1, b2, eps = 0.9, 0.999, 1e-8
    state["t"] = state.get("t", 0) + 1
    state["m"] = b1 * state.get("m", torch.zeros_like(g)) + (1 - b1) * g
    state["v"] = b2 * state.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1 ** state["t"])
    v_hat = state["v"] / (1 - b2 ** state["t"])
    return m_hat / (v_hat.sqrt() + eps)


def paper_run(
    module: nn.Module, X: Tensor, y: Tensor, mode: str, opt: str, wd: float, lrs: list[float]
) -> dict[str, Tensor]:
    """Train ``module``'s weights with the paper's update, one lr per step; the final weights."""
    x = {n: p.detach().clone() for n, p in module.named_parameters()}
    state: dict[str, dict] = {n: {} for n in x}
    lr_max = max(lrs)
    for lr in lrs:
        w = {n: t.requires_grad_(True) for n, t in x.items()}
        loss = F.cross_entropy(functional_call(module, w, (X,)), y)
        grads = dict(zip(w, torch.autograd.grad(loss, list(w.values())), strict=True))
        new = {}
        for n, t in x.items():
            t = t.detach()
            u = _direction(opt, state[n], grads[n])
            if t.dim() < 2:
                decay = torch.zeros_like(t)
            elif mode == "cautious":
                decay = wd * (u * t >= 0).to(t.dtype) * t
            else:  # corrected: lr_t·(lr_t/lr_max)·wd on normalized layers, lr_t·wd elsewhere
                decay = wd * (lr / lr_max if n in NORMALIZED else 1.0) * t
            new[n] = t - lr * (u + decay)
        x = new
    return x


# -- wdlab: Decay.attach on a torch optimizer ---------------------------------------------------


def _optimizer(opt: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)  # weight_decay 0 in every group: Decay does it


def _scheduler(name: str, opt: torch.optim.Optimizer, lr: float):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    if name == "onecycle":  # warm-up to max_lr = 4·lr, then down: lr₀ must be max_lr
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=4 * lr, total_steps=STEPS, cycle_momentum=False
        )
    return None


def _lrs(name: str, lr: float) -> list[float]:
    """The lr of every step, written out (OneCycle: read off torch's scheduler)."""
    if name == "cosine":
        return [lr * (1 + math.cos(math.pi * t / STEPS)) / 2 for t in range(STEPS)]
    if name == "onecycle":
        dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched = _scheduler(name, dummy, lr)
        out = []
        for _ in range(STEPS):
            out.append(dummy.param_groups[0]["lr"])
            dummy.step()
            sched.step()
        return out
    return [lr] * STEPS


def attach_run(mode: str, opt: str, wd: float, lr: float, schedule: str) -> dict[str, Tensor]:
    X, y = _data(torch.float64)
    model = _module(0, torch.float64)
    decay = Decay(mode, wd)
    groups, _ = param_groups(model, decay)
    optimizer = _optimizer(opt, groups, lr)
    sched = _scheduler(schedule, optimizer, lr)
    decay.attach(optimizer)
    for _ in range(STEPS):
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sched is not None:
            sched.step()
    return {n: p.detach() for n, p in model.named_parameters()}


SETTINGS = {"sgd": (0.05, 0.1), "adamw": (0.01, 0.5)}  # (lr, wd): lr·wd = 5e-3 per step


@pytest.mark.numerics
@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
@pytest.mark.parametrize("mode", ["cautious", "corrected"])
def test_attach_matches_the_paper(mode, opt, schedule):
    lr, wd = SETTINGS[opt]
    ours = attach_run(mode, opt, wd, lr, schedule)
    X, y = _data(torch.float64)
    theirs = paper_run(_module(0, torch.float64), X, y, mode, opt, wd, _lrs(schedule, lr))
    assert_normwise(ours, theirs, FLOAT64, f"{mode} + {opt}, {schedule}")


def test_the_oracles_discriminate():
    """The references are far apart where the modes differ, so the bounds above mean something:
    cautious ≠ plain decoupled; corrected ≠ decoupled under a schedule, = it at a constant lr."""
    X, y = _data(torch.float64)
    lr, wd = SETTINGS["adamw"]
    m = _module(0, torch.float64)
    cautious = paper_run(m, X, y, "cautious", "adamw", wd, _lrs("cosine", lr))
    corrected = paper_run(m, X, y, "corrected", "adamw", wd, _lrs("cosine", lr))
    decoupled = attach_run("decoupled", "adamw", wd, lr, "cosine")
    assert rel_dist(cautious, decoupled) > 1e-3
    assert rel_dist(corrected, decoupled) > 1e-3
    flat = paper_run(m, X, y, "corrected", "adamw", wd, _lrs("constant", lr))
    assert rel_dist(flat, attach_run("decoupled", "adamw", wd, lr, "constant")) < FLOAT64


def test_corrected_measures_against_the_peak_not_the_constructor_lr():
    """Under OneCycleLR the group's lr starts at max_lr/25: lr₀ must be max_lr, else the
    normalized layers decay up to 25× too much (here: the answer moves by far more than 1e-11)."""
    lr, wd = SETTINGS["adamw"]
    ours = attach_run("corrected", "adamw", wd, lr, "onecycle")
    X, y = _data(torch.float64)
    lrs = _lrs("onecycle", lr)
    theirs = paper_run(_module(0, torch.float64), X, y, "corrected", "adamw", wd, lrs)
    wrong = paper_run(_module(0, torch.float64), X, y, "corrected", "adamw", wd, lrs[:1] + lrs)
    assert max(lrs) == pytest.approx(4 * lr)
    assert rel_dist(ours, theirs) < FLOAT64 < rel_dist(ours, wrong)


# -- the batched engine -----------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_engine_matches_the_paper(opt, schedule):
    """Cautious and corrected rows, two weight decays and two seeds, in one batch.

    Seeds 1 and 2: seed 0's initial weights have a first-layer weight (−0.34) whose first SGD
    update (7.7e-9) is below half a unit in the last place of float32, so the update as applied
    is 0 and ``cautious`` decays it where Algorithm 1's exact u says not to (see
    test_cautious_reads_the_update_as_applied); in float64 (the tests above) no update is lost.
    """
    lr, wd = SETTINGS[opt]
    options = (("momentum", 0.9),) if opt == "sgd" else ()
    configs = [
        RunConfig(mode, w, lr, opt, options, seed=s)
        for mode in ("cautious", "corrected")
        for w, s in ((wd, 1), (wd / 2, 2))
    ]
    X, y = _data()
    data = Dataset("t", "multiclass", X, y, X[:8], y[:8], n_classes=3)
    sched = None if schedule == "constant" else schedule
    runs = train(SPEC, data, configs, epochs=STEPS, keep_params=True, schedule=sched, device="cpu")
    for cfg, run in zip(configs, runs, strict=True):
        theirs = paper_run(
            _module(cfg.seed), X, y, cfg.mode, opt, cfg.weight_decay, _lrs(schedule, lr)
        )
        assert_normwise(run.params, theirs, per_steps(STEPS), f"engine {cfg}")


def test_cautious_reads_the_update_as_applied():
    """The mask is taken on x_t − x_{t+1}, the update the optimizer made: one lost to rounding
    (|η·u| below half an ulp of x) counts as u = 0 and decays (Algorithm 1's ≥), whatever the
    sign of the exact u; an update that survives rounding is masked by its sign."""
    x = torch.tensor([[0.5, 0.5, 0.5]])
    x.grad = torch.tensor([[1e-9, -1e-9, -1.0]])  # SGD: u = g; lr·u = ±1e-10 is lost at 0.5
    opt = torch.optim.SGD([{"params": [x], "decay": True}], lr=0.1)
    Decay("cautious", 0.5).attach(opt)
    opt.step()
    # u·x: +, − (lost: decays anyway), − (kept: no decay; only the update 0.1 is added)
    assert x.flatten().tolist() == pytest.approx([0.5 * (1 - 0.05), 0.5 * (1 - 0.05), 0.6])


# -- wdlab verify in the light core install -----------------------------------------------------


def test_ridge_check_without_scikit_learn(monkeypatch):
    """scikit-learn is an optional extra: without it the ridge row compares with the closed form
    in float64 and says so; with it, the two references agree to float64 rounding."""
    with_sklearn = verify.check_ridge(n=120, d=4, wd=0.05, steps=3000)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)  # its import now fails
    without = verify.check_ridge(n=120, d=4, wd=0.05, steps=3000)
    assert without.passed and without.reference.startswith("closed form, float64")
    assert "alpha = n·wd = 6" in without.reference
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 4, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + 0.5
    closed, source = verify.ridge_reference(X, y, 6.0)
    assert source == "closed form, float64"
    if with_sklearn.reference.startswith("sklearn"):
        monkeypatch.delitem(sys.modules, "sklearn.linear_model")
        theirs, source = verify.ridge_reference(X, y, 6.0)
        assert source == "sklearn Ridge" and rel_dist(closed, theirs) < 1e-12


def test_verify_leaves_the_callers_random_state(monkeypatch):
    """The checks seed torch, and a reference may draw from ``random`` or NumPy: after
    ``run_checks`` the caller's generators are where they were (checked by their next draws)."""
    import random

    import numpy as np

    real = verify.check_ridge

    def ridge_and_draws():
        random.seed(1), np.random.seed(1)
        return real(n=60, d=3, wd=0.05, steps=200)

    monkeypatch.setattr(verify, "all_checks", lambda: [ridge_and_draws])
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    verify.run_checks()
    after = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    assert torch.equal(after[0], torch.rand(3))
    assert after[1:] == (random.random(), np.random.rand())
