"""Benchmark: an Optuna search through wdlab.optuna (K trials trained as one batch) against
Optuna alone (one plain PyTorch training per trial), same sampler, seed and pruner.

    .venv/bin/python bench/bench_optuna.py [--trials 64] [--batch 16] [--epochs 20] [--small]

The task: scikit-learn's digits (wdlab's split), an MLP 64-64-10, AdamW with decoupled decay
on the weights only (biases not decayed, on both sides), mini-batches of 128, lr in
1e-4..1e-1 and weight decay in 1e-6..1 (both log), TPE (seed 0) with the median pruner; each
trial reports its validation accuracy after every epoch and is told its last one.

Both searches propose their own trials (a batch of K asked at once is not K asked one by one),
so their best scores differ a little: the bench takes the lower of the two best validation
accuracies as the target, and prints the wall time each search took until one of its trials
first reached it (counted from its start to that trial's completion), the total wall times,
and the ratio. One-time costs (torch.optim's first import, the first kernels) are paid by a
warm-up before either is timed. ``--small`` checks that it runs (8 trials of 3 epochs).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import optuna
import torch
from optuna.distributions import FloatDistribution
from torch import nn

import wdlab.optuna as wo
from wdlab.data import load
from wdlab.trainer import import_optimizer_runtime

SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "weight_decay": FloatDistribution(1e-6, 1.0, log=True),
}


def make_study() -> optuna.Study:
    return optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
    )


def plain_objective(ds, epochs: int, batch_size: int):
    """One plain PyTorch training per trial, the way an Optuna user writes it."""
    X, y = ds.X_train.float(), ds.y_train
    Xv, yv = ds.X_val.float(), ds.y_val

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1.0, log=True)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(ds.in_dim, 64), nn.ReLU(), nn.Linear(64, ds.out_dim))
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=lr)
        shuffle = torch.Generator().manual_seed(0)
        acc = 0.0
        for epoch in range(epochs):
            perm = torch.randperm(len(y), generator=shuffle)
            for i in range(0, len(y), batch_size):
                idx = perm[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = (model(Xv).argmax(1) == yv).float().mean().item()
            trial.report(acc, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    return objective


def warm_up(ds) -> None:
    """What either side pays once per process (torch.optim's first import of torch._dynamo,
    the first kernels), paid before either is timed."""
    import_optimizer_runtime()
    warm = optuna.create_study(direction="maximize")
    warm.optimize(plain_objective(ds, 1, 128), n_trials=1)
    wo.optimize(optuna.create_study(direction="maximize"), "mlp", ds, SPACE, n_trials=2, batch=2,
                epochs=1, device="cpu")  # fmt: skip


def completions(study: optuna.Study, t0) -> list[tuple[float, float]]:
    """(seconds from the search's start, value) of each complete trial, in time order."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(((t.datetime_complete - t0).total_seconds(), t.value) for t in done)


def time_to(points: list[tuple[float, float]], target: float) -> float:
    return next(s for s, v in points if v >= target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="8 trials of 3 epochs")
    args = parser.parse_args()
    if args.small:
        args.trials, args.batch, args.epochs = 8, 4, 3
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = load("digits")
    print(
        f"digits, MLP 64-64-10, AdamW, {args.trials} trials x {args.epochs} epochs, TPE (seed 0) "
        f"+ median pruner; torch threads: {torch.get_num_threads()}"
    )

    warm_up(ds)
    plain = make_study()
    t0, start = time.perf_counter(), datetime.now()
    plain.optimize(plain_objective(ds, args.epochs, 128), n_trials=args.trials)
    t_plain = time.perf_counter() - t0
    p_points = completions(plain, start)

    ours = make_study()
    t0, start = time.perf_counter(), datetime.now()
    wo.optimize(
        ours, "mlp", ds, SPACE, n_trials=args.trials, batch=args.batch, epochs=args.epochs,
        batch_size=128, optimizer="adamw", mode="decoupled", device="cpu",
    )  # fmt: skip
    t_ours = time.perf_counter() - t0
    w_points = completions(ours, start)

    target = min(plain.best_value, ours.best_value)
    tp, tw = time_to(p_points, target), time_to(w_points, target)
    print(f"Optuna alone : best val acc {plain.best_value:.4f}, total {t_plain:7.2f} s")
    k = args.batch
    print(f"wdlab.optuna : best val acc {ours.best_value:.4f}, total {t_ours:7.2f} s (K = {k})")
    print(f"time to val acc >= {target:.4f}: Optuna alone {tp:.2f} s, wdlab.optuna {tw:.2f} s")
    print(f"ratio: {tp / tw:.2f}x to the same best score, {t_plain / t_ours:.2f}x in total")


if __name__ == "__main__":
    main()
