"""``wdlab run`` and ``wdlab sweep``: experiments from a TOML file and flags generated from the
config schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from wdlab.cli.common import (
    RESULT_FILES,
    Command,
    add_force,
    add_json,
    emit_json,
    emit_study,
    positive_float,
    positive_int,
    print_paths,
    report_files,
    show_progress,
    writable_dir,
)


def experiment_config(args: argparse.Namespace) -> object:
    """The experiment of a TOML file (optional) with the flags' overrides applied."""
    from wdlab.config import load_config, merge, validate

    cfg = load_config(args.config) if args.config else validate({})
    return merge(cfg, run_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment from a TOML file and/or flags."""
    from wdlab.devices import resolve_device
    from wdlab.pipelines import run_experiment
    from wdlab.pipelines.outputs import check_outputs, record_outputs
    from wdlab.report.html import write_report

    cfg = experiment_config(args)
    resolve_device(cfg.train.device, "--device")
    out = writable_dir(Path(args.out))
    check_outputs(out, [*RESULT_FILES, *report_files()], "run", args.force)
    result = run_experiment(
        cfg, progress=show_progress(args), max_configs=_max_configs(args.max_configs)
    )
    paths = result.write(out)
    figures = write_report(result, out)
    paths["report"] = figures["report"]
    record_outputs(out, [*paths.values(), *figures.values()], "run")
    if args.json:
        emit_json(result.to_dict())
        return 0
    print(result.table())
    print()
    print_paths(paths)
    print(f"{'time':>8}: {result.seconds:.1f} s")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep into its study directory."""
    from wdlab.devices import resolve_device
    from wdlab.executors import EXECUTORS, make_executor
    from wdlab.pipelines import default_out, run_sweep
    from wdlab.pipelines.outputs import check_outputs, record_outputs, study_source
    from wdlab.report.html import write_report
    from wdlab.store import hash_config

    cfg = experiment_config(args)
    options = {o.name: getattr(args, o.name) for e in EXECUTORS.values() for o in e.options}
    executor = make_executor(args.backend, **options)
    if args.backend == "local":
        resolve_device(cfg.train.device, "--device")
    out = writable_dir(Path(args.out) if args.out else default_out(cfg))
    source = study_source(out, hash_config(cfg.identity()))
    check_outputs(out, report_files(), source, args.force)  # before anything is trained
    try:
        result = run_sweep(
            cfg,
            out,
            max_memory_mb=args.max_memory,
            max_batch=args.max_batch,
            progress=show_progress(args),
            name=args.name,
            executor=executor,
            max_configs=_max_configs(args.max_configs),
        )
    finally:
        executor.close()
    written = write_report(result, out)
    record_outputs(out, written.values(), study_source(out))  # the hash the store holds
    report = written["report"]
    emit_study(result, out, args.json, {"report": str(report)})
    if not args.json:
        print(f"report: {report}")
    return 0


def _max_configs(value: int | None) -> int | None:
    """The grid limit: the flag's value, or the default limit."""
    from wdlab.config import MAX_CONFIGS

    return MAX_CONFIGS if value is None else value


def add_max_configs(p: argparse.ArgumentParser) -> None:
    """--max-configs: the grid limit, raised to confirm a larger grid."""
    p.add_argument(
        "--max-configs",
        type=positive_int,
        default=None,
        help="refuse a grid of more configurations than this (10000); raise it to confirm",
    )


def _experiment_keys() -> list[tuple[str, str, object]]:
    """(section.key, argparse dest, Key) for every config key that has a flag."""
    from wdlab.config import SECTIONS, section_keys

    out = []
    for section in SECTIONS:
        for f, k in section_keys(section):
            if k.flag:
                out.append((f"{section}.{f.name}", k.flag[2:].replace("-", "_"), k))
    return out


def add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """A TOML file and one flag per config key that has one (each wins over the file)."""
    p.add_argument("config", nargs="?", help="experiment TOML file (optional)")
    g = p.add_argument_group("overrides (each wins over the file)")
    for _dotted, dest, k in _experiment_keys():
        if k.cli == "flag":
            g.add_argument(k.flag, dest=dest, action="store_true", default=None, help=k.help)
            continue
        kind = int if k.cli == "int" else None
        g.add_argument(k.flag, dest=dest, type=kind, choices=k.choices, help=k.help)


def run_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The experiment flags given, as ``section.key`` overrides of the config file."""
    return {dotted: getattr(args, dest, None) for dotted, dest, _ in _experiment_keys()}


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, --out and --json."""
    add_experiment_flags(p)
    p.add_argument("--out", default="wdlab-out/run", help="output folder (wdlab-out/run)")
    add_max_configs(p)
    add_force(p)
    add_json(p)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, the study, the budget and the backend with its options."""
    from wdlab.devices import DEFAULT_MAX_MEMORY_MB
    from wdlab.executors import EXECUTORS

    add_experiment_flags(p)
    p.add_argument("--out", help="study folder (default: wdlab-out/sweep-DATA-CONFIGHASH)")
    p.add_argument(
        "--max-memory",
        type=positive_float,
        default=DEFAULT_MAX_MEMORY_MB,
        help=f"training memory per batch in MB ({DEFAULT_MAX_MEMORY_MB}); the process itself "
        "(Python, torch, the data) comes on top",
    )
    p.add_argument("--max-batch", type=positive_int, help="at most N configurations per batch")
    add_max_configs(p)
    p.add_argument("--name", help="the study's name in tables and reports (default: folder)")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=list(EXECUTORS), default="local", help="(local)")
    for e in EXECUTORS.values():
        for o in e.options:
            g.add_argument(o.cli_flag, dest=o.name, type=o.type, help=f"{e.name}: {o.help}")
    add_force(p)
    add_json(p)


COMMANDS = [
    Command("run", "run an experiment (TOML file and/or flags)", add_run_flags, cmd_run),
    Command(
        "sweep", "sweep wd × lr × mode × seed into a resumable study", add_sweep_flags, cmd_sweep
    ),
]
