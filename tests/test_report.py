"""The HTML report, opened in a real headless Chromium (Debian's, driven by Playwright)."""

import copy
import json
import math
import os
import shutil
from html import escape
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from test_selection import grid, run, sweep_result
from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import DemoSettings, SweepResult, build_report, run_demo, run_sweep
from wdlab.records import Check, Result, use_wd
from wdlab.report.figures import FIGURES
from wdlab.report.html import write_report
from wdlab.report.text import short, verdict_summary, verdict_text
from wdlab.selection import GAIN, NO_GAIN, select

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_BROWSER = os.path.exists(CHROMIUM)
if not HAVE_BROWSER and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium (scripts/test.sh does)")
browser_only = pytest.mark.skipif(not HAVE_BROWSER, reason="no chromium here (CI installs it)")

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def browser():
    if not HAVE_BROWSER:
        pytest.skip("no chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield b
        b.close()


def open_report(browser, path, shot):
    """Load a report; return (page, console errors, failed requests, dialogs)."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors, failed, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(shot), full_page=True)
    return page, errors, failed, dialogs


def figure_sizes(page):
    return page.eval_on_selector_all(
        "figure img",
        "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,"
        " i.getBoundingClientRect().width])",
    )


@browser_only
def test_demo_report_in_a_browser(browser, tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--epochs", "30", "--dim", "64", "--out", str(out), "--json"])
    assert rc == 0 and (out / "report.html").exists()
    page, errors, failed, dialogs = open_report(browser, out / "report.html", tmp_path / "d.png")
    assert errors == [] and failed == [] and dialogs == []
    sizes = figure_sizes(page)
    assert [s[0] for s in sizes] == ["losses", "gap", "weight_norm"]
    assert all(ok and w > 0 and h > 0 and shown > 0 for _, ok, w, h, shown in sizes)
    rows = page.eval_on_selector_all(
        "table.headline >> nth=0 >> tbody tr", "trs => trs.map(t => t.cells[0].textContent)"
    )
    assert rows == ["none", "manual", "builtin"]
    assert "identical (bitwise)" in page.inner_text("body")
    assert (tmp_path / "d.png").stat().st_size > 50_000  # the full-page screenshot


@browser_only
def test_sweep_report_escapes_a_hostile_name(browser, tmp_path):
    cfg = validate(
        {
            "data": {"source": "wine"},
            "model": {"kind": "mlp", "hidden": [8]},
            "train": {"optimizer": "adam", "lr": [3e-3, 1e-2], "epochs": 8, "eval_every": 2},
            "decay": {"modes": ["l2", "decoupled"], "weight_decay": [1e-3, 1e-2, 1e-1]},
        }
    )
    out = tmp_path / "study"
    run_sweep(cfg, out, name=EVIL)
    paths = build_report(out)
    html = paths["report"].read_text()
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()  # no script of any kind: offline and self-contained
    assert "http://" not in html and "https://" not in html
    page, errors, failed, dialogs = open_report(browser, paths["report"], tmp_path / "s.png")
    assert dialogs == [] and errors == [] and failed == []
    assert page.inner_text("h1") == f"sweep: {EVIL}"  # shown as text
    sizes = figure_sizes(page)
    assert [s[0] for s in sizes] == ["losses", "gap", "weight_norm", "wd_curve", "heatmap"]
    assert all(ok and w > 0 and h > 0 for _, ok, w, h, _ in sizes)
    n_rows = page.eval_on_selector("table.headline tbody", "b => b.rows.length")
    assert n_rows == 3 * 2  # (none, l2, decoupled) × 2 learning rates
    assert "Verification" not in page.inner_text("body")  # no checks were run for it
    caption = page.inner_text("#fig-losses figcaption")  # full-batch: no mini-batches to say
    assert "train loss (solid: the loss of each epoch's one full-batch step, before it" in caption
    for stem in ("losses", "gap", "weight_norm", "wd_curve", "heatmap"):
        assert paths[stem].stat().st_size > 5_000


@browser_only
def test_rotation_figure_renders_in_a_browser(browser, tmp_path):
    """``--diagnostics rotation`` adds its figure (per-layer norm and angle against Kosson et
    al.'s equilibrium); in Chromium it loads, has a size, and the page has no error."""
    cfg = validate(
        {
            "data": {"source": "wine"},
            "model": {"kind": "mlp", "hidden": [8, 8]},
            "train": {
                "optimizer": "adamw",
                "lr": [1e-2],
                "epochs": 6,
                "eval_every": 2,
                "diagnostics": ["rotation"],
            },
            "decay": {"modes": ["decoupled"], "weight_decay": [0.1]},
        }
    )
    out = tmp_path / "study"
    run_sweep(cfg, out)
    paths = build_report(out)
    page, errors, failed, dialogs = open_report(browser, paths["report"], tmp_path / "r.png")
    assert errors == [] and failed == [] and dialogs == []
    sizes = {s[0]: s for s in figure_sizes(page)}
    _, ok, w, h, shown = sizes["rotation"]
    assert ok and w > 0 and h > 0 and shown > 0
    assert "Kosson" in page.inner_text("body")  # the caption cites the equilibrium's source
    assert paths["rotation"].stat().st_size > 5_000


def test_report_shows_wdlab_verify_checks(tmp_path, capsys, monkeypatch):
    from wdlab import verify

    monkeypatch.setattr(verify, "all_checks", lambda: [verify.check_to_init])
    assert (
        main(
            ["run", "--data", "wine", "--model", "linear", "--epochs", "2", "--out", str(tmp_path)]
        )
        == 0
    )
    assert main(["verify", "--out", str(tmp_path)]) == 0
    html = build_report(tmp_path)["report"].read_text()
    assert "Verification" in html and "to_init → w₀" in html
    assert '<td class="pass">pass</td>' in html  # drawn as passed (the CSS's .pass was unused)


@browser_only
def test_a_long_name_and_a_long_path_stay_within_the_page(browser, tmp_path):
    """A browser trial: a 250-character study name made the page 4784 px wide at 1280 px."""
    cfg = validate(
        {
            "data": {"source": "wine"},
            "model": {"kind": "linear"},
            "train": {"epochs": 2},
            "decay": {"modes": ["decoupled"], "weight_decay": [0, 1e-2]},
        }
    )
    out = tmp_path / "study"
    run_sweep(cfg, out, name="A" * 250)
    paths = build_report(out)
    page, errors, _, _ = open_report(browser, paths["report"], tmp_path / "l.png")
    assert errors == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_report_cli_and_bad_input(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--data",
                "wine",
                "--model",
                "linear",
                "--epochs",
                "3",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert (tmp_path / "r" / "report.html").exists()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "again"), "--json"]) == 0
    assert (tmp_path / "again" / "report.html").exists()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "nothing to report" in capsys.readouterr().err


def test_notebook_views_of_demo_and_run(tmp_path):
    demo = run_demo(DemoSettings(epochs=10, dim=32), device="cpu")
    assert "<table>" in demo._repr_html_() and "identical (bitwise)" in demo._repr_html_()
    assert isinstance(demo.plot(), Figure) and isinstance(demo.plot("weight_norm"), Figure)


# ---------------------------------------------------------------------------------------------
# The answer at a glance, on hand-made results (nothing trained: tests/test_selection.py).


def _legend(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def _stars(ax):
    return [ln for ln in ax.get_lines() if ln.get_marker() == "*"]


def test_report_opens_with_the_answer_in_short_notation(tmp_path):

    res = sweep_result(lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    res.name = EVIL
    html = write_report(res, tmp_path)["report"].read_text()
    body = html[html.index("<body>") :]
    assert body.index("Answer") < body.index("<figure")  # the answer comes first
    assert NO_GAIN in body and "(best mean at wd 0.0316)" in body
    # wd = 0 is the answer everywhere: no decay timescale to show (not the chosen wd's 12.5)
    assert "τ_epoch" not in body
    assert "0.0316228" not in body and "3.16228" not in body and "0.0316" in body
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "independent of the lr" not in html  # no canned conclusion


def test_a_wd0_choice_is_starred_left_of_the_log_range():

    runs = [run("l2", wd, s, v) for wd, v in ((0.0, 0.9), (1e-3, 0.8), (1e-2, 0.7)) for s in (0, 1)]
    res = SweepResult(runs=runs, task="multiclass")
    res.select()
    assert res.selection[0]["weight_decay"] == 0.0
    ax = res.plot("wd").axes[0]
    (star,) = _stars(ax)
    assert star.get_xdata()[0] < 1e-3  # wd = 0 has its own place, left of the smallest wd
    assert "0" in [t.get_text() for t in ax.get_xticklabels()]


def test_heatmap_marks_the_weight_decay_to_use_for_each_mode_and_lr():
    """One ★ per (mode, lr): the row's weight decay to use, as in the answer table (it was
    each panel's best-mean cell, which is not what the table and the wd plot mark)."""
    table = {0.0: [0.5, 0.5, 0.52], 1e-3: [0.6, 0.61, 0.6], 1e-2: [0.9, 0.91, 0.92]}  # 3 seeds
    res = sweep_result(table, lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    fig = FIGURES["heatmap"].draw(res)
    panels = [ax for ax in fig.axes if ax.get_title() in ("l2", "decoupled")]
    assert len(panels) == 2
    for ax in panels:
        stars = sorted((s.get_ydata()[0], s.get_xdata()[0]) for s in _stars(ax))
        assert stars == [(0, 2), (1, 2)]  # wd 1e-2 at lr 0.001 (row 0) and lr 0.01 (row 1)
    assert panels[1].get_ylabel() == ""  # one "lr" label, on the first panel only
    caption = FIGURES["heatmap"].caption(res)
    assert "l2: lr 0.001, wd 0.01" in caption and "independent" not in caption


def test_loss_plot_draws_the_chosen_runs_and_wd0_each_named():
    table = {
        0.0: [0.5, 0.5, 0.52],
        1e-3: [0.6, 0.61, 0.6],
        1e-2: [0.9, 0.91, 0.92],
        1e-1: [0.2] * 3,
    }
    res = sweep_result(table, lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    labels = [t for t in _legend(res.plot("loss")) if t not in ("train", "val")]
    assert sorted(labels) == sorted(
        [
            "none wd=0 lr=0.001",
            "none wd=0 lr=0.01",
            "l2 wd=0.01 lr=0.001",
            "l2 wd=0.01 lr=0.01",
            "decoupled wd=0.01 lr=0.001",
            "decoupled wd=0.01 lr=0.01",
        ]
    )
    for kind in ("gap", "weight_norm"):
        names = _legend(res.plot(kind))
        assert len(names) == len(set(names)) == 6


# ---------------------------------------------------------------------------------------------
# One answer, marked the same way everywhere; every page titled; names shown as typed.

GAIN_TABLE = {0.0: [0.5, 0.5, 0.52], 1e-3: [0.6, 0.61, 0.6], 1e-2: [0.9, 0.91, 0.92]}
# 0 is not among the modes' weight decays: the smallest swept one (1e-4) ties with the best
NO_GAIN_TABLE = {0.0: [0.8, 0.8, 0.8], 1e-4: [0.8, 0.8, 0.8], 0.0316228: [0.82, 0.79, 0.8]}


def _gain_and_no_gain():
    gain = sweep_result(GAIN_TABLE, lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    none = sweep_result(NO_GAIN_TABLE, lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    gain.name, none.name = "with a gain", "without a gain"
    return gain, none


def _answer_cells(res):
    """{(mode, lr): wd} as the answer table, the wd plot and the heatmap each mark it."""
    table = {(s["mode"], s["lr"]): use_wd(s) for s in res.selection if s["mode"] != "none"}
    wd_ax = res.plot("wd").axes[0]
    ticks = {t.get_position()[0]: t.get_text() for t in wd_ax.get_xticklabels()}
    wd_stars = sorted(ticks[s.get_xdata()[0]] for s in _stars(wd_ax))
    heat = FIGURES["heatmap"].draw(res)
    panels = {ax.get_title(): ax for ax in heat.axes if ax.get_title() in ("l2", "decoupled")}
    heat_cells = {}
    for mode, ax in panels.items():
        xs = [t.get_text() for t in ax.get_xticklabels()]
        ys = sorted({r.config.lr for r in res.runs})  # the rows, bottom up
        for s in _stars(ax):
            heat_cells[(mode, ys[int(s.get_ydata()[0])])] = xs[int(s.get_xdata()[0])]
    return table, wd_stars, heat_cells


def test_the_table_the_wd_plot_and_the_heatmap_mark_the_same_cells():
    """One definition of the answer (records.use_wd): a measured gain marks its weight decay,
    no measurable gain marks wd = 0, never the tiny wd that tied with it; the terminal, the
    HTML table, the wd plot's ★ and the heatmap's ★ agree cell by cell."""
    gain, none = _gain_and_no_gain()
    table, wd_stars, heat = _answer_cells(gain)
    assert set(table.values()) == {1e-2}
    assert heat == {k: short(v) for k, v in table.items()}
    assert wd_stars == sorted(short(v) for v in table.values())
    table, wd_stars, heat = _answer_cells(none)
    assert {s["weight_decay"] for s in none.selection if s["mode"] != "none"} == {1e-4}
    assert set(table.values()) == {0.0}  # no gain: use wd = 0, not the 1e-4 that tied
    assert heat == {k: "0" for k in table} and wd_stars == ["0"] * 4
    text = none.table()
    answer = text[text.index("best weight decay per (mode, lr)") :]
    rows = [ln.split() for ln in answer.splitlines() if ln.startswith(("l2 ", "decoupled "))]
    assert [r[2] for r in rows] == ["0"] * 4 and text.count(": use wd = 0") == 4
    assert "use wd = 0" in verdict_summary(none.selection)
    # the val and test a "use wd 0" row shows are the chosen 1e-4's: the row names it (a
    # new-user trial read them as wd = 0's)
    assert text.count("(val and test: wd 0.0001): use wd = 0") == 4
    zero = {**none.selection[0], "weight_decay": 0.0}
    assert "val and test" not in verdict_text(zero)  # shown are wd = 0's own: nothing to name
    assert "(★ the weight decay to use)" in none.plot("wd").axes[0].get_title()  # not "chosen"


def test_each_heatmap_panel_has_its_own_colour_scale_and_the_caption_gives_it():
    runs = grid({0.0: [0.5, 0.5, 0.5]})
    runs += grid({1e-3: [0.6, 0.61, 0.6], 1e-2: [0.9, 0.91, 0.905]}, mode="l2")
    runs += grid({1e-3: [0.50, 0.50, 0.50], 1e-2: [0.51, 0.52, 0.515]}, mode="decoupled")
    runs += [run(r.config.mode, r.config.weight_decay, r.config.seed, 0.5, lr=0.001) for r in runs]
    res = SweepResult(runs=runs, task="multiclass")
    res.select()
    fig = FIGURES["heatmap"].draw(res)
    images = {ax.get_title(): ax.images[0] for ax in fig.axes if ax.images}
    assert images["l2"].norm.vmin == 0.5 and images["l2"].norm.vmax == pytest.approx(0.905)
    assert images["decoupled"].norm.vmax == pytest.approx(0.515)  # not washed out by l2's range
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 2
    # a colour map of its own per panel (a browser trial read one colour as one value in
    # both), and every colour bar says so
    assert images["l2"].get_cmap().name != images["decoupled"].get_cmap().name
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert all(b.endswith("(brighter is better; this panel's own scale)") for b in bars)
    caption = FIGURES["heatmap"].caption(res)
    assert "l2 0.5 to 0.905" in caption and "decoupled 0.5 to 0.515" in caption


def test_where_the_answer_is_wd0_the_curves_still_show_the_nearest_swept_wd():
    _, none = _gain_and_no_gain()
    labels = sorted(t for t in _legend(none.plot("loss")) if t not in ("train", "val"))
    assert labels == sorted(
        f"{m} wd={w} lr={lr}"
        for lr in ("0.001", "0.01")
        for m, w in (("none", "0"), ("l2", "0.0001"), ("decoupled", "0.0001"))
    )
    assert "nearest swept" in FIGURES["losses"].caption(none)


def test_every_page_has_a_title(tmp_path):
    res = sweep_result()
    res.kind, res.name = "run", ""
    html = write_report(res, tmp_path)["report"].read_text()
    assert "<h1>run: hand-made</h1>" in html  # the data's name when the run has none
    res.data = {}
    assert "<h1>run</h1>" in write_report(res, tmp_path)["report"].read_text()


def test_results_read_well_in_a_repl():
    """repr: one short line (kind, counts, the answer); str: the table; to_dict(): all."""
    gain, none = _gain_and_no_gain()
    for res in (gain, none):
        text = repr(res)
        assert "\n" not in text and len(text) < 300 and "30 runs (30 done)" in text
        assert str(res) == res.table()
        assert len(json.dumps(res.to_dict()["runs"])) > 10 * len(text)
    assert repr(gain).endswith("; use wd 0.01 (better than wd = 0) in all 4 (mode, lr) settings>")
    assert repr(none).endswith("; use wd 0 (no measurable gain) in all 4 (mode, lr) settings>")
    mixed = sweep_result(GAIN_TABLE, lrs=(0.01,), modes=("l2",))
    mixed.runs += grid(NO_GAIN_TABLE, lr=0.001)
    mixed.select()
    assert repr(mixed).endswith(
        "decoupled lr 0.001: use wd 0 (no measurable gain); l2 lr 0.01: use wd 0.01 (better "
        "than wd = 0)>"
    )
    two = sweep_result(NO_GAIN_TABLE)
    two.runs = [r for r in two.runs if r.config.seed < 2]
    two.select()
    assert repr(two).endswith("; decoupled lr 0.01: use wd 0 (too few seeds to tell)>")
    r = gain.runs[0]
    assert repr(r).startswith("RunResult(none wd=0 lr=0.01 adam seed 0: done, ")
    assert repr(r.curves) == (
        "Curves(5 epochs, 3 evaluations: train_loss, weight_norm, train_loss_eval, val_loss, "
        "test_loss, val_acc, test_acc)"
    )
    demo = Result("demo", checks={"manual_equals_builtin": Check("m", "b", 0, 0, True, 0, True)})
    assert repr(demo) == "<Result demo: 0 runs; manual vs builtin: identical (bitwise)>"


def test_names_are_text_in_every_figure(tmp_path, capsys):
    """A file or study name with $, _ and ^ (matplotlib's mathtext) is drawn as typed: the
    run trains, writes its report and every text in the figures keeps its dollars."""
    data = tmp_path / "prices_$US_vs_$EU^2.csv"
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(60)]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = ["run", "--data", str(data), "--target", "y", "--model", "linear", "--epochs", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0, capsys.readouterr().err
    assert "prices_$US_vs_$EU^2" in (out / "report.html").read_text()
    res = sweep_result(NO_GAIN_TABLE, lrs=(0.01, 0.001))
    res.name = res.data["name"] = "a_$b$^c"
    for spec in FIGURES.values():
        if spec.applies(res):
            fig = spec.draw(res)
            texts = [t for t in fig.findobj(Text) if t.get_text()]
            assert texts and not any(t.get_parse_math() for t in texts), spec.name
            fig.savefig(tmp_path / f"{spec.name}.png")  # draws the ticks
            drawn = [t.get_text() for t in fig.findobj(Text)]  # a log axis's: numbers, not
            assert not any("mathdefault" in t for t in drawn), spec.name  # mathtext as code
    assert "a_$b$^c" in res.plot("loss").axes[0].get_title()


def _table_answers(page):
    """(mode, lr, use wd, verdict) of each decaying row of the answer table, as shown."""
    rows = page.eval_on_selector_all(
        "table.headline >> nth=0 >> tbody tr",
        "trs => trs.map(t => Array.from(t.cells).map(c => c.textContent))",
    )
    head = page.eval_on_selector_all(
        "table.headline thead th", "ths => ths.map(h => h.textContent)"
    )
    i_use, i_verdict = head.index("use wd"), head.index("verdict")
    return [(r[0], r[1], r[i_use], r[i_verdict]) for r in rows if r[0] != "none"]


@browser_only
@pytest.mark.parametrize("which", ["gain", "no gain"])
def test_report_screenshots_show_one_answer(browser, tmp_path, which):
    """Screenshots of a report with a measured gain and of one without, checked for the marks
    of one answer: the page's title, the answer table's weight decay to use (wd = 0 with "use
    wd = 0" where there is no gain, never the tiny wd that tied), the same cells named by the
    heatmap's and the wd plot's captions, each panel's colour range printed; every figure
    drawn. WDLAB_SCREENSHOTS=DIR keeps the screenshots."""
    gain, none = _gain_and_no_gain()
    res = gain if which == "gain" else none
    keep = os.environ.get("WDLAB_SCREENSHOTS")
    shot = (Path(keep) if keep else tmp_path) / f"report-{which.replace(' ', '-')}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    paths = write_report(res, tmp_path / "r")
    page, errors, failed, dialogs = open_report(browser, paths["report"], shot)
    assert errors == [] and failed == [] and dialogs == []
    assert shot.stat().st_size > 50_000
    assert page.inner_text("h1") == f"sweep: {res.name}"
    sizes = figure_sizes(page)
    assert [s[0] for s in sizes] == ["losses", "gap", "weight_norm", "wd_curve", "heatmap"]
    assert all(ok and w > 0 and h > 0 and on_page > 0 for _, ok, w, h, on_page in sizes)
    answers = _table_answers(page)
    assert len(answers) == 4
    heat = page.inner_text("#fig-heatmap figcaption")
    assert "each on its own colour scale (l2 " in heat
    for mode, lr, use, verdict in answers:
        wd = use.split(" ")[0]
        assert f"{mode}: lr {lr}, wd {wd} (" in heat  # the heatmap's ★, cell for cell
        if which == "gain":
            assert wd == "0.01" and verdict == GAIN
        else:
            assert wd == "0" and verdict.endswith("use wd = 0")
    assert "as in the answer table" in page.inner_text("#fig-wd_curve figcaption")
    answer = page.inner_text("p.answer")
    assert ("use wd = 0" in answer) == (which == "no gain")


def test_curves_that_would_hide_each_other_are_drawn_so_both_show():
    """A browser trial: wd = 0's curve lay exactly under the nearest weight decay's (equal to
    the figure's eye, not to the bit), so one run in the legend had no line to see. Curves
    within 1/1000 of their range are drawn wide and pale under the other, as equal ones were;
    the wd plot's legend sits beside the axes, never over a curve."""
    from wdlab.report.plots import coincide, loss_curves, wd_curve
    from wdlab.selection import Criterion

    gain, _ = _gain_and_no_gain()
    a, b = gain.runs[0], copy.deepcopy(gain.runs[0])
    b.curves.series["train_loss"] = [v * (1 + 1e-7) for v in a.curves["train_loss"]]
    assert a.curves["train_loss"] != b.curves["train_loss"]
    assert coincide(a.curves["train_loss"], b.curves["train_loss"])
    lines = loss_curves([a, b], labels=["a", "b"]).axes[0].lines
    widths = [ln.get_linewidth() for ln in lines if ln.get_label() in ("a", "b")]
    assert widths == [5.0, 1.6]  # the first, under the second
    far = copy.deepcopy(a)
    far.curves.series["train_loss"] = [v + 0.5 for v in a.curves["train_loss"]]
    assert not coincide(a.curves["train_loss"], far.curves["train_loss"])
    assert coincide([1.0, math.nan], [1.0, math.nan]) and not coincide([1.0, 2.0], [1.0])
    fig = wd_curve(gain.runs, Criterion("acc", "accuracy", True))
    box = (
        fig.axes[0].get_legend().get_bbox_to_anchor().transformed(fig.axes[0].transAxes.inverted())
    )
    assert box.x0 > 1.0  # beside the axes


def test_a_weight_decay_to_use_at_the_grids_edge_is_said(tmp_path):
    """A new-user trial: on d2l every setting chose wd 3, the largest swept, and nothing said
    that a larger one might do better. Now ``show``, the report and the row say it; not where
    a larger weight decay was swept and lost, nor where the answer is wd = 0."""
    gain, none = _gain_and_no_gain()
    edge = "the weight decay to use is the largest swept in 4 (mode, lr) settings (wd 0.01): a "
    edge += "larger one may do better (sweep beyond it)"
    assert all(s["largest_swept"] for s in gain.selection if s["mode"] != "none")
    assert edge in gain.table()
    assert escape(edge[:1].upper() + edge[1:]) in write_report(gain, tmp_path)["report"].read_text()
    assert "sweep beyond it" not in none.table()  # wd 0 to use: no edge to speak of
    inner = sweep_result({**GAIN_TABLE, 0.1: [0.7, 0.71, 0.72]}, modes=("l2",))
    (row,) = [s for s in inner.selection if s["mode"] == "l2"]
    assert row["weight_decay"] == 1e-2 and not row["largest_swept"]
    assert "sweep beyond it" not in inner.table()
    one = sweep_result(GAIN_TABLE, modes=("l2",))
    assert "the weight decay to use is the largest swept in l2 lr 0.01 (wd 0.01)" in one.table()
    # a partial study whose larger weight decays are still training: not the edge (a review)
    rows = select(one.runs, "multiclass", waiting={0.1})
    assert not any(s["largest_swept"] for s in rows)


@browser_only
def test_the_answer_table_fits_the_page_on_screen_and_in_print(browser, tmp_path):
    """A browser trial: the answer table's number cells did not wrap, so at 1280 px its last
    column needed a sideways scroll and its verdicts were squeezed to a few words a line; in
    print (kept scrollable) the test columns were cut off the page."""
    _, none = _gain_and_no_gain()
    paths = write_report(none, tmp_path / "r")
    page, errors, _, _ = open_report(browser, paths["report"], tmp_path / "t.png")
    assert errors == []
    fits = "t => t.scrollWidth <= t.clientWidth"
    for media in ("screen", "print"):
        page.emulate_media(media=media)
        assert page.eval_on_selector("table.headline", fits), media
    verdict = page.eval_on_selector(
        "table.headline tbody td.l:nth-child(4)", "c => c.getBoundingClientRect().width"
    )
    assert verdict > 150  # a readable column, not a few words a line
    assert "(best mean at wd " in page.inner_text("table.headline")


def test_the_curves_compare_decay_with_none_on_a_run_that_trained_to_its_end():
    """Where the answer is wd = 0, the figures show the nearest swept weight decay beside it:
    the smallest that trained to its end, not one pruned at a rung (its 'last value' is an
    early epoch's, drawn beside the others' last)."""
    from wdlab.records import Curves, RunConfig, RunResult
    from wdlab.report.shown import answer_runs

    def run(wd, status, epochs):
        cfg = RunConfig(mode="decoupled", weight_decay=wd, lr=0.01, optimizer="adam", seed=0)
        curves = Curves(list(range(epochs)), [epochs - 1], {"val_acc": [0.5]})
        return RunResult(cfg, curves, {"val_acc": 0.5}, status=status, epochs=epochs)

    runs = [run(0.0, "done", 9), run(1e-4, "pruned", 1), run(1e-3, "done", 9)]
    row = {"mode": "decoupled", "lr": 0.01, "weight_decay": 0.0, "better_than_zero": False}
    assert [r.config.weight_decay for r in answer_runs(runs, [row])] == [0.0, 1e-3]


def test_the_rung_figure_tells_modes_apart():
    """Two modes at one lr: one colour and one legend entry per (mode, lr) (they were one per
    lr, so the two modes' lines shared a colour and a label)."""
    from wdlab.records import Curves, RunConfig, RunResult
    from wdlab.report.rungs import rung_figure
    from wdlab.selection import Criterion

    runs = []
    for mode in ("decoupled", "l2"):
        for wd in (0.0, 0.1):
            cfg = RunConfig(mode=mode, weight_decay=wd, lr=0.01, optimizer="adam", seed=0)
            curves = Curves([0, 1, 2], [0, 2], {"val_acc": [0.5, 0.6]})
            runs.append(RunResult(cfg, curves, {"val_acc": 0.6}, status="done", epochs=3))
    fig = rung_figure(runs, Criterion("acc", "accuracy", True), [1])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "decoupled, lr 0.01: wd 0, 0.1 never pruned" in labels
    assert "l2, lr 0.01: wd 0, 0.1 never pruned" in labels


def test_the_wd_curve_names_a_setting_left_with_wd_0_only():
    """An lr whose every weight decay > 0 was pruned keeps its wd = 0 point in the legend (it
    was drawn, starred, and named nowhere)."""
    from wdlab.records import Curves, RunConfig, RunResult
    from wdlab.report.plots import wd_curve
    from wdlab.selection import Criterion

    runs = []
    for lr, wds in ((0.01, (0.0, 0.1, 1.0)), (0.001, (0.0,))):
        for wd in wds:
            for seed in range(2):
                cfg = RunConfig(mode="decoupled", weight_decay=wd, lr=lr, optimizer="adam",
                                seed=seed)  # fmt: skip
                final = {"val_acc": 0.5 + wd / 10, "test_acc": 0.5}
                runs.append(RunResult(cfg, Curves([0], [0], {}), final, status="done", epochs=1))
    fig = wd_curve(runs, Criterion("acc", "accuracy", True))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "decoupled, lr 0.001 (wd = 0 only)" in labels


def test_the_figures_of_a_study_with_nothing_finished_warn_nothing():
    """A report while a sweep still trains (nothing finished yet) draws empty figures without
    matplotlib's legend warning on stderr."""
    import warnings

    from wdlab.report.plots import gap_curves, wd_curve
    from wdlab.selection import criterion

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wd_curve([], criterion("multiclass"))
        gap_curves([])


def test_the_full_configuration_shows_only_the_model_options_its_kind_reads():
    """A factory's study showed the built-in MLP's hidden, activation and layernorm in the
    report's full configuration, which the factory never used (found by a new-user trial)."""
    from wdlab.report.html import _read_config

    model = {"kind": "custom", "factory": "m.py:make", "hidden": [64], "activation": "relu"}
    model |= {"layernorm": False, "batchnorm": False, "dropout": 0.0, "factory_timeout": 60}
    shown = _read_config({"model": model, "train": {"lr": [0.1]}})
    assert shown["model"] == {"kind": "custom", "factory": "m.py:make", "factory_timeout": 60}
    assert shown["train"] == {"lr": [0.1]}
    cnn = _read_config({"model": model | {"kind": "cnn"}})["model"]
    assert {"hidden", "batchnorm", "dropout"} <= set(cnn) and "activation" not in cnn


def test_the_full_configuration_of_a_hand_edited_model_kind_is_shown_as_stored():
    """A stored model kind that is not a name (a list, by hand) failed the report with
    "unhashable type: 'list'" (found by a checking helper): shown as stored."""
    from wdlab.report.html import _read_config

    for odd in ({"kind": ["mlp"], "hidden": [8]}, None, "mlp", {"hidden": [8]}):
        assert _read_config({"model": odd}) == {"model": odd}


def test_a_run_that_diverged_after_one_evaluation_is_drawn_and_epochs_are_whole():
    """A browser trial: the gap figure of a sweep whose runs diverged after their first
    evaluation was blank (a line through one point draws nothing) and its axis ran −0.04 to
    0.04; epoch axes had ticks at 0.2 or 2.5."""
    import math

    from wdlab.report.plots import gap_curves, loss_curves

    lone = run("decoupled", 0.1, 0, 0.5)
    for k, v in lone.curves.series.items():
        lone.curves.series[k] = [v[0], *[math.nan] * (len(v) - 1)]
    for fig in (gap_curves([lone], "val"), loss_curves([lone], split="val")):
        ax = fig.axes[0]
        drawn = [line for line in ax.get_lines() if line.get_label() == lone.config.label]
        assert drawn and drawn[0].get_marker() == "o"
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_the_wd_curve_of_many_settings_keeps_them_apart_and_its_legend_off_the_curves():
    """A browser trial: 15 (mode, lr) settings gave 30 legend entries over half the plot (the
    wd = 0 points under them), and colours repeated after 10 (two settings drawn alike)."""
    from wdlab.records import Curves, RunConfig, RunResult
    from wdlab.report.plots import wd_curve
    from wdlab.selection import Criterion

    runs = []
    for mode in ("coupled", "l2", "decoupled"):
        for lr in (0.01, 0.03, 0.1, 0.3, 1.0):
            for wd in (0.0, 0.01, 0.1):
                cfg = RunConfig(mode=mode, weight_decay=wd, lr=lr, optimizer="adam", seed=0)
                final = {"val_acc": 0.5 + wd, "test_acc": 0.5}
                runs.append(RunResult(cfg, Curves([0], [0], {}), final, status="done", epochs=1))
    ax = wd_curve(runs, Criterion("acc", "accuracy", True)).axes[0]
    named = [ln for ln in ax.lines if not str(ln.get_label()).startswith("_")]
    settings = [ln for ln in named if ln.get_label() not in ("validation", "test")]
    assert len(settings) == 15 and {"validation", "test"} <= {ln.get_label() for ln in named}
    assert len({tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color()
                for ln in settings}) == 15  # fmt: skip
    box = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert box.x0 >= 1.0  # beside the axes


def test_a_folder_with_verify_json_alone_says_where_it_is_shown(tmp_path, capsys):
    """A browser trial: ``verify --out F`` then ``report F`` said only "nothing to report",
    though verify's help said "that folder's report shows it"."""
    (tmp_path / "verify.json").write_text('{"checks": []}')
    assert main(["report", str(tmp_path)]) == 2
    assert "(verify.json shows in the report of a run or study there)" in capsys.readouterr().err


def test_past_18_answer_runs_the_caption_says_how_many_more_and_no_colour_repeats():
    """A new-user trial: 3 modes × 3 lrs drew 10 of 12 answer runs (the legend lacked two
    (mode, lr) settings, the caption said nothing) and their colours came round again after
    10. Up to 18 are drawn, each its own colour and none grey; past that the caption says how
    many more the table has."""
    from matplotlib.colors import to_rgb

    from wdlab.report.figures import FIGURES

    modes, lrs = ("l2", "decoupled", "coupled"), (0.1, 0.03, 0.01)
    res = sweep_result(GAIN_TABLE, lrs=lrs, modes=modes)
    fig = res.plot("loss")
    named = [t for t in _legend(fig) if t not in ("train", "val")]
    assert len(named) == 12  # 3 wd = 0 runs, and one per (mode, lr)
    colours = {to_rgb(line.get_color()) for line in fig.axes[0].get_lines() if line.get_label()
               in named}  # fmt: skip
    assert len(colours) == 12 and all(len(set(c)) > 1 for c in colours)  # none grey
    caption = FIGURES["losses"].caption(res)
    assert "more in the table" not in caption
    wide = sweep_result(
        GAIN_TABLE, lrs=(0.1, 0.03, 0.01, 0.003), modes=(*modes, "to_init", "cautious")
    )
    caption = FIGURES["losses"].caption(wide)  # 4 + 5 × 4 = 24 answer runs
    assert "the first 18 of these drawn, 6 more in the table" in caption
    assert len([t for t in _legend(wide.plot("loss")) if t not in ("train", "val")]) == 18


def test_a_study_with_no_run_finished_is_drawn_on_the_metric_it_chooses_on():
    """A new-user trial: a pruned study killed before any run finished drew its rungs on the
    task's headline metric (validation accuracy, or "validation RMSE" over nothing for a
    custom metric) while its decisions ranked on ``select="loss"`` or the user's metric."""
    from wdlab.report.plots import criterion_of

    res = sweep_result(config={"train": {"select": "loss"}})
    res.selection = []  # no run finished yet
    assert (criterion_of(res).key, criterion_of(res).higher) == ("loss", False)
    res.config, res.data = {}, {"metric": {"key": "mae", "higher": False}}
    assert (criterion_of(res).key, criterion_of(res).higher) == ("mae", False)
    res.data = {}
    assert criterion_of(res).key == "acc"  # nothing said: the task's headline
