"""Weight-decay timescales (Wang & Aitchison, ICML 2025) and carrying a setting over.

Placeholder: the issue-15 work fills this module. Contract used by the trainer:
``timescales(config, iters_per_epoch) -> {"tau_iter": float, "tau_epoch": float}`` with NaN
where τ is not defined for that mode and optimizer.
"""

from __future__ import annotations

import math

from wdlab.records import RunConfig


def timescales(config: RunConfig, iters_per_epoch: float) -> dict[str, float]:
    """τ_iter and τ_epoch of one configuration (NaN where not defined)."""
    return {"tau_iter": math.nan, "tau_epoch": math.nan}
