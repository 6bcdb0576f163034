"""The built-in CNN, and K of them trained at once with a hand-written forward and backward.

:class:`GroupedCNN` runs K configurations of :class:`CNN` without ``torch.vmap`` or autograd's
per-node work. Activations are held as ``(K, C, *spatial, n)``: the configurations first, the
examples last, so that every op runs on large blocks of whole ``n``-vectors:

- a convolution (3-wide, padding 1) is one batched GEMM per layer: the weights
  ``(K, C_out, C_in·taps)`` times the input's shifted copies ``(K, C_in·taps, spatial·n)``
  (im2col; the first layer's input is shared by all K, so its copies are made once);
- BatchNorm is per row of ``(K·C, spatial·n)``: each configuration's channels get their own
  statistics (two-pass mean and variance, as torch's kernel) and update their own rows of the
  stacked running buffers. The first layer's statistics follow from the shared input's mean
  and covariance, so its BatchNorm folds into the convolution's GEMM (weights ``a·w``, bias
  ``β − a·mean``), forward and backward (:func:`_shared_batch_norm`); in eval mode every
  BatchNorm folds into its convolution with the running statistics;
- max-pooling takes the larger of two strided slices of whole ``n``-vectors, and comes before
  the ReLU that precedes it in :class:`CNN`: the two commute exactly (both are monotone; ties
  go to the first element, as in ``MaxPool``, and so do the gradients), so the ReLU acts on half
  as many values;
- global average pooling, Dropout (independent masks per configuration, from torch's RNG) and
  the heads (one batched GEMM, logits laid out ``(K, out, n)``) follow.

:meth:`GroupedCNN.backward` is the hand-written backward: the kernels autograd would call
(``native_batch_norm_backward``, ``threshold_backward``, GEMMs) on the same layout. Where
autograd is needed (a custom loss, bf16 autocast) the whole network is one
``torch.autograd.Function`` whose backward is that one. Each configuration computes what its
own ``CNN`` computes, to float rounding (tested against autograd through each ``CNN``, values
and gradients).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

#: On the CPU, GroupedCNN evaluates its configurations in chunks of about this many bytes of
#: one layer's activations, so that each op's data stays in cache: on bench_own_model's CNN
#: (2 cores) chunks of 9 evaluate 13-25% faster than all 32 at once. Training (whose tape
#: keeps every layer) measured no faster in chunks, so it runs all K at once.
EVAL_CHUNK_BYTES = 3 << 20


class CNN(nn.Module):
    """A small CNN for 1-D signals (C, L) or images (C, H, W).

    Per entry of ``channels``: a 3-wide convolution (without a bias when BatchNorm follows: its
    shift makes one redundant, and Adam would random-walk it on rounding noise), optional
    BatchNorm, ReLU, and a 2× max-pool while the signal is at least 4 long; then
    global average pooling, optional Dropout and a Linear head. Flat inputs (n, d) are read as
    one-channel signals of length d.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        channels: tuple[int, ...],
        out_dim: int,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) not in (2, 3):
            raise ValueError(f"cnn needs inputs of shape (C, L) or (C, H, W), got {in_shape}")
        self.in_shape = tuple(in_shape)
        two_d = len(in_shape) == 3
        conv, norm, pool = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
            if two_d
            else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
        )
        layers: list[nn.Module] = []
        c, size = in_shape[0], min(in_shape[1:])
        for ch in channels or (16, 32):
            layers.append(conv(c, ch, 3, padding=1, bias=not batchnorm))  # BatchNorm has the bias
            if batchnorm:
                layers.append(norm(ch))
            layers.append(nn.ReLU())
            if size >= 4:
                layers.append(pool(2))
                size //= 2
            c = ch
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs (logits or predictions) of shape (n, out_dim)."""
        x = x.reshape(len(x), *self.in_shape)
        h = self.features(x).flatten(2).mean(2)
        return self.head(self.dropout(h))


@dataclass(frozen=True)
class _Stage:
    """One stage of :class:`GroupedCNN`: ``conv`` (with the BatchNorm that follows it, if
    any), ``pool`` or ``relu``."""

    kind: str
    name: str = ""
    first: bool = False  # the first convolution: its input is shared by all K
    bn: str | None = None  # the BatchNorm's name
    eps: float = 1e-5
    momentum: float = 0.1


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


def _rows(tensors: dict[str, Tensor], rows: slice) -> dict[str, Tensor]:
    """The configurations ``rows`` of stacked tensors (views: in-place updates land there)."""
    return {n: t[rows] for n, t in tensors.items()}


def _index(ndim: int, dim: int, sl: slice | int) -> tuple:
    """An index of a tensor of ``ndim`` dimensions taking ``sl`` along ``dim``."""
    return (slice(None),) * dim + (sl,) + (slice(None),) * (ndim - dim - 1)


def _shift(offset: tuple[int, ...], size: tuple[int, ...]) -> tuple[tuple, tuple]:
    """For one tap: the spatial boxes (source, destination) with ``dst[i] = src[i + offset]``."""
    src = tuple(slice(max(0, o), s + min(0, o)) for o, s in zip(offset, size, strict=True))
    dst = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, size, strict=True))
    return (slice(None), slice(None), *src), (slice(None), slice(None), *dst)


def _im2col(h: Tensor, taps: list[tuple[int, ...]]) -> Tensor:
    """``(B, C, *S, n)`` → its shifted copies ``(B, C, taps, *S, n)``, zero where a tap falls
    outside (padding 1): the input of a convolution as one GEMM."""
    size = tuple(h.shape[2:-1])
    cols = h.new_empty(h.shape[0], h.shape[1], len(taps), *h.shape[2:])
    for t, offset in enumerate(taps):
        dst = cols[:, :, t]
        src_box, dst_box = _shift(offset, size)
        dst[dst_box] = h[src_box]
        for d, o in enumerate(offset):  # the border a shifted copy leaves uncovered
            if o:
                dst[_index(dst.dim(), 2 + d, 0 if o < 0 else size[d] - 1)] = 0
    return cols


def _col2im(dcols: Tensor, taps: list[tuple[int, ...]]) -> Tensor:
    """The gradient of :func:`_im2col`'s input: each tap's gradient added back where it came
    from (the centre tap covers every position, so it starts the sum)."""
    size = tuple(dcols.shape[3:-1])
    centre = taps.index((0,) * len(size))
    dh = dcols[:, :, centre].clone()
    for t, offset in enumerate(taps):
        if t != centre:
            src_box, dst_box = _shift(offset, size)
            dh[src_box].add_(dcols[:, :, t][dst_box])  # in place on the view: no copy back
    return dh


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
        outs = [
            self._forward(_rows(params, rows), _rows(buffers, rows), h, train, tape)
            for rows in (slice(i, i + size) for i in range(0, K, size))
        ]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).transpose(1, 2)  # (K, n, out)

    def _forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], h: Tensor, train: bool,
        tape: list | None,
    ) -> Tensor:  # fmt: skip
        """:meth:`forward` of one chunk of configurations, from the input ``h`` (1, C, *S, n);
        the logits as (K, out, n)."""
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
        keep = None
        if self.dropout > 0 and train:  # one mask per configuration, channel and example
            keep = torch.empty_like(feats).bernoulli_(1 - self.dropout).div_(1 - self.dropout)
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


def _f32(t: Tensor) -> Tensor:
    """``t`` in float32 (a GEMM under bf16 autocast gives bfloat16; the rest runs in float32)."""
    return t if t.dtype == torch.float32 else t.float()


def _gemm(w: Tensor, flat: Tensor, bias: Tensor | None) -> Tensor:
    """``w (K, C_out, T) @ flat (B, T, M) [+ bias (K, C_out)]`` → (K, C_out, M) in float32;
    ``B = 1`` is an input shared by every configuration."""
    flat = flat.expand(len(w), -1, -1)
    out = torch.bmm(w, flat) if bias is None else torch.baddbmm(bias.unsqueeze(2), w, flat)
    return _f32(out)


def _bn_params(params: dict[str, Tensor], stage: _Stage) -> tuple[Tensor, Tensor]:
    """A BatchNorm's weight and bias, as (K·C,) rows."""
    return params[f"{stage.bn}.weight"].reshape(-1), params[f"{stage.bn}.bias"].reshape(-1)


def _update_running(
    buffers: dict[str, Tensor], stage: _Stage, mean: Tensor, var: Tensor, count: int
) -> None:
    """A BatchNorm's running statistics (each configuration's own rows), as torch updates
    them: momentum averages of the batch mean and of the unbiased batch variance."""
    mom = stage.momentum
    buffers[f"{stage.bn}.running_mean"].view(-1).mul_(1 - mom).add_(mean.float(), alpha=mom)
    unbiased = var.float() * (count / max(count - 1, 1))
    buffers[f"{stage.bn}.running_var"].view(-1).mul_(1 - mom).add_(unbiased, alpha=mom)
    tracked = buffers.get(f"{stage.bn}.num_batches_tracked")
    if tracked is not None:
        tracked.add_(1)


def _folded_running(
    params: dict[str, Tensor], buffers: dict[str, Tensor], stage: _Stage
) -> tuple[Tensor, Tensor]:
    """An eval-mode BatchNorm as a per-channel scale and shift (K, C) to fold into its
    convolution: ``(z − running_mean)·γ/√(running_var + ε) + β``."""
    w = params[f"{stage.bn}.weight"]
    scale = w * (buffers[f"{stage.bn}.running_var"] + stage.eps).rsqrt()
    return scale, params[f"{stage.bn}.bias"] - buffers[f"{stage.bn}.running_mean"] * scale


def _batch_norm(
    params: dict[str, Tensor], buffers: dict[str, Tensor], stage: _Stage, z: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """A training-mode BatchNorm of ``z`` (K, C, M) with each row's own batch statistics
    (two-pass mean and variance, as torch's kernel), and what its backward needs."""
    rows = z.view(-1, z.shape[-1])
    m = rows.shape[1]
    mean = rows.mean(1)
    centred = rows - mean.unsqueeze(1)
    var = centred.square_().sum(1).div_(m)  # (not vecdot: autocast would run it in bf16)
    del centred
    _update_running(buffers, stage, mean, var, m)
    w, b = _bn_params(params, stage)
    # the eval kernel with the batch's statistics: the normalisation in one pass
    out = torch.batch_norm(rows.unsqueeze(0), w, b, mean, var, False, 0.0, stage.eps, False)
    return out.view(z.shape), (z, mean, (var + stage.eps).rsqrt_())


def _batch_norm_backward(
    params: dict[str, Tensor],
    stage: _Stage,
    saved: tuple[Tensor, Tensor, Tensor],
    g: Tensor,
    grads: dict[str, Tensor],
) -> Tensor:
    """BatchNorm's weight, bias and input gradients (torch's own backward kernel)."""
    z, mean, invstd = saved
    w = params[f"{stage.bn}.weight"]
    rows = (1, w.numel(), -1)
    dz, dw, db = torch.ops.aten.native_batch_norm_backward(
        g.reshape(rows), z.view(rows), w.reshape(-1), None, None, mean, invstd, True,
        stage.eps, [True, True, True],
    )  # fmt: skip
    grads[f"{stage.bn}.weight"] = dw.view(w.shape)
    grads[f"{stage.bn}.bias"] = db.view(w.shape)
    return dz.view(g.shape)


def _shared_batch_norm(
    params: dict[str, Tensor], buffers: dict[str, Tensor], stage: _Stage, wm: Tensor, x: Tensor
) -> tuple[Tensor, Tensor, tuple]:
    """The first layer's training-mode BatchNorm, folded into its convolution's weights.

    Every configuration's first convolution reads the same im2col copies ``x`` (T, M), so
    channel c's outputs ``z_c = w_c·x`` have batch mean ``w_c·μ`` and variance ``w_cᵀ Σ w_c``
    (μ, Σ: the mean and covariance of x's T rows, computed once in float64). The normalised
    output ``(z_c − mean_c)·a_c + β_c`` (a = γ/√(var + ε)) is then one GEMM with weights
    ``a_c·w_c`` and bias ``β_c − a_c·mean_c``: no pass over the K·C output rows."""
    K, c_out, taps = wm.shape
    m = x.shape[1]
    mu = x.mean(1, dtype=torch.float64)
    xc = x.double() - mu.unsqueeze(1)
    cov = (xc @ xc.t()).div_(m)
    w64 = wm.reshape(-1, taps).double()
    mean = w64 @ mu
    var = ((w64 @ cov) * w64).sum(1)
    invstd = (var + stage.eps).rsqrt()
    _update_running(buffers, stage, mean, var, m)
    gamma, beta = _bn_params(params, stage)
    a = gamma.double() * invstd
    folded = (w64 * a.unsqueeze(1)).to(wm.dtype).view(K, c_out, taps)
    shift = (beta.double() - a * mean).to(wm.dtype).view(K, c_out)
    return folded, shift, (mu, cov, w64, mean, invstd)


def _shared_batch_norm_backward(
    params: dict[str, Tensor],
    stage: _Stage,
    x: Tensor,
    saved: tuple,
    g: Tensor,
    grads: dict[str, Tensor],
) -> None:
    """The gradients of :func:`_shared_batch_norm`'s convolution and BatchNorm parameters
    from those of its outputs ``g``, by the same algebra: with G = g·xᵀ (one GEMM),
    dβ_c = Σ g_c, dγ_c = (w_c·G_c − mean_c·dβ_c)/σ_c and
    dw_c = a_c·(G_c − dβ_c·μ − dγ_c·Σ w_c/σ_c) (σ_c = √(var_c + ε))."""
    mu, cov, w64, mean, invstd = saved
    rows = g.reshape(len(w64), -1)
    G = torch.mm(rows, x.t()).double()
    dbeta = rows.sum(1).double()
    dgamma = invstd * ((w64 * G).sum(1) - mean * dbeta)
    gamma = params[f"{stage.bn}.weight"]
    a = gamma.reshape(-1).double() * invstd
    dw = a.unsqueeze(1) * (
        G - dbeta.unsqueeze(1) * mu - (dgamma * invstd).unsqueeze(1) * (w64 @ cov)
    )
    w = params[f"{stage.name}.weight"]
    grads[f"{stage.name}.weight"] = dw.to(w.dtype).view(w.shape)
    grads[f"{stage.bn}.weight"] = dgamma.to(w.dtype).view(gamma.shape)
    grads[f"{stage.bn}.bias"] = dbeta.to(w.dtype).view(gamma.shape)


def _pool(h: Tensor, tape: list | None) -> Tensor:
    """2× max-pooling over every spatial dimension of ``(K, C, *S, n)`` (odd ends dropped),
    the last dimension first so that ties go to the first element in row-major order, as in
    ``MaxPool``; the masks of winning first halves go on the tape."""
    masks = []
    for dim in reversed(range(2, h.dim() - 1)):
        size = h.shape[dim]
        pairs = size // 2 * 2
        a = h[_index(h.dim(), dim, slice(0, pairs, 2))]
        b = h[_index(h.dim(), dim, slice(1, pairs, 2))]
        if tape is not None:  # as float: multiplying by it is several times faster than by bool
            masks.append((torch.ge(a, b, out=a.new_empty(a.shape)), dim, size))
        h = torch.maximum(a, b)
    if tape is not None:
        tape.append(masks)
    return h


def _pool_backward(masks: list[tuple[Tensor, int, int]], g: Tensor) -> Tensor:
    """The gradient of :func:`_pool`'s input: each output's gradient to the element it took
    (exactly g or 0: ``g - g·mask``), 0 at a dropped odd end."""
    for mask, dim, size in reversed(masks):
        shape = list(g.shape)
        shape[dim] = size
        dh = g.new_empty(shape)  # written whole: no zero-fill pass
        pairs = size // 2 * 2
        first = dh[_index(dh.dim(), dim, slice(0, pairs, 2))]
        torch.mul(g, mask, out=first)
        torch.sub(g, first, out=dh[_index(dh.dim(), dim, slice(1, pairs, 2))])
        if size % 2:
            dh[_index(dh.dim(), dim, size - 1)] = 0
        g = dh
    return g


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
