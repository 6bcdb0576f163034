"""Benchmark: what the CPU kernels of one training step leave to gain, for the ResNet-style CNN
of ``bench/bench_pipeline.py`` (batch 128, 3×32×32, AdamW), in one run.

    .venv/bin/python bench/bench_kernels.py          # about 15 s on 2 cores

wdlab trains a convolutional model's configurations one after another on the CPU (vmap's
grouped convolutions are slower there; ``wdlab.engines.torchfunc``), so once the data are read
once for all of them, a sweep's speed is this step's. Two levers were measured against it:

1. **channels_last**: the same step with the input in ``torch.channels_last`` (oneDNN's NHWC
   kernels; the weights stay as they are). Not bitwise equal to the NCHW step, which wdlab
   promises for a configuration alone against a plain loop.
2. **configurations side by side**: two configurations stepping at once in two threads of one
   thread each, against one after another with torch's two threads. Also not bitwise: the
   weight gradient's reduction is split another way.

Prints ms per model-step of each and the ratios against the plain NCHW step with torch's
threads (the baseline, as a user's loop runs it). wdlab offers both as opt-ins, off by default
for that reason: ``channels_last=True`` and ``parallel=2`` (``bench/bench_pipeline.py`` measures
them in a sweep).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import resnet


def stepper(channels_last: bool, seed: int = 0) -> Callable[[], None]:
    """One AdamW step of the ResNet on a fixed batch; the input in channels_last or not."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = resnet(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: oneDNN's primitives made once
    return step


def per_step(steps: list[Callable[[], None]], n: int, threads: bool) -> float:
    """Seconds per model-step: ``steps`` one after another, or each in a thread of its own."""
    t0 = time.perf_counter()
    if threads:
        workers = [threading.Thread(target=lambda s=s: [s() for _ in range(n)]) for s in steps]
        [w.start() for w in workers]
        [w.join() for w in workers]
    else:
        for _ in range(n):
            for s in steps:
                s()
    return (time.perf_counter() - t0) / (n * len(steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="steps per configuration and side")
    a = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads")
    base = per_step([stepper(False, 0), stepper(False, 1)], a.steps, threads=False)
    cl = per_step([stepper(True, 0), stepper(True, 1)], a.steps, threads=False)
    torch.set_num_threads(1)
    side = per_step([stepper(False, 0), stepper(False, 1)], a.steps, threads=True)
    both = per_step([stepper(True, 0), stepper(True, 1)], a.steps, threads=True)
    torch.set_num_threads(threads)
    print(f"  NCHW, one after another ({threads} threads): {base * 1e3:6.1f} ms per model-step")
    for name, t in [
        ("channels_last input, one after another", cl),
        ("NCHW, two side by side (1 thread each)", side),
        ("channels_last, two side by side", both),
    ]:
        print(f"  {name + ':':<44}{t * 1e3:6.1f} ms per model-step, {base / t:.2f}x")


if __name__ == "__main__":
    main()
