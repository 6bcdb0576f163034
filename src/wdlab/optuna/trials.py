"""Trials trained as one batch: :class:`_Search` (one search's checked settings; it trains the
trials Optuna proposes, K at a time) and :class:`_Watch` (one batch in training: each
evaluation reported, pruned trials told and frozen)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import Trial, TrialState
from torch import nn

from wdlab.data import Dataset, StreamedData
from wdlab.decay import get_mode
from wdlab.decay.rules import stored_table
from wdlab.devices import exact_float32, resolve_device
from wdlab.models import ModelSpec, kind_options
from wdlab.optimizers import check_optimizer_options, optimizer_spec
from wdlab.optuna.space import (
    ALIASES,
    PARAMS,
    SEARCHED,
    Settings,
    check_identity,
    check_space,
    check_study,
)
from wdlab.pipelines.checks import decay_rule
from wdlab.pipelines.memory import check_budget, memory_need, meta_build
from wdlab.pipelines.userdata import fit_outputs
from wdlab.records import RunConfig, RunResult
from wdlab.selection import Criterion, criterion, run_scores
from wdlab.tasks import custom_task, get_task
from wdlab.trainer import Plan, Trainer
from wdlab.trainer.heap import release_memory
from wdlab.usercode import module_fingerprint
from wdlab.warn import warn_user


class _Search:
    """One search's checked settings (every check that needs no study, at construction);
    :meth:`bind` checks the study; then it trains the batches of trials Optuna proposes."""

    def __init__(
        self,
        spec: ModelSpec,
        ds: Dataset | StreamedData,
        space: Mapping[str, BaseDistribution],
        settings: Settings,
        model_name: str,
    ) -> None:
        settings = replace(settings, rule=decay_rule(settings.rule))  # "timm" → its DecayRule
        self.spec, self.ds, self.space, self.settings = spec, ds, dict(space), settings
        if not settings.seeds:
            raise ValueError("seeds: a search trains each trial on one seed or more, got none")
        if not _has_val(ds):
            raise ValueError(
                "a search chooses on validation: the data need a validation split, and "
                f"{ds.name!r} has none (e.g. --data wine or digits have one; your own splits: "
                "a 'val' split, or a stream, which lends 20% of its training rows)"
            )
        task = None if settings.loss is None else custom_task(get_task(ds.task), settings.loss)
        built = meta_build(spec) if spec.kind != "custom" else spec.build(settings.seeds[0])
        spec.check_seeds(built, settings.seeds)  # as a sweep: no seed repeats another's run
        network = network_identity(spec, built)  # fingerprinted before any forward, as a sweep
        ds, fitted = fit_outputs(built, ds, {"task": task})  # 2 outputs, 2 classes: as a sweep
        self.ds, self.task = ds, fitted["task"]
        self.crit = _criterion(ds, settings)
        self.metric = f"val_{self.crit.key}"
        self.direction = "maximize" if self.crit.higher else "minimize"
        self.targets = check_space(space, settings)
        fixed = self.config({}, settings.seeds[0], "check")  # the fixed values, checked
        check_optimizer_options(fixed.optimizer, dict(fixed.options), fixed.lr)
        self.plan((fixed,), None)  # the training settings, checked by the plan itself
        own, self.shared = self._memory()  # each configuration's, and the batch's once
        self.per_trial = own * len(settings.seeds)
        self.identity = _identity(settings, ds, model_name) | _fixed(fixed, self.targets)
        self.identity["network"] = network
        # what wdlab 0.x stored for the same rule: its repr (of a name, where one was given);
        # a study recorded before the values the space does not search, or the network, were:
        # none
        self.former = {"rule": (repr(settings.rule), repr(self.identity["rule"]))}
        self.former |= {k: (None,) for k in (*FIXED, "network")}
        self.batches, self.engine = 0, ""
        self.study: Any = None
        self.unrecorded = False
        self.stopped = False  # the sampler stopped the search (its grid is used up)

    def tell(self, trial: Trial, *args: Any, **kwargs: Any) -> None:
        """:func:`tell`, noting where the sampler stopped the search."""
        if not tell(self.study, trial, *args, **kwargs):
            self.stopped = True

    def _memory(self) -> tuple[int, int]:
        """One configuration's training memory and what a batch holds once (see
        :func:`~wdlab.pipelines.memory.memory_need`), checked against the budget; the model's
        decay table and ``group_wd``'s patterns checked on it (as ``wdlab.sweep`` does before
        its store)."""
        s = self.settings
        model = meta_build(self.spec)
        stored_table(model, s.rule, dict(s.group_wd))  # (warned: what the rule misses)
        device = resolve_device(s.device, "device")
        own, shared = memory_need(
            self.spec,
            self.ds,
            s.batch_size,
            s.epochs,
            s.eval_every,
            s.optimizer,
            s.precision,
            model=model,
            device=device,
            parallel=s.parallel,
        )
        check_budget(own + shared, s.max_memory_mb, device, s.parallel if shared else 1)
        return own, shared

    def bind(self, study: Any) -> None:
        """Check ``study`` (direction, earlier trials' distributions, what it was searched
        with). This search's settings are recorded with it at the first value told
        (:meth:`record`): a search that fails before leaves the study open to the same call."""
        names = _study_names(study, self.targets)  # "wd" where its trials named it so
        self.space = {names.get(n, n): d for n, d in self.space.items()}
        self.targets = {names.get(n, n): t for n, t in self.targets.items()}
        check_study(study, self.space, self.crit.higher)
        self.unrecorded = check_identity(study, self.identity, self.former, _searched_read)
        self.study = study

    def record(self) -> None:
        """Record this search's settings with the study (once, before its first value)."""
        if self.unrecorded:
            self.study.set_user_attr("wdlab", self.identity)
            self.unrecorded = False

    def config(self, params: Mapping[str, Any], seed: int, label: str) -> RunConfig:
        """The RunConfig of a trial's ``params`` (what the space searched) and one seed."""
        s = self.settings
        values: dict[str, Any] = {
            "lr": s.lr,
            "weight_decay": s.weight_decay,
            "mode": s.mode,
            "optimizer": s.optimizer,
        }
        options = dict(s.options)
        for name, value in params.items():
            target = self.targets[name]
            if target in PARAMS:
                values[target] = value
            else:
                options[target] = value
        wd = float(values["weight_decay"]) if get_mode(values["mode"]).decays else 0.0
        opts = tuple(sorted(options.items()))
        return RunConfig(
            values["mode"], wd, float(values["lr"]), str(values["optimizer"]), opts, seed, label
        )

    def plan(self, configs: Sequence[RunConfig], on_epoch: Callable[[int], None] | None) -> Plan:
        """The plan that trains ``configs`` together."""
        s = self.settings
        return Plan(
            self.spec,
            self.ds,
            tuple(configs),
            s.epochs,
            eval_every=s.eval_every,
            rule=s.rule,
            schedule=s.schedule,
            device=s.device,
            batch_size=s.batch_size,
            shuffle_seed=s.shuffle_seed,
            precision=s.precision,
            on_epoch=on_epoch,
            steps=s.steps,
            clip_grad_norm=s.clip_grad_norm,
            wd_schedule=s.wd_schedule,  # type: ignore[arg-type]  (its text is parsed by the plan)
            group_wd=s.group_wd,
            task=self.task,
            parallel=s.parallel,
            channels_last=s.channels_last,
        )

    def run_batch(self, trials: Sequence[Trial], bar: Any) -> None:
        """Train the trials Optuna proposed, one plan per optimizer class and memory budget
        (without those whose values make no configuration: :meth:`_valid`); a trial left
        unfinished by an error (or Ctrl-C) is told ``FAIL``."""
        given, trials = len(trials), [t for t in trials if self._valid(t)]
        if bar is not None and given > len(trials):
            bar.update(given - len(trials))
        try:
            for chunk in self._chunks(trials):
                self._train(chunk)
                self.batches += 1
                if bar is not None:
                    bar.update(len(chunk))
        except BaseException:
            for t in trials:
                self.tell(t, state=TrialState.FAIL, skip_if_finished=True)
            raise

    def _valid(self, trial: Trial) -> bool:
        """Whether ``trial``'s values make a configuration; one that does not (an enqueued lr
        of -0.01, which Optuna only warns is out of its range) is told ``FAIL`` with why and
        warned, and the batch trains without it."""
        try:
            c = self.config(trial.params, 0, "")
            check_optimizer_options(c.optimizer, dict(c.options), c.lr)
        except ValueError as exc:
            trial.set_user_attr("status", f"refused: {exc}")
            warn_user(f"trial {trial.number}: {exc}; told FAIL, the search goes on")
            self.tell(trial, state=TrialState.FAIL)
            return False
        return True

    def _chunks(self, trials: Sequence[Trial]) -> list[list[Trial]]:
        """The trials grouped by optimizer class (one per plan), each group cut to what fits
        the memory budget."""
        room = self.settings.max_memory_mb * 2**20 - self.shared
        k = max(1, int(room // max(self.per_trial, 1)))
        groups: dict[str, list[Trial]] = {}
        for t in trials:
            opt = self.config(t.params, 0, "").optimizer
            groups.setdefault(optimizer_spec(opt).cls_name, []).append(t)
        return [g[i : i + k] for g in groups.values() for i in range(0, len(g), k)]

    def _train(self, trials: Sequence[Trial]) -> None:
        """One batched training of ``trials`` (each with a row per seed), reported to Optuna
        at every evaluation; then each unpruned trial's final value."""
        seeds = self.settings.seeds
        configs, rows = [], []
        for t in trials:
            rows.append(list(range(len(configs), len(configs) + len(seeds))))
            configs += [self.config(t.params, s, f"trial {t.number}") for s in seeds]
        watch = _Watch(self.tell, trials, rows, self.metric, self.record)
        plan = self.plan(configs, watch.on_epoch)
        watch.evals = set(plan.eval_epochs)
        watch.trainer = Trainer(plan)
        try:
            with exact_float32():
                results = watch.trainer.run()
        finally:
            watch.trainer = None
            release_memory()
        self.engine = self.engine or results[0].engine
        for i, t in enumerate(trials):
            if i in watch.live:
                self._finish(t, [results[r] for r in rows[i]])

    def _finish(self, trial: Trial, runs: Sequence[RunResult]) -> None:
        """Tell Optuna a trial's value (its mean over seeds), or ``FAIL`` where it diverged."""
        self.record()
        if any(r.status != "done" for r in runs):
            trial.set_user_attr("status", "diverged")
            self.tell(trial, state=TrialState.FAIL)
            return
        scores = [run_scores(r, self.crit) for r in runs]
        val = _mean([s[0] for s in scores])
        if not math.isfinite(val):
            trial.set_user_attr("status", "no finite validation score")
            self.tell(trial, state=TrialState.FAIL)
            return
        trial.set_user_attr(f"test_{self.crit.key}", _mean([s[1] for s in scores]))
        if len(runs) > 1:
            trial.set_user_attr(f"{self.metric}_std", statistics.stdev(s[0] for s in scores))
        self.tell(trial, val)


class _Watch:
    """One batch in training: each evaluation reported to Optuna, pruned trials told and
    frozen."""

    def __init__(
        self,
        tell: Callable[..., None],
        trials: Sequence[Trial],
        rows: list[list[int]],
        metric: str,
        record: Callable[[], None],
    ) -> None:
        self.tell, self.trials, self.rows, self.metric = tell, trials, rows, metric
        self.record = record  # called before the first value is reported
        self.live = set(range(len(trials)))
        self.evals: set[int] = set()
        self.trainer: Trainer | None = None

    def on_epoch(self, epoch: int) -> None:
        """After an epoch: at an evaluation, report each live trial's value (mean over its
        seeds) at step = epochs trained; tell and freeze those Optuna prunes."""
        if epoch not in self.evals or self.trainer is None:
            return
        values = latest(self.trainer, self.metric)
        self.record()
        for i in sorted(self.live):
            trial = self.trials[i]
            trial.report(_mean([values[r] for r in self.rows[i]]), epoch + 1)
            if trial.should_prune():
                self.tell(trial, state=TrialState.PRUNED)
                self.live.discard(i)
                self.freeze(self.rows[i])

    def freeze(self, rows: Sequence[int]) -> None:
        """A pruned trial's rows leave the batch (:meth:`wdlab.trainer.Trainer.stop`): nothing
        more is computed, reported or told about them; the other trials' rows train on,
        their numbers unchanged."""
        if self.trainer is not None:
            self.trainer.stop(rows, "pruned")


def tell(study: Any, trial: Trial | int, *args: Any, **kwargs: Any) -> bool:
    """Tell ``study`` how ``trial`` ended; False where the sampler stopped the search.

    GridSampler and BruteForceSampler call ``study.stop()`` once every point is tried, which
    only Optuna's own ``optimize`` loop takes (elsewhere a RuntimeError). The trial is stored
    either way (Optuna stores it in a ``finally``)."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
        return False
    return True


def latest(trainer: Trainer, name: str) -> list[float]:
    """The last evaluation's ``name`` of each configuration of a training in flight.

    ``name`` is ``val_acc``, ``val_loss``…; the values are in the training plan's order. This is
    the one place that reads a trainer's records before it returns."""
    values = trainer.recorder.stacked_evals()[name][-1].tolist()
    out = [math.nan] * len(values)
    for row, orig in enumerate(trainer.order):
        out[orig] = values[row]
    return out


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan


def _has_val(ds: Dataset | StreamedData) -> bool:
    """Whether the data have a validation split (a stream always has one: given, or lent 20%
    of the training rows)."""
    return "val" in ds.streams if isinstance(ds, StreamedData) else ds.y_val is not None


def _criterion(ds: Dataset | StreamedData, settings: Settings) -> Criterion:
    """What Optuna is told, checked to be a metric the runs record."""
    task = get_task(ds.task)
    recorded = {"loss"} | ({"acc"} if task.eval_metrics else set())
    recorded |= {"rmse", "r2"} if task.loss_metrics else set()
    crit = criterion(ds.task, settings.select, settings.early_stopping)
    if crit.key not in recorded:
        raise ValueError(
            f"select={settings.select!r}: a {ds.task} task records {', '.join(sorted(recorded))}"
        )
    return crit


def _identity(settings: Settings, ds: Dataset | StreamedData, model_name: str) -> dict[str, Any]:
    """The settings a study's trials share, as its storage keeps them (JSON types); streamed
    data add their fingerprint (:func:`wdlab.data.stream_splits`: a seeded sample's)."""
    doc = settings.identity() | {"data": ds.name, "model": str(model_name)}
    if isinstance(ds, StreamedData):
        doc |= {"rows": [ds.meta.get("n_train"), ds.meta.get("n_val")]}
        doc |= {"fingerprint": ds.fingerprint}
    else:
        doc |= {"rows": [len(ds.y_train), len(ds.y_val) if ds.y_val is not None else 0]}
    return json.loads(json.dumps(doc, default=str))


def network_identity(spec: ModelSpec, built: nn.Module) -> dict[str, Any]:
    """The network a study's trials train: a built-in kind's options (``--hidden``,
    ``--activation``…), a factory's build at the first seed (``built``) fingerprinted as
    :func:`wdlab.sweep` fingerprints it (a study searched on another network is another
    study)."""
    if spec.kind == "custom":
        return {"fingerprint": module_fingerprint(built)}
    options = kind_options(spec.kind, spec)
    return json.loads(json.dumps({"kind": spec.kind, **options}))


FIXED = ("optimizer", "lr", "weight_decay", "mode", "options")  # a trial's, where not searched


def _fixed(c: RunConfig, targets: Mapping[str, str]) -> dict[str, Any]:
    """What every trial takes that the space does not search (the optimizer, lr, weight
    decay, mode and options given to the search), and :data:`SEARCHED` for what it searches,
    as the study keeps it: a study searched with other values, or that searched what this
    search fixes (or the reverse), is another study."""
    searched = set(targets.values())
    options = {k: v for k, v in c.options if k not in searched}
    values = dict(zip(FIXED, (c.optimizer, c.lr, c.weight_decay, c.mode, options), strict=True))
    kept = {k: (SEARCHED if k in searched else v) for k, v in values.items()}
    return json.loads(json.dumps(kept, default=str))


def _study_names(study: Any, targets: Mapping[str, str]) -> dict[str, str]:
    """{a name in this space: the other name the study's earlier trials gave the same
    parameter} (``wd`` and ``weight_decay``, :data:`ALIASES`): one parameter, one name, in
    the study's history (its sampler's model, its importance)."""
    used = {n for t in study.get_trials(deepcopy=False) for n in t.distributions}
    out = {}
    for name, target in targets.items():
        other = sorted(u for u in used if u != name and ALIASES.get(u, u) == target)
        if other and name not in used:
            out[name] = other[0]
    return out


def _searched_read(stored: dict[str, Any]) -> dict[str, Any]:
    """A study's stored identity, where the wdlab that stored it left out what its space
    searched (it recorded only the fixed values: one of :data:`FIXED` present, one absent)."""
    if any(k in stored for k in FIXED):
        stored |= {k: SEARCHED for k in FIXED if k not in stored}
    return stored
