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
        tolerance=1e-5,
        detail=f"{len(configs)} modes batched, Adam, LayerNorm model, {STEPS} steps",
    )


# ---------------------------------------------------------------------------------------------
# The two modes from recent papers, against their updates written out (float64, so that no
# update is lost to rounding: cautious reads the update as applied, see wdlab.decay.modes).


def _directions(optimizer: str, momentum: float = 0.9) -> Callable[[dict, Tensor], Tensor]:
    """u_t from the gradient: SGD's momentum buffer (b₁ = g), or Adam's m̂/(√v̂ + ε)."""

    def sgd(state: dict, g: Tensor) -> Tensor:
        state["b"] = g.clone() if "b" not in state else momentum * state["b"] + g
        return state["b"]

    def adam(state: dict, g: Tensor, b1: float = 0.9, b2: float = 0.999) -> Tensor:
        t = state["t"] = state.get("t", 0) + 1
        state["m"] = b1 * state.get("m", torch.zeros_like(g)) + (1 - b1) * g
        state["v"] = b2 * state.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
        return (state["m"] / (1 - b1**t)) / ((state["v"] / (1 - b2**t)).sqrt() + 1e-8)

    return sgd if optimizer == "sgd" else adam


def schedule_lrs(lr: float, schedule: str | None, steps: int) -> list[float]:
    """The lr of each of ``steps`` steps under a wdlab schedule."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt, schedule, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        if sched is not None:
            opt.step()
            sched.step()
    return lrs


def paper_update(
    factory: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    mode: str,
    optimizer: str,
    lr: float,
    wd: float,
    schedule: str | None = None,
    steps: int = STEPS,
) -> dict[str, Tensor]:
    """Train with the paper's update in plain tensor loops: CWD (Chen et al., Algorithm 1)
    x ← x − η_t·(u + wd·𝟙(u ⊙ x ≥ 0) ⊙ x), or AdamC/SGDC (Defazio) x ← x − η_t·u −
    (η_t²/η_max)·wd·x on normalized layers (every Linear weight but the last), − η_t·wd·x on the
    other ≥2-D tensors; 1-D tensors do not decay."""
    model = factory()
    linear = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    normalized = set(linear[:-1])
    lrs = schedule_lrs(lr, schedule, steps)
    direction = _directions(optimizer)
    state: dict[str, dict] = {n: {} for n, _ in model.named_parameters()}
    for lr_t in lrs:
        model.zero_grad()
        loss_fn(model(X), y).backward()
        with torch.no_grad():
            for n, p in model.named_parameters():
                u = direction(state[n], p.grad)
                decay = torch.zeros_like(p)
                if p.dim() >= 2 and mode == "cautious":
                    decay = wd * (u * p >= 0).to(p.dtype) * p
                elif p.dim() >= 2:
                    decay = wd * (lr_t / max(lrs) if n in normalized else 1.0) * p
                p.sub_(lr_t * (u + decay))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _double(problem: str) -> tuple[Callable[[], nn.Module], Tensor, Tensor, Callable]:
    factory, X, y, loss = _problem(problem)
    y = y if y.dtype == torch.long else y.double()
    return (lambda: factory().double()), X.double(), y, loss


def check_paper(mode: str, optimizer: str, schedule: str | None, reference: str) -> Check:
    """``mode`` through Decay.attach ≡ its paper's update written out (float64)."""
    factory, X, y, loss = _double("ln")
    lr, wd = (0.05, 0.1) if optimizer == "sgd" else (0.01, 0.5)
    options = {"momentum": 0.9} if optimizer == "sgd" else None
    ours = train_module(
        factory, X, y, loss, optimizer, lr, Decay(mode, wd), options=options, schedule=schedule
    )
    theirs = paper_update(factory, X, y, loss, mode, optimizer, lr, wd, schedule)
    name = f"{mode} + {'SGD momentum' if optimizer == 'sgd' else 'AdamW'}"
    sched = f", {schedule}" if schedule else ""
    return compare(
        name + sched,
        reference,
        ours,
        theirs,
        tolerance=1e-10,
        detail=f"LayerNorm model in float64, lr {lr:g}, wd {wd:g}, {STEPS} steps{sched}",
    )


def adamc_as_timm(
    factory: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lr: float,
    wd: float,
    schedule: str | None,
    steps: int = STEPS,
) -> dict[str, Tensor]:
    """AdamC as timm's ``corrected_weight_decay`` builds it from torch's own AdamW: on the
    normalized layers' group, weight_decay = wd·lr_t/lr_max each step (so AdamW's 1 − lr_t·wd
    becomes 1 − wd·lr_t²/lr_max)."""
    model = factory()
    groups, _ = param_groups(model, Decay("corrected", wd))
    for g in groups:
        g["weight_decay"] = wd if g["decay"] else 0.0
    opt = torch.optim.AdamW(groups, lr=lr)
    sched = make_scheduler(opt, schedule, steps)
    for _ in range(steps):
        for g in opt.param_groups:
            if g.get("normalized"):
                g["weight_decay"] = wd * g["lr"] / lr
        loss = loss_fn(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def check_corrected_timm() -> Check:
    """``corrected`` + AdamW ≡ torch's AdamW with timm's per-step weight decay (cosine)."""
    factory, X, y, loss = _problem("ln")
    lr, wd = 0.01, 0.5
    ours = train_module(factory, X, y, loss, "adamw", lr, Decay("corrected", wd), schedule="cosine")
    theirs = adamc_as_timm(factory, X, y, loss, lr, wd, "cosine")
    return compare(
        "corrected ≡ timm's AdamC",
        "AdamW, wd·lr_t/lr_max on normalized layers (timm)",
        ours,
        theirs,
        tolerance=1e-6,
        detail=f"LayerNorm model, lr {lr:g}, wd {wd:g}, {STEPS} steps, cosine; normalized: "
        "every Linear but the output layer",
    )


PAPER_CHECKS = [
    ("cautious", "sgd", None, "CWD (Chen et al. Alg. 1) written out"),
    ("cautious", "adamw", "cosine", "CWD on Adam's m̂/(√v̂+ε) written out"),
    ("corrected", "sgd", "cosine", "SGDC (Defazio) written out"),
    ("corrected", "adamw", "cosine", "AdamC (Defazio) written out"),
]


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
        *[lambda args=args: check_paper(*args) for args in PAPER_CHECKS],
        check_corrected_timm,
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
