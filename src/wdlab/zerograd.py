"""Parameters whose gradient is zero in exact arithmetic, and rounding noise in float32.

A bias that feeds a BatchNorm (or an InstanceNorm, a GroupNorm with one channel per group, a
LayerNorm over spatial axes only) is removed again by the normalisation: the loss does not
depend on it, so its exact gradient is 0. The same holds for the key part of attention's input
bias (softmax over the keys ignores the constant ``q·b_k`` every key gets). Float32 kernels
return rounding noise instead, whose value depends on each kernel's summation order: batched or
alone, another batch size, another CPU or GPU. SGD turns that noise into steps of ``lr·noise``;
Adam-type optimizers divide by √v, which turns it into steps of about ``lr``. Such runs agree
across kernels only up to that noise, never bit for bit.

Two ways to find them, one per use:

* :func:`noise_gradients` (numerical, what the sweep runs): the gradient of two training
  batches in float32 and in float64 at the same weights. Where the exact gradient is 0, float32
  returns noise of order u₃₂·S and float64 of order u₆₄·S (S: the size of the terms that
  cancel), so ``|g₆₄| / |g₃₂|`` is about u₆₄/u₃₂ = 2⁻²⁹ ≈ 2e-9 (measured 1e-10 to 6e-8 on a
  Transformer's key bias); where it is not 0, both compute the same value and the ratio is 1
  up to float32's rounding. An element is flagged when ``|g₆₄| ≤ 1e-3·|g₃₂|`` (on every batch
  where its float32 gradient is not exactly 0): four orders of magnitude from the noise, three
  from a real gradient, and whatever the cause, a flagged element's float32 gradient is at
  least 1000× its exact value, i.e. noise. It needs data and a float64 forward; it finds any
  structure (a user's own modules too), element by element (the key third of ``in_proj_bias``).
* :func:`redundant_biases` (structural, what ``wdlab audit`` runs, with no data): a
  ``Linear``/``Conv`` bias whose output goes only to a normalisation that removes every
  per-channel constant, read from the module graph (``torch.fx``); attention's key bias from
  the ``MultiheadAttention`` modules. A model ``torch.fx`` cannot trace gets only the latter.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

RATIO = 1e-3  # |g64| <= RATIO·|g32|: the float32 gradient is noise (see the module docstring)
PROBE_ROWS = 64  # training rows per probe batch
SHOWN = 4  # parameters named in the engine note before "…"


@dataclass(frozen=True)
class ZeroGrad:
    """One parameter with elements whose gradient is zero in exact arithmetic: ``count`` of its
    ``numel`` elements (``where``: their flat indices, numerical findings only), and ``why``
    (structural findings only)."""

    name: str
    count: int
    numel: int
    why: str = ""
    where: tuple[int, ...] = ()


# -- numerical ------------------------------------------------------------------------------


def _to64(x: object) -> object:
    """Floating tensors (also inside tuples, lists and dicts) as float64; the rest as given."""
    if isinstance(x, Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to64(v) for v in x)
    if isinstance(x, dict):
        return {k: _to64(v) for k, v in x.items()}
    return x


def _grads(
    model: nn.Module,
    x: object,
    y: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    call: Callable[[nn.Module, object], Tensor],
) -> dict[str, Tensor]:
    """Every parameter's gradient of ``loss(call(model, x), y)`` (training mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss(call(model, x), y).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def noise_gradients(
    model: nn.Module,
    batches: Sequence[tuple[object, Tensor]],
    loss: Callable[[Tensor, Tensor], Tensor],
    call: Callable[[nn.Module, object], Tensor] = lambda m, x: m(x),
) -> list[ZeroGrad] | None:
    """The parameters with elements whose float32 gradient is rounding noise: ``|g64| ≤
    RATIO·|g32|`` on some batch and on no batch a real value (see the module docstring; an
    exact float32 zero, e.g. a dead unit's, is no evidence either way). ``None`` when the model
    cannot run here (in float64, say). ``model`` is left as it was (copies run); torch's RNG too."""
    m32 = copy.deepcopy(model).float()
    try:
        m64 = copy.deepcopy(model).double()
    except Exception:  # a module that will not convert: nothing to say
        return None
    noise: dict[str, Tensor] = {}  # float32 noise on some batch
    real: dict[str, Tensor] = {}  # a real float32 gradient on some batch
    dev = _device(batches[0][0])
    cuda = [] if dev.type != "cuda" else [dev.index or torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        for x, y in batches:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            try:  # a check, never a reason to stop training: anything failing says nothing
                torch.manual_seed(seed)  # the same dropout masks in both passes
                g32 = _grads(m32, x, y, loss, call)
                torch.manual_seed(seed)
                g64 = _grads(m64, _to64(x), _to64(y), loss, call)
            except Exception:
                return None
            for n, g in g32.items():
                small = g64[n].abs() <= RATIO * g.double().abs()
                noise[n] = noise.get(n, False) | ((g != 0) & small)
                real[n] = real.get(n, False) | ((g != 0) & ~small)
    sizes = dict(model.named_parameters())
    flagged = {n: f & ~real[n] for n, f in noise.items()}
    return [
        ZeroGrad(
            n, int(f.sum()), sizes[n].numel(), where=tuple(f.flatten().nonzero()[:, 0].tolist())
        )
        for n, f in flagged.items()
        if bool(f.any())
    ]


def _device(x: object) -> torch.device:
    if isinstance(x, Tensor):
        return x.device
    items = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else ()
    return next((_device(v) for v in items), torch.device("cpu"))


def probe_batches(X: Tensor, y: Tensor, rows: int = PROBE_ROWS) -> list[tuple[Tensor, Tensor]]:
    """Two disjoint batches of training rows (one when there are fewer than 4 rows)."""
    n = len(y)
    b = max(2, min(rows, n // 2))
    if n < 4:
        return [(X, y)]
    return [(X[:b], y[:b]), (X[b : 2 * b], y[b : 2 * b])]


def engine_note(found: Sequence[ZeroGrad] | None) -> str:
    """What the engine text says about them ('' when there are none)."""
    if not found:
        return ""
    names = [f"{z.name} ({z.count} of {z.numel})" for z in found[:SHOWN]]
    more = f", … ({len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    return (
        "; gradients that are 0 in exact arithmetic come out as float32 rounding noise for "
        + ", ".join(names)
        + more
        + ": that noise depends on each kernel's summation order, so these runs do not "
        "reproduce bit for bit across batch sizes or machines (Adam-type optimizers turn it "
        "into lr-sized steps; a bias feeding a norm can be bias=False)"
    )


# -- structural -----------------------------------------------------------------------------

_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_NORMS = (*_PER_CHANNEL, nn.GroupNorm, nn.LayerNorm)


def removes_bias(norm: nn.Module, producer: nn.Module) -> bool:
    """Whether ``norm`` subtracts every per-channel constant of ``producer``'s output: a
    BatchNorm or InstanceNorm, a GroupNorm with one channel per group, a LayerNorm over a
    convolution's spatial axes only (a LayerNorm over a Linear's features, or a GroupNorm of
    several channels, removes only the bias's mean: the rest is a real parameter)."""
    if isinstance(norm, _PER_CHANNEL):
        return True
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups == norm.num_channels
    if isinstance(norm, nn.LayerNorm) and isinstance(producer, nn.modules.conv._ConvNd):
        return len(norm.normalized_shape) <= len(producer.kernel_size)
    return False


def redundant_biases(model: nn.Module) -> list[ZeroGrad]:
    """Every parameter found structurally whose exact gradient is 0: biases before a norm that
    removes them (:func:`biases_before_norms`), attention's key biases."""
    return biases_before_norms(model) + attention_key_biases(model)


def attention_key_biases(model: nn.Module) -> list[ZeroGrad]:
    """The key part of every ``MultiheadAttention``'s ``in_proj_bias`` (elements e..2e): the
    softmax over the keys ignores the constant ``q·b_k`` it adds to every score. (An appended
    ``bias_k`` key would break that invariance: such modules are left out.)"""
    found = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention) and mod.in_proj_bias is not None:
            e = mod.embed_dim
            why = "its key part (elements e..2e): the softmax over the keys ignores it"
            if mod.bias_k is None:
                found.append(ZeroGrad(_join(name, "in_proj_bias"), e, 3 * e, why))
    return found


def biases_before_norms(model: nn.Module) -> list[ZeroGrad]:
    """``Linear``/``Conv`` biases whose output goes only to a norm that subtracts every
    per-channel constant (:func:`removes_bias`), read from the ``torch.fx`` graph; none for a
    model ``torch.fx`` cannot trace (data-dependent control flow and the like)."""
    found = _bias_before_norm(model)
    return [ZeroGrad(z.name, z.count, z.count, z.why) for z in found]


def _bias_before_norm(model: nn.Module) -> list[ZeroGrad]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow and the like: no graph to read
        return []
    modules = dict(model.named_modules())
    calls: dict[str, list[str | None]] = {}  # each call of a layer: why its bias is lost there
    for node in graph.nodes:
        producer = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(producer, (nn.Linear, nn.modules.conv._ConvNd)) and producer.bias is not None:
            calls.setdefault(node.target, []).append(_lost_in(node, producer, modules))
    found = []
    for target, whys in calls.items():  # a layer called twice: lost only if lost in each call
        if all(whys):
            bias = modules[target].bias
            found.append(ZeroGrad(_join(target, "bias"), bias.numel(), 0, str(whys[0])))
    return found


def _lost_in(node: Any, producer: nn.Module, modules: dict[str, nn.Module]) -> str | None:
    """Why the bias of this call of ``producer`` is lost (its output feeds only a norm that
    subtracts it), or None."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    norm = modules.get(user.target) if user.op == "call_module" else None
    if isinstance(norm, _NORMS) and removes_bias(norm, producer):
        return f"it feeds only {type(norm).__name__} {user.target}, which subtracts it"
    return None


def _join(module: str, param: str) -> str:
    return f"{module}.{param}" if module else param
