""":class:`GroupedCNN`: K configurations of the built-in :class:`~wdlab.cnn.model.CNN` with a
hand-written batched forward and backward (see :mod:`wdlab.cnn`)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from wdlab.cnn.model import CNN
from wdlab.cnn.ops import (
    _batch_norm,
    _batch_norm_backward,
    _col2im,
    _f32,
    _folded_running,
    _gemm,
    _im2col,
    _pool,
    _pool_backward,
    _rows,
    _shared_batch_norm,
    _shared_batch_norm_backward,
    _Stage,
)

#: On the CPU, GroupedCNN evaluates its configurations in chunks of about this many bytes of
#: one layer's activations, so that each op's data stays in cache: on bench_own_model's CNN
#: (2 cores) chunks of 9 evaluate 13-25% faster than all 32 at once. Training (whose tape
#: keeps every layer) measured no faster in chunks, so it runs all K at once.
EVAL_CHUNK_BYTES = 3 << 20


def _stages(template: CNN) -> list[_Stage]:
    """The template's layers as stages: each BatchNorm joins its convolution, and each ReLU
    that precedes a pool moves after it."""
    stages: list[_Stage] = []
    for name, mod in template.features.named_children():
        full = f"features.{name}"
        if isinstance(mod, nn.modules.conv._ConvNd):
            stages.append(_Stage("conv", full, first=not stages))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            stages[-1] = replace(stages[-1], bn=full, eps=mod.eps, momentum=mod.momentum)
        elif isinstance(mod, nn.ReLU):
            stages.append(_Stage("relu"))
        elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            stages.append(_Stage("pool"))
            if stages[-2].kind == "relu":  # max-pool commutes with ReLU: pool first
                stages[-2], stages[-1] = stages[-1], stages[-2]
        else:  # pragma: no cover - CNN builds only these
            raise TypeError(f"GroupedCNN cannot run {type(mod).__name__}")
    return stages


def _widest(template: CNN) -> int:
    """The most activation values one example has at any layer of ``template`` (C·spatial)."""
    size, widest = list(template.in_shape[1:]), 1
    for mod in template.features:
        if isinstance(mod, nn.modules.conv._ConvNd):
            widest = max(widest, mod.out_channels * math.prod(size))
        elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            size = [s // 2 for s in size]
    return widest


class GroupedCNN:
    """``(params, buffers, x, train) -> (K, n, out)`` for K stacked copies of a :class:`CNN`,
    with a hand-written backward (:meth:`backward`); see the module docstring."""

    vmap = False
    manual_backward = True

    def __init__(self, template: CNN) -> None:
        self.in_shape = template.in_shape
        self.stages = _stages(template)
        self.taps = list(itertools.product((-1, 0, 1), repeat=len(self.in_shape) - 1))
        drop = template.dropout
        self.dropout = drop.p if isinstance(drop, nn.Dropout) else 0.0
        self.mode_dependent = self.dropout > 0 or any(s.bn for s in self.stages)
        self.widest = _widest(template)

    def __call__(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, train: bool
    ) -> Tensor:
        """Outputs of every configuration on the shared input ``x``; differentiable when
        autograd is on (through :class:`_Network`)."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in params.values()):
            names = list(params)
            return _Network.apply(self, buffers, x, train, names, *params.values())
        return self.forward(params, buffers, x, train)

    def forward(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        train: bool,
        tape: list | None = None,
    ) -> Tensor:
        """The outputs, without autograd; with a ``tape`` (a list), keeps on it what
        :meth:`backward` needs. Updates the running statistics when ``train``.

        Without a tape (evaluation) on the CPU, the configurations run in chunks whose
        activations stay in cache (:data:`EVAL_CHUNK_BYTES`); rows never mix, so chunks change
        no configuration's maths."""
        h = x.reshape(len(x), *self.in_shape).movedim(0, -1).unsqueeze(0).contiguous()
        K = size = len(params["head.weight"])
        if tape is None and h.device.type == "cpu":
            size = max(1, EVAL_CHUNK_BYTES // (self.widest * h.shape[-1] * h.element_size()))
        keep = self._dropout_mask(params, len(x), h.device) if train else None
        outs = [
            self._forward(_rows(params, rows), _rows(buffers, rows), h, train, tape, keep)
            for rows in (slice(i, i + size) for i in range(0, K, size))
        ]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).transpose(1, 2)  # (K, n, out)

    def _dropout_mask(
        self, params: dict[str, Tensor], n: int, device: torch.device
    ) -> Tensor | None:
        """The Dropout keep-mask of a training forward, (1, C, n) scaled by 1/(1 − p): drawn
        once and shared by every configuration, as the (n, C) mask ``nn.Dropout`` draws on the
        CNN's pooled features (``empty_like(h).bernoulli_(1 − p)``), so each configuration gets
        the masks it gets trained alone, and a plain loop's (see :mod:`wdlab.func`)."""
        if self.dropout <= 0:
            return None
        c = params["head.weight"].shape[2]
        mask = torch.empty(n, c, device=device).bernoulli_(1 - self.dropout)
        return mask.div_(1 - self.dropout).t().unsqueeze(0)

    def _forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], h: Tensor, train: bool,
        tape: list | None, keep: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """:meth:`forward` of one chunk of configurations, from the input ``h`` (1, C, *S, n);
        the logits as (K, out, n). ``keep``: the Dropout mask (training)."""
        for stage in self.stages:
            if stage.kind == "conv":
                h = self._conv(params, buffers, stage, h, train, tape)
            elif stage.kind == "pool":
                h = _pool(h, tape)
            else:
                h = torch.relu_(h)
                if tape is not None:
                    tape.append(h)
        spatial = math.prod(h.shape[2:-1])
        feats = h.flatten(2, -2).sum(2).div_(spatial)  # (K, C, n): global average pooling
        if keep is not None:  # the mask every configuration shares, as (K, C, n) views
            keep = keep.expand(feats.shape)
            feats = feats.mul_(keep)
        if tape is not None:
            tape.append((feats, keep, h.shape))
        w, b = params["head.weight"], params["head.bias"]
        return _f32(torch.baddbmm(b.unsqueeze(2), w, feats))

    def _conv(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        stage: _Stage,
        h: Tensor,
        train: bool,
        tape: list | None,
    ) -> Tensor:
        """One convolution (and its BatchNorm) of every configuration: a batched GEMM over the
        im2col copies. In eval mode the BatchNorm is folded into the GEMM's weights and bias;
        in training, the first layer's is too (:func:`_shared_batch_norm`)."""
        w = params[f"{stage.name}.weight"]
        K, c_out = w.shape[:2]
        flat = _im2col(h, self.taps).flatten(1, 2).flatten(2)  # (B, C·taps, spatial·n)
        wm = w.reshape(K, c_out, -1)
        bn_saved = None
        if stage.bn is None:
            out = _gemm(wm, flat, params.get(f"{stage.name}.bias"))
        elif not train:
            scale, shift = _folded_running(params, buffers, stage)
            out = _gemm(wm * scale.unsqueeze(2), flat, shift)
        elif stage.first:
            wf, bf, bn_saved = _shared_batch_norm(params, buffers, stage, wm, flat[0])
            out = _gemm(wf, flat, bf)
        else:
            out, bn_saved = _batch_norm(params, buffers, stage, _gemm(wm, flat, None))
        if tape is not None:
            tape.append((flat, bn_saved))
        return out.view(K, c_out, *h.shape[2:])

    def backward(self, params: dict[str, Tensor], tape: list, dout: Tensor) -> dict[str, Tensor]:
        """Every parameter's gradient from d(Σ loss)/d(outputs) ``dout`` (K, n, out) and the
        ``tape`` of :meth:`forward`."""
        entries = list(tape)
        grads: dict[str, Tensor] = {}
        feats, keep, shape = entries.pop()
        d_out = dout.transpose(1, 2)  # (K, out, n)
        grads["head.weight"] = torch.bmm(d_out, feats.transpose(1, 2))
        grads["head.bias"] = d_out.sum(2)
        g = torch.bmm(params["head.weight"].transpose(1, 2), d_out)  # (K, C, n)
        if keep is not None:
            g = g.mul_(keep)
        spatial = math.prod(shape[2:-1])
        g = g.div_(spatial).unsqueeze(2).expand(shape[0], shape[1], spatial, shape[-1])
        g = g.reshape(shape)
        for stage in reversed(self.stages):
            saved = entries.pop()
            if stage.kind == "conv":
                g = self._conv_backward(params, stage, saved, g, grads)
            elif stage.kind == "pool":
                g = _pool_backward(saved, g)
            else:
                g = torch.ops.aten.threshold_backward(g, saved, 0)
        return grads

    def _conv_backward(
        self,
        params: dict[str, Tensor],
        stage: _Stage,
        saved: tuple[Tensor, tuple | None],
        g: Tensor,
        grads: dict[str, Tensor],
    ) -> Tensor | None:
        """The gradients of a convolution's (and its BatchNorm's) parameters, and of its
        input (none for the first layer: its input is the data)."""
        flat, bn_saved = saved
        w = params[f"{stage.name}.weight"]
        K, c_out = w.shape[:2]
        if stage.bn is not None and stage.first:
            _shared_batch_norm_backward(params, stage, flat[0], bn_saved, g, grads)
            return None
        if stage.bn is not None:
            g = _batch_norm_backward(params, stage, bn_saved, g, grads)
        dz = g.reshape(K, c_out, -1)
        if len(flat) == 1:  # the shared input: one GEMM over every configuration's rows
            grads[f"{stage.name}.weight"] = torch.mm(dz.flatten(0, 1), flat[0].t()).view(w.shape)
        else:
            grads[f"{stage.name}.weight"] = torch.bmm(dz, flat.transpose(1, 2)).view(w.shape)
        if f"{stage.name}.bias" in params:
            grads[f"{stage.name}.bias"] = dz.sum(2)
        if stage.first:
            return None
        dcols = torch.bmm(w.reshape(K, c_out, -1).transpose(1, 2), dz)
        return _col2im(dcols.view(K, w.shape[2], len(self.taps), *g.shape[2:]), self.taps)


class _Network(torch.autograd.Function):
    """:class:`GroupedCNN` as one autograd node: its forward keeps a tape, its backward is
    :meth:`GroupedCNN.backward` (for custom losses and bf16 autocast)."""

    @staticmethod
    def forward(
        ctx: object,
        net: GroupedCNN,
        buffers: dict[str, Tensor],
        x: Tensor,
        train: bool,
        names: list[str],
        *tensors: Tensor,
    ) -> Tensor:
        params = dict(zip(names, tensors, strict=True))
        tape: list = []
        out = net.forward(params, buffers, x, train, tape)
        ctx.net, ctx.tape, ctx.params, ctx.names = net, tape, params, names
        return out

    @staticmethod
    def backward(ctx: object, dout: Tensor) -> tuple[Tensor | None, ...]:
        grads = ctx.net.backward(ctx.params, ctx.tape, dout)
        return (None, None, None, None, None, *(grads[n] for n in ctx.names))
