"""Optuna's search, trained K trials at a time: ``wdlab.optuna``.

Your Optuna study proposes the configurations (``lr``, ``weight_decay``, ``mode``,
``optimizer`` and the optimizer's own keywords, over any Optuna distribution, with any sampler:
TPE, CMA-ES, random, GP, QMC); :func:`optimize` asks it for ``batch`` trials at once
(``study.ask`` K times), trains them together through the engine ``wdlab.sweep`` uses (one
batch per optimizer class, cut to the memory budget: one batched computation each), reports
each trial's validation metric to Optuna at every evaluation (``trial.report(value, step)``,
step = epochs trained, so Optuna's pruners decide) and tells Optuna each trial's final value.
The study is an ordinary Optuna study afterwards: its storage, ``optuna.importance``,
``optuna.visualization`` and ``optuna-dashboard`` work on it.

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
  or training settings. Those settings are recorded with the study (user attribute
  ``wdlab``) at its first value: a search that fails before (its trials told ``FAIL``)
  leaves the study open to the same call.

Needs ``pip install 'wdlab[optuna]'``; ``import wdlab`` never imports Optuna.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor

from wdlab.config import Experiment, validate
from wdlab.data import Dataset, StreamedData
from wdlab.data.loaders import DEFAULT_BATCH_SIZE
from wdlab.decay import DEFAULT_RULE, DecayRule, WDSchedule
from wdlab.devices import DEFAULT_MAX_MEMORY_MB
from wdlab.extras import require
from wdlab.interrupts import interruptible
from wdlab.models import ModelSpec
from wdlab.pipelines.checks import (
    check_loss,
    decay_rule,
    epochs_or_steps,
    plain_numbers,
    seed_list,
)
from wdlab.pipelines.experiment import load_data, model_spec
from wdlab.pipelines.own import Data, Model, decay_section, resolve_model, user_data
from wdlab.pipelines.userdata import data_seed, stream_settings
from wdlab.trainer.plan import running
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT, a_type

optuna = require("optuna", "wdlab.optuna")
from optuna.distributions import BaseDistribution  # noqa: E402  (after the one-line check above)

from wdlab.optuna.result import SearchResult  # noqa: E402
from wdlab.optuna.space import (  # noqa: E402
    ALIASES,
    PARAMS,
    Settings,
    check_identity,
    check_space,
    check_study,
    parse_range,
)
from wdlab.optuna.storage import open_study, read_study  # noqa: E402
from wdlab.optuna.trials import _Search, latest, tell  # noqa: E402
from wdlab.progress import progress_bar  # noqa: E402
from wdlab.warn import warn_user  # noqa: E402

__all__ = [
    "ALIASES",
    "PARAMS",
    "SearchResult",
    "Settings",
    "check_identity",
    "check_space",
    "check_study",
    "latest",
    "load_search",
    "open_study",
    "optimize",
    "parse_range",
    "search",
    "search_config",
    "settings_of",
]


@interruptible
@plain_numbers
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
    epochs: int | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    eval_every: int = 1,
    schedule: str | None = None,
    steps: int | None = None,
    clip_grad_norm: float | None = None,
    precision: str = "fp32",
    select: str | None = None,
    early_stopping: bool = False,
    device: str | None = None,
    rule: DecayRule | str = DEFAULT_RULE,
    wd_schedule: str | WDSchedule | None = None,
    group_wd: Mapping[str, float] | None = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    n_classes: int | None = None,
    parallel: int = 1,
    channels_last: bool = False,
) -> SearchResult:
    """Run ``n_trials`` trials of ``study`` over ``space``; return a :class:`SearchResult`.

    ``batch`` trials are asked at a time and trained together (one batched computation per
    optimizer class and memory budget); the result says what was done.

    ``space`` maps parameter names to Optuna distributions: ``lr``, ``weight_decay`` (or
    ``wd``), ``mode``, ``optimizer``, or a keyword of the optimizer (``momentum``…); what it
    does not search takes the value given here. ``model`` and ``data`` are as in
    :func:`wdlab.sweep` (a factory, a ModelSpec or a built-in kind; a source name, a Dataset or
    splits: tensors held, Datasets and DataLoaders streamed with ``__getitem__`` afresh each
    epoch); the data need a validation split (streams without one lend it 20% of the training
    rows). ``select`` is what Optuna is told: the task's metric (default) or ``"loss"``; the
    study's direction must match it. The recipe (``steps``, ``schedule`` with warm-up,
    ``clip_grad_norm``, ``precision``, ``wd_schedule``, ``group_wd``, ``rule``: a DecayRule or
    a name such as ``"timm"``) is as in :func:`wdlab.sweep`, checked by the same declaration
    (:mod:`wdlab.config`), and so are ``loss`` (``fn(outputs, targets) -> scalar``, e.g.
    ``nn.CrossEntropyLoss(label_smoothing=0.1)``: what trains, and what ``select="loss"``
    tells), ``n_classes`` (of streamed data whose labels do not say it), ``parallel`` and
    ``channels_last``. The study is told nothing before every check has passed; it records these
    settings with its first value (not ``parallel`` and ``channels_last``: how the trials run).
    """
    if not all(hasattr(study, a) for a in ("ask", "tell", "get_trials")):
        raise ValueError(
            f"study must be an optuna.Study (optuna.create_study(...)), got {a_type(study)}"
        )
    rule = decay_rule(rule)  # a DecayRule, or its name as wdlab.sweep and --rule take it
    epochs = epochs_or_steps(epochs, steps)
    streamed = {"batch_size": batch_size, "n_classes": n_classes, "progress": progress}
    ds = user_data(data, (), streamed, model, DEFAULT_FACTORY_TIMEOUT)
    spec, label = resolve_model(model, ds)
    train = {"optimizer": optimizer, "lr": lr, "options": dict(options or {}), "epochs": epochs}
    made = stream_settings(data)  # a StreamedData as made: its own batch size and seed
    size = made.get("batch_size", batch_size or 0)
    train |= {"seeds": seed_list(seeds), "steps": steps or 0, "batch_size": size}
    train |= {"eval_every": eval_every, "schedule": schedule or "constant", "device": device}
    train |= {"precision": precision, "select": select or "auto", "clip_grad_norm": clip_grad_norm}
    train |= {"early_stopping": early_stopping}
    decay = decay_section([mode], [weight_decay], wd_schedule, group_wd)
    config = validate({"train": train, "decay": decay})  # the one declaration's checks
    settings = settings_of(config, rule, max_memory_mb, shuffle_seed=data_seed(ds))
    settings = replace(settings, loss=check_loss(loss), stream_seed=made.get("seed", 0))
    settings = replace(settings, **running(parallel, channels_last))
    return search(study, spec, ds, space, settings, n_trials, batch, label, progress)


@interruptible
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
    parallel: int = 1,
    channels_last: bool = False,
) -> SearchResult:
    """:func:`optimize` for a validated experiment config (``wdlab search``).

    It takes the config's data, model and training settings, and its first lr, weight decay and
    mode where ``space`` searches none. The study ``study_name`` in ``storage`` (an Optuna
    storage URL; None: in memory) is loaded, or created in the direction of the metric, once
    every check has passed. ``sampler`` may be ``make(trials_held)``: a resumed study's sampler
    is then made knowing how many trials the study holds (``wdlab search`` seeds it at
    ``--seed`` + that count, so that it does not draw the first trials again). ``parallel``,
    ``channels_last``: how each batch runs (:func:`wdlab.sweep`)."""
    _check_counts(n_trials, batch)
    t0 = time.perf_counter()
    t, d = config.train, config.decay
    ds = load_data(config.data, t.batch_size or None, progress, model=config.model)
    settings = settings_of(config, d.decay_rule(), max_memory_mb, config.data.seed)
    settings = _lanes(replace(settings, **running(parallel, channels_last)), batch)
    model = config.model.factory or config.model.kind
    runner = _Search(model_spec(config.model, ds), ds, space, settings, model)
    name = study_name or f"search-{ds.name}"
    made = callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler)
    study = open_study(storage, name, runner.direction, None if made else sampler, pruner)
    if made:
        study.sampler = sampler(len(study.get_trials(deepcopy=False)))
    runner.bind(study)
    return _run(runner, n_trials, batch, progress, t0)


def settings_of(
    config: Experiment, rule: DecayRule, max_memory_mb: float, shuffle_seed: int
) -> Settings:
    """What a search's trials share, from a validated config.

    Its first lr, weight decay and mode are the values of what the space does not search; the
    recipe is the config's."""
    t, d = config.train, config.decay
    return Settings(
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
        shuffle_seed=shuffle_seed,
        select=t.select,
        early_stopping=t.early_stopping,
        rule=rule,
        max_memory_mb=max_memory_mb,
        steps=t.steps or None,
        clip_grad_norm=t.clip_grad_norm,
        wd_schedule=d.wd_schedule,
        group_wd=tuple(d.group_wd.items()),
    )


def search(
    study: Any,
    spec: ModelSpec,
    ds: Dataset | StreamedData,
    space: Mapping[str, BaseDistribution],
    settings: Settings,
    n_trials: int,
    batch: int,
    model_name: str = "",
    progress: bool = False,
) -> SearchResult:
    """The search of :func:`optimize` on a model spec and data, held or streamed.

    Every check first (nothing is asked or stored before they pass), then batch after batch."""
    t0 = time.perf_counter()
    _check_counts(n_trials, batch)
    runner = _Search(spec, ds, space, _lanes(settings, batch), model_name)
    runner.bind(study)
    return _run(runner, n_trials, batch, progress, t0)


def _run(runner: _Search, n_trials: int, batch: int, progress: bool, t0: float) -> SearchResult:
    """Ask, train and tell, batch after batch, until ``n_trials`` trials are done."""
    study, space = runner.study, runner.space
    bar = _progress(n_trials) if progress else None
    numbers: list[int] = []
    try:
        while len(numbers) < n_trials and not runner.stopped:
            trials, refused = _ask(study, space, min(batch, n_trials - len(numbers)))
            numbers += [*refused, *(t.number for t in trials)]
            if bar is not None and refused:
                bar.update(len(refused))
            runner.run_batch(trials, bar)
    finally:
        if bar is not None:
            bar.close()
    if runner.stopped and len(numbers) < n_trials:
        warn_user(
            f"the sampler stopped the search after {len(numbers)} of {n_trials} trials "
            "(a grid sampler: every point tried)"
        )
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


def load_search(storage: str, name: str | None = None) -> SearchResult:
    """A stored search (``wdlab search --storage``), read back without training.

    Every trial of the study ``name`` (the storage's one study when None), its metric read
    from the trials (``value`` where they do not say it)."""
    study = read_study(storage, name)
    trials = study.get_trials(deepcopy=False)
    tests = {k for t in trials for k in t.user_attrs if k.startswith("test_")}
    metric = f"val_{tests.pop().removeprefix('test_')}" if len(tests) == 1 else "value"
    direction = study.direction.name.lower()
    return SearchResult(study, list(trials), metric, direction, scope="the study")


def _ask(study: Any, space: dict[str, Any], k: int) -> tuple[list[Any], list[int]]:
    """``k`` trials asked of ``study``: those to train, and the numbers of enqueued ones whose
    values Optuna refused as it asked (``-0.01`` on a log range), each told ``FAIL`` and
    warned, not left ``RUNNING``; if asking stops (Ctrl-C) those asked are told ``FAIL``."""
    from optuna.trial import TrialState

    trials: list[Any] = []
    refused: list[int] = []
    try:
        while len(trials) + len(refused) < k:
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            try:
                trials.append(study.ask(dict(space)))
            except ValueError as exc:
                refused.append(_refused(study, waiting, space, exc))
                continue
            _say_unsearched(trials[-1].number, waiting, space)
    except BaseException:
        for t in trials:
            tell(study, t, state=TrialState.FAIL, skip_if_finished=True)
        raise
    return trials, refused


def _refused(study: Any, waiting: Sequence[Any], space: Mapping[str, Any], exc: ValueError) -> int:
    """The number of the enqueued trial (of ``waiting``) that Optuna took and then refused
    with ``exc``, told ``FAIL`` with its ``status`` and warned; ``exc`` again where no enqueued
    trial was taken. Only a trial with a value ``space`` refuses is one: another process
    sharing the study may have taken a valid one meanwhile."""
    from optuna.trial import Trial, TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    said = str(exc).rstrip(".")
    for trial in [t for t in waiting if t.number in running and _outside(t, space)]:
        try:  # (another process refused the same may have told it first: the next is ours)
            Trial(study, trial._trial_id).set_user_attr("status", f"refused: {said}")
            tell(study, trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):
            continue
        given = trial.system_attrs.get("fixed_params", {})
        warn_user(f"trial {trial.number}: enqueued {given}: {said}; told FAIL, the search goes on")
        return trial.number
    raise exc


def _outside(trial: Any, space: Mapping[str, Any]) -> bool:
    """Whether an enqueued ``trial`` holds a value its parameter's distribution refuses."""
    for name, value in trial.system_attrs.get("fixed_params", {}).items():
        if name in space:
            try:
                space[name].to_internal_repr(value)
            except (ValueError, TypeError):
                return True
    return False


def _say_unsearched(number: int, waiting: Sequence[Any], space: Mapping[str, Any]) -> None:
    """A warning where trial ``number`` was enqueued with a parameter this search does not
    search (``weight_decay`` in a study whose trials name it ``wd``): Optuna ignores it."""
    for t in waiting:
        extra = sorted(set(t.system_attrs.get("fixed_params", {})) - set(space))
        if t.number == number and extra:
            warn_user(
                f"trial {number}: enqueued {', '.join(extra)}, which this search does not "
                f"search (it searches {', '.join(space)}): Optuna ignores it"
            )


def _lanes(settings: Settings, batch: int) -> Settings:
    """``settings`` with at most as many lanes side by side as a batch of ``batch`` trials has
    rows (one per seed): the memory budget counts no lane that cannot run."""
    return replace(settings, parallel=min(settings.parallel, batch * len(settings.seeds)))


def _check_counts(n_trials: int, batch: int) -> None:
    for name, v in (("n_trials", n_trials), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _progress(total: int) -> Any:
    return progress_bar(total, "search", "trial")
