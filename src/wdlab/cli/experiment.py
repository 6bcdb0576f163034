"""``wdlab run`` and ``wdlab sweep``: experiments from a TOML file and flags generated from the
config schema."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wdlab.cli import facts
from wdlab.cli.common import (
    RESULT_FILES,
    Command,
    UsageError,
    add_force,
    add_json,
    add_running,
    emit_json,
    emit_study,
    folder,
    positive_float,
    positive_int,
    print_paths,
    report_files,
    show_progress,
    with_report,
    writable_dir,
)
from wdlab.cli.facts import OPTION_TYPES
from wdlab.cli.flags import add_key, experiment_keys, overrides, replace_helps, shown

if TYPE_CHECKING:
    from wdlab.config import Experiment

KEPT = ("best", "all")  # the train.keep values that keep trained weights (a sweep's)


def experiment_config(args: argparse.Namespace) -> Experiment:
    """The experiment of a TOML file (optional) with the flags' overrides applied."""
    return _config(args, default_grid=False)[0]


def sweep_config(args: argparse.Namespace) -> tuple[Experiment, str]:
    """:func:`experiment_config` for a sweep: a file and flags that name no grid key (modes,
    weight decays, seeds) get :data:`wdlab.config.SWEEP_GRID`; with the note saying what it
    tries ('' when a grid was given)."""
    return _config(args, default_grid=True)


def _config(args: argparse.Namespace, default_grid: bool) -> tuple[Experiment, str]:
    from wdlab.config import SWEEP_GRID, merge, validate
    from wdlab.pipelines.experiment import grid_keys_named, read_config

    raw = read_config(args.config) if args.config else {}
    cfg = validate(raw)  # the file's own mistakes are named before the flags are applied
    given = run_overrides(args)
    in_file = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    given = both_given(in_file, given)
    named = grid_keys_named(raw, given)
    if default_grid and not named:
        cfg = merge(cfg, {**given, **SWEEP_GRID})
        return _switched(cfg, in_file, given), grid_note(cfg)
    cfg = _switched(merge(cfg, given), in_file, given)
    if "decay.modes" not in named:
        own_decay_unused(cfg)
    unnamed = [k for k in SWEEP_GRID if k not in named]
    return cfg, (grid_note(cfg, unnamed) if default_grid and unnamed else "")


def both_given(in_file: Mapping[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``flags``, once neither the file's ``[train]`` nor the flags give both epochs and steps
    (one line where they do); ``--epochs`` over a file's ``steps`` trains the epochs, as a
    flag overrides the file (the file's steps would have won), and says so in a warning;
    ``--steps`` over a file's ``epochs`` says so too, and the config is a file's of steps
    alone (its epochs the default, unread: not the file's, beside the steps)."""
    from wdlab.pipelines.checks import epochs_or_steps

    said = "train.epochs and train.steps"
    epochs_or_steps(in_file.get("epochs"), in_file.get("steps"), said, zero_is_unset=True)
    epochs, steps = flags.get("train.epochs"), flags.get("train.steps")
    epochs_or_steps(epochs, steps, "--epochs and --steps", zero_is_unset=True)
    from wdlab.warn import warn_user

    if epochs is not None and steps is None and in_file.get("steps"):
        warn_user(f"--epochs {epochs} replaces the file's steps = {in_file['steps']}")
        return flags | {"train.steps": 0}  # --steps given too was refused just above
    if steps and epochs is None and in_file.get("epochs"):  # stored as a file of steps alone
        from wdlab.config import TrainConfig

        warn_user(f"--steps {steps} replaces the file's epochs = {in_file['epochs']}")
        return flags | {"train.epochs": TrainConfig().epochs}
    return flags


def _switched(cfg: Experiment, in_file: Mapping[str, Any], flags: Mapping[str, Any]) -> Experiment:
    """``cfg``, once no key of the file and no flag sets a switch that is off (``--prune-eta 3``
    without ``--prune``, ``patience`` without early stopping), even to its default value."""
    from wdlab.config import TrainConfig
    from wdlab.config_keys import check_switches

    named = {
        k.partition(".")[2] for k, v in flags.items() if k.startswith("train.") and v is not None
    }
    check_switches(vars(cfg.train), vars(TrainConfig()), {*in_file, *named})
    return cfg


def own_decay_unused(cfg: Experiment, wd_searched: bool = False) -> None:
    """Warn where the mode, not named, is the default one and an Adam-type optimizer's own
    weight decay is another (AdamW's is decoupled; the default, coupled, is Adam's L2 there);
    not where every weight decay trained is 0 (``wd_searched``: a search's are not known)."""
    from wdlab.optimizers import optimizer_spec
    from wdlab.warn import warn_user

    spec, modes = optimizer_spec(cfg.train.optimizer), list(cfg.decay.modes)
    if not spec.adam_family or spec.own_wd_mode is None or spec.own_wd_mode in modes:
        return
    if not wd_searched and not any(cfg.decay.weight_decay):  # the mode changes nothing
        return
    own, these = spec.own_wd_mode, ",".join(modes)
    warn_user(
        f"optimizer {cfg.train.optimizer} trains mode {these} (no mode given: the default), "
        f"which {spec.cls_name} rescales per coordinate as Adam's L2 does; "
        f"{spec.cls_name}'s own weight decay is mode {own} (--mode {own}; compare: "
        f"--mode {these},{own})"
    )


def grid_note(cfg: Experiment, unnamed: Sequence[str] = ()) -> str:
    """What a sweep tries, in one line: with no grid given (``unnamed`` empty: the default
    grid), or with part of it given (``unnamed``: the grid keys that take the file's or the
    schema's value, not the no-grid default's)."""
    from wdlab.pipelines.experiment import grid_size

    d, t = cfg.decay, cfg.train
    grid = (
        f"modes {', '.join(d.modes)} × wd {shown(d.weight_decay)} × {len(t.seeds)} seed"
        f"{'s' * (len(t.seeds) != 1)} × lr {shown(t.lr)} = {grid_size(cfg)} runs"
    )
    if not unnamed:
        return f"no grid given (--mode, --wd, --seeds), so it tries {grid}"
    flags = ", ".join(facts.key(k)["flag"] for k in unnamed)
    return f"it tries {grid} ({flags} not given: the default of each, not the no-grid sweep's)"


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment from a TOML file and/or flags."""
    from wdlab.devices import resolve_device
    from wdlab.pipelines import run_experiment
    from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs
    from wdlab.report.html import write_report

    check_run_keep(args)  # before anything is read or written
    cfg = experiment_config(args)
    resolve_device(cfg.train.device, "--device")
    out = writable_dir(Path(args.out), create=False)  # made when the results are written
    check_outputs(out, [*RESULT_FILES, *report_files()], "run", args.force)
    result = run_experiment(
        cfg,
        progress=show_progress(args),
        max_memory_mb=args.max_memory,
        max_configs=_max_configs(args.max_configs),
    )
    claim_outputs(out, [*RESULT_FILES, *report_files()], "run")
    paths = result.write(out)
    figures = write_report(result, out)
    paths = with_report(paths, figures)
    record_outputs(out, [*paths.values(), *figures.values()], "run")
    if args.json:
        emit_json(result.to_dict())
        return 0
    print(result.table())
    print()
    width = print_paths(paths)
    print(f"{'time':>{width}}: {result.seconds:.1f} s")
    return 0


def check_run_keep(args: argparse.Namespace) -> None:
    """``run`` keeps no trained weights and resumes nothing (it trains in a temporary study):
    ``--keep best|all`` and ``--checkpoint N`` are refused in one line, a file's
    ``train.keep = "best"|"all"`` or ``train.checkpoint = N`` said in one warning; each points
    to ``sweep``, which keeps and resumes."""
    from wdlab.pipelines.experiment import read_config

    given = {to: getattr(args, to) for d, to in experiment_keys() if d in RUN_HIDDEN}
    for name, value in given.items():
        if _sweeps_only(name, value):
            raise UsageError(_keeps_nothing(f"--{name} {value}", name, value))
    train = read_config(args.config).get("train") if args.config else None
    for name, value in (train or {}).items() if isinstance(train, dict) else ():
        if given.get(name, "") is None and _sweeps_only(name, value):
            where = f"{Path(args.config).name}: train.{name} = {value!r}"
            warnings.warn(_keeps_nothing(where, name, value), stacklevel=1)


def _sweeps_only(name: str, value: object) -> bool:
    """Whether ``train.<name> = value`` asks for what only a sweep's study does: weights kept
    (``keep`` best or all) or training state saved to resume from (``checkpoint`` N)."""
    if name == "checkpoint":  # a number of epochs: a value that is none is said by its check
        return isinstance(value, int | str) and str(value).strip().isdigit() and int(value) >= 1
    return name == "keep" and value in KEPT


def _keeps_nothing(where: str, name: str, value: object) -> str:
    does = "keeps no trained weights" if name == "keep" else "resumes nothing"
    return (
        f"{where}: wdlab run {does} (it trains in a temporary study); "
        f"to {'keep them' if name == 'keep' else 'resume'}: wdlab sweep --out DIR --{name} {value}"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep into its study directory."""
    from wdlab.devices import resolve_device
    from wdlab.executors import EXECUTORS, make_executor
    from wdlab.pipelines import default_out, run_sweep
    from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs, study_source
    from wdlab.report.html import write_report
    from wdlab.store import hash_config

    cfg, note = sweep_config(args)
    if note and sys.stderr.isatty():  # said again with the answer
        sys.stderr.write(f"wdlab sweep: {note}\n")
    options = {o.name: getattr(args, o.name) for e in EXECUTORS.values() for o in e.options}
    executor = make_executor(args.backend, **options)
    if args.backend == "local":
        resolve_device(cfg.train.device, "--device")
    out = writable_dir(Path(args.out) if args.out else default_out(cfg), create=False)
    source = study_source(out, hash_config(cfg.identity()))
    check_outputs(out, report_files(), source, args.force)  # before anything is trained
    try:
        result = run_sweep(
            cfg,
            out,
            max_memory_mb=args.max_memory,
            max_batch=args.max_batch,
            parallel=args.parallel,
            channels_last=args.channels_last,
            progress=show_progress(args),
            name=args.name,
            executor=executor,
            max_configs=_max_configs(args.max_configs),
            log=args.log,
        )
    finally:
        executor.close()
    source = study_source(out)  # the hash the store holds
    claim_outputs(out, report_files(), source)
    written = write_report(result, out)
    record_outputs(out, written.values(), source)
    report = written["report"]
    extra = {"report": str(report)} | ({"grid": note} if note else {})
    emit_study(result, out, args.json, extra)
    if not args.json:
        print(f"report: {report}" + (f"\ngrid: {note}" if note else ""))
    return 0


def _max_configs(value: int | None) -> int | None:
    """The grid limit: the flag's value, or the default limit."""
    return facts.load()["max_configs"] if value is None else value


def add_max_configs(p: argparse.ArgumentParser) -> None:
    """--max-configs: the grid limit, raised to confirm a larger grid."""
    p.add_argument(
        "--max-configs",
        type=positive_int,
        default=None,
        help="refuse a grid of more configurations than this; raise it to confirm "
        f"(default: {facts.load()['max_configs']})",
    )


#: run flags only a sweep's study has use for (weights kept, checkpoints to resume from):
#: parsed, to be refused with the reason (:func:`check_run_keep`), not offered in run's help
RUN_HIDDEN = ("train.keep", "train.checkpoint")


def add_experiment_flags(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """A TOML file and one flag per config key that has one (each wins over the file); a
    sweep's grid keys show the grid it tries when none is given."""
    p.add_argument("config", nargs="?", help="experiment TOML file (optional)")
    g = p.add_argument_group("overrides (each wins over the file)")
    grid = facts.load()["sweep_grid"] if sweep else {}
    for dotted, _ in experiment_keys():
        if dotted in grid:
            add_key(g, dotted, " when no grid key is given", grid[dotted])
        else:
            add_key(g, dotted)
    if not sweep:
        replace_helps(p, {to: argparse.SUPPRESS for d, to in experiment_keys() if d in RUN_HIDDEN})


def run_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The experiment flags given, as ``section.key`` overrides of the config file."""
    return overrides(args, experiment_keys())


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, --out and --json."""
    add_experiment_flags(p)
    p.add_argument("--out", type=folder, default="wdlab-out/run", help="output folder")
    add_max_memory(p)  # (the memory refusal names it, in run as in sweep)
    add_max_configs(p)
    add_force(p)
    add_json(p)


def add_max_memory(p: argparse.ArgumentParser) -> None:
    """``--max-memory MB``: one batch's training memory."""
    p.add_argument(
        "--max-memory",
        type=positive_float,
        default=facts.load()["max_memory_mb"],
        help="training memory per batch in MB; the process itself (Python, torch, the data) "
        "comes on top",
    )


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, the study, the budget and the backend with its options."""
    add_experiment_flags(p, sweep=True)
    p.add_argument(
        "--out", type=folder, help="study folder (default: wdlab-out/sweep-DATA-CONFIGHASH)"
    )
    add_max_memory(p)
    p.add_argument("--max-batch", type=positive_int, help="at most N configurations per batch")
    add_running(p)
    add_max_configs(p)
    p.add_argument(
        "--name",
        help="the study's name in its report, --json and dashboards (default: its folder's)",
    )
    p.add_argument(
        "--log",
        action="append",
        metavar="DASHBOARD[:TARGET]",
        help="log each run as it finishes, then the selection: tensorboard:DIR or "
        "mlflow[:URI] (repeatable)",
    )
    g = p.add_argument_group("backend")
    executors = facts.load()["executors"]
    g.add_argument("--backend", choices=list(executors), default="local", help="where to train")
    for name, options in executors.items():
        for o in options:
            kind = OPTION_TYPES[o["type"]]
            g.add_argument(o["flag"], dest=o["name"], type=kind, help=f"{name}: {o['help']}")
    add_force(p)
    add_json(p)


COMMANDS = [
    Command("run", "run an experiment (TOML file and/or flags)", add_run_flags, cmd_run),
    Command(
        "sweep",
        "sweep wd × lr × mode × seed into a resumable study",
        add_sweep_flags,
        cmd_sweep,
        resumes="the study keeps its finished runs and any checkpoints: the same command resumes",
    ),
]
