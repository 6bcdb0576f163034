"""Benchmark: a finished study exported to TensorBoard and to MLflow, and read back with each
package's own reader.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_export.py [--epochs 20] [--seeds 3] [--json]

Makes one small study with the public API (``wdlab.sweep("mlp", "wine", weight_decay=[0, 1e-4,
1e-3, 1e-2], seeds=3, epochs=20, out=TMP/study)``), exports it with ``wdlab.pipelines.export_to``
(what ``wdlab export STUDY --to tensorboard DIR | mlflow URI`` runs) to a TensorBoard folder and
to an MLflow store ``sqlite:///TMP/mlflow.db``, timing each export, then reads each back and
times the read: TensorBoard's ``EventAccumulator`` over every run folder (all scalar tags), and
``MlflowClient`` (the experiment's child runs, ``get_metric_history`` for each metric).

Counted: runs written (the study's runs) against runs read (run folders / child runs), and curve
points written (every finite point of every curve of every run, from the study as stored,
``load_study(out).runs[i].curves``) against curve points read (``final/*`` metrics and the
selection are not curve points). Every point read is matched to the stored one by (run, curve,
epoch): the table gives how many matched, the max absolute and the max relative difference
(TensorBoard keeps float32, so up to 2**-24 ~ 6e-8 relative is rounding; MLflow keeps float64).
Asserts nothing. The packages are imported before anything is timed (the export times are the
export's own, a new SQLite store's creation included). ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import torch.utils.tensorboard  # noqa: F401  (imported before timing: the TensorBoard writer)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import wdlab
from wdlab.integrations.content import run_name, safe_name
from wdlab.pipelines import export_to, load_study
from wdlab.records import is_per_epoch

WEIGHT_DECAYS = [0.0, 1e-4, 1e-3, 1e-2]
F32_REL = 2.0**-24  # float32's relative rounding (round to nearest)

Point = tuple[str, str, int]  # (run name, curve, epoch)


def make_study(out: Path, epochs: int, seeds: int) -> float:
    """A finished study in ``out``; the seconds it took."""
    t0 = time.perf_counter()
    wdlab.sweep("mlp", "wine", weight_decay=WEIGHT_DECAYS, seeds=seeds, epochs=epochs, out=out)
    return time.perf_counter() - t0


def stored_points(study: Path) -> tuple[list[str], dict[Point, float]]:
    """The study's run names and every finite curve point, as stored."""
    result = load_study(study)
    names, points = [], {}
    for run in result.runs:
        name = run_name(run.config)
        names.append(name)
        curves = run.curves
        for key, values in curves.series.items():
            epochs = curves.epoch if is_per_epoch(key) else curves.eval_epoch
            for epoch, v in zip(epochs, values, strict=False):
                if isinstance(v, (int, float)) and math.isfinite(v):
                    points[(name, key, int(epoch))] = float(v)
    return names, points


def timed_export(study: Path, to: str, target: str) -> tuple[float, str]:
    """Seconds of one export, and where it went."""
    t0 = time.perf_counter()
    done = export_to(study, to, target)
    return time.perf_counter() - t0, done["where"]


def read_tensorboard(root: Path, names: list[str]) -> tuple[int, list[tuple[Point, float]]]:
    """Run folders read and every curve point in them (EventAccumulator, all scalars)."""
    by_folder = {safe_name(n): n for n in names}
    runs, points = 0, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "selection"):
        ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        runs += 1
        name = by_folder.get(folder.name, folder.name)
        for tag in ea.Tags()["scalars"]:
            if not tag.startswith("final/"):
                points += [((name, tag, e.step), e.value) for e in ea.Scalars(tag)]
    return runs, points


def read_mlflow(uri: str, experiment: str) -> tuple[int, list[tuple[Point, float]]]:
    """Child runs read and every curve point in them (MlflowClient's metric history)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    points = []
    for child in children:
        name = child.info.run_name
        for key in sorted(child.data.metrics):
            if not key.startswith("final/"):
                history = client.get_metric_history(child.info.run_id, key)
                points += [((name, key, m.step), m.value) for m in history]
    return len(children), points


def compare(stored: dict[Point, float], read: list[tuple[Point, float]]) -> dict[str, Any]:
    """Points read matched to the stored ones; the largest differences."""
    matched, max_abs, max_rel = 0, 0.0, 0.0
    for point, value in read:
        if point not in stored:
            continue
        matched += 1
        want = stored[point]
        diff = abs(float(value) - want)
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / abs(want) if want else (0.0 if diff == 0 else math.inf))
    missing = len(set(stored) - {p for p, _ in read})
    return {"matched": matched, "missing": missing, "max_abs": max_abs, "max_rel": max_rel}


def measure(tmp: Path, epochs: int, seeds: int) -> dict[str, Any]:
    """The study, both exports and both reads."""
    study = tmp / "study"
    sweep_s = make_study(study, epochs, seeds)
    names, stored = stored_points(study)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    targets = {
        "tensorboard": (str(tmp / "tb"), lambda: read_tensorboard(tmp / "tb" / "study", names)),
        "mlflow": (uri, lambda: read_mlflow(uri, "study")),
    }
    rows = []
    for to, (target, read) in targets.items():
        export_s, where = timed_export(study, to, target)
        t0 = time.perf_counter()
        runs_read, points = read()
        read_s = time.perf_counter() - t0
        row = {"target": to, "where": where, "runs_written": len(names), "runs_read": runs_read}
        row |= {"points_written": len(stored), "points_read": len(points)}
        row |= compare(stored, points)
        rows.append(row | {"export_s": export_s, "read_s": read_s})
    study_info = {"runs": len(names), "epochs": epochs, "seeds": seeds, "sweep_s": sweep_s}
    return {"study": study_info, "rows": rows}


def print_table(doc: dict[str, Any]) -> None:
    """One line per target."""
    s = doc["study"]
    print(
        f"# bench_export: mlp on wine, {s['runs']} runs ({len(WEIGHT_DECAYS)} weight decays x "
        f"{s['seeds']} seeds), {s['epochs']} epochs; sweep {s['sweep_s']:.2f} s"
    )
    print(f"# float32 rounding: up to {F32_REL:.2e} relative")
    print(
        f"{'target':<12} {'runs w/r':>9} {'points w/r':>13} {'matched':>8} {'max abs diff':>13} "
        f"{'max rel diff':>13} {'export s':>9} {'read s':>8}"
    )
    for r in doc["rows"]:
        runs = f"{r['runs_written']}/{r['runs_read']}"
        points = f"{r['points_written']}/{r['points_read']}"
        print(
            f"{r['target']:<12} {runs:>9} {points:>13} {r['matched']:>8} {r['max_abs']:>13.3e} "
            f"{r['max_rel']:>13.3e} {r['export_s']:>9.3f} {r['read_s']:>8.3f}"
        )


def main() -> None:
    """Run and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store-creation notes on stderr
    with tempfile.TemporaryDirectory(prefix="wdlab-bench-export-") as tmp:
        doc = measure(Path(tmp), args.epochs, args.seeds)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)


if __name__ == "__main__":
    main()
