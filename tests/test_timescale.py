"""τ_iter and τ_epoch for every mode, and the built-in check of the τ_epoch rule."""

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from wdlab.cli import main
from wdlab.data import Dataset
from wdlab.decay import MODES
from wdlab.decay.modes import decay_rate
from wdlab.models import ModelSpec
from wdlab.pipelines.timescale import (
    TimescaleSettings,
    analyse,
    best_log_wd,
    nested_order,
    run_timescale,
)
from wdlab.records import RunConfig
from wdlab.report.timescale import timescale_figure
from wdlab.timescale import explain, timescales
from wdlab.trainer import train

LR, WD = 0.01, 0.5


def tau(mode, optimizer="sgd", options=(), lr=LR, wd=WD, m=4):
    return timescales(RunConfig(mode, wd, lr, optimizer, tuple(options)), m)


@pytest.mark.parametrize(
    ("mode", "optimizer", "options", "expected"),
    [
        ("decoupled", "adamw", (), 1 / (LR * WD)),
        ("decoupled", "sgd", (("momentum", 0.9),), 1 / (LR * WD)),  # outside the momentum
        ("cautious", "adamw", (), 1 / (LR * WD)),
        ("corrected", "adamw", (), 1 / (LR * WD)),
        ("independent", "adam", (), 1 / WD),  # factor 1 − wd·lr_t/lr₀: wd at the peak
        ("coupled", "sgd", (), 1 / (LR * WD)),
        ("l2", "sgd", (), 1 / (LR * WD)),
        ("to_init", "sgd", (), 1 / (LR * WD)),
        ("coupled", "sgd", (("momentum", 0.9),), 0.1 / (LR * WD)),  # effective lr η/(1 − μ)
        ("coupled", "sgd", (("dampening", 0.5), ("momentum", 0.9)), 0.2 / (LR * WD)),
        ("builtin", "sgd", (("momentum", 0.5),), 0.5 / (LR * WD)),  # SGD's wd is coupled
        ("builtin", "adamw", (), 1 / (LR * WD)),
        ("builtin", "adam", (("decoupled_weight_decay", True),), 1 / (LR * WD)),
    ],
)
def test_defined_timescales(mode, optimizer, options, expected):
    t = tau(mode, optimizer, options)
    assert t["tau_iter"] == pytest.approx(expected, rel=1e-12)
    assert t["tau_epoch"] == pytest.approx(expected / 4, rel=1e-12)


@pytest.mark.parametrize(
    ("mode", "optimizer", "why"),
    [
        ("none", "adamw", "no decay"),
        ("coupled", "adam", "rescales"),  # Adam divides the decay term by √v̂
        ("l2", "rmsprop", "rescales"),
        ("to_init", "adagrad", "rescales"),
        ("builtin", "adam", "rescales"),  # torch Adam's weight_decay is coupled
    ],
)
def test_undefined_timescales_are_nan_with_a_reason(mode, optimizer, why):
    t = tau(mode, optimizer)
    assert math.isnan(t["tau_iter"]) and math.isnan(t["tau_epoch"])
    assert why in explain(RunConfig(mode, WD, LR, optimizer))


def test_builtin_without_the_optimizers_weight_decay_has_no_timescale():
    """Rprop has no weight_decay: the rate says so (and a configuration is refused, issue 25:
    mode builtin would silently not decay)."""
    rate, why = decay_rate("builtin", LR, WD, "rprop")
    assert math.isnan(rate) and "no weight_decay" in why
    with pytest.raises(ValueError, match="no weight_decay of its own"):
        RunConfig("builtin", WD, LR, "rprop")


def test_every_mode_has_a_timescale_rule():
    for mode in MODES:
        t = tau(mode, "sgd")
        assert set(t) == {"tau_iter", "tau_epoch"}
    assert tau("decoupled", "adamw", wd=0.0)["tau_iter"] == math.inf
    with pytest.raises(ValueError, match="iters_per_epoch"):
        tau("decoupled", "adamw", m=0)


@pytest.mark.parametrize(
    "options",
    [
        (("momentum", 0.9),),
        (("momentum", 0.9), ("nesterov", True)),
        (("dampening", 0.3), ("momentum", 0.8)),
    ],
)
def test_sgd_momentum_timescale_is_measured_by_torch(options):
    """torch's SGD with coupled weight decay and a zero loss gradient: the weights shrink by the
    slow root of the momentum recursion, e^(−1/τ) per step with τ = (1 − μ)/(η·λ·(1 − d)). The
    formula is first order in r = 1/τ = 1e-4 (μ = 0.9): the root differs by O(r/(1 − μ)) ≈ 1e-3,
    so 3e-3 bounds it; plain SGD's 1/(η·λ) (off by 10×) fails it."""
    lr, wd = 0.01, 0.001
    w = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w.requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, weight_decay=wd, **dict(options))
    norms = []
    for _ in range(3000):
        w.grad = torch.zeros_like(w)
        opt.step()
        norms.append(float(w.detach().norm()))
    measured = 1000 / math.log(norms[1999] / norms[2999])  # after the fast root (μ^t) died out
    predicted = tau("builtin", "sgd", options, lr=lr, wd=wd)["tau_iter"]
    assert measured == pytest.approx(predicted, rel=3e-3)
    assert abs(measured * lr * wd - 1) > 0.5


def test_every_run_records_its_timescales():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    data = Dataset("t", "multiclass", X, y, X[:6], y[:6], n_classes=3)
    spec = ModelSpec("mlp", hidden=(5,), activation="tanh")
    configs = [RunConfig("decoupled", 0.1, 0.01, "adamw"), RunConfig("l2", 0.1, 0.01, "adamw")]
    runs = train(spec, data, configs, epochs=1, batch_size=10, device="cpu")  # M = 3
    assert runs[0].final["tau_iter"] == pytest.approx(1000.0)
    assert runs[0].final["tau_epoch"] == pytest.approx(1000.0 / 3)
    assert math.isnan(runs[1].final["tau_epoch"])


# -- the timescale check ----------------------------------------------------------------------


def test_best_log_wd_finds_a_parabola_vertex_and_flags_edges():
    wds = [10 ** (k / 4) for k in range(-4, 5)]
    losses = [(math.log10(w) - 0.13) ** 2 for w in wds]
    assert best_log_wd(wds, losses) == (pytest.approx(0.13), False)
    rising = list(range(len(wds)))
    assert best_log_wd(wds, rising) == (pytest.approx(-1.0), True)


def test_nested_order_prefixes_are_stratified():
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    order = nested_order(y, seed=1)
    assert sorted(order.tolist()) == list(range(100))
    for n in (10, 20, 50):
        counts = torch.bincount(y[order[:n]], minlength=3).tolist()
        assert counts == [round(0.6 * n), round(0.3 * n), round(0.1 * n)]
    assert torch.equal(order, nested_order(y, seed=1))


def _synthetic(depends_on: str) -> tuple[list[dict], TimescaleSettings]:
    """Rows whose validation loss is a parabola in log τ_epoch (or in log λ), best at 3."""
    s = TimescaleSettings(smallest=64, weight_decays=tuple(10 ** (k / 4) for k in range(-8, 9)))
    rows = []
    for n in s.sizes:
        m = s.iters_per_epoch(n)
        for wd in s.weight_decays:
            for seed in s.seeds:
                x = 1 / (s.lr * wd * m) if depends_on == "tau" else wd
                loss = (math.log10(x) - math.log10(3.0)) ** 2 + 0.01 * seed
                metrics = {"val_loss": loss, "val_acc": 0.5, "test_loss": loss, "test_acc": 0.5}
                tau_epoch = 1 / (s.lr * wd * m)
                rows.append({"n": n, "weight_decay": wd, "seed": seed, "tau_epoch": tau_epoch})
                rows[-1].update(metrics)
    return rows, s


def test_analysis_recovers_a_tau_law():
    rows, s = _synthetic("tau")
    r = analyse(rows, s)
    assert [o["best_tau_epoch"] for o in r.optima] == pytest.approx([3.0] * 3)
    assert r.prediction["keep_tau_decades"] == pytest.approx(0.0, abs=1e-9)
    assert r.prediction["keep_wd_decades"] == pytest.approx(math.log10(4))
    assert r.prediction["better"] == "keep τ_epoch" and r.slope["value"] == pytest.approx(-1)
    assert r.prediction["seeds_keep_tau_better"] == len(s.seeds)


def test_keeping_tau_predicts_the_slope_the_steps_per_epoch_give():
    """A new-user trial: with B ≥ 4N (M = 1 at every size) the check said "keep τ_epoch
    predicts −1": keeping τ_epoch keeps λ there, a slope of 0."""
    rows, s = _synthetic("tau")
    assert analyse(rows, s).slope["keep_tau"] == pytest.approx(-1)  # 64 | N: M ∝ N
    assert "(keep τ_epoch: −1, keep λ: 0)" in analyse(rows, s).verdict
    full = replace(s, batch_size=4 * s.sizes[-1])  # one step per epoch at every size
    r = analyse(rows, full)
    assert r.slope["keep_tau"] == 0 and "(keep τ_epoch: 0, keep λ: 0)" in r.verdict
    assert "keep τ_epoch predicts 0, keep λ 0" in r.table()


def test_analysis_recovers_a_fixed_lambda():
    rows, s = _synthetic("wd")
    r = analyse(rows, s)
    assert [o["best_wd"] for o in r.optima] == pytest.approx([3.0] * 3)
    assert r.prediction["better"] == "keep λ" and r.slope["value"] == pytest.approx(0, abs=1e-9)
    assert "keep λ predicts" in r.verdict


def test_a_timescale_check_reads_in_a_notebook():
    """A one-line repr (its sizes and verdict), its table as str() and, escaped, as HTML."""
    from html import escape

    r = analyse(*_synthetic("wd"))
    sizes = ", ".join(str(o["n"]) for o in r.optima)
    assert repr(r) == f"TimescaleResult(N = {sizes}: {r.verdict})" and str(r) == r.table()
    assert r._repr_html_() == f"<pre>{escape(r.table())}</pre>"


def test_timescale_check_runs_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    s = TimescaleSettings(
        smallest=64, factors=(1, 2), weight_decays=(0.1, 1.0, 10.0), seeds=(0, 1), epochs=2
    )
    r = run_timescale(s, device="cpu")
    assert len(r.runs) == 2 * 3 * 2 and {x["n"] for x in r.runs} == {64, 128}
    assert [o["iters_per_epoch"] for o in r.optima] == [2, 4]
    assert r.runs[0]["tau_epoch"] == pytest.approx(1 / (0.01 * 0.1 * 2))
    doc = json.loads(json.dumps(r.to_dict(), default=str))
    assert doc["kind"] == "timescale" and doc["prediction"]["to_n"] == 128
    assert "keep τ_epoch" in r.table() and "slope" in r.table()
    fig = r.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert fig.axes[0].get_xscale() == "log" and fig.axes[3].get_ylabel().startswith("best τ")


def test_timescale_settings_are_validated():
    for bad in (
        {"factors": (1,)},
        {"weight_decays": (0.1, 0.0, 1.0)},
        {"smallest": 0},
        {"seeds": ()},
        {"data_seed": -5},
        {"data_seed": 2**40},
        # a new-user trial: these were taken (hidden=(0,) trained and reported optima) or
        # failed with a TypeError about slice indices (1.5)
        {"hidden": (0,)},
        {"hidden": ()},
        {"activation": "nope"},
        {"factors": (1, 1)},
        {"factors": (1.5, 3)},
        {"factors": (4, 2)},
        {"weight_decays": (1e-3, math.inf, 1.0)},
        {"weight_decays": (1e-1, 1e-2, 1e-3)},
    ):
        with pytest.raises(ValueError):
            TimescaleSettings(**bad)


def test_timescale_grids_may_be_numpy_arrays():
    """The final review: ``np.logspace(-2, 1, 5)`` as ``weight_decays`` (or an int array as
    ``factors``) was refused as not numbers; it is taken and held as a tuple of Python
    numbers, as NumPy ints in ``hidden`` are (the settings are stored as JSON)."""
    s = TimescaleSettings(
        factors=np.array([1, 2, 4]), weight_decays=np.logspace(-2, 1, 5), hidden=(np.int64(8),)
    )
    assert s.factors == (1, 2, 4) and all(type(f) is int for f in s.factors)
    assert s.hidden == (8,) and type(s.hidden[0]) is int
    assert s.weight_decays == tuple(np.logspace(-2, 1, 5).tolist())
    json.dumps(asdict(s))
    for bad in ({"factors": np.array([1.5, 3.0])}, {"weight_decays": np.ones((1, 3))}):
        with pytest.raises(ValueError):
            TimescaleSettings(**bad)


def test_a_bad_timescale_data_seed_is_one_line_before_out_is_made(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["timescale", "--data-seed", "-5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data_seed (--data-seed) must be an integer in 0.." in err
    assert not out.exists()


def test_timescale_cli_writes_json_and_figure(tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = [
        "timescale",
        "--smallest",
        "40",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["sizes"] == [40, 80, 160] and len(doc["runs"]) == 3 * 15 * 2
    assert (tmp_path / "timescale.png").stat().st_size > 0
    assert json.loads((tmp_path / "timescale.json").read_text())["kind"] == "timescale"
    fig = timescale_figure(doc)  # its log axes are labelled in numbers, not mathtext as code
    fig.savefig(tmp_path / "again.png")
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert any(ticks) and not any("mathdefault" in t or "$" in t for t in ticks)
    assert main(["timescale", "--smallest", "5000"]) == 2
    assert "largest size" in capsys.readouterr().err
    for bad in (["--hidden", "64,x"], ["--hidden", "0"], ["--lr", "nan"]):
        with pytest.raises(SystemExit) as exc:
            main(["timescale", *bad])
        assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    for bad in ("0", "1,1", "x"):  # the seeds as run and sweep read them, refused alike
        assert main(["timescale", "--seeds", bad]) == 2
        assert capsys.readouterr().err.startswith("wdlab timescale: error: seeds: ")


def test_timescale_takes_seeds_as_the_sweeps_do():
    """A count (seeds 0..N−1) or distinct seeds, in Python (a count crashed with a TypeError)
    and on the command line (``--seeds 2,`` is seed 2 alone, as in run and sweep)."""
    from wdlab.cli import build_parser
    from wdlab.pipelines.timescale import TimescaleSettings

    assert TimescaleSettings(seeds=3).seeds == (0, 1, 2)
    assert TimescaleSettings(seeds=(4, 7)).seeds == (4, 7)
    args = build_parser().parse_args(["timescale", "--seeds", "2,"])
    assert TimescaleSettings(seeds=args.seeds).seeds == (2,)
    with pytest.raises(ValueError, match="seeds: seed 0 is given twice"):
        TimescaleSettings(seeds=(0, 0))


def test_timescale_reads_a_data_files_target_column(tmp_path, capsys):
    """``--data file.csv`` said to name the target with ``--target``, a flag timescale did not
    have (found by a new-user trial); it now has it, and refuses it for a built-in source."""
    pytest.importorskip("pandas")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    rows = ["a,b,y"] + [f"{a:.4f},{b:.4f},{int(a + b > 0)}" for a, b in x.tolist()]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    tiny = ["--smallest", "16", "--seeds", "2", "--epochs", "2"]
    assert main(["timescale", "--data", str(tmp_path / "t.csv"), "--target", "y", *tiny]) == 0
    assert "keep τ_epoch" in capsys.readouterr().out
    for bad, says in (
        (["--data", str(tmp_path / "t.csv")], "target: a data file needs the target column"),
        (["--target", "y"], "target: names columns of a CSV or Parquet file, and 'digits'"),
    ):
        assert main(["timescale", *bad, *tiny]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err


def test_the_check_calls_a_tie_a_tie_and_no_spread_unresolved():
    """The same iterations per epoch at both sizes make the two rules one prediction: "neither"
    (keep λ won the tie); seeds that agree exactly, as optima pinned at the grid's edge do, do
    not resolve the comparison, and an optimum at the edge never does (both said "the seeds
    resolve it"; found by a new-user trial)."""
    from wdlab.pipelines.timescale import _better, _paired, _verdict

    assert _better(0.3, 0.3) == "neither" and _better(0.1, 0.3) == "keep τ_epoch"
    assert _better(0.3, 0.1) == "keep λ"
    assert _paired([0.6, 0.6, 0.6])["resolved"] is False  # no spread: nothing to test against
    assert _paired([0.5, 0.6, 0.7])["resolved"] is True
    pred = {"better": "neither", "to_n": 1024, "from_n": 256, "keep_tau_decades": 0.0}
    pred |= {"keep_wd_decades": 0.0, "seeds_keep_tau_better": 0, **_paired([0.0, 0.0])}
    text = _verdict(pred, {"value": 0.0}, 2, edge=False)
    assert text.startswith("keep τ_epoch and keep λ predict the best λ at N=1024 from N=256 alike")
    assert "the seeds agree exactly" in text and "resolve it" not in text
    pred |= {"better": "keep λ", **_paired([0.6, 0.6, 0.6])}
    edge = _verdict(pred, {"value": 0.0}, 3, edge=True)
    assert edge.startswith("on the seeds' mean curve, keep λ predicts")
    assert "the edge of the λ grid" in edge
    assert "the seeds resolve it" not in edge
    assert "the seeds resolve it" in _verdict(
        pred | _paired([0.5, 0.6, 0.7]), {"value": 0}, 3, False
    )


def test_the_seeds_resolve_by_a_t_test_for_their_count_and_say_for_which_rule():
    """ "Resolved" is a two-sided paired t-test at 5% with n − 1 degrees of freedom: 2 seeds
    need the mean 12.7 standard errors from 0, not 2 (a 2-seed run was declared resolved at 11),
    and the sentence names the rule the seeds favour, which can differ from the mean curve's
    (the headline said keep λ and "the seeds resolve it" while they favoured keep τ_epoch);
    one seed has no spread to test, said so (it printed "± nan"). Found by a new-user trial."""
    from wdlab.pipelines.timescale import _paired, _verdict

    assert _paired([0.5, 0.6])["resolved"] is False  # t = 11 < 12.71 (df 1)
    assert _paired([0.5, 0.6, 0.7])["resolved"] is True  # t = 10.4 > 4.30 (df 2)
    ten = [1.7] * 5 + [-0.3] * 5  # mean 0.7, se 1/3: t = 2.1, under 2.262 (df 9)
    p = _paired(ten)
    t = p["seed_advantage_decades"] / p["seed_advantage_se"]
    assert 2 < t < 2.262 and p["resolved"] is False  # the old "2 standard errors" said resolved
    pred = {"better": "keep λ", "to_n": 1024, "from_n": 256, "keep_tau_decades": 0.5}
    pred |= {"keep_wd_decades": 0.4, "seeds_keep_tau_better": 3, **_paired([0.5, 0.6, 0.7])}
    text = _verdict(pred, {"value": -0.5}, 3, edge=False)
    assert "keep λ predicts" in text and "the seeds resolve it for keep τ_epoch" in text
    against = _verdict(pred | _paired([-0.5, -0.6, -0.7]), {"value": 0}, 3, False)
    assert "the seeds resolve it for keep λ" in against
    one = _verdict(pred | _paired([0.5]), {"value": 0}, 1, False)
    assert "one seed has no spread to test" in one and "nan" not in one


def test_a_size_whose_every_run_diverged_is_one_line_not_a_winner():
    """A checker: with every run diverged (lr 1e6) the check still said which rule predicts
    better, "off by nan decades", blaming the grid's edge."""
    rows, s = _synthetic("tau")
    largest = max(s.sizes)
    for r in rows:
        if r["n"] == largest:
            r.update({k: math.nan for k in ("val_loss", "val_acc", "test_loss", "test_acc")})
    with pytest.raises(ValueError, match=rf"^every run diverged at N = {largest} \(lr "):
        analyse(rows, s)


def test_wd_sets_the_grid_and_one_seed_prints_no_nan(capsys):
    """A new-user trial: the verdict said "widen" the λ grid, which no flag set, and one
    seed's spreads printed as "± nan" and "sd nan" (the table says "-")."""
    argv = ["timescale", "--seeds", "7,", "--epochs", "1", "--wd", "0.1..10:3", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted({r["weight_decay"] for r in doc["runs"]}) == [0.1, 1.0, 10.0]
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text and "± - decades" in text and "per seed sd -)" in text
    assert main(["timescale", "--wd", "1,0.1,0.01"]) == 2
    assert "weight_decays (--wd) needs >= 3" in capsys.readouterr().err
