"""The oracle checks: a wdlab Decay attached to a plain torch optimizer against torch's own
``weight_decay``, AdamW, scikit-learn's Ridge, and the engine's batched rows against each
configuration trained alone."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdlab.data import Dataset
from wdlab.decay import DEFAULT_RULE, EVERYTHING, Decay, DecayRule, param_groups
from wdlab.models import MLP, ModelSpec
from wdlab.numerics import DIFFERS, U64, per_steps
from wdlab.optimizers import optimizer_class
from wdlab.records import Check, RunConfig
from wdlab.trainer import make_scheduler, train
from wdlab.verify.compare import compare, max_diffs

# ---------------------------------------------------------------------------------------------
# The oracle checks. Each trains two small models from the same initial weights for ≥ 50 steps:
# one with a wdlab Decay attached to a plain optimizer, one with the reference (torch's own
# weight_decay, AdamW, scikit-learn's closed form), and compares the final weights.

STEPS = 60
#: The same maths through other kernels, over STEPS float32 steps (:func:`wdlab.numerics.per_steps`)
ROUNDING = per_steps(STEPS)


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
        tolerance=ROUNDING,
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
        DIFFERS,
        rel > DIFFERS,
        f"LayerNorm model, lr 0.01, wd 0.1, {STEPS} steps; measured divergence rel {rel:.3g}",
    )


def ridge_reference(X: Tensor, y: Tensor, alpha: float) -> tuple[dict[str, Tensor], str]:
    """argmin ‖y − Xw − b‖² + alpha·‖w‖² (intercept b not penalised): scikit-learn's Ridge
    when it is installed, else the closed form (X̄ᵀX̄ + alpha·I)⁻¹X̄ᵀȳ on centred X̄, ȳ in
    float64. Returns the weights and which of the two gave them."""
    d = X.shape[1]
    try:
        from sklearn.linear_model import Ridge
    except ImportError:
        X64, y64 = X.double(), y.double()
        mx, my = X64.mean(0), y64.mean()
        Xc = X64 - mx
        w = torch.linalg.solve(
            Xc.T @ Xc + alpha * torch.eye(d, dtype=torch.float64), Xc.T @ (y64 - my)
        )
        b = my - mx @ w
        return {"weight": w.view(1, d), "bias": b.view(1)}, "closed form, float64"
    ridge = Ridge(alpha=alpha, fit_intercept=True).fit(X.numpy(), y.numpy())
    weights = {
        "weight": torch.from_numpy(ridge.coef_).view(1, d),
        "bias": torch.tensor([float(ridge.intercept_)], dtype=torch.float64),
    }
    return weights, "sklearn Ridge"


def check_ridge(n: int = 200, d: int = 6, wd: float = 0.02, steps: int = 3000) -> Check:
    """Full-batch GD with ``coupled`` decay on ½·MSE converges to ridge with alpha = n·wd
    (scikit-learn's Ridge where installed, else the closed form in float64)."""
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
    theirs, source = ridge_reference(X, y, n * wd)
    alpha = f"alpha = n·wd = {n * wd:g}"
    return compare(
        "coupled GD → Ridge",
        f"sklearn Ridge({alpha})" if source == "sklearn Ridge" else f"{source} ({alpha})",
        ours,
        theirs,
        tolerance=per_steps(steps, U64),  # converged: float64 rounding only
        detail=f"linear, loss (1/2n)‖Xw−y‖², n {n}, d {d}, wd {wd:g}, {steps} steps, "
        "intercept not penalised",
    )


def _decay_only(
    decay: Decay, lr: float, schedule: str | None, steps: int
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], list[float]]:
    """Weights after ``steps`` SGD steps whose loss gradient is zero (only the decay acts), the
    initial weights (``to_init``'s anchor), the weights the steps start from (for ``to_init``,
    moved away from the anchor by N(0, 1) noise) and the lr of each step."""
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
    moved, lrs = {n: p.detach().clone() for n, p in model.named_parameters()}, []
    for _ in range(steps):
        opt.zero_grad()
        (0.0 * model(X).sum()).backward()  # gradients exist and are zero
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, start, moved, lrs


def check_independent() -> Check:
    """``independent``: each step multiplies the weights by 1 − wd·lr_t/lr₀, the formula
    written out in float64 over a cosine schedule, at base lrs 0.1 and 0.01 (the base lr
    does not change the factors)."""
    ours, theirs, wd = {}, {}, 0.05
    for lr0 in (0.1, 0.01):
        final, start, _, lrs = _decay_only(Decay("independent", wd), lr0, "cosine", STEPS)
        factor = 1.0
        for lr_t in lrs:
            factor *= 1.0 - wd * lr_t / lr0
        ours |= {f"lr₀ {lr0:g}: {n}": w for n, w in final.items()}
        theirs |= {f"lr₀ {lr0:g}: {n}": w.double() * factor for n, w in start.items()}
    return compare(
        "independent: factor 1 − wd·lr_t/lr₀",
        "the factors multiplied out in float64",
        ours,
        theirs,
        tolerance=ROUNDING,
        detail=f"zero loss gradient, cosine schedule, lr₀ 0.1 and 0.01, wd {wd:g}, {STEPS} steps",
    )


def check_to_init() -> Check:
    """``to_init``: with a zero loss gradient each step takes lr·wd of the way back to the
    anchor w₀: w₀ + (w − w₀)·(1 − lr·wd)^T, written out in float64."""
    lr, wd = 0.1, 0.5
    ours, anchor, moved, _ = _decay_only(Decay("to_init", wd), lr, None, STEPS)
    back = (1.0 - lr * wd) ** STEPS
    theirs = {n: a.double() + (moved[n].double() - a.double()) * back for n, a in anchor.items()}
    return compare(
        "to_init → w₀",
        "w₀ + (w − w₀)·(1 − lr·wd)^T in float64",
        ours,
        theirs,
        tolerance=ROUNDING,
        detail=f"weights moved by N(0,1) noise, zero loss gradient, lr {lr:g}, wd {wd:g}, "
        f"{STEPS} steps",
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
            ("cautious", 0.1),
            ("corrected", 0.1),
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
        tolerance=ROUNDING,
        detail=f"{len(configs)} modes batched, Adam, LayerNorm model, {STEPS} steps",
    )
