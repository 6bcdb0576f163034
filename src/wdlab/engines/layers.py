"""The built-in MLPs' layers, K stacked copies at once, forward and hand-written backward.

The built-in kinds (the article's MLP, a configurable MLP, linear) split into their first
Linear layer, which sees the input shared by all K (one GEMM for all), and the stages after
its pre-activation (:class:`Linear`, :class:`Norm`, :class:`Act`, :class:`Head`), each with its
forward and its hand-written backward: the kernels autograd would call, without autograd's
per-node overhead and with in-place activations, checked against autograd in the tests.
:class:`wdlab.engines.mlp.MLPEngine` computes the first layer directly,
:class:`wdlab.engines.gram.GramEngine` through the Gram matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdlab.engines.base import Tape

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": F.gelu,
}

_aten = torch.ops.aten
_ACT_BACKWARD: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    # (grad of the output, the output, the input) -> grad of the input, written over the grad
    # of the output (always a fresh tensor here): no new allocation
    "relu": lambda g, out, z: _aten.threshold_backward.grad_input(g, out, 0, grad_input=g),
    "sigmoid": lambda g, out, z: _aten.sigmoid_backward.grad_input(g, out, grad_input=g),
    "tanh": lambda g, out, z: _aten.tanh_backward.grad_input(g, out, grad_input=g),
    "gelu": lambda g, out, z: _aten.gelu_backward.grad_input(g, z, grad_input=g),
}
_ACT_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_,
    "sigmoid": torch.sigmoid_,
    "tanh": torch.tanh_,
}


def _linear(x: Tensor, w: Tensor, b: Tensor | None, shared: bool) -> Tensor:
    """K linear layers: x is (K, n, in), or (n, in) shared by all K when ``shared``.

    One batched GEMM with a contiguous (K, n, out) result: element-wise work after it (the
    activation and its backward) runs on contiguous memory, several times faster than on the
    transposed view a single wide (n, K·out) GEMM would give.

    Batched rows agree with a configuration trained alone to float rounding, not bitwise:
    CPU kernels compute the last few elements of a tensor (and of each thread's chunk) on a
    scalar path whose rounding differs from the vector path, so a row's exact bits depend on
    where it sits. Where bitwise identity is the point (the demo), train configurations apart.
    """
    k = w.shape[0]
    if shared:
        x = x.expand(k, *x.shape)
    wt = w.transpose(1, 2)
    if b is not None:
        return torch.baddbmm(b.unsqueeze(1), x, wt)
    return torch.bmm(x, wt)


def _head(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The last layer of K configurations, computed as (K, out, n) and returned as a
    (K, n, out) view: per-configuration softmax/cross-entropy then reduces over a dimension
    that is not the innermost, which CPU kernels run ~8x faster for few classes, and the
    gradient flowing back into x comes out contiguous."""
    return torch.baddbmm(b.unsqueeze(2), w, x.transpose(1, 2)).transpose(1, 2)


Params = dict[str, Tensor]


@dataclass(frozen=True)
class Linear:
    """A hidden Linear layer ``name`` after the first."""

    name: str

    def forward(self, params: Params, h: Tensor, tape: Tape | None) -> Tensor:
        """(K, n, in) → (K, n, out)."""
        out = _linear(h, params[f"{self.name}.weight"], params[f"{self.name}.bias"], False)
        if tape is not None:
            tape.entries.append((h,))
        return out

    def backward(self, params: Params, saved: tuple, g: Tensor, grads: Params) -> Tensor:
        """The layer's gradients into ``grads``; the gradient of its input."""
        (x,) = saved
        grads[f"{self.name}.weight"] = torch.bmm(g.transpose(1, 2), x)
        grads[f"{self.name}.bias"] = g.sum(1)
        return torch.bmm(g, params[f"{self.name}.weight"])


@dataclass(frozen=True)
class Norm:
    """A LayerNorm ``name`` (its ``eps`` read from the template, :meth:`bind`)."""

    name: str
    eps: float = 1e-5

    def bind(self, template: nn.Module) -> Norm:
        """This stage with the template's eps."""
        return replace(self, eps=template.get_submodule(self.name).eps)

    def forward(self, params: Params, h: Tensor, tape: Tape | None) -> Tensor:
        """Normalised over the last dimension, then scaled and shifted."""
        normed, mean, rstd = torch.native_layer_norm(h, h.shape[-1:], None, None, self.eps)
        if tape is not None:
            tape.entries.append((h, normed, mean, rstd))
        w, b = params[f"{self.name}.weight"], params[f"{self.name}.bias"]
        return torch.addcmul(b.unsqueeze(1), normed, w.unsqueeze(1))

    def backward(self, params: Params, saved: tuple, g: Tensor, grads: Params) -> Tensor:
        """The gain's and shift's gradients; the gradient of the input."""
        z, normed, mean, rstd = saved
        grads[f"{self.name}.weight"] = (g * normed).sum(1)
        grads[f"{self.name}.bias"] = g.sum(1)
        return torch.ops.aten.native_layer_norm_backward(
            g * params[f"{self.name}.weight"].unsqueeze(1),
            z,
            z.shape[-1:],
            mean,
            rstd,
            None,
            None,
            [True, False, False],
        )[0]


@dataclass(frozen=True)
class Act:
    """An activation of :data:`ACTIVATIONS` (in place when taped)."""

    name: str

    def forward(self, params: Params, h: Tensor, tape: Tape | None) -> Tensor:
        """The activation of ``h``."""
        if tape is None:
            return ACTIVATIONS[self.name](h)
        pre = h if self.name == "gelu" else None  # gelu's backward reads its input
        inplace = _ACT_INPLACE.get(self.name)
        out = inplace(h) if inplace is not None else ACTIVATIONS[self.name](h)
        tape.entries.append((out, pre))
        return out

    def backward(self, params: Params, saved: tuple, g: Tensor, grads: Params) -> Tensor:
        """The gradient of the input (written over ``g``)."""
        out, pre = saved
        return _ACT_BACKWARD[self.name](g, out, pre)


@dataclass(frozen=True)
class Head:
    """The output layer ``name`` (see :func:`_head`)."""

    name: str

    def forward(self, params: Params, h: Tensor, tape: Tape | None) -> Tensor:
        """(K, n, in) → (K, n, out)."""
        out = _head(h, params[f"{self.name}.weight"], params[f"{self.name}.bias"])
        if tape is not None:
            tape.entries.append((h,))
        return out

    def backward(self, params: Params, saved: tuple, g: Tensor, grads: Params) -> Tensor:
        """The layer's gradients into ``grads``; the gradient of its input."""
        (x,) = saved
        gt = g.transpose(1, 2)  # (K, out, n)
        grads[f"{self.name}.weight"] = torch.bmm(gt, x)
        grads[f"{self.name}.bias"] = gt.sum(2)
        return torch.bmm(g, params[f"{self.name}.weight"])


Stage = Linear | Norm | Act | Head


@dataclass(frozen=True)
class Layout:
    """A hand-batched MLP: the names of its first Linear layer (weight, bias) and the stages
    after that layer's pre-activation."""

    first: tuple[str, str]
    stages: tuple[Stage, ...] = ()

    def bind(self, template: nn.Module) -> Layout:
        """The layout with what the stages read from the template (LayerNorm's eps)."""
        stages = tuple(s.bind(template) if isinstance(s, Norm) else s for s in self.stages)
        return replace(self, stages=stages)


def rest(stages: Sequence[Stage], params: Params, z: Tensor, tape: Tape | None = None) -> Tensor:
    """From the first layer's pre-activation z (K, n, h) to the outputs (K, n, out); with a
    ``tape`` (no autograd), activations run in place and each stage keeps what its backward
    needs."""
    for stage in stages:
        z = stage.forward(params, z, tape)
    return z


def rest_backward(
    stages: Sequence[Stage], params: Params, tape: Tape, dout: Tensor
) -> tuple[Params, Tensor]:
    """Gradients of :func:`rest`'s parameters and of z, from d(Σ loss)/d(outputs)."""
    grads: Params = {}
    g = dout
    for stage, saved in zip(reversed(stages), reversed(tape.entries), strict=True):
        g = stage.backward(params, saved, g, grads)
    return grads, g
