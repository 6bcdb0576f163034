"""The search space: what every trial shares (:class:`Settings`), the parameters a space may
search and their checks, the checks of a study against a space, and ranges written as text
(the command line's ``--lr``, ``--wd``, ``--mode``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from wdlab.decay import DEFAULT_RULE, MODES, DecayRule
from wdlab.devices import DEFAULT_MAX_MEMORY_MB
from wdlab.optimizers import OPTIMIZERS, check_optimizer_options, optimizer_spec
from wdlab.pipelines.checks import rule_identity
from wdlab.textlists import comma_items, first_repeat, range_ends
from wdlab.usercode import code_identity
from wdlab.warn import warn_user

FLOAT32_MAX = 3.4028234663852886e38
#: Names of the searched parameters that are not optimizer keywords, and what each sets.
PARAMS = {
    "lr": "the learning rate (> 0)",
    "weight_decay": "the weight decay (>= 0)",
    "mode": f"the decay mode: {', '.join(MODES)}",
    "optimizer": f"the optimizer: {', '.join(OPTIMIZERS)}",
}
ALIASES = {"wd": "weight_decay"}  # the CLI's name for it
SEARCHED = "searched"  # a study's record of a value its space searched (not fixed)


@dataclass(frozen=True)
class Settings:
    """What every trial shares.

    ``lr``, ``weight_decay``, ``mode``, ``optimizer`` and ``options`` are the values a trial
    takes for what the space does not search; the rest are the training's settings (as in
    :func:`wdlab.sweep`)."""

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
    steps: int | None = None
    clip_grad_norm: float | None = None
    wd_schedule: str | None = None
    group_wd: tuple[tuple[str, float], ...] = ()
    loss: Any = None  # the user's loss (as wdlab.sweep's loss=), None: the task's own
    stream_seed: int = 0  # a StreamedData given as made: its own seed (0: none said)
    parallel: int = 1  # how a batch runs (wdlab.sweep's): not in the identity
    channels_last: bool = False

    def identity(self) -> dict[str, Any]:
        """What makes two searches' trials comparable (kept with the study)."""
        d = asdict(replace(self, loss=None))
        d["loss"] = code_identity(self.loss)
        for k in ("optimizer", "lr", "weight_decay", "mode", "options", "device"):
            d.pop(k)
        d["seeds"] = list(self.seeds)
        d["group_wd"] = [list(g) for g in self.group_wd]
        d["rule"] = rule_identity(self.rule)  # a name ("timm"), or the fields it changes
        for k in ("max_memory_mb", "parallel", "channels_last"):
            d.pop(k)  # how the trials run, not what they are
        if not self.stream_seed:  # (left out: the identity of earlier searches)
            d.pop("stream_seed")
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
        if name not in optimizer_keywords(optimizer):
            raise ValueError(_not_searchable(name, optimizer))
        try:
            check_optimizer_options(optimizer, {name: value}, lr)
        except ValueError as exc:
            raise ValueError(f"{name}: {str(exc).removeprefix('train.options: ')}") from None


#: torch.optim's keywords that choose how a step is computed (or its sign), not a
#: hyperparameter: never searched
STEP_SWITCHES = ("maximize", "foreach", "capturable", "differentiable", "fused")


def optimizer_keywords(optimizer: str) -> list[str]:
    """The keywords of ``optimizer`` a space may search (its constructor's, but for ``params``,
    ``lr`` and ``weight_decay``: those are :data:`PARAMS`; and torch's :data:`STEP_SWITCHES`)."""
    params = inspect.signature(optimizer_spec(optimizer).cls.__init__).parameters
    skip = ("self", "params", "lr", "weight_decay", *STEP_SWITCHES)
    return [n for n in params if n not in skip]


def _not_searchable(name: str, optimizer: str) -> str:
    """One line: ``name`` is no parameter a space may search; what it may search instead."""
    cls = optimizer_spec(optimizer).cls.__name__
    aliases = {v: k for k, v in ALIASES.items()}
    ours = ", ".join(f"{p} ({aliases[p]})" if p in aliases else p for p in PARAMS)
    shared = ""
    if name in {f.name for f in fields(Settings)}:
        shared = f" ({name} is a training setting every trial shares: give it to optimize)"
    what = f"{cls} has no option {name!r}{shared}"
    if name in STEP_SWITCHES:
        what = f"{cls}'s {name!r} switches how a step is computed, no hyperparameter"
    return (
        f"{name}: {what}; a space searches {ours}, or {cls}'s keywords: "
        f"{', '.join(optimizer_keywords(optimizer))}"
    )


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
    """Check every distribution against its parameter (and each optimizer the search may use).

    Return ``{name in the space: the parameter it sets}``. ``ValueError`` in one line."""
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
    """Check that wdlab can search ``study``: ``ValueError`` in one line, nothing written.

    A study wdlab can search has one objective in the metric's direction, and distributions of
    the same kind as its earlier trials'."""
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


#: The keys every search's record holds (what wdlab stores under the study's "wdlab"
#: attribute): a dict without them is the user's own.
WRITTEN = frozenset({"data", "model", "rows"})


def check_identity(
    study: Any,
    identity: Mapping[str, Any],
    former: Mapping[str, Any] | None = None,
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bool:
    """Refuse a study searched before on other data, model or training settings (``former``:
    the values an earlier wdlab stored for the same settings, also accepted). Returns whether
    ``identity`` is to be recorded: none is, or one is but no trial stored a value under it
    (a search that failed before its first evaluation compares with nothing), or one an
    earlier wdlab stored lacks a setting this one records (then said in a warning, and
    recorded from now on: the study's later searches are held to it). ``read``: what a
    stored identity says, where an earlier wdlab left something implied."""
    old = study.user_attrs.get("wdlab")
    if old is None:
        return True
    if not isinstance(old, dict) or not set(old) >= WRITTEN:  # the user's own, not a record
        raise ValueError(
            f"the study {study.study_name!r} has a user attribute 'wdlab' that wdlab did not "
            "write: wdlab records its search settings under that name; rename yours, or use "
            "another study"
        )
    old = read(dict(old)) if read is not None else old
    former = former or {}
    diff = [
        k
        for k in sorted(set(old) | set(identity))
        if old.get(k) != identity.get(k) and old.get(k) not in former.get(k, ())
    ]
    unrecorded = sorted(k for k in identity if k not in old)
    if not diff:
        if unrecorded:
            warn_user(
                f"the study {study.study_name!r} was searched before wdlab recorded its "
                f"{', '.join(unrecorded)}: its earlier trials are taken as this search's; "
                "from now on they are recorded"
            )
        return bool(unrecorded)
    if not any(_valued(t) for t in study.get_trials(deepcopy=False)):
        return True
    k = diff[0]
    raise ValueError(
        f"the study {study.study_name!r} was searched with {k} = {_shown(k, old.get(k))}, not "
        f"{_shown(k, identity.get(k))}; use another study name"
    )


def _shown(key: str, value: Any) -> str:
    """A recorded setting as a refusal names it: a factory's network by what its fingerprint
    stands for."""
    if key == "network" and isinstance(value, dict) and "fingerprint" in value:
        return f"a factory's network {value['fingerprint']} (its code, structure or weights)"
    if value == SEARCHED:
        return "a range (the space searched it)"
    if key == "batch_size" and not value:  # None and 0 are both the full batch
        return "the full batch (--batch-size 0)"
    return repr(value)


def _valued(trial: Any) -> bool:
    """Whether a trial stored a value (final or reported) that a later search compares with."""
    return trial.value is not None or bool(trial.intermediate_values)


# ---------------------------------------------------------------------------------------------
# Ranges written as text (the command line's --lr, --wd, --mode).


def parse_range(name: str, text: str) -> Any:
    """A parameter's values written as text, read into a fixed value or an Optuna distribution.

    The text is ``X`` (fixed), ``A,B,C`` (a choice), ``LO..HI`` (uniform), ``LO..HI:log``
    (log-uniform) or ``LO..HI:N`` (N log-spaced values to choose from, as in a sweep)."""
    target = ALIASES.get(name, name)
    text = text.strip()
    if target in ("mode", "optimizer"):
        names = _once(name, comma_items(text, f"--{name}"))  # decoupled,,l2: refused
        for n in names:  # named now: before any warning about the search is said
            _check_value(target, n, "", 0.0)
        if not names:
            raise ValueError(f"--{name}: give a name or a list like decoupled,l2")
        return names[0] if len(names) == 1 else CategoricalDistribution(names)
    if ".." not in text:
        values = _once(name, [_number(name, v) for v in comma_items(text, f"--{name}")])
        _check_ends(target, values)
        if not values:
            raise ValueError(f"--{name}: give a number, a list or a range like 1e-6..1:log")
        return values[0] if len(values) == 1 else CategoricalDistribution(values)
    rng, _, how = text.partition(":")
    lo_text, hi_text = range_ends(rng, f"--{name}")
    lo, hi = _number(name, lo_text), _number(name, hi_text)
    if not lo < hi:
        raise ValueError(f"--{name} {text}: a range needs LO < HI, got {lo:g} >= {hi:g}")
    _check_ends(target, [lo, hi])
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


def _once(name: str, values: list[Any]) -> list[Any]:
    """``values``, each given once; a repeat is refused as run and sweep refuse it (it was
    dropped without a word)."""
    twice = first_repeat(values)
    if twice is not None:
        shown = f"{twice:g}" if isinstance(twice, float) else str(twice)
        raise ValueError(f"--{name}: {shown} is given twice; give each once")
    return values


def _check_ends(target: str, values: list[float]) -> None:
    """The lr's and the weight decay's values checked as they are read (before any warning
    about the search is said); other keywords are checked against their optimizer later."""
    if target in ("lr", "weight_decay"):
        for v in values:
            _check_value(target, v, "", 0.0)


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--{name}: expected a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"--{name}: expected a finite number, got {text.strip()!r}")
    return value
