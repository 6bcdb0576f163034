"""wdlab: the weight-decay lab for PyTorch.

Every flavour of weight decay as a small piece that works with any ``torch.optim`` optimizer,
verified against PyTorch and scikit-learn, trained many-configurations-at-once.

The names below are imported on first use (PEP 562), so ``import wdlab.cli`` loads no torch:
the command line imports it inside ``main``, where Ctrl-C is one line, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from wdlab.version import __version__

_EXPORTS = {
    "audit": "wdlab.auditing",
    "Dataset": "wdlab.data",
    "seed_noise": "wdlab.data",
    "DEFAULT_RULE": "wdlab.decay",
    "EVERYTHING": "wdlab.decay",
    "FORMULAS": "wdlab.decay",
    "MODES": "wdlab.decay",
    "Decay": "wdlab.decay",
    "DecayRule": "wdlab.decay",
    "DecayTable": "wdlab.decay",
    "decay_table": "wdlab.decay",
    "param_groups": "wdlab.decay",
    "ModelSpec": "wdlab.models",
    "Metric": "wdlab.tasks",
    "DemoResult": "wdlab.pipelines",
    "DemoSettings": "wdlab.pipelines",
    "SweepResult": "wdlab.pipelines",
    "run_demo": "wdlab.pipelines",
    "run_sweep": "wdlab.pipelines",
    "sweep": "wdlab.pipelines",
    "load_study": "wdlab.pipelines",
    "Curves": "wdlab.records",
    "Result": "wdlab.records",
    "RunConfig": "wdlab.records",
    "RunResult": "wdlab.records",
    "train": "wdlab.trainer",
    "timescales": "wdlab.timescale",
    "transfer": "wdlab.timescale",
}

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
    "Metric",
    "ModelSpec",
    "Result",
    "RunConfig",
    "RunResult",
    "SweepResult",
    "__version__",
    "audit",
    "decay_table",
    "load_study",
    "param_groups",
    "run_demo",
    "run_sweep",
    "seed_noise",
    "sweep",
    "timescales",
    "train",
    "transfer",
]


def __getattr__(name: str) -> Any:
    """Import an exported name, or a subpackage (``wdlab.decay.cosine`` after ``import
    wdlab``, as after ``import torch`` ``torch.nn``), on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        sub = name.isidentifier() and not name.startswith("_")  # "x.y" is no attribute
        if not sub or importlib.util.find_spec(f"wdlab.{name}") is None:
            raise AttributeError(f"module 'wdlab' has no attribute {name!r}")
        return importlib.import_module(f"wdlab.{name}")  # the import sets the attribute
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next time without __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from wdlab.auditing import audit
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
    from wdlab.pipelines import (
        DemoResult,
        DemoSettings,
        SweepResult,
        load_study,
        run_demo,
        run_sweep,
        sweep,
    )
    from wdlab.records import Curves, Result, RunConfig, RunResult
    from wdlab.tasks import Metric
    from wdlab.timescale import timescales, transfer
    from wdlab.trainer import train
