"""What every dashboard logs of a study, the same way: run names, hyperparameters, the points
of the curves, final metrics, the selection as a table."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from wdlab.jsonsafe import json_safe
from wdlab.records import Result, RunConfig, RunResult, is_per_epoch, no_choice, use_wd


def run_name(c: RunConfig) -> str:
    """A run's name on a dashboard: readable and unique within its study (numbers as ``:g``
    writes them where that reads back as the same number, else every digit: 0.001 and
    0.0010000001 are two runs, and two folders)."""
    opts = "".join(f"_{k}={_num(v)}" if isinstance(v, float) else f"_{k}={v}" for k, v in c.options)
    return f"{c.mode}_wd={_num(c.weight_decay)}_lr={_num(c.lr)}_{c.optimizer}{opts}_seed={c.seed}"


def _num(v: float) -> str:
    text = f"{v:g}"
    return text if float(text) == v else repr(float(v))


def safe_name(text: str) -> str:
    """``text`` as one folder name (no separators, nothing hidden)."""
    name = re.sub(r"[^\w.=+,-]+", "_", str(text)).strip("._")
    return name or "study"


def hparams(run: RunResult) -> dict[str, Any]:
    """A run's configuration as flat hyperparameters (numbers, strings, booleans)."""
    c = run.config
    out: dict[str, Any] = {
        "mode": c.mode,
        "weight_decay": c.weight_decay,
        "lr": c.lr,
        "optimizer": c.optimizer,
        "seed": c.seed,
    }
    for k, v in c.options:
        out[f"option.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out | {"status": run.status}


def scalars(run: RunResult) -> Iterator[tuple[str, int, float]]:
    """(series, epoch, value) of every finite point of a run's curves."""
    curves = run.curves
    for key, values in curves.series.items():
        epochs = curves.epoch if is_per_epoch(key) else curves.eval_epoch
        for epoch, v in zip(epochs, values, strict=False):
            if isinstance(v, (int, float)) and math.isfinite(v):
                yield key, int(epoch), float(v)


def finals(run: RunResult) -> dict[str, float]:
    """A run's finite final metrics as a dashboard names them: ``final/<key>`` (the last
    evaluation's) and, where early stopping reports the run at its best epoch,
    ``best/<key>`` (that epoch's numbers, which the selection used)."""
    out = {f"final/{k}": v for k, v in run.final.items()}
    out |= {f"best/{k}": v for k, v in (run.best.get("at") or {}).items()}
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


SELECTION_COLUMNS = (
    ("mode", "mode"),
    ("lr", "lr"),
    ("use_wd", "use wd"),
    ("weight_decay", "chosen wd"),
    ("val", "val"),
    ("test_mean", "test mean"),
    ("test_std", "test std"),
    ("test_at_zero", "test at wd = 0"),
    ("verdict", "verdict"),
    ("seeds", "seeds"),
)


def selection_rows(result: Result) -> list[dict[str, Any]]:
    """The selection's rows as a dashboard keeps them: each with ``use_wd``, the weight decay
    the answer says to use (the chosen one where it beat wd = 0, else 0), and as strict JSON
    (no NaN: null)."""
    return [json_safe(dict(s) | {"use_wd": use_wd(s)}) for s in result.selection]


def selection_scalars(result: Result, sep: str) -> list[tuple[str, float]]:
    """Per (mode, lr): ``use_wd/<mode>/lr<sep><lr>`` (the answer) and ``chosen_wd/…`` (the
    weight decay chosen on validation, which the answer uses only where it beat wd = 0)."""
    out = []
    for s in result.selection:
        where = f"{s['mode']}/lr{sep}{s['lr']:g}"
        out += [(f"use_wd/{where}", use_wd(s)), (f"chosen_wd/{where}", float(s["weight_decay"]))]
    return out


def selection_markdown(result: Result) -> str:
    """The selection as a Markdown table (what the report's table says)."""
    head = "| " + " | ".join(h for _, h in SELECTION_COLUMNS) + " |"
    rule = "|" + "---|" * len(SELECTION_COLUMNS)
    rows = [
        "| " + " | ".join(_cell(s.get(k)) for k, _ in SELECTION_COLUMNS) + " |"
        for s in selection_rows(result)
    ]
    table = "\n".join([head, rule, *rows]) if rows else no_choice(result.runs, result.counts)
    notice = result.partial_notice()  # a dashboard is read instead of the terminal's warning
    return f"**{notice}**\n\n{table}" if notice else table


def _cell(v: object) -> str:
    text = f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)
    return text.replace("|", "\\|")
