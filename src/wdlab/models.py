"""Model specs: how to build one configuration's ``nn.Module`` and how to run K of them at once.

A spec builds an ordinary ``nn.Module`` (so initial weights are exactly PyTorch's) and knows a
batched forward over *stacked* parameters: every parameter gets a leading dimension K, one row
per configuration. Built-in specs (the article's MLP, a configurable MLP, linear) have a
hand-written batched forward whose first layer is one GEMM for all K configurations; any other
module (the CNN, a user's factory) runs through ``torch.func`` (:mod:`wdlab.func`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wdlab.cnn import CNN, GroupedCNN
from wdlab.func import FuncForward
from wdlab.loading import load_callable
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT, call_factory, factory_arguments
from wdlab.usercode import check_module as check_module  # the trainer's check of a built module

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": F.gelu,
}


class SeedMLP(nn.Module):
    """The article's model: Linear(dim, dim//2) → sigmoid → Linear(dim//2, 1) (→ sigmoid).

    The final sigmoid is folded into the loss (BCE on logits: the same maths, stable), so
    ``forward`` returns logits.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(dim, dim // 2)
        self.last_layer = nn.Linear(dim // 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (n, 1)."""
        return self.last_layer(torch.sigmoid(self.hidden_layer(x)))


class MLP(nn.Module):
    """A configurable MLP: Linear layers with an activation, optional LayerNorm after each."""

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        out_dim: int,
        activation: str = "relu",
        layernorm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        sizes = [in_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in hidden) if layernorm else None
        self.head = nn.Linear(sizes[-1], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs (logits or predictions) of shape (n, out_dim)."""
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = act(x)
        return self.head(x)


@dataclass(frozen=True)
class ModelKind:
    """One built-in kind of model: how to build and describe it, and, for the hand-batched
    kinds, the names of its first Linear layer and the stages after it (see
    :class:`BatchedForward`); ``batched`` builds a hand-batched forward of another shape
    (:class:`wdlab.cnn.GroupedCNN`). Other kinds run through ``torch.func`` under vmap."""

    name: str
    help: str
    build: Callable[[ModelSpec, int | None], nn.Module]  # (spec, seed): built-ins ignore the seed
    describe: Callable[[ModelSpec], str]
    first: Callable[[ModelSpec], tuple[str, str]] | None = None
    stages: Callable[[ModelSpec], list[tuple[str, str]]] = lambda spec: []
    batched: Callable[[nn.Module], object] | None = None

    @property
    def hand_backward(self) -> bool:
        """Whether this kind trains with a hand-written backward (no autograd graph): the
        hand-batched MLPs, and a ``batched`` forward that has its own (the grouped CNN)."""
        return self.first is not None or bool(getattr(self.batched, "manual_backward", False))


def _mlp_stages(spec: ModelSpec) -> list[tuple[str, str]]:
    stages: list[tuple[str, str]] = []
    for i in range(len(spec.hidden)):
        if i > 0:
            stages.append(("linear", f"layers.{i}"))
        if spec.layernorm:
            stages.append(("norm", f"norms.{i}"))
        stages.append(("act", spec.activation))
    return [*stages, ("head", "head")] if spec.hidden else []


def _mlp_sizes(spec: ModelSpec) -> str:
    return "-".join(map(str, (spec.in_dim, *spec.hidden, spec.out_dim)))


def _build_custom(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """The user's factory called the one way, from ``wdlab sweep --model`` and ``wdlab.sweep``
    alike: torch seeded with ``seed`` (0 for a template built without one), the seed and the
    sizes given by name where it asks for them (:func:`wdlab.usercode.factory_arguments`),
    within ``spec.factory_timeout``."""
    factory = resolve_factory(spec.factory)
    label = spec.factory if isinstance(spec.factory, str) else spec.label
    seed = 0 if seed is None else seed
    offered = {"seed": seed, "in_dim": spec.in_dim, "out_dim": spec.out_dim}
    args, kwargs = factory_arguments(factory, label, offered)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return call_factory(factory, label, args, kwargs, spec.factory_timeout)


_KINDS = [
    ModelKind(
        "seed-mlp",
        "the article's MLP: Linear(d, d/2), sigmoid, Linear(d/2, 1)",
        lambda spec, seed: SeedMLP(spec.in_dim),
        lambda spec: f"seed-mlp {spec.in_dim}-{spec.in_dim // 2}-1 sigmoid",
        first=lambda spec: ("hidden_layer.weight", "hidden_layer.bias"),
        stages=lambda spec: [("act", "sigmoid"), ("head", "last_layer")],
    ),
    ModelKind(
        "mlp",
        "Linear layers (--hidden 64,32) with an activation, optional LayerNorm",
        lambda spec, seed: MLP(
            spec.in_dim, spec.hidden, spec.out_dim, spec.activation, spec.layernorm
        ),
        lambda spec: (
            f"mlp {_mlp_sizes(spec)} {spec.activation}" + (" +layernorm" if spec.layernorm else "")
        ),
        first=lambda spec: (
            ("layers.0.weight", "layers.0.bias") if spec.hidden else ("head.weight", "head.bias")
        ),
        stages=_mlp_stages,
    ),
    ModelKind(
        "linear",
        "linear / logistic regression",
        lambda spec, seed: nn.Linear(spec.in_dim, spec.out_dim),
        lambda spec: f"linear {spec.in_dim}-{spec.out_dim}",
        first=lambda spec: ("weight", "bias"),
    ),
    ModelKind(
        "cnn",
        "a small CNN for signals or images (--hidden gives the channels; BatchNorm, Dropout)",
        lambda spec, seed: CNN(
            spec.in_shape or (1, spec.in_dim),
            spec.hidden,
            spec.out_dim,
            spec.batchnorm,
            spec.dropout,
        ),
        lambda spec: (
            f"cnn {'x'.join(map(str, spec.in_shape or (1, spec.in_dim)))}"
            f"-{'-'.join(map(str, spec.hidden or (16, 32)))}-{spec.out_dim}"
            + (" +batchnorm" if spec.batchnorm else "")
            + (f" +dropout {spec.dropout:g}" if spec.dropout else "")
        ),
        batched=GroupedCNN,
    ),
    ModelKind(
        "custom",
        "any nn.Module factory, given as module:function",
        _build_custom,
        lambda spec: f"custom {spec.label or spec.factory}",
    ),
]

#: Every model kind by name.
MODEL_KINDS: dict[str, ModelKind] = {k.name: k for k in _KINDS}


@dataclass(frozen=True)
class ModelSpec:
    """A model to train: ``kind`` is one of :data:`MODEL_KINDS`.

    ``in_dim``/``out_dim`` are filled from the data when left at 0; ``in_shape`` is one
    example's shape where inputs are not flat (signals, images). ``hidden`` gives the hidden
    sizes (the channels for ``cnn``); ``batchnorm`` and ``dropout`` apply to ``cnn``. For
    ``custom``, ``factory`` is a callable (or ``"module:function"``) returning an ``nn.Module``;
    it is called with ``seed``, ``in_dim`` and ``out_dim`` as keywords where it has parameters
    of those names (a single required parameter of another name gets the seed), and stopped
    after ``factory_timeout`` seconds (None: no limit); ``label`` names it in messages.
    """

    kind: str = "seed-mlp"
    in_dim: int = 0
    out_dim: int = 1
    hidden: tuple[int, ...] = ()
    activation: str = "sigmoid"
    layernorm: bool = False
    factory: Callable[..., nn.Module] | str | None = field(default=None, compare=False)
    batchnorm: bool = False
    dropout: float = 0.0
    in_shape: tuple[int, ...] = ()
    factory_timeout: float | None = field(default=DEFAULT_FACTORY_TIMEOUT, compare=False)
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.kind!r}; valid: {', '.join(MODEL_KINDS)}")
        if self.kind == "custom" and self.factory is None:
            raise ValueError("model 'custom' needs a factory (module:function)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def model_kind(self) -> ModelKind:
        """This spec's entry in :data:`MODEL_KINDS`."""
        return MODEL_KINDS[self.kind]

    def build(self, seed: int | None = None) -> nn.Module:
        """One freshly initialised ``nn.Module``: built-in kinds draw from torch's global RNG;
        a custom factory runs with torch seeded by ``seed`` (0 when ``None``) and is given it
        (see :func:`_build_custom`)."""
        return self.model_kind.build(self, seed)

    def describe(self) -> str:
        """A short human name, e.g. ``mlp 64-32-10 relu``."""
        return self.model_kind.describe(self)


def activations_per_example(model: nn.Module, example: Tensor) -> int:
    """How many activation values one example produces in a forward pass of ``model``: the
    outputs of every leaf module, counted with forward hooks (for memory estimates)."""
    total = 0

    def count(_m: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return max(1, total // max(1, len(example)))


def resolve_factory(factory: Callable[..., nn.Module] | str | None) -> Callable[..., nn.Module]:
    """Turn ``"module:function"`` or ``"file.py:function"`` into the function (callables pass
    through); a dotted module is importable from the current directory."""
    if callable(factory):
        return factory
    return load_callable(factory, "model factory ")


# ---------------------------------------------------------------------------------------------
# Batched forward over stacked parameters (leading dim K).


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


class Tape:
    """What a hand-written backward needs from its forward: one entry per stage."""

    def __init__(self) -> None:
        self.entries: list[tuple] = []
        self.x: Tensor | None = None  # the first layer's input


class BatchedForward:
    """Forward of K stacked copies of one architecture: ``(params, x) -> (K, n, out)``.

    Built-in specs split into :attr:`first` (the names of the first Linear layer, which sees
    the shared input) and :meth:`rest` (everything after its pre-activation), so the engine can
    compute that pre-activation another way (the exact Gram-matrix fast path). They also have a
    hand-written backward (:meth:`rest_backward`): the same kernels autograd would call, without
    autograd's per-node overhead and with in-place activations, checked against autograd in the
    tests. Custom models run through ``torch.func.functional_call`` under ``torch.vmap`` and
    autograd.
    """

    def __init__(self, spec: ModelSpec, template: nn.Module) -> None:
        self.spec = spec
        self.template = template
        kind = spec.model_kind
        self.first: tuple[str, str] | None = kind.first(spec) if kind.first else None
        self.func = None
        if self.first is None:
            self.func = kind.batched(template) if kind.batched else FuncForward(template)
        self.stages = kind.stages(spec)

    @property
    def manual_backward(self) -> bool:
        """Whether a hand-written backward exists (:attr:`ModelKind.hand_backward`):
        :meth:`rest_backward` (built-in MLPs) or the hand-batched kind's own
        (:meth:`wdlab.cnn.GroupedCNN.backward`)."""
        return self.spec.model_kind.hand_backward

    def __call__(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        buffers: dict[str, Tensor] | None = None,
        train: bool = True,
        tape: Tape | None = None,
    ) -> Tensor:
        """Outputs for every configuration; ``x`` is (n, …) shared by all K. ``buffers`` and
        ``train`` (the module's mode) matter for modules with BatchNorm or Dropout; a ``tape``
        (no autograd) keeps what :meth:`backward` needs."""
        if self.func is None:
            w, b = self.first
            return self.rest(params, _linear(x, params[w], params.get(b), True))
        if tape is None:
            return self.func(params, buffers or {}, x, train)
        return self.func.forward(params, buffers or {}, x, train, tape.entries)

    def backward(self, params: dict[str, Tensor], tape: Tape, dout: Tensor) -> dict[str, Tensor]:
        """Every parameter's gradient from d(Σ loss)/d(outputs), by the hand-written backward
        (:attr:`manual_backward`), from the ``tape`` of a forward."""
        if self.func is not None:
            return self.func.backward(params, tape.entries, dout)
        grads, dz = self.rest_backward(params, tape, dout)
        w, b = self.first
        x = tape.x
        grads[w] = torch.bmm(dz.transpose(1, 2), x.expand(len(dz), *x.shape))
        if b in params:
            grads[b] = dz.sum(1)
        return grads

    def rest(self, params: dict[str, Tensor], z: Tensor, tape: Tape | None = None) -> Tensor:
        """From the first layer's pre-activation z (K, n, h) to the outputs (K, n, out).

        With a ``tape`` (no autograd), activations run in place and what
        :meth:`rest_backward` needs is kept on it.
        """
        h = z
        for kind, name in self.stages:
            if kind == "linear":
                x = h
                h = _linear(x, params[f"{name}.weight"], params[f"{name}.bias"], False)
                if tape is not None:
                    tape.entries.append((x,))
            elif kind == "norm":
                eps = self.template.get_submodule(name).eps
                normed, mean, rstd = torch.native_layer_norm(h, h.shape[-1:], None, None, eps)
                if tape is not None:
                    tape.entries.append((h, normed, mean, rstd))
                w, b = params[f"{name}.weight"], params[f"{name}.bias"]
                h = torch.addcmul(b.unsqueeze(1), normed, w.unsqueeze(1))
            elif kind == "act":
                if tape is None:
                    h = ACTIVATIONS[name](h)
                else:
                    pre = h if name == "gelu" else None
                    h = _ACT_INPLACE[name](h) if name in _ACT_INPLACE else ACTIVATIONS[name](h)
                    tape.entries.append((h, pre))
            else:  # head
                x = h
                h = _head(x, params[f"{name}.weight"], params[f"{name}.bias"])
                if tape is not None:
                    tape.entries.append((x,))
        return h

    def rest_backward(
        self, params: dict[str, Tensor], tape: Tape, dout: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Gradients of :meth:`rest`'s parameters and of z, from d(Σ loss)/d(outputs)."""
        grads: dict[str, Tensor] = {}
        g = dout
        for (kind, name), saved in zip(reversed(self.stages), reversed(tape.entries), strict=True):
            if kind == "head":
                (x,) = saved
                gt = g.transpose(1, 2)  # (K, out, n)
                grads[f"{name}.weight"] = torch.bmm(gt, x)
                grads[f"{name}.bias"] = gt.sum(2)
                g = torch.bmm(g, params[f"{name}.weight"])
            elif kind == "act":
                out, pre = saved
                g = _ACT_BACKWARD[name](g, out, pre)
            elif kind == "norm":
                z, normed, mean, rstd = saved
                grads[f"{name}.weight"] = (g * normed).sum(1)
                grads[f"{name}.bias"] = g.sum(1)
                g = torch.ops.aten.native_layer_norm_backward(
                    g * params[f"{name}.weight"].unsqueeze(1),
                    z,
                    z.shape[-1:],
                    mean,
                    rstd,
                    None,
                    None,
                    [True, False, False],
                )[0]
            else:  # linear
                (x,) = saved
                grads[f"{name}.weight"] = torch.bmm(g.transpose(1, 2), x)
                grads[f"{name}.bias"] = g.sum(1)
                g = torch.bmm(g, params[f"{name}.weight"])
        return grads, g
