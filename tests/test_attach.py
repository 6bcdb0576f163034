"""``Decay.attach`` in every loop shape, held to torch's own ``weight_decay`` (or AdamW).

Each test trains two copies of a small seeded model from the same initial weights: one with a
wdlab ``Decay`` attached to a plain optimizer, one with the reference (torch's own
``weight_decay=``, AdamW, or, where torch has no such setting, the documented formula written
out in the test). Where both run the same float operations in the same order, the comparison
is bitwise (``torch.equal``); where only the maths is the same, norm-wise (tests/numerics.py).
"""

import copy
import io
import math
import sys
import warnings

import pytest
import torch
from torch import nn

from numerics import assert_normwise, per_steps
from wdlab.data import Dataset
from wdlab.decay import EVERYTHING, Decay, param_groups
from wdlab.decay.group import Keys
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.trainer import train

WD = 0.1


def _data(n: int = 32, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, generator=g)


X, Y = _data()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _loss(model: nn.Module, x: torch.Tensor = X, y: torch.Tensor = Y) -> torch.Tensor:
    return (model(x).squeeze(-1) - y).pow(2).mean()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _quiet_attach(decay: Decay, opt: torch.optim.Optimizer):
    """Attach without the (here intended) warning about decayed biases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return decay.attach(opt)


def _train_closure(make_opt, decay=None, steps=15, extra=None) -> torch.Tensor:
    """``opt.step(closure)`` training; ``extra(model, loss)`` runs after backward in the
    closure and returns the loss to hand back (the reference's formula, written out)."""
    model = _mlp()
    opt = make_opt(model.parameters())
    if decay is not None:
        _quiet_attach(decay, opt)
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = _loss(model)
            loss.backward()
            return extra(model, loss) if extra is not None else loss

        opt.step(closure)
    return _flat(model)


# -- closures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, make, reference",
    [
        (
            "coupled",
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=WD),
        ),
        (
            "coupled",
            lambda p: torch.optim.Adam(p, lr=0.05),
            lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=WD),
        ),
        (
            "decoupled",
            lambda p: torch.optim.Adam(p, lr=0.05),
            lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=WD),
        ),
    ],
    ids=["sgd-coupled", "adam-coupled", "adam-decoupled"],
)
def test_closure_step_equals_torch_bitwise(mode, make, reference):
    """Under ``opt.step(closure)`` the gradients exist only once the closure has run: the
    decay goes inside the closure, so the result is torch's own, bit for bit."""
    ours = _train_closure(make, Decay(mode, WD))
    theirs = _train_closure(reference)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, _train_closure(make))  # and decay did something


def _written_out_coupled(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The documented formula: g ← g + wd·w after backward; the loss the optimizer sees is the
    objective of that gradient, loss + (wd/2)·Σ‖w‖² (l2_penalty's order of operations)."""
    params = list(model.parameters())
    for p in params:
        p.grad.add_(p.detach(), alpha=WD)
    with torch.no_grad():
        return loss + 0.5 * WD * torch.stack([p.pow(2).sum() for p in params]).sum()


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_coupled_equals_the_written_out_formula(line_search):
    """LBFGS has no weight_decay: the oracle is the formula written out in the closure, bitwise.

    The returned loss matters: LBFGS's strong-Wolfe line search reads it, so a coupled decay
    that changed the gradient but not the loss would search along an objective that is not
    the one being minimised.
    """

    def make(p):
        return torch.optim.LBFGS(p, lr=0.5, max_iter=5, line_search_fn=line_search)

    ours = _train_closure(make, Decay("coupled", WD))
    assert torch.equal(ours, _train_closure(make, extra=_written_out_coupled))
    assert not torch.equal(ours, _train_closure(make))


def test_lbfgs_coupled_equals_l2_through_autograd_normwise():
    """Against LBFGS on loss + (wd/2)·‖w‖² differentiated by autograd (no line search, so no
    branch on a rounding difference): the same maths, autograd's rounding of the penalty's
    gradient (2·w·(wd/2)) against wd·w. ≤ 100 closure evaluations (15 steps × 5 iterations,
    fewer once converged) of a few float32 roundings each: per_steps(100) = 2.4e-5 bounds it."""

    def make(p):
        return torch.optim.LBFGS(p, lr=0.5, max_iter=5)

    model = _mlp()
    opt = make(model.parameters())
    for _ in range(15):

        def closure():
            opt.zero_grad()
            loss = _loss(model) + 0.5 * WD * sum(p.pow(2).sum() for p in model.parameters())
            loss.backward()
            return loss

        opt.step(closure)
    assert_normwise(_train_closure(make, Decay("coupled", WD)), _flat(model), per_steps(100))


def test_lbfgs_coupled_reaches_the_ridge_solution():
    """A convex check independent of rounding: LBFGS (strong Wolfe) with coupled decay on a
    linear least-squares model converges to the closed-form ridge solution of
    (1/n)‖Xw − y‖² + (wd/2)‖w‖², i.e. ((2/n)XᵀX + wd·I) w = (2/n)Xᵀy. In float64 a line
    search places a minimum only to about √ε ≈ 1.5e-8 relative (the loss is flat to second
    order there), hence the bound 1e-7; without the decay the distance is ~0.3."""
    x, y = X.double(), Y.double()
    n = x.shape[0]
    ridge = torch.linalg.solve(2 / n * x.T @ x + 0.5 * torch.eye(4).double(), 2 / n * x.T @ y)
    for decay, near in ((Decay("coupled", 0.5), True), (None, False)):
        torch.manual_seed(0)
        model = nn.Linear(4, 1, bias=False).double()
        opt = torch.optim.LBFGS(
            model.parameters(),
            tolerance_grad=1e-14,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )
        if decay is not None:
            decay.attach(opt)

        def closure(model=model, opt=opt):
            opt.zero_grad()
            loss = _loss(model, x, y)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        distance = float((model.weight.detach().squeeze(0) - ridge).norm() / ridge.norm())
        assert (distance < 1e-7) == near, distance


# -- GradScaler -------------------------------------------------------------------------------


def _train_scaled(make_opt, decay=None, steps=10, inf_at=(3,), unscale_first=False):
    """``torch.amp.GradScaler`` on the CPU; an inf injected into one gradient at ``inf_at``
    makes the scaler skip that step. Returns (weights, the grad_scale/found_inf each step's
    optimizer saw, the decay's step count)."""
    model = _mlp()
    opt = make_opt(model.parameters())
    seen = []
    opt.register_step_pre_hook(
        lambda o, a, k: seen.append((getattr(o, "grad_scale", None), getattr(o, "found_inf", None)))
    )
    if decay is not None:
        _quiet_attach(decay, opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    for i in range(steps):
        opt.zero_grad()
        scaler.scale(_loss(model)).backward()
        if i in inf_at:
            model[0].weight.grad[0, 0] = math.inf
        if unscale_first:  # as before gradient clipping
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
    count = opt.param_groups[0]["wdlab"]["step"] if decay is not None else None
    return _flat(model), seen, count


@pytest.mark.parametrize("unscale_first", [False, True])
@pytest.mark.parametrize(
    "impl", [{"foreach": False}, {"fused": True}], ids=["single-tensor", "fused"]
)
@pytest.mark.parametrize(
    "mode, reference", [("coupled", torch.optim.Adam), ("decoupled", torch.optim.AdamW)]
)
def test_grad_scaler_equals_torch_bitwise(mode, reference, impl, unscale_first):
    """Decay sees unscaled gradients and a skipped (inf) step is not decayed, for a
    single-tensor Adam (GradScaler unscales, then skips ``step()`` itself) and a fused one
    (``step()`` runs with ``grad_scale`` / ``found_inf`` set and unscales in its kernel). The
    scale is a power of two, so scaling the decay term by it is exact: bitwise."""

    def ours(p):
        return torch.optim.Adam(p, lr=0.05, **impl)

    def theirs(p):
        return reference(p, lr=0.05, weight_decay=WD, **impl)

    got, seen, count = _train_scaled(ours, Decay(mode, WD), unscale_first=unscale_first)
    want, _, _ = _train_scaled(theirs, unscale_first=unscale_first)
    assert torch.equal(got, want)
    assert count == 9  # 10 steps, one skipped: decayed 9 times
    if "fused" in impl:  # the fused path really ran: torch handed the optimizer the scale
        scale, found_inf = seen[3]
        assert found_inf.item() == 1.0 and len(seen) == 10
        assert (scale is None) == unscale_first
    else:  # GradScaler never called step() on the skipped iteration
        assert len(seen) == 9 and seen[0] == (None, None)


def test_grad_scaler_skipped_step_leaves_weights_alone():
    """The skipped step changes nothing, decay included (decoupled would shrink the weights)."""
    a, _, count_a = _train_scaled(
        lambda p: torch.optim.Adam(p, lr=0.05, fused=True), Decay("decoupled", WD), 4, ()
    )
    b, _, count_b = _train_scaled(
        lambda p: torch.optim.Adam(p, lr=0.05, fused=True), Decay("decoupled", WD), 5, (4,)
    )
    assert torch.equal(a, b) and count_a == count_b == 4


# -- accumulation, zero_grad ------------------------------------------------------------------


def _train_plain(make_opt, decay=None, steps=12, micro=1, set_to_none=True, model=None):
    model = model if model is not None else _mlp()
    opt = make_opt(model.parameters())
    if decay is not None:
        _quiet_attach(decay, opt)
    xs, ys = X.chunk(micro), Y.chunk(micro)
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        for x, y in zip(xs, ys, strict=True):
            (_loss(model, x, y) / micro).backward()
        opt.step()
    return _flat(model)


@pytest.mark.parametrize("mode, ref", [("coupled", "SGD"), ("decoupled", "AdamW")])
def test_gradient_accumulation_decays_once_per_step(mode, ref):
    """Four backward() calls per optimizer step: decay acts once, on the summed gradient."""
    cls = torch.optim.SGD if ref == "SGD" else torch.optim.Adam
    kw = {"momentum": 0.9} if ref == "SGD" else {}

    def ours(p):
        return cls(p, lr=0.05, **kw)

    def theirs(p):
        return getattr(torch.optim, ref)(p, lr=0.05, weight_decay=WD, **kw)

    got = _train_plain(ours, Decay(mode, WD), micro=4)
    assert torch.equal(got, _train_plain(theirs, micro=4))


class TwoHeads(nn.Module):
    """A head that takes no part in the loss: its gradient is None, or zeros. (Every gradient
    starts as zeros, as after an earlier phase that used both heads.)"""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.used = nn.Linear(4, 1)
        self.unused = nn.Linear(4, 1)
        for p in self.parameters():
            p.grad = torch.zeros_like(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("mode, ref", [("coupled", "SGD"), ("decoupled", "AdamW")])
def test_zero_grad_set_to_none_either_way(set_to_none, mode, ref):
    """With ``set_to_none=True`` the unused head has no gradient and torch neither updates nor
    decays it; with ``False`` its gradient is zeros and torch decays it. Decay does the same."""
    cls = torch.optim.SGD if ref == "SGD" else torch.optim.Adam
    got_model, want_model = TwoHeads(), TwoHeads()
    before = _flat(want_model.unused)
    got = _train_plain(lambda p: cls(p, lr=0.05), Decay(mode, WD), 5, 1, set_to_none, got_model)
    want = _train_plain(
        lambda p: getattr(torch.optim, ref)(p, lr=0.05, weight_decay=WD),
        None,
        5,
        1,
        set_to_none,
        want_model,
    )
    assert torch.equal(got, want)
    assert torch.equal(_flat(got_model.unused), before) == set_to_none


# -- maximize ---------------------------------------------------------------------------------


def _train_max(make_opt, decay=None, steps=200, manual=False):
    """Ascend the objective −MSE of a linear model (``maximize=True``); ``manual`` adds the
    coupled term before the optimizer's negation, as Decay did before the fix."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    opt = make_opt(model.parameters())
    if decay is not None:
        decay.attach(opt)
    for _ in range(steps):
        opt.zero_grad()
        objective = -_loss(model)
        if decay is not None:
            objective = objective + decay.penalty(opt)  # l2: −(wd/2)‖w‖² under maximize
        objective.backward()
        if manual:
            model.weight.grad.add_(model.weight.detach(), alpha=0.5)
        opt.step()
    return model.weight.detach().clone()


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
@pytest.mark.parametrize("mode", ["coupled", "l2"])
def test_maximize_decay_stays_decay(opt, mode):
    """torch negates the gradient before adding its own wd·w; Decay matches it: bitwise for
    coupled. l2 is its loss-term form (objective − (wd/2)‖w‖², negated by maximize):
    norm-wise, autograd's 2·w·(wd/2) against wd·w over 200 steps (per_steps(200))."""

    def ours(p):
        return getattr(torch.optim, opt)(p, lr=0.05, maximize=True)

    def theirs(p):
        return getattr(torch.optim, opt)(p, lr=0.05, maximize=True, weight_decay=0.5)

    decay = Decay(mode, 0.5)
    got, want = _train_max(ours, decay), _train_max(theirs)
    if mode == "coupled":
        assert torch.equal(got, want)
    else:
        assert_normwise(got, want, per_steps(200), mode)
    # adding wd·w before torch's negation (the old behaviour) turns decay into growth
    old = _train_max(ours, manual=True)
    assert old.norm() > 1.8 * want.norm()


def test_maximize_decoupled_equals_adamw():
    """AdamW shrinks the weights whatever the direction of the step: so does decoupled."""
    got = _train_max(lambda p: torch.optim.Adam(p, lr=0.05, maximize=True), Decay("decoupled", 0.5))
    want = _train_max(lambda p: torch.optim.AdamW(p, lr=0.05, maximize=True, weight_decay=0.5))
    assert torch.equal(got, want)


@pytest.mark.parametrize("mode", ["coupled", "l2", "to_init"])
def test_engine_maximize_equals_a_torch_loop(mode):
    """The batched engine with ``maximize`` against a plain torch loop of SGD(maximize=True):
    torch's own weight_decay for coupled/l2, the written-out g + wd·(w − w₀) for to_init.
    Norm-wise: the engine's hand-written backward rounds differently from autograd; 30 steps."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=g), (torch.rand(40, generator=g) > 0.5).float()
    data = Dataset("t", "binary", x, y, x[:8], y[:8])
    spec = ModelSpec("mlp", in_dim=5, hidden=(6,), out_dim=1, activation="tanh")
    cfg = RunConfig(mode, 0.3, lr=0.05, optimizer="sgd", options=(("maximize", True),), seed=7)
    run = train(spec, data, [cfg], epochs=30, keep_params=True, device="cpu")[0]

    torch.manual_seed(7)
    model = spec.build()
    ref = "builtin" if mode != "to_init" else "none"
    groups, _ = param_groups(model, Decay(ref, 0.3))
    opt = torch.optim.SGD(groups, lr=0.05, maximize=True)
    w0 = [p.detach().clone() for p in groups[0]["params"]]
    for _ in range(30):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y).backward()
        if mode == "to_init":  # torch negates g, then adds: −g + wd·(w − w₀)
            for p, p0 in zip(groups[0]["params"], w0, strict=True):
                p.grad.sub_(p.detach() - p0, alpha=0.3)
        opt.step()
    want = {n: p.detach() for n, p in model.named_parameters()}
    assert_normwise(run.params, want, per_steps(30), mode)


# -- schedulers -------------------------------------------------------------------------------


def _train_sched(make_sched, decay, before: bool, steps=30) -> tuple[torch.Tensor, float]:
    model = _mlp()
    groups, _ = param_groups(model, decay)
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    sched = make_sched(opt) if before else None
    decay.attach(opt)
    sched = sched or make_sched(opt)
    for _ in range(steps):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
        sched.step()
    return _flat(model), opt.param_groups[0]["lr0"]


SCHEDULERS = {
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=30),
    "linear-warmup": lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.25, total_iters=10),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30),
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("mode", ["independent", "decoupled", "to_init"])
def test_scheduler_before_or_after_attach_same_weights(name, mode):
    """lr₀ is fixed at the first step from the schedule's peak (OneCycleLR's max_lr) or base
    lr, so creating the scheduler before or after ``attach`` gives the same weights, bitwise,
    and never an lr multiplier above 1 (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, lr0_a = _train_sched(SCHEDULERS[name], Decay(mode, WD), before=True)
        b, lr0_b = _train_sched(SCHEDULERS[name], Decay(mode, WD), before=False)
    assert torch.equal(a, b)
    assert lr0_a == lr0_b == (0.1 if name == "onecycle" else 0.01)


def test_decoupled_with_scheduler_after_attach_equals_adamw():
    """AdamW reads the scheduled lr at each step; so does decoupled, whenever the scheduler
    was made."""
    out = []
    for decay in (Decay("decoupled", WD), None):
        model = _mlp()
        if decay is None:
            opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=WD)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=0.05)
            _quiet_attach(decay, opt)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=12)
        for _ in range(12):
            opt.zero_grad()
            _loss(model).backward()
            opt.step()
            sched.step()
        out.append(_flat(model))
    assert torch.equal(*out)


# -- state ------------------------------------------------------------------------------------


def _run_resumable(decay: Decay, split: int | None, order: str = "", steps: int = 12):
    """Train ``steps`` steps; with ``split``, save model + optimizer (+ scheduler) after
    ``split`` steps through torch.save, build everything afresh, load (before or after
    attaching, per ``order``) and finish."""

    def build(model=None):
        model = model or _mlp()
        groups, _ = param_groups(model, decay, EVERYTHING)
        opt = torch.optim.Adam(groups, lr=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
        return model, opt, sched

    def step(model, opt, sched):
        opt.zero_grad()
        (_loss(model) + decay.penalty(opt)).backward()
        opt.step()
        sched.step()

    model, opt, sched = build()
    decay.attach(opt)
    for _ in range(split or steps):
        step(model, opt, sched)
    if split is None:
        return _flat(model), opt
    buf = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    torch.manual_seed(99)  # a different fresh init: only the checkpoint may matter
    model, opt, sched = build(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
    model.load_state_dict(saved["m"])
    if order == "attach-then-load":
        decay.attach(opt)
    opt.load_state_dict(saved["o"])
    sched.load_state_dict(saved["s"])
    if order == "load-then-attach":
        decay.attach(opt)
    for _ in range(steps - split):
        step(model, opt, sched)
    return _flat(model), opt


@pytest.mark.parametrize("order", ["load-then-attach", "attach-then-load"])
@pytest.mark.parametrize(
    "decay",
    [
        Decay("to_init", 0.5),
        Decay("independent", WD),
        Decay("decoupled", WD, schedule="cosine:0.1:1:12"),
        Decay("l2", WD, schedule=lambda s: 0.01 * s),
    ],
    ids=["to_init", "independent", "decoupled-cosine-wd", "l2-callable-wd"],
)
def test_state_round_trips_mid_run_bitwise(decay, order):
    """The anchor, lr₀ and the step count live in the param groups, so a mid-run
    save/load in either order continues exactly as the uninterrupted run."""
    want, opt_want = _run_resumable(decay, None)
    got, opt_got = _run_resumable(decay, 5, order)
    assert torch.equal(got, want)
    assert opt_got.param_groups[0]["wdlab"] == opt_want.param_groups[0]["wdlab"]
    assert opt_got.param_groups[0]["wdlab"]["step"] == 12


def test_state_dict_snapshot_does_not_move_with_training():
    """A state_dict taken mid-run keeps the step count it had (the state is replaced, not
    changed in place), and carries the to_init anchor."""
    model = _mlp()
    groups, _ = param_groups(model, Decay("to_init", WD))
    opt = torch.optim.SGD(groups, lr=0.1)
    Decay("to_init", WD).attach(opt)
    w0 = [p.detach().clone() for p in groups[0]["params"]]
    snapshots = []
    for _ in range(3):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
        snapshots.append(opt.state_dict())
    assert [s["param_groups"][0]["wdlab"]["step"] for s in snapshots] == [1, 2, 3]
    anchor = snapshots[-1]["param_groups"][0]["anchor"]
    assert all(torch.equal(a, b) for a, b in zip(anchor, w0, strict=True))


def test_loading_a_state_dict_without_the_decay_state_warns_and_restarts():
    model = _mlp()
    plain = torch.optim.SGD(param_groups(model)[0], lr=0.1)
    saved = copy.deepcopy(plain.state_dict())
    groups, _ = param_groups(model, Decay("to_init", WD))
    opt = torch.optim.SGD(groups, lr=0.1)
    Decay("to_init", WD).attach(opt)
    opt.load_state_dict(saved)
    _loss(model).backward()
    with pytest.warns(UserWarning, match=r"param group\(s\) 0 lost the state of Decay\('to_init'"):
        opt.step()
    assert opt.param_groups[0]["wdlab"]["step"] == 1


def test_groups_added_after_attach_are_decayed():
    model = TwoHeads()
    opt = torch.optim.SGD(model.used.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("coupled", WD).attach(opt)
        opt.add_param_group({"params": list(model.unused.parameters())})
        ref = torch.optim.SGD(TwoHeads().parameters(), lr=0.1, weight_decay=WD)
    want_model = ref.param_groups[0]["params"]
    for o, params in ((opt, list(model.parameters())), (ref, want_model)):
        o.zero_grad()
        sum(p.sum() for p in params).backward()
        o.step()
    assert torch.equal(_flat(model), torch.cat([p.detach().flatten() for p in want_model]))


# -- loud, not silent -------------------------------------------------------------------------


def test_a_second_decay_is_refused_until_the_first_is_removed():
    model = nn.Linear(3, 2, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = Decay("coupled", WD).attach(opt)
    with pytest.raises(ValueError, match=r"already has a Decay attached \(coupled, wd 0.1\)"):
        Decay("decoupled", WD).attach(opt)
    handle.remove()
    Decay("decoupled", WD).attach(opt)


def test_optimizer_weight_decay_on_top_warns_with_the_group_and_the_fix():
    """AdamW(model.parameters()) keeps its default weight_decay=0.01 under Decay('decoupled'):
    the warning names the group and says how to fix it."""
    model = nn.Linear(3, 2, bias=False)
    with pytest.warns(UserWarning) as record:
        Decay("decoupled", WD).attach(torch.optim.AdamW(model.parameters(), lr=1e-3))
    (msg,) = [str(w.message) for w in record]
    assert "param group 0 has weight_decay=0.01 of its own" in msg
    assert "AdamW applies it on top of Decay('decoupled')" in msg
    assert "set weight_decay=0 in that group" in msg
    with pytest.warns(UserWarning, match="although Decay\\('none'\\) asks for none"):
        Decay("none").attach(torch.optim.AdamW(model.parameters(), lr=1e-3))


def test_independent_lr_multiplier_above_one_warns_once_with_the_group_and_the_fix():
    """lr₀ is the lr at the first step (no scheduler says otherwise); a hand-made lr above it
    later would multiply the weights by 1 − wd·lr/lr₀ with lr/lr₀ > 1: warned, once."""
    model = nn.Linear(3, 2, bias=False)
    opt = torch.optim.SGD([{"params": [], "decay": False}, {"params": model.parameters()}], lr=0.1)
    Decay("independent", WD).attach(opt)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()  # lr₀ = 0.1 is fixed here
    opt.param_groups[1]["lr"] = 0.4
    with pytest.warns(UserWarning) as record:
        line = sys._getframe().f_lineno + 1
        opt.step()
        opt.step()
    (msg,) = [str(w.message) for w in record]
    assert (record[0].filename, record[0].lineno) == (__file__, line)  # the user's step
    assert msg.startswith("param group 1: mode 'independent' measures lr against lr₀ = 0.1")
    assert "multiplier 4 > 1" in msg and "Decay(..., base_lr=PEAK_LR)" in msg


def test_plain_parameters_with_biases_and_norms_warn_with_counts():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.warns(UserWarning) as record:
        Decay("decoupled", WD).attach(torch.optim.Adam(model.parameters(), lr=1e-3))
    (msg,) = [str(w.message) for w in record]
    assert "decays 4 tensors with ndim < 2 (26 parameters" in msg and "param group 0" in msg
    assert "wdlab.param_groups(model, decay)" in msg
    # built on purpose: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rule in (None, EVERYTHING):
            decay = Decay("decoupled", WD)
            kw = {} if rule is None else {"rule": rule}
            decay.attach(torch.optim.Adam(param_groups(model, decay, **kw)[0], lr=1e-3))
        Decay("none").attach(torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0))


def test_a_base_lr_below_the_schedules_peak_warns():
    """The old failure, now loud: lr₀ taken as OneCycleLR's starting lr (max_lr/25) would
    multiply the weights by 1 − 25·wd·… at the peak; an explicit base_lr that low warns."""
    model = nn.Linear(4, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=30)
    Decay("independent", WD, base_lr=0.1 / 25).attach(opt)
    with pytest.warns(UserWarning, match=r"param group 0: .* lr₀ = 0\.004, but the lr is now"):
        for _ in range(10):
            opt.zero_grad()
            _loss(model).backward()
            opt.step()
            sched.step()


def test_attach_to_something_that_is_not_an_optimizer_is_one_line():
    """A string, a model or a parameter list where the optimizer goes: one ValueError line
    (it was an AttributeError on param_groups)."""
    model = torch.nn.Linear(3, 2)
    for wrong in ("not an optimizer", model, list(model.parameters())):
        with pytest.raises(ValueError, match=r"attach takes a torch\.optim\.Optimizer") as info:
            Decay("coupled", weight_decay=0.1).attach(wrong)
        assert "\n" not in str(info.value)


def test_l2_attached_without_its_penalty_says_it_decays_nothing():
    """``l2`` decays through the loss: attached with no ``decay.penalty(opt)`` in the loss it
    decays nothing, and one warning says so (it was silent; found by a new-user trial); with
    the penalty, nothing is said."""

    def steps(penalty):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        decay = Decay("l2", 0.5)
        decay.attach(opt)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for _ in range(3):
                loss = model(torch.ones(3, 4)).pow(2).mean()
                loss = loss + decay.penalty(opt) if penalty else loss
                opt.zero_grad()
                loss.backward()
                opt.step()
        return [str(x.message) for x in said if "decays through the loss" in str(x.message)]

    assert len(steps(penalty=False)) == 1
    assert steps(penalty=True) == []


@pytest.mark.parametrize("penalty", [True, False])
def test_l2_penalty_added_inside_a_closure_is_seen(penalty):
    """``opt.step(closure)`` (Lightning's automatic optimization, LBFGS): the closure adds
    ``decay.penalty(opt)`` when it runs, inside the step. The check waits for it (it ran
    before the closure and said "decays nothing" of a decayed step; found by a new-user
    trial); a closure without the penalty is still said once."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    decay = Decay("l2", 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    decay.attach(opt)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss = loss + decay.penalty(opt) if penalty else loss
        loss.backward()
        return loss

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(closure)
    told = [x for x in said if "decays through the loss" in str(x.message)]
    assert len(told) == (0 if penalty else 1)


def _zero_grad_step(model: nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
    """One step with zero gradients: the factor it multiplies the first weight by (decay
    alone), elementwise."""
    w = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return model[0].weight.detach() / w


@pytest.mark.parametrize("mode", ["builtin", "decoupled"])
def test_remove_stops_the_decay(mode):
    """A new-user trial: after ``handle.remove()`` a ``builtin`` decay went on (the group
    kept the weight_decay it was handed); param_groups' groups get 0, others theirs."""
    model = _mlp()
    groups, _ = param_groups(model, Decay(mode, 0.5))
    opt = torch.optim.SGD(groups, lr=0.1)
    Decay(mode, 0.5).attach(opt).remove()
    assert torch.equal(_zero_grad_step(model, opt), torch.ones(8, 4))
    own = torch.optim.SGD(_mlp().parameters(), lr=0.1, weight_decay=0.01)  # the user's own wd
    _quiet_attach(Decay("builtin", 0.5), own).remove()
    assert own.param_groups[0]["weight_decay"] == 0.01


def _stepped_then_removed(mode: str) -> tuple[nn.Module, list[dict], torch.optim.Optimizer]:
    """SGD on ``param_groups(model, Decay(mode, 0.5))``: the decay attached, one step taken,
    then removed."""
    model = _mlp()
    groups, _ = param_groups(model, Decay(mode, 0.5))
    opt = torch.optim.SGD(groups, lr=0.1)
    first = Decay(mode, 0.5).attach(opt)
    _zero_grad_step(model, opt)
    first.remove()
    return model, groups, opt


def test_a_decay_attached_again_takes_its_own_settings():
    """A new-user trial: attached after another was removed, a Decay kept the old one's lr₀
    (``base_lr`` ignored: 10× the decay asked for) and ``to_init`` anchor."""
    model, _, opt = _stepped_then_removed("decoupled")
    Decay("independent", 0.5, base_lr=1.0).attach(opt)  # factor 1 − wd·lr/lr₀ = 0.95
    assert_normwise(_zero_grad_step(model, opt), torch.full((8, 4), 0.95), per_steps(1))
    model, groups, opt = _stepped_then_removed("to_init")
    zeros = [torch.zeros_like(p) for g in groups if g["decay"] for p in g["params"]]
    Decay("to_init", 0.5, anchor=zeros).attach(opt)  # toward 0: the factor 1 − lr·wd
    assert_normwise(_zero_grad_step(model, opt), torch.full((8, 4), 0.95), per_steps(1))


@pytest.mark.parametrize("mode", ["independent", "corrected"])
def test_an_lr_of_zero_at_attach_is_one_line(mode):
    """An optimizer built at lr 0 (a warm-up from 0 written by hand): lr₀ (the lr at attach)
    was 0, and the step raised ZeroDivisionError from inside the hook. A step at lr 0 decays
    nothing; one at an lr above 0 is refused, naming base_lr."""
    model = _mlp()
    groups, _ = param_groups(model, Decay(mode, 0.1))
    opt = torch.optim.AdamW(groups, lr=0.0)
    Decay(mode, 0.1).attach(opt)
    assert torch.equal(_zero_grad_step(model, opt), torch.ones_like(model[0].weight))
    opt = torch.optim.AdamW(groups, lr=0.0)  # a checker: warmed up by hand from 0, lr₀ was
    Decay(mode, 0.1).attach(opt)  # the first step's (1/10 of the peak), and the weights zeroed
    for g in opt.param_groups:
        g["lr"] = 6e-5
    with pytest.raises(ValueError, match=rf"mode '{mode}' measures .*is 0 here .*base_lr="):
        _zero_grad_step(model, opt)


@pytest.mark.parametrize("mode", ["independent", "corrected"])
def test_a_warm_up_written_by_hand_measures_the_lr_against_the_lr_at_attach(mode):
    """A new-user trial (nanoGPT's loop: the optimizer built at the peak lr, the warm-up set by
    hand in the loop): lr₀ was the first step's lr, 1/10 of the peak, so wd·lr_t/lr₀ reached
    1 at step 10 and zeroed the weights. lr₀ is now the lr at attach: the weights are those of
    ``base_lr=`` the peak, bit for bit, and nothing is warned."""

    def trained(base_lr):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3))
        opt = torch.optim.AdamW([w], lr=1e-2, weight_decay=0.0)
        Decay(mode, 0.1, base_lr=base_lr).attach(opt)
        for it in range(20):
            for g in opt.param_groups:
                g["lr"] = 1e-2 * min(1.0, (it + 1) / 10)
            w.grad = torch.zeros_like(w)
            opt.step()
        return w.detach()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "the lr is now above lr₀" warning
        got = trained(None)
    assert torch.equal(got, trained(1e-2))
    assert got.abs().min() > 0.5 * trained(1e-2).abs().min()  # not zeroed


def test_an_attachment_reads_in_a_notebook():
    """A new-user trial: ``attach``'s handle showed ``<… object at 0x…>``."""
    groups, _ = param_groups(_mlp(), Decay("decoupled", 0.1))
    opt = torch.optim.AdamW(groups, lr=1e-3)
    handle = Decay("decoupled", 0.1).attach(opt)
    n = len(opt.param_groups)
    assert repr(handle).startswith("<Attachment Decay(mode='decoupled', weight_decay=0.1")
    assert repr(handle).endswith(f" on AdamW (1 of {n} groups decay)>")
    handle.remove()
    assert repr(handle).endswith(" on AdamW (removed)>")


def test_a_state_kept_at_remove_resumes_its_decay_and_no_other():
    """``remove(keep_state=True)`` (the Lightning callback's teardown) leaves the state in the
    groups; a checker found that a *different* Decay of the same mode attached later took it
    over (the old fit's anchor and step count). It starts afresh; the same Decay resumes."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.SGD([w], lr=0.1)

    def steps(decay, n):
        handle = decay.attach(opt)
        for _ in range(n):
            w.grad = torch.zeros_like(w)
            opt.step()
        handle.remove(keep_state=True)
        return dict(opt.param_groups[0][Keys.STATE])

    assert steps(Decay("to_init", 0.5), 4)["step"] == 4
    assert steps(Decay("to_init", 0.5), 2)["step"] == 6  # the same Decay: it resumes
    now = w.detach().clone()
    assert steps(Decay("to_init", 0.1), 0)["step"] == 0  # another: afresh
    assert torch.equal(opt.param_groups[0][Keys.ANCHOR][0], now)


def test_a_handle_removed_twice_leaves_a_later_attach_guarded():
    """A checker: ``h1.remove()`` a second time, after the same Decay was attached again as
    ``h2``, cleared the guard and ``h2``'s state; a third attach was then let through and a
    step decayed twice (factor 0.9025, not 0.95). A removed handle does nothing, and says so."""
    w = torch.nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.SGD([w], lr=0.1)
    decay = Decay("decoupled", 0.5)
    h1 = decay.attach(opt)
    h1.remove()
    h2 = decay.attach(opt)
    h1.remove()
    assert repr(h1).endswith("(removed)>") and repr(h2).endswith("(1 of 1 groups decay)>")
    with pytest.raises(ValueError, match="already has"):
        decay.attach(opt)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), torch.full((2, 2), 0.95))


def test_penalty_of_a_model_is_one_line():
    """``decay.penalty(model)`` raised torch's AttributeError ('no attribute param_groups')."""
    with pytest.raises(ValueError, match=r"penalty takes the torch\.optim\.Optimizer"):
        Decay("l2", 0.1).penalty(_mlp())


def test_an_anchor_given_as_a_state_dict_says_to_give_its_tensors():
    """A new-user trial: ``anchor=model.state_dict()`` said "anchor[0] is str" only."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"anchor\[0\] is str \(a state_dict's key: give its"):
        Decay("to_init", 0.1, anchor=model.state_dict()).attach(opt)


def test_a_group_added_after_attach_is_warned_as_attach_warns():
    """A new-user trial: ``opt.add_param_group`` after attach took AdamW's default
    weight_decay=0.01 on top of the decay (and decayed a bias): only ``audit`` said so."""
    model = _mlp()
    extra = nn.Linear(3, 2)
    groups, _ = param_groups(model, Decay("decoupled", 0.1))
    opt = torch.optim.AdamW(groups, lr=1e-3)
    Decay("decoupled", 0.1).attach(opt)
    opt.add_param_group({"params": list(extra.parameters())})  # AdamW's weight_decay=0.01
    with pytest.warns(UserWarning) as caught:
        _zero_grad_step(model, opt)
    said = [str(w.message) for w in caught]
    assert any(s.startswith(f"param group {len(groups)} decays twice: AdamW(weight_decay)")
               for s in said)  # fmt: skip
    assert any("decays 1 tensor with ndim < 2" in s for s in said)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: not again at every step
        _zero_grad_step(model, opt)


def test_remove_makes_the_optimizer_plain_again_groups_added_since_too():
    """A checker: a group added after attach kept builtin's weight decay after remove(), and
    a Decay attached after remove() without a base_lr or anchor of its own took the removed
    one's (lr₀ 1.0 in place of the peak lr 0.1; a zero anchor)."""
    model = _mlp()
    groups, _ = param_groups(model[0], Decay("builtin", 0.5))
    opt = torch.optim.SGD(groups, lr=0.1)
    handle = _quiet_attach(Decay("builtin", 0.5), opt)
    opt.add_param_group({"params": list(model[2].parameters())})  # SGD's own weight_decay 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _zero_grad_step(model, opt)
    handle.remove()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0, 0.0]
    assert not any(k.startswith("wdlab") or k in ("lr0", "anchor") for g in opt.param_groups
                   for k in g if k not in ("weight_decay",))  # fmt: skip
    model = _mlp()
    groups, _ = param_groups(model, Decay("independent", 0.5))
    opt = torch.optim.SGD(groups, lr=0.1)
    Decay("independent", 0.5, base_lr=1.0).attach(opt).remove()
    Decay("independent", 0.5).attach(opt)  # lr₀ the peak lr 0.1: the factor 1 − 0.5
    assert_normwise(_zero_grad_step(model, opt), torch.full((8, 4), 0.5), per_steps(1))


def test_a_group_added_after_a_to_init_decay_with_its_anchor_anchors_at_its_weights():
    """A checker: ``to_init`` with an explicit anchor, then ``add_param_group``: the next step
    raised "anchor has 1 tensors but the optimizer has 2" (the anchor was checked again)."""
    model = _mlp()
    first = list(model[0].parameters())
    opt = torch.optim.SGD([{"params": first}], lr=0.1)
    _quiet_attach(Decay("to_init", 0.5, anchor=[torch.zeros_like(p) for p in first]), opt)
    opt.add_param_group({"params": list(model[2].parameters())})
    w2 = model[2].weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        factor = _zero_grad_step(model, opt)  # toward 0: the anchor given
    assert_normwise(factor, torch.full((8, 4), 0.95), per_steps(1))
    assert torch.equal(model[2].weight.detach(), w2)  # toward its own weights: not moved


def test_a_frozen_matrix_decays_once_it_is_unfrozen():
    """A new-user trial: ``param_groups`` put a frozen matrix in the no-decay group, so after
    ``requires_grad_(True)`` (gradual unfreezing, the optimizer built once) it trained without
    decay for good. It is in the decaying group: untouched while frozen, then AdamW's decay."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    twin = copy.deepcopy(model)
    model[0].weight.requires_grad_(False)
    decay = Decay("decoupled", 0.1)
    opt = torch.optim.AdamW(param_groups(model, decay)[0], lr=0.05, weight_decay=0.0)
    decay.attach(opt)
    plain = torch.optim.AdamW(
        [{"params": [twin[0].weight, twin[1].weight]}, {"params": [twin[0].bias, twin[1].bias],
         "weight_decay": 0.0}], lr=0.05, weight_decay=0.1)  # fmt: skip
    twin[0].weight.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 4, generator=g) for _ in range(6)]
    start = model[0].weight.detach().clone()
    for i, x in enumerate(batches):
        if i == 3:
            model[0].weight.requires_grad_(True)
            twin[0].weight.requires_grad_(True)
        for m, o in ((model, opt), (twin, plain)):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
        if i == 2:
            assert torch.equal(model[0].weight, start)  # frozen: neither updated nor decayed
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_group_frozen_by_lr_0_decays_nothing_until_it_trains_at_its_initial_lr():
    """A new-user trial: a backbone group with lr 0 stopped ``independent`` and ``corrected``
    at the first step ("lr₀ … is 0 … pass base_lr"), and base_lr= would set every group's.
    Such a group decays nothing while its lr is 0; unfrozen, its lr₀ is its 'initial_lr' (a
    first lr above 0 is no peak: a warm-up from 0 would divide by its first, small step)."""
    for mode in ("independent", "corrected"):
        torch.manual_seed(0)
        body, head = nn.Linear(4, 4), nn.Linear(4, 1)
        opt = torch.optim.SGD(
            [{"params": body.parameters(), "lr": 0.0}, {"params": head.parameters()}], lr=0.1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Decay(mode, 0.1).attach(opt)
        start = body.weight.detach().clone()
        for step in range(4):
            if step == 2:
                opt.param_groups[0]["lr"] = 0.05
                with pytest.raises(ValueError, match="or set this group's 'initial_lr'"):
                    opt.step()
                opt.param_groups[0]["initial_lr"] = 0.05
            opt.zero_grad()
            (head(body(torch.randn(8, 4))) ** 2).mean().backward()
            opt.step()
            if step == 1:
                assert torch.equal(body.weight, start)
        assert opt.param_groups[0]["lr0"] == 0.05 and not torch.equal(body.weight, start)


@pytest.mark.parametrize("mode", ["coupled", "to_init"])
def test_a_gradient_mode_on_a_sparse_gradient_is_one_line(mode):
    """A new-user trial: torch's "add(sparse, dense) is not supported" came from inside the
    step hook with a traceback."""
    emb = nn.Embedding(5, 2, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay(mode, 0.1).attach(opt)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=f"mode '{mode}' adds to the gradient, and this one is"):
        opt.step()


def test_builtins_formula_reads_the_optimizers_own_options():
    """A new-user trial: formula('builtin', Adam(decoupled_weight_decay=True)) said coupled."""
    from wdlab.decay.findings import formula

    params = nn.Linear(2, 2).parameters()
    assert "is decoupled" in formula(
        "builtin", torch.optim.Adam(params, decoupled_weight_decay=True)
    )
    assert "is coupled" in formula("builtin", torch.optim.Adam(nn.Linear(2, 2).parameters()))


def test_a_group_held_at_lr_0_counts_its_steps_for_the_wd_schedule():
    """The final review: a group held at lr 0 (frozen, then unfrozen) did not count the steps
    it was held, so its weight-decay schedule lagged the optimizer's (and its lr schedule's)
    by as many steps once it trained."""
    torch.manual_seed(0)
    body, head = nn.Linear(4, 4, bias=False), nn.Linear(4, 1, bias=False)
    groups = [{"params": body.parameters(), "lr": 0.0}]
    opt = torch.optim.SGD([*groups, {"params": head.parameters()}], lr=0.1)
    Decay("independent", 0.1, schedule=lambda step: 0.1 / (1 + step)).attach(opt)
    for step in range(5):
        if step == 3:  # unfrozen, at the lr it trains at
            opt.param_groups[0]["lr"] = opt.param_groups[0]["initial_lr"] = 0.05
        opt.zero_grad()
        (head(body(torch.randn(8, 4))) ** 2).mean().backward()
        before = body.weight.detach().clone()
        opt.step()
    assert [g[Keys.STATE]["step"] for g in opt.param_groups] == [5, 5]
    # the last step (4): w·(1 − (lr / lr₀)·wd(4)) − lr·g, wd(4) = 0.1 / 5
    expected = before * (1 - 0.1 / 5) - 0.05 * body.weight.grad
    assert torch.allclose(body.weight, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["decoupled", "independent", "coupled", "to_init"])
def test_a_tensor_frozen_with_a_zero_gradient_is_decayed_as_torch_decays_it(mode):
    """The README's word on freezing mid-training with ``zero_grad(set_to_none=False)``: the
    zero gradient is one, so torch's AdamW still decays the tensor, and so do these four modes
    (``decoupled`` bitwise as AdamW's own); with torch's default ``set_to_none`` nothing moves."""
    for to_none in (False, True):
        moved = {}
        for how in ("builtin", mode):
            torch.manual_seed(0)
            m = nn.Linear(3, 3, bias=False)
            own = 0.1 if how == "builtin" else 0.0
            opt = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=own)
            if how != "builtin":
                Decay(how, 0.1).attach(opt)
            m(torch.randn(2, 3)).sum().backward()
            opt.step()
            m.weight.requires_grad_(False)
            opt.zero_grad(set_to_none=to_none)
            before = m.weight.clone()
            opt.step()
            moved[how] = m.weight - before
        assert bool(moved[mode].abs().max() > 0) is not to_none
        if mode == "decoupled":
            assert torch.equal(moved[mode], moved["builtin"])
