"""Optuna's search, trained K trials at a time: ``wdlab.optuna``.

Your Optuna study proposes the configurations (``lr``, ``weight_decay``, ``mode``,
``optimizer`` and the optimizer's own keywords, over any Optuna distribution, with any sampler:
TPE, CMA-ES, random, GP, QMC); :func:`optimize` asks it for ``batch`` trials at once
(``study.ask`` K times), trains them as one batched computation through the engine
``wdlab.sweep`` uses, reports each trial's validation metric to Optuna at every evaluation
(``trial.report(value, step)``, step = epochs trained, so Optuna's pruners decide) and tells
Optuna each trial's final value. The study is an ordinary Optuna study afterwards: its
storage, ``optuna.importance``, ``optuna.visualization`` and ``optuna-dashboard`` work on it.

* The value told is the validation metric wdlab chooses on (``select``: the task's metric by
  default, or ``"loss"``), the mean over ``seeds`` (each trial trains one row per seed), at
  the last epoch (or each run's best epoch with ``early_stopping``). The test metric is kept
  apart, as the trial's user attribute ``test_<metric>``; it never steers the search.
* A trial Optuna prunes is told ``PRUNED`` at once and its rows leave the batch
  (:meth:`_Watch.freeze`): their compute is saved, the other trials train on unchanged. A
  trial whose training diverged is told ``FAIL``.
* Bad input is refused before anything is asked or stored: a study of another direction (or
  several objectives), a distribution of the wrong kind or range for its parameter, one that
  differs in kind from the study's earlier trials, or a study searched on other data, model
  or training settings.

Needs ``pip install 'wdlab[optuna]'``; ``import wdlab`` never imports Optuna.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wdlab.config import Experiment, check_optimizer_options
from wdlab.data import Dataset
from wdlab.decay import DEFAULT_RULE, MODES, DecayRule, get_mode
from wdlab.devices import DEFAULT_MAX_MEMORY_MB, exact_float32, resolve_device
from wdlab.extras import require
from wdlab.models import ModelSpec
from wdlab.optimizers import OPTIMIZERS, optimizer_spec
from wdlab.pipelines.memory import bytes_per_config, check_budget
from wdlab.pipelines.own import Data, Model, resolve_data, resolve_model
from wdlab.records import RunConfig, RunResult
from wdlab.selection import Criterion, criterion, run_scores
from wdlab.tasks import get_task
from wdlab.trainer import Plan, Trainer
from wdlab.trainer.heap import release_memory

optuna = require("optuna", "wdlab.optuna")
from optuna.distributions import (  # noqa: E402  (after the one-line check above)
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, Trial, TrialState  # noqa: E402

FLOAT32_MAX = 3.4028234663852886e38
#: Names of the searched parameters that are not optimizer keywords, and what each sets.
PARAMS = {
    "lr": "the learning rate (> 0)",
    "weight_decay": "the weight decay (>= 0)",
    "mode": f"the decay mode: {', '.join(MODES)}",
    "optimizer": f"the optimizer: {', '.join(OPTIMIZERS)}",
}
ALIASES = {"wd": "weight_decay"}  # the CLI's name for it


# ---------------------------------------------------------------------------------------------
# What the trials share, and the search space.


@dataclass(frozen=True)
class Settings:
    """What every trial shares. ``lr``, ``weight_decay``, ``mode``, ``optimizer`` and
    ``options`` are the values a trial takes for what the space does not search; the rest are
    the training's settings (as in :func:`wdlab.sweep`)."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    mode: str = "decoupled"
    options: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] = (0,)
    epochs: int = 10
    batch_size: int | None = 128
    eval_every: int = 1
    schedule: str | None = None
    precision: str = "fp32"
    device: str | None = None
    shuffle_seed: int = 0
    select: str = "auto"
    early_stopping: bool = False
    rule: DecayRule = DEFAULT_RULE
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB

    def identity(self) -> dict[str, Any]:
        """What makes two searches' trials comparable (kept with the study)."""
        d = asdict(self)
        for k in ("optimizer", "lr", "weight_decay", "mode", "options", "device"):
            d.pop(k)
        d["seeds"] = list(self.seeds)
        d["rule"] = repr(self.rule)
        d.pop("max_memory_mb")
        return d


def _check_number(name: str, value: object, low_ok: float, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low_ok or (strict and value == low_ok) or abs(value) > FLOAT32_MAX:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name}: every value must be a finite number {bound}, got {value!r}")


def _check_value(name: str, value: object, optimizer: str, lr: float) -> None:
    """One value a parameter may take, checked (``ValueError`` naming the parameter)."""
    if name == "lr":
        _check_number(name, value, 0.0, strict=True)
    elif name == "weight_decay":
        _check_number(name, value, 0.0, strict=False)
    elif name == "mode":
        if value not in MODES:
            raise ValueError(f"mode: {value!r} is not a decay mode; valid: {', '.join(MODES)}")
    elif name == "optimizer":
        if not isinstance(value, str) or value.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown {value!r}; valid: {', '.join(OPTIMIZERS)}")
    else:
        try:
            check_optimizer_options(optimizer, {name: value}, lr)
        except ValueError as exc:
            raise ValueError(f"{name}: {str(exc).removeprefix('train.options: ')}") from None


def _candidates(name: str, dist: BaseDistribution) -> list[Any]:
    """The values that stand for a distribution in checks: its ends, or its choices."""
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if name in ("mode", "optimizer"):
            raise ValueError(
                f"{name}: a {type(dist).__name__} cannot choose {PARAMS[name].split(':')[0]}; "
                f"use CategoricalDistribution([...])"
            )
        return [dist.low, dist.high]
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    raise ValueError(f"{name}: unsupported distribution {type(dist).__name__}")


def check_space(space: Mapping[str, BaseDistribution], settings: Settings) -> dict[str, str]:
    """Check every distribution against its parameter (and each optimizer the search may use);
    return ``{name in the space: the parameter it sets}``. ``ValueError`` in one line."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("the space is empty: give at least one Optuna distribution to search")
    targets = {}
    for name, dist in space.items():
        if not isinstance(dist, BaseDistribution):
            raise ValueError(f"{name}: expected an Optuna distribution, got {dist!r:.60}")
        targets[name] = ALIASES.get(name, name)
    if len(set(targets.values())) < len(targets):
        raise ValueError("the space names one parameter twice (wd is weight_decay)")
    opt_dist = next((space[n] for n, t in targets.items() if t == "optimizer"), None)
    optimizers = [settings.optimizer]
    if opt_dist is not None:
        optimizers = [str(c) for c in _candidates("optimizer", opt_dist)]
        for o in optimizers:
            _check_value("optimizer", o, o, 1e-3)
    for name, target in targets.items():
        for value in _candidates(target, space[name]):
            for opt in optimizers if target not in PARAMS else optimizers[:1]:
                _check_value(target, value, opt, settings.lr)
    return targets


def check_study(study: Any, space: Mapping[str, BaseDistribution], higher: bool) -> None:
    """A study wdlab can search: one objective in the metric's direction, and distributions of
    the same kind as its earlier trials'. ``ValueError`` in one line, nothing written."""
    if not isinstance(study, optuna.Study):
        raise ValueError(f"expected an optuna.Study, got {type(study).__name__}")
    want = "maximize" if higher else "minimize"
    directions = [d.name.lower() for d in study.directions]
    if len(directions) != 1:
        raise ValueError(f"the study has {len(directions)} objectives; wdlab tells one ({want})")
    if directions[0] != want:
        raise ValueError(
            f"the study is set to {directions[0]}, but the metric wdlab tells it is "
            f"{'higher' if higher else 'lower'}-is-better: use a study created with "
            f"direction={want!r} (another study name)"
        )
    for trial in study.get_trials(deepcopy=False):
        for name, dist in space.items():
            old = trial.distributions.get(name)
            if old is None:
                continue
            try:
                check_distribution_compatibility(old, dist)
            except ValueError as exc:
                raise ValueError(
                    f"{name}: {dist} does not match the study's earlier trials ({old}): "
                    f"{str(exc).rstrip('.')}; search it in a new study"
                ) from None


def check_identity(study: Any, identity: Mapping[str, Any]) -> None:
    """Refuse a study searched before on other data, model or training settings."""
    old = study.user_attrs.get("wdlab")
    if old is None:
        return
    diff = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
    if diff:
        k = diff[0]
        raise ValueError(
            f"the study {study.study_name!r} was searched with {k} = {old.get(k)!r}, not "
            f"{identity.get(k)!r}; use another study name"
        )


# ---------------------------------------------------------------------------------------------
# The result.


@dataclass
class SearchResult:
    """What :func:`optimize` did: the study (an ordinary Optuna study), the trials it ran, the
    metric told (``val_acc``…) and its direction, the batches trained, the wall time."""

    study: Any
    trials: list[FrozenTrial]
    metric: str
    direction: str
    batches: int = 0
    seconds: float = 0.0
    engine: str = ""

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The study's best complete trial (of every search in it), or None."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return self.study.best_trial if done else None

    def counts(self) -> dict[str, int]:
        """This search's trials per state (``complete``, ``pruned``, ``fail``)."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        return out

    def importance(self) -> dict[str, float]:
        """Optuna's parameter importance over the study's complete trials (empty with fewer
        than two, or where Optuna cannot compute it)."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < 2:
            return {}
        try:
            return dict(optuna.importance.get_param_importances(self.study))
        except (ValueError, RuntimeError):
            return {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the study, the metric, this search's trials and the best."""
        best = self.best_trial
        return {
            "study": self.study.study_name,
            "metric": self.metric,
            "direction": self.direction,
            "counts": self.counts(),
            "batches": self.batches,
            "seconds": self.seconds,
            "engine": self.engine,
            "best": _trial_dict(best) if best is not None else None,
            "importance": self.importance(),
            "trials": [_trial_dict(t) for t in self.trials],
        }

    def table(self, top: int = 10) -> str:
        """The ``top`` trials of the study by value, one line each, and the counts."""
        done = [t for t in self.study.get_trials(deepcopy=False) if t.value is not None]
        done = [t for t in done if t.state == TrialState.COMPLETE]
        done.sort(key=lambda t: t.value, reverse=self.direction == "maximize")
        test = f"test_{self.metric.removeprefix('val_')}"
        lines = [f"{'trial':>6}  {self.metric:>10}  {test:>10}  params"]
        for t in done[:top]:
            params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            lines.append(
                f"{t.number:>6}  {t.value:>10.4f}  {t.user_attrs.get(test, math.nan):>10.4f}  "
                f"{params}"
            )
        n = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        batches = f"{self.batches} batch{'es' if self.batches != 1 else ''}"
        lines.append(f"\nthis search: {len(self.trials)} trials ({n}) in {batches}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = self.best_trial
        tail = "no complete trial"
        if best is not None:
            params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            tail = f"best {self.metric} {best.value:.4g} (trial {best.number}: {params})"
        n = ", ".join(f"{v} {k}" for k, v in self.counts().items())
        return f"SearchResult({self.study.study_name!r}: {len(self.trials)} trials ({n}); {tail})"


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _trial_dict(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": dict(t.params),
        "user_attrs": dict(t.user_attrs),
        "last_step": t.last_step,
    }


# ---------------------------------------------------------------------------------------------
# The search.


def optimize(
    study: Any,
    model: Model,
    data: Data,
    space: Mapping[str, BaseDistribution],
    *,
    n_trials: int,
    batch: int = 16,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    mode: str = "decoupled",
    options: Mapping[str, Any] | None = None,
    seeds: int | Sequence[int] = 1,
    epochs: int = 10,
    batch_size: int | None = 128,
    eval_every: int = 1,
    schedule: str | None = None,
    precision: str = "fp32",
    select: str | None = None,
    early_stopping: bool = False,
    device: str | None = None,
    rule: DecayRule = DEFAULT_RULE,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
) -> SearchResult:
    """Run ``n_trials`` trials of ``study`` over ``space``, ``batch`` at a time, each batch
    trained as one batched computation; return what was done (:class:`SearchResult`).

    ``space`` maps parameter names to Optuna distributions: ``lr``, ``weight_decay`` (or
    ``wd``), ``mode``, ``optimizer``, or a keyword of the optimizer (``momentum``…); what it
    does not search takes the value given here. ``model`` and ``data`` are as in
    :func:`wdlab.sweep` (a factory, a ModelSpec or a built-in kind; a source name, a Dataset or
    splits); the data need a validation split. ``select`` is what Optuna is told: the task's
    metric (default) or ``"loss"``; the study's direction must match it.
    """
    ds = resolve_data(data)
    spec, label = resolve_model(model, ds)
    settings = Settings(
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        mode=mode,
        options=tuple(sorted((options or {}).items())),
        seeds=tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds),
        epochs=epochs,
        batch_size=batch_size,
        eval_every=eval_every,
        schedule=schedule,
        precision=precision,
        device=device,
        select=select or "auto",
        early_stopping=early_stopping,
        rule=rule,
        max_memory_mb=max_memory_mb,
    )
    return search(study, spec, ds, space, settings, n_trials, batch, label, progress)


def search_config(
    config: Experiment,
    space: Mapping[str, BaseDistribution],
    *,
    n_trials: int,
    batch: int = 16,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: Any = None,
    pruner: Any = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
) -> SearchResult:
    """:func:`optimize` for a validated experiment config (``wdlab search``): its data, model
    and training settings; its first lr, weight decay and mode where ``space`` searches none.
    The study ``study_name`` in ``storage`` (an Optuna storage URL; None: in memory) is loaded,
    or created in the direction of the metric, once every check has passed."""
    _check_counts(n_trials, batch)
    t0 = time.perf_counter()
    t, d = config.train, config.decay
    ds = config.data.load()
    settings = Settings(
        optimizer=t.optimizer,
        lr=t.lr[0],
        weight_decay=d.weight_decay[0],
        mode=d.modes[0],
        options=tuple(sorted(t.options.items())),
        seeds=tuple(t.seeds),
        epochs=t.epochs,
        batch_size=t.batch_size or None,
        eval_every=t.eval_every,
        schedule=t.schedule,
        precision=t.precision,
        device=t.device,
        shuffle_seed=config.data.seed,
        select=t.select,
        early_stopping=t.early_stopping,
        rule=d.decay_rule(),
        max_memory_mb=max_memory_mb,
    )
    model = config.model.factory or config.model.kind
    runner = _Search(config.model.spec(ds), ds, space, settings, model)
    name = study_name or f"search-{ds.name}"
    runner.bind(open_study(storage, name, runner.direction, sampler, pruner))
    return _run(runner, n_trials, batch, progress, t0)


def open_study(
    storage: str | None, name: str, direction: str, sampler: Any = None, pruner: Any = None
) -> Any:
    """The study ``name`` in ``storage`` (loaded as it is, its direction checked later), or a
    new one in ``direction``. A SQLite URL must name a new file or an Optuna storage; nothing
    is written to one that is not."""
    if storage is None:
        return optuna.create_study(
            study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )
    path = _sqlite_path(storage)
    if path is None or path.exists():
        if path is not None:
            _check_optuna_file(path, storage)
        if name in optuna.study.get_all_study_names(storage):
            return optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
    return optuna.create_study(
        study_name=name, storage=storage, direction=direction, sampler=sampler, pruner=pruner
    )


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (its folder checked), or None for other storages."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        raise ValueError(f"--storage {url}: the folder {path.parent} does not exist")
    return path


def _check_optuna_file(path: Path, url: str) -> None:
    """An existing SQLite file must hold Optuna's tables: another file is left as it is."""
    import sqlite3

    if path.is_dir():
        raise ValueError(f"--storage {url}: {path} is a folder, not a SQLite file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise ValueError(f"--storage {url}: cannot read {path} ({exc})") from None
    if head != b"SQLite format 3\x00" or not {"studies", "trials"} <= names:
        raise ValueError(f"--storage {url}: {path} is not an Optuna storage; left as it is")


def search(
    study: Any,
    spec: ModelSpec,
    ds: Dataset,
    space: Mapping[str, BaseDistribution],
    settings: Settings,
    n_trials: int,
    batch: int,
    model_name: str = "",
    progress: bool = False,
) -> SearchResult:
    """The search of :func:`optimize` on a model spec and a Dataset: every check first (nothing
    is asked or stored before they pass), then batch after batch."""
    t0 = time.perf_counter()
    _check_counts(n_trials, batch)
    runner = _Search(spec, ds, space, settings, model_name)
    runner.bind(study)
    return _run(runner, n_trials, batch, progress, t0)


def _run(runner: _Search, n_trials: int, batch: int, progress: bool, t0: float) -> SearchResult:
    """Ask, train and tell, batch after batch, until ``n_trials`` trials are done."""
    study, space = runner.study, runner.space
    bar = _progress(n_trials) if progress else None
    numbers: list[int] = []
    try:
        while len(numbers) < n_trials:
            trials = [study.ask(dict(space)) for _ in range(min(batch, n_trials - len(numbers)))]
            numbers += [t.number for t in trials]
            runner.run_batch(trials, bar)
    finally:
        if bar is not None:
            bar.close()
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    return SearchResult(
        study=study,
        trials=[by_number[n] for n in numbers],
        metric=runner.metric,
        direction=runner.direction,
        batches=runner.batches,
        seconds=time.perf_counter() - t0,
        engine=runner.engine,
    )


def _check_counts(n_trials: int, batch: int) -> None:
    for name, v in (("n_trials", n_trials), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="search", unit="trial", leave=False)


class _Search:
    """One search's checked settings (every check that needs no study, at construction);
    :meth:`bind` checks the study; then it trains the batches of trials Optuna proposes."""

    def __init__(
        self,
        spec: ModelSpec,
        ds: Dataset,
        space: Mapping[str, BaseDistribution],
        settings: Settings,
        model_name: str,
    ) -> None:
        self.spec, self.ds, self.space, self.settings = spec, ds, dict(space), settings
        if ds.y_val is None:
            raise ValueError("a search chooses on validation: the data need a validation split")
        self.crit = _criterion(ds, settings)
        self.metric = f"val_{self.crit.key}"
        self.direction = "maximize" if self.crit.higher else "minimize"
        self.targets = check_space(space, settings)
        fixed = self.config({}, settings.seeds[0], "check")  # the fixed values, checked
        check_optimizer_options(fixed.optimizer, dict(fixed.options), fixed.lr)
        self.plan((fixed,), None)  # the training settings, checked by the plan itself
        device = resolve_device(settings.device, "device")
        per_config = bytes_per_config(
            spec,
            ds,
            settings.batch_size,
            settings.epochs,
            settings.eval_every,
            settings.optimizer,
            settings.precision,
        )
        check_budget(per_config, settings.max_memory_mb, device)
        self.per_trial = per_config * len(settings.seeds)
        self.identity = _identity(settings, ds, model_name)
        self.batches, self.engine = 0, ""
        self.study: Any = None

    def bind(self, study: Any) -> None:
        """Check ``study`` (direction, earlier trials' distributions, what it was searched
        with); then, every check passed, record this search's settings with it."""
        check_study(study, self.space, self.crit.higher)
        check_identity(study, self.identity)
        self.study = study
        if "wdlab" not in study.user_attrs:  # the first write
            study.set_user_attr("wdlab", self.identity)

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
        )

    def run_batch(self, trials: Sequence[Trial], bar: Any) -> None:
        """Train the trials Optuna proposed, one plan per optimizer class and memory budget;
        a trial left unfinished by an error (or Ctrl-C) is told ``FAIL``."""
        try:
            for chunk in self._chunks(trials):
                self._train(chunk)
                self.batches += 1
                if bar is not None:
                    bar.update(len(chunk))
        except BaseException:
            for t in trials:
                self.study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
            raise

    def _chunks(self, trials: Sequence[Trial]) -> list[list[Trial]]:
        """The trials grouped by optimizer class (one per plan), each group cut to what fits
        the memory budget."""
        k = max(1, int(self.settings.max_memory_mb * 2**20 // max(self.per_trial, 1)))
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
        watch = _Watch(self.study, trials, rows, self.metric)
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
        if any(r.status != "done" for r in runs):
            trial.set_user_attr("status", "diverged")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        scores = [run_scores(r, self.crit) for r in runs]
        val = _mean([s[0] for s in scores])
        if not math.isfinite(val):
            trial.set_user_attr("status", "no finite validation score")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        trial.set_user_attr(f"test_{self.crit.key}", _mean([s[1] for s in scores]))
        if len(runs) > 1:
            trial.set_user_attr(f"{self.metric}_std", statistics.stdev(s[0] for s in scores))
        self.study.tell(trial, val)


class _Watch:
    """One batch in training: each evaluation reported to Optuna, pruned trials told and
    frozen."""

    def __init__(
        self, study: Any, trials: Sequence[Trial], rows: list[list[int]], metric: str
    ) -> None:
        self.study, self.trials, self.rows, self.metric = study, trials, rows, metric
        self.live = set(range(len(trials)))
        self.evals: set[int] = set()
        self.trainer: Trainer | None = None

    def on_epoch(self, epoch: int) -> None:
        """After an epoch: at an evaluation, report each live trial's value (mean over its
        seeds) at step = epochs trained; tell and freeze those Optuna prunes."""
        if epoch not in self.evals or self.trainer is None:
            return
        values = latest(self.trainer, self.metric)
        for i in sorted(self.live):
            trial = self.trials[i]
            trial.report(_mean([values[r] for r in self.rows[i]]), epoch + 1)
            if trial.should_prune():
                self.study.tell(trial, state=TrialState.PRUNED)
                self.live.discard(i)
                self.freeze(self.rows[i])

    def freeze(self, rows: Sequence[int]) -> None:
        """A pruned trial's rows leave the batch (:meth:`wdlab.trainer.Trainer.stop`): nothing
        more is computed, reported or told about them; the other trials' rows train on,
        their numbers unchanged."""
        if self.trainer is not None:
            self.trainer.stop(rows, "pruned")


def latest(trainer: Trainer, name: str) -> list[float]:
    """The last evaluation's ``name`` (``val_acc``, ``val_loss``…) of each configuration of a
    training in flight, in its plan's order (the one place that reads a trainer's records
    before it returns)."""
    values = trainer.recorder.stacked_evals()[name][-1].tolist()
    out = [math.nan] * len(values)
    for row, orig in enumerate(trainer.order):
        out[orig] = values[row]
    return out


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan


def _criterion(ds: Dataset, settings: Settings) -> Criterion:
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


def _identity(settings: Settings, ds: Dataset, model_name: str) -> dict[str, Any]:
    """The settings a study's trials share, as its storage keeps them (JSON types)."""
    sizes = [len(ds.y_train), len(ds.y_val) if ds.y_val is not None else 0]
    doc = settings.identity() | {"data": ds.name, "rows": sizes, "model": str(model_name)}
    return json.loads(json.dumps(doc, default=str))


__all__ = [
    "ALIASES",
    "PARAMS",
    "SearchResult",
    "Settings",
    "check_space",
    "check_study",
    "latest",
    "open_study",
    "optimize",
    "parse_range",
    "search",
    "search_config",
]


# ---------------------------------------------------------------------------------------------
# Ranges written as text (the command line's --lr, --wd, --mode).


def parse_range(name: str, text: str) -> Any:
    """A parameter's values written as text: ``X`` (fixed), ``A,B,C`` (a choice),
    ``LO..HI`` (uniform), ``LO..HI:log`` (log-uniform) or ``LO..HI:N`` (N log-spaced values to
    choose from, as in a sweep). Returns the fixed value or an Optuna distribution."""
    target = ALIASES.get(name, name)
    text = text.strip()
    if target in ("mode", "optimizer"):
        names = [v.strip() for v in text.split(",") if v.strip()]
        if not names:
            raise ValueError(f"--{name}: give a name or a list like decoupled,l2")
        return names[0] if len(names) == 1 else CategoricalDistribution(names)
    if ".." not in text:
        values = [_number(name, v) for v in text.split(",") if v.strip()]
        if not values:
            raise ValueError(f"--{name}: give a number, a list or a range like 1e-6..1:log")
        return values[0] if len(values) == 1 else CategoricalDistribution(values)
    rng, _, how = text.partition(":")
    lo_text, _, hi_text = rng.partition("..")
    lo, hi = _number(name, lo_text), _number(name, hi_text)
    if not lo < hi:
        raise ValueError(f"--{name} {text}: a range needs LO < HI, got {lo:g} >= {hi:g}")
    if how in ("", "log"):
        if how == "log" and lo <= 0:
            raise ValueError(f"--{name} {text}: a log range needs LO > 0")
        return FloatDistribution(lo, hi, log=how == "log")
    if not how.isdigit() or int(how) < 2 or lo <= 0:
        raise ValueError(
            f"--{name} {text}: expected LO..HI, LO..HI:log or LO..HI:N (N >= 2, LO > 0)"
        )
    n = int(how)
    step = (math.log10(hi) - math.log10(lo)) / (n - 1)
    grid = [float(f"{10 ** (math.log10(lo) + i * step):.6g}") for i in range(n)]
    return CategoricalDistribution(grid)


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--{name}: expected a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"--{name}: expected a finite number, got {text.strip()!r}")
    return value
