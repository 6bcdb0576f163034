"""Benchmark: a weight-decay sweep of a CNN with BatchNorm on mnist1d, three ways, in one run.

    .venv/bin/python bench/bench_own_model.py [--epochs 2] [--repeat 2] [--device cpu|cuda]
    .venv/bin/python bench/bench_own_model.py --profile     # where wdlab's time goes, by aten op

32 configurations (4 weight decays × 2 learning rates × 4 seeds), AdamW, mini-batches of 128,
the built-in CNN (channels 16-32, BatchNorm) on mnist1d (3,200 training rows: 25 steps per
epoch). Every side does the work wdlab does by default: it evaluates the training, validation
and test splits (in eval mode) after the first epoch and after the last:

1. **plain loops**: 32 sequential PyTorch loops, each with its own ``DataLoader`` and
   ``torch.optim.AdamW(weight_decay=wd)``, what a user writes by hand;
2. **torch.func recipe**: PyTorch's model-ensembling recipe (``stack_module_state`` +
   ``functional_call`` + ``vmap(grad(loss))``) with a vectorised AdamW written out on the
   stacked tensors, all 32 at once on one shared stream of mini-batches;
3. **wdlab**: ``wdlab.trainer.train`` (mode ``decoupled`` = AdamW's decay), all 32 at once.

Each side is timed ``--repeat`` times, the rounds interleaved, and keeps its minimum (the
machine is noisy; the same statistic for every side). Prints model-steps/s (optimizer steps of
one configuration per second) and the ratios (goals: wdlab >= 4x the plain loops, and at least
the recipe's speed).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state
from torch.utils.data import DataLoader, TensorDataset

from wdlab.data import load
from wdlab.models import ModelSpec
from wdlab.records import RunConfig
from wdlab.trainer import import_optimizer_runtime, train

WDS, LRS, SEEDS, BATCH = (0.0, 1e-3, 1e-2, 1e-1), (1e-3, 3e-3), (0, 1, 2, 3), 128


def make(spec: ModelSpec, seed: int) -> torch.nn.Module:
    """A configuration's initial CNN, as wdlab builds it (``manual_seed(seed)``, then build)."""
    torch.manual_seed(seed)
    return spec.build()


SPLITS = ("train", "val", "test")


def due(epoch, epochs):
    """Whether an epoch ends with an evaluation: the first and the last, as wdlab's default."""
    return epoch in (0, epochs - 1)


def plain_loops(spec, data, configs, epochs, device):
    """The baseline: each configuration alone, the usual PyTorch way."""
    X, y = data.X_train.to(device), data.y_train.to(device)
    t0 = time.perf_counter()
    for c in configs:
        model = make(spec, c.seed).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        g = torch.Generator().manual_seed(0)
        loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True, generator=g)
        for epoch in range(epochs):
            model.train()
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if due(epoch, epochs):
                model.eval()
                with torch.no_grad():
                    for split in SPLITS:
                        Xs, ys = data.splits()[split]
                        F.cross_entropy(model(Xs.to(device)), ys.to(device)).item()
    return time.perf_counter() - t0


def recipe(spec, data, configs, epochs, device):
    """PyTorch's model-ensembling recipe with a vectorised AdamW on the stacked tensors."""
    X, y = data.X_train.to(device), data.y_train.to(device)
    t0 = time.perf_counter()
    models = [make(spec, c.seed).to(device) for c in configs]
    params, buffers = stack_module_state(models)
    params = {n: p.detach() for n, p in params.items()}  # torch.func.grad needs no leaves
    base = copy.deepcopy(models[0]).to("meta")
    K = len(configs)

    def rows(values):
        return torch.tensor(values, device=device)

    lr, wd = rows([c.lr for c in configs]), rows([c.weight_decay for c in configs])

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    def loss_fn(p, b, xb, yb):
        return F.cross_entropy(forward(p, b, xb), yb)

    grads_of = torch.vmap(grad(loss_fn), in_dims=(0, 0, None, None), randomness="different")
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        base.train()
        perm = torch.randperm(len(y), generator=g).to(device)
        for i in range(0, len(y), BATCH):
            idx = perm[i : i + BATCH]
            grads = grads_of(params, buffers, X[idx], y[idx])
            step += 1
            for n, p in params.items():  # AdamW, vectorised over the configurations
                shape = (K,) + (1,) * (p.dim() - 1)
                lr_k, gr = lr.view(shape), grads[n]
                p.mul_(1 - lr_k * wd.view(shape))
                m[n].mul_(b1).add_(gr, alpha=1 - b1)
                v[n].mul_(b2).addcmul_(gr, gr, value=1 - b2)
                denom = (v[n] / (1 - b2**step)).sqrt_().add_(eps)
                p.sub_(lr_k / (1 - b1**step) * m[n] / denom)
        if due(epoch, epochs):
            base.eval()
            with torch.no_grad():
                for split in SPLITS:
                    Xs, ys = data.splits()[split]
                    out = torch.vmap(forward, (0, 0, None))(params, buffers, Xs.to(device))
                    F.cross_entropy(out.flatten(0, 1), ys.to(device).repeat(K)).item()
    return time.perf_counter() - t0


def engine(spec, data, configs, epochs, device):
    """wdlab: every configuration at once."""
    t0 = time.perf_counter()
    # eval_every = epochs: evaluated after the first and the last epoch
    runs = train(
        spec, data, configs, epochs=epochs, eval_every=epochs, batch_size=BATCH, device=device
    )
    return time.perf_counter() - t0, runs[0].engine


def profile_engine(spec, data, configs, epochs, device) -> None:
    """wdlab's side under torch.profiler (after one warm-up run): each aten op's share."""
    from torch.profiler import ProfilerActivity, profile

    engine(spec, data, configs, 1, device)
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        t, _ = engine(spec, data, configs, epochs, device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"# wdlab, {len(configs)} configs, {epochs} epochs, {t:.2f} s under the profiler")
    print(prof.key_averages().table(sort_by=key, row_limit=15))


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profile", action="store_true", help="profile wdlab's side only")
    args = ap.parse_args()
    import_optimizer_runtime()  # torch.optim's one-time import, outside every clock
    data = load("mnist1d")
    spec = ModelSpec(
        "cnn",
        in_dim=data.in_dim,
        out_dim=10,
        in_shape=data.in_shape,
        hidden=(16, 32),
        batchnorm=True,
    )
    configs = [
        RunConfig("decoupled", wd, lr, "adamw", seed=s) for wd in WDS for lr in LRS for s in SEEDS
    ]
    if args.profile:
        profile_engine(spec, data, configs, args.epochs, args.device)
        return
    steps = len(configs) * args.epochs * math.ceil(len(data.y_train) / BATCH)
    best = {"plain loops": math.inf, "torch.func recipe": math.inf, "wdlab": math.inf}
    note = ""
    for _ in range(args.repeat):
        best["plain loops"] = min(
            best["plain loops"], plain_loops(spec, data, configs, args.epochs, args.device)
        )
        best["torch.func recipe"] = min(
            best["torch.func recipe"], recipe(spec, data, configs, args.epochs, args.device)
        )
        t, note = engine(spec, data, configs, args.epochs, args.device)
        best["wdlab"] = min(best["wdlab"], t)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"# bench_own_model: CNN+BatchNorm on mnist1d, {len(configs)} configs x "
        f"{steps // len(configs)} steps, AdamW, batch {BATCH}, {name}, min of {args.repeat}"
    )
    for label, t in best.items():
        print(f"{label:<18} {t:8.2f} s  {steps / t:10,.0f} model-steps/s")
    print(f"wdlab / plain loops:       {best['plain loops'] / best['wdlab']:.2f}x  (goal >= 4x)")
    print(
        f"wdlab / torch.func recipe: {best['torch.func recipe'] / best['wdlab']:.2f}x  (goal >= 1x)"
    )
    print(f"engine: {note}")


if __name__ == "__main__":
    main()
