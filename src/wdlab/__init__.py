"""wdlab: the weight-decay lab for PyTorch.

Every flavour of weight decay as a small piece that works with any ``torch.optim`` optimizer,
verified against PyTorch and scikit-learn, trained many-configurations-at-once.
"""

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
from wdlab.engine import RunConfig, RunResult, train
from wdlab.experiments.seed import DemoResult, DemoSettings, run_demo
from wdlab.models import ModelSpec

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RULE",
    "EVERYTHING",
    "FORMULAS",
    "MODES",
    "Dataset",
    "Decay",
    "DecayRule",
    "DecayTable",
    "DemoResult",
    "DemoSettings",
    "ModelSpec",
    "RunConfig",
    "RunResult",
    "__version__",
    "decay_table",
    "param_groups",
    "run_demo",
    "seed_noise",
    "train",
]
