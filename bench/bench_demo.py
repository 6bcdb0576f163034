"""Benchmark: the full-size `wdlab demo` against the article's loop, in one run.

    .venv/bin/python bench/bench_demo.py [--epochs 1000]

Runs ../shared/reference/seed_loop.py once per regime (none, manual, builtin), then
`wdlab demo --json` twice — with the exact Gram fast path (the default) and with
`--no-fast-path` (the standard path) — each as a child process (so each has its own peak RSS),
then a `torch.mm` of the demo's GEMM shape in this process. Prints each demo's time ratio to
the summed baseline (goals: ≤ 0.85 standard, ≤ 0.45 fast path), the standard path's achieved
GFLOP/s as a share of torch.mm's (goal ≥ 85%), the peak RSS figures (goal ≤ 400 MiB) and the
deviation of the fast path's final losses from the standard path's.
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
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds; each timing is the minimum over rounds (noisy machine)",
    )
    args = ap.parse_args()
    if not SEED_LOOP.exists():
        raise SystemExit(f"baseline not found: {SEED_LOOP}")
    dim = 1000
    n_train, h = 670, dim // 2

    demos: dict[str, dict] = {}
    base: dict[str, dict] = {}

    def keep_min(store: dict, key: str, doc: dict, time_key: str) -> None:
        if key not in store or doc[time_key] < store[key][time_key]:
            store[key] = doc | {"rss": max(doc["rss"], store.get(key, {}).get("rss", 0))}
        else:
            store[key]["rss"] = max(store[key]["rss"], doc["rss"])

    for _ in range(args.repeat):  # rounds interleave ours and the baseline
        for label, extra in (("fast path", []), ("standard path", ["--no-fast-path"])):
            with tempfile.TemporaryDirectory() as tmp:
                out, wall, rss = run_child(
                    [
                        sys.executable,  # the Python this bench runs under, wherever it is
                        "-m",
                        "wdlab",
                        "demo",
                        "--json",
                        "--epochs",
                        str(args.epochs),
                        "--out",
                        tmp,
                        *extra,
                    ]
                )
            keep_min(demos, label, json.loads(out) | {"rss": rss, "wall": wall}, "seconds")
        for mode in ("none", "manual", "builtin"):
            out, wall, rss = run_child(
                [
                    sys.executable,
                    str(SEED_LOOP),
                    "--mode",
                    mode,
                    "--json",
                    "--epochs",
                    str(args.epochs),
                ]
            )
            doc = json.loads(out.strip().splitlines()[-1]) | {"rss": rss, "wall": wall}
            keep_min(base, mode, doc, "train_seconds")
    mm = mm_gflops(n_train, dim, h)

    base_s = sum(b["train_seconds"] for b in base.values())
    steps = 3 * (args.epochs + 1)
    flops = steps * 2 * (2 * n_train * dim * h)  # forward GEMM + weight-gradient GEMM
    print(
        f"# bench_demo: full-size demo vs the article's loop ({args.epochs + 1} steps x 3), "
        f"min over {args.repeat} round(s)"
    )
    for mode, b in base.items():
        print(
            f"baseline {mode:<8}  train {b['train_seconds']:7.2f} s   "
            f"peak RSS {b['rss']:6.0f} MiB   final test loss {b['final_test_loss']:.5f}"
        )
    for label, d in demos.items():
        finals = {r["regime"]: r["final"]["test_loss"] for r in d["runs"]}
        print(
            f"wdlab demo, {label:<13} total {d['seconds']:7.2f} s   peak RSS {d['rss']:6.0f} MiB"
            "   final test loss " + " / ".join(f"{finals[m]:.5f}" for m in base)
        )
    fast, std = demos["fast path"], demos["standard path"]
    print(
        f"time ratio, standard path / baseline (3 runs summed): {std['seconds'] / base_s:.3f}"
        "   (goal <= 0.85)"
    )
    print(
        f"time ratio, fast path / baseline (3 runs summed):     {fast['seconds'] / base_s:.3f}"
        "   (goal <= 0.45)"
    )
    base_wall = sum(b["wall"] for b in base.values())
    print(
        f"whole processes (imports, data, and for the demo its report and plots too): "
        f"fast path {fast['wall']:.2f} s / baseline {base_wall:.2f} s = "
        f"{fast['wall'] / base_wall:.3f}"
    )
    std_gflops = flops / std["seconds"] / 1e9
    print(
        f"standard path GFLOP/s {std_gflops:.1f} vs torch.mm {mm:.1f}: {std_gflops / mm:.1%}"
        "   (goal >= 85%)"
    )
    eff = flops / fast["seconds"] / 1e9
    print(
        f"fast path ({fast['engine']}): the article's FLOPs / demo time = {eff:.1f} GFLOP/s, "
        f"{eff / mm:.1%} of torch.mm (it executes ~1/3 of those FLOPs)"
    )
    dev = max(
        abs(a["final"][k] - b["final"][k]) / abs(b["final"][k])
        for a, b in zip(fast["runs"], std["runs"], strict=True)
        for k in ("train_loss", "test_loss")
    )
    print(f"fast vs standard path, max relative deviation of final losses: {dev:.2e}")
    print(
        f"peak RSS: fast {fast['rss']:.0f} MiB, standard {std['rss']:.0f} MiB (goal <= 400);"
        f" baseline up to {max(b['rss'] for b in base.values()):.0f} MiB"
    )
    for label, d in demos.items():
        print(
            f"manual == builtin bitwise ({label}): "
            f"{d['checks']['manual_equals_builtin']['identical']}"
        )


if __name__ == "__main__":
    main()
