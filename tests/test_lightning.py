"""``wdlab.integrations.lightning``: a real ``lightning.Trainer`` on the CPU, whose automatic
optimization calls ``optimizer.step(closure=...)``, against a plain torch loop with torch's own
``weight_decay`` (or AdamW) over the same batches. Same float operations in the same order:
bitwise."""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from wdlab.decay import Decay, param_groups

L = pytest.importorskip("lightning")
from wdlab.integrations.lightning import WeightDecay  # noqa: E402

g = torch.Generator().manual_seed(0)
X, Y = torch.randn(32, 4, generator=g), torch.randn(32, generator=g)
BATCHES = list(zip(X.split(8), Y.split(8), strict=True))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 1))


def _loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (net(x).squeeze(-1) - y).pow(2).mean()


class Module(L.LightningModule):
    def __init__(self, make_opt, decay: Decay | None = None) -> None:
        super().__init__()
        self.net = _net()
        self.make_opt, self.decay = make_opt, decay
        self.closures: list[bool] = []  # whether each step came with a closure

    def training_step(self, batch, batch_idx):
        return _loss(self.net, *batch)

    def configure_optimizers(self):
        groups, _ = param_groups(self.net, self.decay)  # names as in the reference
        opt = self.make_opt(groups)
        opt.register_step_pre_hook(
            lambda o, a, k: self.closures.append(k.get("closure") is not None)
        )
        if self.decay is not None:  # the documented alternative to the callback
            self.decay.attach(opt)
        return opt


def _fit(
    module: Module, steps: int, callbacks=(), accumulate: int = 1, ckpt_path=None, save=None
) -> torch.Tensor:
    """Fit ``module`` to ``steps`` optimizer steps (from ``ckpt_path``), then save a checkpoint
    at ``save``: its weights."""
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        accumulate_grad_batches=accumulate,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")  # its advice on num_workers…
        loader = DataLoader(TensorDataset(X, Y), batch_size=8)
        trainer.fit(module, loader, ckpt_path=ckpt_path)
    if save is not None:
        trainer.save_checkpoint(save)
    return torch.cat([p.detach().flatten() for p in module.net.parameters()])


def _torch_loop(make_opt, wd: float, steps: int, accumulate: int = 1) -> torch.Tensor:
    """The reference: torch's own weight_decay on the decaying group, the same batches
    (Lightning divides the loss by accumulate_grad_batches)."""
    net = _net()
    groups, _ = param_groups(net, Decay("builtin", wd))
    opt = make_opt(groups)
    batches = iter(BATCHES * steps)
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(accumulate):
            x, y = next(batches)
            (_loss(net, x, y) / accumulate).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_callback_under_automatic_optimization_equals_torch_weight_decay():
    """SGD with momentum + WeightDecay(coupled) ≡ SGD(weight_decay), 6 steps over 2 epochs."""

    def sgd(groups):
        return torch.optim.SGD(groups, lr=0.05, momentum=0.9)

    decay = Decay("coupled", 0.1)
    callback = WeightDecay(decay)
    module = Module(sgd)
    got = _fit(module, 6, [callback])
    assert module.closures == [True] * 6  # automatic optimization: step(closure=...)
    assert torch.equal(got, _torch_loop(sgd, 0.1, 6))
    assert callback.handles == []  # detached at teardown
    assert not torch.equal(got, _torch_loop(sgd, 0.0, 6))


@pytest.mark.parametrize("mode", ["to_init", "independent", "decoupled"])
def test_a_checkpoint_saved_after_the_fit_resumes_the_callbacks_decay_exactly(tmp_path, mode):
    """A new-user trial: the callback's teardown took the decay's state (the ``to_init`` anchor,
    lr₀, the step count) out of the groups, so ``trainer.save_checkpoint`` after ``fit`` held
    none; a fit resumed from it started the decay afresh (to_init: 0.057 off), with a warning.
    Now it resumes, bit for bit, as the decay attached in ``configure_optimizers`` (never
    detached) resumes through the same checkpoint, and nothing is warned. (Lightning's resume
    from a checkpoint saved after a fit is not its uninterrupted fit, decay or none.)"""

    def adam(groups):
        return torch.optim.Adam(groups, lr=0.05)

    decay = Decay(mode, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "lost the state of Decay(…)" is not said
        _fit(Module(adam), 4, [WeightDecay(decay)], save=tmp_path / "callback.ckpt")
        later = Module(adam)
        later.net[0].weight.data.add_(1.0)  # its own start: the checkpoint's weights replace it
        resumed = _fit(later, 8, [WeightDecay(decay)], ckpt_path=tmp_path / "callback.ckpt")
    _fit(Module(adam, decay), 4, save=tmp_path / "attached.ckpt")
    later = Module(adam, decay)
    later.net[0].weight.data.add_(1.0)
    reference = _fit(later, 8, ckpt_path=tmp_path / "attached.ckpt")
    assert torch.equal(resumed, reference)


def test_attach_in_configure_optimizers_with_accumulation_equals_adamw():
    """Adam + Decay('decoupled') attached in configure_optimizers ≡ AdamW, with
    accumulate_grad_batches=2: decayed once per optimizer step."""

    def adam(groups):
        return torch.optim.Adam(groups, lr=0.05)

    def adamw(groups):
        return torch.optim.AdamW(groups, lr=0.05)

    got = _fit(Module(adam, Decay("decoupled", 0.1)), 3, accumulate=2)
    assert torch.equal(got, _torch_loop(adamw, 0.1, 3, accumulate=2))


def test_callback_refuses_bad_input():
    with pytest.raises(ValueError, match=r"needs a wdlab\.Decay, got str"):
        WeightDecay("decoupled")
    with pytest.raises(ValueError, match="no optimizer 1; the fit has 1"):
        _fit(Module(lambda g: torch.optim.SGD(g, lr=0.1)), 1, [WeightDecay(Decay(), [1])])
    # one index alone is one (it raised TypeError: 'int' object is not iterable)
    assert WeightDecay(Decay(), 0).indices == (0,) and WeightDecay(Decay(), [1, 0]).indices == (
        1,
        0,
    )
    for bad, shown in ((1.5, "1.5"), (["0"], "'0'"), ([True], "True")):
        with pytest.raises(ValueError, match=rf"^WeightDecay optimizers: {shown} is not an "):
            WeightDecay(Decay(), bad)


def test_import_wdlab_never_imports_lightning():
    code = (
        "import sys, wdlab, wdlab.integrations, wdlab.auditing; wdlab.Decay, wdlab.train;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'lightning_fabric')];"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_warning_of_the_callback_points_at_the_users_fit():
    """Found by a new-user trial: the callback's warning (plain ``self.parameters()``: biases
    and norms decay too) was attributed to Lightning's own ``trainer/call.py``. It points at
    the line that called ``trainer.fit``, outside wdlab, torch and Lightning."""

    class Plain(Module):
        def configure_optimizers(self):
            return torch.optim.SGD(self.net.parameters(), lr=0.05)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        callbacks=[WeightDecay(Decay("coupled", 0.1))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Plain(None), DataLoader(TensorDataset(X, Y), batch_size=8))
    ours = [w for w in caught if "decay" in str(w.message).lower()]
    assert ours and {w.filename for w in ours} == {__file__}, [w.filename for w in ours]
