"""Pipelines: config → plan → result value. ``demo``, and ``sweep`` (``run`` is a sweep into a
temporary store); reading results back. They return values and draw nothing."""

from wdlab.pipelines.demo import REGIMES, DemoSettings, run_demo, seed_init
from wdlab.pipelines.exports import export_study, export_to
from wdlab.pipelines.load import build_report, load_result
from wdlab.pipelines.memory import bytes_per_config, plan_batches
from wdlab.pipelines.own import sweep
from wdlab.pipelines.results import DemoResult, SweepResult, former_name
from wdlab.pipelines.study import (
    DEFAULT_MAX_MEMORY_MB,
    IncompleteStudy,
    default_out,
    load_study,
    run_experiment,
    run_sweep,
)

__all__ = [
    "DEFAULT_MAX_MEMORY_MB",
    "REGIMES",
    "DemoResult",
    "DemoSettings",
    "IncompleteStudy",
    "SweepResult",
    "build_report",
    "bytes_per_config",
    "default_out",
    "export_study",
    "export_to",
    "load_result",
    "load_study",
    "plan_batches",
    "run_demo",
    "run_experiment",
    "run_sweep",
    "seed_init",
    "sweep",
]


def __getattr__(name: str) -> object:
    """Former names, with a ``DeprecationWarning`` (``ExperimentResult``: SweepResult)."""
    return former_name(__name__, name, stacklevel=2)
