"""Sweeps: expand a config into configurations, split them into batches that fit a memory
budget, train each batch through an executor (one batched computation), and store each batch's
results in one transaction. Running the same sweep again resumes it (and retries failed runs).

Several processes may run the same sweep into one folder: each claims a batch in the store just
before training it, so they share the work and no configuration is trained twice at once; a
process whose own work is done waits for the batches others hold, taking them over when their
holder is gone (its process ended, or it stopped renewing its lease: :mod:`wdlab.store`). It
returns the whole study, or raises :class:`IncompleteStudy` (one line: how many runs are not
finished and how to finish them); never a partial study as if it were whole.

**The memory budget** (``max_memory_mb``) bounds one batch's training memory: stacked weights,
gradients and optimizer state, the activations of the largest forward, the per-epoch records
and the results the batch returns (:mod:`wdlab.pipelines.memory`, measured). It does not cover
the process itself (Python, torch and the data: ``memory.PROCESS_BASELINE_MB``).

``wdlab run`` is the same pipeline into a temporary store (:func:`run_experiment`). Returns
:class:`~wdlab.pipelines.results.SweepResult`; draws nothing, writes only the study's store.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from wdlab.config import MAX_CONFIGS, Experiment, merge, validate
from wdlab.data import Dataset, StreamedData, is_data_function, is_table_path
from wdlab.decay.rules import stored_table
from wdlab.devices import DEFAULT_MAX_MEMORY_MB, resolve_device
from wdlab.diagnostics import DIAGNOSTICS
from wdlab.executors import Executor, LocalExecutor
from wdlab.halving import Prune, from_config, rung_spacing, summary
from wdlab.integrations.logs import LogSpec, open_logs
from wdlab.interrupts import interruptible
from wdlab.models import ModelSpec
from wdlab.pipelines.checkpoints import check_checkpoint_record, tidy
from wdlab.pipelines.checks import can_stop
from wdlab.pipelines.experiment import grid, grid_size, load_data, model_spec
from wdlab.pipelines.fresh import undone_on_failure
from wdlab.pipelines.identity import (
    differences,
    output_probe,
    probe_difference,
    respell,
    same_rungs,
)
from wdlab.pipelines.job import Job
from wdlab.pipelines.memory import check_budget, memory_need, meta_build, planning_bytes
from wdlab.pipelines.results import SweepResult
from wdlab.pipelines.segments import check_pruning, has_validation
from wdlab.pipelines.userdata import check_last_batch, data_fingerprint, fit_outputs
from wdlab.pipelines.weights import check_weights, factory_home, kept_runs, prune_weights
from wdlab.records import RunConfig
from wdlab.selection import Criterion, criterion, decays, settings, study_metric
from wdlab.store import Store, StoreError, hash_config, worker_id
from wdlab.store import lease_seconds as lease_of
from wdlab.tasks import check_recorded, get_task
from wdlab.trainer import EarlyStop, Plan
from wdlab.trainer.plan import running
from wdlab.usercode import module_fingerprint
from wdlab.version import __version__
from wdlab.warn import warn_user


class IncompleteStudy(ValueError):
    """A sweep ended with runs not finished (failed, or not trained).

    Its message is one line saying how many and how to finish them."""


def default_out(config: Experiment | Mapping[str, Any], root: str = "wdlab-out") -> Path:
    """The study directory a config gets by default: the same config, the same directory."""
    config = validate(config)
    d = config.data.source
    name = Path(d).stem if "." in d else d
    return Path(root) / f"sweep-{name}-{hash_config(config.identity())}"


def check_grid(config: Experiment, max_configs: int | None) -> None:
    """A one-line ``ValueError`` when the grid has more than ``max_configs`` configurations."""
    n = grid_size(config)
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
        counts = store.counts(live=True)
        decisions, failures = store.decisions(), store.failures()
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
        failures=failures,
        directory=d,
        halving=summary(info["config"], info["data"], runs, decisions, sum(counts.values())),
    )
    result.select()
    return result


def _prepare(
    config: Experiment, max_configs: int | None, progress: bool = False
) -> tuple[Dataset | StreamedData, ModelSpec, dict]:
    """Checks that need no store (grid size, diagnostics), then the data, the model spec and
    the trainer's keywords."""
    check_grid(config, max_configs)
    missing = [d for d in config.train.diagnostics if d not in DIAGNOSTICS]
    if missing:
        valid = ", ".join(DIAGNOSTICS) or "none in this wdlab"
        raise ValueError(f"train.diagnostics: {missing[0]!r} is not available; valid: {valid}")
    ds = load_data(config.data, config.train.batch_size or None, progress, model=config.model)
    spec = model_spec(config.model, ds)
    train_kwargs = config.train.train_kwargs(shuffle_seed=config.data.seed)
    train_kwargs |= config.decay.train_kwargs()  # the rule, wd schedule and groups' own wds
    return ds, spec, train_kwargs


@interruptible
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
    log: LogSpec = None,
    lease_seconds: float | None = None,
    parallel: int = 1,
    channels_last: bool = False,
) -> SweepResult:
    """Train what a config's study does not hold yet, batch by batch; return the whole study.

    The study is read back from its store in ``out``.

    ``executor`` trains the batches (default: :class:`~wdlab.executors.LocalExecutor`, in this
    process; :class:`~wdlab.executors.RayExecutor` for a Ray cluster). Each batch's results
    are written here, by the driver, in one transaction as the batch finishes. Failed runs of an
    earlier attempt are retried. A grid larger than ``max_configs`` (None: no limit) and a
    configuration larger than the budget are refused before anything is trained or written.
    ``log`` logs each run to a dashboard as its batch is stored, then the selection
    (``"tensorboard:DIR"``, ``"mlflow[:URI]"`` or a list: :mod:`wdlab.integrations.logs`).
    ``lease_seconds`` (default ``$WDLAB_LEASE_SECONDS``, else 60): how long this process's
    claims outlive its last renewal (:func:`wdlab.store.lease_seconds`). ``parallel``,
    ``channels_last``: how batches run (:func:`wdlab.sweep`). Raises :class:`IncompleteStudy`
    when runs are left unfinished (failed in another process).
    """
    t0 = time.perf_counter()
    lease_of(lease_seconds)  # checked before anything starts
    config = validate(config)
    out = Path(out) if out is not None else default_out(config)
    ds, spec, train_kwargs = _prepare(config, max_configs, progress)
    identity, stored = config.identity(), config.to_dict()
    source = config.data.source  # a function's data or a file's contents, not only the name
    if is_data_function(source) or is_table_path(source):
        for d in (identity, stored):  # stored too: a changed one is named (_init_study)
            d["data"]["fingerprint"] = data_fingerprint(ds)
    study = Study(out, name or out.name, stored, identity, ds, spec, grid(config), train_kwargs)
    study.named = name is not None
    return run_study(
        study,
        executor=executor,
        max_memory_mb=max_memory_mb,
        max_batch=max_batch,
        progress=progress,
        t0=t0,
        log=log,
        lease_seconds=lease_seconds,
        parallel=parallel,
        channels_last=channels_last,
    )


@dataclass
class Study:
    """What a sweep trains into its store: the configurations, the data, the model and the
    trainer's keywords, with the config (stored) and its identity (hashed: the same identity,
    the same study); successive halving as the config sets it (:attr:`prune`)."""

    directory: Path
    name: str
    config: dict[str, Any]
    identity: dict[str, Any]
    data: Dataset
    spec: ModelSpec
    configs: list[RunConfig]
    train_kwargs: dict[str, Any]
    named: bool = False  # the name was given (name=, --name), not the folder's

    @property
    def prune(self) -> Prune | None:
        """Successive halving's settings (``train.prune``, ``prune_eta``, ``prune_rung``)."""
        return from_config(self.config.get("train") or {})


def run_study(
    study: Study,
    *,
    executor: Executor | None = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_batch: int | None = None,
    progress: bool = False,
    t0: float | None = None,
    log: LogSpec = None,
    lease_seconds: float | None = None,
    parallel: int = 1,
    channels_last: bool = False,
) -> SweepResult:
    """Train what ``study``'s store does not hold yet, batch by batch (see :func:`run_sweep`),
    and return the whole study as read back from its store (else :class:`IncompleteStudy`)."""
    t0 = time.perf_counter() if t0 is None else t0
    lease = lease_of(lease_seconds)
    model = _template(study)  # for memory and the table (a user's factory: checked, identified)
    study.data, study.train_kwargs = fit_outputs(model, study.data, study.train_kwargs)
    check_last_batch(model, study.data, study.train_kwargs.get("batch_size") or 0)
    ds, spec = study.data, study.spec
    kw, crit, pace = _stopping(study)  # the rungs and early stopping: checked before the store
    kw |= running(parallel, channels_last)  # how it runs, not what: not in the identity
    local = executor is None or isinstance(executor, LocalExecutor)  # Ray: the workers' device
    device = resolve_device(kw.get("device"), "train.device") if local else None
    lanes = min(kw["parallel"], max_batch or len(study.configs))  # side by side, at most
    per_config, shared = memory_need(
        spec,
        ds,
        kw["batch_size"],
        kw["epochs"],
        kw["eval_every"],
        study.configs[0].optimizer,
        kw["precision"],
        model=model,
        device=device,
        parallel=lanes,
    )
    check_budget(per_config + shared, max_memory_mb, device, lanes if shared else 1)
    per_config = planning_bytes(per_config, shared, max_memory_mb)
    asked = any(c.weight_decay > 0 and decays(c.mode) for c in study.configs)
    table = stored_table(model, kw["rule"], kw.get("group_wd"), asked)  # before the store
    check_checkpoint_record(study.directory)  # readable before anything runs
    check_weights(study.directory)
    with (
        undone_on_failure(study.directory),  # a new study that stored nothing: removed again
        open_logs(log, study.name, study.config, hash_config(study.identity)) as logs,
        Store(study.directory) as store,
    ):
        _init_study(store, study)  # another study: said before the files in its way are
        source = f"study {store.study()['config_hash']}"  # type: ignore[index]
        check_weights(study.directory, study.configs if kw.get("keep_params") else (), source)
        facts = {"name": ds.name, **ds.meta, "decay_table": table, "model_sizes": _sizes(spec)}
        facts |= factory_home(spec)  # where a factory named by a relative path is found
        store.set_data(facts | {"steps_per_epoch": pace.steps_per_epoch}, ds.task)
        job = Job(store, worker_id(), executor or LocalExecutor(), spec, ds, kw)
        job.lease, job.logs, job.crit, job.prune = lease, logs, crit, study.prune
        job.configs = study.configs  # batches are planned over the whole grid
        job.weights = study.directory if kw.get("keep_params") else None
        job.keep = _keep(study)
        job.directory, job.source = study.directory, source  # its files: recorded as its own
        job.pace(pace)
        job.share(len(study.configs), per_config, max_memory_mb, max_batch, progress, t0)
        counts, failures = store.counts(), store.failures()
    check_whole(study.directory, counts, failures)
    tidy(study.directory)  # the last checkpoint went with the last run: no empty folder left
    result = load_study(study.directory)
    result.spec = spec
    if _keep(study) == "best":  # the choice is made: the other runs' weights go
        prune_weights(study.directory, kept_runs(result.runs, result.selection), job.source)
    logs.summary(result)  # the selection, once the study is whole
    logs.close()
    return result


def _sizes(spec: ModelSpec) -> dict[str, Any]:
    """The sizes a study's model was built with (to build it again: its trained weights)."""
    return {"in_dim": spec.in_dim, "out_dim": spec.out_dim, "in_shape": list(spec.in_shape)}


def _pace_kw(kw: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer keywords that set a plan's epochs and steps per epoch, and the lr schedule
    (a per-step one needs the steps: refused here, before the store, where a stream cannot
    tell them)."""
    return {k: kw.get(k) for k in ("batch_size", "steps", "schedule")}


def _stopping(study: Study) -> tuple[dict[str, Any], Criterion, Plan]:
    """The trainer's keywords with the rungs of successive halving and early stopping, the
    criterion both rank on (the selection's), and a plan giving every batch's epochs and steps
    per epoch; bad pruning settings, and early stopping without a validation split, are one
    ``ValueError``."""
    ds, kw = study.data, dict(study.train_kwargs)
    pace = Plan(study.spec, ds, tuple(study.configs[:1]), kw["epochs"], **_pace_kw(kw))
    kw["said"] = True  # its warnings: given once, not again by each batch's plan
    crit = criterion(ds.task, *study_metric(study.config, ds.meta))
    check_recorded(kw.get("task") or get_task(ds.task), crit.key, settings(study.config)[0])
    train = study.config.get("train") or {}
    rungs = check_pruning(study.prune, study.configs, ds, pace.epochs, rung_spacing(train))
    kw |= {"rungs": rungs} if rungs else {}
    if train.get("early_stopping"):
        if not has_validation(ds):  # it was ignored without a word
            raise ValueError(
                "early_stopping: each run stops at its best validation epoch, and the data has "
                "no validation split; give data with one (data['val']), or train without it"
            )
        kw["early_stop"] = EarlyStop(f"val_{crit.key}", crit.higher, int(train["patience"]))
        can_stop(pace.epochs, int(train["patience"]), int(train["eval_every"]))
    return kw, crit, pace


def _keep(study: Study) -> str:
    """What the study keeps of the trained weights (``train.keep``)."""
    return (study.config.get("train") or {}).get("keep") or "none"


def _template(study: Study) -> nn.Module:
    """One build of the model, for the memory estimate and the decay table. A user's factory
    is built at the study's first two seeds (the same weights for both are refused: the seeds
    would be duplicates), and the first build's fingerprint joins the study's identity (a
    changed model is another study)."""
    spec = study.spec
    if spec.kind != "custom":
        return meta_build(spec)
    seeds = list(dict.fromkeys(c.seed for c in study.configs))
    first = spec.build(seeds[0])
    spec.check_seeds(first, seeds)
    fp = module_fingerprint(first)
    for d in (study.config, study.identity):
        d["model"] = {**d.get("model", {}), "fingerprint": fp}
    study.config["model"]["probe"] = output_probe(first, study.data)  # not in the identity's hash
    return first


def _init_study(store: Store, study: Study) -> None:
    """Create the study in its store, or check that the store holds this same study: another
    is refused in one line naming what differs (nothing stored is changed)."""
    stored = (store.study() or {}).get("config") or {}
    respell(stored, study.config, study.identity)
    same_rungs(stored, study.config, study.identity)
    try:
        store.init_study(
            study.name, study.config, study.configs, __version__, identity=study.identity
        )
    except ValueError as exc:
        info = store.study()
        if isinstance(exc, StoreError) or info is None or "holds another study" not in str(exc):
            raise
        changed = differences(info["config"], study.config)
        if not changed:
            raise
        _another(study, changed)
    info = store.study() or {}
    changed = probe_difference(info.get("config") or {}, study.config)
    if changed:
        _another(study, changed)
    if study.named and info.get("name") not in (None, study.name):
        warn_user(
            f"name {study.name!r} is not used: the study in {study.directory} keeps the name "
            f"{info['name']!r} it was made with"
        )


def _another(study: Study, changed: str) -> None:
    """Refuse a sweep into a folder holding another study, naming what differs."""
    raise ValueError(
        f"{study.directory} holds another study: {changed}; choose another out= (--out) to "
        "start a new one (the stored study is left as it is)"
    ) from None


def check_whole(directory: Path, counts: Mapping[str, int], failures: Mapping[str, int]) -> None:
    """:class:`IncompleteStudy` unless every run of the study is done or diverged: one line
    with how many runs are not finished, why, and how to finish them."""
    failed = counts.get("failed", 0)
    untrained = counts.get("pending", 0) + counts.get("running", 0)
    if not failed and not untrained:
        return
    why = []
    if failed:
        why.append(f"{failed} failed: {next(iter(failures), 'unknown error')}")
    if untrained:
        why.append(f"{untrained} not trained")
    raise IncompleteStudy(
        f"the study in {directory} is not whole: {failed + untrained} of {sum(counts.values())} "
        f"runs unfinished ({'; '.join(why)}); run the same sweep again to finish them"
    )


def run_experiment(
    config: Experiment | Mapping[str, Any],
    *,
    progress: bool = False,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    max_configs: int | None = MAX_CONFIGS,
) -> SweepResult:
    """Train every configuration of a config and choose on validation (``wdlab run``).

    A sweep into a temporary store, read back and returned; no trained weights are kept."""
    t0 = time.perf_counter()
    config = merge(config, {"train.keep": "none"})  # the store is temporary
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
