"""``wdlab report``, ``ls``, ``show`` and ``export``: reading stored results back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from wdlab.cli.common import (
    Command,
    UsageError,
    add_force,
    add_json,
    emit_json,
    emit_study,
    folder,
    print_paths,
    report_files,
    writable_dir,
)

if TYPE_CHECKING:
    from wdlab.records import Result


def cmd_report(args: argparse.Namespace) -> int:
    """Make report.html and the PNGs from a demo/run folder or a study."""
    from wdlab.pipelines import load_result
    from wdlab.pipelines.outputs import (
        check_outputs,
        claim_outputs,
        forget_outputs,
        record_outputs,
        study_source,
    )
    from wdlab.report.html import write_report

    result = load_result(args.path)  # read-only; refuses a folder with nothing to report
    out = writable_dir(
        Path(args.out or args.path),
        "--out" if args.out else "report folder",
        "" if args.out else "write the report elsewhere with --out DIR",
    )
    study = (Path(args.path) / "study.db").exists()
    source = study_source(args.path) if study else result.kind
    check_outputs(out, report_files(), source, args.force)
    claim_outputs(out, report_files(), source)
    paths = write_report(result, out)
    record_outputs(out, paths.values(), source)
    stale = [n for n in report_files() if n not in {p.name for p in paths.values()}]
    for name in stale:  # an earlier report's figure this one has not: checked ours above
        (out / name).unlink(missing_ok=True)
    forget_outputs(out, stale)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        print_paths(paths, 11)
    return 0


def study_row(d: Path) -> dict[str, object]:
    """One study's line for ``ls`` (read-only); a study that cannot be read gets its reason
    in ``error`` instead of its counts."""
    import sqlite3

    from wdlab.store import Store

    row: dict[str, object] = {"study": str(d)}
    try:
        with Store(d, readonly=True) as store:
            info = store.study() or {}
            counts = store.counts(live=True)
    except (ValueError, OSError, sqlite3.Error) as exc:
        return row | {"error": " ".join(str(exc).split()) or type(exc).__name__}
    return row | {
        "created": info.get("created", ""),
        "data": (info.get("data") or {}).get("name", ""),
        "runs": sum(counts.values()),
        "done": counts["done"],
        "diverged": counts["diverged"],
        "pruned": counts.get("pruned", 0),
        "failed": counts["failed"],
        "running": counts["running"],
        "pending": counts["pending"],
    }


DEFAULT_ROOT = "wdlab-out"  # where sweeps put their studies when --out is not given


def cmd_ls(args: argparse.Namespace) -> int:
    """List the studies under a folder (those that cannot be read are marked, not fatal)."""
    from wdlab.store import find_studies

    root = Path(args.root or DEFAULT_ROOT)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is a file, not a folder of studies")
    if not root.exists() and args.root:  # the default folder not made yet: no study yet
        raise UsageError(f"{root}: no such folder")
    rows = [study_row(d) for d in find_studies(root)] if root.exists() else []
    if args.json:
        emit_json({"studies": rows})
        return 0
    if not rows:
        print(f"no studies under {root}")
        return 0
    w = max(len("study"), *(len(str(r["study"])) for r in rows))
    dw = max(14, *(len(str(r.get("data", ""))) for r in rows))  # long data names line up too
    print(
        f"{'study':<{w}}  {'created':<19}  {'data':<{dw}} {'runs':>5} {'done':>5} {'div':>4} "
        f"{'pruned':>6} {'fail':>4} {'running':>7} {'todo':>5}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['study']:<{w}}  unreadable: {r['error']}")
            continue
        print(
            f"{r['study']:<{w}}  {r['created']:<19}  {r['data']!s:<{dw}} {r['runs']:>5} "
            f"{r['done']:>5} {r['diverged']:>4} {r['pruned']:>6} {r['failed']:>4} "
            f"{r['running']:>7} {r['pending']:>5}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a study's result table from its store (read-only), with how many runs failed
    and why; or a ``wdlab search`` storage's trials."""
    from wdlab.pipelines import load_study

    url = _search_url(args.study)
    if url is not None:
        return _show_search(args, url)
    if args.name is not None:
        raise UsageError(f"--name: names a study in a search's storage; {args.study} is not one")
    result: Result = load_study(args.study)
    emit_study(result, args.study, args.json)
    return 0


def _search_url(where: str) -> str | None:
    """The URL of the Optuna storage ``where`` names (a URL as given, ``sqlite:///`` of a
    SQLite file with Optuna's tables), or None (a study folder); one needs optuna to be read."""
    from wdlab.extras import require
    from wdlab.store.schema import is_optuna_file

    if "://" in where:
        url = where
    elif is_optuna_file(where):
        url = f"sqlite:///{Path(where).resolve()}"
    else:
        return None
    require("optuna", "wdlab show of a search")
    return url


def _show_search(args: argparse.Namespace, url: str) -> int:
    """A search's trials by value, the importance of its parameters and its study's name."""
    from wdlab.optuna import load_search

    result = load_search(url, args.name)
    if args.json:
        emit_json(result.to_dict() | {"storage": args.study})
        return 0
    print(result.table())
    if line := result.importance_line():
        print(line)
    print(f"study: {result.study.study_name!r} in {args.study}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's runs and tidy curves as CSV or Parquet, or log them to TensorBoard or
    MLflow (--to)."""
    from wdlab.pipelines import export_study
    from wdlab.store import Store

    Store(args.study, readonly=True).close()  # a study, before any folder is made
    if args.to:
        return _export_to(args)
    writable_dir(
        Path(args.out or args.study),
        "--out" if args.out else "study folder",
        "" if args.out else "write the files elsewhere with --out DIR",
        create=False,  # made when the files are written
    )
    paths = export_study(args.study, args.format or "csv", args.out, force=args.force)
    if args.json:
        emit_json({k: str(v) for k, v in paths.items()})
    else:
        print_paths(paths, 7)
    return 0


def _export_to(args: argparse.Namespace) -> int:
    """``--to tensorboard DIR`` or ``--to mlflow [URI]``: every run, the selection, the report."""
    from wdlab.pipelines import export_to

    if len(args.to) > 2:
        raise UsageError(f"--to takes a dashboard and one target, got {' '.join(args.to)}")
    if args.out is not None or args.format is not None or args.force:
        raise UsageError(
            "--to writes where its target says, and never over this study's logs there; "
            "--out, --format and --force are for files"
        )
    to, target = args.to[0], (args.to[1] if len(args.to) > 1 else None)
    done = export_to(args.study, to, target)
    if args.json:
        emit_json(done)
    else:
        print(f"{done['runs']} runs and the selection logged to {to}: {done['where']}")
    return 0


def add_report_flags(p: argparse.ArgumentParser) -> None:
    """PATH, --out, --json."""
    p.add_argument("path", type=folder, help="output folder or study folder")
    p.add_argument("--out", type=folder, default=None, help="where to write (default: PATH)")
    add_force(p)
    add_json(p)


def add_ls_flags(p: argparse.ArgumentParser) -> None:
    """ROOT, --json."""
    p.add_argument(
        "root",
        nargs="?",
        type=folder,
        default=None,
        help=f"folder of studies (default: {DEFAULT_ROOT})",
    )
    add_json(p)


def add_show_flags(p: argparse.ArgumentParser) -> None:
    """STUDY, --name, --json."""
    p.add_argument(
        "study",
        type=folder,
        help="study folder, or a `wdlab search` storage (sqlite:///FILE, FILE, a URL)",
    )
    p.add_argument("--name", help="the study's name in a search's storage that holds several")
    add_json(p)


def add_export_flags(p: argparse.ArgumentParser) -> None:
    """STUDY, --format, --out, --json."""
    p.add_argument("study", type=folder, help="study folder")
    p.add_argument(
        "--format", choices=["csv", "parquet"], default=None, help="file format (default: csv)"
    )
    p.add_argument(
        "--out", type=folder, default=None, help="folder for the files (default: the study)"
    )
    p.add_argument(
        "--to",
        nargs="+",
        metavar=("DASHBOARD", "TARGET"),
        help="log the study to a dashboard instead: tensorboard DIR, or mlflow [URI] "
        "(default: MLflow's tracking URI, e.g. sqlite:///mlflow.db)",
    )
    add_force(p)
    add_json(p)


COMMANDS = [
    Command("report", "write report.html and PNG figures", add_report_flags, cmd_report),
    Command("ls", "list studies", add_ls_flags, cmd_ls),
    Command("show", "print a study's results", add_show_flags, cmd_show),
    Command(
        "export",
        "export a study's runs and curves (CSV, Parquet, TensorBoard, MLflow)",
        add_export_flags,
        cmd_export,
    ),
]
