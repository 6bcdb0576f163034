"""Records: one schema for what a run is and what it produced, for demo, run and sweep alike.

* :class:`RunConfig`: one configuration (mode, weight decay, lr, optimizer and its options, seed).
* :class:`Curves`: the per-epoch series (``train_loss``, ``weight_norm``) on ``epoch`` and the
  per-evaluation series (``val_loss``, ``test_acc``…) on ``eval_epoch``; read like a dict.
* :class:`RunResult`: one configuration's curves, final metrics, status and timing.
* :class:`Check`: one equivalence check (ours against a reference) and how far apart they ended.
* :class:`Result`: the result value every pipeline returns and every report, table, store and
  results file reads: runs, the choice of weight decay, data facts, checks, timing.

Each has ``to_dict``/``from_dict``. Documents carry ``"version"``: :data:`SCHEMA_VERSION`
documents round-trip losslessly, version-1 files (wdlab 0.1's results.json, demo and run) still
load, and a newer version is refused in one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import Tensor

from wdlab.answers import ALL_PRUNED as ALL_PRUNED
from wdlab.answers import NO_REFERENCE as NO_REFERENCE
from wdlab.answers import NONE_SWEPT as NONE_SWEPT
from wdlab.answers import NOT_YET as NOT_YET
from wdlab.answers import NOTHING as NOTHING
from wdlab.answers import TOO_FEW as TOO_FEW
from wdlab.answers import UNTESTED as UNTESTED
from wdlab.answers import is_reference as is_reference
from wdlab.answers import no_advice
from wdlab.answers import use_text as use_text
from wdlab.answers import use_wd as use_wd
from wdlab.curves import DIAGNOSTIC_PREFIX as DIAGNOSTIC_PREFIX
from wdlab.curves import PER_EPOCH as PER_EPOCH
from wdlab.curves import Curves as Curves
from wdlab.curves import is_per_epoch as is_per_epoch
from wdlab.curves import nan_of
from wdlab.decay.modes import check_mode, check_pairing, check_weight_decay

SCHEMA = "wdlab.results"
SCHEMA_VERSION = 2
UNFINISHED = ("pending", "running", "failed")  # a study with runs in these is partial


@dataclass(frozen=True)
class RunConfig:
    """One configuration: decay mode and strength, optimizer and its settings, seed.

    ``options`` are extra optimizer keywords as sorted ``(name, value)`` pairs, e.g.
    ``(("momentum", 0.9),)`` (a dict is taken as its sorted pairs). ``label`` names the run
    in tables (default: the mode).
    """

    mode: str = "none"
    weight_decay: float = 0.0
    lr: float = 0.1
    optimizer: str = "sgd"
    options: tuple[tuple[str, object], ...] = ()
    seed: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_weight_decay(self.weight_decay)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        check_pairing(self.mode, self.optimizer)
        if isinstance(self.options, Mapping):  # frozen: set once, as its sorted pairs
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        if all(isinstance(o, (tuple, list)) and len(o) == 2 for o in self.options):  # hashable
            object.__setattr__(self, "options", tuple(tuple(o) for o in self.options))
        if not all(isinstance(o, tuple) and len(o) == 2 for o in self.options):
            raise ValueError(f"options must be (name, value) pairs or a dict, got {self.options!r}")
        if any(k in ("lr", "weight_decay", "params") for k, _ in self.options):
            raise ValueError("lr and weight_decay are set by the config, not in options")

    @property
    def name(self) -> str:
        """The label, or the mode when no label was given."""
        return self.label or self.mode

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mode": self.mode,
            "weight_decay": self.weight_decay,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "options": dict(self.options),
            "seed": self.seed,
            "label": self.name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(
            mode=d["mode"],
            weight_decay=d["weight_decay"],
            lr=d["lr"],
            optimizer=d.get("optimizer", "sgd"),
            options=tuple(sorted((d.get("options") or {}).items())),
            seed=d.get("seed", 0),
            label=d.get("label", ""),
        )


@dataclass
class RunResult:
    """What one configuration's training produced: curves, final metrics and status.

    ``curves.series`` holds ``train_loss`` (the loss each step computed, before its update) and
    ``weight_norm`` every epoch; ``train_loss_eval`` and ``<split>_loss``/``<split>_acc``/… at
    each evaluation. ``final`` holds the last evaluation (``train_loss`` there is the evaluated
    one, so ``test_loss − train_loss`` compares the same weights). ``best`` is the best
    validation (else test) loss and its epoch; with early stopping, the best of its metric, and
    in ``best["at"]`` every evaluated metric at that epoch: the run's reported numbers, whose
    weights are kept (``final`` stays the last evaluation; :attr:`reported` merges them).
    ``params`` are the final weights when asked for (never stored). ``seconds`` is the wall time
    of the batch that trained it. ``epochs``: the epochs it was trained (fewer than planned
    where it stopped early, was pruned or diverged; None for runs stored by a wdlab that did not
    record it). ``status``: ``done``, ``diverged``, ``pruned`` (stopped by successive halving at
    a rung), or, from a batch trained to a rung (:attr:`wdlab.trainer.Plan.stop`), ``paused``.
    """

    config: RunConfig
    curves: Curves
    final: dict[str, float]
    status: str = "done"
    diverged_epoch: int | None = None
    best: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Tensor] | None = None
    seconds: float = 0.0
    engine: str = ""
    epochs: int | None = None

    @property
    def reported(self) -> dict[str, float]:
        """The run's numbers as the selection reads them: ``final``, or with early stopping
        the evaluated metrics at its best epoch (``best["at"]``) in place of the last's."""
        return {**self.final, **(self.best.get("at") or {})}

    def __repr__(self) -> str:
        """A short summary: the configuration, the status and the final evaluated metrics (the
        curves stay in ``curves``, everything in :meth:`to_dict`)."""
        c = self.config
        named = c.label and c.label != c.mode and not c.label.startswith(f"{c.mode} wd=")
        run = f"wd={c.weight_decay:g} lr={c.lr:g} {c.optimizer} seed {c.seed}"
        head = f"{c.label if named else c.mode} {run}"
        shown = [k for k in self.final if k.startswith(("val_", "test_"))][:4]
        metrics = "".join(f", {k} {self.final[k]:.4g}" for k in shown)
        return f"RunResult({head}: {self.status}{metrics})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the weights)."""
        return {
            "config": self.config.to_dict(),
            "status": self.status,
            "diverged_epoch": self.diverged_epoch,
            "final": dict(self.final),
            "best": dict(self.best),
            "engine": self.engine,
            "seconds": self.seconds,
            "epochs": self.epochs,
            "curves": self.curves.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        """The inverse of :meth:`to_dict`."""
        return cls(
            config=RunConfig.from_dict(d["config"]),
            curves=Curves.from_dict(d.get("curves") or {}),
            final={k: nan_of(v) for k, v in (d.get("final") or {}).items()},
            status=d.get("status", "done"),
            diverged_epoch=d.get("diverged_epoch"),
            best=dict(d.get("best") or {}),
            seconds=d.get("seconds") or 0.0,
            engine=d.get("engine") or "",
            epochs=d.get("epochs"),
        )


@dataclass
class Check:
    """One equivalence check, and how far apart it ended (``max_rel_diff``: ‖Δ‖/‖ref‖)."""

    name: str
    reference: str
    max_abs_diff: float
    max_rel_diff: float
    identical: bool
    tolerance: float
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def verdict(self) -> str:
        """In words: identical (bitwise), DIFFERENT by how much, or not compared and why."""
        if self.identical:
            return "identical (bitwise)"
        d = self.max_abs_diff
        return (
            f"DIFFERENT (max |Δ| {d:.3g})" if math.isfinite(d) else f"not compared: {self.detail}"
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        """The inverse of :meth:`to_dict`."""
        kept = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        return cls(**{k: nan_of(v) if k.startswith("max_") else v for k, v in kept.items()})


@dataclass
class Result:
    """The result value of a demo, run or sweep: what every report, table and file reads.

    ``kind`` is ``demo``, ``run`` or ``sweep``; ``config`` the validated experiment config (the
    demo's settings for a demo) as a dict; ``data`` facts about the data (name, sizes, the
    teacher's Bayes-optimal alpha…); ``selection`` the weight decay chosen per (mode, lr)
    (:mod:`wdlab.selection`); ``checks`` equivalence checks by id; ``counts`` runs per status
    (sweeps); ``seconds`` the wall time; ``halving`` (sweeps) the compute the runs used against
    the full grid's (``compute``: configuration-epochs and row-steps) and, where successive
    halving pruned, its ``rungs``, ``eta`` and the ``decisions`` at each rung; ``failures``
    (sweeps, read from the store) why runs failed: error message → how many runs.
    """

    kind: str
    runs: list[RunResult] = field(default_factory=list)
    name: str = ""
    task: str = "binary"
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    decay_table: dict[str, Any] | None = None
    selection: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    halving: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def engine_note(self) -> str:
        """How the runs were trained (the engine's note of the first run)."""
        return self.engine or (self.runs[0].engine if self.runs else "")

    def __repr__(self) -> str:
        """One line: the kind, the name, the runs per status, the answer (``str()``: a table)."""
        name, final = f" {self.name!r}" if self.name else "", "partial, not final: " * self.partial
        head = f"{type(self).__name__} {self.kind}{name}: {self.runs_text()}"
        return f"<{head}; {final}{self.answer()}>"

    def runs_text(self) -> str:
        """``9 runs (2 done, 1 failed, 6 pending)``: every run of the study by status (the
        unfinished ones too, as ``wdlab ls`` counts them)."""
        counts = self.counts or _status_counts(self.runs)
        total = sum(counts.values()) or len(self.runs)
        statuses = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        return f"{total} run{'s' if total != 1 else ''}" + (f" ({statuses})" if statuses else "")

    def __str__(self) -> str:
        return repr(self)

    def answer(self, limit: int = 3) -> str:
        """The answer in words: the weight decay to use per (mode, lr) (wd = 0 where decay
        gave no measurable gain), the demo's check, or why there is none."""
        if "manual_equals_builtin" in self.checks:
            return f"manual vs builtin: {self.checks['manual_equals_builtin'].verdict()}"
        rows = [s for s in self.selection if not is_reference(s)]
        rows += [u for u in self.unanswered_rows() if not is_reference(u)]  # nothing to choose
        if not rows:
            chosen = self.selection  # rows, but only wd = 0 references: nothing chosen
            return "no weight decay chosen" if chosen else no_choice(self.runs, self.counts)
        answers = {_said(s) for s in rows}
        if len(rows) > 1 and len(answers) == 1:  # one answer everywhere
            n = "both" if len(rows) == 2 else f"all {len(rows)}"
            return f"{answers.pop()} in {n} (mode, lr) settings"
        parts = [f"{s['mode']} lr {s['lr']:g}: {_said(s)}" for s in rows[:limit]]
        more = f"; … {len(rows) - limit} more" if len(rows) > limit else ""
        return "; ".join(parts) + more

    def unanswered_rows(self) -> list[dict[str, Any]]:
        """The (mode, lr) settings with nothing to choose, each with its ``verdict`` (why):
        none here (a sweep's result names them)."""
        return []

    @property
    def unfinished(self) -> int:
        """Runs of the study not finished (pending, running or failed; 0 for a whole one)."""
        return sum(self.counts.get(k, 0) for k in UNFINISHED)

    @property
    def partial(self) -> bool:
        """Whether the study is not whole: its answer and report are then marked partial."""
        return self.unfinished > 0

    def waiting(self) -> set[float]:
        """The weight decays > 0 swept, where the study is partial (their runs may be training
        still, and a (mode, lr) missing one has not finished); else none."""
        swept = (self.config or {}).get("decay", {}).get("weight_decay") or []
        return {float(w) for w in swept if w > 0} if self.partial else set()

    def partial_note(self) -> str:
        """``partial: N of M runs unfinished``, or "" for a whole study."""
        note = f"partial: {self.unfinished} of {sum(self.counts.values())} runs unfinished"
        return note if self.partial else ""

    def partial_notice(self) -> str:
        """The line above a partial study's answer (``wdlab show``, the report), or ""."""
        n = self.partial_note().removeprefix("partial: ")  # "N of M runs unfinished"
        return f"Partial study ({n}): the answer below is not final" if self.partial else ""

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document (results.json, ``--json``)."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "kind": self.kind,
            "name": self.name,
            "task": self.task,
            "config": self.config,
            "data": self.data,
            "decay_table": self.decay_table,
            "engine": self.engine_note,
            "seconds": self.seconds,
            "selection": self.selection,
            "checks": {k: c.to_dict() for k, c in self.checks.items()},
            "counts": self.counts,
            "partial": self.partial,
            "halving": self.halving,
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Result:
        """A result from its document: this version, or a version-1 results.json."""
        if not isinstance(doc, Mapping):
            raise ValueError("a results document must be a JSON object")
        version = doc.get("version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"results written by a newer wdlab (schema version {version!r}); this one "
                f"reads versions 1 to {SCHEMA_VERSION}"
            )
        if version == 1:
            doc = _from_v1(doc)
        return cls(
            kind=doc.get("kind", "run"),
            runs=[RunResult.from_dict(r) for r in doc.get("runs", [])],
            name=doc.get("name", ""),
            task=doc.get("task") or "binary",
            config=dict(doc.get("config") or {}),
            data=dict(doc.get("data") or {}),
            decay_table=doc.get("decay_table"),
            selection=[{k: nan_of(v) for k, v in s.items()} for s in doc.get("selection") or []],
            checks={k: Check.from_dict(c) for k, c in (doc.get("checks") or {}).items()},
            seconds=doc.get("seconds") or 0.0,
            halving=dict(doc.get("halving") or {}),
            engine=doc.get("engine") or "",
            counts=dict(doc.get("counts") or {}),
        )


def _said(row: Mapping[str, Any]) -> str:
    """One row's answer in the one-line answer: ``use wd 0.01 (…)`` where it advises, else
    why not (``every run diverged``), with no "use" before it."""
    return use_text(row) if no_advice(row) else f"use {use_text(row)}"


def no_choice(runs: Sequence[RunResult], counts: Mapping[str, int] | None = None) -> str:
    """Why no weight decay is chosen from ``runs`` (``counts``: runs per status, failed ones
    too): no run finished, there is no validation split, or none has a finite score on every
    seed."""
    counts = {k: n for k, n in (counts or _status_counts(list(runs))).items() if n}
    each = ", ".join(f"{n} {k}" for k, n in counts.items())
    if not counts.get("done"):
        ended = set(counts) <= {"diverged", "failed"} and counts
        why = f"every run {' or '.join(counts)}" if ended else f"no run finished ({each})"
        why = (why + (f" ({each})" if ended and len(counts) > 1 else "")) if each else "no run"
    elif not any(k.startswith("val_") for r in runs if r.status == "done" for k in r.final):
        why = "no validation split (the article's data has train/test only)"
    else:
        why = "no weight decay has a finite validation score on every seed (each diverged or "
        why += "failed on some seed)"
    return f"{why}: no weight decay is chosen"


def _status_counts(runs: list[RunResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def _from_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 document (wdlab 0.1: demo or run results.json) in this version's shape."""
    if doc.get("experiment") != "seed":  # a run: the same shape, without kind and version
        return {**doc, "kind": doc.get("kind", "run")}
    s = doc.get("settings", {})
    runs = []
    for r in doc.get("runs", []):
        c = dict(r["curves"])
        c["eval_epoch"] = c.pop("test_epoch")
        final = {k: v for k, v in r["final"].items() if not k.startswith("best_") and k != "gap"}
        cfg = {"mode": r["mode"], "weight_decay": r["weight_decay"], "label": r["regime"]}
        best = {"metric": "test_loss", "value": r["final"].get("best_test_loss")}
        runs.append(
            {
                "config": cfg | {"lr": s.get("lr", 0.1), "seed": s.get("seed", 0)},
                "status": r.get("status", "done"),
                "final": final,
                "best": best | {"epoch": r["final"].get("best_test_epoch")},
                "engine": doc.get("engine", ""),
                "curves": c,
            }
        )
    return {
        "kind": "demo",
        "task": "binary",
        "config": s,
        "data": doc.get("data", {}),
        "engine": doc.get("engine", ""),
        "seconds": doc.get("seconds", 0.0),
        "checks": doc.get("checks", {}),
        "runs": runs,
    }
