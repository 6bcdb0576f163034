"""Weight decay in PyTorch Lightning: the :class:`WeightDecay` callback.

Lightning's automatic optimization calls ``optimizer.step(closure=...)``; a
:class:`wdlab.Decay` attached to the optimizer applies its decay inside that closure, once the
gradients exist (after Lightning's gradient clipping, as torch's own ``weight_decay`` would),
and once per optimizer step under ``accumulate_grad_batches``. Two equivalent ways::

    # 1. the callback: attaches to every optimizer configure_optimizers returns
    trainer = lightning.Trainer(callbacks=[WeightDecay(Decay("decoupled", 0.05))])

    # 2. by hand, in configure_optimizers
    def configure_optimizers(self):
        decay = wdlab.Decay("decoupled", 0.05)
        groups, _ = wdlab.param_groups(self, decay)  # biases and norms do not decay
        opt = torch.optim.Adam(groups, lr=1e-3)
        decay.attach(opt)
        return opt

For mode ``l2`` add ``decay.penalty(optimizer)`` to the loss in ``training_step`` yourself (a
loss term cannot be hooked); ``coupled`` is the same gradient without it. The decay's state
(lr₀, the ``to_init`` anchor, its step count) lives in the optimizer's param groups, so
Lightning's checkpoints carry it. This module imports ``lightning`` (``pip install
'wdlab[lightning]'``); ``import wdlab`` never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wdlab.arguments import one_or_several
from wdlab.decay import Attachment, Decay
from wdlab.extras import require

_pl = require("lightning.pytorch", "wdlab.integrations.lightning")


class WeightDecay(_pl.Callback):
    """Attach ``decay`` to the optimizers of a fit (all, or those at ``optimizers`` indices)
    when it starts, and detach it when it ends.

    Build the optimizer's groups with :func:`wdlab.param_groups` in ``configure_optimizers``
    to keep biases and norms out (attaching to plain ``self.parameters()`` warns with counts).
    """

    def __init__(self, decay: Decay, optimizers: Sequence[int] | None = None) -> None:
        if not isinstance(decay, Decay):
            raise ValueError(f"WeightDecay needs a wdlab.Decay, got {type(decay).__name__}")
        self.decay = decay
        where, what = "WeightDecay optimizers", "an optimizer's index (int)"
        self.indices = None if optimizers is None else one_or_several(optimizers, int, where, what)
        self.handles: list[Attachment] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Attach the decay to the fit's optimizers (they exist by now)."""
        opts = list(trainer.optimizers)
        indices = range(len(opts)) if self.indices is None else self.indices
        for i in indices:
            if not 0 <= i < len(opts):
                raise ValueError(f"WeightDecay: no optimizer {i}; the fit has {len(opts)}")
            opt = getattr(opts[i], "_optimizer", opts[i])  # a LightningOptimizer's own
            self.handles.append(self.decay.attach(opt))

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Detach, so that the optimizers do not decay after the fit; the decay's state stays
        in their groups, so a checkpoint saved after the fit (``trainer.save_checkpoint``)
        resumes it exactly."""
        for handle in self.handles:
            handle.remove(keep_state=True)
        self.handles = []
