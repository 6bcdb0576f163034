"""The article's experiment: random-label data, a sigmoid MLP, SGD, three decay regimes.

All three regimes start from the same initial weights and train together in the batched
engine; the only difference between them is the regime:

* ``none``: no decay;
* ``manual``: ``p.grad.add_(p, alpha=wd)`` after ``backward()`` (mode ``coupled``);
* ``builtin``: ``torch.optim.SGD(weight_decay=wd)`` (mode ``builtin``).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from wdlab import decay as D
from wdlab import engine
from wdlab.data import Dataset, seed_noise, seed_noise_tensors
from wdlab.jsonsafe import dumps
from wdlab.models import ModelSpec
from wdlab.verify import Check, compare

REGIMES: dict[str, str] = {"none": "none", "manual": "coupled", "builtin": "builtin"}


@dataclass(frozen=True)
class DemoSettings:
    """The article's numbers, each changeable."""

    epochs: int = 1000
    dim: int = 1000
    lr: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    eval_every: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "dim", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim < 4:
            raise ValueError(f"dim must be >= 4, got {self.dim}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        D.check_weight_decay(self.weight_decay)


@dataclass
class DemoResult:
    """The three runs, the manual ≡ builtin check and the wall time."""

    settings: DemoSettings
    runs: list[engine.RunResult]
    check: Check
    seconds: float
    data_meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The ``--json`` document."""
        runs = []
        for r in self.runs:
            c = r.curves
            runs.append(
                {
                    "regime": r.config.label,
                    "mode": r.config.mode,
                    "weight_decay": r.config.weight_decay,
                    "status": r.status,
                    "final": {
                        "train_loss": r.final["train_loss"],
                        "test_loss": r.final["test_loss"],
                        "train_acc": r.final["train_acc"],
                        "test_acc": r.final["test_acc"],
                        "weight_norm": r.final["weight_norm"],
                        "gap": r.final["test_loss"] - r.final["train_loss"],
                        "best_test_epoch": r.best.get("epoch"),
                        "best_test_loss": r.best.get("value"),
                    },
                    "curves": {
                        "epoch": c["epoch"],
                        "train_loss": c["train_loss"],
                        "weight_norm": c["weight_norm"],
                        "test_epoch": c["eval_epoch"],
                        "test_loss": c["test_loss"],
                        "test_acc": c["test_acc"],
                        "train_acc": c["train_acc"],
                        "train_loss_eval": c["train_loss_eval"],
                    },
                }
            )
        return {
            "experiment": "seed",
            "settings": self.settings.__dict__,
            "data": self.data_meta,
            "runs": runs,
            "checks": {"manual_equals_builtin": self.check.to_dict()},
            "engine": self.runs[0].engine,
            "seconds": self.seconds,
        }

    def table(self) -> str:
        """The terminal summary: one row per regime."""
        head = (
            f"{'regime':<8} {'wd':>6} {'train loss':>10} {'test loss':>10} {'train acc':>9} "
            f"{'test acc':>8} {'gap':>7} {'|w|':>8} {'best epoch':>10}"
        )
        lines = [head, "-" * len(head)]
        for r in self.runs:
            f = r.final
            lines.append(
                f"{r.config.label:<8} {r.config.weight_decay:>6g} {f['train_loss']:>10.4f} "
                f"{f['test_loss']:>10.4f} {f['train_acc']:>9.3f} {f['test_acc']:>8.3f} "
                f"{f['test_loss'] - f['train_loss']:>7.3f} {f['weight_norm']:>8.3f} "
                f"{r.best.get('epoch', -1):>10}"
            )
        c = self.check
        verdict = "IDENTICAL (bitwise)" if c.identical else "DIFFERENT"
        lines.append("")
        lines.append(
            f"manual vs builtin: {verdict}, max |Δ| = {c.max_abs_diff:.3g} over all parameters"
        )
        lines.append(f"engine: {self.runs[0].engine}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The summary table, for notebooks."""
        from html import escape

        head = "".join(
            f"<th>{h}</th>"
            for h in ("regime", "wd", "train loss", "test loss", "train acc", "test acc", "|w|")
        )
        rows = "".join(
            f"<tr><td>{escape(r.config.label)}</td><td>{r.config.weight_decay:g}</td>"
            f"<td>{r.final['train_loss']:.4f}</td><td>{r.final['test_loss']:.4f}</td>"
            f"<td>{r.final['train_acc']:.3f}</td><td>{r.final['test_acc']:.3f}</td>"
            f"<td>{r.final['weight_norm']:.3f}</td></tr>"
            for r in self.runs
        )
        verdict = "bitwise identical" if self.check.identical else "DIFFERENT"
        return (
            f"<table><caption>The article's experiment; manual vs builtin: {verdict}"
            f"</caption><tr>{head}</tr>{rows}</table>"
        )

    def plot(self, kind: str = "loss") -> object:
        """A matplotlib Figure: ``loss`` curves or ``weight_norm``."""
        from wdlab.report.plots import loss_curves, weight_norm_curves

        if kind == "loss":
            return loss_curves(self.runs, title=_title(self.settings), ylabel="loss (BCE)")
        if kind == "weight_norm":
            return weight_norm_curves(self.runs)
        raise ValueError(f"unknown plot {kind!r}; valid: loss, weight_norm")

    def write(self, out: Path) -> dict[str, Path]:
        """Write results.json, curves.csv and losses.png into ``out``; return their paths."""
        return write_results(out, self.to_dict(), self.runs, self.plot("loss"))


def write_results(
    out: Path, doc: dict, runs: list[engine.RunResult], losses: object
) -> dict[str, Path]:
    """The files every demo and run leaves: results.json (``doc``), curves.csv (tidy curves of
    ``runs``) and losses.png (the ``losses`` figure)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out / "results.json",
        "curves": out / "curves.csv",
        "losses": out / "losses.png",
    }
    paths["results"].write_text(dumps(doc, indent=1) + "\n")
    write_curves_csv(runs, paths["curves"])
    losses.savefig(paths["losses"], dpi=110, bbox_inches="tight")
    return paths


def _title(s: DemoSettings) -> str:
    return (
        f"The article's experiment: random labels, dim {s.dim}, SGD lr {s.lr:g}, "
        f"wd {s.weight_decay:g}, {s.epochs + 1} steps"
    )


def write_curves_csv(runs: list[engine.RunResult], path: Path) -> None:
    """Tidy curves: one row per (run, epoch); evaluated columns blank between evaluations."""
    eval_keys = sorted(
        {k for r in runs for k in r.curves} - {"epoch", "eval_epoch", "train_loss", "weight_norm"}
    )
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["regime", "epoch", "train_loss", "weight_norm", *eval_keys])
        for r in runs:
            c = r.curves
            at = {e: i for i, e in enumerate(c["eval_epoch"])}
            for i, e in enumerate(c["epoch"]):
                row = [r.config.label, e, c["train_loss"][i], c["weight_norm"][i]]
                j = at.get(e)
                row += [("" if j is None else c[k][j]) for k in eval_keys]
                w.writerow(row)


def seed_init(dim: int) -> callable:
    """The article's initial weights for a seed: draw X first, then build the model."""
    spec = ModelSpec("seed-mlp", in_dim=dim)

    def init(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            seed_noise_tensors(dim, seed)
            return spec.build()

    return init


def run_demo(
    settings: DemoSettings | None = None,
    *,
    progress: bool = False,
    device: str | torch.device | None = None,
    data: Dataset | None = None,
    fast_path: bool | None = None,
    precision: str = "fp32",
) -> DemoResult:
    """Train the article's three regimes and compare manual with builtin.

    ``fast_path`` as in :func:`wdlab.engine.train`: by default the exact Gram-matrix path runs
    wherever it applies (here: n_train 670 < d 1000, SGD), ``False`` forces the standard one.
    """
    s = settings or DemoSettings()
    # torch.optim's first optimizer imports torch._dynamo (~1 s, once per process). The
    # article's loop builds its optimizer before starting its clock; so does the demo, so that
    # the two clocks time the same work. (bench/bench_demo.py also compares whole processes.)
    engine.import_optimizer_runtime()
    t0 = time.perf_counter()
    data = data or seed_noise(s.dim, s.seed)
    configs = [
        engine.RunConfig(
            mode=mode,
            weight_decay=0.0 if regime == "none" else s.weight_decay,
            lr=s.lr,
            optimizer="sgd",
            seed=s.seed,
            label=regime,
        )
        for regime, mode in REGIMES.items()
    ]
    # One engine call per regime (each a sweep of one), as the article trains them: stacked
    # in one batch, rows would agree only to rounding (see models._linear), and the point here
    # is bitwise identity. At this size the work is GEMM-bound, so batching would gain little.
    runs = [
        engine.train(
            ModelSpec("seed-mlp", in_dim=s.dim),
            data,
            [config],
            epochs=s.epochs + 1,  # the article loops range(epochs + 1)
            eval_every=s.eval_every,
            rule=D.EVERYTHING,  # the article decays every parameter, biases included
            init=seed_init(s.dim),
            device=device,
            keep_params=True,
            progress=progress,
            progress_desc=f"demo: {config.label}",
            fast_path=fast_path,
            precision=precision,
        )[0]
        for config in configs
    ]
    by = {r.config.label: r for r in runs}
    check = compare(
        "manual ≡ builtin",
        "torch.optim.SGD(weight_decay=wd)",
        by["manual"].params,
        by["builtin"].params,
        tolerance=0.0,
        detail=f"SGD lr {s.lr:g}, wd {s.weight_decay:g}, {s.epochs + 1} steps, same init",
    )
    return DemoResult(s, runs, check, time.perf_counter() - t0, data.meta)
