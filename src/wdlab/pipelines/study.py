"""Sweeps: expand a config into configurations, split them into batches that fit a memory
budget, train each batch through an executor (one batched computation), and store each batch's
results in one transaction. Running the same sweep again resumes it (and retries failed runs).

Several processes may run the same sweep into one folder: each claims a batch in the store just
before training it, so they share the work and no configuration is trained twice; a process
whose own work is done waits for the batches others hold (taking them over if their process
ends) and then returns the whole study, never a partial one (:mod:`wdlab.store`).

**The memory budget** (``max_memory_mb``) bounds one batch's training memory: stacked weights,
gradients and optimizer state, the activations of the largest forward, the per-epoch records
and the results the batch returns (:mod:`wdlab.pipelines.memory`, measured). It does not cover
the process itself (Python, torch and the data: ``memory.PROCESS_BASELINE_MB``).

``wdlab run`` is the same pipeline into a temporary store (:func:`run_experiment`).
Returns :class:`~wdlab.pipelines.results.SweepResult` values; draws nothing and writes no file
but the study's store.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wdlab.config import MAX_CONFIGS, Experiment, validate
from wdlab.data import Dataset
from wdlab.decay import decay_table
from wdlab.devices import DEFAULT_MAX_MEMORY_MB, resolve_device
from wdlab.diagnostics import DIAGNOSTICS
from wdlab.executors import Batch, Executor, LocalExecutor
from wdlab.extras import require
from wdlab.models import ModelSpec
from wdlab.pipelines.memory import (
    bytes_per_config,
    check_budget,
    first_line,
    meta_build,
    plan_batches,
)
from wdlab.pipelines.results import SweepResult
from wdlab.records import RunConfig
from wdlab.store import Store, StoreError, hash_config, worker_id
from wdlab.trainer import Plan
from wdlab.version import __version__

POLL_SECONDS = 0.5  # how often a process waiting on others' batches looks at the store
BEAT_SECONDS = 10.0  # heartbeat period of a training process (for workers on other hosts)


def default_out(config: Experiment | Mapping[str, Any], root: str = "wdlab-out") -> Path:
    """The study directory a config gets by default: the same config, the same directory."""
    config = validate(config)
    d = config.data.source
    name = Path(d).stem if "." in d else d
    return Path(root) / f"sweep-{name}-{hash_config(config.identity())}"


def check_grid(config: Experiment, max_configs: int | None) -> None:
    """A one-line ``ValueError`` when the grid has more than ``max_configs`` configurations."""
    n = config.grid_size()
    if max_configs is not None and n > max_configs:
        raise ValueError(
            f"the grid has {n:,} configurations, more than the limit of {max_configs:,}; "
            f"pass --max-configs {n} to run it anyway"
        )


def load_study(directory: str | Path) -> SweepResult:
    """Read a study back from its store (read-only: the only source of a sweep's results)."""
    d = Path(directory)
    with Store(d, readonly=True) as store:
        info = store.study()
        if info is None:
            raise StoreError(f"{d}/study.db holds no study")
        runs = store.runs()
        counts = store.counts()
    result = SweepResult(
        runs=runs,
        name=info["name"],
        task=info["task"] or "binary",
        config=info["config"],
        data=info["data"],
        decay_table=info["data"].get("decay_table"),
        seconds=info["seconds"],  # the wall time of the sweeps that trained it
        engine=runs[0].engine if runs else "",
        counts=counts,
        directory=d,
    )
    result.select()
    return result


def _prepare(config: Experiment, max_configs: int | None) -> tuple[Dataset, ModelSpec, dict]:
    """Checks that need no store (grid size, diagnostics), then the data, the model spec and
    the trainer's keywords."""
    check_grid(config, max_configs)
    missing = [d for d in config.train.diagnostics if d not in DIAGNOSTICS]
    if missing:
        valid = ", ".join(DIAGNOSTICS) or "none in this wdlab"
        raise ValueError(f"train.diagnostics: {missing[0]!r} is not available; valid: {valid}")
    ds = config.data.load()
    spec = config.model.spec(ds)
    train_kwargs = config.train.train_kwargs(shuffle_seed=config.data.seed)
    train_kwargs["rule"] = config.decay.decay_rule()
    return ds, spec, train_kwargs


def run_sweep(
    config: Experiment | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_batch: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    name: str | None = None,
    max_configs: int | None = MAX_CONFIGS,
) -> SweepResult:
    """Train every configuration of a config that the store does not hold yet, batch by batch,
    and return the study as read back from the store.

    ``executor`` trains the batches (default: :class:`~wdlab.executors.LocalExecutor`, in this
    process; :class:`~wdlab.executors.RayExecutor` for a Ray cluster). Each batch's results
    are written here, by the driver, in one transaction as the batch finishes. Failed runs of an
    earlier attempt are retried. A grid larger than ``max_configs`` (None: no limit) and a
    configuration larger than the budget are refused before anything is trained or written.
    """
    t0 = time.perf_counter()
    config = validate(config)
    out = Path(out) if out is not None else default_out(config)
    ds, spec, train_kwargs = _prepare(config, max_configs)
    study = Study(
        out,
        name or out.name,
        config.to_dict(),
        config.identity(),
        ds,
        spec,
        config.grid(),
        train_kwargs,
    )
    return run_study(
        study,
        executor=executor,
        max_memory_mb=max_memory_mb,
        max_batch=max_batch,
        progress=progress,
        t0=t0,
    )


@dataclass
class Study:
    """What a sweep trains into its store: the configurations, the data, the model and the
    trainer's keywords, with the config (stored) and its identity (hashed: the same identity,
    the same study)."""

    directory: Path
    name: str
    config: dict[str, Any]
    identity: dict[str, Any]
    data: Dataset
    spec: ModelSpec
    configs: list[RunConfig]
    train_kwargs: dict[str, Any]


def run_study(
    study: Study,
    *,
    executor: Executor | None = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_batch: int | None = None,
    progress: bool = False,
    t0: float | None = None,
) -> SweepResult:
    """Train what ``study``'s store does not hold yet, batch by batch (see :func:`run_sweep`),
    and return the study as read back from its store."""
    t0 = time.perf_counter() if t0 is None else t0
    ds, spec, kw = study.data, study.spec, study.train_kwargs
    model = meta_build(spec)  # one build (a user's factory runs once) for memory and the table
    per_config = bytes_per_config(
        spec,
        ds,
        kw["batch_size"],
        kw["epochs"],
        kw["eval_every"],
        study.configs[0].optimizer,
        kw["precision"],
        model=model,
    )
    local = executor is None or isinstance(executor, LocalExecutor)  # Ray: the workers' device
    device = resolve_device(kw.get("device"), "train.device") if local else None
    check_budget(per_config, max_memory_mb, device)
    table = decay_table(model, kw["rule"]).to_dict()
    with Store(study.directory) as store:
        store.init_study(
            study.name, study.config, study.configs, __version__, identity=study.identity
        )
        store.set_data({"name": ds.name, **ds.meta, "decay_table": table}, ds.task)
        owner = worker_id()
        store.register(owner)
        try:
            store.reclaim()
            store.retry_failed()
            plan = Plan(spec, ds, tuple(study.configs[:1]), 1, batch_size=kw["batch_size"])
            job = _Job(store, owner, executor or LocalExecutor(), spec, ds, kw)
            job.steps_per_epoch = plan.steps_per_epoch
            job.run(len(study.configs), per_config, max_memory_mb, max_batch, progress, t0)
        except Exception as exc:
            store.mark_failed(owner, f"{type(exc).__name__}: {first_line(exc)}")
            raise
        finally:  # on Ctrl-C too: what this process still holds goes back to pending
            store.unregister(owner)
    return load_study(study.directory)


class _Job:
    """One process's share of a sweep: claim batches, train them, store them; then wait for
    what other processes hold."""

    def __init__(
        self,
        store: Store,
        owner: str,
        executor: Executor,
        spec: ModelSpec,
        ds: Dataset,
        train_kwargs: dict[str, Any],
    ) -> None:
        self.store, self.owner, self.executor = store, owner, executor
        self.spec, self.ds, self.train_kwargs = spec, ds, train_kwargs
        self.steps_per_epoch = 1
        self.bar: Any = None
        self.epochs = int(train_kwargs["epochs"])
        self.steps = 0  # optimizer steps of all configurations trained here
        self.shown: dict[int, float] = {}  # progress shown per batch (by id), in configurations
        self.last_beat = time.monotonic()
        self.told = False

    def run(
        self,
        total: int,
        per_config: int,
        max_memory_mb: float,
        max_batch: int | None,
        progress: bool,
        t0: float,
    ) -> None:
        """Train every pending configuration (claiming batch by batch) until the study is
        whole; add this process's wall time to the study."""
        counts = self.store.counts()
        if progress:
            self.bar = _progress(total, counts["done"] + counts["diverged"])
        self.t_train = time.perf_counter()
        mark = t0
        try:
            while True:
                todo = self.store.pending()
                if todo:
                    batches = plan_batches(todo, per_config, max_memory_mb, max_batch)
                    for batch, results in self.executor.run(
                        self.spec,
                        self.ds,
                        self._claimed(batches),
                        self.train_kwargs,
                        on_epoch=self._on_epoch,
                    ):
                        now = time.perf_counter()
                        self.store.save_batch(results, seconds=now - mark)
                        mark = now
                        self._batch_done(batch)
                    continue
                if not self._wait():
                    break
        finally:
            if self.steps or self.told:  # a process that only read the study adds no time
                self.store.add_seconds(time.perf_counter() - mark)
            if self.bar is not None:
                self.bar.close()

    def _claimed(self, batches: Sequence[Batch]) -> Iterator[Batch]:
        """Each batch as it is taken, reduced to what this process could claim (nothing that
        another process holds or has finished)."""
        for batch in batches:
            mine = self.store.claim(batch, self.owner)
            if mine:
                yield mine

    def _wait(self) -> bool:
        """Nothing pending: wait while other live processes hold runs (taking over those of
        processes that end). False once the study is whole."""
        held = self.store.holders(exclude=self.owner)
        if not held:
            return False
        if not self.told:
            who = ", ".join(f"{w.rsplit(':', 1)[0]} ({n} runs)" for w, n in held.items())
            warnings.warn(f"waiting for the runs held by {who}", UserWarning, stacklevel=2)
            self.told = True
        time.sleep(POLL_SECONDS)
        self._beat()
        self.store.reclaim()
        return True

    def _beat(self) -> None:
        if time.monotonic() - self.last_beat >= BEAT_SECONDS:
            self.store.beat(self.owner)
            self.last_beat = time.monotonic()

    def _on_epoch(self, batch: Batch, epoch: int) -> None:
        """Per epoch of a batch (local executor): the bar advances by the batch's share."""
        self._beat()
        self.steps += len(batch) * self.steps_per_epoch
        if self.bar is not None:
            step = len(batch) / self.epochs
            self.shown[id(batch)] = self.shown.get(id(batch), 0.0) + step
            self.bar.update(step)
            self._rate()

    def _batch_done(self, batch: Batch) -> None:
        """A batch is stored: the bar shows it whole (Ray advances here only)."""
        if id(batch) not in self.shown:
            self.steps += len(batch) * self.steps_per_epoch * self.epochs
        if self.bar is not None:
            self.bar.update(len(batch) - self.shown.pop(id(batch), 0.0))
            self._rate()

    def _rate(self) -> None:
        rate = self.steps / max(time.perf_counter() - self.t_train, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} model-steps/s", refresh=False)


def run_experiment(
    config: Experiment | Mapping[str, Any],
    *,
    progress: bool = False,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_configs: int | None = MAX_CONFIGS,
) -> SweepResult:
    """Train every configuration of a config and choose on validation: a sweep into a
    temporary store, read back and returned (``wdlab run``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wdlab-run-") as tmp:
        result = run_sweep(
            config,
            Path(tmp) / "study",
            progress=progress,
            max_memory_mb=max_memory_mb,
            max_configs=max_configs,
        )
    result.kind, result.name, result.directory = "run", "", None
    result.seconds = time.perf_counter() - t0
    return result


def _progress(total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="sweep",
        unit="config",
        leave=False,
        bar_format="{l_bar}{bar}| {n:.0f}/{total} configs [{elapsed}<{remaining}{postfix}]",
    )


def export_study(
    directory: str | Path, fmt: str = "csv", out: str | Path | None = None
) -> dict[str, Path]:
    """Write ``runs.<fmt>`` (one row per run) and ``curves.<fmt>`` (run_id, metric, epoch,
    value) from a study's store (opened read-only)."""
    pd = require("pandas", "wdlab export")

    d = Path(directory)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}; valid: csv, parquet")
    with Store(d, readonly=True) as store:
        runs = pd.DataFrame(store.run_rows())
        curves = pd.DataFrame(store.curve_rows(), columns=["run_id", "metric", "epoch", "value"])
    target = Path(out) if out else d
    target.mkdir(parents=True, exist_ok=True)
    paths = {"runs": target / f"runs.{fmt}", "curves": target / f"curves.{fmt}"}
    for name, df in (("runs", runs), ("curves", curves)):
        if fmt == "csv":
            df.to_csv(paths[name], index=False)
        else:
            df.to_parquet(paths[name], index=False)
    return paths
