"""`wdlab report`: one self-contained HTML page plus one PNG per figure, made from a result
value (read back from a results file or a study's store, so it can be made again any time).

The page has no script, no web font and no remote resource: figures are inline PNGs (data URIs)
and every user-supplied string (study names, column names, config values, file names) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from wdlab.decay import formula
from wdlab.models import MODEL_KINDS, MODEL_OPTIONS
from wdlab.optimizers import class_name
from wdlab.records import UNFINISHED, Result, RunResult, is_reference, no_choice, use_wd
from wdlab.report.figures import FIGURES
from wdlab.report.text import (
    compute_text,
    edge_lines,
    engine_line,
    failed_lines,
    short,
    spread,
    use_cell,
    verdict_summary,
    verdict_text,
)
from wdlab.selection import has_timescale, metric_for, selection_rule, use_tau
from wdlab.unanswered import unanswered

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
.meta{color:#556;font-size:.9em}.answer{font-size:1.08em;font-weight:600}
tr.gain td{background:#eaf6ee}tr.nogain td{background:#fbf4e6}tr.ref td{color:#556}
table.headline{display:block;max-width:100%;overflow-x:auto}td:not(.l){white-space:nowrap}
h1,h2,p,caption,summary,pre{overflow-wrap:anywhere}pre{white-space:pre-wrap}
@media print{tr,figure{break-inside:avoid}h2{break-after:avoid}
table.headline{display:table;overflow:visible;font-size:.8em}td:not(.l){white-space:normal}}
"""


def _n(n: Any, word: str) -> str:
    """``n`` words, one word for one (a count an old study lacks: "?")."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s" if isinstance(n, int) else f"? {word}s"


def _f(v: Any, fmt: str = ".4f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def title(result: Result) -> str:
    """The report's heading: the kind and the study's name (else the data's), never empty."""
    if result.kind == "demo":
        return "The article's experiment"
    name = result.name or str(result.data.get("name") or "")
    partial = f" ({result.partial_note()})" if result.partial else ""
    return (f"{result.kind}: {name}" if name else result.kind) + partial


def headline(result: Result) -> tuple[list[str], list[list[str]]]:
    """The results table: the demo's regimes, else the answer per (mode, lr) (every run when
    nothing could be chosen)."""
    if result.kind == "demo":
        return _demo_headline(result)
    if result.selection:
        head, rows = answer_table(result.selection)
        for s in unanswered(result.runs, result.selection, result.waiting(), result.config):
            row = ["—"] * len(head)  # each cell under its column (a τ_epoch column shifted it)
            row[:2], row[head.index("verdict")] = [s["mode"], short(s["lr"])], s["verdict"]
            rows.append(row)
        return head, rows
    key, metric, _ = metric_for(result.task)
    head = ["mode", "wd", "lr", "seed", "status", "epochs", "train loss", f"val {metric}"]
    head += ["test loss", f"test {metric}"]
    rows = [
        [
            r.config.mode,
            short(r.config.weight_decay),
            short(r.config.lr),
            str(r.config.seed),
            r.status,  # a partial study's: pruned, running, pending beside done
            _epochs(r),
            _f(r.reported.get("train_loss")),
            _f(r.reported.get(f"val_{key}")),  # what a rung or the choice reads
            _f(r.reported.get("test_loss")),
            _f(r.reported.get(f"test_{key}")),
        ]
        for r in result.runs
    ]
    return head, rows


def _epochs(run: RunResult) -> str:
    """The epochs a run trained; a diverged run's, before it diverged (it may have trained on
    to the next check, as NaN)."""
    if run.diverged_epoch is not None:
        return f"{run.diverged_epoch}, diverged"
    return "—" if run.epochs is None else str(run.epochs)


def answer_table(selection: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per (mode, lr): the weight decay to use (short notation; wd = 0 where decay gained
    nothing measurable) and its τ_epoch (none at wd = 0), the verdict against wd = 0,
    validation and test beside wd = 0's, and the seeds."""
    name = selection[0]["metric_name"]
    taus = has_timescale(selection)
    head = ["mode", "lr", "use wd", *(["τ_epoch"] if taus else []), "verdict"]
    head += [f"val {name}", "val at wd = 0", f"test {name} (mean ± std)", "test at wd = 0"]
    rows = []
    for s in selection:
        tau = [short(use_tau(s))] if taus else []
        # the val and test numbers are the chosen weight decay's: named where it is not the
        # one to use (a browser trial read them as wd = 0's beside "use wd 0")
        whose = f" (wd {short(s['weight_decay'])})" if s["weight_decay"] != use_wd(s) else ""
        rows.append(
            [
                s["mode"],
                short(s["lr"]),
                use_cell(s),
                *tau,
                verdict_text(s),
                _f(s["val"]) + whose,
                _f(s["val_at_zero"]),
                f"{_f(s['test_mean'])} ± {spread(s, '.4f')}{whose}",
                _f(s["test_at_zero"]),
                str(s["seeds"]),
            ]
        )
    return [*head, "seeds"], rows


def headline_html(result: Result, caption: str = "") -> str:
    """:func:`headline` as one HTML table, as the report shows it (a notebook's view of a
    result), under ``caption``."""
    return _table(*headline(result), caption=caption)


def _answer_html(result: Result) -> list[str]:
    """The page's opening: the verdict in one sentence, the rule, and the answer table."""
    sel = result.selection
    if not sel:
        if result.kind == "demo":
            return ["<h2>Results</h2>", _table(*headline(result))]
        if not result.runs:
            note = f"No run has finished yet ({result.partial_note()})."
            return ["<h2>Results</h2>", f"<p>{escape(note)}</p>"]
        why = no_choice(result.runs, result.counts)
        ended = Counter(r.status for r in result.runs)  # done, pruned at a rung, diverged
        ended_text = ", ".join(f"{n} {status}" for status, n in ended.items())
        to_do = ", ".join(f"{result.counts[k]} {k}" for k in UNFINISHED if result.counts.get(k))
        every = (
            f"Every run with results ({ended_text}; not yet: {to_do})"
            if result.partial
            else "Every run"
        )
        note = f"{why[:1].upper()}{why[1:]} (never on test). {every}:"
        table = _table(*headline(result))
        return ["<h2>Results</h2>", f"<p>{escape(note)}</p>", *_failed_html(result), table]
    others = unanswered(result.runs, sel, result.waiting(), result.config)  # added rows
    marks = [
        "ref" if is_reference(s) else ("gain" if s["better_than_zero"] else "nogain") for s in sel
    ] + [""] * len(others)
    summary = verdict_summary(sel, others)
    return [
        "<h2>Answer: which weight decay?</h2>",
        *_partial_html(result),
        f'<p class="answer">{escape(summary[:1].upper() + summary[1:])}.</p>',
        *(
            f'<p class="answer">{escape(line[:1].upper() + line[1:])}.</p>'
            for line in edge_lines(sel)
        ),
        f'<p class="meta">{escape(selection_rule(sel, others))}; '
        "reported on test (never used to choose).</p>",
        *_compute_html(result),
        *_failed_html(result),
        _table(*headline(result), marks=marks),
    ]


def _partial_html(result: Result) -> list[str]:
    """A partial study's notice, above its answer (as ``wdlab show`` prints it)."""
    if not result.partial:
        return []
    return [f'<p class="answer">{escape(result.partial_notice())}.</p>']


def _failed_html(result: Result) -> list[str]:
    """Why runs failed, one line per error (as ``wdlab show`` prints it)."""
    return [f'<p class="meta">{escape(line)}</p>' for line in failed_lines(result.failures)]


def _compute_html(result: Result) -> list[str]:
    """The compute the sweep used against the full grid's, where it used less."""
    text = compute_text(result.halving)
    return [f'<p class="meta">{escape(text[:1].upper() + text[1:])}.</p>'] if text else []


def _demo_headline(result: Result) -> tuple[list[str], list[list[str]]]:
    head = ["regime", "wd", "train loss", "test loss", "train acc", "test acc", "gap", "|w|"]
    rows = []
    for r in result.runs:
        f = r.final
        rows.append(
            [
                r.config.label,
                _f(r.config.weight_decay, "g"),
                _f(f["train_loss"]),
                _f(f["test_loss"]),
                _f(f["train_acc"], ".3f"),
                _f(f["test_acc"], ".3f"),
                _f(f["test_loss"] - f["train_loss"], ".3f"),
                _f(f["weight_norm"], ".3f"),
                str(r.best.get("epoch")),
            ]
        )
    return [*head, "best epoch"], rows


def formulas(result: Result) -> list[list[str]]:
    """Each mode of the result and the update it makes with the result's optimizer."""
    config = result.config or {}  # with no finished run: the grid's
    runs = [r.config for r in result.runs]
    opt = runs[0].optimizer if runs else config.get("train", {}).get("optimizer") or "sgd"
    modes = dict.fromkeys(c.mode for c in runs) or config.get("decay", {}).get("modes", [])
    return [[m, formula(m, class_name(opt))] for m in modes]


def _result_class(column: str, cell: object) -> str:
    """A verification's result cell drawn as passed or failed (the CSS's .pass, .fail)."""
    return {"pass": "pass", "FAIL": "fail"}.get(str(cell), "") if column == "result" else ""


def _table(
    head: list[str],
    rows: list[list[str]],
    first_left: bool = True,
    marks: list[str] | None = None,
    left: tuple[str, ...] = ("verdict",),
    caption: str = "",
) -> str:
    lefts = {i for i, h in enumerate(head) if (i == 0 and first_left) or h in left}
    th = "".join(
        f'<th class="{"l" if i in lefts else ""}">{escape(h)}</th>' for i, h in enumerate(head)
    )
    marks = marks or [""] * len(rows)
    body = "".join(
        f'<tr class="{escape(mark)}">'
        + "".join(
            f'<td class="{"l" if i in lefts else _result_class(head[i], c)}">'
            f"{_cell(c, i in lefts)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row, mark in zip(rows, marks, strict=True)
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="headline">{cap}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


_NUMBER = re.compile(r"[-−]?\d")


def _cell(c: Any, left: bool) -> str:
    """A cell's text, escaped; a number's note in parentheses (``0.9444 (wd 0.0001)``) on a line
    of its own, so the table fits the page and its verdicts are not squeezed."""
    text = escape(str(c))
    return text.replace(" (", " <br>(", 1) if not left and _NUMBER.match(text) else text


def write_report(result: Result, out: str | Path) -> dict[str, Path]:
    """Write ``report.html`` and one PNG per figure of ``result`` into ``out``."""
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    fig_html = []
    for spec in FIGURES.values():
        if not spec.applies(result):
            continue
        png = _png(spec.draw(result))
        paths[spec.name] = target / f"{spec.name}.png"
        paths[spec.name].write_bytes(png)
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        fig_html.append(
            f'<figure id="fig-{spec.name}"><img alt="{escape(spec.name)}" src="{uri}">'
            f"<figcaption>{escape(spec.caption(result))}</figcaption></figure>"
        )
    name = title(result)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(name)} — wdlab report</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(name)}</h1>",
        f'<p class="meta">wdlab report · {escape(result.kind)} · task {escape(result.task)} · '
        f"{escape(result.runs_text())} · data {escape(str(result.data.get('name', '')))}</p>",
        *_answer_html(result),
        *(["<h2>Figures</h2>", *fig_html] if fig_html else []),
        *_checks_html(result),
        *_configuration_html(result),
        *(f'<p class="meta">{escape(e)}</p>' for e in engine_line(result)),
        "</body></html>",
    ]
    paths["report"] = target / "report.html"
    paths["report"].write_text("\n".join(parts), encoding="utf-8")
    return paths


def _checks_html(result: Result) -> list[str]:
    if not result.checks:
        return []
    rows = [
        [
            c.name,
            c.reference,
            f"{c.max_abs_diff:.3g}",
            "identical (bitwise)"
            if c.identical
            else f"rel {c.max_rel_diff:.3g}"
            if math.isfinite(c.max_rel_diff)
            else "not compared",
            "pass" if c.passed else "FAIL",
        ]
        for c in result.checks.values()
    ]
    head = ["check", "reference", "max |Δ|", "difference", "result"]
    return ["<h2>Verification</h2>", _table(head, rows)]


def _configuration_html(result: Result) -> list[str]:
    parts = ["<h2>Configuration</h2>", _table(["mode", "update each step"], formulas(result))]
    t = result.decay_table
    if t:
        note = f' <span class="meta">{escape(t["note"])}</span>' if t.get("note") else ""
        dt, kt = t.get("decayed_tensors", "?"), t.get("kept_tensors", "?")
        parts.append(
            f"<p>Which parameters decay: {escape(t.get('rule', ''))}. "
            f"{_n(dt, 'tensor')} ({_n(t.get('decayed_parameters', 0), 'parameter')}) "
            f"decay{'s' * (dt == 1)}; {_n(kt, 'tensor')} "
            f"({_n(t.get('kept_parameters', 0), 'parameter')}) do{'es' * (kt == 1)} not.{note}</p>"
        )
        own = {  # group_wd's tensors (a study stored before wdlab recorded them: none)
            r["name"]: f"{r['own_wd'][1]:g} (group_wd {r['own_wd'][0]})"
            for r in t.get("parameters", [])
            if r.get("own_wd")
        }
        rows = [
            [
                r["name"],
                "×".join(map(str, r["shape"])),
                f"{r['numel']:,}",
                "yes" if r["decays"] else "no",
                r["why"],
                *([own.get(r["name"], "the swept wd" if r["decays"] else "—")] if own else []),
            ]
            for r in t.get("parameters", [])
        ]
        wd = ["wd"] if own else []
        parts.append(_table(["parameter", "shape", "count", "decays", "why", *wd], rows))
        if own and len(own) == t.get("decayed_tensors"):
            parts.append(
                '<p class="meta">Every decaying tensor has its own weight decay (group_wd): '
                "the runs of the grid's weight decays > 0 train alike.</p>"
            )
    if result.config:
        shown = json.dumps(_read_config(result.config), indent=1, default=str, ensure_ascii=False)
        config = escape(shown)
        parts.append(f"<details><summary>Full configuration</summary><pre>{config}</pre></details>")
    return parts


def _read_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration without the model options its kind does not read (a factory's study
    showed the built-in MLP's ``hidden``, ``activation``… it never used)."""
    model = config.get("model")
    name = model.get("kind") if isinstance(model, dict) else None
    kind = MODEL_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        return config
    unread = set(MODEL_OPTIONS) - set(kind.options)
    return config | {"model": {k: v for k, v in model.items() if k not in unread}}
