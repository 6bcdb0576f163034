"""Benchmark: how long the command line takes to answer without training, against importing torch.

    .venv/bin/python bench/bench_startup.py [--repeat 5]

Each case is a fresh process (the installed ``wdlab`` script, as a user types it): ``--version``,
``--help``, ``sweep --help``, ``transfer``, a usage error, and for scale ``python -c "import
torch"``. Prints the best and the median wall time of ``--repeat`` runs per case, its exit
status, and whether the process imported torch (asked with ``-X importtime``, whose report lists
every module a process imports).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRANSFER = ["transfer", "--wd", "0.1", "--lr", "1e-3", "--n", "50000", "--batch-size", "256"]
CASES = {
    "wdlab --version": ["--version"],
    "wdlab --help": ["--help"],
    "wdlab sweep --help": ["sweep", "--help"],
    "wdlab transfer ...": [*TRANSFER, "--to-n", "200000"],
    "wdlab sweep --weigth-decay 1 (usage error)": ["sweep", "--weigth-decay", "1"],
}


def wdlab() -> list[str]:
    """The console script beside this Python (else ``python -m wdlab.cli``)."""
    script = Path(sys.executable).with_name("wdlab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wdlab.cli"]


def timed(argv: list[str], repeat: int) -> tuple[float, float, int]:
    """(best, median) wall seconds of ``repeat`` runs, and the exit status."""
    times, code = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        code = subprocess.run(argv, capture_output=True).returncode
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), code


def imports_torch(argv: list[str]) -> bool:
    """Whether the process imports torch (``-X importtime`` lists every import on stderr)."""
    if argv[0] != sys.executable:
        argv = [sys.executable, shutil.which(argv[0]) or argv[0], *argv[1:]]
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True)
    return any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


def main() -> None:
    """Run and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"# bench_startup: best / median of {args.repeat} fresh processes")
    rows = {name: [*wdlab(), *argv] for name, argv in CASES.items()}
    rows['python -c "import torch"'] = [sys.executable, "-c", "import torch"]
    for name, argv in rows.items():
        best, median, code = timed(argv, args.repeat)
        torch = "imports torch" if imports_torch(argv) else "no torch"
        print(f"{name:<44} {best:6.3f} s / {median:6.3f} s  exit {code}  {torch}")


if __name__ == "__main__":
    main()
