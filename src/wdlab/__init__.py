"""wdlab: the weight-decay lab for PyTorch.

Every flavour of weight decay as a small piece that works with any ``torch.optim`` optimizer,
verified against PyTorch and scikit-learn, trained many-configurations-at-once.
"""

from wdlab.audit import audit
from wdlab.data import Dataset, seed_noise
from wdlab.decay import (
    DEFAULT_RULE,
    EVERYTHING,
    FORMULAS,
    MODES,
    Decay,
    DecayRule,
    DecayTable,
    decay_table,
    param_groups,
)
from wdlab.models import ModelSpec
from wdlab.pipelines import DemoResult, DemoSettings, SweepResult, run_demo, run_sweep
from wdlab.records import Curves, Result, RunConfig, RunResult
from wdlab.timescale import timescales, transfer
from wdlab.trainer import train
from wdlab.version import __version__

__all__ = [
    "DEFAULT_RULE",
    "EVERYTHING",
    "FORMULAS",
    "MODES",
    "Curves",
    "Dataset",
    "Decay",
    "DecayRule",
    "DecayTable",
    "DemoResult",
    "DemoSettings",
    "ModelSpec",
    "Result",
    "RunConfig",
    "RunResult",
    "SweepResult",
    "__version__",
    "audit",
    "decay_table",
    "param_groups",
    "run_demo",
    "run_sweep",
    "seed_noise",
    "timescales",
    "train",
    "transfer",
]
