"""`wdlab report`: one self-contained HTML page plus one PNG per figure, made only from a
results file (demo, run) or a study's store (sweep), so it can be made again at any time.

The page has no script, no web font and no remote resource: figures are inline PNGs (data URIs)
and every user-supplied string (study names, column names, config values, file names) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from wdlab import decay as D
from wdlab.engine import RunResult
from wdlab.report import plots

CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccd;padding:.25em .6em;text-align:right}th{background:#f1f3f8}
td.l,th.l{text-align:left}figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#445;font-size:.92em}.pass{color:#11703a;font-weight:600}
.fail{color:#b3161b;font-weight:700}code{background:#f4f4f7;padding:0 .25em}
.meta{color:#556;font-size:.9em}
"""


@dataclass
class ReportData:
    """What a report shows, read from a results file or a store."""

    title: str
    kind: str  # demo | run | sweep
    task: str
    runs: list[RunResult]
    headline: tuple[list[str], list[list[str]]]
    checks: list[dict] = field(default_factory=list)
    formulas: list[tuple[str, str]] = field(default_factory=list)
    decay_table: dict | None = None
    config: dict = field(default_factory=dict)
    selection: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def _f(v: Any, fmt: str = ".4f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _run_from_dict(d: dict) -> RunResult:
    from wdlab.store import _config, _unnan

    return RunResult(
        config=_config(d["config"]),
        curves=_unnan(d["curves"]),
        final=_unnan(d["final"]),
        status=d.get("status", "done"),
        diverged_epoch=d.get("diverged_epoch"),
        best=d.get("best") or {},
        engine=d.get("engine", ""),
    )


def _demo_runs(doc: dict) -> list[RunResult]:
    from wdlab.engine import RunConfig

    s = doc["settings"]
    runs = []
    for r in doc["runs"]:
        c = r["curves"]
        curves = {
            "epoch": c["epoch"],
            "train_loss": c["train_loss"],
            "weight_norm": c["weight_norm"],
            "eval_epoch": c["test_epoch"],
            "test_loss": c["test_loss"],
            "test_acc": c["test_acc"],
            "train_acc": c["train_acc"],
            "train_loss_eval": c["train_loss_eval"],
        }
        cfg = RunConfig(
            mode=r["mode"],
            weight_decay=r["weight_decay"],
            lr=s["lr"],
            seed=s["seed"],
            label=r["regime"],
        )
        final = {k: (math.nan if v is None else v) for k, v in r["final"].items()}
        best = {
            "metric": "test_loss",
            "value": r["final"]["best_test_loss"],
            "epoch": r["final"]["best_test_epoch"],
        }
        runs.append(
            RunResult(
                config=cfg,
                curves=curves,
                final=final,
                status=r["status"],
                best=best,
                engine=doc.get("engine", ""),
            )
        )
    return runs


def load_report_data(path: str | Path) -> ReportData:
    """Read a demo or run output folder (results.json) or a sweep's study folder (study.db)."""
    p = Path(path)
    data = _load(p)
    verify = p / "verify.json"
    if verify.exists():  # `wdlab verify --out FOLDER` wrote the oracle checks here
        data.checks += json.loads(verify.read_text()).get("checks", [])
    return data


def _load(p: Path) -> ReportData:
    if (p / "study.db").exists():
        return _from_study(p)
    results = p / "results.json"
    if not results.exists():
        raise ValueError(f"nothing to report in {p}: no results.json and no study.db")
    try:
        doc = json.loads(results.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{results} is not valid JSON: {exc}") from None
    if doc.get("experiment") == "seed":
        return _from_demo(doc, p)
    return _from_run(doc, p)


def _from_demo(doc: dict, p: Path) -> ReportData:
    from wdlab.models import SeedMLP

    runs = _demo_runs(doc)
    s = doc["settings"]
    head = [
        "regime",
        "wd",
        "train loss",
        "test loss",
        "train acc",
        "test acc",
        "gap",
        "|w|",
        "best epoch",
    ]
    rows = [
        [
            r["regime"],
            _f(r["weight_decay"], "g"),
            _f(r["final"]["train_loss"]),
            _f(r["final"]["test_loss"]),
            _f(r["final"]["train_acc"], ".3f"),
            _f(r["final"]["test_acc"], ".3f"),
            _f(r["final"]["gap"], ".3f"),
            _f(r["final"]["weight_norm"], ".3f"),
            str(r["final"]["best_test_epoch"]),
        ]
        for r in doc["runs"]
    ]
    table = D.decay_table(SeedMLP(int(s["dim"])), D.EVERYTHING).to_dict()
    table["note"] = "the article's rule: every tensor decays, biases included"
    checks = [doc["checks"]["manual_equals_builtin"]]
    return ReportData(
        title="The article's experiment",
        kind="demo",
        task="binary",
        runs=runs,
        headline=(head, rows),
        checks=checks,
        formulas=[(m, D.formula(m, "SGD")) for m in ("none", "coupled", "builtin")],
        decay_table=table,
        config={"settings": s},
        meta={"folder": p.name, "name": "seed-noise (random labels)", **doc.get("data", {})},
    )


def _from_run(doc: dict, p: Path) -> ReportData:
    runs = [_run_from_dict(r) for r in doc.get("runs", [])]
    if not runs:
        raise ValueError(f"{p}/results.json holds no runs")
    return _experiment_report(
        p.name,
        "run",
        doc.get("task", "binary"),
        runs,
        doc.get("selection", []),
        doc.get("config", {}),
        doc.get("data", {}),
        doc.get("decay_table"),
    )


def _from_study(p: Path) -> ReportData:
    from wdlab.study import load_study

    res = load_study(p)
    return _experiment_report(
        res.name or p.name,
        "sweep",
        res.task,
        res.runs,
        res.selection,
        res.config,
        res.data,
        res.data.get("decay_table"),
    )


def _experiment_report(
    name: str,
    kind: str,
    task: str,
    runs: list[RunResult],
    selection: list[dict],
    config: dict,
    data: dict,
    table: dict | None,
) -> ReportData:
    from wdlab.experiments.run import metric_for

    key, metric, _ = metric_for(task)
    head = [
        "mode",
        "lr",
        "best wd (chosen on val)",
        f"val {metric}",
        f"test {metric} (mean ± std)",
        f"test {metric} at wd = 0",
        "seeds",
    ]
    rows = [
        [
            s["mode"],
            _f(s["lr"], "g"),
            _f(s["best_wd"], "g"),
            _f(s.get(f"val_{key}")),
            f"{_f(s[f'test_{key}_mean'])} ± {_f(s[f'test_{key}_std'])}",
            _f(s[f"test_{key}_at_wd0"]),
            str(s["seeds"]),
        ]
        for s in selection
    ]
    if not rows:
        head = ["mode", "wd", "lr", "seed", "train loss", "test loss", f"test {metric}"]
        rows = [
            [
                r.config.mode,
                _f(r.config.weight_decay, "g"),
                _f(r.config.lr, "g"),
                str(r.config.seed),
                _f(r.final.get("train_loss")),
                _f(r.final.get("test_loss")),
                _f(r.final.get(f"test_{key}")),
            ]
            for r in runs
        ]
    opt = runs[0].config.optimizer if runs else "sgd"
    from wdlab.engine import optimizer_class

    opt_name = optimizer_class(opt).__name__
    modes = list(dict.fromkeys(r.config.mode for r in runs))
    return ReportData(
        title=f"{kind}: {name}",
        kind=kind,
        task=task,
        runs=runs,
        headline=(head, rows),
        formulas=[(m, D.formula(m, opt_name)) for m in modes],
        decay_table=table,
        config=config,
        selection=selection,
        meta={"data": data.get("name", ""), **data},
    )


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def figures(data: ReportData) -> list[tuple[str, str, Figure]]:
    """(file stem, caption, figure) for every figure this report has."""
    from wdlab.experiments.run import LOSS_NAMES, metric_for

    runs = data.runs
    split = "val" if any("val_loss" in r.curves for r in runs) else "test"
    shown = runs if len(runs) <= 8 else _representative(runs)
    out = [
        (
            "losses",
            f"Train loss (solid) and {split} loss (dashed) on one epoch axis; dots mark "
            f"each run's best {split} epoch. Look for {split} loss rising while train loss falls: "
            "overfitting.",
            plots.loss_curves(shown, split=split, ylabel=LOSS_NAMES.get(data.task, "loss")),
        ),
        (
            "gap",
            f"Generalisation gap ({split} loss − train loss) over epochs. Decay should keep it "
            "small; a growing gap is memorisation.",
            plots.gap_curves(shown, split),
        ),
        (
            "weight_norm",
            "L2 norm of the decayed tensors over epochs. Decay visibly shrinks it.",
            plots.weight_norm_curves(shown),
        ),
    ]
    wds = {r.config.weight_decay for r in runs}
    if len(wds - {0.0}) >= 2 and data.selection:
        key, name, _ = metric_for(data.task)
        chosen = {(s["mode"], s["lr"]): s["best_wd"] for s in data.selection}
        out.append(
            (
                "wd_curve",
                f"Validation (solid) and test (dashed) {name} against weight decay "
                "(log axis), band over seeds; ★ the wd chosen on validation; thin lines: "
                "wd = 0.",
                plots.wd_curve(runs, key, name, chosen),
            )
        )
        if len({r.config.lr for r in runs}) >= 2:
            out.append(
                (
                    "heatmap",
                    f"Validation {name} over lr × weight decay, one panel per "
                    "mode. Adam + l2 beside decoupled is Loshchilov & Hutter's picture: "
                    "decoupling makes the best wd independent of the lr.",
                    plots.lr_wd_heatmap(runs, key, name),
                )
            )
    return out


def _representative(runs: list[RunResult]) -> list[RunResult]:
    from wdlab.experiments.run import _representative as rep

    return rep(runs)


def _table(head: list[str], rows: list[list[str]], first_left: bool = True) -> str:
    th = "".join(
        f'<th class="{"l" if i == 0 and first_left else ""}">{escape(h)}</th>'
        for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"l" if i == 0 and first_left else ""}">{escape(str(c))}</td>'
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="headline"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def build_report(path: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html`` and one PNG per figure into ``out`` (default: ``path``)."""
    data = load_report_data(path)
    target = Path(out) if out else Path(path)
    target.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    fig_html = []
    for stem, caption, fig in figures(data):
        png = _png(fig)
        paths[stem] = target / f"{stem}.png"
        paths[stem].write_bytes(png)
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        fig_html.append(
            f'<figure id="fig-{stem}"><img alt="{escape(stem)}" src="{uri}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    data_name = str(data.meta.get("data") or data.meta.get("name", ""))
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(data.title)} — wdlab report</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(data.title)}</h1>",
        f'<p class="meta">wdlab report · {escape(data.kind)} · task {escape(data.task)} · '
        f"{len(data.runs)} runs · data {escape(data_name)}</p>",
        "<h2>Results</h2>",
        _table(*data.headline),
        "<h2>Figures</h2>",
        *fig_html,
    ]
    if data.checks:
        rows = [
            [
                c["name"],
                c["reference"],
                f"{c['max_abs_diff']:.3g}",
                "identical (bitwise)" if c["identical"] else f"rel {c['max_rel_diff']:.3g}",
                "pass" if c["passed"] else "FAIL",
            ]
            for c in data.checks
        ]
        parts += [
            "<h2>Verification</h2>",
            _table(["check", "reference", "max |Δ|", "difference", "result"], rows),
        ]
    parts.append("<h2>Configuration</h2>")
    parts.append(_table(["mode", "update each step"], [list(f) for f in data.formulas]))
    if data.decay_table:
        t = data.decay_table
        parts.append(
            f"<p>Which parameters decay: {escape(t.get('rule', ''))}. "
            f"{t.get('decayed_tensors', '?')} tensors ({t.get('decayed_parameters', 0):,} "
            f"parameters) decay; {t.get('kept_tensors', '?')} tensors "
            f"({t.get('kept_parameters', 0):,} parameters) do not."
            + (f' <span class="meta">{escape(t["note"])}</span>' if t.get("note") else "")
            + "</p>"
        )
        parts.append(
            _table(
                ["parameter", "shape", "count", "decays", "why"],
                [
                    [
                        r["name"],
                        "×".join(map(str, r["shape"])),
                        f"{r['numel']:,}",
                        "yes" if r["decays"] else "no",
                        r["why"],
                    ]
                    for r in t.get("parameters", [])
                ],
            )
        )
    if data.config:
        parts.append(
            "<details><summary>Full configuration</summary><pre>"
            f"{escape(json.dumps(data.config, indent=1, default=str))}</pre></details>"
        )
    engine_note = data.runs[0].engine if data.runs else ""
    parts.append(f'<p class="meta">engine: {escape(engine_note)}</p></body></html>')
    paths["report"] = target / "report.html"
    paths["report"].write_text("\n".join(parts), encoding="utf-8")
    return paths
