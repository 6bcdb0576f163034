"""Benchmark: one training step of K configurations under ``torch.vmap`` against the same K
one after another (the module's own kernels on each configuration's row), on the CPU: why
wdlab runs a model with convolutions one configuration after another there
(:func:`wdlab.engines.torchfunc.loops_faster`) and vmaps the others.

    .venv/bin/python bench/bench_vmap_vs_loops.py [--k 16] [--batch 128] [--repeat 5]

Each model: K copies stacked with ``torch.func.stack_module_state``; a step is the forward of
all K on one shared batch, the cross-entropy summed over them, and the backward. Both sides
warm up once, then each is timed ``--repeat`` times, interleaved; the mean of each is printed
with the ratio loops ÷ vmap (above 1: vmap is the faster).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import resnet  # the 2-block ResNet of bench_pipeline.py


def models() -> dict[str, tuple]:
    """name → (factory, input shape of one example)."""
    return {
        "MLP 784-256-256-10": (lambda: nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        ), (784,)),
        "MLP 64-64-10, BatchNorm": (lambda: nn.Sequential(
            nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)
        ), (64,)),
        "CNN, one conv (3-8)": (lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, 10)), (3, 32, 32)),
        "CNN, two convs (16) + BatchNorm": (lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(16, 10)), (3, 32, 32)),
        "ResNet, 2 blocks (bench_pipeline.py)": (lambda: resnet(0), (3, 32, 32)),
    }  # fmt: skip


def steps(make, shape, k: int, n: int):
    """(vmap step, loops step) over K stacked copies of ``make()``."""
    torch.manual_seed(0)
    copies = [make() for _ in range(k)]
    params, buffers = stack_module_state(copies)
    params = {name: t.detach().requires_grad_() for name, t in params.items()}
    base = copy.deepcopy(copies[0]).to("meta")
    x, y = torch.randn(n, *shape), torch.randint(0, 10, (n,))

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = torch.vmap(one, in_dims=(0, 0, None), randomness="same")

    def vmap_step():
        out = batched(params, buffers, x)
        F.cross_entropy(out.reshape(k * n, -1), y.repeat(k)).backward()

    def loops_step():
        for i in range(k):
            pi = {name: t[i] for name, t in params.items()}
            bi = {name: t[i] for name, t in buffers.items()}
            F.cross_entropy(one(pi, bi, x), y).backward()

    return vmap_step, loops_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=16, help="configurations")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, "
          f"K = {a.k}, batch {a.batch}; seconds per step")  # fmt: skip
    print(f"{'model':<38} {'vmap':>8} {'loops':>8}  loops ÷ vmap")
    for name, (make, shape) in models().items():
        v, lo = steps(make, shape, a.k, a.batch)
        v(), lo()  # warm-up
        tv = tl = 0.0
        for _ in range(a.repeat):
            t = time.perf_counter()
            v()
            tv += time.perf_counter() - t
            t = time.perf_counter()
            lo()
            tl += time.perf_counter() - t
        tv, tl = tv / a.repeat, tl / a.repeat
        print(f"{name:<38} {tv:8.4f} {tl:8.4f}  {tl / tv:5.2f}")


if __name__ == "__main__":
    main()
