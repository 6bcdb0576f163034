"""The ``wdlab`` command line: thin wrappers over the Python API.

Each command parses its flags, calls the API and renders the result as a table, JSON or files.
The experiment flags are generated from the config schema (:mod:`wdlab.config`), the choices
and help lists from the registries (modes, optimizers, models, data sources, executors). Bad
input gets one line on stderr and exit status 2, never a traceback.
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

from wdlab.jsonsafe import dumps
from wdlab.version import __version__

if TYPE_CHECKING:
    from wdlab.decay import DecayRule
    from wdlab.models import ModelSpec
    from wdlab.records import Result

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


def print_paths(paths: dict[str, Path], width: int = 8) -> None:
    """One ``label: path`` line per written file."""
    for label, path in paths.items():
        print(f"{label:>{width}}: {path}")


# ---------------------------------------------------------------------------------------------
# Commands.


def cmd_demo(args: argparse.Namespace) -> int:
    """Reproduce the article's experiment and check manual ≡ builtin."""
    from wdlab.pipelines import DemoSettings, run_demo
    from wdlab.report.html import write_report

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
    paths["report"] = write_report(result, out)["report"]
    if args.json:
        emit_json(result.to_dict())
    else:
        print(result.table())
        print()
        print_paths(paths)
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
    from wdlab.report.text import checks_table
    from wdlab.verify import run_checks

    out = writable_dir(Path(args.out)) if args.out else None
    checks = run_checks(progress=show_progress(args))
    doc = {"checks": [c.to_dict() for c in checks], "passed": all(c.passed for c in checks)}
    if out is not None:
        (out / "verify.json").write_text(dumps(doc, indent=1) + "\n")
    if args.json:
        emit_json(doc)
    else:
        print(checks_table(checks))
    return 0 if doc["passed"] else 1


def parse_model(args: argparse.Namespace) -> ModelSpec:
    """A ModelSpec from the model flags of ``inspect``."""
    from wdlab.models import ModelSpec

    name = args.model
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else ()
    if ":" in name:
        return ModelSpec("custom", in_dim=args.in_dim, out_dim=args.out_dim, factory=name)
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
    from wdlab.optimizers import class_name, optimizer_spec

    mode = check_mode(args.mode)
    if mode == "independent" and args.lr is None:
        raise UsageError("mode 'independent' needs the base lr: pass --lr")
    spec = parse_model(args)
    table = decay_table(spec.build(), parse_rule(args))
    opt_name = class_name(optimizer_spec(args.optimizer).cls_name)
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


def experiment_config(args: argparse.Namespace) -> object:
    """The experiment of a TOML file (optional) with the flags' overrides applied."""
    from wdlab.config import load_config, merge, validate

    cfg = load_config(args.config) if args.config else validate({})
    return merge(cfg, run_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment from a TOML file and/or flags."""
    from wdlab.pipelines import run_experiment
    from wdlab.report.html import write_report

    cfg = experiment_config(args)
    out = writable_dir(Path(args.out))
    result = run_experiment(cfg, progress=show_progress(args))
    paths = result.write(out)
    paths["report"] = write_report(result, out)["report"]
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
    from wdlab.executors import EXECUTORS, make_executor
    from wdlab.pipelines import default_out, run_sweep
    from wdlab.report.html import write_report

    cfg = experiment_config(args)
    out = writable_dir(Path(args.out) if args.out else default_out(cfg))
    options = {o.name: getattr(args, o.name) for e in EXECUTORS.values() for o in e.options}
    executor = make_executor(args.backend, **options)
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
        executor.close()
    report = write_report(result, out)["report"]
    if args.json:
        emit_json(result.to_dict() | {"directory": str(out), "report": str(report)})
        return 0
    print(result.table())
    print(f"\nstudy: {out}  ({_counts_line(result.counts)})")
    print(f"report: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Make report.html and the PNGs from a demo/run folder or a study."""
    from wdlab.pipelines import build_report

    paths = build_report(args.path, args.out)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        print_paths(paths, 11)
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
    from wdlab.pipelines import load_study

    result: Result = load_study(args.study)
    if args.json:
        emit_json(result.to_dict() | {"directory": str(args.study)})
        return 0
    print(result.table())
    print(f"\nstudy: {args.study}  ({_counts_line(result.counts)})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's runs and tidy curves as CSV or Parquet."""
    from wdlab.pipelines import export_study

    paths = export_study(args.study, args.format, args.out)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        print_paths(paths, 7)
    return 0


# ---------------------------------------------------------------------------------------------
# Flags.


def add_json(p: argparse.ArgumentParser) -> None:
    """--json."""
    p.add_argument("--json", action="store_true", help="print one JSON document")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model of ``inspect``: a kind or module:factory, its sizes and activation."""
    from wdlab.models import ACTIVATIONS, MODEL_KINDS

    kinds = ", ".join(k for k in MODEL_KINDS if k != "custom")
    p.add_argument(
        "model", nargs="?", default="seed-mlp", help=f"{kinds} or module:factory (seed-mlp)"
    )
    p.add_argument("--in-dim", type=positive_int, default=1000, help="input features (1000)")
    p.add_argument("--out-dim", type=positive_int, default=1, help="outputs (1)")
    p.add_argument("--hidden", default="", help="hidden sizes for mlp, e.g. 64,32")
    p.add_argument("--activation", default="sigmoid", choices=list(ACTIVATIONS))
    p.add_argument("--layernorm", action="store_true", help="LayerNorm after each hidden layer")


def add_rule_flags(p: argparse.ArgumentParser) -> None:
    """The no-decay rule flags."""
    g = p.add_argument_group("which parameters decay (default: ndim >= 2 decays)")
    g.add_argument("--decay-all", action="store_true", help="decay every tensor (the article)")
    g.add_argument("--no-embeddings", action="store_true", help="embeddings do not decay")
    for flag, what in (("exclude", "never"), ("include", "always")):
        g.add_argument(
            f"--{flag}",
            action="append",
            metavar="PATTERN",
            help=f"fnmatch pattern of names that {what} decay (repeatable)",
        )
    g.add_argument(
        "--exclude-type",
        action="append",
        metavar="CLASS",
        help="torch.nn module class whose parameters never decay, e.g. LayerNorm",
    )
    g.add_argument("--ignore-model-hook", action="store_true", help="ignore no_weight_decay()")


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


def add_demo_flags(p: argparse.ArgumentParser) -> None:
    """The demo's numbers, output, device, path and precision."""
    p.add_argument(
        "--epochs", type=positive_int, default=1000, help="steps run at 0..EPOCHS (1000)"
    )
    p.add_argument("--dim", type=positive_int, default=1000, help="rows and features of X (1000)")
    p.add_argument("--lr", type=positive_float, default=0.1, help="SGD learning rate (0.1)")
    p.add_argument("--weight-decay", type=nonneg_float, default=0.1, help="manual/builtin (0.1)")
    p.add_argument("--seed", type=int, default=0, help="torch seed for data and init (0)")
    p.add_argument("--eval-every", type=positive_int, default=10, help="evaluate every N (10)")
    p.add_argument("--out", default="wdlab-out/demo", help="output folder (wdlab-out/demo)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument(
        "--no-fast-path", action="store_true", help="the standard path even where Gram applies"
    )
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="(fp32)")
    add_json(p)


def add_verify_flags(p: argparse.ArgumentParser) -> None:
    """--out, --json."""
    p.add_argument("--out", help="also write verify.json here (that folder's report shows it)")
    add_json(p)


def add_inspect_flags(p: argparse.ArgumentParser) -> None:
    """The model, the rule, and the decay whose formula to print."""
    add_model_flags(p)
    add_rule_flags(p)
    p.add_argument("--mode", default="coupled", help="decay mode (coupled)")
    p.add_argument("--weight-decay", type=nonneg_float, default=0.01, help="(0.01)")
    p.add_argument("--optimizer", default="sgd", help="optimizer name (sgd)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    add_json(p)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, --out and --json."""
    add_experiment_flags(p)
    p.add_argument("--out", default="wdlab-out/run", help="output folder (wdlab-out/run)")
    add_json(p)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """The experiment flags, the study, the budget and the backend with its options."""
    from wdlab.executors import EXECUTORS
    from wdlab.pipelines import DEFAULT_MAX_MEMORY_MB

    add_experiment_flags(p)
    p.add_argument("--out", help="study folder (default: wdlab-out/sweep-DATA-CONFIGHASH)")
    p.add_argument(
        "--max-memory",
        type=positive_float,
        default=DEFAULT_MAX_MEMORY_MB,
        help=f"memory budget per batch in MB ({DEFAULT_MAX_MEMORY_MB})",
    )
    p.add_argument("--max-batch", type=positive_int, help="at most N configurations per batch")
    p.add_argument("--name", help="the study's name in tables and reports (default: folder)")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=list(EXECUTORS), default="local", help="(local)")
    for e in EXECUTORS.values():
        for o in e.options:
            g.add_argument(o.cli_flag, dest=o.name, type=o.type, help=f"{e.name}: {o.help}")
    add_json(p)


def add_report_flags(p: argparse.ArgumentParser) -> None:
    """PATH, --out, --json."""
    p.add_argument("path", help="output folder or study folder")
    p.add_argument("--out", default=None, help="where to write (default: PATH)")
    add_json(p)


def add_ls_flags(p: argparse.ArgumentParser) -> None:
    """ROOT, --json."""
    p.add_argument("root", nargs="?", default="wdlab-out", help="folder (wdlab-out)")
    add_json(p)


def add_show_flags(p: argparse.ArgumentParser) -> None:
    """STUDY, --json."""
    p.add_argument("study", help="study folder")
    add_json(p)


def add_export_flags(p: argparse.ArgumentParser) -> None:
    """STUDY, --format, --out, --json."""
    p.add_argument("study", help="study folder")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--out", default=None, help="folder for the files (default: the study)")
    add_json(p)


#: Every command: (name, one-line help, flags, the function that runs it).
COMMANDS: list[tuple[str, str, Callable, Callable[[argparse.Namespace], int]]] = [
    (
        "demo",
        "reproduce the article's experiment (none / manual / builtin)",
        add_demo_flags,
        cmd_demo,
    ),
    (
        "verify",
        "check every decay mode against torch and scikit-learn",
        add_verify_flags,
        cmd_verify,
    ),
    ("inspect", "show which parameters of a model decay", add_inspect_flags, cmd_inspect),
    ("run", "run an experiment (TOML file and/or flags)", add_run_flags, cmd_run),
    ("sweep", "sweep wd × lr × mode × seed into a resumable study", add_sweep_flags, cmd_sweep),
    ("report", "write report.html and PNG figures", add_report_flags, cmd_report),
    ("ls", "list studies", add_ls_flags, cmd_ls),
    ("show", "print a study's results", add_show_flags, cmd_show),
    ("export", "export a study's runs and curves (CSV or Parquet)", add_export_flags, cmd_export),
]


def build_parser() -> Parser:
    """The ``wdlab`` argument parser: one subcommand per entry of :data:`COMMANDS`."""
    parser = Parser(prog="wdlab", description="The weight-decay lab for PyTorch.")
    parser.add_argument("--version", action="version", version=f"wdlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, help_text, add_flags, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=(run.__doc__ or help_text))
        add_flags(p)
        p.set_defaults(func=run)
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
