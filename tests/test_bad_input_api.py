"""``wdlab.sweep``'s arguments: each bad one is one ``ValueError`` line naming it, raised before
anything is trained or written, never another exception type and never a hang."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import wdlab

ROOT = Path(__file__).resolve().parents[1]


def _data(n=60, d=4):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] > 0).long()
    return {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]), "test": (X[50:], y[50:])}


def make(seed):
    return nn.Linear(4, 2)


def refused(match, data=None, **kw):
    """The sweep's error: a ValueError of one line that contains ``match``."""
    with pytest.raises(ValueError) as exc:
        wdlab.sweep(make, _data() if data is None else data, epochs=1, **kw)
    text = str(exc.value)
    assert "\n" not in text and match in text, text
    return text


def test_a_negative_max_batch_is_refused_not_looped_on():
    """Before: ``max_batch=-1`` planned no batch and waited forever at 100% CPU. In a child
    process with a deadline, so that a regression fails instead of hanging the suite."""
    code = textwrap.dedent(
        """
        import torch, wdlab
        from torch import nn
        X = torch.randn(60, 4); y = (X[:, 0] > 0).long()
        data = {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]), "test": (X[50:], y[50:])}
        try:
            wdlab.sweep(lambda seed: nn.Linear(4, 2), data, epochs=1, max_batch=-1)
        except ValueError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert "refused: max_batch: expected an integer >= 1 (or None), got -1" in done.stdout
    refused("max_batch", max_batch=0)
    refused("max_batch", max_batch=2.5)


def test_seeds_that_are_not_a_count_or_a_list():
    """Each names the config key, as seeds=[] and seeds=[0, 0] do (it said "seeds:" here)."""
    said = "train.seeds: expected a count (an integer >= 1) or a list of seeds, got 2.5"
    assert refused(said, seeds=2.5).startswith(said)
    assert refused("train.seeds: expected a count >= 1, got 0", seeds=0).startswith("train.")
    refused("seeds", seeds=None)


def test_a_seed_count_means_the_same_in_python_a_config_file_and_on_the_command_line():
    from wdlab.config import validate

    for given in (3, "3", [0, 1, 2], "0,1,2"):
        assert validate({"train": {"seeds": given}}).train.seeds == [0, 1, 2], given
    assert validate({"train": {"seeds": [3]}}).train.seeds == [3]
    with pytest.raises(ValueError, match=r"train\.seeds: expected a count >= 1, got 0"):
        validate({"train": {"seeds": 0}})


def test_out_an_existing_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    refused("is a file, not a study folder", out=f)
    assert f.read_text() == "mine"  # a file wdlab did not write is left as it was


def test_a_rule_by_name_or_not_a_rule():
    res = wdlab.sweep(make, _data(), epochs=1, rule="everything", weight_decay=[0.1])
    assert res.config["decay"]["rule"] == "everything"
    refused("rule: 'all' is not a decay rule; valid: default, everything, timm", rule="all")
    refused("rule: 3 is not a decay rule", rule=3)


def test_a_memory_budget_that_is_not_a_finite_positive_number():
    for bad in (float("inf"), float("nan"), 0, -5, "2048"):
        refused("max_memory_mb: expected a finite number > 0", max_memory_mb=bad)


def test_a_factory_time_limit_that_is_not_positive():
    for bad in (0, -1, float("nan"), "60"):
        refused("factory_timeout: expected seconds > 0", factory_timeout=bad)


def test_a_time_limit_of_ten_billion_seconds_is_none_not_the_factorys_error():
    """A new-user trial: ``--factory-timeout 1e10`` said "model factory '…' raised
    OverflowError: timestamp out of range": wdlab's own timer overflowed, not the factory.
    A limit over three years is none."""
    from wdlab.usercode import call_user

    for seconds in (1e10, float("inf")):
        assert call_user(lambda: 3, "make", (), {}, seconds) == 3


def test_empty_or_mismatched_splits_and_string_inputs():
    d = _data()
    X, y = d["train"]
    refused("data: the train split is empty", data=d | {"train": (X[:0], y[:0])})
    refused("data['train']: 40 inputs but 39 targets", data=d | {"train": (X, y[:39])})
    words = np.array([["a", "b", "c", "d"]] * 40)
    refused("data: the splits must hold numbers", data=d | {"train": (words, y)})
    refused("data: the splits must hold numbers", data=d | {"train": (X, np.array(["yes"] * 40))})


# -- a new user's trial: arguments that were a traceback or dropped without a word -------------


@pytest.mark.parametrize(
    "kw, said",
    [
        ({"weight_decay": None}, "decay.weight_decay: expected a number or a list, got None"),
        ({"lr": None}, "train.lr: expected a number or a list, got None"),
        ({"diagnostics": None}, "train.diagnostics: expected a list of strings, got None"),
        ({"seeds": [0, 1, 1]}, "train.seeds: seed 1 is given twice; each seed is one run"),
        ({"weight_decay": [0.1, 0.1]}, "decay.weight_decay: weight decay 0.1 is given twice"),
        ({"lr": [0.1, 0.01, 0.1]}, "train.lr: learning rate 0.1 is given twice; give each once"),
        ({"modes": ["l2", "l2"]}, "decay.modes: mode l2 is given twice; give each once"),
        ({"patience": 3}, "train.patience = 3 sets an early stopping that is off: add "
                          "train.early_stopping = true"),
        ({"target": "y"}, "target= applies to a .csv/.parquet file"),
    ],
)  # fmt: skip
def test_arguments_that_were_a_traceback_or_dropped_are_one_line(kw, said):
    """Before: ``TypeError`` for None; seeds [0, 1, 1] trained 2 seeds, patience without early
    stopping nothing, both silently; 'target= apply to'; a weight decay, lr or mode given
    twice was dropped once, silently, where a seed given twice was refused."""
    refused(said, **kw)


def test_numpy_and_torch_numbers_are_the_numbers_they_hold():
    """A notebook's ``np.int64(2)``, ``np.logspace(...)`` and ``torch.tensor([...])`` were
    refused ("expected an integer >= 1, got np.int64(2)") though NumPy data are taken."""
    a = wdlab.sweep(make, _data(), epochs=np.int64(2), seeds=np.int64(2), lr=np.float64(0.01),
                    weight_decay=np.array([0.0, 0.1]), batch_size=np.int32(16))  # fmt: skip
    b = wdlab.sweep(make, _data(), epochs=2, seeds=2, weight_decay=[0.0, 0.1], lr=0.01,
                    batch_size=16)  # fmt: skip
    assert [r.final for r in a.runs] == [r.final for r in b.runs]
    c = wdlab.sweep(make, _data(), epochs=2, seeds=2, lr=0.01, batch_size=16,
                    weight_decay=torch.tensor([0.0, 0.1], dtype=torch.float64))  # fmt: skip
    assert [r.config for r in c.runs] == [r.config for r in b.runs]


def test_one_diagnostic_by_name_is_that_diagnostic():
    """``diagnostics="rotation"`` was read letter by letter: ``unknown diagnostic 'r'``."""
    res = wdlab.sweep(make, _data(), epochs=1, weight_decay=[0.0], diagnostics="rotation")
    assert any(k.startswith("diag.rotation") for k in res.runs[0].curves.series)


def test_a_budget_below_a_mib_is_said_in_kib():
    """It said a configuration needs "about 0 MiB"."""
    text = refused("more than", max_memory_mb=0.001)
    assert " 0 MiB" not in text and "KiB" in text, text


def test_decay_and_param_groups_refuse_bad_input_as_value_errors():
    """Found by a new-user trial: a string base_lr was a TypeError, a list of tensors given to
    param_groups an AttributeError, an anchor of the wrong shape passed attach and failed at
    the first step, and NumPy's float32 weight decay was refused while float64 was taken."""
    from wdlab.decay.group import Keys

    with pytest.raises(ValueError, match="base_lr must be a positive number, got '1'"):
        wdlab.Decay("independent", 0.1, base_lr="1")
    with pytest.raises(ValueError, match=r"take the nn\.Module, got list"):
        wdlab.param_groups([torch.zeros(2, requires_grad=True)], wdlab.Decay("coupled", 0.1))
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    anchor = [torch.zeros(3), torch.zeros(3)]
    with pytest.raises(ValueError, match=r"anchor\[0\] is \(3,\), but its parameter's shape"):
        wdlab.Decay("to_init", 0.1, anchor=anchor).attach(opt)
    assert not {Keys.STATE, Keys.LR0, Keys.ANCHOR} & set(opt.param_groups[0])  # nothing set
    for wd in (np.float32(0.1), np.float64(0.1), np.int64(1)):
        d = wdlab.Decay("coupled", wd)
        assert type(d.weight_decay) is float and d.weight_decay == float(wd)


class _WithAux(nn.Module):
    """Logits and an auxiliary output (``return logits, aux`` or a dict of them)."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.lin, self.as_dict = nn.Linear(13, 3), as_dict

    def forward(self, x):
        logits = self.lin(x)
        return {"logits": logits} if self.as_dict else (logits, x.sum())


@pytest.mark.parametrize(("as_dict", "kind"), [(False, "tuple"), (True, "dict")])
def test_a_model_that_returns_more_than_a_tensor_is_told_what_to_return(as_dict, kind):
    """It said "'tuple' object has no attribute 'view_as'" (found by a new-user trial)."""
    with pytest.raises(ValueError, match=f"the model returns a {kind}, not one tensor: return"):
        wdlab.sweep(lambda seed: _WithAux(as_dict), "wine", weight_decay=[0.0, 0.1], epochs=1)


def test_batch_size_0_with_bare_datasets_is_wdlabs_line():
    """``batch_size=0`` (the full batch, as None) with bare Datasets: wdlab's line naming the
    split and what to give (torch's own message came through)."""
    X = torch.randn(60, 13, generator=torch.Generator().manual_seed(0))
    y = (X[:, 0] > 0).long()
    data = {k: torch.utils.data.TensorDataset(X[a:b], y[a:b])
            for k, a, b in (("train", 0, 40), ("val", 40, 50), ("test", 50, 60))}  # fmt: skip
    with pytest.raises(ValueError, match=r"data\['train'\] is a Dataset .* give a positive batch"):
        wdlab.sweep(lambda seed: nn.Linear(13, 2), data, weight_decay=[0.0], batch_size=0)
