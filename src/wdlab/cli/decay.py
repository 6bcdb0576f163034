"""``wdlab verify`` and ``wdlab inspect``: the oracle checks, and which parameters decay."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from wdlab.cli import facts
from wdlab.cli.common import (
    Command,
    UsageError,
    add_factory_timeout,
    add_force,
    add_json,
    emit_json,
    folder,
    hidden_sizes,
    nonneg_float,
    positive_float,
    positive_int,
    show_progress,
    writable_dir,
)
from wdlab.cli.flags import add_key, names
from wdlab.jsonsafe import dumps

if TYPE_CHECKING:
    from wdlab.decay import DecayRule, WDSchedule
    from wdlab.models import ModelSpec


def cmd_verify(args: argparse.Namespace) -> int:
    """Run every equivalence check; exit 1 if any fails."""
    from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs
    from wdlab.report.text import checks_table
    from wdlab.verify import run_checks

    out = writable_dir(Path(args.out), create=False) if args.out else None
    if out is not None:  # a file of the user's, or wdlab's for another command: kept
        check_outputs(out, ["verify.json"], "verify", args.force)
    checks = run_checks(progress=show_progress(args))
    doc = {"checks": [c.to_dict() for c in checks], "passed": all(c.passed for c in checks)}
    if out is not None:
        claim_outputs(out, ["verify.json"], "verify")
        (out / "verify.json").write_text(dumps(doc, indent=1) + "\n")
        record_outputs(out, [out / "verify.json"], "verify")
    if args.json:
        emit_json(doc)
    else:
        print(checks_table(checks))
    return 0 if doc["passed"] else 1


def parse_model(args: argparse.Namespace) -> ModelSpec:
    """A ModelSpec from the model flags of ``inspect``."""
    from wdlab.config_keys import model_kind
    from wdlab.models import MODEL_KINDS, ModelSpec, unread_options

    name = model_kind(args.model, "model")  # a file without its function: said as run says it
    hidden = tuple(args.hidden)
    custom = ":" in name
    kind = "custom" if custom else name
    if kind in MODEL_KINDS:  # an unknown one: ModelSpec's line
        given = {"hidden": hidden, "activation": args.activation, "layernorm": args.layernorm}
        for line in unread_options(kind, given, _model_flag_defaults(), "--"):
            sys.stderr.write(f"wdlab: warning: {line}\n")
    return ModelSpec(
        kind,
        # a factory builds at its own sizes unless the flags give them; a built-in kind at
        # 1000 inputs and 1 output unless they do
        in_dim=args.in_dim or (0 if custom else 1000),
        out_dim=args.out_dim or (0 if custom else 1),
        hidden=hidden,
        activation=args.activation,
        layernorm=args.layernorm,
        factory=name if custom else None,
        factory_timeout=args.factory_timeout,
    )


_RULE_FLAGS = ("decay_all", "no_embeddings", "exclude", "include", "exclude_type")


def parse_rule(args: argparse.Namespace) -> DecayRule:
    """A DecayRule from ``--rule`` (a preset) or the no-decay flags."""
    from torch import nn

    from wdlab.decay import EVERYTHING, DecayRule

    rule = getattr(args, "rule", None) or "default"
    if rule != "default":
        flags = [f"--{f.replace('_', '-')}" for f in _RULE_FLAGS if getattr(args, f)]
        if args.ignore_model_hook:
            flags.append("--ignore-model-hook")
        if flags:
            raise UsageError(f"--rule {rule} is a whole rule; drop {', '.join(flags)}")
        return EVERYTHING if rule == "everything" else DecayRule.preset(rule)
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


def parse_group_wds(items: list[str] | None) -> dict[str, float]:
    """``--group-wd PATTERN=WD`` flags as {pattern: wd}."""
    out = {}
    for item in items or []:
        pattern, sep, value = item.rpartition("=")
        if not sep or not pattern:
            raise UsageError(f"--group-wd {item!r}: expected PATTERN=WD, e.g. 'emb.*=1e-5'")
        if pattern in out:  # the last one took it, without a word
            raise UsageError(f"--group-wd: the pattern {pattern!r} is given twice; give each once")
        try:
            out[pattern] = nonneg_float(value)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--group-wd {item!r}: {exc}") from None
    return out


def as_in_runs(text: str | None, wd: float) -> WDSchedule | None:
    """``--wd-schedule`` as ``run`` and ``sweep`` apply it to a run of weight decay ``wd``:
    the schedule's shape from ``wd`` (its START must be > 0); none at wd = 0, where nothing
    decays."""
    from wdlab.decay.schedules import WDSchedule, parse, scaled

    if text is None:
        return None
    schedule = parse(text)
    scaled(schedule, 0.0)  # START > 0, else one line
    if wd == 0:
        return None
    return WDSchedule(schedule.shape, wd, schedule.end * wd / schedule.start, schedule.steps)


def schedule_points(schedule: WDSchedule) -> dict[int, float]:
    """The schedule's weight decay at its start, quarters and end (what ``inspect`` shows)."""
    steps = sorted({round(schedule.steps * q / 4) for q in range(5)})
    return {s: schedule(s) for s in steps}


WD_ZERO_NOTE = (
    "at wd 0 nothing decays: the rows say which tensors the rule decays at a wd > 0, and run "
    "and sweep train their wd = 0 runs as the reference, with no decay at all"
)
GROUP_WD_AT_ZERO = (
    " (--group-wd too; in your own loop, param_groups(model, Decay(mode, 0), weight_decays=...) "
    "does decay the patterns' tensors at their own weight decay)"
)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print which parameters of a model decay, with what weight decay, and the formula."""
    from wdlab.decay import Decay, formula, get_mode, param_groups, surprise_warnings
    from wdlab.decay.modes import check_pairing
    from wdlab.optimizers import class_name, optimizer_spec

    m = get_mode(args.mode)
    mode = m.name
    if m.needs_base_lr and args.lr is None:
        raise UsageError(f"mode {mode!r} needs the base lr: pass --lr")
    check_pairing(mode, args.optimizer)  # as run, sweep and Decay.attach refuse it
    spec = parse_model(args)
    decay = Decay(mode, args.wd, schedule=as_in_runs(args.wd_schedule, args.wd))
    # as in run and sweep: a pattern's weight decay in the runs that decay, 0 at wd = 0
    group_wds = {p: w * (args.wd > 0) for p, w in parse_group_wds(args.group_wd).items()}
    model, rule = spec.build(), parse_rule(args)
    with warnings.catch_warnings():  # its unmatched patterns: among the notes below
        warnings.simplefilter("ignore")
        groups, table = param_groups(model, decay, rule, group_wds)
    if group_wds:
        table = table.with_weight_decays(groups, decay)
    opt_name = class_name(optimizer_spec(args.optimizer).cls_name)
    notes = surprise_warnings(mode, args.wd, args.lr or 0.0, opt_name, None, decay.schedule)
    notes += rule.unmatched(model)
    points = schedule_points(decay.schedule) if decay.schedule is not None else None
    if args.wd == 0:  # the table still says which tensors the rule would decay
        notes.append(WD_ZERO_NOTE + (GROUP_WD_AT_ZERO if group_wds else ""))
    if args.json:
        doc = {"model": spec.describe(), "mode": mode, "weight_decay": args.wd}
        doc |= {"formula": formula(mode, opt_name), "warnings": notes}
        doc |= {"wd_schedule": args.wd_schedule, "wd_at_step": points}
        emit_json(doc | table.to_dict())
        return 0
    print(f"model: {spec.describe()}")
    print(table.to_text(normalized=m.normalized))
    print(f"mode {decay.describe()}, {opt_name}: {formula(mode, opt_name)}")
    if points:
        print("wd by step: " + ", ".join(f"{s}: {v:.4g}" for s, v in points.items()))
    for note in notes:
        sys.stderr.write(f"wdlab: warning: {note}\n")
    return 0


def _model_flag_defaults() -> dict[str, object]:
    """--hidden, --activation and --layernorm default as in ``run`` and ``sweep`` (the
    ``[model]`` section's keys)."""
    keys = ("hidden", "activation", "layernorm")
    return {k: facts.key(f"model.{k}")["default"] for k in keys}


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model of ``inspect``: a kind or module:factory, its sizes and activation."""
    known = facts.load()
    kinds = ", ".join(known["model_kinds"])
    defaults = _model_flag_defaults()
    hidden = ",".join(map(str, defaults["hidden"]))
    p.add_argument(
        "model", nargs="?", default="seed-mlp", help=f"{kinds}, file.py:factory or module:factory"
    )
    p.add_argument(
        "--in-dim", type=positive_int, default=None,
        help="input features (default: 1000; a factory's own, where it has in_dim)",
    )  # fmt: skip
    p.add_argument(
        "--out-dim", type=positive_int, default=None,
        help="outputs (default: 1; a factory's own, where it has out_dim)",
    )  # fmt: skip
    p.add_argument(
        "--hidden",
        type=hidden_sizes,
        default=tuple(defaults["hidden"]),
        help=f"mlp's hidden sizes, e.g. 64,32 (default: {hidden}, as in run and sweep)",
    )
    p.add_argument(
        "--activation",
        default=defaults["activation"],
        choices=known["activations"],
        help=f"mlp's activation (default: {defaults['activation']}, as in run and sweep)",
    )
    p.add_argument("--layernorm", action="store_true", help="LayerNorm after each hidden layer")
    add_factory_timeout(p)


def add_rule_flags(p: argparse.ArgumentParser) -> None:
    """The no-decay rule: ``--rule`` (the choices of ``run`` and ``sweep``) or the flags that
    build one."""
    g = p.add_argument_group("which parameters decay (default: ndim >= 2 decays)")
    add_key(g, "decay.rule")
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


def add_verify_flags(p: argparse.ArgumentParser) -> None:
    """--out, --json."""
    p.add_argument(
        "--out",
        type=folder,
        help="also write verify.json here (the report of a run or study in that folder shows it)",
    )
    add_force(p)
    add_json(p)


def add_inspect_flags(p: argparse.ArgumentParser) -> None:
    """The model, the rule, and the decay whose formula to print."""
    add_model_flags(p)
    add_rule_flags(p)
    p.add_argument("--mode", default="coupled", help="decay mode")
    p.add_argument(*names("--wd"), dest="wd", type=nonneg_float, default=0.01, help="weight decay")
    p.add_argument("--optimizer", default="sgd", help="optimizer name")
    p.add_argument(
        "--lr", type=positive_float, default=None,
        help="learning rate (default: none; independent and corrected need it)",
    )  # fmt: skip
    add_key(p, "decay.wd_schedule")
    add_key(p, "decay.group_wd")
    add_json(p)


COMMANDS = [
    Command(
        "verify",
        "check every decay mode against torch and scikit-learn",
        add_verify_flags,
        cmd_verify,
    ),
    Command("inspect", "show which parameters of a model decay", add_inspect_flags, cmd_inspect),
]
