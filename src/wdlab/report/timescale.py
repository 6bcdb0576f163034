"""The timescale check's table and figure (:mod:`wdlab.pipelines.timescale`), drawn from its
result document (``TimescaleResult.to_dict()``), so a saved ``timescale.json`` redraws them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from wdlab.report.literal import literal
from wdlab.report.palette import colors as palette
from wdlab.timescale import keep_tau_slope


def _setup(s: Mapping[str, Any]) -> str:
    sched = s.get("schedule") or "constant"
    hidden = "-".join(map(str, s["hidden"]))
    return (
        f"AdamW (decoupled) lr {s['lr']:g} ({sched}), batch {s['batch_size']}, "
        f"{s['epochs']} epochs, mlp {hidden} {s['activation']}, {s['data']}, "
        f"{len(s['seeds'])} seeds"
    )


def timescale_table(doc: Mapping[str, Any]) -> str:
    """The terminal summary: the best λ and τ_epoch per size, the two predictions, the slope."""
    s, p, sl = doc["settings"], doc["prediction"], doc["slope"]
    lines = [f"timescale check: {_setup(s)}; λ chosen on validation loss", ""]
    lines.append(f"{'N':>6} {'M':>4}  {'best λ':>9}  {'±seeds':>7}  {'best τ_epoch':>11}  note")
    for o in doc["optima"]:
        note = "at the grid's edge" if o["at_edge"] else ""
        sd = o["seed_log10_wd_sd"]
        spread = f"{sd:.2f} dec" if math.isfinite(sd) else "-"
        lines.append(
            f"{o['n']:>6} {o['iters_per_epoch']:>4}  {o['best_wd']:>9.3g}  {spread:>7}  "
            f"{o['best_tau_epoch']:>11.3g}  {note}"
        )
    lines += [
        "",
        f"predicting the best λ at N={p['to_n']} from N={p['from_n']} "
        f"(measured {p['measured_wd']:.3g}, val loss {p['best_val_loss']:.4f}):",
        f"  keep τ_epoch  λ = {p['keep_tau_wd']:.3g}  off by {p['keep_tau_decades']:.2f} decades"
        f"  {_loss_there(p['keep_tau_val_loss'])}",
        f"  keep λ        λ = {p['keep_wd_wd']:.3g}  off by {p['keep_wd_decades']:.2f} decades"
        f"  {_loss_there(p['keep_wd_val_loss'])}",
        f"  seed by seed, keep τ_epoch is closer in {p['seeds_keep_tau_better']} of "
        f"{len(s['seeds'])}; its advantage {p['seed_advantage_decades']:+.2f} ± "
        f"{_spread(p['seed_advantage_se'])} decades (mean ± se)",
        f"slope of log10 λ* on log10 N: {sl['value']:.2f} (per seed sd {_spread(sl['seed_sd'])}); "
        f"keep τ_epoch predicts {keep_tau_slope(sl)}, keep λ 0",
        "",
        doc["verdict"],
        f"time: {doc['seconds']:.1f} s",
    ]
    return "\n".join(lines)


def _spread(value: float | None) -> str:
    """A standard error or deviation to 2 decimals; "-" where one seed has none (NaN)."""
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _loss_panel(ax: Any, doc: Mapping[str, Any], x_key: str, xlabel: str) -> None:
    colors = palette(len(doc["optima"]))
    for i, o in enumerate(doc["optima"]):
        c = sorted((r for r in doc["curves"] if r["n"] == o["n"]), key=lambda r: r[x_key])
        xs, ys = [r[x_key] for r in c], [r["val_loss"] for r in c]
        sd = [r["val_loss_sd"] if math.isfinite(r["val_loss_sd"]) else 0.0 for r in c]
        color = colors[i]
        ax.plot(xs, ys, marker="o", ms=3, color=color, label=f"N = {o['n']}")
        low = [y - d for y, d in zip(ys, sd, strict=True)]
        high = [y + d for y, d in zip(ys, sd, strict=True)]
        ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
        best = o["best_wd"] if x_key == "weight_decay" else o["best_tau_epoch"]
        ax.axvline(best, color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (mean ± sd over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _optimum_panel(ax: Any, doc: Mapping[str, Any], tau: bool) -> None:
    s, optima = doc["settings"], doc["optima"]
    ns = [o["n"] for o in optima]

    def as_tau(log_wd: float, o: Mapping[str, Any]) -> float:
        return 1.0 / (s["lr"] * 10**log_wd * o["iters_per_epoch"])

    for o in optima:
        seeds = [v for v in o["seed_log10_wd"] if math.isfinite(v)]
        ys = [as_tau(v, o) if tau else 10**v for v in seeds]
        ax.plot([o["n"]] * len(ys), ys, ls="", marker=".", color="grey", alpha=0.6)
    best = [o["best_tau_epoch"] if tau else o["best_wd"] for o in optima]
    ax.plot(ns, best, marker="o", color="black", label="measured (seed-mean loss; dots: seeds)")
    first = optima[0]
    # keep τ_epoch: λ' = λ·M/M'; keep λ: the same λ, whose τ_epoch falls as M grows
    wd_keep_tau = [
        first["best_wd"] * first["iters_per_epoch"] / o["iters_per_epoch"] for o in optima
    ]
    wd_keep_wd = [first["best_wd"]] * len(ns)
    if tau:
        keep_tau = [first["best_tau_epoch"]] * len(ns)
        keep_wd = [as_tau(math.log10(w), o) for w, o in zip(wd_keep_wd, optima, strict=True)]
    else:
        keep_tau, keep_wd = wd_keep_tau, wd_keep_wd
    ax.plot(ns, keep_tau, ls="--", color="tab:green", label="keep τ_epoch")
    ax.plot(ns, keep_wd, ls="--", color="tab:red", label="keep λ")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("training rows N")
    ax.set_ylabel("best τ_epoch (epochs)" if tau else "best λ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


@literal
def timescale_figure(doc: Mapping[str, Any]) -> Figure:
    """Four panels: validation loss against λ and against τ_epoch, one curve per N (dotted:
    each N's best); the best λ and the best τ_epoch against N with both predictions."""
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    _loss_panel(axes[0][0], doc, "weight_decay", "weight decay λ (log)")
    _loss_panel(axes[0][1], doc, "tau_epoch", "τ_epoch = 1/(η·λ·M) (epochs, log)")
    _optimum_panel(axes[1][0], doc, tau=False)
    _optimum_panel(axes[1][1], doc, tau=True)
    fig.suptitle(
        f"Does keeping τ_epoch carry the best λ to more data? {_setup(doc['settings'])}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _loss_there(loss: float) -> str:
    """The validation loss at a predicted λ, read off the grid's curve (none outside it)."""
    return f"(val loss {loss:.4f})" if math.isfinite(loss) else "(outside the λ grid: no val loss)"
