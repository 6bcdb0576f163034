"""The result values pipelines return: the record :class:`~wdlab.records.Result` plus the
conveniences a notebook expects (a table, ``plot()``, ``_repr_html_()``, ``write()``), each a
thin call into :mod:`wdlab.report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from wdlab.records import Check, Result
from wdlab.report.files import write_results
from wdlab.report.plots import figure
from wdlab.report.text import demo_table, experiment_table
from wdlab.selection import metric_for, select


@dataclass
class DemoResult(Result):
    """The article's three regimes, the manual ≡ builtin check and the wall time."""

    kind: str = "demo"

    @property
    def check(self) -> Check:
        """The manual ≡ builtin check."""
        return self.checks["manual_equals_builtin"]

    @property
    def settings(self) -> dict[str, Any]:
        """The demo's settings (epochs, dim, lr, weight decay, seed, eval_every)."""
        return self.config

    def table(self) -> str:
        """The terminal summary: one row per regime."""
        return demo_table(self)

    def plot(self, kind: str = "loss") -> Figure:
        """A matplotlib Figure: ``loss`` curves or ``weight_norm``."""
        if kind not in ("loss", "weight_norm"):
            raise ValueError(f"unknown plot {kind!r}; valid: loss, weight_norm")
        return figure(self, kind)

    def to_dict(self) -> dict[str, Any]:
        """The results document, with the demo's version-1 keys kept beside it (each run's
        ``regime``, ``mode``, ``weight_decay`` and ``curves.test_epoch``; ``settings``)."""
        doc = super().to_dict()
        for run in doc["runs"]:
            cfg = run["config"]
            run |= {
                "regime": cfg["label"],
                "mode": cfg["mode"],
                "weight_decay": cfg["weight_decay"],
            }
            run["curves"]["test_epoch"] = run["curves"]["eval_epoch"]
        doc["settings"] = self.config
        return doc

    def _repr_html_(self) -> str:
        """The summary table, for notebooks."""
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

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write results.json, curves.csv and losses.png into ``out``; return their paths."""
        return write_results(self, out, self.to_dict())


@dataclass
class SweepResult(Result):
    """Runs of an experiment or sweep, with the weight decay chosen on validation per
    (mode, lr) and reported on test. ``directory`` is the study folder (sweeps)."""

    kind: str = "sweep"
    directory: Path | None = field(default=None)

    def select(self) -> list[dict[str, Any]]:
        """Choose the weight decay per (mode, lr) on validation (:func:`wdlab.selection.select`)."""
        self.selection = select(self.runs, self.task)
        return self.selection

    def table(self, max_runs: int = 24) -> str:
        """Terminal tables: every run's final metrics, then the choice per (mode, lr)."""
        return experiment_table(self, max_runs)

    def plot(self, kind: str = "wd") -> Figure:
        """A matplotlib Figure: ``wd`` (metric against weight decay), ``loss``, ``gap`` or
        ``weight_norm`` curves."""
        return figure(self, kind)

    def write(self, out: str | Path) -> dict[str, Path]:
        """results.json, curves.csv, losses.png (and wd_curve.png for a wd grid) in ``out``."""
        return write_results(self, out)

    def _repr_html_(self) -> str:
        """The choice per (mode, lr) as an HTML table, for notebooks."""
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


#: ``wdlab run``'s result: a sweep of one experiment into a temporary store.
ExperimentResult = SweepResult
