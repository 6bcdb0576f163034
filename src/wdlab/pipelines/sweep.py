"""Sweeps: expand a config into configurations, split them into batches that fit a memory
budget, train each batch through an executor (one batched computation), and store each batch's
results in one transaction. Running the same sweep again resumes it.

``wdlab run`` is the same pipeline into a temporary store (:func:`run_experiment`).
Returns :class:`~wdlab.pipelines.results.SweepResult` values; draws nothing and writes no file
but the study's store.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from wdlab.config import Experiment, validate
from wdlab.data import Dataset
from wdlab.decay import decay_table
from wdlab.executors import Executor, LocalExecutor
from wdlab.extras import require
from wdlab.models import ModelSpec, activations_per_example
from wdlab.optimizers import optimizer_spec
from wdlab.pipelines.results import SweepResult
from wdlab.records import RunConfig
from wdlab.store import Store, hash_config
from wdlab.version import __version__

DEFAULT_MAX_MEMORY_MB = 2048  # a quarter of what a 2-core, 24 GiB CI machine has to spare


def default_out(config: Experiment | Mapping[str, Any], root: str = "wdlab-out") -> Path:
    """The study directory a config gets by default: the same config, the same directory."""
    config = validate(config)
    d = config.data.source
    name = Path(d).stem if "." in d else d
    return Path(root) / f"sweep-{name}-{hash_config(config.to_dict())}"


def bytes_per_config(spec: ModelSpec, data: Dataset, batch_size: int | None) -> int:
    """A generous estimate of one configuration's memory in a batch: weights, gradients and
    optimizer state (5 copies of the parameters), and the activations of the largest forward
    (counted on one example, see :func:`wdlab.models.activations_per_example`)."""
    with torch.random.fork_rng(devices=[]):
        model = spec.build()
    n_params = sum(p.numel() for p in model.parameters())
    n_val = len(data.y_val) if data.y_val is not None else 0
    rows = max(len(data.y_train), len(data.y_test), n_val)
    if batch_size:
        rows = max(min(batch_size, len(data.y_train)), len(data.y_test))
    per_example = activations_per_example(model, data.X_train[:1])
    return 4 * (5 * n_params) + 4 * rows * per_example


def plan_batches(
    configs: Sequence[RunConfig],
    per_config: int,
    max_memory_mb: float,
    max_batch: int | None = None,
) -> list[list[RunConfig]]:
    """Split configurations into batches: one optimizer class each, within the budget."""
    if max_memory_mb <= 0:
        raise ValueError(f"--max-memory must be > 0 MB, got {max_memory_mb}")
    k = max(1, int(max_memory_mb * 2**20 // max(per_config, 1)))
    if max_batch:
        k = min(k, max_batch)
    by_opt: dict[str, list[RunConfig]] = {}
    for c in configs:
        by_opt.setdefault(optimizer_spec(c.optimizer).cls_name, []).append(c)
    out = []
    for group in by_opt.values():
        out += [list(group[i : i + k]) for i in range(0, len(group), k)]
    return out


def load_study(directory: str | Path) -> SweepResult:
    """Read a study back from its store (the only source of a sweep's results)."""
    d = Path(directory)
    if not (d / "study.db").exists():
        raise ValueError(f"no study in {d} (no study.db)")
    with Store(d) as store:
        info = store.study()
        if info is None:
            raise ValueError(f"{d}/study.db holds no study")
        runs = store.runs()
        counts = store.counts()
    result = SweepResult(
        runs=runs,
        name=info["name"],
        task=info["task"] or "binary",
        config=info["config"],
        data=info["data"],
        decay_table=info["data"].get("decay_table"),
        # every run of a batch records that batch's wall time: count each batch once
        seconds=sum({r.seconds for r in runs}),
        engine=runs[0].engine if runs else "",
        counts=counts,
        directory=d,
    )
    result.select()
    return result


def run_sweep(
    config: Experiment | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_batch: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    name: str | None = None,
) -> SweepResult:
    """Train every configuration of a config that the store does not hold yet, batch by batch,
    and return the study as read back from the store.

    ``executor`` trains the batches (default: :class:`~wdlab.executors.LocalExecutor`, in this
    process; :class:`~wdlab.executors.RayExecutor` for a Ray cluster). Each batch's results
    are written here, by the driver, in one transaction as the batch finishes.
    """
    config = validate(config)
    out = Path(out) if out is not None else default_out(config)
    ds = config.data.load()
    spec = config.model.spec(ds)
    configs = config.grid()
    train_kwargs = config.train.train_kwargs(shuffle_seed=config.data.seed)
    train_kwargs["rule"] = config.decay.decay_rule()
    executor = executor or LocalExecutor()
    with Store(out) as store:
        store.init_study(name or out.name, config.to_dict(), configs, __version__)
        with torch.random.fork_rng(devices=[]):
            table = decay_table(spec.build(), train_kwargs["rule"]).to_dict()
        store.set_data({"name": ds.name, **ds.meta, "decay_table": table}, ds.task)
        store.recover()
        todo = store.pending()
        per_config = bytes_per_config(spec, ds, config.train.batch_size or None)
        batches = plan_batches(todo, per_config, max_memory_mb, max_batch)
        counts = store.counts()
        bar = _progress(len(configs), counts["done"] + counts["diverged"]) if progress else None
        t0, steps = time.perf_counter(), 0
        try:
            for batch, results in executor.run(
                spec, ds, batches, train_kwargs, on_start=store.mark_running
            ):
                store.save_batch(results)
                steps += len(batch) * config.train.epochs
                if bar is not None:
                    rate = steps / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(f"{rate:,.0f} model-steps/s")
                    bar.update(len(batch))
        except (RuntimeError, ValueError) as exc:
            store.mark_failed(store.running(), f"{type(exc).__name__}: {exc}")
            raise
        if bar is not None:
            bar.close()
    return load_study(out)


def run_experiment(
    config: Experiment | Mapping[str, Any], *, progress: bool = False
) -> SweepResult:
    """Train every configuration of a config and choose on validation: a sweep into a
    temporary store, read back and returned (``wdlab run``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wdlab-run-") as tmp:
        result = run_sweep(config, Path(tmp) / "study", progress=progress)
    result.kind, result.name, result.directory = "run", "", None
    result.seconds = time.perf_counter() - t0
    return result


def _progress(total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="sweep", unit="config", leave=False)


def export_study(
    directory: str | Path, fmt: str = "csv", out: str | Path | None = None
) -> dict[str, Path]:
    """Write ``runs.<fmt>`` (one row per run) and ``curves.<fmt>`` (run_id, metric, epoch,
    value) from a study's store."""
    pd = require("pandas", "wdlab export")

    d = Path(directory)
    if not (d / "study.db").exists():
        raise ValueError(f"no study in {d} (no study.db)")
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}; valid: csv, parquet")
    target = Path(out) if out else d
    target.mkdir(parents=True, exist_ok=True)
    with Store(d) as store:
        runs = pd.DataFrame(store.run_rows())
        curves = pd.DataFrame(store.curve_rows(), columns=["run_id", "metric", "epoch", "value"])
    paths = {"runs": target / f"runs.{fmt}", "curves": target / f"curves.{fmt}"}
    for name, df in (("runs", runs), ("curves", curves)):
        if fmt == "csv":
            df.to_csv(paths[name], index=False)
        else:
            df.to_parquet(paths[name], index=False)
    return paths
