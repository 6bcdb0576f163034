"""``wdlab demo``: the article's experiment, with the manual ≡ builtin check."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from wdlab.cli.common import (
    RESULT_FILES,
    Command,
    add_device,
    add_force,
    add_json,
    emit_json,
    folder,
    nonneg_float,
    positive_float,
    positive_int,
    print_paths,
    report_files,
    seed,
    show_progress,
    with_report,
    writable_dir,
)
from wdlab.cli.flags import names


def cmd_demo(args: argparse.Namespace) -> int:
    """Reproduce the article's experiment and check manual ≡ builtin."""
    from wdlab.devices import check_fits, resolve_device
    from wdlab.pipelines import DemoSettings, run_demo
    from wdlab.pipelines.outputs import check_outputs, claim_outputs, record_outputs
    from wdlab.report.html import write_report

    settings = DemoSettings(
        epochs=args.epochs,
        dim=args.dim,
        lr=args.lr,
        weight_decay=args.wd,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    device = resolve_device(args.device, "--device")
    what = f"the demo (--dim {args.dim}, --epochs {args.epochs})"
    check_fits(demo_bytes(args.dim, args.epochs), what, device)
    out = writable_dir(Path(args.out))
    check_outputs(out, [*RESULT_FILES, *report_files()], "demo", args.force)
    result = run_demo(
        settings,
        progress=show_progress(args),
        device=device,
        fast_path=False if args.no_fast_path else None,
        precision=args.precision,
    )
    claim_outputs(out, [*RESULT_FILES, *report_files()], "demo")
    paths = result.write(out)
    figures = write_report(result, out)
    paths = with_report(paths, figures)
    record_outputs(out, [*paths.values(), *figures.values()], "demo")
    if args.json:
        emit_json(result.to_dict())
    else:
        print(result.table())
        print()
        width = print_paths(paths)
        print(f"{'time':>{width}}: {result.seconds:.1f} s")
    if not result.check.identical and not math.isfinite(result.check.max_abs_diff):
        sys.stderr.write(f"\n!!! manual vs builtin {result.check.verdict()}; lower --lr !!!\n")
        return 1
    if not result.check.identical:
        sys.stderr.write(
            "\n!!! manual and builtin weight decay DIFFER: max |Δ| = "
            f"{result.check.max_abs_diff:.3g}. The article's claim does not hold here. !!!\n"
        )
        return 1
    return 0


def demo_bytes(dim: int, epochs: int) -> int:
    """A generous estimate of the demo's memory: X drawn in float64 and kept in float32
    (12·dim²), the model with its gradients, momentum-free SGD and the kept final weights of
    three regimes (dim²/2 parameters, ~8 copies: 16·dim²), and per-epoch records."""
    return 28 * dim * dim + 3 * 200 * (epochs + 1)


def add_demo_flags(p: argparse.ArgumentParser) -> None:
    """The demo's numbers, output, device, path and precision."""
    p.add_argument("--epochs", type=positive_int, default=1000, help="steps run at 0..EPOCHS")
    p.add_argument("--dim", type=positive_int, default=1000, help="rows and features of X")
    p.add_argument("--lr", type=positive_float, default=0.1, help="SGD learning rate")
    p.add_argument(
        *names("--wd"),
        dest="wd",
        type=nonneg_float,
        default=0.1,
        help="weight decay of the manual and builtin regimes",
    )
    p.add_argument("--seed", type=seed, default=0, help="torch seed for data and init")
    p.add_argument("--eval-every", type=positive_int, default=10, help="evaluate every N epochs")
    p.add_argument("--out", type=folder, default="wdlab-out/demo", help="output folder")
    add_device(p)
    p.add_argument(
        "--no-fast-path", action="store_true", help="the standard path even where Gram applies"
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: autocast forward passes",
    )
    add_force(p)
    add_json(p)


COMMANDS = [
    Command(
        "demo",
        "reproduce the article's experiment (none / manual / builtin)",
        add_demo_flags,
        cmd_demo,
    )
]
