"""Which tensors decay (rule presets held to the libraries they name), per-group weight decays,
weight-decay schedules, and what ``wdlab inspect`` shows of them."""

import json
import math
import re
import subprocess
import sys
import warnings
from html import escape as html_escape

import pytest
import torch
from torch import nn

from wdlab.cli import main
from wdlab.data import Dataset
from wdlab.decay import (
    DEFAULT_RULE,
    Decay,
    DecayRule,
    DecayTable,
    cosine,
    decay_table,
    linear,
    param_groups,
)


class Mixed(nn.Module):
    """15 tensors on which the Hugging Face Trainer's rule and wdlab's default differ on 6:
    BatchNorm and GroupNorm weights, a 1-D gain and a 0-D logit scale (HF decays them: not
    LayerNorm, no bias/norm in the name), a 2-D relative-position bias and a Linear named
    layernorm_proj (HF does not: "bias" / "layernorm" in the name)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.q_norm = nn.RMSNorm(4)
        self.layernorm_proj = nn.Linear(4, 4, bias=False)
        self.rel_pos_bias = nn.Parameter(torch.zeros(3, 3))
        self.scale = nn.Parameter(torch.ones(4))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.head = nn.Linear(4, 2, bias=False)


class WithHook(nn.Module):
    """timm's and nanoGPT's edge cases: a 2-D tensor named ``….bias``, a top-level 2-D tensor
    named ``bias``, and a model ``no_weight_decay()`` naming a 2-D tensor and a wildcard."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Mixed()
        self.attn = nn.Module()
        self.attn.bias = nn.Parameter(torch.zeros(2, 3))
        self.bias = nn.Parameter(torch.zeros(2, 2))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "body.emb.*"}


def _decaying(model: nn.Module, rule: DecayRule) -> set[str]:
    return {r["name"] for r in decay_table(model, rule).rows if r["decays"]}


def test_hf_preset_equals_the_trainers_own_function():
    """The real ``Trainer.get_decay_parameter_names`` (transformers installs here without a
    CUDA torch); on Mixed it differs from wdlab's default on 6 of 15 tensors."""
    trainer = pytest.importorskip("transformers.trainer")
    for model in (Mixed(), WithHook()):
        names = {n for n, _ in model.named_parameters()}
        hf = set(trainer.Trainer.get_decay_parameter_names(None, model)) & names
        assert _decaying(model, DecayRule.preset("hf")) == hf
    model = Mixed()
    assert len(list(model.parameters())) == 15
    differ = _decaying(model, DEFAULT_RULE) ^ _decaying(model, DecayRule.preset("hf"))
    assert differ == {
        "bn.weight",
        "gn.weight",
        "scale",
        "logit_scale",
        "rel_pos_bias",
        "layernorm_proj.weight",
    }


def _timm(model: nn.Module) -> set[str]:
    """timm's ``param_groups_weight_decay`` (huggingface/pytorch-image-models,
    timm/optim/_param_groups.py), transcribed: no decay if ``param.ndim <= 1 or
    name.endswith(".bias") or _matches_pattern(name, no_weight_decay_list)``, the list being
    ``model.no_weight_decay()`` and the match ``fnmatch``. (timm itself does not import here:
    it needs torchvision.)"""
    import fnmatch

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {
        name
        for name, param in model.named_parameters()
        if not (
            param.ndim <= 1
            or name.endswith(".bias")
            or any(fnmatch.fnmatch(name, pattern) for pattern in skip)
        )
    }


def _nanogpt(model: nn.Module) -> set[str]:
    """nanoGPT's ``configure_optimizers`` (karpathy/nanoGPT, model.py), transcribed:
    ``decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]``; it never asks the
    model for ``no_weight_decay()``."""
    return {name for name, p in model.named_parameters() if p.dim() >= 2}


@pytest.mark.parametrize("model", [Mixed(), WithHook()], ids=["mixed", "with-hook"])
def test_timm_and_nanogpt_presets_equal_their_transcriptions(model):
    assert _decaying(model, DecayRule.preset("timm")) == _timm(model)
    assert _decaying(model, DecayRule.preset("nanogpt")) == _nanogpt(model)


def test_the_presets_differ_where_the_libraries_do():
    model = WithHook()
    default, timm = _decaying(model, DEFAULT_RULE), _decaying(model, DecayRule.preset("timm"))
    nanogpt = _decaying(model, DecayRule.preset("nanogpt"))
    assert default - timm == {"attn.bias"}  # 2-D, but its name ends in .bias
    assert nanogpt - default == {"pos_embed", "body.emb.weight"}  # nanoGPT ignores the hook
    assert "bias" in timm  # a top-level name "bias" does not end in ".bias"


def test_unknown_preset_is_one_clear_line():
    with pytest.raises(
        ValueError, match=r"^unknown rule preset 'keras'; valid: timm, nanogpt, hf$"
    ):
        DecayRule.preset("keras")


def test_exclude_types_reaches_parameters_at_any_depth():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(3, 3)

    model = nn.Sequential(Block(), nn.Linear(3, 3))
    rows = decay_table(model, DecayRule(exclude_types=(Block,))).rows
    assert [(r["name"], r["decays"], r["why"]) for r in rows][:2] == [
        ("0.inner.weight", False, "type Block"),
        ("0.inner.bias", False, "type Block"),
    ]


def test_one_pattern_or_type_alone_is_one_not_its_characters():
    """``exclude="head.*"`` is the pattern ``head.*`` (as a tuple of one), not the characters
    h, e, a, d, ., * (of which ``*`` would stop every tensor decaying), and a module class
    alone is one type: each equals the tuple written out."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    for alone, written in [
        (DecayRule(exclude="1.*"), DecayRule(exclude=("1.*",))),
        (DecayRule(include="0.bias"), DecayRule(include=("0.bias",))),
        (DecayRule(exclude_regex=r"^1\."), DecayRule(exclude_regex=(r"^1\.",))),
        (DecayRule(exclude_types=nn.Linear), DecayRule(exclude_types=(nn.Linear,))),
        (DecayRule(exclude=["1.*"]), DecayRule(exclude=("1.*",))),
    ]:
        assert alone == written
        assert decay_table(model, alone).rows == decay_table(model, written).rows
    decays = [r["decays"] for r in decay_table(model, DecayRule(exclude="1.*")).rows]
    assert decays == [True, False, False, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude": 3}, "DecayRule exclude: 3 is not a name pattern (str)"),
        ({"include": ["a", None]}, "DecayRule include: None is not a name pattern (str)"),
        (
            {"exclude_types": int},
            "DecayRule exclude_types: <class 'int'> is not an nn.Module class",
        ),
        (
            {"exclude_types": ["Linear"]},
            "DecayRule exclude_types: 'Linear' is not an nn.Module class",
        ),
        ({"exclude_types": "Norm"}, "DecayRule exclude_types: 'Norm' is not an nn.Module class"),
        ({"exclude": b"head"}, "DecayRule exclude: b'head' is not a name pattern (str)"),
        ({"everything": "no"}, "DecayRule everything: expected True or False, got 'no'"),
        ({"embeddings": 0}, "DecayRule embeddings: expected True or False, got 0"),
        (
            {"exclude_regex": "("},
            "DecayRule exclude_regex: '(' is not a regular expression (missing ), unterminated "
            "subpattern at position 0)",
        ),
    ],
)
def test_a_rule_field_of_the_wrong_kind_is_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DecayRule(**kwargs)


# -- per-group weight decay -------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(6, 4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(self.emb(idx)))).squeeze(-1)


IDX = torch.arange(6).repeat(3)
TARGET = torch.linspace(-1, 1, 18)


def _fit(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 10, before_step=None):
    for step in range(steps):
        opt.zero_grad()
        (model(IDX) - TARGET).pow(2).mean().backward()
        if before_step is not None:
            before_step(step)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_per_group_weight_decay_equals_adamw_with_those_groups():
    """``weight_decays={"emb.*": 1e-5}``: the embedding decays at 1e-5, the other weights at
    0.1, biases not at all; the same groups handed to AdamW give the same weights, bitwise."""
    decay = Decay("decoupled", 0.1)
    model = Tiny()
    groups, _ = param_groups(model, decay, weight_decays={"emb.*": 1e-5})
    assert [(g["names"], g["decay"], g.get("wdlab_wd")) for g in groups] == [
        (["emb.weight"], True, 1e-5),
        (["proj.weight", "head.weight"], True, None),
        (["proj.bias", "head.bias"], False, None),
    ]
    opt = torch.optim.Adam(groups, lr=0.05)
    decay.attach(opt)
    ours = _fit(model, opt)

    ref = Tiny()
    named = dict(ref.named_parameters())
    adamw = torch.optim.AdamW(
        [
            {"params": [named["emb.weight"]], "weight_decay": 1e-5},
            {"params": [named["proj.weight"], named["head.weight"]], "weight_decay": 0.1},
            {"params": [named["proj.bias"], named["head.bias"]], "weight_decay": 0.0},
        ],
        lr=0.05,
    )
    assert torch.equal(ours, _fit(ref, adamw))


def test_per_group_weight_decay_for_builtin_goes_to_the_optimizer():
    groups, _ = param_groups(Tiny(), Decay("builtin", 0.1), weight_decays={"emb.*": 1e-5})
    assert [g["weight_decay"] for g in groups] == [1e-5, 0.1, 0.0]


@pytest.mark.parametrize(
    "weight_decays, fragment",
    [
        ({"encoder.*": 1e-5}, "matches no decaying parameter"),
        ({"*.bias": 0.0}, "it matches only 2 tensors that do not decay under the rule"),
        ({"*.weight": 0.1, "emb.*": 1e-5}, "that an earlier pattern did not take"),
        ({"emb.*": -1.0}, "weight decay must be a finite number >= 0"),
    ],
)
def test_per_group_weight_decay_bad_input(weight_decays, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        param_groups(Tiny(), Decay("decoupled", 0.1), weight_decays=weight_decays)
    assert "\n" not in str(info.value)


# -- weight-decay schedules -------------------------------------------------------------------


def test_cosine_and_linear_ramps():
    s = cosine(0.04, 0.4, 100)
    assert [s(0), s(50), s(100), s(1000)] == pytest.approx([0.04, 0.22, 0.4, 0.4], rel=1e-12)
    assert linear(0.0, 1.0, 4)(1) == 0.25 and linear(0.0, 1.0, 4)(9) == 1.0
    assert s.describe() == "cosine 0.04 → 0.4 over 100 steps"
    assert Decay("decoupled", 0.04, schedule="cosine:0.04:0.4:100").schedule == s


def test_cosine_equals_dinos_schedule():
    """DINO's ``cosine_scheduler`` (facebookresearch/dino, utils.py), transcribed for the
    weight decay (no warmup): ``final + 0.5·(base − final)·(1 + cos(π·i/len(iters)))``."""
    base, final, n = 0.04, 0.4, 37
    dino = [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / n)) for i in range(n)]
    ours = cosine(base, final, n)
    assert [ours(i) for i in range(n)] == pytest.approx(dino, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "schedule, base",
    [(cosine(0.04, 0.4, 8), 0.04), (lambda step: 0.05 * (step % 3), 0.1)],
    ids=["cosine", "callable-from-0"],
)
def test_scheduled_decay_equals_adamw_with_the_wd_set_each_step(schedule, base):
    """DINO's loop sets ``param_group["weight_decay"] = wd_schedule[it]`` before each AdamW
    step; a Decay with that schedule gives the same weights, bitwise. A group with its own
    weight decay follows the schedule's shape: wd_group · schedule(step) / weight_decay (the
    schedule's start, or any base where the schedule starts at 0)."""
    decay = Decay("decoupled", base, schedule=schedule)
    model = Tiny()
    groups, _ = param_groups(model, decay, weight_decays={"emb.*": 0.01})
    opt = torch.optim.Adam(groups, lr=0.05)
    decay.attach(opt)
    ours = _fit(model, opt)

    ref = Tiny()
    ref_groups, _ = param_groups(ref, Decay("builtin", base), weight_decays={"emb.*": 0.01})
    adamw = torch.optim.AdamW(ref_groups, lr=0.05)

    def set_wd(step):
        adamw.param_groups[0]["weight_decay"] = 0.01 * schedule(step) / base
        adamw.param_groups[1]["weight_decay"] = schedule(step)

    assert torch.equal(ours, _fit(ref, adamw, before_step=set_wd))
    assert opt.param_groups[0]["wdlab"]["step"] == 10


@pytest.mark.parametrize(
    "schedule, fragment",
    [
        (lambda step: -0.1 if step == 2 else 0.1, "returned -0.1 at step 2"),
        (lambda step: math.nan, "returned nan at step 0"),
        (lambda step: math.inf if step else 0.1, "returned inf at step 1"),
    ],
)
def test_a_bad_schedule_value_is_one_clear_line(schedule, fragment):
    """Refused when used (the first value already at attach), in one line."""
    decay = Decay("decoupled", 0.1, schedule=schedule)
    model = Tiny()
    with pytest.raises(ValueError, match=fragment) as info:
        opt = torch.optim.Adam(param_groups(model, decay)[0], lr=0.05)
        decay.attach(opt)
        _fit(model, opt, steps=3)
    assert "\n" not in str(info.value) and "finite number >= 0" in str(info.value)


@pytest.mark.parametrize(
    "schedule, fragment",
    [
        ("cosine:0.04:0.4", "expected cosine|linear:START:END:STEPS"),
        ("exp:0.04:0.4:10", "expected cosine|linear:START:END:STEPS"),
        ("cosine:0.04:-1:10", "schedule end must be a finite number >= 0"),
        ("linear:0:1:0", "schedule steps must be a positive integer"),
        (0.1, "schedule must be a callable step -> wd"),
    ],
)
def test_bad_schedule_specs(schedule, fragment):
    with pytest.raises(ValueError, match=fragment):
        Decay("decoupled", 0.1, schedule=schedule)


def test_a_weight_decay_beside_a_schedule_starting_elsewhere_is_refused():
    """A new-user trial: ``Decay("decoupled", 0.2, schedule="cosine:0.1:1:4")`` decayed at
    0.1, 0.2 ignored, and a group's own 0.01 started at 0.005 (0.01 · 0.1 / 0.2). Refused in
    one line where the ramp says its start; its start (also as float32 gives it), a ramp from
    0, no weight_decay (the schedule alone), or a callable (its base may be any: a warm-up
    ramp from 0.001 against a base of 0.1) are taken."""
    with pytest.raises(
        ValueError, match=r"weight_decay 0\.2 with a schedule that starts at 0\.1"
    ) as info:
        Decay("decoupled", 0.2, schedule="cosine:0.1:1:4")
    assert "\n" not in str(info.value) and "give weight_decay=0.1, its start" in str(info.value)
    f32 = float(torch.tensor(0.04))  # 0.03999999910593033
    for ok in (
        Decay("decoupled", 0.1, schedule="cosine:0.1:1:4"),
        Decay("decoupled", 0.04, schedule=cosine(f32, 0.4, 4)),
        Decay("decoupled", 0.2, schedule="linear:0:1:4"),
        Decay("decoupled", schedule="cosine:0.1:1:4"),
        Decay("decoupled", 0.1, schedule=lambda s: 0.1 * min(1, (s + 1) / 100)),
    ):
        ok.attach(torch.optim.SGD(Tiny().parameters(), lr=0.1))


def test_schedule_with_group_weight_decays_needs_a_base():
    decay = Decay("decoupled", schedule=cosine(0.04, 0.4, 10))
    groups, _ = param_groups(Tiny(), decay, weight_decays={"emb.*": 0.01})
    with pytest.raises(ValueError, match="give the Decay its base weight_decay > 0"):
        decay.attach(torch.optim.Adam(groups, lr=0.05))


# -- what inspect and print show --------------------------------------------------------------


def test_print_decay_table_shows_the_table():
    table = decay_table(Mixed(), DecayRule.preset("hf"))
    text = str(table)
    assert text == table.to_text() and "DecayTable(" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["parameter", "shape", "count", "decays", "why"]
    assert lines[-1].startswith("decayed: 7 tensors") and "Hugging Face Trainer" in lines[-1]
    assert any(line.split()[:4] == ["bn.weight", "4", "4", "yes"] for line in lines)
    assert isinstance(table, DecayTable) and all(len(line) <= 100 for line in lines[:-1])


def test_print_dataset_summarises():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randint(0, 3, (30,), generator=g)
    data = Dataset("toy", "multiclass", x[:20], y[:20], x[20:], y[20:], x[25:], y[25:], 3)
    text = repr(data)
    assert text == str(data) and "tensor(" not in text and len(text) < 120
    assert text.startswith("Dataset('toy': multiclass, 3 classes, inputs 5")
    assert text.endswith("rows train 20, val 5, test 10)")


def test_inspect_rule_presets(capsys):
    for rule, kept in (("hf", 4), ("nanogpt", 4), ("timm", 4), ("everything", 0)):
        args = ["inspect", "mlp", "--in-dim", "6", "--hidden", "4", "--layernorm"]
        assert main([*args, "--rule", rule, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["kept_tensors"] == kept, rule
    assert main(["inspect", "mlp", "--in-dim", "6", "--hidden", "4", "--rule", "hf"]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face Trainer" in out and "exclude regex" in out


def test_inspect_shows_schedule_group_wds_and_adamc_column(capsys):
    """inspect shows the weight decays run and sweep train with the same flags: each follows
    the schedule's shape from the run's --wd (it showed the schedule's own values, 0.04, and
    0.004 on the head; found by a new-user trial), and nothing decays at --wd 0."""
    from wdlab.decay.schedules import parse
    from wdlab.trainer.decays import WeightDecays

    # --layernorm: AdamC's normalized layers are those that feed a norm (none without one)
    args = ["inspect", "mlp", "--in-dim", "6", "--hidden", "4,4", "--layernorm"]
    args += ["--mode", "corrected", "--lr", "0.1", "--weight-decay", "0.1"]
    args += ["--wd-schedule", "cosine:0.04:0.4:100"]
    assert main([*args, "--group-wd", "head.*=0.01"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1].split()
    assert header[-2:] == ["wd", "AdamC-normalized"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:12]}
    trained = WeightDecays({}, parse("cosine:0.04:0.4:100"))  # what the trainer applies
    assert rows["layers.0.weight"][-2:] == [f"{trained.at_start(0.1, None):g}", "yes"]
    assert rows["head.weight"][-2:] == [f"{trained.at_start(0.1, 0.01):g}", "no"]  # the head
    assert rows["head.bias"][-2:] == ["-", "-"]
    assert "schedule cosine 0.1 → 1 over 100 steps" in out
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_step = trained.wd(0.1, None)
    for step, wd in doc["wd_at_step"].items():  # the same maths, rounded in another order
        assert wd == pytest.approx(by_step(int(step)), rel=1e-12)
    assert [r["normalized"] for r in doc["parameters"] if r["decays"]] == [True, True, False]
    zero = [*args]
    zero[zero.index("--weight-decay") + 1] = "0"  # the reference runs
    assert main([*zero, "--group-wd", "head.*=0.01", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["wd_at_step"] is None
    assert {r["wd"] for r in doc["parameters"] if r["decays"]} == {0.0}


def _exit_and_stderr(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(["inspect", "linear", "--in-dim", "4", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--rule", "keras"], "invalid choice: 'keras'"),
        (["--rule", "hf", "--decay-all"], "--rule hf is a whole rule; drop --decay-all"),
        (["--wd-schedule", "cosine:0.1:-1:10"], "schedule end must be a finite number >= 0"),
        (["--wd-schedule", "cosine:1"], "expected cosine|linear:START:END:STEPS"),
        (["--wd-schedule", "cosine:0:1:10"], "START must be > 0"),  # as run refuses it
        (["--group-wd", "nothing.*=1e-5"], "matches no decaying parameter"),
        (["--group-wd", "head.*"], "expected PATTERN=WD"),
        (["--group-wd", "head.*=-1"], "must be >= 0"),
    ],
)
def test_inspect_bad_input_is_one_line_and_exit_2(args, fragment, capsys):
    code, err = _exit_and_stderr(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_inspect_bad_input_from_the_shell_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "wdlab.cli", "inspect", "linear", "--wd-schedule", "cosine:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_tied_tensor_is_one_row_that_names_its_other_names():
    """A new-user trial: a GPT's ``lm_head.weight = wte.weight`` was listed as ``wte.weight``
    only, so under ``--no-embeddings`` the output head stopped decaying unseen. One tensor is
    one row (one decision), and its row names the others."""

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.lm_head = nn.Embedding(50, 16), nn.Linear(16, 50, bias=False)
            self.lm_head.weight = self.wte.weight

    for rule, decays in ((DecayRule(), True), (DecayRule(embeddings=False), False)):
        (row,) = decay_table(GPT(), rule).rows
        assert row["name"] == "wte.weight" and row["decays"] is decays
        assert row["why"].endswith(" (tied: also lm_head.weight)")
    (row,) = [r for r in decay_table(nn.Linear(3, 2)).rows if r["name"] == "weight"]
    assert "tied" not in row["why"]


def test_param_groups_quiet_for_presets():
    """Groups built by param_groups under any preset attach without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("timm", "nanogpt", "hf"):
            decay = Decay("decoupled", 0.1)
            groups, _ = param_groups(Mixed(), decay, DecayRule.preset(name))
            decay.attach(torch.optim.Adam(groups, lr=1e-3))


class _Listed(nn.Module):
    """A model whose ``no_weight_decay()`` names a tensor it has and one it has not, with a
    0-D parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def no_weight_decay(self):
        return {"fc.weight", "fc.wieght"}


def test_what_a_rule_names_that_is_not_there_is_said():
    """Found by a new-user trial: a misspelled exclude or include pattern, or a name
    ``no_weight_decay()`` gives that no parameter has, changed nothing without a word (a
    group-wd pattern that matches nothing is refused); a preset's patterns are its rule."""
    model = _Listed()
    rule = DecayRule(exclude=("fc.bais",), include=("sc*", "head.*"))
    said = rule.unmatched(model)
    assert [line.split(" (check")[0] for line in said] == [
        "the rule's include pattern 'head.*' matches no parameter",
        "the rule's exclude pattern 'fc.bais' matches no parameter",
        "the model's no_weight_decay() names 'fc.wieght': no parameter is",
    ]
    assert DecayRule.preset("timm").unmatched(nn.Linear(2, 2, bias=False)) == []
    assert DecayRule(use_model_hook=False).unmatched(model) == []
    why = {r["name"]: r["why"] for r in decay_table(model, DecayRule(use_model_hook=False)).rows}
    assert why["scale"] == "ndim 0 (a scalar)" and why["fc.bias"] == "ndim < 2 (bias)"


def test_a_sweep_says_what_its_rule_and_modes_leave_undone(tmp_path):
    """A sweep warns where its rule names what is not there, where no tensor decays under it
    (every weight decay trains as wd = 0), and where its modes never decay (its weight decays
    were dropped without a word: only wd = 0 trained)."""
    from wdlab.pipelines import run_sweep

    base = {
        "data": {"source": "wine"},
        "model": {"kind": "mlp", "hidden": [4]},
        "train": {"epochs": 1},
    }
    cfg = base | {"decay": {"weight_decay": [0.1], "exclude": ["*"], "include": ["nomatch*"]}}
    with pytest.warns(UserWarning) as caught:
        run_sweep(cfg, tmp_path / "a")
    said = [str(w.message) for w in caught]
    assert any(s.startswith("the rule's include pattern 'nomatch*' matches no") for s in said)
    assert any(s.startswith("no tensor of the model decays under the rule") for s in said)
    quiet = base | {"decay": {"weight_decay": [0], "exclude": ["*"]}}  # no decay asked for
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_sweep(quiet, tmp_path / "q")
    assert not [w for w in caught if "no tensor of the model decays" in str(w.message)]
    cfg = base | {"decay": {"modes": ["none"], "weight_decay": [0.1, 1]}}
    with pytest.warns(UserWarning, match=r"mode none trains without weight decay: weight decays "
                      r"0.1, 1 are not swept, only wd = 0 trains"):  # fmt: skip
        assert len(run_sweep(cfg, tmp_path / "b").runs) == 1


def test_a_decay_table_reads_in_a_notebook():
    """Its repr is one line (the summary), its HTML the table, escaped."""
    table = decay_table(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    assert repr(table) == f"DecayTable({table.summary()})"
    assert table._repr_html_() == f"<pre>{html_escape(table.to_text())}</pre>"
    assert "&gt;=" in table._repr_html_()


def test_inspect_names_a_model_as_run_and_sweep_do(capsys):
    """A new-user trial: ``wdlab inspect models.py`` said "unknown model 'models.py'; valid:
    …, custom" (and ``custom`` alone fails again); run and sweep say to name the function."""
    assert main(["inspect", "models.py"]) == 2
    assert "'models.py' names a file; name the function that builds the model too: " \
        "models.py:FUNCTION" in capsys.readouterr().err  # fmt: skip
    assert main(["inspect", "mlpx"]) == 2
    assert "'mlpx' is not a model; valid: seed-mlp, mlp, linear, cnn, or FILE.py:FUNCTION" in (
        capsys.readouterr().err
    )


def test_a_rule_may_be_named_in_python_as_on_the_command_line():
    """A new-user trial: ``param_groups(model, decay, rule="timm")`` raised AttributeError
    ('str' object has no attribute 'reasons'); ``--rule timm`` and ``wdlab.sweep(rule=…)``
    take the name."""
    model = Mixed()
    by_name = decay_table(model, "timm").to_dict()
    assert by_name == decay_table(model, DecayRule.preset("timm")).to_dict()
    groups, _ = param_groups(model, Decay("decoupled", 0.1), rule="hf")
    assert (
        sum(len(g["params"]) for g in groups if g["decay"]) == decay_table(model, "hf").decayed[0]
    )
    with pytest.raises(ValueError, match=r"^rule: 'keras' is not a decay rule; valid: default, "):
        param_groups(model, Decay("decoupled", 0.1), rule="keras")


def test_a_compiled_models_tensors_match_the_patterns_of_the_eager_one():
    """A new-user trial: ``torch.compile`` names the tensors ``_orig_mod.…``: an exclude
    pattern written for the model stopped matching (its tensors decayed, silently), and a
    group-wd pattern was refused."""
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    compiled = torch.compile(model)  # compiled on its first call only: never called here
    rule = DecayRule(exclude=("2.*",))
    eager = [r["decays"] for r in decay_table(model, rule).rows]
    assert [r["decays"] for r in decay_table(compiled, rule).rows] == eager == [
        True, False, False, False, False, False,
    ]  # fmt: skip
    assert rule.unmatched(compiled) == []
    groups, _ = param_groups(compiled, Decay("decoupled", 0.1), weight_decays={"0.*": 0.01})
    assert groups[0]["names"] == ["_orig_mod.0.weight"]


def test_a_pattern_that_names_a_tied_weight_says_which_name_rules_it():
    """A checker: ``exclude=("lm_head.*",)`` on a head tied to the embedding was "matches no
    parameter", though ``lm_head.weight`` is there: the tensor is listed as ``wte.weight``."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.lm_head = nn.Linear(4, 10, bias=False)
            self.lm_head.weight = self.wte.weight

    (said,) = DecayRule(exclude=("lm_head.*",)).unmatched(Tied())
    head = "the rule's exclude pattern 'lm_head.*' matches only 'lm_head.weight', a tied name"
    assert said.startswith(f"{head} of 'wte.weight': the tensor is ruled by that name")


class _TiedHeadFirst(nn.Module):
    """A language model whose output Linear is declared before the embedding it ties to, and a
    learned 1-D gain."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 50, bias=False)
        self.tok = nn.Embedding(50, 16)
        self.tok.weight = self.head.weight
        self.gain = nn.Parameter(torch.ones(16))
        self.fc = nn.Linear(16, 16)


def test_embeddings_false_keeps_out_a_table_tied_under_a_linears_name():
    """A new-user trial: with the head declared first, the tied table's name is
    ``head.weight`` and its module a Linear, so ``DecayRule(embeddings=False)`` decayed the
    embedding table (declared the other way round, it was kept out)."""
    table = decay_table(_TiedHeadFirst(), DecayRule(embeddings=False))
    why = {r["name"]: r["why"] for r in table.rows}
    assert why["head.weight"] == "embedding (tied: also tok.weight)"
    assert why["fc.weight"] == "ndim >= 2"
    groups, _ = param_groups(_TiedHeadFirst(), Decay("decoupled", 0.1), "default")
    decaying = next(g for g in groups if g["decay"])
    assert decaying["names"] == ["head.weight", "fc.weight"]  # embeddings=True: both decay


def test_a_1d_tensor_that_is_no_bias_is_not_called_one():
    """A learned ``gain`` vector was listed "ndim < 2 (bias)"."""
    why = {r["name"]: r["why"] for r in decay_table(_TiedHeadFirst()).rows}
    assert why["gain"] == "ndim 1"


def test_param_groups_warns_a_pattern_that_matches_nothing():
    """A new-user trial: ``wdlab inspect --exclude 'enc.*.nrm*'`` said the pattern matched no
    parameter; ``param_groups`` in Python, the same rule, was silent (a typo decays as if it
    were not there), and so on a tied name, which the tensor's first name rules."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        param_groups(_TiedHeadFirst(), Decay("decoupled", 0.1), DecayRule(exclude=("tok.*",)))
    (line,) = [str(w.message) for w in seen]
    assert "exclude pattern 'tok.*' matches only 'tok.weight', a tied name of 'head.weight'" in line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        param_groups(_TiedHeadFirst(), Decay("decoupled", 0.1), DecayRule(exclude=("fc.*",)))


def test_inspect_warns_lr_wd_at_the_weight_decay_schedules_peak(capsys):
    """inspect said nothing of ``--lr 0.5 --wd 0.1 --wd-schedule linear:0.1:5:3`` (lr·wd
    reaches 2.5), where run, sweep, attach and the audit read the schedule's peak."""
    args = ["inspect", "mlp", "--in-dim", "6", "--mode", "decoupled", "--lr", "0.5"]
    assert main([*args, "--weight-decay", "0.1", "--wd-schedule", "linear:0.1:5:3"]) == 0
    assert "lr·wd = 2.5 ≥ 1 at the weight-decay schedule's peak wd 5" in capsys.readouterr().err
