"""Tasks: the loss, its hand-written gradient and the metrics of each kind of target.

Every function works on K configurations at once: outputs ``(K, n, out)``, targets ``(n,)``,
results ``(K,)``, each configuration's loss its own mean. Multiclass logits are kept as
``(K, C, n)`` underneath (built-in heads store them that way, see ``models._head``), so the
per-configuration softmax reduces over a dimension that is not the innermost.

A :class:`Task` is one registry entry; the engine, the selection and the reports ask it and
never test a task's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Task:
    """One kind of target: its losses and metrics, and the metric weight decay is chosen on.

    ``metric`` is the headline metric's key (``acc``, ``rmse``), ``metric_name`` its long
    name, ``higher`` whether higher is better. ``eval_metrics`` computes metrics from outputs
    at an evaluation; ``loss_metrics`` derives metrics from recorded losses at the end of a run
    (RMSE and R² for regression) given the targets' variance. ``means``: the loss and the
    metrics are means over examples, so a split evaluated in batches is the batches' means
    weighted by their rows (else its outputs are kept and the metrics computed once over all).
    ``derived_from``: the recorded series ``loss_metrics`` read: the loss, or, where the loss
    is the user's, the outputs' MSE (``mse``, recorded by ``eval_metrics``).
    """

    name: str
    loss_name: str
    metric: str
    metric_name: str
    higher: bool
    loss: Callable[[Tensor, Tensor], Tensor]
    loss_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    eval_metrics: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None
    loss_metrics: Callable[[Tensor, Tensor], dict[str, Tensor]] | None = None
    means: bool = True
    metrics: tuple[str, ...] = ()  # the metrics a split's evaluation records, besides the loss
    derived_from: str = "loss"


def _bce(out: Tensor, y: Tensor) -> Tensor:
    k, n = out.shape[0], out.shape[1]
    return F.binary_cross_entropy_with_logits(
        out.squeeze(-1), y.expand(k, n), reduction="none"
    ).mean(1)


def _bce_grad(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    n = out.shape[1]
    o = out.squeeze(-1)
    # BCE with logits as softplus(o) − y·o: the same value, 3 kernels instead of ~10
    losses = F.softplus(o, threshold=30).sub_(o * y).mean(1)
    return losses, torch.sigmoid(o).sub_(y).div_(n).unsqueeze(-1)


def _binary_acc(out: Tensor, y: Tensor) -> dict[str, Tensor]:
    return {"acc": ((out.squeeze(-1) > 0).to(y.dtype) == y).float().mean(1)}


def _ce(out: Tensor, y: Tensor) -> Tensor:
    k, n = out.shape[0], out.shape[1]
    if out.is_contiguous():  # (K, n, C) rows, as a module returns them: a plain loop's kernels
        flat = F.cross_entropy(out.reshape(k * n, -1), y.repeat(k), reduction="none")
        return flat.view(k, n).mean(1)
    return F.cross_entropy(out.transpose(1, 2), y.expand(k, n), reduction="none").mean(1)


def _ce_grad(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    k, n = out.shape[0], out.shape[1]
    logp = F.log_softmax(out.transpose(1, 2), 1)  # (K, C, n)
    idx = y.view(1, 1, n).expand(k, 1, n)
    losses = logp.gather(1, idx).squeeze(1).mean(1).neg_()
    grad = logp.exp_().scatter_add_(1, idx, torch.full((k, 1, n), -1.0, device=out.device))
    return losses, grad.div_(n).transpose(1, 2)


def _multiclass_acc(out: Tensor, y: Tensor) -> dict[str, Tensor]:
    # max over the class dim of the (K, C, n) layout: the first maximal index, as argmax gives,
    # several times faster than argmax here
    return {"acc": (out.transpose(1, 2).max(1).indices == y).float().mean(1)}


def _mse(out: Tensor, y: Tensor) -> Tensor:
    if y.dim() > 1:  # several targets per example, (n, t): the mean over every element
        return (out - y).pow(2).flatten(1).mean(1)  # as nn.MSELoss gives each configuration
    return (out.squeeze(-1) - y).pow(2).mean(1)


def _mse_grad(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if y.dim() > 1:  # (K, n, t) outputs against (n, t) targets
        r = out - y
        m = r[0].numel()
        flat = r.flatten(1)
        return torch.linalg.vecdot(flat, flat).div_(m), r.mul_(2 / m)
    n = out.shape[1]
    r = out.squeeze(-1) - y
    losses = torch.linalg.vecdot(r, r).div_(n)  # the mean square: 2 kernels, not 3
    return losses, r.mul_(2 / n).unsqueeze(-1)


def _mse_values(out: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The outputs' MSE, as a metric (RMSE and R² derive from it where the loss is the user's)."""
    return {"mse": _mse(out, y)}


def regression_metrics(mse: Tensor, var: Tensor) -> dict[str, Tensor]:
    """RMSE and R² from mean squared errors (any shape) and the targets' variance (for several
    targets the mean of each one's variance: R² is scikit-learn's ``variance_weighted``)."""
    return {"rmse": mse.sqrt(), "r2": 1 - mse / var}


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "binary",
            "loss (BCE)",
            "acc",
            "accuracy",
            True,
            _bce,
            _bce_grad,
            _binary_acc,
            metrics=("acc",),
        ),
        Task(
            "multiclass",
            "loss (cross-entropy)",
            "acc",
            "accuracy",
            True,
            _ce,
            _ce_grad,
            _multiclass_acc,
            metrics=("acc",),
        ),
        Task(
            "regression",
            "loss (MSE)",
            "rmse",
            "RMSE",
            False,
            _mse,
            _mse_grad,
            loss_metrics=regression_metrics,
            metrics=("rmse", "r2"),
        ),
    )
}


def get_task(name: str) -> Task:
    """The task called ``name``, or a ``ValueError`` listing the valid ones."""
    task = TASKS.get(name)
    if task is None:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return task


def per_config_loss(task: str, out: Tensor, y: Tensor) -> Tensor:
    """Mean loss of each configuration: BCE-with-logits, cross-entropy or MSE."""
    return get_task(task).loss(out, y)


def per_config_loss_grad(task: str, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`per_config_loss` and its gradient d(Σ_k loss_k)/d(out), by hand (no autograd)."""
    return get_task(task).loss_grad(out, y)


# ---------------------------------------------------------------------------------------------
# A user's own loss and metric.


@dataclass(frozen=True)
class Metric:
    """A user's metric, its name, and whether higher is better.

    ``fn(outputs, targets) -> number`` for one configuration (outputs ``(n, out)``)."""

    fn: Callable[[Tensor, Tensor], object]
    name: str = "metric"
    higher: bool = True


def _batched_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """A per-configuration loss ``fn(outputs (n, out), targets) -> scalar`` for (K, n, out):
    ``torch.vmap`` over the configurations, or a loop where ``fn`` cannot be vmapped."""
    vmapped = torch.vmap(fn, in_dims=(0, None))
    state = {"vmap": True}

    def loss(out: Tensor, y: Tensor) -> Tensor:
        y = _check_broadcast(fn, out, y)
        if state["vmap"]:
            try:
                values = vmapped(out, y)
            except Exception:
                state["vmap"] = False
        if not state["vmap"]:
            values = torch.stack([torch.as_tensor(fn(o, y)) for o in out])
        if values.shape != (out.shape[0],):
            raise ValueError(
                f"the loss must return one number per call, got shape {tuple(values.shape[1:])}"
            )
        return values

    return loss


# torch's pointwise losses that broadcast outputs against targets of another shape, with only
# a warning: (n, 1) outputs against (n,) targets give an (n, n) loss, a wrong one
_BROADCASTING = (torch.nn.MSELoss, torch.nn.L1Loss, torch.nn.SmoothL1Loss, torch.nn.HuberLoss)
_BROADCASTING_FNS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)


def _check_broadcast(fn: Callable[[Tensor, Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
    """The targets as one of torch's pointwise losses ``fn`` reads them against one
    configuration's outputs (``out[0]``): (n,) targets of (n, 1) outputs as (n, 1) (wdlab
    keeps one target per example as (n,)); a one-line ``ValueError`` for other shapes that
    differ (torch would warn and broadcast them)."""
    if not (isinstance(fn, _BROADCASTING) or fn in _BROADCASTING_FNS):
        return y
    if not isinstance(y, Tensor) or out.shape[1:] == y.shape:
        return y
    if out.shape[1:] == (*y.shape, 1):
        return y.unsqueeze(-1)
    name = getattr(fn, "__name__", type(fn).__name__)
    one, target = tuple(out.shape[1:]), tuple(y.shape)
    raise ValueError(
        f"loss {name}: the model's outputs have shape {one} and the targets {target}; torch "
        "would broadcast them into a wrong loss: make them the same shape (squeeze the "
        "outputs, or give the targets the outputs' shape)"
    )


def _metric_values(metric: Metric) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    def values(out: Tensor, y: Tensor) -> dict[str, Tensor]:
        vals = []
        for o in out:
            v = metric.fn(o, y)
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(
                    f"metric {metric.name!r} returned {type(v).__name__} {v!r:.60}; it must "
                    "return a number"
                )
            vals.append(float(v))
        return {metric.name: torch.tensor(vals, device=out.device)}

    return values


def custom_task(
    base: Task,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    metric: Metric | Callable[[Tensor, Tensor], object] | None = None,
) -> Task:
    """``base`` with a user's loss (``fn(outputs, targets) -> scalar tensor`` per configuration)
    and/or metric in place of its own. A metric is a :class:`Metric`, which says whether
    higher is better; a plain callable is refused (an error rate read as higher-is-better
    would choose the worst weight decay). A user's loss is read as a mean over examples
    (training averages it over mini-batches); a user's metric is computed once over a whole
    split (``means`` False)."""
    if metric is not None and not isinstance(metric, Metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        raise ValueError(
            f"metric={name}: a plain function does not say which way is better; pass "
            f"wdlab.Metric({name}, {name!r}, higher=False) where lower is better (an error "
            "rate, a loss), higher=True where higher is"
        )
    derived = loss is not None and metric is None and base.loss_metrics is not None
    evals = _metric_values(metric) if metric is not None else base.eval_metrics
    return Task(
        name=base.name,
        loss_name="loss (custom)" if loss is not None else base.loss_name,
        metric=metric.name if metric is not None else base.metric,
        metric_name=metric.name if metric is not None else base.metric_name,
        higher=metric.higher if metric is not None else base.higher,
        loss=_batched_loss(loss) if loss is not None else base.loss,
        loss_grad=None if loss is not None else base.loss_grad,
        eval_metrics=_mse_values if derived else evals,
        loss_metrics=None if metric is not None else base.loss_metrics,
        means=metric is None and base.means,
        metrics=(metric.name,) if metric is not None else base.metrics,
        derived_from="mse" if derived else "loss",  # RMSE and R² never from the user's loss
    )


def check_recorded(task: Task, key: str, said: object) -> None:
    """A one-line ``ValueError`` where the choice would be made on a metric ``task``'s runs do
    not record (``said``: the ``select`` given), before anything is trained."""
    recorded = ("loss", *task.metrics)
    if key not in recorded:
        raise ValueError(
            f"select={said!r}: the runs of this {task.name} task record "
            f"{', '.join(recorded)}; choose on one of them (or auto)"
        )
