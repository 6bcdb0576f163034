"""The built-in CNN's engine: K configurations through :class:`wdlab.cnn.GroupedCNN`, a
hand-written batched forward and backward on a (K, C, *spatial, n) layout; under bf16 autocast,
:class:`~wdlab.engines.torchfunc.FuncEngine` over the module instead."""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor

from wdlab.cnn import GroupedCNN
from wdlab.engines.base import Engine, Setup, Stacked, Tape
from wdlab.engines.torchfunc import FuncEngine


class GroupedCNNEngine(Stacked):
    """:class:`wdlab.cnn.GroupedCNN` over the stacked weights and buffers."""

    hand_backward = True
    float_inputs = True

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.fwd = GroupedCNN(setup.template)
        self.eval_pass = self.fwd.mode_dependent  # BatchNorm, Dropout
        self.note = "hand-batched GroupedCNN"

    @classmethod
    def build(cls, setup: Setup) -> Engine:
        """This engine; under bf16 autocast, torch.func over the CNN module (torch's autocast
        decides each op's dtype, as in a plain loop; the hand-written ops would compute in
        float32 between the GEMMs), its configurations not side by side (``parallel`` is for
        a user's module; the built-in CNN does not take it in float32 either)."""
        if not setup.autocast:
            return super().build(setup)
        engine = FuncEngine.build(replace(setup, parallel=1))
        said = "the CNN module itself under bf16 (autocast sets each op's dtype)"
        engine.note = f"{said}: {engine.note}"
        return engine

    def _run(self, x: Tensor, train: bool) -> Tensor:
        return self.fwd(self.tensors, self.buffers, x, train)

    def forward_tape(
        self, idx: Tensor | None = None, x: Tensor | None = None
    ) -> tuple[Tensor, Tape]:
        """The training outputs (rows ``idx``, or the batch ``x``), and the tape
        :meth:`backward` needs (call under no_grad)."""
        tape = Tape()
        x = self.inputs("train", idx, x)
        return self.fwd.forward(self.tensors, self.buffers, x, True, tape.entries), tape

    def backward(self, tape: Tape, dout: Tensor) -> None:
        """Every tensor's ``.grad`` by :meth:`wdlab.cnn.GroupedCNN.backward`."""
        grads = self.fwd.backward(self.tensors, tape.entries, dout)
        for n, t in self.tensors.items():
            t.grad = grads[n]
