"""Benchmark: `--precision bf16` (CPU autocast) against fp32 on the full-size demo.

    .venv/bin/python bench/bench_precision.py [--epochs 1000]

Runs the article's three regimes in fp32 on each engine path (the exact Gram fast path, the
standard path) and in bf16 (which runs on the standard path: the fast path is exact in float32
only), in this process; prints bf16's time against each fp32 run (the fast path is what fp32
takes by default) and the largest relative deviation of bf16's final train and test losses
from fp32's.
"""

from __future__ import annotations

import argparse

from wdlab.pipelines import DemoSettings, run_demo


def main() -> None:
    """Run and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1000)
    args = ap.parse_args()
    s = DemoSettings(epochs=args.epochs)
    print(f"# bench_precision: demo, {args.epochs + 1} steps x 3 regimes, bf16 vs fp32")
    bf16 = run_demo(s, device="cpu", precision="bf16")
    print(f"bf16 ({bf16.runs[0].engine}): {bf16.seconds:.2f} s")
    for label, fast in (("fast path", None), ("standard path", False)):
        fp32 = run_demo(s, device="cpu", fast_path=fast)
        dev = max(
            abs(b.final[k] - f.final[k]) / abs(f.final[k])
            for f, b in zip(fp32.runs, bf16.runs, strict=True)
            for k in ("train_loss", "test_loss")
        )
        print(
            f"fp32 {label:<13} {fp32.seconds:6.2f} s: bf16 / fp32 time ratio "
            f"{bf16.seconds / fp32.seconds:.3f}; max relative deviation of final losses "
            f"{dev:.2e}; manual == builtin bitwise in bf16: {bf16.check.identical}"
        )
        for f, b in zip(fp32.runs, bf16.runs, strict=True):
            print(
                f"    {f.config.label:<8} test loss fp32 {f.final['test_loss']:.5f}  "
                f"bf16 {b.final['test_loss']:.5f}"
            )


if __name__ == "__main__":
    main()
