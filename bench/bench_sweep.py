"""Benchmark: a batched sweep against the same configurations as sequential plain loops.

    .venv/bin/python bench/bench_sweep.py [--only d2l|digits|article] [--epochs-scale 1.0]
                                          [--repeat 3]

Three workloads, each timed in this one process against its baseline (plain PyTorch loops,
one configuration after another: nn.Module, torch.optim.SGD/Adam, weight_decay=wd):

| workload | configurations | goal |
| d2l (d = 200, 20 rows, linear, SGD)        | 64 weight decays | >= 50x model-steps/s |
| digits, MLP 64-32-10, Adam                 | 64 (wd x lr x seed) | >= 5x |
| the article's model and data, full batch SGD | 8 weight decays | >= 2x |

Both sides train full batch for the same number of steps; the engine also records the
weight norm every epoch and evaluates every 10 epochs (the baseline does neither), so the
ratio is conservative. Each side is timed ``--repeat`` times, the rounds interleaved, and its
minimum is kept (this machine is noisy; the same statistic for both sides).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from wdlab import data as D
from wdlab.models import ModelSpec
from wdlab.pipelines import seed_init
from wdlab.records import RunConfig
from wdlab.trainer import import_optimizer_runtime, train


def plain_loops(make, X, y, loss_fn, configs, epochs, optimizer):
    """The baseline: each configuration alone, the usual PyTorch way."""
    t0 = time.perf_counter()
    for c in configs:
        model = make(c.seed)
        opt = optimizer(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        for _ in range(epochs):
            loss = loss_fn(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def engine_run(spec, data, configs, epochs, **kw):
    t0 = time.perf_counter()
    runs = train(spec, data, configs, epochs=epochs, eval_every=10, device="cpu", **kw)
    return time.perf_counter() - t0, runs[0].engine


def best_of(repeat, plain, engine):
    """Interleaved rounds of (plain, engine); the minimum time of each side."""
    t_plain, t_engine, note = math.inf, math.inf, ""
    for _ in range(repeat):
        t_plain = min(t_plain, plain())
        t, note = engine()
        t_engine = min(t_engine, t)
    return t_plain, t_engine, note


def report(name, configs, epochs, t_plain, t_engine, note, goal):
    steps = len(configs) * epochs
    ratio = t_plain / t_engine
    print(
        f"{name:<8} {len(configs):>3} configs x {epochs:>4} steps: plain loops "
        f"{steps / t_plain:>10,.0f} model-steps/s ({t_plain:6.2f} s), wdlab "
        f"{steps / t_engine:>10,.0f} ({t_engine:6.2f} s): {ratio:6.1f}x  (goal >= {goal}x)"
    )
    print(f"         engine: {note}")


def bench_d2l(scale: float, repeat: int) -> None:
    data = D.d2l()
    epochs = max(10, int(400 * scale))
    wds = [*torch.logspace(-4, 1, 63).tolist(), 0.0]
    configs = [RunConfig(mode="coupled", weight_decay=w, lr=0.003, optimizer="sgd") for w in wds]

    def make(seed):
        torch.manual_seed(seed)
        return nn.Linear(200, 1)

    def mse(out, y):
        return F.mse_loss(out.squeeze(-1), y)

    X, Y = data.X_train, data.y_train
    t_plain, t_engine, note = best_of(
        repeat,
        lambda: plain_loops(make, X, Y, mse, configs, epochs, torch.optim.SGD),
        lambda: engine_run(ModelSpec("linear", in_dim=200), data, configs, epochs),
    )
    report("d2l", configs, epochs, t_plain, t_engine, note, 50)


def bench_digits(scale: float, repeat: int) -> None:
    data = D.load("digits")
    epochs = max(10, int(200 * scale))
    configs = [
        RunConfig(mode="coupled", weight_decay=w, lr=lr, optimizer="adam", seed=s)
        for w in (0.0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
        for lr in (1e-3, 3e-3)
        for s in range(4)
    ]
    spec = ModelSpec("mlp", in_dim=64, hidden=(32,), out_dim=10, activation="relu")

    def make(seed):
        torch.manual_seed(seed)
        return spec.build()

    t_plain, t_engine, note = best_of(
        repeat,
        lambda: plain_loops(
            make, data.X_train, data.y_train, F.cross_entropy, configs, epochs, torch.optim.Adam
        ),
        lambda: engine_run(spec, data, configs, epochs),
    )
    report("digits", configs, epochs, t_plain, t_engine, note, 5)


def bench_article(scale: float, repeat: int) -> None:
    data = D.seed_noise(1000, 0)
    epochs = max(10, int(200 * scale))
    configs = [
        RunConfig(mode="coupled", weight_decay=w, lr=0.1, optimizer="sgd")
        for w in (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
    ]
    init = seed_init(1000)

    def bce(out, y):
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), y)

    X, Y = data.X_train, data.y_train
    t_plain, t_engine, note = best_of(
        repeat,
        lambda: plain_loops(init, X, Y, bce, configs, epochs, torch.optim.SGD),
        lambda: engine_run(ModelSpec("seed-mlp", in_dim=1000), data, configs, epochs, init=init),
    )
    report("article", configs, epochs, t_plain, t_engine, note, 2)


def main() -> None:
    """Run the chosen workloads and print their ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["d2l", "digits", "article"])
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each side keeps its minimum")
    args = ap.parse_args()
    import_optimizer_runtime()  # torch.optim's one-time import (~1 s) in neither side's time
    print(
        "# bench_sweep: batched engine vs sequential plain PyTorch loops (same process, "
        f"min of {args.repeat} interleaved rounds)"
    )
    for name, fn in (("d2l", bench_d2l), ("digits", bench_digits), ("article", bench_article)):
        if args.only in (None, name):
            fn(args.epochs_scale, args.repeat)


if __name__ == "__main__":
    main()
