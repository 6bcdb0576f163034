"""The result values pipelines return: the record :class:`~wdlab.records.Result` plus the
conveniences a notebook expects (a table, ``plot()``, ``_repr_html_()``, ``write()``), each a
thin call into :mod:`wdlab.report`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch import nn

from wdlab.decay import get_mode
from wdlab.extras import require
from wdlab.pipelines.weights import build_trained, kept_files, runs_at
from wdlab.records import Check, Result, RunResult, use_wd
from wdlab.report.figures import figure
from wdlab.report.files import write_results
from wdlab.report.html import headline_html
from wdlab.report.text import demo_table, experiment_table
from wdlab.selection import select, study_metric
from wdlab.unanswered import unanswered


@dataclass(repr=False)  # Result's repr: a one-line summary; str() is the table
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

    def __str__(self) -> str:
        return self.table()

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
        verdict = escape(self.check.verdict())
        return (
            f"<table><caption>The article's experiment; manual vs builtin: {verdict}"
            f"</caption><tr>{head}</tr>{rows}</table>"
        )

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write results.json, curves.csv and losses.png into ``out``; return their paths."""
        return write_results(self, out, self.to_dict())


@dataclass(repr=False)  # Result's repr: a one-line summary; str() is the table
class SweepResult(Result):
    """Runs of an experiment or sweep, with the weight decay chosen per (mode, lr).

    Chosen on validation and reported on test. ``directory`` is the study folder (sweeps)."""

    kind: str = "sweep"
    directory: Path | None = field(default=None)
    spec: Any = field(default=None, repr=False, compare=False)  # the model spec, in-process
    #: a sweep without a study folder: the weights it kept, by run key, read before its
    #: temporary folder went (what :meth:`model` builds from)
    held: dict[str, dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a results file written before the verdicts existed: choose again from its runs
        if self.runs and any("better_than_zero" not in s for s in self.selection):
            self.select()

    def select(self) -> list[dict[str, Any]]:
        """Choose the weight decay per (mode, lr) on validation (:func:`wdlab.selection.select`)
        with the config's ``train.select`` and ``train.early_stopping`` (and the direction of a
        user's own metric, kept in the data facts)."""
        how = study_metric(self.config, self.data)
        self.selection = select(self.runs, self.task, *how, waiting=self.waiting())
        return self.selection

    @property
    def best(self) -> list[dict[str, Any]]:
        """One dict per (mode, lr) that decays: ``mode``, ``lr``, ``weight_decay`` (chosen on
        validation), ``val``, ``test_mean``, ``test_std``, ``test_at_zero``,
        ``better_than_zero``, the ``verdict`` in words and ``use_wd``, the weight decay to use
        (:func:`~wdlab.records.use_wd`: the chosen one where it beat wd = 0, else 0), and
        ``weights``: {seed: file} of the ``use_wd`` runs' trained weights the study keeps
        (:meth:`model` builds them). A (mode, lr) with nothing to choose (every run pruned or
        diverged) has no row here: :attr:`unanswered` names it."""
        keys = ("mode", "lr", "weight_decay", "val", "test_mean", "test_std", "test_at_zero")
        return [
            {k: s[k] for k in keys}
            | {"better_than_zero": bool(s["better_than_zero"]), "verdict": s["verdict"]}
            | {"use_wd": use_wd(s)}
            | {
                "weights": kept_files(
                    self.directory, runs_at(self.runs, s["mode"], s["lr"], use_wd(s))
                )
            }
            for s in self.selection
            if get_mode(s["mode"]).decays
        ]

    @property
    def unanswered(self) -> list[dict[str, Any]]:
        """The (mode, lr) settings :attr:`best` has no row for, with why: ``mode``, ``lr``,
        ``verdict`` (every run pruned, pruned or diverged, all diverged, or no finite score)
        and ``pruned`` (cells stopped)."""
        return unanswered(self.runs, self.selection, self.waiting(), self.config)

    def unanswered_rows(self) -> list[dict[str, Any]]:
        """:attr:`unanswered`, for the one-line answer (``repr``)."""
        return self.unanswered

    def model(
        self,
        seed: int | None = None,
        *,
        mode: str | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        factory: Any = None,
    ) -> nn.Module:
        """The trained model of the answer, ready (in eval mode): the configuration of
        :attr:`best`'s best (mode, lr) row (or the one named) at its ``use_wd`` (or
        ``weight_decay``), trained with ``seed`` (default: its first), rebuilt with the
        sweep's factory (or ``factory``) and the weights the study keeps
        (:mod:`wdlab.pipelines.weights`: ``keep="best"`` or ``"all"``); one ``ValueError``
        line when they were not kept."""
        return build_trained(self, seed, mode, lr, weight_decay, factory)

    def to_pandas(self) -> Any:
        """Tidy runs: a pandas DataFrame with one row per run (configuration, status, epochs
        trained, final metrics including ``tau_iter``/``tau_epoch``, best epoch, seconds)."""
        pd = require("pandas", "SweepResult.to_pandas()")
        return pd.DataFrame([run_row(r) for r in self.runs])

    def to_dict(self) -> dict[str, Any]:
        """The results document, with :attr:`best` beside the full selection rows, and the
        (mode, lr) settings with nothing to choose (``unanswered``: every run pruned or
        diverged)."""
        return super().to_dict() | {"best": self.best, "unanswered": self.unanswered}

    def table(self, max_runs: int = 24) -> str:
        """Terminal tables: every run's final metrics, then the choice per (mode, lr)."""
        return experiment_table(self, max_runs)

    def __str__(self) -> str:
        return headed(self, self.table())

    def plot(self, kind: str = "wd") -> Figure:
        """A matplotlib Figure: ``wd`` (metric against weight decay), ``loss`` (the chosen runs
        and wd = 0), ``gap`` or ``weight_norm`` curves."""
        return figure(self, kind)

    def write(self, out: str | Path) -> dict[str, Path]:
        """results.json, curves.csv, losses.png (and wd_curve.png for a wd grid) in ``out``."""
        return write_results(self, out)

    def _repr_html_(self) -> str:
        """The report's answer table (every run where nothing was chosen), for notebooks."""
        partial = f" ({self.partial_note()})" if self.partial else ""
        name = self.name or self.data.get("name", "")  # as the repr and the report name it
        if not self.runs:  # nothing to tabulate yet: the caption alone, said as such
            return (
                f"<p>{escape(f'{name}: {self.runs_text()}{partial}')}: no run has finished yet</p>"
            )
        return headline_html(self, f"{name}: {self.runs_text()}{partial}")


def headed(result: Result, table: str) -> str:
    """``table`` under a partial study's notice (``PARTIAL STUDY (…)``), as ``wdlab show`` and
    ``print(result)`` give it: never a partial answer shown as the whole one."""
    notice = result.partial_notice().replace("Partial study", "PARTIAL STUDY", 1)
    return f"{notice}\n\n{table}" if notice else table


def run_row(run: RunResult) -> dict[str, Any]:
    """One run as a flat dict: configuration, status, epochs trained, final metrics, best
    epoch, seconds."""
    c = run.config
    row: dict[str, Any] = {
        "mode": c.mode,
        "weight_decay": c.weight_decay,
        "lr": c.lr,
        "optimizer": c.optimizer,
        "seed": c.seed,
        "label": c.name,
        **{f"option_{k}": v for k, v in c.options},
        "status": run.status,
        "epochs": run.epochs,  # epochs trained (fewer where pruned or stopped early)
        "diverged_epoch": run.diverged_epoch,
    }
    row |= dict(run.final)
    row |= {"best_metric": run.best.get("metric"), "best_epoch": run.best.get("epoch")}
    # with early stopping: the numbers at that epoch, which the run is reported at
    row |= {f"best_epoch_{k}": v for k, v in (run.best.get("at") or {}).items()}
    return row | {"seconds": run.seconds, "engine": run.engine}


def former_name(module: str, name: str, stacklevel: int = 2) -> Any:
    """``ExperimentResult``, the former name of :class:`SweepResult` (``wdlab run``'s result is
    a SweepResult of kind ``run``), with a ``DeprecationWarning`` until the next release; an
    ``AttributeError`` of ``module`` for any other name."""
    if name != "ExperimentResult":
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        "ExperimentResult is SweepResult; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return SweepResult


def __getattr__(name: str) -> Any:
    return former_name(__name__, name)
