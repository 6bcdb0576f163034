"""The ``wdlab`` command line: thin wrappers over the Python API.

Each command parses its flags, calls the API and renders the result as a table, JSON or files.
Bad input gets one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wdlab.jsonsafe import dumps, json_safe

if TYPE_CHECKING:
    from wdlab.decay import DecayRule
    from wdlab.models import ModelSpec

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the user: reported in one line with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``prog: error: message`` and exit 2."""
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


# ---------------------------------------------------------------------------------------------
# Flag types that refuse bad values with a clear message.


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".wdlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with --json."""
    return sys.stdout.isatty() and not getattr(args, "json", False)


def emit_json(doc: object) -> None:
    """Print exactly one JSON document on stdout (NaN/inf become null)."""
    print(dumps(doc))


# ---------------------------------------------------------------------------------------------
# Commands.


def cmd_demo(args: argparse.Namespace) -> int:
    """Reproduce the article's experiment and check manual ≡ builtin."""
    from wdlab.experiments.seed import DemoSettings, run_demo

    settings = DemoSettings(
        epochs=args.epochs,
        dim=args.dim,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    out = writable_dir(Path(args.out))
    result = run_demo(
        settings,
        progress=show_progress(args),
        device=args.device,
        fast_path=False if args.no_fast_path else None,
        precision=args.precision,
    )
    paths = result.write(out)
    paths["report"] = make_report(out)
    doc = json_safe(result.to_dict())
    if args.json:
        emit_json(doc)
    else:
        print(result.table())
        print()
        for label, path in paths.items():
            print(f"{label:>8}: {path}")
        print(f"{'time':>8}: {result.seconds:.1f} s")
    if not result.check.identical:
        sys.stderr.write(
            "\n!!! manual and builtin weight decay DIFFER: max |Δ| = "
            f"{result.check.max_abs_diff:.3g}. The article's claim does not hold here. !!!\n"
        )
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Run every equivalence check; exit 1 if any fails."""
    from wdlab.verify import checks_table, run_checks

    checks = run_checks(progress=show_progress(args))
    if args.out:
        out = writable_dir(Path(args.out))
        (out / "verify.json").write_text(
            dumps({"checks": [c.to_dict() for c in checks]}, indent=1) + "\n"
        )
    if args.json:
        emit_json(
            {"checks": [c.to_dict() for c in checks], "passed": all(c.passed for c in checks)}
        )
    else:
        print(checks_table(checks))
    return 0 if all(c.passed for c in checks) else 1


def parse_model(args: argparse.Namespace) -> ModelSpec:
    """A ModelSpec from the model flags shared by several commands."""
    from wdlab.models import ModelSpec

    name = args.model
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else ()
    if name in ("seed-mlp", "mlp", "linear"):
        if name == "mlp" and not hidden:
            raise UsageError("--model mlp needs --hidden, e.g. --hidden 64,32")
        return ModelSpec(
            name,
            in_dim=args.in_dim,
            out_dim=args.out_dim,
            hidden=hidden,
            activation=args.activation,
            layernorm=args.layernorm,
        )
    if ":" in name:
        return ModelSpec("custom", in_dim=args.in_dim, out_dim=args.out_dim, factory=name)
    raise UsageError(f"unknown model {name!r}; use seed-mlp, mlp, linear or module:factory")


def parse_rule(args: argparse.Namespace) -> DecayRule:
    """A DecayRule from the no-decay flags."""
    from torch import nn

    from wdlab.decay import DecayRule

    types = []
    for name in args.exclude_type or []:
        cls = getattr(nn, name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise UsageError(f"--exclude-type {name!r} is not a torch.nn module class")
        types.append(cls)
    return DecayRule(
        everything=args.decay_all,
        embeddings=not args.no_embeddings,
        exclude=tuple(args.exclude or ()),
        include=tuple(args.include or ()),
        exclude_types=tuple(types),
        use_model_hook=not args.ignore_model_hook,
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print which parameters of a model decay, and the decay's formula."""
    from wdlab.decay import check_mode, decay_table, formula, surprise_warnings
    from wdlab.engine import optimizer_class

    mode = check_mode(args.mode)
    if mode == "independent" and args.lr is None:
        raise UsageError("mode 'independent' needs the base lr: pass --lr")
    spec = parse_model(args)
    model = spec.build()
    table = decay_table(model, parse_rule(args))
    opt_name = optimizer_class(args.optimizer).__name__
    notes = surprise_warnings(mode, args.weight_decay, args.lr or 0.0, opt_name)
    if args.json:
        doc = {"model": spec.describe(), "mode": mode, "weight_decay": args.weight_decay}
        emit_json(doc | {"formula": formula(mode, opt_name), "warnings": notes} | table.to_dict())
        return 0
    print(f"model: {spec.describe()}")
    print(table.to_text())
    print(f"mode {mode}, wd {args.weight_decay:g}, {opt_name}: {formula(mode, opt_name)}")
    for note in notes:
        sys.stderr.write(f"wdlab: warning: {note}\n")
    return 0


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --in-dim, --out-dim, --hidden, --activation, --layernorm."""
    p.add_argument(
        "model",
        nargs="?",
        default="seed-mlp",
        help="seed-mlp, mlp, linear or module:factory (default seed-mlp)",
    )
    p.add_argument("--in-dim", type=positive_int, default=1000, help="input features (1000)")
    p.add_argument("--out-dim", type=positive_int, default=1, help="outputs (1)")
    p.add_argument("--hidden", default="", help="hidden sizes for mlp, e.g. 64,32")
    p.add_argument(
        "--activation",
        default="sigmoid",
        choices=["sigmoid", "tanh", "relu", "gelu"],
        help="activation (sigmoid)",
    )
    p.add_argument("--layernorm", action="store_true", help="LayerNorm after each hidden layer")


def add_rule_flags(p: argparse.ArgumentParser) -> None:
    """The no-decay rule flags."""
    g = p.add_argument_group("which parameters decay (default: ndim >= 2 decays)")
    g.add_argument(
        "--decay-all",
        action="store_true",
        help="decay every tensor, biases and norms too (the article does)",
    )
    g.add_argument("--no-embeddings", action="store_true", help="embeddings do not decay")
    g.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="fnmatch pattern of names that never decay (repeatable)",
    )
    g.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="fnmatch pattern of names that always decay (repeatable)",
    )
    g.add_argument(
        "--exclude-type",
        action="append",
        metavar="CLASS",
        help="torch.nn module class whose parameters never decay, e.g. LayerNorm",
    )
    g.add_argument(
        "--ignore-model-hook",
        action="store_true",
        help="ignore the model's no_weight_decay() method",
    )


RUN_OVERRIDES = {
    "data": "data.source",
    "target": "data.target",
    "features": "data.features",
    "impute": "data.impute",
    "task": "data.task",
    "data_seed": "data.seed",
    "model": "model.kind",
    "hidden": "model.hidden",
    "activation": "model.activation",
    "optimizer": "train.optimizer",
    "lr": "train.lr",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "eval_every": "train.eval_every",
    "schedule": "train.schedule",
    "seeds": "train.seeds",
    "device": "train.device",
    "mode": "decay.modes",
    "wd": "decay.weight_decay",
    "rule": "decay.rule",
    "precision": "train.precision",
}


def run_overrides(args: argparse.Namespace) -> dict[str, object]:
    """CLI flags as ``section.key`` overrides of the config file."""
    out: dict[str, object] = {}
    for flag, dotted in RUN_OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "model" and ":" in value:
            out["model.kind"], out["model.factory"] = "custom", value
            continue
        out[dotted] = value
    if getattr(args, "layernorm", False):
        out["model.layernorm"] = True
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment from a TOML file and/or flags."""
    from wdlab.experiments.config import load_config, merge, validate
    from wdlab.experiments.run import run_experiment

    cfg = load_config(args.config) if args.config else validate({})
    cfg = merge(cfg, run_overrides(args))
    out = writable_dir(Path(args.out))
    result = run_experiment(cfg, progress=show_progress(args))
    paths = result.write(out)
    paths["report"] = make_report(out)
    if args.json:
        emit_json(result.to_dict())
        return 0
    print(result.table())
    print()
    for label, path in paths.items():
        print(f"{label:>8}: {path}")
    print(f"{'time':>8}: {result.seconds:.1f} s")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep into its study directory."""
    from wdlab.experiments.config import load_config, merge, validate
    from wdlab.study import default_out, run_sweep

    cfg = load_config(args.config) if args.config else validate({})
    cfg = merge(cfg, run_overrides(args))
    out = writable_dir(Path(args.out) if args.out else default_out(cfg))
    executor = None
    if args.backend == "ray":
        from wdlab.executors import RayExecutor

        executor = RayExecutor(
            args.address,
            num_cpus=args.cpus_per_task,
            num_gpus=args.gpus_per_task,
            max_retries=args.max_retries,
        )
    elif args.address:
        raise UsageError("--address needs --backend ray")
    try:
        result = run_sweep(
            cfg,
            out,
            max_memory_mb=args.max_memory,
            max_batch=args.max_batch,
            progress=show_progress(args),
            name=args.name,
            executor=executor,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    report = make_report(out)
    if args.json:
        emit_json(
            result.to_dict()
            | {"directory": str(out), "counts": result.counts, "report": str(report)}
        )
        return 0
    print(result.table())
    print(f"\nstudy: {out}  ({_counts_line(result.counts)})")
    print(f"report: {report}")
    return 0


def make_report(folder: Path) -> Path:
    """Write the HTML report (and its PNGs) of a results folder or study; return its path."""
    from wdlab.report.html import build_report

    return build_report(folder)["report"]


def cmd_report(args: argparse.Namespace) -> int:
    """Make report.html and the PNGs from a demo/run folder or a study."""
    from wdlab.report.html import build_report

    paths = build_report(args.path, args.out)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        for label, path in paths.items():
            print(f"{label:>11}: {path}")
    return 0


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def cmd_ls(args: argparse.Namespace) -> int:
    """List the studies under a folder."""
    from wdlab.store import Store, find_studies

    rows = []
    for d in find_studies(args.root):
        with Store(d) as store:
            info = store.study() or {}
            counts = store.counts()
        rows.append(
            {
                "study": str(d),
                "created": info.get("created", ""),
                "data": (info.get("data") or {}).get("name", ""),
                "runs": sum(counts.values()),
                "done": counts["done"],
                "diverged": counts["diverged"],
                "pending": counts["pending"],
            }
        )
    if args.json:
        emit_json({"studies": rows})
        return 0
    if not rows:
        print(f"no studies under {args.root}")
        return 0
    w = max(len("study"), *(len(r["study"]) for r in rows))
    print(
        f"{'study':<{w}}  {'created':<19}  {'data':<14} {'runs':>5} {'done':>5} {'div':>4} "
        f"{'todo':>5}"
    )
    for r in rows:
        print(
            f"{r['study']:<{w}}  {r['created']:<19}  {r['data']:<14} {r['runs']:>5} "
            f"{r['done']:>5} {r['diverged']:>4} {r['pending']:>5}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a study's result table from its store."""
    from wdlab.study import load_study

    result = load_study(args.study)
    if args.json:
        emit_json(result.to_dict() | {"directory": str(args.study), "counts": result.counts})
        return 0
    print(result.table())
    print(f"\nstudy: {args.study}  ({_counts_line(result.counts)})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's runs and tidy curves as CSV or Parquet."""
    from wdlab.study import export_study

    paths = export_study(args.study, args.format, args.out)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        for label, path in paths.items():
            print(f"{label:>7}: {path}")
    return 0


def add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override an experiment file's values."""
    p.add_argument("config", nargs="?", help="experiment TOML file (optional)")
    g = p.add_argument_group("overrides (each wins over the file)")
    g.add_argument(
        "--data",
        help="seed-noise, teacher, teacher-classification, d2l, digits, "
        "breast_cancer, wine, diabetes, or a .csv/.parquet path",
    )
    g.add_argument("--target", help="target column of a data file")
    g.add_argument("--features", help="feature columns of a data file, comma-separated")
    g.add_argument("--impute", choices=["mean", "median"], help="fill missing feature values")
    g.add_argument("--task", choices=["binary", "multiclass", "regression"])
    g.add_argument("--data-seed", type=int, help="seed of the data draw and split")
    g.add_argument("--model", help="seed-mlp, mlp, linear or module:factory")
    g.add_argument("--hidden", help="hidden sizes, e.g. 64,32")
    g.add_argument("--activation", choices=["sigmoid", "tanh", "relu", "gelu"])
    g.add_argument("--layernorm", action="store_true", help="LayerNorm after hidden layers")
    g.add_argument("--optimizer", help="sgd, adam, adamw, rmsprop, adagrad, ...")
    g.add_argument("--lr", help="learning rate(s): 0.1 or 1e-3,3e-3")
    g.add_argument("--mode", help="decay mode(s): coupled or l2,decoupled")
    g.add_argument("--wd", help="weight decay(s): 0,1e-4,1e-3 or LO..HI:N (log-spaced)")
    g.add_argument("--seeds", help="seeds: a count like 3, or a list like 0,1,2")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=int, help="0: full batch (default)")
    g.add_argument("--eval-every", type=positive_int)
    g.add_argument("--schedule", help="constant, cosine or step:SIZE:GAMMA")
    g.add_argument("--rule", choices=["default", "everything"], help="which tensors decay")
    g.add_argument("--device", help="cpu or cuda")
    g.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: autocast forward passes")


def build_parser() -> Parser:
    """The ``wdlab`` argument parser with every subcommand."""
    parser = Parser(prog="wdlab", description="The weight-decay lab for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="reproduce the article's experiment (none / manual / builtin decay)",
        description="Train the article's three regimes from the same initial weights, print a "
        "summary, write results.json, curves.csv and losses.png, and check that manual and "
        "built-in decay give identical weights.",
    )
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=1000,
        help="epochs; steps run at 0..EPOCHS inclusive (default 1000)",
    )
    demo.add_argument(
        "--dim", type=positive_int, default=1000, help="rows and features of X (default 1000)"
    )
    demo.add_argument("--lr", type=positive_float, default=0.1, help="SGD learning rate (0.1)")
    demo.add_argument(
        "--weight-decay", type=nonneg_float, default=0.1, help="decay for manual and builtin (0.1)"
    )
    demo.add_argument("--seed", type=int, default=0, help="torch seed for data and init (0)")
    demo.add_argument(
        "--eval-every",
        type=positive_int,
        default=10,
        help="evaluate every N epochs and at the last (10)",
    )
    demo.add_argument("--out", default="wdlab-out/demo", help="output folder (wdlab-out/demo)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    demo.add_argument(
        "--no-fast-path",
        action="store_true",
        help="train with the standard path even where the exact Gram path applies",
    )
    demo.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: bfloat16 autocast for the forward passes (fp32)",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON document, no table")
    demo.set_defaults(func=cmd_demo)

    verify = sub.add_parser(
        "verify",
        help="check every decay mode against torch.optim and scikit-learn",
        description="Train small models with each wdlab decay mode and with its reference "
        "(torch's own optimizers, AdamW, sklearn's Ridge), and compare the final weights.",
    )
    verify.add_argument(
        "--out", help="also write verify.json here (a report in this folder then shows the checks)"
    )
    verify.add_argument("--json", action="store_true", help="print one JSON document")
    verify.set_defaults(func=cmd_verify)

    inspect = sub.add_parser(
        "inspect",
        help="show which parameters of a model decay",
        description="Print each parameter's name, shape, count and whether it decays under "
        "the rule, with the decay mode's formula.",
    )
    add_model_flags(inspect)
    add_rule_flags(inspect)
    inspect.add_argument("--mode", default="coupled", help="decay mode (coupled)")
    inspect.add_argument("--weight-decay", type=nonneg_float, default=0.01, help="(0.01)")
    inspect.add_argument("--optimizer", default="sgd", help="optimizer name (sgd)")
    inspect.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.set_defaults(func=cmd_inspect)

    run = sub.add_parser(
        "run",
        help="run an experiment (TOML file and/or flags)",
        description="Train every configuration of an experiment (mode × weight decay × lr × "
        "seed) in one batched computation, choose the weight decay on validation, report "
        "test. Writes results.json, curves.csv and losses.png.",
    )
    add_experiment_flags(run)
    run.add_argument("--out", default="wdlab-out/run", help="output folder (wdlab-out/run)")
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser(
        "sweep",
        help="sweep weight decay × lr × mode × seed into a resumable study",
        description="Train the whole grid batch by batch (each batch one batched computation), "
        "store every batch in the study's SQLite file, and print the weight decay chosen on "
        "validation per (mode, lr) with its test metric. The same command again resumes.",
    )
    add_experiment_flags(sweep)
    sweep.add_argument("--out", help="study folder (default: wdlab-out/sweep-DATA-CONFIGHASH)")
    sweep.add_argument(
        "--max-memory",
        type=positive_float,
        default=2048,
        help="memory budget per batch in MB (2048)",
    )
    sweep.add_argument(
        "--max-batch",
        type=positive_int,
        default=None,
        help="at most this many configurations per batch",
    )
    sweep.add_argument("--name", help="the study's name in tables and reports (default: folder)")
    ray = sweep.add_argument_group("backend")
    ray.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local (in-process, default) or ray (one task per batch)",
    )
    ray.add_argument(
        "--address",
        help="join this Ray cluster (HOST:PORT); default: start a local runtime on 127.0.0.1",
    )
    ray.add_argument(
        "--cpus-per-task", type=positive_float, default=1.0, help="CPUs per Ray task (1)"
    )
    ray.add_argument(
        "--gpus-per-task",
        type=float,
        default=None,
        help="GPUs per Ray task (default: 1 if CUDA is visible, else 0)",
    )
    ray.add_argument(
        "--max-retries", type=int, default=3, help="retries of a task whose worker dies (3)"
    )
    sweep.add_argument("--json", action="store_true", help="print one JSON document")
    sweep.set_defaults(func=cmd_sweep)

    ls = sub.add_parser("ls", help="list studies", description="List the studies under ROOT.")
    ls.add_argument("root", nargs="?", default="wdlab-out", help="folder (wdlab-out)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser(
        "show",
        help="print a study's results",
        description="Print a study's result table, read from its store.",
    )
    show.add_argument("study", help="study folder")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    report = sub.add_parser(
        "report",
        help="write report.html and PNG figures",
        description="Make a self-contained report.html plus one PNG per figure from a demo or "
        "run output folder (results.json) or a sweep's study folder (study.db).",
    )
    report.add_argument("path", help="output folder or study folder")
    report.add_argument("--out", default=None, help="where to write (default: PATH)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser(
        "export",
        help="export a study's runs and curves",
        description="Write runs and tidy curves (run, metric, epoch, value).",
    )
    export.add_argument("study", help="study folder")
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--out", default=None, help="folder for the files (default: the study)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wdlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = _format_warning  # type: ignore[assignment]
            return func(args)
    except (UsageError, ValueError) as exc:
        if os.environ.get("WDLAB_DEBUG"):
            raise
        sys.stderr.write(f"wdlab {args.command}: error: {exc}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. `wdlab ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("wdlab: interrupted\n")
        return 130


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"wdlab: warning: {message}\n"


if __name__ == "__main__":
    raise SystemExit(main())
