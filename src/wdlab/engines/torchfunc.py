"""Any ``nn.Module``'s engine: K configurations through ``torch.func`` under ``torch.vmap``
(:class:`wdlab.func.FuncForward`), or one configuration after another where vmap cannot run
the module (:func:`wdlab.func.probe` finds out, and why)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from wdlab.engines.base import Engine, Setup, Stacked, fast_path_choice
from wdlab.func import FuncForward, probe, vmap_note
from wdlab.inputs import Inputs, rows, take

PROBE_ROWS = 8  # training rows the vmap probe runs on


class FuncEngine(Stacked):
    """:class:`wdlab.func.FuncForward` over the stacked weights and buffers; autograd."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.fwd = FuncForward(setup.template)
        self.eval_pass = self.fwd.mode_dependent  # BatchNorm, Dropout
        self.note = vmap_note(len(self))

    @classmethod
    def build(cls, setup: Setup) -> Engine:
        """The engine, vmapped where torch.vmap runs one training step of the module."""
        fast_path_choice(setup, (False, "custom model: first layer unknown"))
        engine = cls(setup)
        if setup.probe is not None:
            engine._probe(setup.probe)
        return engine

    def _probe(self, loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        n = min(rows(self.X), PROBE_ROWS)
        x = take(self.X, slice(0, n))
        idx = torch.arange(n, device=next(iter(self.tensors.values())).device)
        why = probe(self.fwd, self.tensors, self.buffers, x, lambda out: loss(out, idx).sum())
        if why is not None:
            self.fwd.vmap = False
            self.note = f"one configuration after another (torch.vmap failed: {why})"

    def _run(self, x: Inputs, train: bool) -> Tensor:
        return self.fwd(self.tensors, self.buffers, x, train)
