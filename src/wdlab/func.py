"""Any ``nn.Module``, K configurations at once, through ``torch.func``.

Parameters *and* buffers are stacked per configuration (a leading dimension K), and one forward
runs ``torch.func.functional_call`` under ``torch.vmap`` for all K (PyTorch's model-ensembling
recipe). BatchNorm keeps running statistics per configuration (its in-place updates land in that
configuration's row of the stacked buffers), in train and eval mode alike. Dropout draws,
for every configuration, the masks that configuration draws trained alone: one mask per call,
shared by the rows of the batch (``randomness="same"``), from torch's global RNG, which the
trainer seeds with the data seed; under vmap that is the very draw, bit for bit and with the
same RNG consumption, that the module's own ``F.dropout`` makes on the unbatched input. One
detail makes it exact: alone, ``F.dropout`` fills its mask in the memory order of its input
(``empty_like``), and vmap fills a contiguous one, which differ for a strided input (the output
of ``nn.MultiheadAttention`` with ``batch_first=True``); :class:`SameMasks` draws the batched
mask in the input's own layout. So a batched configuration gives the numbers it gives alone,
Dropout included (the same masks, other kernels' rounding), and configurations that differ
only in weight decay share their masks. On CUDA a configuration alone runs torch's fused
dropout kernel, whose masks come from another generator: there the batch shares masks of the
same distribution, not the very masks of each run alone.

A module that ``torch.vmap`` cannot run (``.item()``, data-dependent control flow, an
unsupported op…) is run one configuration after another instead: the same stacked tensors, the
same trainer, K forwards per step, each from the RNG state the first started from
(:func:`same_draws`: each configuration draws the masks it draws alone). :func:`probe` finds
out which, and why.

A batch of one configuration runs that way too, through the module's own kernels, and hands the
module the contiguous output gradient a plain loop's loss would: ``max_batch=1`` is then a
plain PyTorch loop, bit for bit on the CPU. Under vmap, batched kernels (grouped convolutions,
BatchNorm written out) round differently: the same maths, not the same bits.

A tied model (``head.weight = emb.weight``) keeps its tie: the shared tensor is stacked once,
under its first name, and :func:`meta_copy` keeps the template's names pointing at one tensor,
so ``functional_call`` gives both names that configuration's row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from wdlab.inputs import Inputs, model_args, shapes
from wdlab.sidebyside import SideBySide

T = TypeVar("T")


class FuncForward:
    """``(params, buffers, x, train) -> (K, n, out)`` for K stacked copies of ``template``.

    ``vmap`` False runs the configurations one after another, as a batch of one always does
    (see the module docstring).
    """

    def __init__(self, template: nn.Module, vmap: bool = True) -> None:
        self.template = meta_copy(template)  # structure only: tensors come in
        self.vmap = vmap
        self.mode_dependent = any(
            isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
            for m in template.modules()
        )
        self._batched = torch.vmap(self._one, in_dims=(0, 0, None), randomness="same")
        self.side: SideBySide | None = None  # configurations side by side (parallel > 1)

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Inputs) -> Tensor:
        return _call(self.template, params, buffers, x)

    def __call__(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Inputs, train: bool
    ) -> Tensor:
        """Outputs of every configuration on the shared input ``x`` (a tensor, or a tuple or
        dict of tensors: ``model(*x)``, ``model(**x)``)."""
        self.template.train(train)
        K = len(next(iter(params.values())))
        if self.vmap and K > 1:
            if not train:
                return self._batched(params, buffers, x)
            with SameMasks():
                return self._batched(params, buffers, x)
        # one configuration (or no vmap): the module's own kernels on row views, so a
        # configuration trained alone is exactly a plain PyTorch loop
        return torch.stack(self.map(params, buffers, x, lambda forward: forward()))

    def map(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Inputs,
        job: Callable[[Callable[[], Tensor]], T],
    ) -> list[T]:
        """``job(forward)`` for each configuration, in order, where ``forward()`` gives its
        outputs through the module's own kernels on its rows (the module in the mode
        :meth:`__call__` or the caller set): one configuration after another, so that a job may
        run its backward before the next forward, or side by side (:attr:`side`, where a
        forward drawing random numbers is refused)."""

        def one(k: int, module: nn.Module) -> T:
            pk = {n: t[k] for n, t in params.items()}
            bk = {n: t[k] for n, t in buffers.items()}  # views: in-place updates land in row k
            return job(lambda: _ContiguousGrad.apply(one_tensor(_call(module, pk, bk, x))))

        count = len(next(iter(params.values())))
        if self.side is None:
            device = next(iter(params.values())).device
            return same_draws(count, lambda k: one(k, self.template), cuda_ids(device))
        return self.side.map(count, one)


def same_draws(count: int, run: Callable[[int], T], cuda: list[int]) -> list[T]:
    """``run(k)`` for k < ``count``, each from the RNG state the first started from (torch's
    CPU generator and the ``cuda`` devices'): each configuration draws the Dropout masks it
    draws alone, where one after another would give each the next draw. The generators end
    where one run leaves them, as a configuration alone does (the runs draw alike)."""
    start = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]
    out = []
    for k in range(count):
        if k:
            torch.set_rng_state(start[0])
            for d, state in zip(cuda, start[1], strict=True):
                torch.cuda.set_rng_state(state, d)
        out.append(run(k))
    return out


def one_tensor(out: object) -> Tensor:
    """A forward's output, which wdlab's losses and metrics read: one tensor (a tuple or a
    dict, an auxiliary output beside the logits, is a ``TypeError`` saying what to return)."""
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model returns a {type(out).__name__}, not one tensor: return the outputs "
            "the loss reads (the logits) from forward, and keep anything else out of it"
        )
    return out


def _call(
    module: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Inputs
) -> Tensor:
    """``module`` run on ``x`` with the given parameters and buffers."""
    args, kwargs = model_args(x)
    return functional_call(module, (params, buffers), args, kwargs)


class SameMasks(TorchFunctionMode):
    """Inside a vmapped training forward: ``F.dropout`` (``nn.Dropout``, attention weights)
    draws its one shared mask as the unbatched call does, ``empty_like(input).bernoulli_(1 −
    p)`` in the memory layout of its input (the batched input's layout without the batch
    dimension), then ``input * mask / (1 − p)``: the very mask, values and RNG consumption of
    the configuration run alone on the CPU (vmap's own rule fills a contiguous mask)."""

    def __torch_function__(
        self, func: object, types: object, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        kwargs = kwargs or {}
        if func is F.dropout:
            return _dropout(*args, **kwargs)
        return func(*args, **kwargs)  # type: ignore[operator]


def _dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """``F.dropout`` as torch computes it on the CPU (``_dropout_impl``), its mask laid out like
    ``input`` (torch's ``empty_like`` rule, applied to the unbatched geometry)."""
    if not training or p <= 0 or p >= 1 or input.numel() == 0:
        return F.dropout(input, p, training, inplace)
    geometry = torch.empty_strided(
        input.shape, input.stride(), dtype=input.dtype, device=input.device
    )
    noise = torch.empty_like(geometry).bernoulli_(1 - p).div_(1 - p)
    return input.mul_(noise) if inplace else input * noise


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands the module a contiguous gradient, as a plain loop's
    loss does (the task's loss reads (K, n, C) outputs as (K, C, n): its gradient arrives
    strided, and a Linear layer would then sum its bias gradient in another order)."""

    @staticmethod
    def forward(ctx: object, out: Tensor) -> Tensor:
        return out.view_as(out)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad.contiguous()


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers live on the meta device, with every
    tie kept: a tensor shared by several names (``head.weight = emb.weight``) stays one tensor.
    (``Module.to("meta")`` gives each name its own tensor, so a tied model's second name would
    keep a meta tensor under ``functional_call``.)"""
    copied = copy.deepcopy(module)  # deepcopy keeps ties; the memo below keeps them on meta
    memo: dict[int, Tensor] = {}
    for mod in copied.modules():
        for table in (mod._parameters, mod._buffers):
            for name, t in table.items():
                if t is None:
                    continue
                if id(t) not in memo:
                    meta = torch.empty_like(t, device="meta")
                    if isinstance(t, nn.Parameter):
                        meta = nn.Parameter(meta, requires_grad=t.requires_grad)
                    memo[id(t)] = meta
                table[name] = memo[id(t)]
    return copied


def tied_names(module: nn.Module) -> dict[str, str]:
    """Every second (third…) name of a shared parameter or buffer, mapped to its first name
    (the one ``named_parameters()`` / ``named_buffers()`` list, and the engine stacks)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for named in (module.named_parameters, module.named_buffers):
        for name, t in named(remove_duplicate=False):
            if id(t) in first:
                aliases[name] = first[id(t)]
            else:
                first[id(t)] = name
    return aliases


def with_ties(state: dict[str, Tensor], ties: dict[str, str]) -> dict[str, Tensor]:
    """A state dict with every tied name (``tied_names``) pointing at its first name's tensor:
    the same tensor object, as in the module."""
    return state | {alias: state[first] for alias, first in ties.items() if first in state}


def vmap_note(k: int) -> str:
    """The engine text of a module run through torch.func for ``k`` configurations."""
    if k == 1:
        return "torch.func: one configuration, the module's own kernels (a plain loop's numbers)"
    return "torch.func: vmap over the configurations"


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
    x: Inputs,
    loss: Callable[[Tensor], Tensor],
) -> str | None:
    """Try one training forward and backward and one eval forward on ``x`` (under vmap for more
    than one configuration); ``None`` if they run, else why not (the error's first line). When
    one configuration alone fails too, the model rejects the data itself: a ``ValueError``
    quoting the error. Buffers and the RNG are restored."""
    saved = {n: b.clone() for n, b in buffers.items()}
    try:
        why = _try(fwd, params, buffers, x, loss)
        if why is not None:
            fwd.vmap = False
            alone = _try(fwd, _first_rows(params, 1), _first_rows(buffers, 1), x, loss)
            fwd.vmap = True
            if alone is not None:
                raise ValueError(
                    f"the model or its loss fails on inputs of shape {shapes(x)}: {alone}"
                ) from None
    finally:
        for n, b in buffers.items():
            b.copy_(saved[n])
    return why


def _first_rows(tensors: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Rows 0..k-1 of stacked tensors (the first ``k`` configurations)."""
    return {n: t[:k] for n, t in tensors.items()}


def _try(
    fwd: FuncForward,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Inputs,
    loss: Callable[[Tensor], Tensor],
) -> str | None:
    device = next(iter(params.values())).device
    with torch.random.fork_rng(devices=cuda_ids(device)):
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
