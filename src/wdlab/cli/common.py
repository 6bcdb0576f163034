"""What every command shares: flag types that refuse bad values in one line, output folders,
progress and JSON."""

from __future__ import annotations

import argparse
import contextlib
import decimal
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wdlab.jsonsafe import dumps

if TYPE_CHECKING:
    from wdlab.records import Result

EXIT_BAD_INPUT = 2
FLOAT32_MAX = 3.4028234663852886e38  # numbers that reach training must fit float32


class UsageError(Exception):
    """Bad input from the user: reported in one line with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2, and that takes no flag
    abbreviation (``--seed`` is not ``--seeds``: an unknown flag is named, with the flags it
    resembles)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # "-1e-3" and "-0.1,0.2" are values, as Python 3.14's argparse reads them (3.11 read
        # them as flags: "--lr -1e-3" said "expected one argument", not what was wrong)
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``prog: error: message`` and exit 2 (:class:`UsageExit`); a config key's flag
        is named with its key (``train.precision (--precision): invalid choice…``), as every
        other refusal of a setting is."""
        message = _keyed(message)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageExit(message)


_ARGUMENT = re.compile(r"^argument (--[\w-]+): ")


def _keyed(message: str) -> str:
    """argparse's ``argument --flag: …`` as ``key (--flag): …`` where the flag sets a config
    key (facts.json: no torch imported), else as it is."""
    from wdlab.cli import facts

    m = _ARGUMENT.match(message)
    keys = {flag: key for key, flag in facts.flags().items()} if m else {}
    key = keys.get(m.group(1)) if m else None
    return f"{key} ({m.group(1)}): {message[m.end() :]}" if m and key else message


class UsageExit(SystemExit):
    """A usage error's exit (status 2), with its message (for ``--json``'s error document)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_BAD_INPUT)
        self.message = message


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


def seed(text: str) -> int:
    """A seed: an integer in 0..2**63-1 (what torch.manual_seed takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed must be in 0..2**63-1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_real(text: str) -> float:
    """A finite number > 0, any double (a setting wdlab computes with, never trains in)."""
    value = _float(text, float32=False)
    if value == 0 and decimal.Decimal(text.strip()) > 0:  # 1e-330: not 0, but a double's 0
        raise argparse.ArgumentTypeError(f"{text} underflows to 0 (a double's least is 5e-324)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _float(text: str, float32: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if float32 and abs(value) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(
            f"{text} overflows float32, in which wdlab trains (at most {FLOAT32_MAX:.3g})"
        )
    return value


def hidden_sizes(text: str) -> tuple[int, ...]:
    """Hidden sizes like ``64,32``: positive integers (an empty value between commas is
    refused, as in every comma list)."""
    from wdlab.textlists import comma_items

    try:
        items = comma_items(text, "hidden sizes")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        sizes = tuple(int(s) for s in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,32, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers, got {text!r}")
    return sizes


def device_name(text: str) -> str:
    """A device by its form: cpu, cuda, cuda:N or mps (whether this machine has it is checked
    when the command runs)."""
    from wdlab.devices import check_device_name

    try:
        return check_device_name(text, "--device")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--device: ")) from None


def writable_dir(path: Path, flag: str = "--out", hint: str = "", create: bool = True) -> Path:
    """Create ``path`` if needed and check that files can be written there (before any
    training: a bad ``--out`` is said at once, not after the work). ``hint`` ends the message.
    ``create=False``: a missing ``path`` is left for the command to make once its own checks
    pass (a refused command leaves no empty folder); the nearest folder above it is probed."""
    tail = f"; {hint}" if hint else ""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder{tail}")
    where = path
    while not create and not where.exists() and where != where.parent:
        where = where.parent
    try:
        if where.exists() and not where.is_dir():
            raise NotADirectoryError(20, f"{where} is a file")
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".wdlab-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot write there ({exc.strerror or exc}){tail}"
        ) from None
    return path


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with --json: the terminal they are drawn
    on, stderr (``2> file`` holds no bar; ``> file`` on a terminal still shows one)."""
    return sys.stderr.isatty() and not getattr(args, "json", False)


_JSON_OUT: list[TextIO] = []  # the real stdout while a --json command runs (user_output_aside)


def emit_error_json(message: str, status: int) -> None:
    """Under ``--json``, a refusal is one JSON document too: ``{"error": message, "status":
    status}`` on stdout (the same line goes to stderr)."""
    emit_json({"error": message, "status": status})


def emit_json(doc: object) -> None:
    """Print exactly one JSON document on stdout (NaN/inf become null)."""
    from wdlab.interrupts import answered

    out = _JSON_OUT[-1] if _JSON_OUT else sys.stdout
    out.write(dumps(doc) + "\n")
    out.flush()
    answered()  # a Ctrl-C from here on is only noted: the document is the answer


@contextlib.contextmanager
def user_output_aside() -> Iterator[None]:
    """While a ``--json`` command runs, whatever else writes to stdout (a user's factory or
    model that prints, a library, C code) goes to stderr: ``sys.stdout`` is stderr and file
    descriptor 1 points at 2; :func:`emit_json` alone writes to the real stdout."""
    sys.stdout.flush()
    old = sys.stdout
    try:
        fd = old.fileno()
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a notebook, a test's capture)
        fd = err = -1
    saved = os.dup(fd) if fd >= 0 else -1
    real: TextIO = old
    if saved >= 0:
        real = os.fdopen(saved, "w", encoding=getattr(old, "encoding", None) or "utf-8")
        os.dup2(err, fd)
    _JSON_OUT.append(real)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = old
        _JSON_OUT.pop()
        sys.stderr.flush()
        if saved >= 0:
            os.dup2(saved, fd)
            with contextlib.suppress(OSError):  # a reader that left: said by emit_json
                real.close()


def print_paths(paths: dict[str, Path], width: int = 8) -> int:
    """One ``label: path`` line per written file; returns the labels' width (for more lines)."""
    width = max(width, *(len(label) for label in paths))
    for label, path in paths.items():
        print(f"{label:>{width}}: {path}")
    return width


def with_report(paths: dict[str, Path], written: dict[str, Path]) -> dict[str, Path]:
    """The result's files, then every figure the report wrote and the report last: each file
    a command wrote, for its list (it named the report and omitted figures)."""
    figures = {k: v for k, v in written.items() if k != "report"}
    return paths | figures | {"report": written["report"]}


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, how to add its flags, and what runs it.

    ``light`` commands run without torch; for the others the command line imports torch
    before running them, saying so on a terminal. ``add_flags`` must not import torch (the
    registries' facts come from :mod:`wdlab.cli.facts`). ``resumes``: what an interrupted
    run of it keeps, said after "interrupted" ("" where nothing is kept to resume).
    """

    name: str
    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    light: bool = False
    resumes: str = ""


def add_json(p: argparse.ArgumentParser) -> None:
    """--json."""
    p.add_argument("--json", action="store_true", help="print one JSON document")


def folder(text: str) -> str:
    """A folder's path, as ``--out`` takes it: not empty (``""`` would silently be no folder,
    or this one)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a folder, got {'a blank' if text else 'an empty'} path"
        )
    return text


def seconds(text: str) -> float:
    """A time limit in seconds: a number > 0, ``inf`` for none, checked as the config key
    ``model.factory_timeout`` is (:func:`wdlab.config_keys.positive_seconds`)."""
    from wdlab.config_keys import positive_seconds

    try:
        return positive_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_factory_timeout(p: argparse.ArgumentParser) -> None:
    """``--factory-timeout``: the time limit of the user's function, with the config key's
    help and default."""
    from wdlab.cli import facts

    k = facts.key("model.factory_timeout")
    p.add_argument("--factory-timeout", type=seconds, default=k["default"], help=k["help"])


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``, checked by its form, with the config key's help (one text everywhere)."""
    from wdlab.cli import facts

    help_text = facts.key("train.device")["help"]
    p.add_argument("--device", type=device_name, default=None, help=help_text)


def add_running(p: argparse.ArgumentParser) -> None:
    """--parallel and --channels-last: how a batch runs on the CPU (sweep and search alike)."""
    p.add_argument(
        "--parallel",
        type=positive_int,
        default=1,
        metavar="N",
        help="train N configurations side by side, each with its share of torch's threads, "
        "where a batch runs them one after another (convolutions on the CPU); the numbers are "
        "those of 1 with that share of threads (default: 1)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="give your model its image inputs in torch.channels_last (faster convolutions on "
        "the CPU; the numbers of a plain loop that converts them so)",
    )


def add_force(p: argparse.ArgumentParser) -> None:
    """--force."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace files in the output folder that wdlab did not write there for this "
        "study (refused otherwise)",
    )


# The files a demo's or run's results are (wdlab.report.files.write_results).
RESULT_FILES = ("results.json", "curves.csv", "losses.png", "wd_curve.png")


def report_files() -> list[str]:
    """The files a report may be: report.html and one PNG per figure."""
    from wdlab.report.figures import FIGURES

    return ["report.html", *(f"{name}.png" for name in FIGURES)]


def counts_line(counts: dict[str, int]) -> str:
    """Runs per status, e.g. ``10 done, 1 diverged``."""
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def emit_study(
    result: Result, directory: Path | str, as_json: bool, extra: dict[str, str] | None = None
) -> None:
    """A study's answer: one JSON document (the result, its folder, ``extra``, the failed runs
    grouped by error), or its table, the runs per status, how many failed and why (a rerun
    retries them) and how many are not finished (and where a checkpoint holds them; the table
    is then partial)."""
    from wdlab.pipelines.results import headed
    from wdlab.report.text import failed_lines
    from wdlab.store import Store

    with Store(directory, readonly=True) as store:
        saved = store.saved()
    said_changed_weights(result)
    if as_json:  # the failed runs: as the result read them from the store (load_study)
        failed = [{"error": e, "runs": n} for e, n in result.failures.items()]
        where = {"directory": str(directory), **(extra or {}), "failed": failed}
        emit_json(result.to_dict() | where)
        return
    print(headed(result, result.table()))  # a partial study's notice above its table
    print(f"\nstudy: {directory}  ({counts_line(result.counts)})")
    for line in failed_lines(result.failures):
        print(line)
    unfinished = result.counts.get("pending", 0) + result.counts.get("running", 0)
    if unfinished:
        runs = "run" if unfinished == 1 else "runs"
        print(
            f"incomplete: {unfinished} {runs} not finished{_saved_text(saved)}; the table "
            "is partial"
        )


def said_changed_weights(result: Result) -> None:
    """Warn of each kept weights file of the answer whose bytes are no longer those wdlab
    recorded writing (damaged, edited or replaced): ``model()`` refuses it."""
    from wdlab.pipelines.outputs import changed_since_written, deleted_since_written
    from wdlab.pipelines.weights import FOLDER
    from wdlab.warn import warn_user

    files = [Path(f) for row in getattr(result, "best", []) for f in row["weights"].values()]
    directory = getattr(result, "directory", None)
    folder = Path(directory or ".") / FOLDER
    if gone := deleted_since_written(folder) if directory else []:
        warn_user(
            f"{len(gone)} weights file{'s' * (len(gone) > 1)} wdlab wrote in {folder} "
            f"{'are' if len(gone) > 1 else 'is'} gone ({gone[0]}{', …' * (len(gone) > 1)}): "
            "model() cannot build those runs; sweep into a new --out to train them again"
        )
    for path in files:
        if changed_since_written(path.parent, path.name):
            warn_user(
                f"weights file {path} changed since wdlab wrote it (its bytes are not those "
                "recorded): model() refuses it; restore it, or sweep into a new --out to train "
                "again"
            )


def _saved_text(saved: dict[int, int]) -> str:
    """Where the unfinished runs checkpoints hold stand, e.g. `` (6 saved at epoch 45 in
    checkpoints: run the sweep again to resume them)``; "" for none."""
    from wdlab.pipelines.segments import epoch_span

    if not saved:
        return ""
    n, at = sum(saved.values()), epoch_span(saved)
    return f" ({n} saved at {at} in checkpoints: run the sweep again to resume them)"
