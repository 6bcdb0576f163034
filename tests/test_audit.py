"""``wdlab.audit`` and ``wdlab audit``: each known mistake is built here and must be named."""

import json
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from wdlab.auditing import CHECKS, audit
from wdlab.cli import main
from wdlab.decay import Decay, param_groups


class Net(nn.Module):
    """An embedding, two Linear layers with biases, a LayerNorm: 7 tensors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)


def _rows(report) -> dict[str, dict]:
    return {r["name"]: r for r in report.rows}


def _only(report, code):
    (finding,) = [f for f in report.findings if f.code == code]
    return finding


def test_decayed_norms_biases_and_embeddings_are_named():
    model = Net()
    report = audit(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4), model)
    norm = _only(report, "decayed-norm")
    assert norm.severity == "warning" and norm.params == ("norm.weight", "norm.bias")
    assert norm.message.startswith("2 norm tensors (8 parameters) decay: norm.weight, norm.bias")
    assert 'wdlab.param_groups(model, wdlab.Decay("builtin", ' in norm.message
    bias = _only(report, "decayed-bias")
    assert bias.params == ("fc.bias", "head.bias") and bias.severity == "warning"
    emb = _only(report, "decayed-embedding")
    assert emb.params == ("emb.weight",) and emb.severity == "note"
    assert not report.ok
    rows = _rows(report)
    assert [rows[n]["kind"] for n in ("emb.weight", "fc.weight", "fc.bias", "norm.weight")] == [
        "embedding",
        "weight",
        "bias",
        "norm",
    ]


def test_adam_weight_decay_where_adamw_was_meant():
    model = Net()
    weights = [model.fc.weight, model.head.weight]
    report = audit(torch.optim.Adam(weights, lr=1e-3, weight_decay=0.01), model)
    f = _only(report, "adam-l2")
    assert f.group == 0 and f.message.startswith("param group 0: Adam(weight_decay=0.01)")
    assert "AdamW was likely meant: torch.optim.AdamW(..., weight_decay=0.01)" in f.message
    assert "which Adam then divides by √v, so" in f.message
    adamax = _only(audit(torch.optim.Adamax(weights, weight_decay=0.01), model), "adam-l2")
    assert "which Adamax then divides by the running max of |g|, so" in adamax.message  # not √v
    for fine in (
        torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01),
        torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01, decoupled_weight_decay=1),
        torch.optim.Adam(model.parameters(), lr=1e-3),
    ):
        assert "adam-l2" not in audit(fine, model).codes()


def test_lightnings_configure_optimizers_dict_is_audited_as_its_optimizer():
    """A new-user trial: a setup returning Lightning's dict was told "audit needs a torch.optim
    optimizer". Its optimizer is audited, at its scheduler's peaks (CyclicLR keeps them)."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=0.5)
    cyclic = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=4.0)
    plain = audit(opt, model, cyclic)
    for form in (
        {"optimizer": opt, "lr_scheduler": cyclic},
        {"optimizer": opt, "lr_scheduler": {"scheduler": cyclic, "interval": "step"}},
    ):
        assert audit(form, model).to_dict() == plain.to_dict()
    assert "lr-wd" in plain.codes()  # the peak was read from the scheduler
    assert "lr-wd" not in audit({"optimizer": opt}, model).codes()


def test_every_return_of_lightnings_configure_optimizers_is_audited_at_its_peaks():
    """A new-user trial: Lightning's most common return, ``([opt], [sched])``, passed the lint
    with CyclicLR's peak lr·wd = 2.5 unread (as did a list of dicts, and ``audit([opt], m,
    [sched])``); a scheduler that is not one was taken silently."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=0.5)
    cyclic = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=5.0)
    plain = audit(opt, model, cyclic)
    assert "lr-wd" in plain.codes()
    as_dict = {"scheduler": cyclic, "interval": "step"}
    for form, scheduler in (
        (([opt], [cyclic]), None),
        (([opt], [as_dict]), None),
        ([{"optimizer": opt, "lr_scheduler": cyclic}], None),
        ([opt], [cyclic]),
        ([opt], [as_dict]),
        (opt, as_dict),
    ):
        assert audit(form, model, scheduler).to_dict() == plain.to_dict(), form
    with pytest.raises(ValueError, match=r"^scheduler: expected a torch lr scheduler .*'cosine'"):
        audit(opt, model, "cosine")
    with pytest.raises(ValueError, match=r"configure_optimizers returns; got tuple$"):
        audit((model, [opt]), model)


def test_effective_formula_per_optimizer_class():
    model = Net()
    cases = {
        torch.optim.SGD: ("coupled", "g ← g + wd·w"),
        torch.optim.Adam: ("coupled", "g ← g + wd·w"),
        torch.optim.RMSprop: ("coupled", "g ← g + wd·w"),
        torch.optim.AdamW: ("decoupled", "w ← w·(1 − lr_t·wd)"),
    }
    for cls, (mode, formula) in cases.items():
        report = audit(cls(model.fc.parameters(), lr=1e-3, weight_decay=0.05), model)
        (entry,) = _rows(report)["fc.weight"]["decay"]
        assert entry["mode"] == mode and entry["wd"] == 0.05 and formula in entry["formula"]
        assert entry["by"] == f"{cls.__name__}(weight_decay)"
        assert f"{cls.__name__}(weight_decay) is {mode}: {formula}" in report.to_text()
    # decoupled Adam, an optimizer without weight decay, one wdlab does not know
    adam_d = torch.optim.Adam(model.parameters(), weight_decay=0.1, decoupled_weight_decay=True)
    assert _rows(audit(adam_d, model))["fc.weight"]["decay"][0]["mode"] == "decoupled"
    assert not _rows(audit(torch.optim.Rprop(model.parameters()), model))["fc.weight"]["decays"]
    assert not _rows(audit(torch.optim.LBFGS(model.parameters()), model))["fc.weight"]["decays"]

    class MyOpt(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1, "weight_decay": 0.02})

    (entry,) = _rows(audit(MyOpt(model.parameters()), model))["fc.weight"]["decay"]
    assert entry["mode"] == "unknown" and "does not know" in entry["formula"]


def test_an_attached_decay_is_read_and_double_decay_named():
    model = Net()
    decay = Decay("decoupled", 0.1)
    opt = torch.optim.Adam(param_groups(model, decay)[0], lr=1e-3)
    decay.attach(opt)
    report = audit(opt, model)
    rows = _rows(report)
    assert rows["fc.weight"]["decay"] == [
        {"by": "wdlab Decay", "mode": "decoupled", "wd": 0.1, "formula": decay.formula}
    ]
    assert not rows["fc.bias"]["decays"] and not rows["norm.weight"]["decays"]
    assert report.codes() == ["decayed-embedding"] and report.ok  # a note only

    opt = torch.optim.AdamW([model.fc.weight], lr=1e-3)  # AdamW's default 0.01 stays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("decoupled", 0.1).attach(opt)
    f = _only(audit(opt, model), "double-decay")
    assert f.group == 0
    assert f.message.startswith("param group 0 decays twice: AdamW(weight_decay) and wdlab Decay")
    assert "set weight_decay=0 in that group" in f.message


def test_parameters_missing_from_every_group():
    model = Net()
    model.emb.weight.requires_grad_(False)  # frozen on purpose: not a mistake
    opt = torch.optim.AdamW([model.fc.weight, model.norm.weight, model.norm.bias], lr=1e-3)
    f = _only(audit(opt, model), "missing")
    assert f.params == ("fc.bias", "head.weight", "head.bias")
    assert f.message.startswith("3 trainable tensors in no param group: fc.bias, head.weight")
    assert _rows(audit(opt, model))["head.weight"]["groups"] == []


def test_a_frozen_tensor_in_a_group_does_not_decay():
    """torch's optimizers skip a tensor without a gradient, so a frozen one in a decaying group
    is not decayed: the audit said "decays yes" (found by a new-user trial); one real AdamW
    step shows what happens. Its bias still counts in the finding, said to be frozen now: it
    decays once unfrozen (gradual unfreezing keeps such tensors in the optimizer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    report = audit(opt, model)
    rows = _rows(report)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    for name, p in model.named_parameters():
        assert rows[name]["decays"] == (not torch.equal(p, before[name]))
        assert rows[name]["frozen"] == name.startswith("0.")
    finding = _only(report, "decayed-bias")
    assert (
        finding.params == ("0.bias", "2.bias")
        and "(1 frozen now: from when they" in finding.message
    )
    text = report.to_text()
    assert "AdamW: 2 of 4 tensors decay" in text and text.count("no (frozen)") == 2


def test_a_parameter_in_two_groups_or_two_optimizers():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.param_groups.append({**opt.param_groups[0], "params": [model.fc.weight]})
    f = _only(audit(opt, model), "duplicate")
    assert f.params == ("fc.weight",) and "fc.weight in groups [0, 1]" in f.message
    with pytest.warns(UserWarning, match="duplicate parameters"):
        twice = torch.optim.SGD([model.fc.weight, model.fc.weight], lr=0.1)
    assert _only(audit(twice, model), "duplicate").params == ("fc.weight",)
    a = torch.optim.SGD(model.parameters(), lr=0.1)
    b = torch.optim.SGD(model.head.parameters(), lr=0.1)
    report = audit([a, b], model)
    assert _only(report, "duplicate").params == ("head.weight", "head.bias")
    assert report.optimizer == "SGD + SGD"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (
            lambda p: torch.optim.SGD(p, lr=10, weight_decay=0.5),
            "lr·wd = 5 ≥ 1 (SGD(weight_decay), coupled)",
        ),
        (
            lambda p: torch.optim.AdamW(p, lr=2, weight_decay=0.5),
            "lr·wd = 1 ≥ 1 (AdamW(weight_decay), decoupled)",
        ),
    ],
)
def test_lr_times_wd_at_least_one(make, fragment):
    model = Net()
    f = _only(audit(make([model.fc.weight, model.head.weight]), model), "lr-wd")
    assert f.message.startswith("param group 0: " + fragment)
    assert "flips or zeroes them" in f.message


def test_lr_times_wd_through_an_attached_decay():
    model = Net()
    opt = torch.optim.SGD(param_groups(model)[0], lr=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("decoupled", 0.5).attach(opt)
    assert "(wdlab Decay, decoupled)" in _only(audit(opt, model), "lr-wd").message


def test_lr_times_wd_names_the_mode_that_decays_not_another():
    """A new-user trial: ``independent`` (rate wd, no lr in it) was told "for SGD and
    decoupled decay a step multiplies the weights by …"."""
    model = Net()
    opt = torch.optim.SGD(param_groups(model)[0], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("independent", 2.0).attach(opt)
    msg = _only(audit(opt, model), "lr-wd").message
    assert "wd = 2 ≥ 1 (wdlab Decay, independent): a step of this decay multiplies" in msg
    assert "decoupled" not in msg


def test_clean_setup_and_without_a_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    decay = Decay("decoupled", 0.01)
    opt = torch.optim.Adam(param_groups(model, decay)[0], lr=1e-3)
    decay.attach(opt)
    report = audit(opt, model)
    assert report.findings == [] and report.ok
    assert report.to_text().endswith("Adam: 2 of 6 tensors decay\nno weight-decay mistakes found")
    assert str(report) == report.to_text()
    bare = audit(torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1))
    assert [r["name"] for r in bare.rows][:2] == ["group0.params[0]", "group0.params[1]"]
    assert {r["kind"] for r in bare.rows} == {"weight", "1-D"}


def test_bad_arguments_are_one_line():
    with pytest.raises(ValueError, match=r"audit needs a torch\.optim optimizer"):
        audit(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Module, got SGD"):
        opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        audit(opt, opt)


def test_every_check_code_can_be_produced():
    """The codes above cover CHECKS."""
    assert set(CHECKS) == {
        "decayed-norm",
        "decayed-bias",
        "decayed-embedding",
        "adam-l2",
        "missing",
        "duplicate",
        "lr-wd",
        "double-decay",
        "redundant-bias",  # produced in test_zerograd.py
        "bad-wd",  # produced in test_decay_truths.py
        "wd-overridden",
        "decayed-listed",
    }


SETUP = """
import torch
from torch import nn

def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01)

def clean():
    model = nn.Linear(4, 1, bias=False)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

def not_a_pair():
    return 3

def swapped():
    model = nn.Linear(4, 1)
    return torch.optim.AdamW(model.parameters()), model

def lists():  # Lightning's ([optimizers], [schedulers]), after the model
    model = nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    return model, [opt], [torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 50.0)]

def refuses():
    raise ValueError("nope")

def hangs():
    import time
    time.sleep(60)
"""


@pytest.fixture
def setup_module(tmp_path, monkeypatch):
    (tmp_path / "mytrain_audit.py").write_text(textwrap.dedent(SETUP))
    (tmp_path / "a_folder.py").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("mytrain_audit", None)


def test_cli_text_json_and_exit_status(setup_module, capsys):
    assert main(["audit", "mytrain_audit:setup"]) == 1  # warnings found
    text = capsys.readouterr().out
    assert "[adam-l2]" in text and "[decayed-norm]" in text and "[decayed-bias]" in text
    assert main(["audit", "mytrain_audit:setup", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    from mytrain_audit import setup

    assert doc == json.loads(json.dumps(audit(*reversed(setup())).to_dict()))
    assert [f["code"] for f in doc["findings"]] == ["decayed-norm", "decayed-bias", "adam-l2"]
    assert doc["parameters"][0]["decay"][0]["mode"] == "coupled" and doc["ok"] is False
    assert main(["audit", str(setup_module / "mytrain_audit.py") + ":clean"]) == 0
    assert "no weight-decay mistakes found" in capsys.readouterr().out
    assert main(["audit", "mytrain_audit:lists"]) == 1  # CyclicLR's peak: lr·wd = 2.5
    assert "[lr-wd]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("mytrain_audit", "expected MODULE:FUNCTION"),
        ("no_such_module_xyz:setup", "cannot load 'no_such_module_xyz:setup'"),
        ("mytrain_audit:nothing", "cannot load 'mytrain_audit:nothing'"),
        ("mytrain_audit:not_a_pair", "must return (model, optimizer) or (model, optimizer, sc"),
        ("mytrain_audit:swapped", "returned the model second: return (model, optimizer)"),
        ("missing_file.py:setup", "no file missing_file.py"),
        ("a_folder.py:setup", "a_folder.py is not a regular file"),  # it said "no file"
        # the user's own error is named as theirs (it read as wdlab's: "error: nope")
        ("mytrain_audit:refuses", "setup function 'mytrain_audit:refuses' raised ValueError: nope"),
    ],
)
def test_cli_bad_target_is_one_line_and_exit_2(setup_module, capsys, target, fragment):
    assert main(["audit", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_a_setup_or_factory_that_hangs_is_stopped_by_its_time_limit(setup_module, capsys):
    """audit called setup() with no time limit, and inspect gave a factory 300 s with no
    --factory-timeout to change it, although its message named that flag (found by a new-user
    trial): both take --factory-timeout, as run and sweep do."""
    (setup_module / "hang_factory.py").write_text(
        "import time\n\ndef make():\n    time.sleep(60)\n"
    )
    assert main(["audit", "mytrain_audit:hangs", "--factory-timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "setup function 'mytrain_audit:hangs' did not return within 0.5 s" in err
    assert main(["inspect", "hang_factory.py:make", "--factory-timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "model factory 'hang_factory.py:make' did not return within 0.5 s" in err


class _ViT(nn.Module):
    """A ViT's parameters as timm names them: what its ``no_weight_decay()`` lists."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def no_weight_decay(self):
        return {"cls_token", "pos_embed"}


def test_the_audits_advice_keeps_decay_on_and_a_decay_turned_off_is_named():
    """The advice "keep them out with wdlab.param_groups(model)", followed, built groups that
    set weight_decay=0 everywhere: AdamW(groups, weight_decay=0.05) decayed nothing and the
    audit found no mistake. The advice now names the call that decays the rest by the
    optimizer's own weight decay, and a constructor's weight decay that no group keeps is a
    warning; the model's own no_weight_decay() tensors that decay are a note (found by a
    new-user trial)."""
    model = _ViT()
    plain = audit(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05), model)
    listed = _only(plain, "decayed-listed")
    assert listed.params == ("cls_token", "pos_embed") and listed.severity == "note"
    fix = 'wdlab.param_groups(model, wdlab.Decay("builtin", 0.05))'
    assert fix in _only(plain, "decayed-norm").message
    off = torch.optim.AdamW(param_groups(model)[0], lr=1e-3, weight_decay=0.05)
    report = audit(off, model)
    assert report.codes() == ["wd-overridden"] and not report.ok
    assert "AdamW(weight_decay=0.05) decays nothing" in report.findings[0].message
    followed = param_groups(model, Decay("builtin", 0.05))[0]
    report = audit(torch.optim.AdamW(followed, lr=1e-3, weight_decay=0.05), model)
    assert report.findings == [] and {r["name"] for r in report.rows if r["decays"]} == {
        "proj.weight"
    }


def test_lr_wd_reads_the_schedulers_peak_lr():
    """OneCycleLR starts at max_lr/25: SGD(weight_decay=0.5) under max_lr 4 multiplies the
    weights by −1 at the peak, and the audit (which read the starting lr, 0.16) said
    nothing. It reads ``max_lr`` (and ``initial_lr``) where a scheduler set them."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4.0, total_steps=10)
    msg = _only(audit(opt, model), "lr-wd").message
    assert "lr·wd = 2 ≥ 1 at the scheduler's max_lr 4" in msg
    calm = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    torch.optim.lr_scheduler.OneCycleLR(calm, max_lr=1.0, total_steps=10)
    assert "lr-wd" not in audit(calm, model).codes()


def test_wd_overridden_is_not_said_for_a_default_the_user_never_gave():
    """``AdamW([{"params": …, "weight_decay": 0.0}])``: no decay, chosen; the constructor's
    0.01 is only AdamW's default, which the user may never have written, so it is not a
    warning (it said "AdamW(weight_decay=0.01) decays nothing"). Given, it is."""
    model = nn.Linear(4, 2)
    chosen = torch.optim.AdamW([{"params": model.parameters(), "weight_decay": 0.0}], lr=1e-3)
    assert "wd-overridden" not in audit(chosen, model).codes()
    given = torch.optim.AdamW(param_groups(model)[0], lr=1e-3, weight_decay=0.05)
    assert "wd-overridden" in audit(given, model).codes()


def test_lr_wd_of_a_rate_without_lr_names_no_peak_lr():
    """``independent``'s rate is λ alone: its lr-wd finding said "at the scheduler's max_lr"."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("independent", 2.0).attach(opt)
    msg = _only(audit(opt, model), "lr-wd").message
    assert "wd = 2 ≥ 1 (wdlab Decay" in msg and "max_lr" not in msg


def test_lr_wd_reads_a_cyclic_schedulers_peak_when_it_is_given(tmp_path, capsys, monkeypatch):
    """CyclicLR keeps its max_lr on the scheduler, not in the groups: SGD(weight_decay=0.5)
    cycling up to lr 4 (×−1 per step at the peak) passed the audit. Given the scheduler (a
    ``setup()`` returning it too), the audit checks lr·wd there; without it, it cannot see it."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=4.0)
    assert "lr-wd" not in audit(opt, model).codes()
    msg = _only(audit(opt, model, sched), "lr-wd").message
    assert "lr·wd = 2 ≥ 1 at the scheduler's max_lr 4" in msg
    assert "max_lr" not in opt.param_groups[0]  # read, not written
    (tmp_path / "cyc.py").write_text(
        "import torch\nfrom torch import nn\n\ndef setup():\n    m = nn.Linear(4, 2)\n"
        "    o = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.5)\n"
        "    return m, o, torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.1, max_lr=4.0)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "cyc.py:setup"]) == 1
    assert (
        "[lr-wd] param group 0: lr·wd = 2 ≥ 1 at the scheduler's max_lr 4"
        in capsys.readouterr().out
    )


def test_the_advice_keeps_the_decay_that_is_attached():
    """A new-user trial: with ``Decay("decoupled", 0.05)`` attached, the advice for decayed
    biases was ``wdlab.Decay("builtin", 0.05)``: another mode than the user's."""
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("decoupled", 0.05).attach(opt)
    msg = _only(audit(opt, model), "decayed-bias").message
    assert 'wdlab.param_groups(model, wdlab.Decay("decoupled", 0.05)), then the optimizer on ' \
        "groups, the decay on it" in msg  # fmt: skip


def test_the_advice_keeps_the_attached_decay_over_the_optimizers_own():
    """A new-user trial: ``AdamW(model.parameters())`` (its default 0.01) with
    ``Decay("decoupled", 0.05)`` attached is a double decay, and the advice for its decayed
    biases said ``Decay("builtin", 0.01)``, dropping the user's own decay."""
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Decay("decoupled", 0.05).attach(opt)
    report = audit(opt, model)
    assert "double-decay" in report.codes()
    assert 'wdlab.Decay("decoupled", 0.05)' in _only(report, "decayed-bias").message


def test_no_advice_names_a_weight_decay_that_would_be_refused():
    """A new-user trial: a group's ``weight_decay=-0.5`` gave the advice
    ``wdlab.Decay("builtin", -0.5)``, which raises; ``bad-wd`` says what is wrong instead."""
    model = Net()
    opt = torch.optim.SGD([{"params": model.parameters(), "weight_decay": -0.5}], lr=0.1)
    report = audit(opt, model)  # (torch checks only the constructor's weight_decay)
    assert "bad-wd" in report.codes()
    assert "-0.5" not in _only(report, "decayed-bias").message


def test_a_group_with_lr_0_is_not_said_to_decay():
    """A new-user trial: ``AdamW([{"params": [emb.weight], "lr": 0.0, "weight_decay": 0.1}])``
    was listed "decays yes", though 1 − 0·0.1 = 1 decays nothing. A scheduler whose warm-up
    starts at lr 0 (LambdaLR, its ``initial_lr`` kept in the group) still decays."""
    model = Net()
    lr_zero = [model.emb.weight]
    rest = [p for p in model.parameters() if p is not model.emb.weight]
    groups = [{"params": lr_zero, "lr": 0.0, "weight_decay": 0.1}, {"params": rest}]
    report = audit(torch.optim.AdamW(groups, lr=1e-3), model)
    row = _rows(report)["emb.weight"]
    assert row["decays"] is False and row["lr_zero"] is True
    assert "emb.weight" in report.to_text() and "no (lr 0)" in report.to_text()
    assert "decayed-embedding" not in report.codes()
    warm = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.optim.lr_scheduler.LambdaLR(warm, lambda step: step / 10)  # lr 0 at step 0
    assert warm.param_groups[0]["lr"] == 0.0 and _rows(audit(warm, model))["fc.weight"]["decays"]


def test_lr_wd_reads_the_peak_of_a_weight_decay_schedule():
    """A new-user trial: ``Decay("decoupled", 0.05, schedule="cosine:0.05:0.5:100")`` under
    SGD(lr=3) reaches lr·wd = 1.5 (the weights flip sign each step) with no warning at attach,
    and the audit passed until the step count got there."""
    model = nn.Linear(4, 4, bias=False)
    decay = Decay("decoupled", 0.05, schedule="cosine:0.05:0.5:100")
    groups, _ = param_groups(model, decay)
    opt = torch.optim.SGD(groups, lr=3.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        decay.attach(opt)
    said = "lr·wd = 1.5 ≥ 1 at the weight-decay schedule's peak wd 0.5 (wdlab Decay"
    assert any(said in str(w.message) for w in seen)
    assert said in _only(audit(opt, model), "lr-wd").message
    calm = torch.optim.SGD(param_groups(model, decay)[0], lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peak lr·wd = 0.5: nothing to say
        Decay("decoupled", 0.05, schedule="cosine:0.05:0.5:100").attach(calm)


def test_the_optimizer_and_model_given_the_wrong_way_round_say_so():
    """``audit(model, optimizer)`` said only that audit needs an optimizer."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"the optimizer first$"):
        audit(model, opt)  # type: ignore[arg-type]


def test_the_peaks_of_an_lr_and_a_weight_decay_schedule_are_a_bound():
    """A checker: OneCycleLR's lr peaks near 30% of the run, a rising weight decay at its end;
    the finding multiplied the two peaks as if one step had both. It says it is a bound."""
    model = nn.Linear(4, 4, bias=False)
    decay = Decay("decoupled", 0.1, schedule="cosine:0.1:15:100")
    opt = torch.optim.SGD(param_groups(model, decay)[0], lr=0.1)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decay.attach(opt)
    msg = _only(audit(opt, model), "lr-wd").message
    assert "at the scheduler's max_lr 0.1 and the weight-decay schedule's peak wd 15" in msg
    assert "(a bound: the two peaks may not meet)" in msg


def test_a_sweep_warns_lr_wd_at_its_weight_decay_schedules_peak(tmp_path):
    """A checker: ``wdlab run --wd 0.1 --lr 0.5 --wd-schedule linear:0.1:5:3`` reaches
    lr·wd = 2.5 and said nothing (attach and audit did, the sweep read the starting wd)."""
    from wdlab.pipelines import run_sweep

    cfg = {
        "data": {"source": "wine"},
        "model": {"kind": "linear"},
        "train": {"optimizer": "sgd", "lr": [0.5], "epochs": 1, "seeds": [0]},
        "decay": {"modes": ["decoupled"], "weight_decay": [0.1], "wd_schedule": "linear:0.1:5:3"},
    }
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run_sweep(cfg, tmp_path / "s")
    said = [str(w.message) for w in seen if "lr·wd" in str(w.message)]
    assert len(said) == 1 and "lr·wd = 2.5 ≥ 1 at the weight-decay schedule's peak wd 5" in said[0]


def test_lr_0_reads_a_cyclic_schedulers_peak_and_is_no_override():
    """A checker: CyclicLR from base_lr 0 (given to the audit) was "no (lr 0)", though it
    cycles up to 0.1; and ``AdamW(lr=0, weight_decay=0.1)`` was told its weight decay "decays
    nothing: every param group sets its own weight_decay=0"."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.0, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.0, max_lr=0.1)
    assert _rows(audit(opt, model, sched))["fc.weight"]["decays"] is True
    still = audit(torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.1), model)
    assert _rows(still)["fc.weight"]["lr_zero"] and "wd-overridden" not in still.codes()


def test_a_table_tied_under_a_linears_name_is_an_embedding_and_a_scalar_is_one():
    """A checker: the audit called a tied embedding table "weight" where the decay table said
    "embedding", and a 0-D parameter "1-D"."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 10, bias=False)
            self.tok = nn.Embedding(10, 4)
            self.tok.weight = self.head.weight
            self.temperature = nn.Parameter(torch.tensor(1.0))

    model = Tied()
    kinds = {
        r["name"]: r["kind"] for r in audit(torch.optim.SGD(model.parameters(), lr=0.1), model).rows
    }
    assert kinds == {"head.weight": "embedding", "temperature": "scalar"}
    with pytest.raises(ValueError, match=r"the optimizer first$"):
        audit(model, [torch.optim.SGD(model.parameters(), lr=0.1)])  # type: ignore[arg-type]
