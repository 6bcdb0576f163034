"""The grouped CNN's kernels on the (K, C, *spatial, n) layout: im2col and col2im, batched
GEMMs, BatchNorm (per configuration's channels, and folded into the first convolution), max
pooling, each with its backward (see :mod:`wdlab.cnn`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
