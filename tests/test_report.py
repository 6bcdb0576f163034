"""The HTML report, opened in a real headless Chromium (Debian's, driven by Playwright)."""

import os
import shutil

import pytest
from matplotlib.figure import Figure

from test_selection import run, sweep_result
from wdlab.cli import main
from wdlab.config import validate
from wdlab.pipelines import DemoSettings, SweepResult, build_report, run_demo, run_sweep
from wdlab.report.figures import FIGURES
from wdlab.report.html import write_report
from wdlab.selection import NO_GAIN

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
    assert "<table>" in demo._repr_html_() and "bitwise identical" in demo._repr_html_()
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
    assert (
        NO_GAIN in body and "τ_epoch" in body and "12" in body and "(highest mean: 0.032)" in body
    )
    assert "0.0316228" not in body and "3.16228" not in body and "0.032" in body
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


def test_heatmap_marks_each_panels_best_cell():

    table = {0.0: [0.5, 0.5], 1e-3: [0.6, 0.61], 1e-2: [0.9, 0.91]}
    res = sweep_result(table, lrs=(0.01, 0.001), modes=("l2", "decoupled"))
    fig = FIGURES["heatmap"].draw(res)
    panels = [ax for ax in fig.axes if ax.get_title() in ("l2", "decoupled")]
    assert len(panels) == 2
    for ax in panels:
        (star,) = _stars(ax)
        assert star.get_xdata()[0] == 2 and star.get_ydata()[0] == 0  # wd 1e-2, lr 0.001
    assert panels[1].get_ylabel() == ""  # one "lr" label, on the first panel only
    caption = FIGURES["heatmap"].caption(res)
    assert "l2: lr 0.001, wd 0.01" in caption and "independent" not in caption


def test_loss_plot_draws_the_chosen_runs_and_wd0_each_named():
    table = {0.0: [0.5, 0.5], 1e-3: [0.6, 0.61], 1e-2: [0.9, 0.91], 1e-1: [0.2, 0.2]}
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
