"""What every command shares: flag types that refuse bad values in one line, output folders,
progress and JSON."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wdlab.jsonsafe import dumps

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


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, how to add its flags, and what runs it."""

    name: str
    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_json(p: argparse.ArgumentParser) -> None:
    """--json."""
    p.add_argument("--json", action="store_true", help="print one JSON document")


def counts_line(counts: dict[str, int]) -> str:
    """Runs per status, e.g. ``10 done, 1 diverged``."""
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)
