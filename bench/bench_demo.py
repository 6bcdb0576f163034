"""Benchmark: the full-size `wdlab demo` against the article's loop, in one run.

    .venv/bin/python bench/bench_demo.py [--epochs 1000]

Runs ../shared/reference/seed_loop.py once per regime (none, manual, builtin) and
`wdlab demo --json` once, each as a child process (so each has its own peak RSS), then a
`torch.mm` of the demo's GEMM shape in this process. Prints the time ratio (goal ≤ 0.85),
the demo's achieved GFLOP/s as a share of torch.mm's (goal ≥ 85%) and both peak RSS figures
(goal ≤ 400 MiB for the demo).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEED_LOOP = ROOT.parent / "shared" / "reference" / "seed_loop.py"


def run_child(cmd: list[str]) -> tuple[str, float, float]:
    """Run a command; return (stdout, wall seconds, peak RSS MiB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return out, wall, usage.ru_maxrss / 1024


def mm_gflops(n: int, d: int, h: int, seconds: float = 3.0) -> float:
    """GFLOP/s of torch.mm for (n×d)·(d×h), the demo's forward GEMM, measured now."""
    a, b = torch.randn(n, d), torch.randn(d, h)
    for _ in range(5):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n * d * h * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1000)
    args = ap.parse_args()
    if not SEED_LOOP.exists():
        raise SystemExit(f"baseline not found: {SEED_LOOP}")
    dim = 1000
    n_train, h = 670, dim // 2

    with tempfile.TemporaryDirectory() as tmp:
        out, wall, demo_rss = run_child(
            [str(ROOT / ".venv/bin/wdlab"), "demo", "--json", "--epochs", str(args.epochs),
             "--out", tmp]
        )  # fmt: skip
    demo = json.loads(out)
    base = {}
    for mode in ("none", "manual", "builtin"):
        out, _, rss = run_child(
            [sys.executable, str(SEED_LOOP), "--mode", mode, "--json", "--epochs",
             str(args.epochs)]
        )  # fmt: skip
        base[mode] = json.loads(out.strip().splitlines()[-1]) | {"rss": rss}
    mm = mm_gflops(n_train, dim, h)

    base_s = sum(b["train_seconds"] for b in base.values())
    steps = 3 * (args.epochs + 1)
    flops = steps * 2 * (2 * n_train * dim * h)  # forward GEMM + weight-gradient GEMM
    demo_gflops = flops / demo["seconds"] / 1e9
    print(f"# bench_demo: full-size demo vs the article's loop ({args.epochs + 1} steps x 3)")
    for mode, b in base.items():
        print(f"baseline {mode:<8} train {b['train_seconds']:7.2f} s   peak RSS {b['rss']:7.0f} MiB"
              f"   final test loss {b['final_test_loss']:.5f}")  # fmt: skip
    finals = {r["regime"]: r["final"]["test_loss"] for r in demo["runs"]}
    print(f"wdlab demo        total {demo['seconds']:7.2f} s   peak RSS {demo_rss:7.0f} MiB"
          f"   final test loss " + " / ".join(f"{finals[m]:.5f}" for m in base))  # fmt: skip
    print(f"time ratio demo / baseline (3 runs summed): {demo['seconds'] / base_s:.3f}"
          "   (goal <= 0.85)")  # fmt: skip
    print(f"demo GFLOP/s {demo_gflops:.1f} vs torch.mm {mm:.1f}: {demo_gflops / mm:.1%}"
          "   (goal >= 85%)")  # fmt: skip
    print(f"demo peak RSS {demo_rss:.0f} MiB (goal <= 400); baseline up to "
          f"{max(b['rss'] for b in base.values()):.0f} MiB")  # fmt: skip
    print(f"manual == builtin bitwise: {demo['checks']['manual_equals_builtin']['identical']}")
    print(f"(demo wall time with start-up: {wall:.1f} s)")


if __name__ == "__main__":
    main()
