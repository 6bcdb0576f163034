"""The article's data split, the model shapes and the batched forward."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from numerics import ONE_PASS, assert_normwise, per_steps
from wdlab.data import seed_noise, seed_noise_tensors, shuffle_split
from wdlab.engines import GramEngine, MLPEngine, Setup
from wdlab.models import MLP, ModelSpec, SeedMLP


def test_seed_noise_split_is_the_articles():
    data = seed_noise(dim=100, seed=3)
    assert data.X_train.shape == (67, 100) and data.X_test.shape == (33, 100)
    assert data.X_train.dtype == torch.float32 and data.task == "binary"
    torch.manual_seed(3)
    X = torch.randn((100, 100), dtype=torch.float64)
    y = torch.cat((torch.zeros(50, dtype=torch.float64), torch.ones(50, dtype=torch.float64)))
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.33, random_state=42)
    assert torch.equal(data.X_train, X_tr.float()) and torch.equal(data.X_test, X_te.float())
    assert torch.equal(data.y_train, y_tr.float()) and torch.equal(data.y_test, y_te.float())
    assert data.y_train.sum() + data.y_test.sum() == 50  # half ones


@pytest.mark.parametrize("n, test_size, seed", [(1000, 0.33, 42), (64, 0.33, 42), (37, 0.25, 7)])
def test_shuffle_split_is_sklearns(n, test_size, seed):
    idx = np.arange(n)
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed)
    ours_tr, ours_te = shuffle_split(n, test_size, seed)
    assert ours_tr.tolist() == tr.tolist() and ours_te.tolist() == te.tolist()


def test_seed_noise_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = seed_noise(64, seed=0), seed_noise(64, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.X_train, b.X_train)
    assert not torch.equal(a.X_train, seed_noise(64, seed=1).X_train)


def test_seed_noise_tensors_shapes():
    X, y = seed_noise_tensors(10, 0)
    assert X.shape == (10, 10) and X.dtype == torch.float64
    assert y.tolist() == [0.0] * 5 + [1.0] * 5


def test_seed_mlp_shapes():
    m = SeedMLP(40)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "hidden_layer.weight": (20, 40),
        "hidden_layer.bias": (20,),
        "last_layer.weight": (1, 20),
        "last_layer.bias": (1,),
    }
    assert m(torch.randn(7, 40)).shape == (7, 1)


def test_the_seed_mlp_has_an_output_per_class():
    """On data of 3 classes the article's MLP ends in 3 logits (it ended in 1 whatever the
    data, and a sweep on wine stopped on an index error); batched and alone agree."""
    import wdlab

    assert ModelSpec("seed-mlp", in_dim=13, out_dim=3).describe() == "seed-mlp 13-6-3 sigmoid"
    kw = {"epochs": 2, "weight_decay": [0.0, 0.01], "lr": 0.1, "optimizer": "sgd"}  # 2 steps
    batched = wdlab.sweep("seed-mlp", "wine", **kw).to_pandas()
    alone = wdlab.sweep("seed-mlp", "wine", max_batch=1, **kw).to_pandas()
    assert list(batched.status) == ["done", "done"]
    for col in ("train_loss", "val_loss"):
        assert_normwise(
            torch.tensor(batched[col].values), torch.tensor(alone[col].values), per_steps(2)
        )


def _stack(modules):
    names = [n for n, _ in modules[0].named_parameters()]
    return {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]) for n in names
    }


def _engine(spec, modules, x, cls=None):
    """The engine of ``spec`` (or engine class ``cls``) over the stacked ``modules``, on x."""
    setup = Setup(modules[0], _stack(modules), x)
    if cls is None:
        return spec.model_kind.make_engine(spec, setup)
    return cls(Setup(modules[0], _stack(modules), x, layout=spec.model_kind.layout(spec)))


@pytest.mark.numerics
def test_batched_forward_matches_each_module():
    for spec in (
        ModelSpec("seed-mlp", in_dim=12),
        ModelSpec("mlp", in_dim=12, hidden=(8, 6), out_dim=3, activation="tanh", layernorm=True),
        ModelSpec("linear", in_dim=12, out_dim=1),
    ):
        modules = [spec.build() for _ in range(3)]
        x = torch.randn(9, 12)
        out = _engine(spec, modules, x).forward("train")
        assert out.shape == (3, 9, spec.out_dim)
        for k, m in enumerate(modules):
            assert_normwise(out[k], m(x), ONE_PASS, f"{spec.kind} row {k}")


@pytest.mark.numerics
def test_custom_module_runs_through_vmap():
    spec = ModelSpec(
        "custom",
        in_dim=5,
        out_dim=2,
        factory=lambda in_dim, out_dim: MLP(in_dim, (4,), out_dim, "gelu"),
    )
    modules = [spec.build() for _ in range(2)]
    x = torch.randn(6, 5)
    out = _engine(spec, modules, x).forward("train")
    for k, m in enumerate(modules):
        assert_normwise(out[k], m(x), ONE_PASS, f"row {k}")


def _grads_both_ways(P_cls, spec, task, y, x, modules, **kw):
    """(autograd's losses and gradients, the hand-written backward's) for one engine."""
    from wdlab.tasks import per_config_loss, per_config_loss_grad

    auto = _engine(spec, modules, x, P_cls)
    losses = per_config_loss(task, auto.forward("train"), y)
    auto.backward_loss(losses.sum())
    hand = _engine(spec, modules, x, P_cls)
    with torch.no_grad():
        out, tape = hand.forward_tape()
        hand_losses, dout = per_config_loss_grad(task, out, y)
        hand.backward(tape, dout)
    return (losses, auto.tensors), (hand_losses, hand.tensors)


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("spec", "task"),
    [
        (ModelSpec("seed-mlp", in_dim=12), "binary"),
        (ModelSpec("mlp", in_dim=12, hidden=(8, 6), out_dim=4, activation="relu"), "multiclass"),
        (ModelSpec("mlp", in_dim=12, hidden=(8,), out_dim=1, activation="gelu"), "regression"),
        (
            ModelSpec(
                "mlp", in_dim=12, hidden=(8, 5), out_dim=3, activation="tanh", layernorm=True
            ),
            "multiclass",
        ),
        (ModelSpec("mlp", in_dim=12, hidden=(7,), out_dim=1, activation="sigmoid"), "binary"),
        (ModelSpec("linear", in_dim=12, out_dim=1), "regression"),
        (ModelSpec("mlp", in_dim=12, hidden=(), out_dim=3), "multiclass"),
    ],
)
def test_hand_written_backward_equals_autograd(spec, task):
    """Every built-in model and loss: the engine's hand-written gradients are autograd's, for
    the direct weights and for the Gram fast path's coefficients."""

    torch.manual_seed(0)
    x = torch.randn(9, 12)
    y = {
        "binary": torch.randint(0, 2, (9,)).float(),
        "multiclass": torch.randint(0, spec.out_dim, (9,)),
        "regression": torch.randn(9),
    }[task]
    modules = [spec.build() for _ in range(3)]
    for P_cls in (MLPEngine, GramEngine):
        (la, ta), (lh, th) = _grads_both_ways(P_cls, spec, task, y, x, modules)
        assert_normwise(lh, la, ONE_PASS, "losses")
        assert set(ta) == set(th)
        for n in ta:
            assert_normwise(th[n].grad, ta[n].grad, ONE_PASS, n)
            assert th[n].grad.abs().sum() > 0 or ta[n].grad.abs().sum() == 0


def test_each_source_takes_the_options_its_registry_entry_lists():
    """The registry says which ``[data] options`` a source takes: each is taken (with a small
    valid value), and those of a source whose loader names its keywords are all of them."""
    import inspect

    from wdlab.data import load
    from wdlab.data.sources import SOURCES

    small = {"dim": 8, "n": 40, "d": 6, "informative": 2, "n_test": 20, "n_train": 10, "n_val": 10,
             "num_samples": 200, "noise": 0.5, "sigma_w": 1.0, "label_noise": 0.1,
             "val_size": 0.2, "test_size": 0.3, "standardize": False}  # fmt: skip
    for name, source in SOURCES.items():
        if name == "mnist1d":
            pytest.importorskip("mnist1d")
        load(name, **{k: small[k] for k in source.options})
        params = inspect.signature(source.load).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            assert set(source.options) == set(params) - {"seed"}, name


@pytest.mark.parametrize(
    "options, said",
    [
        ("{dimm = 10}", "data.options: seed-noise has no option 'dimm'; valid: dim, test_size"),
        ("{dim = -10}", "data.options.dim must be >= 4, got -10"),
    ],
)
def test_a_sources_option_is_named_as_the_file_names_it(tmp_path, capsys, options, said):
    """A new-user trial: an unknown option read "seed_noise() got an unexpected keyword
    argument 'dimm'" (a Python signature, no valid options), an out-of-range one "dim must be
    >= 4" (no key)."""
    from wdlab.cli import main

    toml = tmp_path / "e.toml"
    toml.write_text(f'[data]\nsource = "seed-noise"\noptions = {options}\n[train]\nepochs = 1\n')
    assert main(["run", str(toml), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"wdlab run: error: {said}\n"
