"""Any ``nn.Module``'s engine: K configurations through ``torch.func`` under ``torch.vmap``
(:class:`wdlab.func.FuncForward`), or one configuration after another where vmap cannot run
the module (:func:`wdlab.func.probe` finds out, and why) or would be slower
(:func:`loops_faster`): a module with a convolution, on the CPU. There vmap turns the K
convolutions into one grouped convolution, whose CPU kernels are slower than K ordinary
ones for convolutions of real width (``bench/bench_vmap_vs_loops.py``: a 2-block ResNet, 16
configurations, batch 128, one step 0.51 s batched, 0.28 s one after another; a single tiny
convolution is the exception, 1.8× faster batched); the batch still reads and augments each
mini-batch once for all K."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from wdlab.engines.base import Engine, Setup, Stacked, fast_path_choice
from wdlab.func import FuncForward, meta_copy, probe, vmap_note
from wdlab.inputs import Inputs, apply, parts, rows, take
from wdlab.sidebyside import SideBySide

PROBE_ROWS = 8  # training rows the vmap probe runs on


class FuncEngine(Stacked):
    """:class:`wdlab.func.FuncForward` over the stacked weights and buffers; autograd."""

    takes_channels_last: ClassVar[bool] = True

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
        engine.channels_last = setup.channels_last and _has_images(setup.X)
        if setup.probe is not None:
            engine._probe(setup.probe)
        why = loops_faster(setup.template, engine.device) if len(engine) > 1 else None
        if engine.fwd.vmap and why is not None:
            engine.fwd.vmap = False
            engine.note = f"torch.func: one configuration after another ({why})"
        engine._side_by_side(setup.parallel)
        if setup.channels_last:
            cl = engine.channels_last
            engine.note += "; channels_last inputs" if cl else "; channels_last unused (no images)"
        return engine

    def _side_by_side(self, parallel: int) -> None:
        """Run the configurations ``parallel`` at a time (at most all of them) where they run
        one after another on the CPU (:mod:`wdlab.sidebyside`)."""
        n = min(parallel, len(self))
        if n > 1 and self.one_at_a_time and self.device.type == "cpu":
            self.fwd.side = SideBySide(self.fwd.template, n, meta_copy)
            self.lanes = n
            self.note += f"; {self.fwd.side.note()}"

    @classmethod
    def shares_activations(cls, template: nn.Module, device: torch.device) -> bool:
        """Where the configurations run one after another (:func:`loops_faster`), each backed
        up before the next: the batch holds one configuration's activations."""
        return loops_faster(template, device) is not None

    @property
    def device(self) -> torch.device:
        """Where the stacked tensors are."""
        return next(iter(self.tensors.values())).device

    def _probe(self, loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        n = min(rows(self.X), PROBE_ROWS)
        x = self.inputs("train", None, take(self.X, slice(0, n)))  # as the training gets them
        idx = torch.arange(n, device=self.device)
        try:
            why = probe(self.fwd, self.tensors, self.buffers, x, lambda out: loss(out, idx).sum())
        except ValueError as exc:
            if not self.channels_last:
                raise
            raise ValueError(f"{exc} (inputs in torch.channels_last: channels_last=True)") from None
        if why is not None:
            self.fwd.vmap = False
            self.note = f"one configuration after another (torch.vmap failed: {why})"

    def _run(self, x: Inputs, train: bool) -> Tensor:
        return self.fwd(self.tensors, self.buffers, x, train)

    def inputs(self, split: str, idx: Tensor | None = None, x: Inputs | None = None) -> Inputs:
        """A split's inputs or the batch ``x`` (:meth:`Stacked.inputs`), its 4-D float tensors
        in ``torch.channels_last`` where asked (``channels_last=True``): what a plain loop
        gives the model after ``x.to(memory_format=torch.channels_last)``."""
        x = super().inputs(split, idx, x)
        return apply(_channels_last, x) if self.channels_last else x

    @property
    def one_at_a_time(self) -> bool:
        """Whether a training step runs the configurations one after another (no vmap, more
        than one): then :meth:`train_each` backs each one's loss up before the next forward."""
        return not self.fwd.vmap and len(self) > 1

    def train_each(
        self,
        idx: Tensor | None,
        x: Inputs | None,
        loss: Callable[[Tensor], Tensor],
        amp: Callable[[], contextlib.AbstractContextManager],
    ) -> tuple[Tensor, Tensor]:
        """One training step's forward and backward, a configuration at a time: ``loss`` of
        its (1, n, out) outputs, backed up at once, so that only one configuration's
        activations are held (not K). Returns the outputs (K, n, out) and losses (K,),
        detached; every tensor's ``.grad`` is the gradient of their sum."""
        x = self.inputs("train", idx, x)
        for t in self.tensors.values():
            t.grad = None
        self.fwd.template.train(True)

        def one(forward: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
            with amp():
                out = forward()
            lk = loss(out.float()[None])
            lk.sum().backward()
            return out.detach().float(), lk.detach()

        done = self.fwd.map(self.tensors, self.buffers, x, one)
        return torch.stack([o for o, _ in done]), torch.cat([lk for _, lk in done])


def _is_images(t: Tensor) -> bool:
    """Whether ``t`` is a 4-D floating tensor (a batch of images: what channels_last converts)."""
    return t.dim() == 4 and t.is_floating_point()


def _has_images(x: Inputs) -> bool:
    """Whether ``x`` holds a batch of images."""
    return any(_is_images(t) for t in parts(x))


def _channels_last(t: Tensor) -> Tensor:
    """``t`` in ``torch.channels_last`` if it is a batch of images."""
    return t.contiguous(memory_format=torch.channels_last) if _is_images(t) else t


def loops_faster(template: nn.Module, device: torch.device) -> str | None:
    """Why running the configurations one after another beats vmap for ``template`` on
    ``device`` (see the module docstring), or ``None`` where vmap is the faster."""
    if device.type == "cpu" and any(
        isinstance(m, nn.modules.conv._ConvNd) for m in template.modules()
    ):
        return "convolutions on the CPU: K ordinary ones are faster than vmap's grouped one"
    return None
