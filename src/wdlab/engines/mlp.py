"""The hand-batched MLP engine: the built-in MLPs (:mod:`.layers`), every parameter held
directly, or through the exact Gram fast path (:mod:`.gram`) where it applies."""

from __future__ import annotations

import torch
from torch import Tensor

from wdlab.engines.base import Engine, Setup, Stacked, Tape, fast_path_choice
from wdlab.engines.gram import GramEngine, gram_applies
from wdlab.engines.layers import _linear, rest, rest_backward


class MLPEngine(Stacked):
    """A built-in MLP, every parameter held directly (a leaf (K, *shape))."""

    hand_backward = True
    flat_inputs = True
    float_inputs = True
    eval_chunk = None

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        assert setup.layout is not None, "a hand-batched MLP needs its layout"
        self.layout = setup.layout.bind(setup.template)
        self._x1: dict[str, Tensor] = {}  # x with a column of ones, per split

    @classmethod
    def build(cls, setup: Setup) -> Engine:
        """The exact Gram fast path where it applies (:mod:`wdlab.engines.gram`), else this."""
        found = gram_applies(setup)
        use, why = fast_path_choice(setup, found)
        if use:
            return GramEngine(setup, why)
        engine = cls(setup)
        said = not found[0] or (setup.autocast and setup.fast_path is None)
        engine.note = "standard path" + (f" ({why})" if said else "")
        return engine

    def forward(
        self,
        split: str = "train",
        idx: Tensor | None = None,
        train: bool = True,
        x: Tensor | None = None,
    ) -> Tensor:
        """Outputs (K, n, out) on a split (``idx``: a mini-batch of the training rows), or on
        the batch ``x`` (streamed data)."""
        z = self._first(split, idx, self.inputs(split, idx, x), x is not None)
        return rest(self.layout.stages, self.tensors, z)

    def forward_tape(
        self, idx: Tensor | None = None, x: Tensor | None = None
    ) -> tuple[Tensor, Tape]:
        """The training outputs, and the tape :meth:`backward` needs (call under no_grad)."""
        tape = Tape()
        given = x is not None
        tape.x = x = self.inputs("train", idx, x)
        z = self._first("train", idx, x, given)
        return rest(self.layout.stages, self.tensors, z, tape), tape

    def _first(self, split: str, idx: Tensor | None, x: Tensor, given: bool = False) -> Tensor:
        """The first layer's pre-activation (K, n, h) on inputs ``x`` (split, rows ``idx``, or
        a ``given`` batch).

        Without autograd, the bias rides in the GEMM as a column of ones appended to x (cached
        per split): no separate pass to broadcast it, ~10-25% faster at a 64-configuration MLP.
        """
        w, b = self.layout.first
        W, bias = self.tensors[w], self.tensors.get(b)
        if (
            given
            or bias is None
            or torch.is_grad_enabled()
            or torch.is_autocast_enabled(x.device.type)
        ):
            return _linear(x, W, bias, True)
        if split not in self._x1:
            full = self.inputs(split)
            self._x1[split] = torch.cat([full, torch.ones(len(full), 1, device=x.device)], 1)
        x1 = self._x1[split] if idx is None else self._x1[split][idx]
        w1 = torch.cat([W.detach(), bias.detach().unsqueeze(2)], 2)
        return torch.bmm(x1.expand(len(W), *x1.shape), w1.transpose(1, 2))

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Hand-written backward from d(Σ loss)/d(outputs): sets every tensor's ``.grad``."""
        grads, dz = rest_backward(self.layout.stages, self.tensors, tape, dout)
        w, b = self.layout.first
        x = tape.x
        grads[w] = torch.bmm(dz.transpose(1, 2), x.expand(len(dz), *x.shape))
        if b in self.tensors:
            grads[b] = dz.sum(1)
        for n, t in self.tensors.items():
            t.grad = grads[n]
