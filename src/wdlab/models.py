"""Model specs: how to build one configuration's ``nn.Module``, and which engine runs K of them.

A spec builds an ordinary ``nn.Module`` (so initial weights are exactly PyTorch's). Its kind
(:data:`MODEL_KINDS`) names the engine that trains K configurations at once over *stacked*
parameters (every parameter with a leading dimension K, one row per configuration,
:mod:`wdlab.engines`): the built-in MLPs have a hand-written batched forward and backward whose
first layer is one GEMM for all K, the CNN a grouped one, and any other module (a user's
factory) runs through ``torch.func``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from wdlab.cnn import CNN
from wdlab.engines import (
    ACTIVATIONS,
    Act,
    Engine,
    FuncEngine,
    GroupedCNNEngine,
    Head,
    Layout,
    Linear,
    MLPEngine,
    Norm,
    Setup,
)
from wdlab.inputs import Inputs, call, rows
from wdlab.loading import load_callable
from wdlab.usercode import (
    DEFAULT_FACTORY_TIMEOUT,
    call_factory,
    check_seeds_differ,
    factory_arguments,
)
from wdlab.usercode import check_module as check_module  # the trainer's check of a built module


class SeedMLP(nn.Module):
    """The article's model: Linear(dim, dim//2) → sigmoid → Linear(dim//2, 1) (→ sigmoid).

    The final sigmoid is folded into the loss (BCE on logits: the same maths, stable), so
    ``forward`` returns logits. ``out_dim`` widens the last layer for data of more classes or
    targets (the article's binary task has 1).
    """

    def __init__(self, dim: int, out_dim: int = 1) -> None:
        super().__init__()
        self.hidden_layer = nn.Linear(dim, dim // 2)
        self.last_layer = nn.Linear(dim // 2, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (n, out_dim)."""
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
    """One built-in kind of model: how to build and describe it, and the engine that trains K
    of them at once (:mod:`wdlab.engines`); for the hand-batched MLPs, their ``layout`` (the
    first Linear layer and the stages after it)."""

    name: str
    help: str
    build: Callable[[ModelSpec, int | None], nn.Module]  # (spec, seed): built-ins ignore the seed
    describe: Callable[[ModelSpec], str]
    engine: type[Engine] = FuncEngine
    layout: Callable[[ModelSpec], Layout] | None = None
    options: tuple[str, ...] = ()  # the :data:`MODEL_OPTIONS` this kind reads

    @property
    def hand_backward(self) -> bool:
        """Whether this kind trains with a hand-written backward (no autograd graph)."""
        return self.engine.hand_backward

    def make_engine(self, spec: ModelSpec, setup: Setup) -> Engine:
        """This kind's engine over ``setup``'s stacked weights."""
        if self.layout is not None:
            setup = replace(setup, layout=self.layout(spec))
        return self.engine.build(setup)


def _mlp_layout(spec: ModelSpec) -> Layout:
    first = ("layers.0.weight", "layers.0.bias") if spec.hidden else ("head.weight", "head.bias")
    stages: list = []
    for i in range(len(spec.hidden)):
        if i > 0:
            stages.append(Linear(f"layers.{i}"))
        if spec.layernorm:
            stages.append(Norm(f"norms.{i}"))
        stages.append(Act(spec.activation))
    return Layout(first, (*stages, Head("head")) if spec.hidden else ())


def _mlp_sizes(spec: ModelSpec) -> str:
    return "-".join(map(str, (spec.in_dim, *spec.hidden, spec.out_dim)))


def _build_custom(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """The user's factory called the one way, from ``wdlab sweep --model`` and ``wdlab.sweep``
    alike: torch seeded with ``seed`` (0 for a template built without one), the seed and the
    sizes given by name where it asks for them (:func:`wdlab.usercode.factory_arguments`),
    within ``spec.factory_timeout``."""
    factory = resolve_factory(spec.factory)
    label = spec.factory_label
    seed = 0 if seed is None else seed
    sizes = {"in_dim": spec.in_dim, "out_dim": spec.out_dim}
    offered = {"seed": seed} | {k: v for k, v in sizes.items() if v}  # 0: not known, not offered
    args, kwargs = factory_arguments(factory, label, offered)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return call_factory(factory, label, args, kwargs, spec.factory_timeout)


_KINDS = [
    ModelKind(
        "seed-mlp",
        "the article's MLP: Linear(d, d/2), sigmoid, Linear(d/2, outputs)",
        lambda spec, seed: SeedMLP(spec.in_dim, spec.out_dim),
        lambda spec: f"seed-mlp {spec.in_dim}-{spec.in_dim // 2}-{spec.out_dim} sigmoid",
        MLPEngine,
        lambda spec: Layout(
            ("hidden_layer.weight", "hidden_layer.bias"), (Act("sigmoid"), Head("last_layer"))
        ),
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
        MLPEngine,
        _mlp_layout,
        ("hidden", "activation", "layernorm"),
    ),
    ModelKind(
        "linear",
        "linear / logistic regression",
        lambda spec, seed: nn.Linear(spec.in_dim, spec.out_dim),
        lambda spec: f"linear {spec.in_dim}-{spec.out_dim}",
        MLPEngine,
        lambda spec: Layout(("weight", "bias")),
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
        GroupedCNNEngine,
        options=("hidden", "batchnorm", "dropout"),
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

#: The sizes and switches of the built-in kinds; each kind reads those in its ``options``.
MODEL_OPTIONS = ("hidden", "activation", "layernorm", "batchnorm", "dropout")


def unread_options(
    kind: str, values: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """One line per option of :data:`MODEL_OPTIONS` set away from its default (``values``
    against ``defaults``, each named ``prefix`` + option) that ``kind`` does not read: the
    model is built without it (a warning; the same file with another ``--model`` still runs,
    and a study made with it still resumes)."""
    takes = MODEL_KINDS[kind].options

    def same(a: Any, b: Any) -> bool:
        return (tuple(a) == tuple(b)) if isinstance(a, (list, tuple)) else a == b

    whose = "a model factory's" if kind == "custom" else f"the {kind} model's"
    return [
        f"{prefix}{name} is not one of {whose} options ({', '.join(takes) or 'it has none'}): "
        "ignored"
        for name in MODEL_OPTIONS
        if name not in takes and name in values and not same(values[name], defaults[name])
    ]


def factory_kind(values: dict[str, Any], kind_given: bool) -> list[str]:
    """A ``[model]`` section's kind and factory made one (``values`` updated): ``kind =
    "file.py:make"`` is kind ``custom`` with that factory, and so is a factory given with no
    kind; a factory beside a built-in kind the section names is not read (one warning line
    returned). ``ValueError`` for kind ``custom`` without a factory."""
    kind, factory = values["kind"], values["factory"]
    if ":" in kind:
        values["kind"], values["factory"] = "custom", kind
    elif factory and kind != "custom" and not kind_given:
        values["kind"] = "custom"  # the factory names the model
    elif factory and kind != "custom":
        return [
            f"model.factory {factory!r} is not read: kind {kind!r} is a built-in model (leave "
            "kind out, or set it to 'custom', to train the factory's model): ignored"
        ]
    if values["kind"] == "custom" and not values["factory"]:
        raise ValueError("model.factory: model kind 'custom' needs factory = 'module:function'")
    return []


def kind_options(kind: str, source: object) -> dict[str, Any]:
    """The options ``kind`` reads, from ``source``'s attributes (a ``[model]`` section): a
    ModelSpec's keywords."""
    out = {k: getattr(source, k) for k in MODEL_KINDS[kind].options}
    return out | ({"hidden": tuple(out["hidden"])} if "hidden" in out else {})


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

    @property
    def factory_label(self) -> str:
        """The factory as messages name it: its ``file.py:make`` text, or :attr:`label`."""
        return self.factory if isinstance(self.factory, str) else self.label

    def check_seeds(self, first: nn.Module, seeds: Sequence[int]) -> None:
        """A user's factory built at the first two of ``seeds`` (``first``: the first's build)
        that gives the same initial weights for both is refused in one line (the seeds would
        repeat one run: :func:`wdlab.usercode.check_seeds_differ`); built-in kinds pass."""
        if self.kind == "custom" and len(seeds) > 1:
            check_seeds_differ(first, self.build(seeds[1]), seeds[:2], self.factory_label)


def activations_per_example(model: nn.Module, example: Inputs) -> int:
    """How many activation values one example produces in a forward pass of ``model`` (on
    ``example``: a tensor, or a tuple or dict of them): the outputs of every leaf module,
    counted with forward hooks (for memory estimates), in eval mode (a BatchNorm1d cannot take
    one example in training mode; the shapes are the same)."""
    total = 0

    def count(_m: nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was = model.training
    try:
        with torch.no_grad():
            call(model.eval(), example)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return max(1, total // max(1, rows(example)))


def resolve_factory(factory: Callable[..., nn.Module] | str | None) -> Callable[..., nn.Module]:
    """Turn ``"module:function"`` or ``"file.py:function"`` into the function (callables pass
    through); a dotted module is importable from the current directory."""
    if callable(factory):
        return factory
    return load_callable(factory, "model factory ")
