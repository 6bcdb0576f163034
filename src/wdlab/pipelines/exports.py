"""A stored study on a dashboard: ``wdlab export STUDY --to tensorboard DIR | mlflow [URI]``.

Read from the study's store (read-only), like every other export: every run's configuration,
curves and final metrics, then the selection (and, for MLflow, the report). The target must not
hold this study's logs already, and is checked writable (or reachable) before anything is
written (:mod:`wdlab.integrations.logs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wdlab.integrations.logs import open_log
from wdlab.pipelines.study import load_study


def export_to(directory: str | Path, to: str, target: str | None = None) -> dict[str, Any]:
    """Log the study in ``directory`` to dashboard ``to`` (``tensorboard``: ``target`` a
    folder; ``mlflow``: ``target`` a tracking URI, MLflow's default when None). Returns where
    it went and how many runs."""
    result = load_study(directory)  # a study, read-only, before anything is written
    log = open_log(to, target, result.name, result.config, fresh=True)
    try:
        for run in result.runs:
            log.log_run(run)
        log.log_summary(result)
    finally:
        log.close()
    return {"to": to, "where": log.where, "runs": len(result.runs)}
