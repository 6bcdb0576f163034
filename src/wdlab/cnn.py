"""The built-in CNN, and K of them trained at once as one wide, grouped CNN.

:class:`GroupedCNN` runs K configurations of :class:`CNN` without ``torch.vmap``: configuration
k's channels are the k-th block of every layer. The first convolution maps the shared input to
all K·C channels at once; the later ones are grouped convolutions (``groups=K``, so blocks never
mix); BatchNorm over the K·C channels normalises each configuration's channels with their own
statistics and updates their own rows of the stacked running buffers; ReLU, max-pooling,
average pooling and Dropout act element- or channel-wise (independent masks per configuration);
the heads are one batched GEMM. Every op runs on large contiguous tensors, and autograd gives
the gradients. Each configuration computes exactly what its own ``CNN`` computes (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Pool2(torch.autograd.Function):
    """2× max-pooling along the last dimension, with a backward that writes each gradient
    straight to the winning half (autograd's ``maximum`` backward, and ``max_pool1d``'s, cost
    2-10× more here)."""

    @staticmethod
    def forward(ctx: object, h: Tensor) -> Tensor:
        n = h.shape[-1] // 2 * 2
        a, b = h[..., 0:n:2], h[..., 1:n:2]
        first = a >= b  # MaxPool's choice: the first of equal values
        ctx.save_for_backward(first)
        ctx.odd = h.shape[-1] % 2
        if h.dim() == 3:  # (n, C, L): the native kernel gives the same values, ~3x faster
            return F.max_pool1d(h, 2)
        return torch.where(first, a, b)

    @staticmethod
    def backward(ctx: object, g: Tensor) -> Tensor:
        (first,) = ctx.saved_tensors
        pairs = g.new_empty(*g.shape, 2)  # written whole: no zero-fill pass
        torch.mul(g, first, out=pairs[..., 0])
        torch.sub(g, pairs[..., 0], out=pairs[..., 1])  # exactly 0 or g
        grad = pairs.flatten(-2)
        return F.pad(grad, (0, 1)) if ctx.odd else grad


def pool2(h: Tensor) -> Tensor:
    """2× max-pooling over every spatial dimension (odd ends dropped): exactly
    ``max_pool1d/2d(h, 2)``, values and gradients (ties go to the first), but several times
    faster on the CPU with autograd; without a gradient to keep, the native kernel itself.
    (:class:`CNN` itself keeps ``nn.MaxPool``, which ``torch.func`` transforms can run.)"""
    if not (torch.is_grad_enabled() and h.requires_grad) and h.dim() in (3, 4):
        return (F.max_pool1d if h.dim() == 3 else F.max_pool2d)(h, 2)
    for d in range(2, h.dim()):
        h = _Pool2.apply(h.movedim(d, -1)).movedim(-1, d)
    return h


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


class GroupedCNN:
    """``(params, buffers, x, train) -> (K, n, out)`` for K stacked copies of a :class:`CNN`."""

    vmap = False

    def __init__(self, template: CNN) -> None:
        self.in_shape = template.in_shape
        two_d = len(self.in_shape) == 3
        self.conv = F.conv2d if two_d else F.conv1d
        self.layers: list[tuple[str, str, nn.Module]] = []
        for name, mod in template.features.named_children():
            kind = {nn.ReLU: "relu"}.get(type(mod))
            if isinstance(mod, nn.modules.conv._ConvNd):
                kind = "conv"
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                kind = "bn"
            elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
                kind = "pool"
            self.layers.append((kind, f"features.{name}", mod))
        drop = template.dropout
        self.dropout = drop.p if isinstance(drop, nn.Dropout) else 0.0
        self.mode_dependent = self.dropout > 0 or any(k == "bn" for k, _, _ in self.layers)

    def __call__(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, train: bool
    ) -> Tensor:
        """Outputs of every configuration on the shared input ``x``."""
        K, n = params["head.weight"].shape[0], len(x)
        h = x.reshape(n, *self.in_shape)
        first, prev = True, ""
        for kind, name, mod in self.layers:
            if kind == "conv":
                w = params[f"{name}.weight"]  # (K, C_out, C_in, *k)
                b = params.get(f"{name}.bias")
                flat = w.reshape(K * w.shape[1], *w.shape[2:])
                bias = b.reshape(-1) if b is not None else None
                h = self.conv(h, flat, bias, padding=1, groups=1 if first else K)
                first = False
            elif kind == "bn":
                h = self._batch_norm(h, params, buffers, name, mod, train)
            elif kind == "relu":
                h = torch.relu_(h) if prev == "bn" else torch.relu(h)  # BN keeps its input
            elif kind == "pool":
                h = pool2(h)
            prev = kind
        h = h.flatten(2).mean(2)  # (n, K·C): global average pooling
        if self.dropout > 0:
            h = F.dropout(h, self.dropout, training=train)
        h = h.view(n, K, -1).transpose(0, 1)  # (K, n, C)
        w, b = params["head.weight"], params["head.bias"]
        return torch.baddbmm(b.unsqueeze(2), w, h.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def _batch_norm(
        h: Tensor,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        name: str,
        mod: nn.Module,
        train: bool,
    ) -> Tensor:
        """BatchNorm over K·C channels: each configuration's own statistics and buffers."""
        mean, var = buffers[f"{name}.running_mean"], buffers[f"{name}.running_var"]
        if train and f"{name}.num_batches_tracked" in buffers:
            buffers[f"{name}.num_batches_tracked"].add_(1)
        return F.batch_norm(
            h,
            mean.view(-1),  # views: the updates land in the stacked rows
            var.view(-1),
            params[f"{name}.weight"].reshape(-1),
            params[f"{name}.bias"].reshape(-1),
            training=train,
            momentum=mod.momentum,
            eps=mod.eps,
        )
