"""Parameters whose gradient is zero in exact arithmetic (rounding noise in float32): found
numerically by the sweep, structurally by ``wdlab audit``; positives and negatives of both."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdlab
from wdlab.auditing import audit
from wdlab.report.text import experiment_table
from wdlab.zerograd import (
    biases_before_norms,
    noise_gradients,
    probe_batches,
    redundant_biases,
)


def conv(norm, bias=True):
    """Conv1d(1→4) then ``norm`` then ReLU and a head: the issue's shape."""
    return nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1, bias=bias),
        norm,
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )


def linear(norm, bias=True):
    return nn.Sequential(nn.Linear(10, 8, bias=bias), norm, nn.ReLU(), nn.Linear(8, 3))


class Twice(nn.Module):
    """One Linear called twice: into a BatchNorm each time, or (``skip``) once past it, where
    its bias trains (a new-user trial: the audit read the first call only and said bias=False,
    which would change this model)."""

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip, self.lin = skip, nn.Linear(10, 8)
        self.bn, self.bn2, self.head = nn.BatchNorm1d(8), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        other = self.lin(x) if self.skip else self.bn2(self.lin(x))
        return self.head(self.bn(self.lin(x)) + other)


# (model, input shape, the names whose every element is noise) — every norm the audit names
CASES = {
    "linear called twice, once past the norm": (lambda: Twice(skip=True), (10,), []),
    "linear called twice, into a norm each time": (lambda: Twice(skip=False), (10,), ["lin.bias"]),
    "conv+bias+BatchNorm1d": (lambda: conv(nn.BatchNorm1d(4)), (1, 16), ["0.bias"]),
    "conv+BatchNorm1d, bias=False": (lambda: conv(nn.BatchNorm1d(4), False), (1, 16), []),
    "linear+bias+BatchNorm1d": (lambda: linear(nn.BatchNorm1d(8)), (10,), ["0.bias"]),
    "conv+bias+GroupNorm(4 groups of 1)": (lambda: conv(nn.GroupNorm(4, 4)), (1, 16), ["0.bias"]),
    "conv+bias+GroupNorm(2 groups of 2)": (lambda: conv(nn.GroupNorm(2, 4)), (1, 16), []),
    "conv+bias+LayerNorm over length": (lambda: conv(nn.LayerNorm(16)), (1, 16), ["0.bias"]),
    "linear+bias+LayerNorm over features": (lambda: linear(nn.LayerNorm(8)), (10,), []),
    "conv+bias+ReLU+BatchNorm1d": (
        lambda: nn.Sequential(
            nn.Conv1d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm1d(4),
            nn.Flatten(),
            nn.Linear(64, 3),
        ),
        (1, 16),
        [],
    ),
}


def _batches(shape, n=128):
    g = torch.Generator().manual_seed(0)
    return probe_batches(
        torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)
    )


@pytest.mark.parametrize("case", CASES)
def test_numerical_detection(case):
    """A bias a norm removes again is noise in every element; a bias before a norm that keeps
    part of it (LayerNorm over the features, GroupNorm of 2 channels), after a ReLU, or absent,
    is not flagged."""
    make, shape, expected = CASES[case]
    torch.manual_seed(0)
    model = make()
    found = noise_gradients(model, _batches(shape), F.cross_entropy)
    assert [(z.name, z.count) for z in found] == [
        (n, model.get_parameter(n).numel()) for n in expected
    ]


@pytest.mark.parametrize("case", CASES)
def test_structural_detection_agrees(case):
    make, _, expected = CASES[case]
    assert [z.name for z in biases_before_norms(make())] == expected


class Attention(nn.Module):
    def __init__(self, e=16):
        super().__init__()
        self.emb = nn.Embedding(10, e)
        self.attn = nn.MultiheadAttention(e, 2, batch_first=True)
        self.head = nn.Linear(e, 3)

    def forward(self, x):
        h = self.emb(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_attention_key_bias_is_noise_and_nothing_else_is():
    """The key third of ``in_proj_bias``: softmax ignores ``q·b_k``. Numerically, the flagged
    elements lie in it (a float32 gradient that comes out exactly 0 on every batch is no
    evidence either way, so not always all 16); the query and value parts are real."""
    torch.manual_seed(0)
    model = Attention()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 10, (128, 6), generator=g), torch.randint(0, 3, (128,), generator=g)
    found = noise_gradients(model, probe_batches(x, y), F.cross_entropy)
    assert [z.name for z in found] == ["attn.in_proj_bias"]
    assert found[0].count >= 12 and set(found[0].where) <= set(range(16, 32))
    (z,) = redundant_biases(model)
    assert (z.name, z.count, z.numel) == ("attn.in_proj_bias", 16, 48)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, the numerical probe still sees."""

    def __init__(self):
        super().__init__()
        self.net = conv(nn.BatchNorm1d(4))

    def forward(self, x):
        return self.net(x) if x.sum() > -1e9 else -self.net(x)


def test_numerical_detection_sees_what_the_graph_cannot():
    model = Branchy()
    assert biases_before_norms(model) == []
    found = noise_gradients(model, _batches((1, 16)), F.cross_entropy)
    assert [(z.name, z.count) for z in found] == [("net.0.bias", 4)]


def _signals():
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(120, 1, 16, generator=g), torch.randint(0, 3, (120,), generator=g)
    return {"train": (X[:80], y[:80]), "val": (X[80:100], y[80:100]), "test": (X[100:], y[100:])}


@pytest.mark.parametrize("bias", [True, False])
def test_the_sweep_names_them_and_says_why(bias):
    """The engine text (and with it the report) names the noise parameters and says why such
    runs do not reproduce bit for bit; a model without them gets no such text."""
    res = wdlab.sweep(
        lambda seed: conv(nn.BatchNorm1d(4), bias),
        _signals(),
        optimizer="adamw",
        lr=1e-2,
        weight_decay=[0.0, 0.1],
        epochs=1,
        batch_size=32,
    )
    note = res.engine_note
    assert ("0.bias (4 of 4)" in note) is bias
    assert ("do not reproduce bit for bit across batch sizes or machines" in note) is bias
    assert ("Adam-type optimizers turn it into lr-sized steps" in note) is bias
    assert ("0.bias (4 of 4)" in experiment_table(res)) is bias  # the terminal report


@pytest.mark.parametrize("case", CASES)
def test_audit_flags_a_bias_a_norm_removes(case):
    make, _, expected = CASES[case]
    model = make()
    report = audit(torch.optim.AdamW(model.parameters()), model)
    hits = [f for f in report.findings if f.code == "redundant-bias"]
    if not expected:
        assert hits == []
        return
    (f,) = hits
    assert f.severity == "warning" and list(f.params) == expected
    assert f.message.startswith("redundant bias before a norm")
    assert (
        "its gradient is rounding noise, and AdamW turns it into lr-sized steps; use bias=False"
    ) in f.message
