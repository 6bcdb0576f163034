"""Any ``nn.Module``, K configurations at once, through ``torch.func``.

Parameters *and* buffers are stacked per configuration (a leading dimension K), and one forward
runs ``torch.func.functional_call`` under ``torch.vmap`` for all K (PyTorch's model-ensembling
recipe). BatchNorm keeps running statistics per configuration (its in-place updates land in that
configuration's row of the stacked buffers), in train and eval mode alike; Dropout draws
independent masks per configuration (``randomness="different"``), from torch's global RNG,
which the trainer seeds.

A module that ``torch.vmap`` cannot run (``.item()``, data-dependent control flow, an
unsupported op…) is run one configuration after another instead: the same stacked tensors, the
same trainer, K forwards per step. :func:`probe` finds out which, and why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call


class FuncForward:
    """``(params, buffers, x, train) -> (K, n, out)`` for K stacked copies of ``template``.

    ``vmap`` False runs the configurations one after another (see the module docstring).
    """

    def __init__(self, template: nn.Module, vmap: bool = True) -> None:
        self.template = copy.deepcopy(template).to("meta")  # structure only: tensors come in
        self.vmap = vmap
        self.mode_dependent = any(
            isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
            for m in template.modules()
        )
        self._batched = torch.vmap(self._one, in_dims=(0, 0, None), randomness="different")

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def __call__(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, train: bool
    ) -> Tensor:
        """Outputs of every configuration on the shared input ``x``."""
        self.template.train(train)
        if self.vmap:
            return self._batched(params, buffers, x)
        K = len(next(iter(params.values())))
        outs = []
        for k in range(K):
            pk = {n: t[k] for n, t in params.items()}
            bk = {n: t[k] for n, t in buffers.items()}  # views: in-place updates land in row k
            outs.append(self._one(pk, bk, x))
        return torch.stack(outs)


def cuda_ids(device: torch.device) -> list[int]:
    """The CUDA device indices ``torch.random.fork_rng`` must save and restore for ``device``."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def stack_state(
    modules: list[nn.Module],
    device: torch.device,
    named: Callable[[nn.Module], Iterable[tuple[str, Tensor]]] = nn.Module.named_buffers,
) -> dict[str, Tensor]:
    """Every buffer of the modules (or what ``named`` lists, e.g. ``nn.Module.named_parameters``),
    stacked row by row (one row per module), in the first module's order."""
    names = [n for n, _ in named(modules[0])]
    states = [dict(named(m)) for m in modules]
    return {n: torch.stack([s[n].detach() for s in states]).to(device) for n in names}


def probe(
    fwd: FuncForward,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Tensor,
    loss: Callable[[Tensor], Tensor],
) -> str | None:
    """Try one training forward and backward and one eval forward on ``x`` under vmap; ``None``
    if they run, else why not (the error's first line). When one configuration alone fails too,
    the model rejects the data itself: a ``ValueError`` quoting the error. Buffers and the RNG
    are restored."""
    saved = {n: b.clone() for n, b in buffers.items()}
    try:
        why = _try(fwd, params, buffers, x, loss)
        if why is not None:
            fwd.vmap = False
            alone = _try(fwd, _rows(params, 1), _rows(buffers, 1), x, loss)
            fwd.vmap = True
            if alone is not None:
                raise ValueError(
                    f"the model or its loss fails on inputs of shape {tuple(x.shape[1:])}: {alone}"
                ) from None
    finally:
        for n, b in buffers.items():
            b.copy_(saved[n])
    return why


def _rows(tensors: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    return {n: t[:k] for n, t in tensors.items()}


def _try(
    fwd: FuncForward,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Tensor,
    loss: Callable[[Tensor], Tensor],
) -> str | None:
    with torch.random.fork_rng(devices=cuda_ids(x.device)):
        try:
            with torch.enable_grad():
                trial = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
                loss(fwd(trial, buffers, x, True)).backward()
            with torch.no_grad():
                fwd(params, buffers, x, False)
        except Exception as exc:  # any failure: we say which, and why
            text = str(exc).strip()
            return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    return None
