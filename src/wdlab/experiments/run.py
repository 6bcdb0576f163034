"""Run an experiment config: load the data, expand the grid, train it in the engine, choose on
validation, report on test."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wdlab import data as data_mod
from wdlab import engine
from wdlab.decay import DEFAULT_RULE, EVERYTHING, DecayRule
from wdlab.models import ModelSpec


def dataset_from(cfg: dict[str, Any]) -> data_mod.Dataset:
    """The Dataset a validated config's [data] section describes."""
    d = cfg["data"]
    src = d["source"]
    options = dict(d["options"])
    if src.lower().endswith((".csv", ".parquet", ".pq")):
        return data_mod.read_table(
            src, d["target"], d["features"], d["impute"], d["task"], seed=d["seed"]
        )
    if src in data_mod.SKLEARN_SETS:
        options.setdefault("val_size", d["val_size"])
        options.setdefault("test_size", d["test_size"])
    try:
        ds = data_mod.load(src, seed=d["seed"], **options)
    except TypeError as exc:
        raise ValueError(f"data.options: {exc}") from None
    if d["task"] and d["task"] != ds.task:
        raise ValueError(f"data.task: {src} is a {ds.task} data set, not {d['task']}")
    return ds


def spec_from(cfg: dict[str, Any], ds: data_mod.Dataset) -> ModelSpec:
    """The ModelSpec of a validated config, sized to the data."""
    m = cfg["model"]
    return ModelSpec(
        m["kind"],
        in_dim=ds.in_dim,
        out_dim=ds.out_dim,
        hidden=tuple(m["hidden"]),
        activation=m["activation"],
        layernorm=m["layernorm"],
        factory=m["factory"],
    )


def rule_from(cfg: dict[str, Any]) -> DecayRule:
    """The no-decay rule of a validated config."""
    d = cfg["decay"]
    base = EVERYTHING if d["rule"] == "everything" else DEFAULT_RULE
    return DecayRule(
        everything=base.everything, exclude=tuple(d["exclude"]), include=tuple(d["include"])
    )


def grid(cfg: dict[str, Any]) -> list[engine.RunConfig]:
    """mode × weight decay × lr × seed, one RunConfig each.

    Every (lr, seed) also gets the wd = 0 reference (mode ``none``) unless the grid already
    has a zero-decay run for it: a weight decay is only worth choosing against no decay.
    """
    t, dec = cfg["train"], cfg["decay"]
    options = tuple(sorted(t["options"].items()))
    out = []
    seen = set()
    has_zero = 0.0 in dec["weight_decay"] or "none" in dec["modes"]
    if not has_zero:
        for lr, seed in itertools.product(t["lr"], t["seeds"]):
            seen.add(("none", 0.0, lr, seed))
            out.append(
                engine.RunConfig(
                    mode="none",
                    weight_decay=0.0,
                    lr=lr,
                    optimizer=t["optimizer"],
                    options=options,
                    seed=seed,
                    label="none wd=0",
                )
            )
    for mode, wd, lr, seed in itertools.product(
        dec["modes"], dec["weight_decay"], t["lr"], t["seeds"]
    ):
        if mode == "none":
            wd = 0.0
        key = (mode, wd, lr, seed)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            engine.RunConfig(
                mode=mode,
                weight_decay=wd,
                lr=lr,
                optimizer=t["optimizer"],
                options=options,
                seed=seed,
                label=f"{mode} wd={wd:g}",
            )
        )
    return out


LOSS_NAMES = {
    "binary": "loss (BCE)",
    "multiclass": "loss (cross-entropy)",
    "regression": "loss (MSE)",
}


def metric_for(task: str) -> tuple[str, str, bool]:
    """(metric key, display name, higher is better) used to choose on validation."""
    if task == "regression":
        return "rmse", "RMSE", False
    return "acc", "accuracy", True


@dataclass
class ExperimentResult:
    """Runs of one experiment, with the choice made on validation and reported on test."""

    config: dict[str, Any]
    data: dict[str, Any]
    task: str
    runs: list[engine.RunResult]
    seconds: float
    engine_note: str = ""
    selection: list[dict] = field(default_factory=list)
    decay_table: dict | None = None

    def select(self) -> list[dict]:
        """For each (mode, lr): the weight decay with the best mean validation metric over
        seeds (final epoch), its test metric mean ± std, and the test metric at wd = 0."""
        key, _, higher = metric_for(self.task)
        split = "val"
        if not any(f"val_{key}" in r.final for r in self.runs):
            self.selection = []  # no validation split: nothing may be chosen (never on test)
            return []
        by: dict[tuple, dict[float, list[engine.RunResult]]] = {}
        for r in self.runs:
            c = r.config
            by.setdefault((c.mode, c.lr), {}).setdefault(c.weight_decay, []).append(r)
        zero = {}
        for (_mode, lr), wds in by.items():
            if 0.0 in wds:
                zero[lr] = wds[0.0]
        rows = []
        for (mode, lr), wds in sorted(by.items()):
            scored = []
            for wd, runs in wds.items():
                vals = [r.final.get(f"{split}_{key}", math.nan) for r in runs]
                vals = [v for v in vals if math.isfinite(v)]
                if vals:
                    scored.append((statistics.fmean(vals), wd))
            if not scored:
                continue
            best_val, best_wd = (max if higher else min)(scored)
            tests = [r.final.get(f"test_{key}", math.nan) for r in wds[best_wd]]
            base = [r.final.get(f"test_{key}", math.nan) for r in zero.get(lr, [])]
            rows.append(
                {
                    "mode": mode,
                    "lr": lr,
                    "best_wd": best_wd,
                    "chosen_on": split,
                    f"{split}_{key}": best_val,
                    f"test_{key}_mean": statistics.fmean(tests),
                    f"test_{key}_std": statistics.pstdev(tests) if len(tests) > 1 else 0.0,
                    f"test_{key}_at_wd0": statistics.fmean(base) if base else math.nan,
                    "seeds": len(tests),
                }
            )
        self.selection = rows
        return rows

    def _repr_html_(self) -> str:
        from html import escape

        key, name, _ = metric_for(self.task)
        split = self.selection[0]["chosen_on"] if self.selection else "val"
        head = (
            "<tr><th>mode</th><th>lr</th><th>best wd</th>"
            f"<th>{escape(split)} {escape(name)}</th><th>test {escape(name)} (mean ± std)</th>"
            f"<th>test at wd=0</th><th>seeds</th></tr>"
        )
        rows = "".join(
            f"<tr><td>{escape(s['mode'])}</td><td>{s['lr']:g}</td><td>{s['best_wd']:g}</td>"
            f"<td>{s[f'{split}_{key}']:.4f}</td><td>{s[f'test_{key}_mean']:.4f} ± "
            f"{s[f'test_{key}_std']:.4f}</td><td>{s[f'test_{key}_at_wd0']:.4f}</td>"
            f"<td>{s['seeds']}</td></tr>"
            for s in self.selection
        )
        title = escape(f"{self.data.get('name', '')}: {len(self.runs)} runs")
        return f"<table><caption>{title}</caption>{head}{rows}</table>"

    def plot(self, kind: str = "wd") -> Any:
        """A matplotlib Figure: ``wd`` (metric against weight decay) or ``loss`` curves."""
        from wdlab.report.plots import loss_curves, wd_curve

        key, name, _ = metric_for(self.task)
        if kind == "wd":
            chosen = {(s["mode"], s["lr"]): s["best_wd"] for s in self.selection}
            return wd_curve(self.runs, key, name, chosen)
        if kind == "loss":
            return loss_curves(self.runs[:8], split="val")
        raise ValueError(f"unknown plot {kind!r}; valid: wd, loss")

    def to_dict(self) -> dict:
        """The JSON document."""
        return {
            "config": self.config,
            "data": self.data,
            "task": self.task,
            "engine": self.engine_note,
            "seconds": self.seconds,
            "selection": self.selection or self.select(),
            "decay_table": self.decay_table,
            "runs": [r.to_dict() for r in self.runs],
        }

    def table(self, max_runs: int = 24) -> str:
        """Terminal tables: every run's final metrics (up to ``max_runs`` runs), then the
        choice per (mode, lr)."""
        key, name, _ = metric_for(self.task)
        cols = [
            ("train_loss", "train loss"),
            ("val_loss", "val loss"),
            ("test_loss", "test loss"),
            (f"val_{key}", f"val {name[:3]}"),
            (f"test_{key}", f"test {name[:3]}"),
            ("weight_norm", "|w|"),
        ]
        cols = [(k, h) for k, h in cols if any(k in r.final for r in self.runs)]
        head = f"{'mode':<12} {'wd':>9} {'lr':>8} {'seed':>4} " + " ".join(
            f"{h:>10}" for _, h in cols
        )
        lines = [head, "-" * len(head)]
        if len(self.runs) > max_runs:
            lines = [f"{len(self.runs)} runs (wdlab show --json or wdlab export for each one)"]
        for r in self.runs if len(self.runs) <= max_runs else []:
            c = r.config
            vals = " ".join(f"{r.final.get(k, math.nan):>10.4f}" for k, _ in cols)
            flag = "" if r.status == "done" else f"  {r.status}"
            lines.append(
                f"{c.mode:<12} {c.weight_decay:>9.3g} {c.lr:>8.3g} {c.seed:>4} {vals}{flag}"
            )
        sel = self.selection or self.select()
        if not sel and not any("val_loss" in r.final for r in self.runs):
            lines += [
                "",
                "no validation split (the article's data has train/test only): "
                "no weight decay is chosen",
            ]
        if sel:
            split = sel[0]["chosen_on"]
            lines += [
                "",
                f"best weight decay per (mode, lr), chosen on {split} {name}, "
                f"reported on test (mean ± std over seeds):",
            ]
            for s in sel:
                lines.append(
                    f"  {s['mode']:<12} lr {s['lr']:<8.3g} wd* {s['best_wd']:<9.3g} "
                    f"{split} {s[f'{split}_{key}']:.4f}   test {s[f'test_{key}_mean']:.4f} ± "
                    f"{s[f'test_{key}_std']:.4f}   test at wd=0 {s[f'test_{key}_at_wd0']:.4f}"
                )
        lines.append(f"engine: {self.engine_note}")
        return "\n".join(lines)

    def write(self, out: Path) -> dict[str, Path]:
        """results.json, curves.csv, losses.png (and wd_curve.png for a wd grid) in ``out``."""
        from wdlab.experiments.seed import write_results
        from wdlab.report.plots import loss_curves, wd_curve

        split = "val" if any("val_loss" in r.curves for r in self.runs) else "test"
        shown = self.runs if len(self.runs) <= 8 else _representative(self.runs)
        fig = loss_curves(
            shown,
            title=f"{self.data.get('name', '')}: train (solid) and {split} (dashed) loss",
            split=split,
            ylabel=LOSS_NAMES[self.task],
        )
        paths = write_results(out, self.to_dict(), self.runs, fig)
        if len({r.config.weight_decay for r in self.runs}) > 2 and self.selection:
            key, name, _ = metric_for(self.task)
            chosen = {(s["mode"], s["lr"]): s["best_wd"] for s in self.selection}
            fig = wd_curve(self.runs, key, f"{name} ({self.data.get('name', '')})", chosen)
            paths["wd_curve"] = out / "wd_curve.png"
            fig.savefig(paths["wd_curve"], dpi=110, bbox_inches="tight")
        return paths


def _representative(runs: list[engine.RunResult]) -> list[engine.RunResult]:
    """At most 8 runs to plot: for seed 0, the smallest and largest wd of each mode."""
    picked = []
    for mode in dict.fromkeys(r.config.mode for r in runs):
        rs = sorted(
            (r for r in runs if r.config.mode == mode and r.config.seed == runs[0].config.seed),
            key=lambda r: r.config.weight_decay,
        )
        picked += [rs[0], rs[-1]] if len(rs) > 1 else rs
    return picked[:8]


def run_experiment(cfg: dict[str, Any], *, progress: bool = False) -> ExperimentResult:
    """Train every configuration of a validated config together and choose on validation."""
    t0 = time.perf_counter()
    ds = dataset_from(cfg)
    spec = spec_from(cfg, ds)
    configs = grid(cfg)
    t = cfg["train"]
    runs = engine.train(
        spec,
        ds,
        configs,
        epochs=t["epochs"],
        eval_every=t["eval_every"],
        rule=rule_from(cfg),
        schedule=t["schedule"],
        device=t["device"],
        progress=progress,
        progress_desc=f"{ds.name}: {len(configs)} configurations",
        batch_size=t["batch_size"] or None,
        shuffle_seed=cfg["data"]["seed"],
        precision=t["precision"],
    )
    from wdlab.decay import decay_table

    table = decay_table(spec.build(), rule_from(cfg)).to_dict()
    result = ExperimentResult(
        cfg, {"name": ds.name, **ds.meta}, ds.task, runs, time.perf_counter() - t0, runs[0].engine
    )
    result.decay_table = table
    result.select()
    return result
