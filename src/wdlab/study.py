"""Sweeps: expand a config into configurations, split them into batches that fit a memory
budget, train each batch in the engine (one batched computation), and store each batch's
results in one transaction. Running the same sweep again resumes it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wdlab import __version__, engine
from wdlab.data import Dataset
from wdlab.executors import LocalExecutor, RayExecutor
from wdlab.experiments.run import (
    ExperimentResult,
    dataset_from,
    grid,
    rule_from,
    spec_from,
)
from wdlab.models import ModelSpec
from wdlab.store import Store, hash_config

DEFAULT_MAX_MEMORY_MB = 2048  # a quarter of what a 2-core, 24 GiB CI machine has to spare


def default_out(config: dict[str, Any], root: str = "wdlab-out") -> Path:
    """The study directory a config gets by default: the same config, the same directory."""
    d = config["data"]["source"]
    name = Path(d).stem if "." in d else d
    return Path(root) / f"sweep-{name}-{hash_config(config)}"


def bytes_per_config(spec: ModelSpec, data: Dataset, batch_size: int | None) -> int:
    """A generous estimate of one configuration's memory in a batch (weights, gradients,
    optimizer state, activations of the largest forward)."""
    model = spec.build()
    n_params = sum(p.numel() for p in model.parameters())
    rows = max(
        len(data.y_train), len(data.y_test), len(data.y_val) if data.y_val is not None else 0
    )
    if batch_size:
        rows = max(min(batch_size, len(data.y_train)), len(data.y_test))
    widths = [spec.in_dim // 2, 1] if spec.kind == "seed-mlp" else [*spec.hidden, spec.out_dim]
    activations = rows * sum(widths) * 4  # pre- and post-activations, their gradients
    return 4 * (5 * n_params) + activations


def plan_batches(
    configs: Sequence[engine.RunConfig],
    per_config: int,
    max_memory_mb: float,
    max_batch: int | None = None,
) -> list[list[engine.RunConfig]]:
    """Split configurations into batches: one optimizer class each, within the budget."""
    if max_memory_mb <= 0:
        raise ValueError(f"--max-memory must be > 0 MB, got {max_memory_mb}")
    k = max(1, int(max_memory_mb * 2**20 // max(per_config, 1)))
    if max_batch:
        k = min(k, max_batch)
    by_opt: dict[str, list[engine.RunConfig]] = {}
    for c in configs:
        by_opt.setdefault(engine.optimizer_class(c.optimizer).__name__, []).append(c)
    out = []
    for group in by_opt.values():
        out += [list(group[i : i + k]) for i in range(0, len(group), k)]
    return out


@dataclass
class SweepResult(ExperimentResult):
    """A sweep's results as read back from its store; the notebook table (``_repr_html_``)
    and ``plot()`` come from :class:`ExperimentResult`."""

    directory: Path = field(default_factory=Path)
    counts: dict[str, int] = field(default_factory=dict)
    name: str = ""


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
        decay_table=info["data"].get("decay_table"),
        config=info["config"],
        data=info["data"],
        task=info["task"] or "binary",
        runs=runs,
        seconds=sum(r.seconds for r in {id(r): r for r in runs}.values()),
        engine_note=runs[0].engine if runs else "",
        directory=d,
        counts=counts,
        name=info["name"],
    )
    result.select()
    return result


def run_sweep(
    config: dict[str, Any],
    out: str | Path | None = None,
    *,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_batch: int | None = None,
    progress: bool = False,
    executor: LocalExecutor | RayExecutor | None = None,
    name: str | None = None,
) -> SweepResult:
    """Train every configuration of a validated config that the store does not hold yet,
    batch by batch, and return the study as read back from the store.

    ``executor`` trains the batches (default: :class:`~wdlab.executors.LocalExecutor`, in this
    process; :class:`~wdlab.executors.RayExecutor` for a Ray cluster). Each batch's results
    are written here, by the driver, in one transaction as the batch finishes.
    """
    out = Path(out) if out is not None else default_out(config)
    ds = dataset_from(config)
    spec = spec_from(config, ds)
    configs = grid(config)
    t = config["train"]
    train_kwargs = dict(
        epochs=t["epochs"],
        eval_every=t["eval_every"],
        rule=rule_from(config),
        schedule=t["schedule"],
        device=t["device"],
        batch_size=t["batch_size"] or None,
        shuffle_seed=config["data"]["seed"],
        precision=t["precision"],
    )
    executor = executor or LocalExecutor()
    with Store(out) as store:
        store.init_study(name or out.name, config, configs, __version__)
        from wdlab.decay import decay_table

        table = decay_table(spec.build(), rule_from(config)).to_dict()
        store.set_data({"name": ds.name, **ds.meta, "decay_table": table}, ds.task)
        store.recover()
        todo = store.pending()
        batches = plan_batches(
            todo, bytes_per_config(spec, ds, t["batch_size"] or None), max_memory_mb, max_batch
        )
        counts = store.counts()
        finished = counts["done"] + counts["diverged"]
        bar = _progress(len(configs), finished) if progress else None
        t0, steps = time.perf_counter(), 0
        try:
            for batch, results in executor.run(
                spec, ds, batches, train_kwargs, on_start=store.mark_running
            ):
                store.save_batch(results)
                steps += len(batch) * t["epochs"]
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


def _progress(total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="sweep", unit="config", leave=False)


def export_study(
    directory: str | Path, fmt: str = "csv", out: str | Path | None = None
) -> dict[str, Path]:
    """Write ``runs.<fmt>`` (one row per run) and ``curves.<fmt>`` (run_id, metric, epoch,
    value) from a study's store."""
    import pandas as pd

    from wdlab.store import Store

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
