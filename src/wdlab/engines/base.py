"""The engine protocol: how K configurations' weights are held and run.

Every parameter is stacked with a leading dimension K (one row per configuration). An engine
holds those rows as the tensors the optimizer steps (:attr:`Engine.tensors`), runs the forward
(and, where the model kind has one, the hand-written backward) of all K at once, records the
weights' norm, and gives one configuration's weights back. The trainer knows nothing else of
it. Each model kind has one engine (:attr:`wdlab.models.ModelKind.engine`):

* :class:`wdlab.engines.mlp.MLPEngine`: the built-in MLPs, hand-batched, weights held directly,
  or :class:`wdlab.engines.gram.GramEngine` where the exact Gram fast path applies;
* :class:`wdlab.engines.grouped.GroupedCNNEngine`: the built-in CNN, hand-batched;
* :class:`wdlab.engines.torchfunc.FuncEngine`: any module, through ``torch.func`` under vmap
  (or one configuration after another where vmap cannot run it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from wdlab.decay import Mode
from wdlab.func import with_ties
from wdlab.inputs import Inputs, rows, take
from wdlab.optimizers import OptimizerSpec

EVAL_CHUNK = 256  # rows per evaluation forward of a model run through torch.func or grouped


class Tape:
    """What a hand-written backward needs from its forward: one entry per stage."""

    def __init__(self) -> None:
        self.entries: list = []
        self.x: Tensor | None = None  # the first layer's input


@dataclass(frozen=True)
class Setup:
    """What an engine is built from: the template module and its stacked parameters and
        buffers (row k: configuration k), the inputs of every split, and what decides the engine's
        form (the optimizer and the decay modes, full batches or not, whether the weights must be
        read every step, ``fast_path`` asked or refused, and for the built-in MLPs their
        :class:`~wdlab.engines.mlp.Layout`). ``probe`` runs one configuration's loss on outputs, to
        find out whether torch.vmap runs the model. Streamed data hold no split in memory: ``X`` is
    then a sample of training rows (for the probes), ``eval_X`` empty, and every forward is given
    its batch (``x=``)."""

    template: nn.Module
    stacked: dict[str, Tensor]
    X: Inputs
    eval_X: dict[str, Inputs] = field(default_factory=dict)
    buffers: dict[str, Tensor] = field(default_factory=dict)
    optimizer: OptimizerSpec | None = None
    modes: Sequence[Mode] = ()
    full_batch: bool = True
    reads_weights: bool = False
    fast_path: bool | None = None
    layout: object = None
    probe: Callable[[Tensor, Tensor], Tensor] | None = None
    ties: dict[str, str] = field(default_factory=dict)  # alias -> first name: func.tied_names
    parallel: int = 1  # configurations side by side where they run one after another
    channels_last: bool = False  # 4-D float inputs in torch.channels_last (a user's module)
    frozen: frozenset[str] = frozenset()  # the template's requires_grad=False: never trained
    autocast: bool = False  # forward passes under bfloat16 autocast (precision="bf16")


def fast_path_choice(setup: Setup, found: tuple[bool, str]) -> tuple[bool, str]:
    """Whether to take the exact Gram fast path, and why (not), from ``found`` (whether it
    applies to the model, optimizer and modes): not for mini-batches, where the weights must
    be read every step, nor under bf16 autocast (a plain loop rounds X·Wᵀ with W itself in
    bfloat16; the fast path never forms W); ``fast_path=True`` insists (``ValueError`` saying
    why not)."""
    applies, why = found
    if not setup.full_batch:
        applies, why = False, "mini-batches"
    if setup.autocast and applies:
        applies, why = False, "the fast path is exact in float32, not under bf16"
    if setup.reads_weights:
        applies, why = False, "diagnostics or gradient clipping need the weights themselves"
    if setup.fast_path and not applies:
        raise ValueError(f"the fast path does not apply: {why}")
    return (applies if setup.fast_path is None else bool(setup.fast_path)), why


def rowdot(x: Tensor, y: Tensor, out: Tensor) -> None:
    """Row-wise dot products of two (K, m) tensors into ``out`` (K,) (a BLAS dot for one row)."""
    if x.shape[0] == 1:
        torch.dot(x[0], y[0], out=out[0])
    else:
        torch.linalg.vecdot(x, y, out=out)


class NormProbe(Protocol):
    """Σ‖w‖² of some model parameters, recorded as a few (K,) parts every epoch (a few
    kernels) and combined for all epochs at once at the end."""

    parts: int

    def write(self, out: Tensor) -> None: ...
    def combine(self, parts: Tensor) -> Tensor: ...


class DirectNorm:
    """One part: the parameters' flattened rows side by side, dotted with themselves."""

    def __init__(self, tensors: dict[str, Tensor], names: Sequence[str]) -> None:
        self.names = list(names)
        self.tensors = tensors
        self.parts = 1 if self.names else 0

    def write(self, out: Tensor) -> None:
        """This epoch's parts into ``out`` (parts, K)."""
        if not self.names:
            return
        k = len(next(iter(self.tensors.values())))
        flats = [self.tensors[n].detach().reshape(k, -1) for n in self.names]
        flat = flats[0] if len(flats) == 1 else torch.cat(flats, 1)
        rowdot(flat, flat, out[0])

    def combine(self, parts: Tensor) -> Tensor:
        """Σ‖w‖² from recorded parts: (..., parts, K) → (..., K)."""
        return parts.sum(-2)


class Engine(Protocol):
    """What the trainer uses of an engine (see the module docstring)."""

    hand_backward: ClassVar[bool]  # gradients by a hand-written backward (no autograd graph)
    one_at_a_time: bool  # a step's forward and backward run one configuration at a time
    lanes: int  # configurations run side by side (wdlab.sidebyside)
    channels_last: bool  # 4-D float inputs given to the model in channels_last
    takes_channels_last: bool  # a user's module, which may take them so
    flat_inputs: ClassVar[bool]  # reads signals and images flat
    float_inputs: ClassVar[bool]  # reads one floating tensor (built-in kinds: ints are cast)
    eval_chunk: ClassVar[int | None]  # rows per evaluation forward (None: all at once)
    tensors: dict[str, Tensor]  # the stacked leaves the optimizer steps
    buffers: dict[str, Tensor]  # stacked too: BatchNorm's running statistics
    note: str  # how it runs, in words (RunResult.engine)
    eval_pass: bool  # train and eval modes differ: the train split needs a pass of its own
    by_gradient: frozenset[str]  # tensors whose l2 term is applied as its gradient, always

    @classmethod
    def shares_activations(cls, template: nn.Module, device: torch.device) -> bool: ...
    def parameter(self, name: str) -> str: ...
    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        train: bool = True,
        x: Inputs | None = None,
    ) -> Tensor: ...
    def forward_tape(
        self, idx: Tensor | None = None, x: Inputs | None = None
    ) -> tuple[Tensor, Tape]: ...
    def backward(self, tape: Tape, dout: Tensor) -> None: ...
    def backward_loss(self, total: Tensor) -> None: ...
    def norm_probe(self, names: Sequence[str]) -> NormProbe: ...
    def weights(self, row: int) -> dict[str, Tensor]: ...
    def state(self) -> dict[str, Tensor]: ...
    def load_state(self, state: Mapping[str, Tensor]) -> None: ...
    def keep(self, rows: Tensor) -> None: ...
    def __len__(self) -> int: ...


def _own(t: Tensor, like: Tensor) -> Tensor:
    """``t`` as a tensor of its own (contiguous, not shared) on ``like``'s device and dtype."""
    return (
        t.detach()
        .to(device=like.device, dtype=like.dtype)
        .clone(memory_format=torch.contiguous_format)
    )


class Stacked:
    """The common part of every engine: each parameter one leaf tensor (K, *shape), the
    buffers stacked beside them; a subclass runs the forward (:meth:`_run`)."""

    hand_backward: ClassVar[bool] = False
    one_at_a_time: bool = False  # a training step backs up each configuration in turn
    lanes: int = 1  # configurations run side by side (wdlab.sidebyside)
    channels_last: bool = False  # 4-D float inputs given to the model in channels_last
    takes_channels_last: ClassVar[bool] = False  # a user's module, which may take them so
    flat_inputs: ClassVar[bool] = False
    float_inputs: ClassVar[bool] = False
    eval_chunk: ClassVar[int | None] = EVAL_CHUNK

    def __init__(self, setup: Setup) -> None:
        frozen = setup.frozen  # requires_grad=False in the template: no gradient, no step
        self.tensors = {n: t.requires_grad_(n not in frozen) for n, t in setup.stacked.items()}
        self.buffers = setup.buffers
        self.X, self.eval_X = setup.X, setup.eval_X
        self.ties = setup.ties  # a tied tensor is stacked once, under its first name
        self.note = ""
        self.eval_pass = False
        self.by_gradient: frozenset[str] = frozenset()

    @classmethod
    def build(cls, setup: Setup) -> Engine:
        """The engine for ``setup`` (the Gram fast path is for the built-in MLPs only)."""
        fast_path_choice(setup, (False, "custom model: first layer unknown"))
        return cls(setup)

    @classmethod
    def shares_activations(cls, template: nn.Module, device: torch.device) -> bool:
        """Whether a batch of ``template`` on ``device`` trains one configuration at a time,
        holding one configuration's activations whatever its size (here: never)."""
        return False

    def parameter(self, name: str) -> str:
        """The model parameter a stacked tensor stands for (here: itself)."""
        return name

    def inputs(self, split: str, idx: Tensor | None = None, x: Inputs | None = None) -> Inputs:
        """A split's inputs (``idx``: some rows of the training split), or the batch ``x``
        when one is given (streamed data)."""
        if x is not None:
            return x
        if split != "train":
            return self.eval_X[split]
        return self.X if idx is None else take(self.X, idx)

    def _run(self, x: Inputs, train: bool) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        train: bool = True,
        x: Inputs | None = None,
    ) -> Tensor:
        """Outputs (K, n, out) on a split, or on the batch ``x``; ``train`` the module's mode.
        Evaluation runs in chunks of rows: the same outputs (eval mode is per example), with
        activations small enough to stay in cache (and in memory, for large splits)."""
        x = self.inputs(split, idx, x)
        chunk, n = self.eval_chunk, rows(x)
        if train or chunk is None or n <= chunk:
            return self._run(x, train)
        chunks = [take(x, slice(i, i + chunk)) for i in range(0, n, chunk)]
        return torch.cat([self._run(c, False) for c in chunks], 1)

    def forward_tape(
        self, idx: Tensor | None = None, x: Inputs | None = None
    ) -> tuple[Tensor, Tape]:
        """The training outputs and a tape for :meth:`backward` (hand-backward engines)."""
        raise NotImplementedError(f"{type(self).__name__} has no hand-written backward")

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Every tensor's ``.grad`` from d(Σ loss)/d(outputs) (hand-backward engines)."""
        raise NotImplementedError(f"{type(self).__name__} has no hand-written backward")

    def backward_loss(self, total: Tensor) -> None:
        """Every tensor's ``.grad`` of ``total`` through autograd."""
        for t in self.tensors.values():
            t.grad = None
        total.backward()

    def norm_probe(self, names: Sequence[str]) -> NormProbe:
        """A :class:`NormProbe` for the named model parameters."""
        return DirectNorm(self.tensors, names)

    def weights(self, row: int) -> dict[str, Tensor]:
        """One configuration's weights and buffers (a state dict), by name."""
        state = {**self.tensors, **self.buffers}
        return with_ties({n: t.detach()[row].cpu().clone() for n, t in state.items()}, self.ties)

    # -- the rows: the batch's state, and dropping rows from it -------------------------------

    def state(self) -> dict[str, Tensor]:
        """Every tensor the engine holds row by row (row k: its k-th configuration), by key:
        ``param.<name>``, ``buffer.<name>``, and what a subclass derives from the initial
        weights. Shares memory with the engine: valid until the next step."""
        out = {f"param.{n}": t.detach() for n, t in self.tensors.items()}
        return out | {f"buffer.{n}": t for n, t in self.buffers.items()}

    def load_state(self, state: Mapping[str, Tensor]) -> None:
        """Hold the rows of ``state`` (the keys of :meth:`state`, any number of rows) in place
        of the current ones. The dicts :attr:`tensors` and :attr:`buffers` are updated in
        place (new leaves under the same names)."""
        for n, t in self.tensors.items():
            self.tensors[n] = _own(state[f"param.{n}"], t).requires_grad_(t.requires_grad)
        for n, t in self.buffers.items():
            self.buffers[n] = _own(state[f"buffer.{n}"], t)

    def keep(self, rows: Tensor) -> None:
        """Keep only ``rows`` (positions of the current rows, ascending): every later step
        computes those alone, their values unchanged."""
        self.load_state({k: v.index_select(0, rows.to(v.device)) for k, v in self.state().items()})

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]
