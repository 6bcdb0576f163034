"""The files a demo or run leaves: results.json (the result value), curves.csv, losses.png."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from wdlab.jsonsafe import dumps
from wdlab.records import PER_EPOCH, Result, RunResult, is_per_epoch
from wdlab.report.figures import FIGURES, figure


def write_results(
    result: Result, out: str | Path, doc: dict[str, Any] | None = None
) -> dict[str, Path]:
    """results.json (``doc``, default the result's document), curves.csv (tidy curves) and
    losses.png in ``out`` (none before a run has finished); wd_curve.png too for a
    weight-decay grid. Returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "curves": out / "curves.csv"}
    paths["results"].write_text(dumps(doc or result.to_dict(), indent=1) + "\n")
    write_curves_csv(result.runs, paths["curves"])
    for name, kind in (("losses", "loss"), ("wd_curve", "wd")):
        if FIGURES[name].applies(result):
            paths[name] = out / f"{name}.png"
            figure(result, kind).savefig(paths[name], dpi=110, bbox_inches="tight")
    return paths


RUN_COLUMNS = ("mode", "weight_decay", "lr", "seed")  # which run a row of curves.csv is


def write_curves_csv(runs: list[RunResult], path: Path) -> None:
    """Tidy curves: one row per (run, epoch), the run named by its regime, mode, weight decay,
    lr and seed; per-epoch series (the loss, the weight norm, diagnostics) fill every row,
    evaluated columns are blank between evaluations."""
    names = sorted({k for r in runs for k in r.curves.series})
    extra = [k for k in names if is_per_epoch(k) and k not in PER_EPOCH]
    per_eval = [k for k in names if not is_per_epoch(k)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["regime", *RUN_COLUMNS, "epoch", *PER_EPOCH, *extra, *per_eval])
        for r in runs:
            c = r.curves
            at = {e: i for i, e in enumerate(c.eval_epoch)}
            run = [r.config.label, *(getattr(r.config, k) for k in RUN_COLUMNS)]
            for i, e in enumerate(c.epoch):
                row = [*run, e, *(c[k][i] for k in PER_EPOCH)]
                row += [c[k][i] if k in c.series else "" for k in extra]
                j = at.get(e)
                row += [("" if j is None else c[k][j]) for k in per_eval]
                w.writerow(row)
