"""``wdlab search``: an Optuna search over lr, weight decay, mode…, trained K trials at a time
(:func:`wdlab.optuna.search_config`). Building the parser imports neither torch nor Optuna."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wdlab.cli import facts
from wdlab.cli.common import (
    Command,
    add_json,
    add_running,
    emit_json,
    positive_int,
    seed,
)
from wdlab.cli.experiment import add_max_memory, both_given, own_decay_unused
from wdlab.cli.flags import add_key, experiment_keys, replace_helps, shown
from wdlab.cli.flags import overrides as flag_overrides

# The flags this command reads as ranges (the sweep's grid flags of the same names).
RANGE_FLAGS = {"lr": "train.lr", "wd": "decay.weight_decay", "mode": "decay.modes"}
_HALVING = "successive halving is wdlab sweep's; a search prunes its trials with --pruner"
SWEEP_ONLY = {  # run flags a search has no use for: refused, not silently ignored
    "train.prune": _HALVING,
    "train.prune_eta": _HALVING,
    "train.prune_rung": _HALVING,
    "train.checkpoint": "a search trains each batch of trials from the start (no checkpoints)",
    "train.keep": "a search keeps no trained weights (wdlab sweep --keep does)",
    "train.patience": "a search never stops a trial early: --early-stopping tells Optuna each "
    "trial's best epoch, and its --pruner stops trials",
}
SEARCH_HELP = {  # run flags that mean something else in a search: their help says what
    "train.early_stopping": "tell Optuna each trial's best validation epoch, not its last (a "
    "search stops no trial early: its --pruner stops trials)",
}
DEFAULT_SPACE = ("wd", "1e-6..1:log")  # searched when no flag or file gives a range
SEARCH_DEFAULTS = {"train.eval_every": 1}  # every epoch reported, so pruners decide early


@dataclass(frozen=True)
class Choice:
    """One ``--sampler`` or ``--pruner``: how to make it (from optuna, the seed, the epochs)
    and a line of help."""

    make: Callable[[Any, int, int], Any]
    help: str


SAMPLERS = {
    "tpe": Choice(lambda o, s, _: o.samplers.TPESampler(seed=s), "Tree-structured Parzen"),
    "random": Choice(lambda o, s, _: o.samplers.RandomSampler(seed=s), "random search"),
    "cmaes": Choice(lambda o, s, _: o.samplers.CmaEsSampler(seed=s), "CMA-ES"),
    "gp": Choice(lambda o, s, _: o.samplers.GPSampler(seed=s), "Gaussian process"),
    "qmc": Choice(lambda o, s, _: o.samplers.QMCSampler(seed=s), "quasi-Monte Carlo"),
}
PRUNERS = {
    "median": Choice(lambda o, _, __: o.pruners.MedianPruner(), "below the median: stop"),
    "halving": Choice(lambda o, _, __: o.pruners.SuccessiveHalvingPruner(), "ASHA"),
    "hyperband": Choice(  # its rungs up to the epochs; with --steps, the last one reported
        lambda o, _, e: o.pruners.HyperbandPruner(min_resource=1, max_resource=e or "auto"),
        "Hyperband",
    ),
    "none": Choice(lambda o, _, __: o.pruners.NopPruner(), "every trial runs to the end"),
}


def cmd_search(args: argparse.Namespace) -> int:
    """Search lr, weight decay, mode… with Optuna, K trials trained as one batch; print the
    best trials, their test metric and the parameters' importance."""
    from wdlab.config import merge, validate
    from wdlab.extras import require

    require("optuna", "wdlab search")  # one line naming the extra, before Optuna is imported
    space, fixed = _space(args)  # the ranges first: a bad one stores nothing
    raw = _search_file(args.config)
    cfg = validate(raw)
    in_file = {f"{sec}.{k}" for sec, keys in raw.items() if isinstance(keys, dict) for k in keys}
    keys = [(dotted, to) for dotted, to in experiment_keys() if to not in RANGE_FLAGS]
    in_train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    overrides: dict[str, object] = both_given(in_train, flag_overrides(args, keys))
    flags = {k["key"]: k["flag"] for k in facts.load()["experiment"]}
    for dotted, why in SWEEP_ONLY.items():
        if overrides.get(dotted) is not None:
            raise ValueError(f"{dotted} ({flags[dotted]}): {why}")
    overrides |= fixed
    for dotted, value in SEARCH_DEFAULTS.items():
        if overrides.get(dotted) is None and dotted not in in_file:
            overrides[dotted] = value
    cfg = merge(cfg, overrides)
    for flag, dotted in RANGE_FLAGS.items():  # a list in the file (no flag): a choice
        section, _, key = dotted.partition(".")
        values = cfg[section][key]
        if flag not in space and f"{dotted}" not in fixed and len(values) > 1:
            space[flag] = _choice(values)
    if not space:
        wd = RANGE_FLAGS[DEFAULT_SPACE[0]]
        if wd in fixed or wd in in_file:  # the default space would overrule the value given
            raise ValueError(
                f"nothing to search: the weight decay is fixed at {cfg.decay.weight_decay[0]:g} "
                "and no range is given; give one (--wd 1e-6..1:log, --lr 1e-4..1e-1:log, "
                "--mode coupled,decoupled), or train it with wdlab run"
            )
        space[DEFAULT_SPACE[0]] = _parse(*DEFAULT_SPACE)
    elif DEFAULT_SPACE[0] not in space and not any(cfg.decay.weight_decay):
        _no_decay_searched(space, given=RANGE_FLAGS["wd"] in {*fixed, *in_file})
    if "mode" not in space and "decay.modes" not in {*fixed, *in_file}:
        own_decay_unused(cfg, wd_searched=DEFAULT_SPACE[0] in space)
    return _search(args, cfg, space)


def _no_decay_searched(space: Mapping[str, Any], given: bool) -> None:
    """Warn that every trial trains without weight decay: a range was given, not for it, and
    its value is 0 (a search of modes alone then compares modes that all do nothing)."""
    from wdlab.warn import warn_user

    alike = " (every mode trains alike at wd 0)" if "mode" in space else ""
    fix = "" if given else ", or fix it with --wd VALUE"
    warn_user(
        f"the weight decay is 0 in every trial: {', '.join(space)} searched, not it{alike}; "
        f"search it too with --wd 1e-6..1:log{fix}"
    )


def fixed_values(cfg: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """What every trial takes that the space does not search (the file's or the flags'
    values, else the schema's defaults): said with the answer, as a sweep's grid line."""
    values = {
        "optimizer": cfg.train.optimizer,
        "lr": cfg.train.lr[0],
        "wd": cfg.decay.weight_decay[0],
        "mode": cfg.decay.modes[0],
    }
    return {k: v for k, v in values.items() if k not in space}


def _search_file(path: str | None) -> dict[str, Any]:
    """The experiment file's keys, less those a search has no use for (:data:`SWEEP_ONLY`: a
    file shared with ``wdlab sweep`` may set them); each one dropped is a warning, never
    silently ignored (a flag of theirs is refused)."""
    from wdlab.pipelines.experiment import read_config
    from wdlab.warn import warn_user

    raw = read_config(path) if path else {}
    train = raw.get("train")
    for dotted, why in SWEEP_ONLY.items():
        name = dotted.partition(".")[2]
        if isinstance(train, dict) and name in train:
            warn_user(f"{path}: {dotted} = {train.pop(name)!r} is not read: {why}")
    return raw


def _search(args: argparse.Namespace, cfg: Any, space: dict[str, Any]) -> int:
    """Run the search and print (or emit as JSON) what it found."""
    import optuna

    from wdlab.cli.common import show_progress
    from wdlab.optuna import search_config
    from wdlab.optuna.storage import in_memory, shown_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    result = search_config(
        cfg,
        space,
        n_trials=args.trials,
        batch=args.batch,
        storage=args.storage,
        study_name=args.study_name,
        sampler=lambda held: SAMPLERS[args.sampler].make(
            optuna, (args.seed + held) % 2**32, cfg.train.epochs
        ),  # a resumed study's sampler seeded past its trials: it draws new ones
        pruner=PRUNERS[args.pruner].make(optuna, args.seed, _epochs_known(cfg)),
        max_memory_mb=args.max_memory,
        progress=show_progress(args),
        parallel=args.parallel,
        channels_last=args.channels_last,
    )
    fixed = fixed_values(cfg, space)
    where = args.storage and not in_memory(args.storage)  # a file or a database: it is kept
    url = shown_url(args.storage) if where else None
    if args.json:
        emit_json(result.to_dict() | {"storage": url, "fixed": fixed})
        return 0
    print(result.table())
    print("fixed (not searched): " + ", ".join(f"{k} {shown(v)}" for k, v in fixed.items()))
    if line := result.importance_line():
        print(line)
    print(f"time: {result.seconds:.1f} s  ({result.engine})")
    if where:
        print(f"study: {result.study.study_name!r} in {url}")
        print(f"dashboard: optuna-dashboard {url}")
    else:
        print("study: in memory (keep it with --storage sqlite:///search.db)")
    return 0


def _epochs_known(cfg: Any) -> int | None:
    """The epochs a trial reports, where known before the data: not under ``--steps`` (the
    data's steps per epoch tell them)."""
    return None if cfg.train.steps else cfg.train.epochs


def _parse(name: str, text: str) -> Any:
    from wdlab.optuna import parse_range

    return parse_range(name, text)


def _choice(values: list) -> Any:
    from optuna.distributions import CategoricalDistribution

    return CategoricalDistribution(list(dict.fromkeys(values)))


def _space(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, object]]:
    """(the searched parameters, the config overrides of the fixed ones) from the flags."""
    from optuna.distributions import BaseDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, object] = {}
    for flag, dotted in RANGE_FLAGS.items():
        text = getattr(args, flag)
        if text is None:
            continue
        value = _parse(flag, text)
        if isinstance(value, BaseDistribution):
            space[flag] = value
        else:
            fixed[dotted] = [value]
    return space, fixed


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """The ranges, the trials, the study and its sampler and pruner, and the sweep's data,
    model and training flags."""
    p.add_argument("config", nargs="?", help="experiment TOML file (optional)")
    r = p.add_argument_group("search space: X, A,B,C, LO..HI, LO..HI:log or LO..HI:N")
    lr, modes = facts.key("train.lr")["default"], facts.key("decay.modes")["default"]
    r.add_argument(
        "--lr", help=f"learning rate, e.g. 1e-4..1e-1:log (default: {shown(lr)}, not searched)"
    )
    r.add_argument(
        "--wd",
        "--weight-decay",
        dest="wd",
        help=f"weight decay, e.g. 1e-6..1:log (default: {DEFAULT_SPACE[1]} when no range is given)",
    )
    r.add_argument(
        "--mode",
        help="decay mode(s) to choose from, e.g. decoupled,l2 "
        f"(default: {shown(modes)}, not searched)",
    )
    s = p.add_argument_group("the study")
    s.add_argument("--trials", type=positive_int, default=32, help="trials to run")
    s.add_argument("--batch", type=positive_int, default=16, help="trials per batch")
    s.add_argument(
        "--storage", help="Optuna storage URL, e.g. sqlite:///search.db (default: in memory)"
    )
    s.add_argument(  # --name, as sweep and run call a study's name
        "--study-name", "--name", dest="study_name",
        help="the Optuna study's name (default: search-DATA); --name is the same",
    )  # fmt: skip
    s.add_argument("--sampler", choices=list(SAMPLERS), default="tpe", help="Optuna's sampler")
    s.add_argument("--pruner", choices=list(PRUNERS), default="median", help="Optuna's pruner")
    s.add_argument(
        "--seed", type=seed, default=0,
        help="the sampler's seed (a resumed study's: SEED + the trials it holds)",
    )  # fmt: skip
    add_max_memory(s)  # one text in every command
    add_running(s)
    g = p.add_argument_group("data, model and training (as in sweep)")
    for dotted, to in experiment_keys():
        if dotted in SEARCH_DEFAULTS:
            add_key(g, dotted, " in a search", SEARCH_DEFAULTS[dotted])
        elif to not in RANGE_FLAGS:
            add_key(g, dotted)
    helps = {to: SEARCH_HELP[d] for d, to in experiment_keys() if d in SEARCH_HELP}
    helps |= {to: argparse.SUPPRESS for d, to in experiment_keys() if d in SWEEP_ONLY}
    replace_helps(p, helps)
    add_json(p)


COMMANDS = [
    Command(
        "search",
        "search lr, weight decay, mode… with Optuna, K trials per batch",
        add_search_flags,
        cmd_search,
    )
]
