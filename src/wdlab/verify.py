"""Equivalence checks: wdlab's decay modes against torch.optim and scikit-learn."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdlab.data import Dataset
from wdlab.decay import DEFAULT_RULE, EVERYTHING, Decay, DecayRule, param_groups
from wdlab.models import MLP, ModelSpec
from wdlab.optimizers import optimizer_class
from wdlab.records import Check, RunConfig
from wdlab.report.text import checks_table
from wdlab.trainer import make_scheduler, train

__all__ = ["Check", "all_checks", "checks_table", "compare", "max_diffs", "run_checks"]


def max_diffs(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> tuple[float, float, bool]:
    """(max |a−b|, max |a−b| / max |b|, bitwise identical) over tensors with the same names."""
    if set(a) != set(b):
        raise ValueError(f"parameter names differ: {sorted(set(a) ^ set(b))}")
    abs_diff, scale, identical = 0.0, 0.0, True
    for name in a:
        x, y = a[name].detach().double(), b[name].detach().double()
        if x.shape != y.shape:
            raise ValueError(f"shape of {name} differs: {tuple(x.shape)} vs {tuple(y.shape)}")
        identical &= torch.equal(a[name], b[name])
        if x.numel():
            abs_diff = max(abs_diff, float((x - y).abs().max()))
            scale = max(scale, float(y.abs().max()))
    rel = abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else math.inf)
    return abs_diff, rel, identical


def compare(
    name: str,
    reference: str,
    ours: Mapping[str, Tensor],
    theirs: Mapping[str, Tensor],
    *,
    tolerance: float = 0.0,
    detail: str = "",
) -> Check:
    """Compare two sets of tensors; ``tolerance`` 0 asks for bitwise identity (relative else)."""
    abs_diff, rel, identical = max_diffs(ours, theirs)
    passed = identical if tolerance == 0 else rel <= tolerance
    return Check(name, reference, abs_diff, rel, identical, tolerance, passed, detail)


# ---------------------------------------------------------------------------------------------
# The oracle checks. Each trains two small models from the same initial weights for ≥ 50 steps:
# one with a wdlab Decay attached to a plain optimizer, one with the reference (torch's own
# weight_decay, AdamW, scikit-learn's closed form), and compares the final weights.

STEPS = 60


def _problem(kind: str, seed: int = 0) -> tuple[Callable[[], nn.Module], Tensor, Tensor, Callable]:
    """(model factory, X, y, loss function) for a small seeded problem."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(48, 8, generator=g)
    if kind == "mlp":  # small MLP with biases, binary
        y = (torch.rand(48, generator=g) > 0.5).float()

        def factory() -> nn.Module:
            torch.manual_seed(seed)
            return MLP(8, (16,), 1, "tanh")

        def loss(out: Tensor, target: Tensor) -> Tensor:
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), target)

        return factory, X, y, loss
    # biases and LayerNorm, three classes
    y = torch.randint(0, 3, (48,), generator=g)

    def factory_ln() -> nn.Module:
        torch.manual_seed(seed)
        return MLP(8, (16, 12), 3, "gelu", layernorm=True)

    return factory_ln, X, y, F.cross_entropy


def train_module(
    factory: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: str,
    lr: float,
    decay: Decay,
    *,
    options: dict | None = None,
    rule: DecayRule = DEFAULT_RULE,
    schedule: str | None = None,
    steps: int = STEPS,
    reference: bool = False,
) -> dict[str, Tensor]:
    """Train a fresh model with ``decay`` attached (or, with ``reference``, with torch's own
    ``weight_decay=wd`` on the decaying group) and return its final weights."""
    model = factory()
    ref_decay = Decay("builtin", decay.weight_decay) if reference else decay
    groups, _ = param_groups(model, ref_decay, rule)
    opt = optimizer_class(optimizer)(groups, lr=lr, **(options or {}))
    sched = make_scheduler(opt, schedule, steps)
    if not reference:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decay.attach(opt)
    for _ in range(steps):
        loss = loss_fn(model(X), y)
        if not reference:
            loss = loss + decay.penalty(opt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _oracle(
    name: str,
    mode: str,
    optimizer: str,
    reference_label: str,
    tolerance: float,
    *,
    problem: str = "mlp",
    options: dict | None = None,
    schedule: str | None = None,
    reference_optimizer: str | None = None,
    wd: float = 0.05,
    lr: float = 0.05,
) -> Check:
    factory, X, y, loss = _problem(problem)
    ours = train_module(
        factory, X, y, loss, optimizer, lr, Decay(mode, wd), options=options, schedule=schedule
    )
    theirs = train_module(
        factory,
        X,
        y,
        loss,
        reference_optimizer or optimizer,
        lr,
        Decay("builtin", wd),
        options=options,
        schedule=schedule,
        reference=True,
    )
    sched = f", {schedule} schedule" if schedule else ""
    detail = f"{problem} model, lr {lr:g}, wd {wd:g}, {STEPS} steps{sched}"
    return compare(name, reference_label, ours, theirs, tolerance=tolerance, detail=detail)


def check_l2_vs_coupled() -> Check:
    """``l2`` (loss term) and ``coupled`` (gradient term) agree up to float rounding."""
    factory, X, y, loss = _problem("ln")
    a = train_module(factory, X, y, loss, "sgd", 0.05, Decay("l2", 0.05))
    b = train_module(factory, X, y, loss, "sgd", 0.05, Decay("coupled", 0.05))
    return compare(
        "l2 ≈ coupled (SGD)",
        "same maths, float rounding only",
        a,
        b,
        tolerance=1e-5,
        detail=f"LayerNorm model, {STEPS} steps; the difference is rounding",
    )


def check_adam_l2_differs_from_decoupled() -> Check:
    """Adam + ``l2`` and Adam + ``decoupled`` really differ (Loshchilov & Hutter)."""
    factory, X, y, loss = _problem("ln")
    a = train_module(factory, X, y, loss, "adam", 0.01, Decay("l2", 0.1))
    b = train_module(factory, X, y, loss, "adam", 0.01, Decay("decoupled", 0.1))
    abs_diff, rel, identical = max_diffs(a, b)
    return Check(
        "Adam l2 ≠ Adam decoupled",
        "must differ: Adam rescales the l2 gradient",
        abs_diff,
        rel,
        identical,
        1e-3,
        rel > 1e-3,
        f"LayerNorm model, lr 0.01, wd 0.1, {STEPS} steps; measured divergence rel {rel:.3g}",
    )


def check_ridge(n: int = 200, d: int = 6, wd: float = 0.02, steps: int = 3000) -> Check:
    """Full-batch GD with ``coupled`` decay on ½·MSE converges to sklearn's Ridge(alpha=n·wd)."""
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w_true + 0.7 + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)

    def factory() -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(d, 1).double()

    def half_mse(out: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (out.squeeze(-1) - target).pow(2).mean()

    # Default rule: the weight decays, the bias (intercept) does not, as in Ridge.
    ours = train_module(factory, X, y, half_mse, "sgd", 0.5, Decay("coupled", wd), steps=steps)
    ridge = Ridge(alpha=n * wd, fit_intercept=True).fit(X.numpy(), y.numpy())
    theirs = {
        "weight": torch.from_numpy(ridge.coef_).view(1, d),
        "bias": torch.tensor([float(ridge.intercept_)], dtype=torch.float64),
    }
    return compare(
        "coupled GD → Ridge",
        f"sklearn Ridge(alpha = n·wd = {n * wd:g})",
        ours,
        theirs,
        tolerance=1e-4,
        detail=f"linear, loss (1/2n)‖Xw−y‖², n {n}, d {d}, wd {wd:g}, {steps} steps, "
        "intercept not penalised",
    )


def _decay_only(
    decay: Decay, lr: float, schedule: str | None, steps: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(weights after ``steps`` SGD steps whose loss gradient is zero — only the decay acts,
    the initial weights)."""
    factory, X, _, _ = _problem("mlp")
    model = factory()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups, _ = param_groups(model, decay, EVERYTHING)
    opt = torch.optim.SGD(groups, lr=lr)
    sched = make_scheduler(opt, schedule, steps)
    decay.attach(opt)
    if decay.mode == "to_init":  # anchored at the start; now move away from it
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
    for _ in range(steps):
        opt.zero_grad()
        (0.0 * model(X).sum()).backward()  # gradients exist and are zero
        opt.step()
        if sched is not None:
            sched.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, start


def check_independent() -> Check:
    """``independent``: the base lr does not change the per-step decay factor."""
    a, _ = _decay_only(Decay("independent", 0.05), 0.1, "cosine", STEPS)
    b, _ = _decay_only(Decay("independent", 0.05), 0.01, "cosine", STEPS)
    return compare(
        "independent: base lr ×10",
        "same weights (factor 1 − wd·lr_t/lr₀)",
        a,
        b,
        tolerance=1e-6,
        detail=f"zero loss gradient, cosine schedule, lr₀ 0.1 vs 0.01, {STEPS} steps",
    )


def check_to_init() -> Check:
    """``to_init``: with a zero loss gradient the weights return to the anchor w₀."""
    ours, anchor = _decay_only(Decay("to_init", 1.0), 0.5, None, STEPS)
    return compare(
        "to_init → w₀",
        "the initial weights",
        ours,
        anchor,
        tolerance=1e-6,
        detail=f"weights moved by N(0,1) noise, zero loss gradient, lr 0.5, wd 1, {STEPS} steps",
    )


def check_engine_rows() -> Check:
    """The batched engine: each configuration in a batch ≡ that configuration trained alone."""
    _, X, y, _ = _problem("ln")
    data = Dataset("check", "multiclass", X, y, X[:8], y[:8], n_classes=3)
    spec = ModelSpec("mlp", in_dim=8, hidden=(16, 12), out_dim=3, activation="gelu", layernorm=True)
    configs = [
        RunConfig(mode=m, weight_decay=wd, lr=0.003, optimizer="adam", seed=0, label=m)
        for m, wd in [
            ("none", 0.0),
            ("l2", 0.1),
            ("coupled", 0.05),
            ("decoupled", 0.1),
            ("independent", 1e-3),
            ("to_init", 0.1),
            ("builtin", 0.05),
        ]
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Adam + builtin warns, on purpose
        batched = train(spec, data, configs, epochs=STEPS, keep_params=True, device="cpu")
        alone = [
            train(spec, data, [cfg], epochs=STEPS, keep_params=True, device="cpu")[0]
            for cfg in configs
        ]
    ours, theirs = {}, {}
    for cfg, run, single in zip(configs, batched, alone, strict=True):
        ours.update({f"{cfg.mode}/{n}": t for n, t in run.params.items()})
        theirs.update({f"{cfg.mode}/{n}": t for n, t in single.params.items()})
    return compare(
        "engine batch ≡ alone",
        "each configuration trained alone",
        ours,
        theirs,
        tolerance=1e-5,
        detail=f"7 modes batched, Adam, LayerNorm model, {STEPS} steps",
    )


def all_checks() -> list[Callable[[], Check]]:
    """Every check ``wdlab verify`` runs, in order."""
    return [
        lambda: _oracle("coupled + SGD", "coupled", "sgd", "SGD(weight_decay)", 0.0),
        lambda: _oracle(
            "coupled + SGD momentum",
            "coupled",
            "sgd",
            "SGD(momentum=0.9, weight_decay)",
            0.0,
            problem="ln",
            options={"momentum": 0.9},
        ),
        lambda: _oracle(
            "coupled + SGD nesterov",
            "coupled",
            "sgd",
            "SGD(nesterov, weight_decay)",
            0.0,
            problem="ln",
            options={"momentum": 0.9, "nesterov": True},
        ),
        lambda: _oracle(
            "coupled + Adam", "coupled", "adam", "Adam(weight_decay)", 1e-6, problem="ln", lr=0.01
        ),
        lambda: _oracle(
            "coupled + RMSprop", "coupled", "rmsprop", "RMSprop(weight_decay)", 1e-6, lr=0.01
        ),
        lambda: _oracle("coupled + Adagrad", "coupled", "adagrad", "Adagrad(weight_decay)", 1e-6),
        lambda: _oracle(
            "decoupled + Adam",
            "decoupled",
            "adam",
            "AdamW(weight_decay)",
            1e-6,
            problem="ln",
            reference_optimizer="adamw",
            lr=0.01,
            wd=0.1,
        ),
        lambda: _oracle(
            "decoupled + Adam, StepLR",
            "decoupled",
            "adam",
            "AdamW + StepLR",
            1e-6,
            problem="ln",
            reference_optimizer="adamw",
            lr=0.01,
            wd=0.1,
            schedule="step:20:0.5",
        ),
        lambda: _oracle(
            "decoupled + Adam, cosine",
            "decoupled",
            "adam",
            "AdamW + cosine",
            1e-6,
            problem="ln",
            reference_optimizer="adamw",
            lr=0.01,
            wd=0.1,
            schedule="cosine",
        ),
        check_l2_vs_coupled,
        check_adam_l2_differs_from_decoupled,
        check_ridge,
        check_independent,
        check_to_init,
        check_engine_rows,
    ]


def run_checks(progress: bool = False) -> list[Check]:
    """Run every check and return the results (the ``wdlab verify`` API)."""
    checks = all_checks()
    out = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(checks), desc="verify", unit="check", leave=False)
    for fn in checks:
        out.append(fn())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out
