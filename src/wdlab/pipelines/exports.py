"""A stored study exported: as files (``wdlab export STUDY [--format csv|parquet]``:
:func:`export_study`), or on a dashboard (``wdlab export STUDY --to tensorboard DIR | mlflow
[URI]``: :func:`export_to`).

Both read the study's store (read-only). Files: every run with its status, and the tidy curves.
A dashboard: every run with results (configuration, curves, final metrics), then the selection
(and, for MLflow, the report); the target must not hold this study's logs already, and is
checked writable (or reachable) before anything is written (:mod:`wdlab.integrations.logs`).
A partial study is exported as it stands, and a warning says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wdlab.extras import require
from wdlab.integrations.logs import open_log
from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs
from wdlab.pipelines.study import load_study
from wdlab.store import Store
from wdlab.warn import warn_user


def export_to(directory: str | Path, to: str, target: str | None = None) -> dict[str, Any]:
    """Log the study in ``directory`` to dashboard ``to`` (``tensorboard`` or ``mlflow``).

    ``tensorboard``: ``target`` a folder; ``mlflow``: ``target`` a tracking URI, MLflow's default
    when None. Returns where it went and how many runs."""
    result = load_study(directory)  # a study, read-only, before anything is written
    if not result.runs:  # (a dashboard of nothing blocked the real export later)
        raise ValueError(f"{directory}: no run of the study has results yet: nothing to export")
    if result.partial:
        n = result.partial_note().removeprefix("partial: ")  # "N of M runs unfinished"
        warn_user(f"the study is partial ({n}): {to} gets the runs with results, its answer marked")
    log = open_log(to, target, result.name, result.config, fresh=True)
    try:
        for run in result.runs:
            log.log_run(run)
        log.log_summary(result)
    finally:
        log.close()
    return {"to": to, "where": log.where, "runs": len(result.runs)}


def export_study(
    directory: str | Path,
    fmt: str = "csv",
    out: str | Path | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``runs.<fmt>`` and ``curves.<fmt>`` from a study's store (opened read-only).

    ``runs`` has one row per run; ``curves`` has the columns run_id, metric, epoch, value. A file
    of that name already in ``out`` is replaced only if wdlab exported it from this study (else a
    one-line ``ValueError`` before anything is written; ``force`` replaces it:
    :mod:`wdlab.pipelines.outputs`)."""
    pd = require("pandas", "wdlab export")

    d = Path(directory)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}; valid: csv, parquet")
    if fmt == "parquet":  # one line naming the extra, before anything is written
        require("pyarrow", "wdlab export --format parquet")
    target = Path(out) if out else d
    with Store(d, readonly=True) as store:
        info = store.study()
        source = f"study {info['config_hash'] if info else '?'}"
        check_outputs(target, [f"runs.{fmt}", f"curves.{fmt}"], source, force)
        rows = [_no_results_yet(r) for r in store.run_rows()]
        runs = pd.DataFrame(rows)
        curves = pd.DataFrame(store.curve_rows(), columns=["run_id", "metric", "epoch", "value"])
    for column in _whole_numbers(rows):  # not 10.0 beside the empty cells of pending runs
        runs[column] = runs[column].astype("Int64")
    unfinished = sum(r["status"] in ("pending", "running") for r in rows)
    if unfinished:
        warn_user(
            f"the study is partial ({unfinished} of {len(rows)} runs unfinished): runs.{fmt} "
            "lists them with their status and no results yet"
        )
    paths = {"runs": target / f"runs.{fmt}", "curves": target / f"curves.{fmt}"}
    claim_outputs(target, [p.name for p in paths.values()], source)
    for name, df in (("runs", runs), ("curves", curves)):
        if fmt == "csv":
            df.to_csv(paths[name], index=False)
        else:
            df.to_parquet(paths[name], index=False)
    record_outputs(target, paths.values(), source)
    return paths


def _no_results_yet(row: dict[str, Any]) -> dict[str, Any]:
    """A run's row, its ``final_*`` and ``best_*`` left empty while it is unfinished: the
    numbers stored with a checkpoint or at a rung are mid-training, no run's results."""
    if row["status"] not in ("pending", "running"):
        return row
    return {k: None if k.startswith(("final_", "best_")) else v for k, v in row.items()}


def _whole_numbers(rows: list[dict[str, Any]]) -> list[str]:
    """The columns whose values are all whole numbers or missing (seed, epochs, attempts,
    best_epoch…), some missing: pandas would write them as floats."""
    keys = dict.fromkeys(k for r in rows for k in r)
    out = []
    for k in keys:
        values = [r.get(k) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds == {int} and None in values:
            out.append(k)
    return out
