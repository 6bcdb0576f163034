"""``wdlab report``, ``ls``, ``show`` and ``export``: reading stored results back."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from wdlab.cli.common import Command, add_json, counts_line, emit_json, print_paths

if TYPE_CHECKING:
    from wdlab.records import Result


def cmd_report(args: argparse.Namespace) -> int:
    """Make report.html and the PNGs from a demo/run folder or a study."""
    from wdlab.pipelines import build_report

    paths = build_report(args.path, args.out)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        print_paths(paths, 11)
    return 0


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
    print(f"\nstudy: {args.study}  ({counts_line(result.counts)})")
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


COMMANDS = [
    Command("report", "write report.html and PNG figures", add_report_flags, cmd_report),
    Command("ls", "list studies", add_ls_flags, cmd_ls),
    Command("show", "print a study's results", add_show_flags, cmd_show),
    Command(
        "export", "export a study's runs and curves (CSV or Parquet)", add_export_flags, cmd_export
    ),
]
