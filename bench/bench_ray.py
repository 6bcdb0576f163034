"""Benchmark: the Ray backend's overhead against the local backend, for one small sweep.

    .venv/bin/python bench/bench_ray.py

The same sweep (digits, MLP 64-32, Adam, l2 and decoupled × 6 weight decays × 2 seeds, 100
epochs, batches of 4 configurations) runs with the local backend and then on a local Ray
runtime (2 CPUs, bound to 127.0.0.1), each into a fresh study. Prints both wall times, Ray's
start-up time, and the ratio with and without start-up.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import tempfile
import time
from pathlib import Path

from wdlab.config import validate
from wdlab.executors import RayExecutor
from wdlab.pipelines import run_sweep

CFG = {
    "data": {"source": "digits"},
    "model": {"kind": "mlp", "hidden": [64, 32]},
    "train": {"optimizer": "adam", "lr": [3e-3], "epochs": 100, "seeds": [0, 1]},
    "decay": {"modes": ["l2", "decoupled"], "weight_decay": "1e-5..1e-1:6"},
}


def main() -> None:
    """Run both backends and print the figures."""
    cfg = validate(CFG)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = run_sweep(cfg, Path(tmp) / "local", max_batch=4)
        t_local = time.perf_counter() - t0
        ex = RayExecutor(local_cpus=2, temp_dir=str(Path(tmp) / "rt"))
        t0 = time.perf_counter()
        ex._init()
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = run_sweep(cfg, Path(tmp) / "ray", max_batch=4, executor=ex)
        t_ray = time.perf_counter() - t0
        ex.shutdown()
    same = all(
        abs(a.final["test_loss"] - b.final["test_loss"]) <= 1e-5 * abs(a.final["test_loss"])
        for a, b in zip(local.runs, remote.runs, strict=True)
    )
    n = len(local.runs)
    print(f"# bench_ray: {n} configurations, batches of 4, 100 epochs, digits MLP 64-32, Adam")
    print(f"local backend: {t_local:6.2f} s")
    print(f"ray backend:   {t_ray:6.2f} s (+ {t_start:.2f} s to start the local runtime)")
    print(
        f"ray / local: {t_ray / t_local:.2f}x without start-up, "
        f"{(t_ray + t_start) / t_local:.2f}x with it; same results (<= 1e-5): {same}"
    )


if __name__ == "__main__":
    main()
