"""The one training engine: K configurations trained at once.

Every parameter is stacked with a leading dimension K (one row per configuration), the forward
and backward run once per step for all K, and each configuration's loss is its own mean, so the
gradient of row k is exactly configuration k's gradient. A single run is a sweep of one.

The optimizer is a real ``torch.optim`` optimizer. Configurations that share the optimizer's
settings (class, options, lr, mode, and for ``builtin`` the weight decay) form one parameter
group whose tensors are *views* of the stacked rows, so torch's own update code runs, any
element-wise torch optimizer and lr scheduler works, and per-configuration weight decay is
applied by :mod:`wdlab.decay` with one value per row.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdlab import decay as D
from wdlab.data import Dataset
from wdlab.models import BatchedForward, ModelSpec, Tape
from wdlab.params import DirectParams, GramParams, gram_applies

OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
}

# Optimizers that are not element-wise (their update of one coordinate depends on others) would
# mix configurations when stacked, so they are refused.
NOT_ELEMENTWISE = {"LBFGS", "SparseAdam", "Adafactor", "Muon"}


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The torch optimizer class for a short name (``sgd``, ``adamw``…) or a class name."""
    cls_name = OPTIMIZERS.get(name.lower(), name)
    cls = getattr(torch.optim, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if cls_name in NOT_ELEMENTWISE:
        raise ValueError(f"optimizer {cls_name} is not element-wise and cannot be batched")
    return cls


@dataclass(frozen=True)
class RunConfig:
    """One configuration: decay mode and strength, optimizer and its settings, seed.

    ``options`` are extra optimizer keywords as sorted ``(name, value)`` pairs, e.g.
    ``(("momentum", 0.9),)``. ``label`` names the run in tables (default: the mode).
    """

    mode: str = "none"
    weight_decay: float = 0.0
    lr: float = 0.1
    optimizer: str = "sgd"
    options: tuple[tuple[str, object], ...] = ()
    seed: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        D.check_mode(self.mode)
        D.check_weight_decay(self.weight_decay)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        optimizer_class(self.optimizer)
        if any(k in ("lr", "weight_decay", "params") for k, _ in self.options):
            raise ValueError("lr and weight_decay are set by the config, not in options")

    @property
    def name(self) -> str:
        """The label, or the mode when no label was given."""
        return self.label or self.mode

    def opt_key(self) -> tuple:
        """Configurations with the same key share one optimizer parameter group."""
        wd = self.weight_decay if self.mode == "builtin" else 0.0
        return (optimizer_class(self.optimizer).__name__, self.options, self.lr, self.mode, wd)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "mode": self.mode,
            "weight_decay": self.weight_decay,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "options": dict(self.options),
            "seed": self.seed,
            "label": self.name,
        }


@dataclass
class RunResult:
    """What one configuration's training produced: curves, final metrics and status.

    ``curves`` holds ``epoch``, ``train_loss`` (the loss each step computed, before its update)
    and ``weight_norm`` every epoch; ``eval_epoch`` and ``train_loss_eval``,
    ``<split>_loss``/``<split>_acc``/… at each evaluation, all made with the weights after
    that epoch's update. ``final`` holds the last evaluation (``train_loss`` there is the
    evaluated one, so ``test_loss − train_loss`` compares the same weights). ``params`` are
    the final weights when asked for.
    """

    config: RunConfig
    curves: dict[str, list[float]]
    final: dict[str, float]
    status: str = "done"
    diverged_epoch: int | None = None
    best: dict[str, float] = field(default_factory=dict)
    params: dict[str, Tensor] | None = None
    seconds: float = 0.0
    engine: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form (without the weights)."""
        return {
            "config": self.config.to_dict(),
            "status": self.status,
            "diverged_epoch": self.diverged_epoch,
            "final": self.final,
            "best": self.best,
            "engine": self.engine,
            "curves": self.curves,
        }


# ---------------------------------------------------------------------------------------------
# Losses and metrics, per configuration: outputs (K, n, out), targets (n,) → (K,)


def per_config_loss(task: str, out: Tensor, y: Tensor) -> Tensor:
    """Mean loss of each configuration: BCE-with-logits, cross-entropy or MSE."""
    k, n = out.shape[0], out.shape[1]
    if task == "binary":
        return F.binary_cross_entropy_with_logits(
            out.squeeze(-1), y.expand(k, n), reduction="none"
        ).mean(1)
    if task == "multiclass":
        # (K, C, n): built-in heads store logits this way, and the class reduction is fast
        return F.cross_entropy(out.transpose(1, 2), y.expand(k, n), reduction="none").mean(1)
    return (out.squeeze(-1) - y).pow(2).mean(1)


def per_config_loss_grad(task: str, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`per_config_loss` and its gradient d(Σ_k loss_k)/d(out), by hand (no autograd)."""
    k, n = out.shape[0], out.shape[1]
    if task == "binary":
        o = out.squeeze(-1)
        # BCE with logits as softplus(o) − y·o: the same value, 3 kernels instead of ~10
        losses = F.softplus(o, threshold=30).sub_(o * y).mean(1)
        return losses, torch.sigmoid(o).sub_(y).div_(n).unsqueeze(-1)
    if task == "multiclass":
        logp = F.log_softmax(out.transpose(1, 2), 1)  # (K, C, n)
        idx = y.view(1, 1, n).expand(k, 1, n)
        losses = logp.gather(1, idx).squeeze(1).mean(1).neg_()
        grad = logp.exp_().scatter_add_(1, idx, torch.full((k, 1, n), -1.0, device=out.device))
        return losses, grad.div_(n).transpose(1, 2)
    r = out.squeeze(-1) - y
    losses = torch.linalg.vecdot(r, r).div_(n)  # the mean square: 2 kernels, not 3
    return losses, r.mul_(2 / n).unsqueeze(-1)


def per_config_metrics(task: str, out: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Accuracy for classification; RMSE and R² for regression (each (K,))."""
    if task == "binary":
        return {"acc": ((out.squeeze(-1) > 0).to(y.dtype) == y).float().mean(1)}
    if task == "multiclass":
        # max over the class dim of the (K, C, n) layout: the first maximal index, as argmax
        # gives, several times faster than argmax here
        return {"acc": (out.transpose(1, 2).max(1).indices == y).float().mean(1)}
    return regression_metrics((out.squeeze(-1) - y).pow(2).mean(1), (y - y.mean()).pow(2).mean())


def regression_metrics(mse: Tensor, var: Tensor) -> dict[str, Tensor]:
    """RMSE and R² from mean squared errors (any shape) and the targets' variance."""
    return {"rmse": mse.sqrt(), "r2": 1 - mse / var}


# ---------------------------------------------------------------------------------------------


def import_optimizer_runtime() -> None:
    """Import what torch.optim imports on its first optimizer (torch._dynamo, ~1 s, once)."""
    import torch._dynamo  # noqa: F401


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_init(spec: ModelSpec) -> Callable[[int], nn.Module]:
    """Initial weights for a seed: ``torch.manual_seed(seed)`` then ``spec.build()``."""

    def init(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return spec.build()

    return init


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str | None, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """An lr scheduler from a short spec: ``constant``, ``cosine``, ``step:SIZE:GAMMA``."""
    if schedule in (None, "", "constant"):
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if schedule.startswith("step:"):
        try:
            _, size, gamma = schedule.split(":")
            return torch.optim.lr_scheduler.StepLR(optimizer, int(size), float(gamma))
        except ValueError:
            pass
    raise ValueError(f"unknown lr schedule {schedule!r}; valid: constant, cosine, step:SIZE:GAMMA")


# Adam-family updates as one fused kernel per parameter group: the same update, ~2x less
# per-step overhead than foreach on CPU. SGD keeps torch's default: its fused kernel rounds the
# built-in weight decay differently from wdlab's coupled mode (the demo checks their bits), and
# for a handful of tensors its plain loop is the fastest.
FUSED = {"Adam", "AdamW"}


def _implementation(opt_cls: type, groups: Sequence[_Group]) -> dict[str, bool]:
    """``fused``/``foreach`` for the engine's optimizer, unless the user's options set one."""
    if any(k in ("foreach", "fused") for g in groups for k, _ in g.key[1]):
        return {}
    params = inspect.signature(opt_cls).parameters
    if opt_cls.__name__ in FUSED and "fused" in params:
        return {"fused": True}
    if opt_cls.__name__ != "SGD" and "foreach" in params:
        return {"foreach": True}  # one C++ call per update op for all of a group's tensors
    return {}


@dataclass
class _Group:
    key: tuple
    rows: slice
    mode: str
    wd: D.WD  # float if uniform over the rows, else a (rows,) tensor
    uniform_wd: bool


def _group_configs(configs: Sequence[RunConfig], device: torch.device) -> list[_Group]:
    groups: list[_Group] = []
    start = 0
    for k in range(1, len(configs) + 1):
        if k == len(configs) or configs[k].opt_key() != configs[start].opt_key():
            wds = [c.weight_decay for c in configs[start:k]]
            uniform = all(w == wds[0] for w in wds)
            wd: D.WD = wds[0] if uniform else torch.tensor(wds, device=device)
            groups.append(
                _Group(configs[start].opt_key(), slice(start, k), configs[start].mode, wd, uniform)
            )
            start = k
    return groups


def _train(
    spec: ModelSpec,
    data: Dataset,
    configs: Sequence[RunConfig],
    *,
    epochs: int,
    eval_every: int = 10,
    rule: D.DecayRule = D.DEFAULT_RULE,
    init: Callable[[int], nn.Module] | None = None,
    schedule: str | None = None,
    device: torch.device | str | None = None,
    keep_params: bool = False,
    progress: bool = False,
    progress_desc: str = "training",
    fast_path: bool | None = None,
    batch_size: int | None = None,
    shuffle_seed: int = 0,
    precision: str = "fp32",
) -> list[RunResult]:
    """Train every configuration in ``configs`` together for ``epochs`` full-batch steps.

    Returns one :class:`RunResult` per configuration, in the order given. Evaluation runs
    every ``eval_every`` epochs and at the last one, under ``torch.no_grad()``, after that
    epoch's update; it never changes the trajectory. ``fast_path``: ``None`` uses the exact
    Gram-matrix path (:mod:`wdlab.params`) wherever it applies, ``False`` never, ``True``
    insists (``ValueError`` saying why not, where it does not apply). ``batch_size`` below
    the training rows trains on shuffled mini-batches (one permutation per epoch, shared by
    every configuration, drawn from ``shuffle_seed``); the train loss of an epoch is then the
    mean over its batches, and the fast path does not apply. ``precision="bf16"`` runs the
    forward passes (and so their GEMMs) under ``torch.autocast`` in bfloat16; weights,
    optimizer state and losses stay float32.
    """
    if not configs:
        raise ValueError("no configurations to train")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    t_start = time.perf_counter()
    tune_malloc()
    device = torch.device(device) if device is not None else default_device()
    if spec.in_dim == 0:
        spec = replace(spec, in_dim=data.in_dim, out_dim=data.out_dim)
    init = init or default_init(spec)
    for c in configs:
        for msg in D.surprise_warnings(
            c.mode, c.weight_decay, c.lr, optimizer_class(c.optimizer).__name__
        ):
            warnings.warn(msg, UserWarning, stacklevel=2)

    # Order configurations so that each optimizer group is a contiguous block of rows.
    order = sorted(range(len(configs)), key=lambda i: (repr(configs[i].opt_key()), i))
    cfgs = [configs[i] for i in order]
    K = len(cfgs)
    data = data.to(device)
    X, y = data.X_train, data.y_train

    # Initial weights: one nn.Module per distinct seed, stacked row by row.
    modules: dict[int, nn.Module] = {}
    for c in cfgs:
        if c.seed not in modules:
            modules[c.seed] = init(c.seed)
    template = modules[cfgs[0].seed]
    table = D.decay_table(template, rule)
    decays = {r["name"]: r["decays"] for r in table.rows}
    names = [n for n, _ in template.named_parameters()]
    states = {s: dict(m.named_parameters()) for s, m in modules.items()}
    stacked = {n: torch.stack([states[c.seed][n].detach() for c in cfgs]).to(device) for n in names}
    forward = BatchedForward(spec, template.to(device))
    eval_splits = {k: v for k, v in data.splits().items() if k != "train"}
    eval_X = {k: v[0] for k, v in eval_splits.items()}
    opt_cls = optimizer_class(cfgs[0].optimizer)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    minibatch = batch_size is not None and batch_size < X.shape[0]
    applies, why = gram_applies(
        forward, opt_cls.__name__, {c.mode for c in cfgs}, X.shape[0], X.shape[1]
    )
    if minibatch:
        applies, why = False, "mini-batches"
    if fast_path and not applies:
        raise ValueError(f"the fast path does not apply: {why}")
    use_fast = applies if fast_path is None else bool(fast_path)
    P = (GramParams if use_fast else DirectParams)(forward, stacked, X, eval_X)
    engine_note = why if use_fast else "standard path" + (f" ({why})" if not applies else "")
    if precision == "bf16":
        engine_note += "; bf16 autocast"
    full = P.tensors
    decays = {n: decays[P.origin(n)] for n in full}
    names = list(full)

    # Optimizer parameter groups: views of the stacked rows.
    groups = _group_configs(cfgs, device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16")
    amp = precision == "bf16"
    # Built-in models take their gradients from a hand-written backward (no autograd graph);
    # custom models, and bf16 autocast, use autograd.
    manual = forward.manual_backward and not amp
    l2_groups = [g for g in groups if g.mode == "l2"]
    decayed = [n for n in names if decays[n]]
    # l2 enters as a loss term under autograd; its gradient wd·w is added by hand where the
    # backward is hand-written, and for the fast path's coefficients (P.l2_as_grad)
    l2_grad = set(names) if manual else set(P.l2_as_grad)
    penalised = [n for n in decayed if n not in l2_grad]
    decayed_model = sorted({P.origin(n) for n in decayed})
    torch_groups: list[dict] = []
    for g in groups:
        _opt_name, options, lr, mode, builtin_wd = g.key
        # One torch group per configuration group, split by decay only where torch applies
        # weight decay itself (builtin): fewer groups, less per-step optimizer overhead.
        for flag in (True, False) if builtin_wd else (None,):
            group_names = [n for n in names if flag is None or decays[n] is flag]
            if not group_names:
                continue
            # a group of every row trains the stacked tensors themselves (their .grad is set by
            # the backward, nothing to hand over each step); otherwise views of its rows
            whole = g.rows == slice(0, K)
            views = [
                full[n] if whole else full[n].detach()[g.rows].requires_grad_(True)
                for n in group_names
            ]
            decayed_here = [(n, v) for n, v in zip(group_names, views, strict=True) if decays[n]]
            entry = {
                "params": views,
                "lr": lr,
                "weight_decay": builtin_wd if flag else 0.0,
                **dict(options),
                "_names": group_names,
                "_group": g,
                "_views": not whole,
                "_decayed": [v for _, v in decayed_here],
                "_l2_grad": [v for n, v in decayed_here if n in l2_grad],
            }
            if mode == "to_init":
                entry["_anchor"] = [v.detach().clone() for _, v in decayed_here]
            torch_groups.append(entry)
    if len({g.key[0] for g in groups}) > 1:
        raise ValueError("one batch trains one optimizer class; split the sweep by optimizer")
    clean = [{k: v for k, v in tg.items() if not k.startswith("_")} for tg in torch_groups]
    base_kwargs: dict[str, object] = {"lr": groups[0].key[2], **_implementation(opt_cls, groups)}
    optimizer = opt_cls(clean, **base_kwargs)
    for tg, pg in zip(torch_groups, optimizer.param_groups, strict=True):
        pg.update({k: v for k, v in tg.items() if k.startswith("_")})
        pg["lr0"] = tg["lr"]
    scheduler = make_scheduler(optimizer, schedule, epochs)

    # Records, kept on the device until the end.
    train_loss = torch.full((epochs, K), math.nan, device=device)
    # Σ‖w‖² is recorded as a few (K,) parts per epoch and combined for all epochs at the end.
    norm_parts = (
        torch.full((epochs, P.sq_norm_parts(decayed_model), K), math.nan, device=device)
        if decayed_model
        else None
    )
    eval_epochs = [e for e in range(epochs) if e % eval_every == 0 or e == epochs - 1]
    eval_set = set(eval_epochs)
    ev: dict[str, list[Tensor]] = {}
    pending_train_eval: int | None = None
    alive = torch.ones(K, dtype=torch.bool, device=device)
    diverged_at = [None] * K

    def record_eval(name: str, values: Tensor) -> None:
        ev.setdefault(name, []).append(values.detach())

    def record_norm(epoch: int) -> None:
        """The decayed weights' norm after ``epoch``'s update (as parts, see above)."""
        if norm_parts is not None:
            with torch.no_grad():
                P.write_sq_norm_parts(decayed_model, norm_parts[epoch])

    checked = 0  # epochs before this one have been checked for divergence

    def check_divergence(upto: int) -> None:
        """Stop every configuration whose train loss became NaN or inf up to epoch ``upto``.

        Checked at the first evaluation epoch ≥ 100 epochs after the last check, and at the
        end, rather than every step (no per-step sync): rows never mix, so a diverged row harms
        no other meanwhile; it is then marked ``diverged`` at its first non-finite epoch, and its
        weights and gradients are held at zero from there on.
        """
        nonlocal alive, all_alive, checked
        block = train_loss[checked : upto + 1]
        finite = torch.isfinite(block)
        bad = ~finite.all(0) & alive
        if bool(bad.any()):
            first = (~finite).float().argmax(0)
            for k in torch.nonzero(bad).flatten().tolist():
                diverged_at[k] = checked + int(first[k])
            alive = alive & ~bad
            all_alive = False
            with torch.no_grad():
                for t in full.values():
                    t[~alive] = 0
        checked = upto + 1

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc=progress_desc, unit="epoch", leave=False)

    all_alive = True

    def autograd_grads(losses: Tensor) -> None:
        """Every tensor's gradient of Σ_k loss_k (+ the l2 terms), through autograd."""
        total = losses.sum()
        for g in l2_groups:
            params = [full[n][g.rows] for n in penalised]
            total = total + D.l2_penalty(params, g.wd, per_row=True).sum()
        for t in full.values():
            t.grad = None
        total.backward()
        P.after_backward()

    def update() -> None:
        """One optimizer step of every configuration, from the gradients just computed."""
        with torch.no_grad():
            for pg in optimizer.param_groups:
                if pg["_views"]:
                    for n, v in zip(pg["_names"], pg["params"], strict=True):
                        v.grad = full[n].grad[pg["_group"].rows]
                if pg["_decayed"]:
                    mode, wd = pg["_group"].mode, pg["_group"].wd
                    decayed_group = {
                        "params": pg["_decayed"],
                        "lr": pg["lr"],
                        "lr0": pg["lr0"],
                        "anchor": pg.get("_anchor"),
                    }
                    D.apply_before_step(mode, decayed_group, wd)
                    if mode == "l2" and pg["_l2_grad"]:
                        D.coupled(pg["_l2_grad"], wd)
            if not all_alive:
                for t in full.values():
                    t.grad[~alive] = 0
            optimizer.step()
            P.invalidate()
            if not all_alive:
                for t in full.values():
                    t[~alive] = 0

    def evaluate(with_train: bool) -> None:
        """Metrics on every evaluation split (and, when asked, a full train pass)."""
        with torch.no_grad():
            for split, (_, ys) in eval_splits.items():
                o = fwd(split)
                record_eval(f"{split}_loss", per_config_loss(data.task, o, ys))
                record_class_metrics(split, o, ys)
            if with_train:
                o = fwd("train")
                record_eval("train_loss_eval", per_config_loss(data.task, o, y))
                record_class_metrics("train", o, y)

    def record_class_metrics(split: str, out: Tensor, ys: Tensor) -> None:
        """Accuracy (classification); regression's RMSE and R² follow from the loss, and are
        derived for all evaluations at once at the end."""
        if data.task != "regression":
            for m, v in per_config_metrics(data.task, out, ys).items():
                record_eval(f"{split}_{m}", v)

    def fwd(split: str, idx: Tensor | None = None) -> Tensor:
        """The forward pass, under bfloat16 autocast when asked; outputs in float32."""
        if not amp:
            return P.forward(split) if idx is None else P.forward(split, idx)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = P.forward(split) if idx is None else P.forward(split, idx)
        return out.float()

    def train_step(idx: Tensor | None, epoch: int, pending: bool) -> tuple[Tensor, Tensor]:
        """Forward, gradients and update on the training rows (``idx``: a mini-batch);
        returns the (K,) losses and the outputs, both from before the update."""
        yb = y if idx is None else y[idx]
        after_forward = record_previous_norm if idx is None and epoch > 0 else None
        if manual:
            with torch.no_grad():
                tape = Tape()
                out = (
                    P.forward("train", tape=tape) if idx is None else P.forward("train", idx, tape)
                )
                if after_forward is not None:
                    after_forward(epoch)
                losses, dout = per_config_loss_grad(data.task, out, yb)
                if pending:  # metrics of these weights, before the backward
                    record_class_metrics("train", out, yb)
                P.backward(tape, dout)
        else:
            out = fwd("train", idx)
            if after_forward is not None:
                after_forward(epoch)
            losses = per_config_loss(data.task, out, yb)
            if pending:
                record_class_metrics("train", out.detach(), yb)
            autograd_grads(losses)
        losses = losses.detach()
        if pending:
            record_eval("train_loss_eval", losses)
        update()
        return losses, out

    def record_previous_norm(epoch: int) -> None:
        """The norm after the previous update: computed now, when the fast path has G·B."""
        record_norm(epoch - 1)

    n_train = X.shape[0]
    shuffle = torch.Generator(device="cpu").manual_seed(shuffle_seed)
    # The hand-written backward needs no autograd at all: one no_grad around the whole loop.
    with torch.no_grad() if manual else contextlib.nullcontext():
        for epoch in range(epochs):
            if minibatch:
                perm = torch.randperm(n_train, generator=shuffle).to(device)
                epoch_loss = torch.zeros(K, device=device)
                for i in range(0, n_train, batch_size):
                    idx = perm[i : i + batch_size]
                    losses, _ = train_step(idx, epoch, False)
                    epoch_loss += losses * len(idx)
                train_loss[epoch] = epoch_loss / n_train
                record_norm(epoch)
            else:
                # train metrics after the previous eval epoch's update come from this forward
                losses, _ = train_step(None, epoch, pending_train_eval is not None)
                pending_train_eval = None
                train_loss[epoch] = losses
            if scheduler is not None:
                scheduler.step()
            if epoch in eval_set:
                if epoch + 1 - checked >= 100 or epoch == epochs - 1:
                    check_divergence(epoch)
                # full batch: the next step's forward gives the train metrics of these weights
                evaluate(with_train=minibatch)
                if not minibatch:
                    pending_train_eval = epoch
            if epoch % 100 == 99:
                trim_heap()  # keeps a long run's resident memory flat (glibc holds freed heap)
            if bar is not None:
                bar.update(1)
    with torch.no_grad():
        out = fwd("train")
        if not minibatch:
            record_norm(epochs - 1)
        if pending_train_eval is not None:
            record_eval("train_loss_eval", per_config_loss(data.task, out, y))
            record_class_metrics("train", out, y)
    if bar is not None:
        bar.close()

    seconds = time.perf_counter() - t_start
    train_loss_c = train_loss.cpu()
    if norm_parts is None:
        weight_norm_c = torch.zeros(epochs, K)
    else:
        weight_norm_c = P.combine_sq_norms(norm_parts).clamp_min(0).sqrt().cpu()
    # one .tolist() per curve for all rows: (K, epochs) nested lists
    rows_train_loss = train_loss_c.t().tolist()
    rows_weight_norm = weight_norm_c.t().tolist()
    stacked_ev = {k: torch.stack(v).float() for k, v in ev.items()}  # (n_eval, K)
    if data.task == "regression":  # RMSE and R² of every evaluation, from its loss
        for split, (_, ys) in data.splits().items():
            loss = stacked_ev.get("train_loss_eval" if split == "train" else f"{split}_loss")
            if loss is not None:
                for m, v in regression_metrics(loss, (ys - ys.mean()).pow(2).mean()).items():
                    stacked_ev[f"{split}_{m}"] = v
    rows_ev = {k: v.t().cpu().tolist() for k, v in stacked_ev.items()}
    results: list[RunResult | None] = [None] * K
    for row, orig in enumerate(order):
        curves: dict[str, list[float]] = {
            "epoch": list(range(epochs)),
            "train_loss": rows_train_loss[row],
            "weight_norm": rows_weight_norm[row],
            "eval_epoch": list(eval_epochs),
        }
        for k, v in rows_ev.items():
            curves[k] = v[row]
        final = {k: curves[k][-1] for k in rows_ev}
        final["train_loss"] = final.pop("train_loss_eval")
        final["weight_norm"] = curves["weight_norm"][-1]
        status = "done"
        if diverged_at[row] is not None:
            status = "diverged"
            cut = diverged_at[row]
            for k in list(curves):
                if k in ("epoch", "eval_epoch"):
                    continue
                src = curves["epoch"] if k in ("train_loss", "weight_norm") else eval_epochs
                curves[k] = [
                    (v if e < cut else math.nan) for e, v in zip(src, curves[k], strict=True)
                ]
            final = {k: math.nan for k in final}
        best = _best(curves, "val_loss" if "val_loss" in curves else "test_loss")
        params = P.weights(row) if keep_params else None
        results[orig] = RunResult(
            config=cfgs[row],
            curves=curves,
            final=final,
            status=status,
            diverged_epoch=diverged_at[row],
            best=best,
            params=params,
            seconds=seconds,
            engine=engine_note,
        )
    return results  # type: ignore[return-value]


@functools.wraps(_train)
def train(*args: object, **kwargs: object) -> list[RunResult]:
    """Train every configuration together (signature and docs: those of ``_train``).

    The batch's tensors are released, and freed heap handed back to the OS, before returning.
    """
    try:
        return _train(*args, **kwargs)
    finally:
        release_memory()


def _libc() -> object | None:
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None
    return libc


_LIBC = _libc()
_TRIM = _LIBC.malloc_trim if _LIBC is not None else None
_MALLOC_TUNED = False


def tune_malloc() -> None:
    """Keep freed tensor memory in the heap between steps (once per process).

    glibc's defaults hand large freed blocks straight back to the OS (mmap/munmap, and
    trimming the heap top), so every step's fresh activations page-fault anew: ~2,000 faults
    and several ms per step at a 64-configuration MLP. Fixed thresholds keep them in the heap;
    the engine still hands the heap back explicitly (:func:`trim_heap`) every 100 epochs and
    after each batch, so resident memory stays flat.
    """
    global _MALLOC_TUNED
    if _LIBC is not None and not _MALLOC_TUNED:
        _LIBC.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MiB come from the heap
        _LIBC.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free() never trims; trim_heap() does
        _MALLOC_TUNED = True


def trim_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise, and RSS only grows)."""
    if _TRIM is not None:
        _TRIM(0)


def release_memory() -> None:
    """Hand freed heap back to the OS at the end of a batch.

    No gc.collect(): tensors are reference-counted and already freed here, and a full
    collection costs ~0.15 s once torch._dynamo's many objects are loaded.
    """
    trim_heap()


def _best(curves: dict[str, list[float]], key: str) -> dict[str, float]:
    values = curves.get(key)
    if not values:
        return {}
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return {}
    v, i = min(finite)
    return {"metric": key, "value": v, "epoch": curves["eval_epoch"][i]}
