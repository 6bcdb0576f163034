"""The two modes from recent papers (cautious, corrected) against their updates written out
in float64 (so that no update is lost to rounding: cautious reads the update as applied, see
:mod:`wdlab.decay.modes`), and corrected against timm's AdamC rule."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from wdlab.decay import Decay, param_groups
from wdlab.numerics import U64, per_steps
from wdlab.records import Check
from wdlab.trainer import make_scheduler
from wdlab.verify.compare import compare
from wdlab.verify.oracles import ROUNDING, STEPS, _problem, train_module


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
        tolerance=per_steps(STEPS, U64),
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
    """``corrected`` + AdamW ≡ torch's AdamW with timm's per-step weight decay (cosine), as
    :func:`adamc_as_timm` writes timm's rule out (timm is not a dependency)."""
    factory, X, y, loss = _problem("ln")
    lr, wd = 0.01, 0.5
    ours = train_module(factory, X, y, loss, "adamw", lr, Decay("corrected", wd), schedule="cosine")
    theirs = adamc_as_timm(factory, X, y, loss, lr, wd, "cosine")
    return compare(
        "corrected ≡ timm's AdamC",
        "AdamW, wd·lr_t/lr_max on normalized layers (timm's rule)",
        ours,
        theirs,
        tolerance=ROUNDING,
        detail=f"LayerNorm model, lr {lr:g}, wd {wd:g}, {STEPS} steps, cosine; normalized: "
        "every Linear but the output layer",
    )


PAPER_CHECKS = [
    ("cautious", "sgd", None, "CWD (Chen et al. Alg. 1) written out"),
    ("cautious", "adamw", "cosine", "CWD on Adam's m̂/(√v̂+ε) written out"),
    ("corrected", "sgd", "cosine", "SGDC (Defazio) written out"),
    ("corrected", "adamw", "cosine", "AdamC (Defazio) written out"),
]
