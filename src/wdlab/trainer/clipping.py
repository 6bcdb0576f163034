"""Gradient clipping by norm, each configuration by its own norm.

``torch.nn.utils.clip_grad_norm_(model.parameters(), c)`` on one model: the total 2-norm ‖g‖ of
all its gradients, then every gradient times ``clamp(c / (‖g‖ + 1e-6), max=1)``. Over stacked
rows that is done row by row: each configuration's total norm from its own rows only, its own
factor. A batch of one configuration runs torch's own code on its row views
(``get_total_norm``, the same factor expression): on the CPU, bit for bit what
``clip_grad_norm_`` gives that model trained alone. Nothing here reads a device value (no host
sync): the factor stays a tensor, clamped rather than tested.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def clip_rows(tensors: Iterable[Tensor], max_norm: float) -> None:
    """Clip the ``.grad`` of stacked tensors (K, *shape) row by row to total norm ``max_norm``."""
    grads = [t.grad for t in tensors if t.grad is not None]
    if not grads:
        return
    k = len(grads[0])
    if k == 1:  # torch's own functions, on the row: clip_grad_norm_ alone
        total = torch.nn.utils.get_total_norm([g[0] for g in grads])
    else:
        per = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads])
        total = torch.linalg.vector_norm(per, dim=0)
    clip_coef = max_norm / (total + 1e-6)
    factor = torch.clamp(clip_coef, max=1.0)
    for g in grads:
        g.mul_(factor if k == 1 else factor.view(k, *([1] * (g.dim() - 1))))
