"""Benchmark: successive halving inside the batch (``prune``) against the full grid, and against
Optuna (TPE with its SuccessiveHalvingPruner, and with its HyperbandPruner) on the same search
space, each Optuna trial one plain PyTorch training.

    .venv/bin/python bench/bench_halving.py [--only d2l|digits|mnist1d|teacher] [--seeds 3]
                                            [--small] [--tpe-seeds 5] [--device cpu|cuda]

Four tasks, each a grid of at least 32 configurations (weight decay × lr × seeds, wd = 0
among them), 3 seeds by default (the fewest wdlab's "better than wd = 0" verdict accepts,
and the fewest with which the one-standard-error rule's paired SE has more than one degree of
freedom; ``--seeds 2`` gives the grids of the first measurements):

| task | model | optimizer, mode | grid (3 seeds) |
| d2l (d = 200, 20 rows, regression) | linear | SGD, coupled, full batch | 9 wd × 3 lr: 81 |
| digits | MLP 64-64-10 | Adam, decoupled, batches of 128 | 7 wd × 3 lr: 63 |
| mnist1d | the built-in CNN | Adam, decoupled, batches of 128 | 8 wd × 2 lr: 48 |
| teacher (ridge) | linear | SGD, coupled, full batch | 8 wd × 2 lr: 48 |

The learning rates are ones at which the runs converge within the epochs. Where they do not
(the teacher task at lr 0.03: its RMSE still falls 15% between epochs 81 and 243), every rung
ranks how fast a run fits rather than where it ends, the least decay wins each rung, and
successive halving stops the weight decay the full grid would choose: measured, 4x less
compute and a choice 1.6% worse on validation than the full grid's.

For each, in this one process:

* **the full grid and the pruned sweep** (η = 3, rungs chosen from the epochs), each a
  ``wdlab.sweep`` into its own study: the compute used (configuration-epochs and wall time),
  the choice (the (mode, lr, wd) whose selection row has the best validation mean), whether the
  pruned sweep's choice is the full grid's or lies within one standard error of it on
  validation (the paired SE of their seed-by-seed differences, in the full grid), and its test
  score;
* **Optuna**: TPE over the same space, one search per TPE seed (0-4, ``--tpe-seeds``: one seed's
  search is one draw of a random time, and an early lucky trial is luck) (lr and wd log-uniform
  over the grid's ranges, the grid's mode), ``n_trials`` = the grid's configurations, each trial
  one plain PyTorch training of the same model (seed 0, the same optimizer, decay on the weights
  of dimension >= 2 as wdlab's default rule) reporting its validation score every epoch, pruned
  by ``SuccessiveHalvingPruner(reduction_factor=3)`` or ``HyperbandPruner(reduction_factor=3)``:
  the wall time until a trial first reaches the full grid's best validation score (the best
  cell's mean over seeds), and the median of that time over the TPE seeds (a search that never
  reaches it counts as never: the median is then a bound, the median search's whole time). A
  trial of one seed is compared with a mean over seeds, and the best of many one-seed scores is
  biased upwards (the winner's curse), so a third search has each trial train the grid's seeds
  and report their mean, as a cell does (TPE + SuccessiveHalvingPruner, "seeds" in the output);
* the ratios: full grid ÷ pruned (configuration-epochs, wall time), Optuna's time to the
  target ÷ the pruned sweep's wall time.

One-time costs (torch.optim's first import, the first kernels) are paid by a warm-up before
anything is timed. Timings on a shared or loaded machine mean little: measure on a quiet one.
``--small`` checks that everything runs (a few epochs, a small grid).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F

import wdlab
from wdlab.data import load
from wdlab.models import ModelSpec
from wdlab.selection import run_scores, selection_criterion
from wdlab.stats import se_diff
from wdlab.trainer import import_optimizer_runtime


@dataclass(frozen=True)
class Task:
    """One benchmark task: the data, the model, the optimizer and mode, the grid, the epochs."""

    name: str
    source: str
    model: str
    optimizer: str
    mode: str
    lrs: tuple[float, ...]
    wds: tuple[float, ...]
    seeds: int
    epochs: int
    batch_size: int | None
    hidden: tuple[int, ...] = (64,)
    small: dict[str, Any] = field(default_factory=dict)

    def configurations(self) -> int:
        return len(self.lrs) * len(self.wds) * self.seeds


def _log(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}") for i in range(n))


TASKS = {
    t.name: t
    for t in (
        Task("d2l", "d2l", "linear", "sgd", "coupled", (0.003, 0.01, 0.03),
             (0.0, *_log(1e-3, 10, 8)), 3, 243, None),
        Task("digits", "digits", "mlp", "adam", "decoupled", (1e-3, 3e-3, 1e-2),
             (0.0, *_log(1e-5, 1.0, 6)), 3, 27, 128),
        Task("mnist1d", "mnist1d", "cnn", "adam", "decoupled", (3e-3, 1e-2),
             (0.0, *_log(1e-4, 1.0, 7)), 3, 27, 128, hidden=(16,)),
        Task("teacher", "teacher", "linear", "sgd", "coupled", (0.1, 0.3),
             (0.0, *_log(1e-4, 1.0, 7)), 3, 243, None),
    )
}  # fmt: skip
SMALL = {"epochs": 9, "seeds": 2}  # --small: every task at 9 epochs (rungs after 1 and 3)


# -- the sweeps -------------------------------------------------------------------------------


def spec_of(task: Task, ds: Any) -> ModelSpec:
    """The task's model, sized to its data (the same for the sweeps and the plain loops)."""
    shape = ds.in_shape if task.model == "cnn" else ()
    return ModelSpec(task.model, in_dim=ds.in_dim, out_dim=ds.out_dim, hidden=task.hidden,
                     in_shape=shape)  # fmt: skip


def sweep(task: Task, prune: bool, device: str, out: Path) -> tuple[Any, float]:
    """One ``wdlab.sweep`` of the task's grid into ``out``; (result, wall seconds)."""
    ds = load(task.source)
    t0 = time.perf_counter()
    res = wdlab.sweep(
        spec_of(task, ds),
        ds,
        optimizer=task.optimizer,
        lr=list(task.lrs),
        weight_decay=list(task.wds),
        modes=[task.mode],
        seeds=task.seeds,
        epochs=task.epochs,
        batch_size=task.batch_size,
        eval_every=1,
        device=device,
        prune=prune,
        out=out,
        checkpoint="off",
    )
    return res, time.perf_counter() - t0


def choice(res: Any) -> dict[str, Any]:
    """The selection row with the best validation mean: the (mode, lr, wd) the sweep chose."""
    rows = [s for s in res.selection if math.isfinite(s["val"])]
    higher = rows[0]["higher"]
    return max(rows, key=lambda s: s["val"] if higher else -s["val"])


def cell_scores(res: Any, row: dict[str, Any]) -> dict[int, tuple]:
    """The full grid's validation scores of a cell, by seed."""
    c = selection_criterion(res.selection)
    return {
        r.config.seed: run_scores(r, c)
        for r in res.runs
        if (r.config.mode, r.config.lr, r.config.weight_decay)
        == (row["mode"], row["lr"], row["weight_decay"])
    }


def same_or_within_se(full: Any, a: dict[str, Any], b: dict[str, Any]) -> str:
    """Whether the pruned sweep's choice ``b`` is the full grid's ``a``, or within one (paired)
    standard error of it on validation, in the full grid's runs."""
    key = ("mode", "lr", "weight_decay")
    if all(a[k] == b[k] for k in key):
        return "same"
    sa, sb = cell_scores(full, a), cell_scores(full, b)
    mean = lambda s: statistics.fmean(v[0] for v in s.values())  # noqa: E731
    se = se_diff(sa, sb)
    if math.isfinite(se) and abs(mean(sa) - mean(sb)) <= se:
        return f"within 1 SE ({abs(mean(sa) - mean(sb)):.3g} <= {se:.3g})"
    return f"different (Δ {abs(mean(sa) - mean(sb)):.3g}, SE {se:.3g})"


# -- Optuna: one plain PyTorch training per trial ---------------------------------------------


def plain_objective(task: Task, ds: Any, device: str, seeds: int = 1):
    """One plain PyTorch training per trial, the way an Optuna user writes it: the task's
    model (seed 0), optimizer and decay (on weights of dimension >= 2), its validation score
    reported every epoch. ``seeds`` > 1: the trial trains seeds 0.. side by side, an epoch of
    each in turn, and reports the mean of their scores."""
    spec = spec_of(task, ds)
    dev = torch.device(device)
    X, y = ds.X_train.to(dev), ds.y_train.to(dev)
    Xv, yv = ds.X_val.to(dev), ds.y_val.to(dev)
    if task.model != "cnn":
        X, Xv = X.flatten(1), Xv.flatten(1)
    regression = ds.task == "regression"
    loss_fn = F.mse_loss if regression else F.cross_entropy
    lo, hi = min(task.lrs), max(task.lrs)
    wd_lo, wd_hi = min(w for w in task.wds if w > 0), max(task.wds)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", lo, hi, log=True)
        wd = trial.suggest_float("weight_decay", wd_lo, wd_hi, log=True)
        runs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = spec.build(seed).to(dev)
            decay = [p for p in model.parameters() if p.dim() >= 2]
            rest = [p for p in model.parameters() if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
            cls = torch.optim.AdamW if task.mode == "decoupled" else torch.optim.SGD
            runs.append((model, cls(groups, lr=lr), torch.Generator().manual_seed(seed)))
        score = math.nan
        for epoch in range(task.epochs):
            scores = [train_epoch(*run) for run in runs]
            score = statistics.fmean(scores)
            if not math.isfinite(score):
                raise optuna.TrialPruned()  # diverged: no score to report
            trial.report(score, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    def train_epoch(model: torch.nn.Module, opt: Any, shuffle: torch.Generator) -> float:
        model.train()
        order = torch.randperm(len(y), generator=shuffle).to(dev)
        size = task.batch_size or len(y)
        for i in range(0, len(y), size):
            idx = order[i : i + size]
            out = model(X[idx])
            loss = loss_fn(out.squeeze(-1) if regression else out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(Xv)
            return (
                F.mse_loss(out.squeeze(-1), yv).sqrt().item()
                if regression
                else (out.argmax(1) == yv).float().mean().item()
            )

    return objective


def optuna_search(
    task: Task, ds: Any, pruner: Any, target: float, higher: bool, device: str, seeds: int = 1,
    sampler_seed: int = 0,
):  # fmt: skip
    """TPE (seed ``sampler_seed``) with ``pruner``, the grid's number of configurations as
    trials (with ``seeds`` > 1, each trial the grid's seeds: its number of cells): (seconds to
    the target or None, the best value, total seconds)."""
    study = optuna.create_study(
        direction="maximize" if higher else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=pruner,
    )
    start, t0 = datetime.now(), time.perf_counter()
    trials = task.configurations() // seeds
    study.optimize(plain_objective(task, ds, device, seeds), n_trials=trials)
    total = time.perf_counter() - t0
    done = sorted(
        ((t.datetime_complete - start).total_seconds(), t.value)
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    )
    reached = [s for s, v in done if (v >= target if higher else v <= target)]
    best = study.best_value if done else math.nan
    return (reached[0] if reached else None), best, total


def optuna_searches(
    task: Task, ds: Any, make_pruner: Any, target: float, higher: bool, device: str,
    seeds: int, sampler_seeds: int,
) -> tuple[list[float], list[float]]:  # fmt: skip
    """The search of :func:`optuna_search` with TPE seeds 0 .. ``sampler_seeds`` - 1 (a fresh
    pruner each): (seconds to the target, inf where never reached; total seconds), by seed."""
    to_target, totals = [], []
    for s in range(sampler_seeds):
        reached, _, total = optuna_search(
            task, ds, make_pruner(), target, higher, device, seeds, sampler_seed=s
        )
        to_target.append(math.inf if reached is None else reached)
        totals.append(total)
    return to_target, totals


def optuna_line(name: str, to_target: list[float], totals: list[float], t_pruned: float) -> str:
    """One search's line: how many of its TPE seeds reached the target, and the median time to
    it (a search that never reached it counts as never: the median is then a bound, >= the
    median total time, or "never" when most never reached it) against the pruned sweep's."""
    n, hit = len(to_target), sorted(to_target)
    reached = sum(math.isfinite(t) for t in hit)
    med = statistics.median(hit)
    times = ", ".join("never" if not math.isfinite(t) else f"{t:.2f}" for t in to_target)
    if math.isfinite(med):
        return (f"  Optuna TPE + {name}: reached the target in {reached} of {n} searches (TPE "
                f"seeds 0-{n - 1}; s: {times}); median {med:.2f} s: {med / t_pruned:.2f}x the "
                "pruned sweep's wall time")  # fmt: skip
    bound = statistics.median(totals)
    return (f"  Optuna TPE + {name}: reached the target in {reached} of {n} searches (TPE seeds "
            f"0-{n - 1}; s: {times}): median never, >= {bound / t_pruned:.2f}x the pruned "
            "sweep's wall time (the median search's whole time)")  # fmt: skip


# -- the report -------------------------------------------------------------------------------


def run_task(task: Task, device: str, root: Path, sampler_seeds: int = 5) -> None:
    ds = load(task.source)
    n = task.configurations()
    print(f"\n## {task.name}: {task.model} on {task.source}, {task.optimizer} {task.mode}, "
          f"{n} configurations ({len(task.wds)} wd × {len(task.lrs)} lr × {task.seeds} seeds), "
          f"{task.epochs} epochs")  # fmt: skip
    full, t_full = sweep(task, False, device, root / f"{task.name}-full")
    pruned, t_pruned = sweep(task, True, device, root / f"{task.name}-pruned")
    cf, cp = full.halving["compute"], pruned.halving["compute"]
    a, b = choice(full), choice(pruned)
    print(f"full grid  : {cf['configuration_epochs']:>7,} configuration-epochs, {t_full:8.2f} s; "
          f"choice {a['mode']} lr {a['lr']:g} wd {a['weight_decay']:g}: val {a['val']:.4f}, "
          f"test {a['test_mean']:.4f}")  # fmt: skip
    rungs = ", ".join(map(str, pruned.halving["rungs"]))
    print(f"pruned     : {cp['configuration_epochs']:>7,} configuration-epochs, {t_pruned:8.2f} s; "
          f"choice {b['mode']} lr {b['lr']:g} wd {b['weight_decay']:g}: val {b['val']:.4f}, "
          f"test {b['test_mean']:.4f} (rungs after {rungs} epochs; {pruned.counts.get('pruned', 0)}"
          f" of {n} runs pruned)")  # fmt: skip
    print(f"  compute: {cf['configuration_epochs'] / cp['configuration_epochs']:.2f}x fewer "
          f"configuration-epochs, {t_full / t_pruned:.2f}x the wall time (full ÷ pruned); choice: "
          f"{same_or_within_se(full, a, b)}")  # fmt: skip
    target, higher = a["val"], a["higher"]
    print(f"  Optuna's target: val {target:.4f}, the full grid's choice's (its mean over seeds)")
    sha = lambda: optuna.pruners.SuccessiveHalvingPruner(reduction_factor=3)  # noqa: E731
    hyperband = lambda: optuna.pruners.HyperbandPruner(  # noqa: E731
        max_resource=task.epochs, reduction_factor=3
    )
    for name, make_pruner, seeds in (
        ("SuccessiveHalvingPruner", sha, 1),
        ("HyperbandPruner", hyperband, 1),
        (f"SuccessiveHalvingPruner, trials of {task.seeds} seeds (their mean)", sha, task.seeds),
    ):
        to_target, totals = optuna_searches(
            task, ds, make_pruner, target, higher, device, seeds, sampler_seeds
        )
        print(optuna_line(name, to_target, totals, t_pruned))


def warm_up(device: str) -> None:
    """torch.optim's first import and the first kernels, paid before anything is timed."""
    import_optimizer_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        wdlab.sweep("mlp", "wine", lr=0.01, weight_decay=[0, 1e-3], epochs=2, device=device,
                    out=Path(tmp) / "w")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--small", action="store_true", help="check it runs: 9 epochs")
    parser.add_argument("--tpe-seeds", type=int, default=5,
                        help="Optuna searches per pruner, TPE seeds 0.. (default 5)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"optuna {optuna.__version__}" + (" (--small)" if args.small else ""))  # fmt: skip
    warm_up(args.device)
    tasks = [TASKS[args.only]] if args.only else list(TASKS.values())
    with tempfile.TemporaryDirectory(prefix="bench-halving-") as tmp:
        for task in tasks:
            task = Task(**{**task.__dict__, "seeds": args.seeds})
            if args.small:
                task = Task(**{**task.__dict__, **SMALL})
            run_task(task, args.device, Path(tmp), 1 if args.small else args.tpe_seeds)


if __name__ == "__main__":
    main()
