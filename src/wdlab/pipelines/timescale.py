"""The timescale check: does keeping τ_epoch carry AdamW's best weight decay to more data?

Wang & Aitchison (ICML 2025) find the best τ_epoch = 1/(η·λ·M) (M iterations per epoch) roughly
constant as the data grow, so at fixed lr, batch size and epochs the best λ should fall as 1/N.
:func:`run_timescale` measures it: AdamW (mode ``decoupled``) over a grid of λ, on nested,
class-stratified subsets of the training split of N, 2N and 4N rows, several seeds, every
(λ, seed) of one size trained together by :func:`wdlab.trainer.train`; then

* the best λ per size: the minimum of the seed-mean validation loss over the grid, refined by a
  parabola through it and its neighbours in log10 λ (cross-entropy, not accuracy: accuracy on a
  few hundred rows moves in steps and ties), with each seed's own best beside it;
* whether "keep τ_epoch" (λ' = λ·M/M') or "keep λ" predicts the best λ at the largest size from
  the smallest better, in decades (|log10 predicted − log10 measured|), seed-mean and per seed;
* the slope of log10 λ* against log10 N (keep τ_epoch: −1, keep λ: 0).
It returns a :class:`TimescaleResult` value; it draws nothing and writes no file."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

import torch
from matplotlib.figure import Figure

from wdlab.config import MAX_SEED
from wdlab.config_keys import seed_values
from wdlab.data import load
from wdlab.data.tables import check_data_keys
from wdlab.models import ACTIVATIONS, ModelSpec
from wdlab.pipelines.checks import check_mlp, rising_grid
from wdlab.records import RunConfig
from wdlab.report.timescale import timescale_figure, timescale_table
from wdlab.stats import t_quantile
from wdlab.timescale import keep_tau_slope, steps_per_epoch, timescales
from wdlab.trainer import train

#: 0.01 … 31.6, four points a decade.
DEFAULT_WEIGHT_DECAYS = tuple(float(f"{10 ** (k / 4):.4g}") for k in range(-8, 7))


@dataclass(frozen=True)
class TimescaleSettings:
    """What :func:`run_timescale` trains: AdamW at ``lr`` with mini-batches of ``batch_size``
    for ``epochs`` epochs (``schedule``), an MLP (``hidden``, ``activation``), on ``smallest``
    × each of ``factors`` training rows of ``data`` (a data file's ``target`` column), for
    every weight decay and seed."""

    data: str = "digits"
    target: str | None = None
    smallest: int = 256
    factors: tuple[int, ...] = (1, 2, 4)
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lr: float = 0.01
    batch_size: int = 32
    epochs: int = 100
    schedule: str | None = "cosine"
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"
    data_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("smallest", "batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        factors = rising_grid("factors", self.factors, 2, whole=True)  # sizes: smallest × each
        wds = rising_grid("weight_decays (--wd)", self.weight_decays, 3)  # a log grid
        object.__setattr__(self, "factors", factors)
        object.__setattr__(self, "weight_decays", wds)
        check_mlp(self.hidden, self.activation, ACTIVATIONS)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))  # (JSON's)
        given = list(self.seeds) if isinstance(self.seeds, (tuple, range)) else self.seeds
        object.__setattr__(self, "seeds", tuple(seed_values(given, "seeds")))
        check_data_keys({"source": self.data, "target": self.target}, prefix="")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        seed = self.data_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(
                f"data_seed (--data-seed) must be an integer in 0..{MAX_SEED}, got {seed!r}"
            )

    @property
    def sizes(self) -> list[int]:
        """The training-set sizes N, 2N, 4N…"""
        return [self.smallest * f for f in self.factors]

    def iters_per_epoch(self, n: int) -> int:
        """M = ⌈N/B⌉: optimizer steps per epoch on ``n`` rows (the last batch may be short)."""
        return int(steps_per_epoch(n, self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self) | {"sizes": self.sizes}


@dataclass(repr=False)  # a one-line repr; str() is the table
class TimescaleResult:
    """The check's outcome: ``runs`` (one row per size, λ and seed), ``curves`` (per size, the
    seed-mean validation loss per λ), ``optima`` (per size), ``prediction`` (keep τ_epoch vs
    keep λ at the largest size, in decades), ``slope`` and a one-line ``verdict``."""

    settings: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    optima: list[dict[str, Any]] = field(default_factory=list)
    prediction: dict[str, Any] = field(default_factory=dict)
    slope: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``wdlab timescale --json``)."""
        return {"kind": "timescale", **asdict(self)}

    def table(self) -> str:
        """The terminal summary."""
        return timescale_table(self.to_dict())

    def plot(self) -> Figure:
        """The figure: loss against λ and against τ_epoch per size; λ* and τ*_epoch against N."""
        return timescale_figure(self.to_dict())

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        sizes = ", ".join(str(o.get("n", "?")) for o in self.optima)
        return f"TimescaleResult(N = {sizes}: {self.verdict})"

    def _repr_html_(self) -> str:
        """The terminal summary, for notebooks."""
        return f"<pre>{escape(self.table())}</pre>"


def nested_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """An order of the training rows whose every prefix is (nearly) class-stratified: a seeded
    permutation, sorted stably by each row's rank within its class over the class's size."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    labels = y[perm].tolist()
    seen: dict[Any, int] = {}
    ranks = []
    for label in labels:
        ranks.append(seen.get(label, 0))
        seen[label] = ranks[-1] + 1
    keys = torch.tensor([(r + 0.5) / seen[c] for r, c in zip(ranks, labels, strict=True)])
    return perm[torch.sort(keys, stable=True).indices]


def run_timescale(
    settings: TimescaleSettings | None = None,
    *,
    device: torch.device | str | None = None,
    on_size: Callable[[int], None] | None = None,
) -> TimescaleResult:
    """Sweep λ for AdamW at each size (one batched training per size) and analyse it."""
    s = settings or TimescaleSettings()
    t0 = time.perf_counter()
    ds = load(s.data, seed=s.data_seed, **({"target": s.target} if s.target else {}))
    if ds.task != "multiclass" and ds.task != "binary":
        raise ValueError(f"the timescale check needs a classification data set, not {ds.task}")
    if ds.X_val is None:
        raise ValueError(f"data {s.data!r} has no validation split to choose λ on")
    if max(s.sizes) > len(ds.y_train):
        raise ValueError(
            f"largest size {max(s.sizes)} > the {len(ds.y_train)} training rows: give a "
            "smaller --smallest (smallest=)"
        )
    classes = len(ds.y_train.unique())
    if s.smallest < classes:  # the nested subsets are class-stratified from the smallest on
        raise ValueError(f"smallest {s.smallest} < the {classes} classes: each size needs them all")
    order = nested_order(ds.y_train, s.data_seed)
    spec = ModelSpec("mlp", hidden=s.hidden, activation=s.activation)
    rows = []
    for n in s.sizes:
        configs = [
            RunConfig("decoupled", wd, s.lr, "adamw", seed=seed, label=f"N={n} wd={wd:g}")
            for wd in s.weight_decays
            for seed in s.seeds
        ]
        runs = train(
            spec,
            ds.with_train_rows(order[:n]),
            configs,
            epochs=s.epochs,
            eval_every=s.epochs,
            batch_size=s.batch_size,
            schedule=s.schedule,
            shuffle_seed=s.data_seed,
            device=device,
        )
        for c, r in zip(configs, runs, strict=True):
            rows.append(_row(n, c, r.final, r.status, s.iters_per_epoch(n)))
        if on_size is not None:
            on_size(n)
    result = analyse(rows, s)
    result.seconds = time.perf_counter() - t0
    return result


def _row(n: int, c: RunConfig, final: dict, status: str, m: int) -> dict[str, Any]:
    keys = ("val_loss", "val_acc", "test_loss", "test_acc", "train_loss")
    return {
        "n": n,
        "weight_decay": c.weight_decay,
        "seed": c.seed,
        "iters_per_epoch": m,
        **timescales(c, m),  # AdamW: 1/(lr·wd) iterations
        "status": status,
        **{k: final.get(k, math.nan) for k in keys},
    }


# -- analysis ---------------------------------------------------------------------------------


def best_log_wd(wds: Sequence[float], losses: Sequence[float]) -> tuple[float, bool]:
    """(log10 λ at the minimum of ``losses``, at the grid's edge?): the grid's best refined by
    the vertex of a parabola through it and its two neighbours in log10 λ, kept between them."""
    pts = sorted((math.log10(w), v) for w, v in zip(wds, losses, strict=True) if math.isfinite(v))
    if not pts:
        return math.nan, True
    i = min(range(len(pts)), key=lambda j: pts[j][1])
    if i == 0 or i == len(pts) - 1:
        return pts[i][0], True
    (x0, y0), (x1, y1), (x2, y2) = pts[i - 1 : i + 2]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
    vertex = -b / (2 * a) if a > 0 else x1
    return min(max(vertex, x0), x2), False


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _sd(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.stdev(finite) if len(finite) > 1 else math.nan


def _curves(rows: list[dict], s: TimescaleSettings) -> list[dict[str, Any]]:
    out = []
    for n in s.sizes:
        for wd in s.weight_decays:
            rs = [r for r in rows if r["n"] == n and r["weight_decay"] == wd]
            out.append(
                {
                    "n": n,
                    "weight_decay": wd,
                    "tau_epoch": rs[0]["tau_epoch"],
                    "val_loss": _mean([r["val_loss"] for r in rs]),
                    "val_loss_sd": _sd([r["val_loss"] for r in rs]),
                    "val_acc": _mean([r["val_acc"] for r in rs]),
                    "test_loss": _mean([r["test_loss"] for r in rs]),
                    "test_acc": _mean([r["test_acc"] for r in rs]),
                }
            )
    return out


def _optima(rows: list[dict], curves: list[dict], s: TimescaleSettings) -> list[dict[str, Any]]:
    out = []
    for n in s.sizes:
        mine = [c for c in curves if c["n"] == n]
        log_wd, edge = best_log_wd([c["weight_decay"] for c in mine], [c["val_loss"] for c in mine])
        per_seed = []
        for seed in s.seeds:
            rs = [r for r in rows if r["n"] == n and r["seed"] == seed]
            per_seed.append(
                best_log_wd([r["weight_decay"] for r in rs], [r["val_loss"] for r in rs])
            )
        m = s.iters_per_epoch(n)
        best = 10**log_wd
        out.append(
            {
                "n": n,
                "iters_per_epoch": m,
                "best_wd": best,
                "best_tau_epoch": 1.0 / (s.lr * best * m),
                "at_edge": edge,
                "seed_log10_wd": [v for v, _ in per_seed],
                "seed_log10_wd_sd": _sd([v for v, _ in per_seed]),
            }
        )
    return out


def _loss_at(curve: list[dict], wd: float) -> float:
    """The seed-mean validation loss at ``wd``, linear in log10 λ between grid points."""
    pts = sorted((math.log10(c["weight_decay"]), c["val_loss"]) for c in curve)
    x = math.log10(wd)
    if not pts[0][0] <= x <= pts[-1][0]:
        return math.nan
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y0
    return math.nan


def _prediction(optima: list[dict], curves: list[dict]) -> dict[str, Any]:
    """Keep τ_epoch (λ' = λ·M/M') against keep λ, from the smallest size to the largest."""
    a, b = optima[0], optima[-1]
    ratio = a["iters_per_epoch"] / b["iters_per_epoch"]
    keep_tau, keep_wd = a["best_wd"] * ratio, a["best_wd"]
    seed_tau, seed_wd = [], []
    for la, lb in zip(a["seed_log10_wd"], b["seed_log10_wd"], strict=True):
        seed_tau.append(abs(la + math.log10(ratio) - lb))
        seed_wd.append(abs(la - lb))
    largest = [c for c in curves if c["n"] == b["n"]]
    err_tau = abs(math.log10(keep_tau / b["best_wd"]))
    err_wd = abs(math.log10(keep_wd / b["best_wd"]))
    return {
        "from_n": a["n"],
        "to_n": b["n"],
        "measured_wd": b["best_wd"],
        "keep_tau_wd": keep_tau,
        "keep_wd_wd": keep_wd,
        "keep_tau_decades": err_tau,
        "keep_wd_decades": err_wd,
        "better": _better(err_tau, err_wd),
        "best_val_loss": _loss_at(largest, b["best_wd"]),
        "keep_tau_val_loss": _loss_at(largest, keep_tau),
        "keep_wd_val_loss": _loss_at(largest, keep_wd),
        "seed_keep_tau_decades": seed_tau,
        "seed_keep_wd_decades": seed_wd,
        "seeds_keep_tau_better": sum(t < w for t, w in zip(seed_tau, seed_wd, strict=True)),
        **_paired([w - t for t, w in zip(seed_tau, seed_wd, strict=True)]),
    }


def _better(err_tau: float, err_wd: float) -> str:
    """Which rule's prediction is nearer the measured optimum: "neither" where both are as
    near (the same iterations per epoch at both sizes make them one prediction)."""
    if math.isclose(err_tau, err_wd, rel_tol=1e-9, abs_tol=1e-12):
        return "neither"
    return "keep τ_epoch" if err_tau < err_wd else "keep λ"


ALPHA = 0.05  # the two-sided level at which the seeds resolve the comparison


def _paired(gains: list[float]) -> dict[str, Any]:
    """Keep τ_epoch's advantage in decades, seed by seed: mean, standard error, and whether the
    seeds resolve the comparison: a two-sided paired t-test at 5% (n − 1 degrees of freedom:
    with 2 seeds the mean must be 12.7 standard errors from 0, with 10 seeds 2.26). Seeds that
    agree exactly, as optima pinned at the grid's edge do, leave no spread to resolve it."""
    finite = [g for g in gains if math.isfinite(g)]
    mean = _mean(finite)
    n = len(finite)
    se = _sd(finite) / math.sqrt(n) if n > 1 else math.nan
    cut = t_quantile(1 - ALPHA / 2, n - 1) if n > 1 else math.inf
    return {
        "seed_advantage_decades": mean,
        "seed_advantage_se": se,
        "seed_count": n,
        "resolved": bool(math.isfinite(se) and se > 0 and abs(mean) > cut * se),
        "seeds_favour": "keep τ_epoch" if mean > 0 else "keep λ",
    }


def _slope(optima: list[dict]) -> dict[str, Any]:
    """Least-squares slope of log10 λ* on log10 N, and what keeping τ_epoch predicts for it:
    λ* ∝ 1/M, so minus the slope of log10 M (−1 where B divides every N, 0 where M = 1 at
    every size); keeping λ predicts 0."""

    def fit(ys: list[float]) -> float:
        xs = [math.log10(o["n"]) for o in optima]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )

    per_seed = [fit(list(ys)) for ys in zip(*(o["seed_log10_wd"] for o in optima), strict=True)]
    return {
        "value": fit([math.log10(o["best_wd"]) for o in optima]),
        "seed_values": per_seed,
        "seed_sd": _sd(per_seed),
        "keep_tau": -fit([math.log10(o["iters_per_epoch"]) for o in optima]) + 0.0,
    }


def analyse(rows: list[dict[str, Any]], s: TimescaleSettings) -> TimescaleResult:
    """The optima, the two predictions and the slope from the trained rows."""
    curves = _curves(rows, s)
    lost = [
        n for n in s.sizes if not any(math.isfinite(c["val_loss"]) for c in curves if c["n"] == n)
    ]
    if lost:  # (it named a winner among NaNs, "off by nan decades")
        raise ValueError(
            f"every run diverged at N = {', '.join(map(str, lost))} (lr {s.lr:g}): no best λ "
            "to compare; lower the lr"
        )
    optima = _optima(rows, curves, s)
    pred = _prediction(optima, curves)
    slope = _slope(optima)
    verdict = _verdict(pred, slope, len(s.seeds), any(o["at_edge"] for o in optima))
    return TimescaleResult(s.to_dict(), rows, curves, optima, pred, slope, verdict)


def _verdict(pred: Mapping[str, Any], slope: Mapping[str, Any], seeds: int, edge: bool) -> str:
    """The check's answer in one paragraph: which rule predicts better (or neither), seed by
    seed, the slope, and whether the seeds resolve it (never where an optimum is at the
    grid's edge: the seeds then agree because the grid stops them)."""
    at = f"the best λ at N={pred['to_n']} from N={pred['from_n']}"
    head = (
        f"keep τ_epoch and keep λ predict {at} alike (the same iterations per epoch)"
        if pred["better"] == "neither"
        else f"on the seeds' mean curve, {pred['better']} predicts {at} better"
    )
    resolved = _resolved(pred, edge)
    return (
        f"{head}: off by {pred['keep_tau_decades']:.2f} decades (keep τ_epoch) vs "
        f"{pred['keep_wd_decades']:.2f} (keep λ); seed by seed keep τ_epoch wins "
        f"{pred['seeds_keep_tau_better']}/{seeds}; slope of log λ* on log N "
        f"{slope['value']:.2f} (keep τ_epoch: {keep_tau_slope(slope)}, keep λ: 0); {resolved}"
    )


def _resolved(pred: Mapping[str, Any], edge: bool) -> str:
    """Whether the seeds resolve the comparison, and for which rule (the seed-by-seed mean can
    favour the other rule than the mean curve's optimum does)."""
    spread = f"{pred['seed_advantage_decades']:+.2f} ± {pred['seed_advantage_se']:.2f} decades"
    if edge:
        return (
            "not resolved: an optimum lies at the edge of the λ grid (widen it: --wd, or "
            "weight_decays= in Python)"
        )
    if pred["seed_count"] < 2:
        return "not resolved: one seed has no spread to test (give --seeds 3 or more)"
    if pred["resolved"]:
        return (
            f"the seeds resolve it for {pred['seeds_favour']} ({spread}; a two-sided paired "
            f"t-test at 5% over {pred['seed_count']} seeds)"
        )
    if pred["seed_advantage_se"] == 0:
        return f"not resolved: the seeds agree exactly ({spread}), no spread to test against"
    return (
        f"not resolved: the seed-by-seed advantage {spread} is within the 5% two-sided t-test's "
        f"bound of 0 for {pred['seed_count']} seeds"
    )
