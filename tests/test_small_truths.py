"""The small truths of issue 20 item 8 and issue 25 item 9: one M = ⌈N/B⌉ for τ_epoch in runs,
``transfer`` and the timescale check; ``transfer`` computes in logs and refuses a result beyond
float range; frozen tensors never decay, under every preset; ``corrected``'s default
normalized set is the weights that feed a normalization layer (BERT-, GPT-2- and Llama-shaped
models, and a network without normalization layers)."""

import json
import re

import pytest
import torch
from torch import nn

from wdlab.cli import main
from wdlab.data import Dataset
from wdlab.decay import DEFAULT_RULE, Decay, DecayRule, decay_table, param_groups
from wdlab.decay.norms import norm_fed_weights
from wdlab.decay.rules import FROZEN
from wdlab.models import ModelSpec
from wdlab.pipelines.timescale import TimescaleSettings
from wdlab.records import RunConfig
from wdlab.timescale import Setting, steps_per_epoch, transfer
from wdlab.trainer import train
from wdlab.trainer.plan import Plan

# -- M: one definition ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "b", "m"), [(30, 8, 4), (64, 32, 2), (50_000, 256, 196), (7, 9, 1)])
def test_one_m_for_runs_transfer_and_the_timescale_check(n, b, m):
    data = Dataset("t", "binary", torch.randn(n, 3), torch.rand(n).round(), torch.randn(5, 3),
                   torch.rand(5).round())  # fmt: skip
    plan = Plan(ModelSpec("linear"), data, [RunConfig("decoupled", 0.1, 0.01, "adamw")],
                epochs=1, batch_size=b)  # fmt: skip
    assert steps_per_epoch(n, b) == m == plan.steps_per_epoch
    assert Setting(0.1, 0.01, n, b).iters_per_epoch == m
    assert TimescaleSettings(batch_size=b).iters_per_epoch(n) == m


def test_a_runs_tau_epoch_is_the_one_transfer_keeps():
    """30 training rows in batches of 8: 4 steps per epoch (the last batch has 6 rows). The
    paper's N/B = 3.75 would make the two parts of wdlab disagree by 7%."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(36, 4, generator=g), torch.randint(0, 3, (36,), generator=g)
    data = Dataset("t", "multiclass", X[:30], y[:30], X[30:], y[30:], n_classes=3)
    spec = ModelSpec("mlp", hidden=(5,), activation="tanh")
    lr, wd = 0.01, 0.1
    (run,) = train(spec, data, [RunConfig("decoupled", wd, lr, "adamw")], epochs=1, batch_size=8)
    assert run.final["tau_epoch"] == pytest.approx(1 / (lr * wd * 4), rel=1e-12)
    assert Setting(wd, lr, 30, 8).tau_epoch == pytest.approx(run.final["tau_epoch"], rel=1e-12)
    t = transfer(wd, lr, 30, 8, to_n=60)  # M' = 8: half the weight decay keeps τ_epoch
    assert t.weight_decay == pytest.approx(wd / 2, rel=1e-12)
    assert t.tau_epoch == pytest.approx(run.final["tau_epoch"], rel=1e-12)


def test_non_integer_sizes_round_to_the_batches_taken():
    assert steps_per_epoch(3, 0.1) == 30  # 3/0.1 is 30.000000000000004 in floats
    assert steps_per_epoch(0.3, 0.1) == 3
    assert steps_per_epoch(1e-200, 1e-300) == 1e100


def test_whole_counts_take_their_last_short_batch_however_large():
    """Token counts: N a few past a multiple of B still has its short last batch (M = ⌈N/B⌉
    exactly, where a relative tolerance on N/B would round it away)."""
    assert steps_per_epoch(10**10 + 5, 10**6) == 10_001
    assert steps_per_epoch(2 * 10**9 + 1, 10**6) == 2_001
    assert steps_per_epoch(2 * 10**9, 10**6) == 2_000
    assert steps_per_epoch(10**16 + 1, 10) == 10**15 + 1  # a checker: past 1e15 too
    assert steps_per_epoch(2**53 + 1, 2) == 2**52 + 1  # (it gave 4503599627370490.5)


# -- transfer in logs -------------------------------------------------------------------------


def test_transfer_computes_in_logs(capsys):
    t = transfer(1, 1, 1, 1, to_lr=1e-200, to_n=1e-200, to_batch_size=1e-300)
    assert t.weight_decay == pytest.approx(1e100, rel=1e-12)  # not inf
    assert t.tau_iter == pytest.approx(1e100, rel=1e-12) and t.tau_epoch == pytest.approx(1.0)
    args = ["transfer", "--wd", "1", "--lr", "1", "--n", "1", "--batch-size", "1"]
    assert main([*args, "--to-lr", "1e-200", "--to-n", "1e-200", "--to-batch-size", "1e-300"]) == 0
    assert "weight decay: 1 → 1e+100" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(weight_decay=1e-300, lr=1e-10), "the tuned setting's τ_iter would be about 1e+310"),
        (dict(weight_decay=1e-300, to_lr=1e20), "the new setting's weight decay would be about"),
        (dict(weight_decay=1e300, to_lr=1e-20), "the new setting's weight decay would be about"),
    ],
)
def test_a_result_beyond_float_range_is_refused(kw, message, capsys):
    args = dict(weight_decay=0.1, lr=1e-3, n=1000, batch_size=10) | kw
    with pytest.raises(ValueError, match=re.escape(message)):
        transfer(**args)


def test_the_cli_refuses_a_result_beyond_float_range_in_one_line(capsys):
    args = ["transfer", "--wd", "1e38", "--lr", "1e38", "--n", "1", "--batch-size", "1"]
    assert main([*args, "--to-lr", "1e-300"]) == 2  # λ' = 1e38·1e38/1e-300 = 1e376
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "beyond the range of a float" in err and "inf" not in err


# -- frozen tensors ---------------------------------------------------------------------------


class PartlyFrozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)
        self.body.weight.requires_grad_(False)  # a frozen backbone layer, 2-D
        self.ln.weight.requires_grad_(False)


def _timm(model: nn.Module) -> set[str]:
    """timm's ``param_groups_weight_decay`` (timm/optim/_param_groups.py), transcribed: frozen
    parameters are skipped (``if not param.requires_grad: continue``), then no decay for
    ``ndim <= 1`` or names ending in ``.bias``."""
    return {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not (p.ndim <= 1 or n.endswith(".bias"))
    }


def _nanogpt(model: nn.Module) -> set[str]:
    """nanoGPT's ``configure_optimizers``: ``if p.requires_grad``, then ``dim() >= 2``."""
    return {n for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2}


@pytest.mark.parametrize("rule", ["default", "everything", "timm", "nanogpt", "hf"])
def test_a_frozen_tensor_is_listed_frozen_not_decayed_under_every_rule(rule):
    r = {
        "default": DEFAULT_RULE,
        "everything": DecayRule(everything=True),
        **{k: DecayRule.preset(k) for k in ("timm", "nanogpt", "hf")},
    }[rule]
    model = PartlyFrozen()
    rows = {row["name"]: row for row in decay_table(model, r).rows}
    for name in ("body.weight", "ln.weight"):
        assert rows[name]["decays"] is False and rows[name]["why"] == FROZEN
    assert rows["head.weight"]["decays"] is True
    table = decay_table(model, r)
    assert "(2 frozen)" in table.summary() and FROZEN in table.to_text()
    # an optimizer's groups place a frozen tensor as the rule says it decays once it trains
    # (a new-user trial: gradual unfreezing left body.weight undecayed for good)
    groups, shown = param_groups(model, Decay("decoupled", 0.1), r)
    group_of = {n: g["decay"] for g in groups for n in g["names"]}
    unfrozen = {row["name"]: row for row in decay_table(model, r, unfreezing=True).rows}
    for name in ("body.weight", "ln.weight"):
        assert group_of[name] is unfrozen[name]["decays"]
        assert ("frozen now" in unfrozen[name]["why"]) is unfrozen[name]["decays"]
    assert group_of["body.weight"] is True and group_of["ln.weight"] is (rule == "everything")
    assert {row["name"]: row["decays"] for row in shown.rows} == group_of


def test_the_presets_still_equal_their_libraries_with_frozen_tensors():
    model = PartlyFrozen()
    decaying = lambda rule: {r["name"] for r in decay_table(model, rule).rows if r["decays"]}  # noqa: E731
    assert decaying(DecayRule.preset("timm")) == _timm(model)
    assert decaying(DecayRule.preset("nanogpt")) == _nanogpt(model)
    trainer = pytest.importorskip("transformers.trainer")
    names = set(trainer.Trainer.get_decay_parameter_names(None, model))
    # the Trainer's create_optimizer: `n in decay_parameters and p.requires_grad`
    hf = {n for n, p in model.named_parameters() if n in names and p.requires_grad}
    assert decaying(DecayRule.preset("hf")) == hf


# -- corrected: weights that feed a normalization layer ---------------------------------------


def _normalized(model: nn.Module) -> set[str]:
    return {r["name"] for r in decay_table(model).rows if r["normalized"]}


def test_a_network_without_normalization_has_no_normalized_layers(capsys):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert _normalized(model) == set()
    note = decay_table(model).normalized_note
    assert note.startswith("AdamC-normalized: none, the model has no normalization layer")
    args = ["inspect", "mlp", "--in-dim", "4", "--hidden", "8,8", "--mode", "corrected"]
    assert main([*args, "--lr", "0.1", "--weight-decay", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "AdamC-normalized: none, the model has no normalization layer" in out
    assert main([*args, "--lr", "0.1", "--weight-decay", "0.1", "--json"]) == 0
    assert not any(r["normalized"] for r in json.loads(capsys.readouterr().out)["parameters"])
    _, table = param_groups(model, Decay("corrected", 0.1))  # the table a Python user gets
    assert table.normalized_note == note and note in table.to_text(normalized=True)


class Conv1D(nn.Module):
    """transformers' ``Conv1D`` (pytorch_utils.py): a Linear with its weight stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Gpt2Block(nn.Module):
    """GPT-2's block as transformers declares it: ln_1, attn (c_attn, c_proj), ln_2, mlp."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = Conv1D(3 * d, d), Conv1D(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)


class Gpt2(nn.Module):
    def __init__(self, d: int = 8, vocab: int = 20, layers: int = 2) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, d)
        self.transformer.wpe = nn.Embedding(16, d)
        self.transformer.h = nn.ModuleList(Gpt2Block(d) for _ in range(layers))
        self.transformer.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)  # untied here: the output layer


class RMSNorm(nn.Module):
    """Named as Llama's ``LlamaRMSNorm`` is: not a torch norm class."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class LlamaRMSNorm(RMSNorm):
    pass


class Llama(nn.Module):
    """LlamaForCausalLM's layout: q/k/v/o and gate/up/down projections, RMSNorms, lm_head."""

    def __init__(self, d: int = 8, vocab: int = 20, layers: int = 2) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, d)
        self.model.layers = nn.ModuleList()
        for _ in range(layers):
            layer = nn.Module()
            layer.self_attn = nn.Module()
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(layer.self_attn, p, nn.Linear(d, d, bias=False))
            layer.mlp = nn.Module()
            for p, (a, b) in {
                "gate_proj": (d, 16),
                "up_proj": (d, 16),
                "down_proj": (16, d),
            }.items():
                setattr(layer.mlp, p, nn.Linear(a, b, bias=False))
            layer.input_layernorm, layer.post_attention_layernorm = LlamaRMSNorm(d), LlamaRMSNorm(d)
            self.model.layers.append(layer)
        self.model.norm = LlamaRMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


class BertMlm(nn.Module):
    """BertForMaskedLM's layout: an encoder whose sub-layers end in LayerNorms, then
    ``cls.predictions.transform`` (dense → LayerNorm) and the decoder (the output layer)."""

    def __init__(self, d: int = 8, vocab: int = 20) -> None:
        super().__init__()
        self.bert = nn.Module()
        self.bert.embeddings = nn.Module()
        self.bert.embeddings.word_embeddings = nn.Embedding(vocab, d)
        self.bert.embeddings.LayerNorm = nn.LayerNorm(d)
        att = nn.Module()
        att.query, att.key, att.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        att.dense, att.LayerNorm = nn.Linear(d, d), nn.LayerNorm(d)
        self.bert.attention = att
        self.cls = nn.Module()
        self.cls.transform = nn.Module()
        self.cls.transform.dense = nn.Linear(d, d)
        self.cls.transform.LayerNorm = nn.LayerNorm(d)
        self.cls.decoder = nn.Linear(d, vocab)


def test_gpt2_shape_conv1d_projections_are_normalized():
    every = {f"transformer.h.{i}.{m}.weight" for i in range(2)
             for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}  # fmt: skip
    assert _normalized(Gpt2()) == every  # not lm_head, not the embeddings


def test_llama_shape_every_projection_but_the_head():
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    names = _normalized(Llama())
    assert len(names) == 14 and "lm_head.weight" not in names
    assert {n.split(".")[-2] for n in names} == projections


def test_bert_shape_the_transform_feeds_a_layernorm_the_decoder_does_not():
    names = _normalized(BertMlm())
    assert "cls.transform.dense.weight" in names and "cls.decoder.weight" not in names
    assert {"bert.attention.query.weight", "bert.attention.dense.weight"} <= names


def test_a_resnet_shape_convolutions_yes_the_classifier_no():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    )  # fmt: skip
    assert _normalized(model) == {"0.weight", "3.weight"}
    # a norm at the input only: nothing after it feeds a norm
    assert norm_fed_weights(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 2))) == []


def _transformers():
    return pytest.importorskip("transformers")


def test_the_real_transformers_models_built_from_configs():
    """GPT-2, BERT and Llama from small configs (no download, random weights)."""
    tf = _transformers()
    ids = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    gpt2 = tf.GPT2LMHeadModel(
        tf.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16, **ids)
    )
    bert_kw = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, vocab_size=40)
    bert = tf.BertForMaskedLM(
        tf.BertConfig(intermediate_size=32, max_position_embeddings=16, **bert_kw, **ids)
    )
    llama = tf.LlamaForCausalLM(
        tf.LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=32, vocab_size=40, **ids)
    )  # fmt: skip
    g = _normalized(gpt2)
    assert len(g) == 8 and all(n.split(".")[-2] in ("c_attn", "c_proj", "c_fc") for n in g)
    b = _normalized(bert)
    assert "cls.predictions.transform.dense.weight" in b and len(b) == 13
    assert not any("embeddings" in n for n in b)
    ll = _normalized(llama)
    assert len(ll) == 14 and "lm_head.weight" not in ll
    classify = tf.BertForSequenceClassification(
        tf.BertConfig(intermediate_size=32, max_position_embeddings=16, **bert_kw, **ids)
    )
    c = _normalized(classify)  # the pooler and classifier come after the last LayerNorm
    assert "bert.pooler.dense.weight" not in c and "classifier.weight" not in c and len(c) == 12


def test_given_patterns_still_decide():
    rule = DecayRule(normalized=("lm_head.*",))
    rows = {r["name"]: r for r in decay_table(Llama(), rule).rows}
    assert rows["lm_head.weight"]["normalized"] and not rows["model.norm.weight"]["normalized"]
    assert not rows["model.layers.0.self_attn.q_proj.weight"]["normalized"]


def test_pretend_norm_classes_are_not_norms():
    class FrozenBatchNorm2d(nn.Module):  # torchvision's: fixed statistics, no normalization
        pass

    model = nn.Sequential(nn.Linear(4, 4), FrozenBatchNorm2d(), nn.Linear(4, 2))
    assert norm_fed_weights(model) == []
