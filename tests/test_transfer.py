"""``wdlab transfer`` and ``wdlab.timescale.transfer``: λ' = λ·(η·M)/(η'·M'), M = ⌈N/B⌉ (the
paper's λ·(η·N·B')/(η'·N'·B) where the batches divide the data)."""

import decimal
import json
import math
import subprocess
import sys
import warnings

import pytest

from wdlab.cli import main
from wdlab.timescale import steps_per_epoch, transfer

BASE = ["transfer", "--wd", "0.1", "--lr", "1e-3", "--n", "50000", "--batch-size", "256"]


@pytest.mark.parametrize(
    ("wd", "lr", "n", "b", "lr2", "n2", "b2"),
    [
        (0.1, 1e-3, 50_000, 256, 3e-3, 200_000, 512),  # the example
        (0.05, 3e-4, 1_000, 32, None, 4_000, None),  # 4× the data: λ/4
        (0.1, 1e-2, 60_000, 128, 1e-3, None, None),  # lr ÷ 10: λ·10
        (1e-4, 6e-4, 2e12, 4e6, 3e-4, 1.5e13, 8e6),  # tokens
        (0.3, 0.1, 500, 500, 0.05, 500, 250),  # full batch to half batches
    ],
)
def test_transfer_keeps_tau_epoch(wd, lr, n, b, lr2, n2, b2):
    t = transfer(wd, lr, n, b, to_lr=lr2, to_n=n2, to_batch_size=b2)
    lr2, n2, b2 = lr2 or lr, n2 or n, b2 or b
    m, m2 = math.ceil(n / b), math.ceil(n2 / b2)  # steps per epoch, the last batch short
    assert t.weight_decay == pytest.approx(wd * (lr * m) / (lr2 * m2), rel=1e-12)
    assert t.tau_epoch == pytest.approx(1 / (lr * wd * m), rel=1e-12)
    if n % b == 0 and n2 % b2 == 0:  # the paper's N/B
        assert t.weight_decay == pytest.approx(wd * (lr * n * b2) / (lr2 * n2 * b), rel=1e-12)
    assert t.tau_iter == pytest.approx(1 / (lr2 * t.weight_decay), rel=1e-12)
    doc = t.to_dict()
    assert doc["weight_decay"] == t.weight_decay and doc["from"]["tau_epoch"] == pytest.approx(
        doc["to"]["tau_epoch"]
    )


def test_epochs_keep_tau_as_a_fraction_of_the_run():
    t = transfer(0.1, 1e-3, 10_000, 100, epochs=10, to_epochs=40)
    assert t.weight_decay == pytest.approx(0.025)
    assert t.tau_epoch == pytest.approx(4 * t.source.tau_epoch)
    assert t.target.to_dict()["tau_run"] == pytest.approx(t.source.to_dict()["tau_run"])
    assert "E'" in t.formula and "fraction of the run" in t.formula
    # epochs known but unchanged: the plain rule
    assert transfer(0.1, 1e-3, 10_000, 100, epochs=10).weight_decay == 0.1


def test_independent_mode_drops_the_lr():
    t = transfer(0.1, 1e-3, 10_000, 100, to_lr=1e-2, to_n=20_000, mode="independent")
    assert t.weight_decay == pytest.approx(0.05)
    assert t.tau_iter == pytest.approx(20.0) and "η" not in t.formula.split("keeps")[0]
    assert t.formula.startswith("λ' = λ·M/M', M = ⌈N/B⌉")  # no parentheses round one factor
    assert t.substituted == "λ' = 0.1·100/200 = 0.05"


def test_the_formula_is_printed_with_its_numbers(capsys):
    assert main([*BASE, "--to-lr", "3e-3", "--to-n", "200000", "--to-batch-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "λ' = λ·(η·M)/(η'·M'), M = ⌈N/B⌉" in out
    assert "0.1·(0.001·196)/(0.003·391) = 0.0167093" in out  # ⌈50000/256⌉, ⌈200000/512⌉
    assert "τ_epoch" in out and "51.02" in out


def test_json():
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *BASE, "--to-n", "200000", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert doc["weight_decay"] == pytest.approx(0.1 * 196 / 782)  # M = ⌈50000/256⌉, ⌈200000/256⌉
    assert doc["tau_iter"] == pytest.approx(782 / (1e-3 * 0.1 * 196))
    assert doc["tau_epoch"] == pytest.approx(1 / (1e-3 * 0.1 * 196))
    assert doc["formula"].startswith("λ' = ") and doc["to"]["n"] == 200_000


FLAGS = ["--wd", "--lr", "--n", "--batch-size", "--to-lr", "--to-n", "--to-batch-size"]


@pytest.mark.parametrize("flag", [*FLAGS, "--epochs", "--to-epochs"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ten"])
def test_every_input_is_validated(flag, value, capsys):
    args = [a for i, a in enumerate(BASE) if a != flag and (i == 0 or BASE[i - 1] != flag)]
    args += [flag, value] + (["--epochs", "5"] if flag == "--to-epochs" else [])
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--to-epochs", "3"], "needs epochs"),
        (["--mode", "cautious"], "invalid choice"),
    ],
)
def test_inconsistent_inputs_are_one_line_and_exit_2(extra, message, capsys):
    try:
        code = main([*BASE, *extra])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("bad", [0, -0.1, math.nan, math.inf, True, "0.1", None])
def test_python_api_validates(bad):
    with pytest.raises(ValueError, match="positive finite number"):
        transfer(bad, 1e-3, 1000, 10)
    with pytest.raises(ValueError, match="positive finite number"):
        transfer(0.1, 1e-3, 1000, 10, to_n=bad) if bad is not None else transfer(0.1, 0, 1, 1)


def test_transfer_takes_any_double_it_computes_with(capsys):
    """``--to-n 1e308`` was refused as overflowing float32, "in which wdlab trains": transfer
    trains nothing and computes in logs (found by a new-user trial)."""

    args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "100", "--batch-size", "10"]
    assert main([*args, "--to-n", "1e308", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["to"]["weight_decay"] == pytest.approx(1e-307, rel=1e-12)


def test_a_batch_larger_than_the_data_is_one_full_batch():
    """B > N is what a DataLoader turns into one batch of N: M = 1, as ``steps_per_epoch``
    says; it was refused (found by a new-user trial)."""
    t = transfer(0.1, 1e-3, 100, 256, to_n=1000)
    assert t.source.iters_per_epoch == 1 and t.target.iters_per_epoch == 4
    assert t.weight_decay == pytest.approx(0.1 / 4, rel=1e-15)
    assert transfer(0.1, 1e-3, 1000, 100, to_batch_size=5000).weight_decay == pytest.approx(1.0)


@pytest.mark.parametrize("to_b", ["1e-308", "1e-320"])
def test_steps_per_epoch_beyond_a_float_are_said_as_their_power_of_ten(to_b, capsys):
    """M' = 1e308 / 1e-308 overflows a float: the refusal named "about 1e-inf", not the
    1e-616 it computes in logs (found by a new-user trial)."""
    args = ["--n", "1000", "--batch-size", "100", "--to-n", "1e308", "--to-batch-size", to_b]
    assert main(["transfer", "--wd", "0.1", "--lr", "1e-3", *args]) == 2
    err = capsys.readouterr().err
    expected = "1e-616" if to_b == "1e-308" else "1e-628"
    assert f"weight decay would be about {expected}," in err and "inf" not in err


def test_numpy_and_torch_numbers_are_numbers():
    """A data size taken from ``len(np_array)`` arithmetic is an ``np.int64``, an lr read from a
    tensor a 0-d tensor: both were refused as "must be a positive finite number, got
    np.float32(0.1)"; an int beyond a double (10**400) raised a bare OverflowError."""
    import numpy as np
    import torch

    plain = transfer(0.1, 1e-3, 50_000, 256, to_lr=3e-3)
    mixed = transfer(
        np.float64(0.1),
        torch.tensor(1e-3, dtype=torch.float64),
        np.int64(50_000),
        np.int32(256),
        to_lr=3e-3,
    )
    assert mixed.weight_decay == plain.weight_decay
    for bad in (np.bool_(True), torch.tensor([0.1, 0.2]), "0.1", None):
        with pytest.raises(ValueError, match="weight decay must be a positive finite number"):
            transfer(bad, 1e-3, 100, 10)
    with pytest.raises(ValueError, match="is beyond a double's range"):
        transfer(10**400, 1e-3, 100, 10)
    with pytest.raises(ValueError, match=r"Decimal\('1E-400'\) underflows to 0 as a double"):
        transfer(decimal.Decimal("1e-400"), 1e-3, 100, 10)
    assert transfer(decimal.Decimal("0.1"), 1e-3, 100, 10).weight_decay == 0.1


@pytest.mark.parametrize(
    "n, b, fragment",
    [(10, 0, "batch size must be"), (math.nan, 1, "n must be"), (0, 10, "n must be"),
     (-1, 1, "n must be"), (10, -2, "batch size must be")],
)  # fmt: skip
def test_steps_per_epoch_refuses_what_is_no_count(n, b, fragment):
    """A new-user trial: (10, 0) raised ZeroDivisionError and (0, 10), (-1, 1), (10, -2) were
    one step per epoch."""
    with pytest.raises(ValueError, match=f"^{fragment} a positive finite number"):
        steps_per_epoch(n, b)


def test_the_mode_alone_says_whether_lr_is_in_the_rate():
    """A new-user trial: ``lr_in_rate=True`` beside ``mode="independent"`` used the η factors
    while the result said independent; the mode's fact now comes from the registry only."""
    with pytest.raises(TypeError, match="lr_in_rate"):
        transfer(0.1, 1e-3, 100, 10, to_lr=2e-3, mode="independent", lr_in_rate=True)
    assert transfer(0.1, 1e-3, 100, 10, to_lr=2e-3, mode="independent").weight_decay == 0.1


def test_a_setting_with_lr_times_wd_at_least_one_is_warned():
    """η·λ ≥ 1 is outside the rule's regime (each step multiplies the weights by 1 − η·λ ≤ 0):
    carrying λ = 0.1 from batch 1 to a full batch of 50,000 gave λ' = 5000 without a word. The
    tuned setting and the new one are each checked; inside the regime nothing is said."""
    with pytest.warns(
        UserWarning, match=r"the new setting's η·λ = 5 ≥ 1 \(τ_iter = 0.2 steps\)"
    ) as w:
        t = transfer(0.1, 1e-3, 50_000, 1, to_batch_size=50_000)
    assert w[0].filename == __file__  # the caller's line, not wdlab's
    assert t.weight_decay == pytest.approx(5000) and len(t.to_dict()["caveats"]) == 1
    with pytest.warns(UserWarning, match="the tuned setting's λ = 2 ≥ 1"):
        transfer(2.0, 1e-3, 100, 10, to_n=1000, mode="independent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert transfer(0.1, 1e-3, 50_000, 256, to_lr=3e-3).caveats == []


def test_cli_says_a_weight_decay_that_underflows_and_warns_outside_the_regime(capsys):
    """``--wd 1e-330`` is a positive number that a double holds as 0: it said "must be > 0, got
    1e-330"; a setting with η·λ ≥ 1 is printed with its warning on stderr, exit 0."""
    with pytest.raises(SystemExit) as exc:
        main(["transfer", "--wd", "1e-330", "--lr", "1e-3", "--n", "10", "--batch-size", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "1e-330 underflows to 0" in err
    args = ["transfer", "--wd", "1500", "--lr", "1e-3", "--n", "1000", "--batch-size", "10"]
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "weight decay: 1500 → 1500" in proc.stdout
    assert proc.stderr.count("η·λ = 1.5 ≥ 1") == 2  # the tuned setting and the new one


def test_a_timescale_longer_than_the_run_is_a_caveat():
    """A new-user trial: τ_epoch = 1000 epochs for a 10-epoch run (tau_run 100) was carried
    without a word, the regime the README blames for the rule failing. Now warned and listed
    in caveats, for each setting with its epochs; none within the run."""
    import warnings

    from wdlab import transfer

    with pytest.warns(UserWarning, match=r"tuned setting's τ_epoch = 1000 epochs is longer than "
                      r"its 10-epoch run \(100×\): the weights stay far from"):  # fmt: skip
        t = transfer(0.1, 1e-3, 100, 10, epochs=10, to_epochs=20)
    assert [c.split(" τ_epoch")[0] for c in t.caveats] == [
        "the tuned setting's",
        "the new setting's",
    ]
    assert "= 2000 epochs is longer than its 20-epoch run (100×)" in t.caveats[1]
    with pytest.warns(
        UserWarning,
        match=r"= 1111.11 epochs is longer than its 1111-epoch run "
        r"\(1×\)",
    ):  # fmt: skip (to six digits, as the table prints it)
        transfer(0.03, 3e-3, 1000, 100, epochs=1111)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert transfer(0.1, 1e-3, 100, 10, epochs=1000).caveats == []  # τ_epoch 1000 ≤ 1000
        assert transfer(0.1, 1e-3, 100, 10).caveats == []  # no epochs: no run to compare with
