"""The decay tools tell the truth about the user's own optimizer and model: a group's negative or
NaN weight decay, torch's attention under AdamC, ASGD's timescale, ``inspect`` at wd 0, the
groups of several optimizers, and clear lines for a wrong argument. Each from a new-user trial
(stop 36), checked against what torch does."""

import json
import math

import pytest
import torch
from torch import nn

from wdlab.auditing import CHECKS, audit
from wdlab.cli import main
from wdlab.decay import Decay, decay_table, param_groups
from wdlab.decay.timescales import COUPLED
from wdlab.optimizers import optimizer_spec
from wdlab.records import RunConfig
from wdlab.report.timescale import _loss_there
from wdlab.usercode import a_type


def _one_step_factor(opt_cls, wd, lr=0.1, **kw):
    """The factor one step with a zero gradient multiplies a weight by, in torch itself."""
    w = nn.Parameter(torch.ones(3))
    opt = opt_cls([{"params": [w], "weight_decay": wd}], lr=lr, **kw)
    w.grad = torch.zeros(3)
    opt.step()
    return w.detach()


@pytest.mark.parametrize("wd", [-0.5, math.nan, math.inf])
def test_a_groups_own_bad_weight_decay_is_a_finding(wd):
    """torch checks only the constructor's default: a group's -0.5 grew the weights by 1.05
    per step and NaN made them NaN, while audit said "no weight-decay mistakes found"."""
    m = nn.Linear(2, 2)
    groups = [{"params": [m.weight], "weight_decay": wd}, {"params": [m.bias]}]
    opt = torch.optim.AdamW(groups, lr=0.1)
    report = audit(opt, m)
    (f,) = [f for f in report.findings if f.code == "bad-wd"]
    assert CHECKS["bad-wd"] == "warning" and f.group == 0 and not report.ok
    row = next(r for r in report.rows if r["name"] == "weight")
    assert row["decays"] and (row["decay"][0]["wd"] == wd or math.isnan(wd))
    if wd < 0:
        grown = _one_step_factor(torch.optim.AdamW, wd, lr=0.1)  # what the message says
        assert "pushes the weights away from 0, growing them" in f.message
        assert torch.allclose(grown, torch.full((3,), 1.05))
        adam = torch.optim.Adam([{"params": [m.weight], "weight_decay": wd}], lr=0.1)
        assert [f.code for f in audit(adam, m).findings].count("bad-wd") == 1
    else:
        assert "NaN or inf" in f.message


def test_several_optimizers_say_which_group_is_which():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    sgd = torch.optim.SGD(m[0].parameters(), lr=0.1)
    adam = torch.optim.Adam(m[1].parameters(), lr=0.1, weight_decay=0.01)
    report = audit([sgd, adam], m)
    assert report.groups == ["SGD #0's group 0", "Adam #1's group 0"]
    assert "1 = Adam #1's group 0" in report.to_text() and report.to_dict()["groups"]
    assert audit(sgd, m).groups == []  # one optimizer: its own numbers


def test_asgd_has_the_timescale_of_plain_sgd():
    """ASGD adds wd·w to the gradient and steps every coordinate by one step size: its τ was
    reported undefined, "rescaled per coordinate", as under Adam."""
    lr, wd = 0.1, 0.01
    for opts in ({}, {"lambd": 0.0}, {"lambd": 0.01}):  # its own lambd shrinks too (1e-4)
        factor = _one_step_factor(torch.optim.ASGD, wd, lr=lr, **opts)
        rate, why = COUPLED.rate(lr, wd, optimizer_spec("asgd"), opts, True)
        assert torch.allclose(factor, torch.full((3,), 1 - rate), rtol=0, atol=1e-7), opts
        assert rate == pytest.approx(lr * (wd + opts.get("lambd", 1e-4))) and "ASGD" in why
    assert math.isnan(COUPLED.rate(lr, wd, optimizer_spec("adam"), {}, True)[0])


class _TorchEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)


def test_corrected_marks_torchs_attention_projection():
    """``in_proj_weight`` is no module's ``.weight``: AdamC's normalized set left it out, so
    under ``corrected`` the Q/K/V projection decayed as AdamW while out_proj did not."""
    model = _TorchEncoder()
    names = {r["name"] for r in decay_table(model).rows if r["normalized"]}
    for i in (0, 1):
        for p in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight"):
            assert f"enc.layers.{i}.{p}" in names
    assert "head.weight" not in names and not any("bias" in n for n in names)
    groups, _ = param_groups(model, Decay("corrected", 0.1))
    normalized = [g for g in groups if g.get("normalized") is True]
    assert any(p is model.enc.layers[0].self_attn.in_proj_weight for p in normalized[0]["params"])


def test_inspect_at_wd_0_says_nothing_decays(capsys):
    args = ["inspect", "mlp", "--in-dim", "4", "--hidden", "8", "--wd", "0"]
    assert main([*args, "--group-wd", "*=0.01", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (note,) = [w for w in doc["warnings"] if w.startswith("at wd 0 nothing decays")]
    assert "param_groups(model, Decay(mode, 0), weight_decays=...) does decay" in note
    assert main([*args[:-2], "--wd", "0.1", "--json"]) == 0
    assert not any("nothing decays" in w for w in json.loads(capsys.readouterr().out)["warnings"])


def test_wrong_arguments_get_a_clear_line():
    with pytest.raises(ValueError, match=r"param_groups' decay must be a wdlab\.Decay"):
        param_groups(nn.Linear(2, 2), "decoupled")
    cfg = RunConfig("coupled", 0.1, 0.01, "sgd", options={"momentum": 0.9, "nesterov": True})
    assert cfg.options == (("momentum", 0.9), ("nesterov", True))
    with pytest.raises(ValueError, match=r"options must be \(name, value\) pairs or a dict"):
        RunConfig("coupled", 0.1, 0.01, "sgd", options=("momentum",))
    assert (a_type(1), a_type({}), a_type([])) == ("an int", "a dict", "a list")
    assert decay_table(nn.Linear(2, 2)).summary().startswith("decayed: 1 tensor, 4 parameters")


def test_a_prediction_outside_the_grid_has_no_loss_printed_as_nan():
    assert _loss_there(math.nan) == "(outside the λ grid: no val loss)"
    assert _loss_there(0.25) == "(val loss 0.2500)"
