"""``wdlab transfer``: carry a tuned weight decay to a new lr, data size, batch size or epoch
count (keeping τ_epoch); ``wdlab timescale``: check that rule on real data."""

from __future__ import annotations

import argparse
import contextlib
import functools
from pathlib import Path

from wdlab.cli import facts
from wdlab.cli.common import (
    Command,
    add_device,
    add_force,
    add_json,
    emit_json,
    folder,
    hidden_sizes,
    positive_float,
    positive_int,
    positive_real,
    print_paths,
    writable_dir,
)
from wdlab.cli.flags import add_key, names
from wdlab.jsonsafe import dumps

TIMESCALE_FILES = ("timescale.json", "timescale.png")  # what --out receives


def cmd_transfer(args: argparse.Namespace) -> int:
    """Carry a tuned weight decay to a new lr, data size, batch size or epoch count, keeping
    the averaging timescale τ_epoch = 1/(η·λ·M), M = ⌈N/B⌉ steps per epoch (Wang & Aitchison,
    ICML 2025), and print the formula used. N and B are in the same unit (examples, or tokens).
    --to-epochs (with --epochs) keeps τ as the same fraction of the run: M·E, the steps of the
    run, takes the place of M. A result beyond float range is refused."""
    from wdlab.timescale import carry

    to = {
        "lr": args.to_lr,
        "n": args.to_n,
        "batch_size": args.to_batch_size,
        "epochs": args.to_epochs,
    }
    t = carry(
        args.wd,
        args.lr,
        args.n,
        args.batch_size,
        to,
        args.epochs,
        args.mode,
        facts.load()["transfer_modes"][args.mode],  # the registry's, without importing torch
    )
    if args.json:
        emit_json(t.to_dict())
        return 0
    print(t.to_text())
    return 0


def batch_size(text: str, full: str = "B ≥ N") -> float:
    """A batch size > 0 (``run``'s 0 means a full batch: here a full batch is B ≥ N)."""
    try:
        return positive_real(text)
    except argparse.ArgumentTypeError as e:
        with contextlib.suppress(ValueError):
            if float(text) == 0:  # 0, 00, 0e0, -0
                raise argparse.ArgumentTypeError(f"{e} (a full batch: give {full})") from None
        raise


def add_transfer_flags(p: argparse.ArgumentParser) -> None:
    """The tuned setting (required) and what changes (optional)."""
    g = p.add_argument_group("the setting the weight decay was tuned for")
    g.add_argument(*names("--wd"), dest="wd", type=positive_real, required=True, help="λ")
    g.add_argument("--lr", type=positive_real, required=True, help="η (the peak lr)")
    g.add_argument("--n", type=positive_real, required=True, help="training set size N")
    g.add_argument(
        "--batch-size", type=batch_size, required=True, help="batch size B (a full batch: B ≥ N)"
    )
    g.add_argument("--epochs", type=positive_real, help="epochs E (needed for --to-epochs)")
    t = p.add_argument_group("the new setting (each defaults to the old value)")
    t.add_argument("--to-lr", type=positive_real, help="η'")
    t.add_argument("--to-n", type=positive_real, help="N'")
    t.add_argument(
        "--to-batch-size",
        type=functools.partial(batch_size, full="B' ≥ N'"),
        help="B' (a full batch: B' ≥ N')",
    )
    t.add_argument("--to-epochs", type=positive_real, help="E' (τ kept as a fraction of the run)")
    p.add_argument(
        "--mode",
        choices=list(facts.load()["transfer_modes"]),
        default="decoupled",
        help=(
            "decoupled (τ_iter = 1/(η·λ)): AdamW, cautious, corrected, and coupled or "
            "l2 decay under plain SGD; independent (τ_iter = 1/λ). Coupled or l2 decay under "
            "Adam has no timescale: the rule does not apply"
        ),
    )
    add_json(p)


def cmd_timescale(args: argparse.Namespace) -> int:
    """Check the transfer rule: sweep AdamW's weight decay at N, 2N and 4N training rows
    (several seeds, one batched training per size) and measure whether keeping τ_epoch
    predicts the best λ at 4N better than keeping λ, in decades."""
    from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs
    from wdlab.pipelines.timescale import TimescaleSettings, run_timescale

    settings = TimescaleSettings(
        data=args.data,
        target=args.target,
        smallest=args.smallest,
        seeds=args.seeds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        hidden=args.hidden,
        data_seed=args.data_seed,
        **({"weight_decays": args.wd} if args.wd else {}),
    )  # checked before --out is made
    out = writable_dir(Path(args.out), create=False) if args.out else None
    if out is not None:  # files of the user's, or wdlab's for another command: kept
        check_outputs(out, TIMESCALE_FILES, "timescale", args.force)
    result = run_timescale(settings, device=args.device)
    doc = result.to_dict()
    paths: dict[str, Path] = {}
    if out is not None:
        claim_outputs(out, TIMESCALE_FILES, "timescale")
        paths = {"results": out / "timescale.json", "figure": out / "timescale.png"}
        paths["results"].write_text(dumps(doc, indent=1) + "\n")
        result.plot().savefig(paths["figure"], dpi=110, bbox_inches="tight")
        record_outputs(out, paths.values(), "timescale")
    if args.json:
        emit_json(doc)
        return 0
    print(result.table())
    if paths:
        print()
        print_paths(paths)
    return 0


def sizes(text: str) -> tuple[int, ...]:
    """:func:`~wdlab.cli.common.hidden_sizes`, at least one: the timescale MLP has a layer."""
    out = hidden_sizes(text)
    if not out:
        raise argparse.ArgumentTypeError(f"expected sizes like 64 or 128,128, got {text!r}")
    return out


def wd_grid(text: str) -> tuple[float, ...]:
    """``--wd``'s λ grid: ``LO..HI:N`` (log-spaced) or a comma list, as ``sweep --wd``."""
    from wdlab.textlists import parse_float_list

    try:
        return tuple(parse_float_list(text, "--wd"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--wd: ")) from None


def add_timescale_flags(p: argparse.ArgumentParser) -> None:
    """The check's size, and where to write it."""
    p.add_argument("--out", type=folder, help="write timescale.json and timescale.png here")
    p.add_argument("--data", default="digits", help="a classification data source")
    add_key(p, "data.target")
    p.add_argument("--smallest", type=positive_int, default=256, help="N, the smallest")
    p.add_argument(
        "--seeds", default="5", help="seeds per setting: a count like 5, or a list like 0,1,2"
    )
    p.add_argument("--epochs", type=positive_int, default=100, help="epochs")
    p.add_argument("--lr", type=positive_float, default=0.01, help="AdamW's lr")
    p.add_argument(
        "--wd",
        "--weight-decay",
        type=wd_grid,
        help="the λ grid swept at each size, rising, 3 or more: LO..HI:N (log-spaced) or a "
        "list like 0.01,0.1,1 (default: 0.01..31.6:15)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size")
    p.add_argument(
        "--hidden", type=sizes, default=(64,), help="the MLP's hidden sizes, e.g. 128,128"
    )
    p.add_argument(
        "--data-seed", type=int, default=0, help="seed of the split, subsets and batches"
    )
    add_device(p)
    add_force(p)
    add_json(p)


COMMANDS = [
    Command(
        "transfer",
        "carry a weight decay to a new lr, data size or batch size (keeps τ_epoch)",
        add_transfer_flags,
        cmd_transfer,
        light=True,
    ),
    Command(
        "timescale",
        "check the τ_epoch rule: best AdamW weight decay at N, 2N, 4N",
        add_timescale_flags,
        cmd_timescale,
    ),
]
