"""Batched vs alone vs a plain PyTorch loop, on a ResNet-style CNN and a Transformer: how far
apart they end, and why.

    OMP_NUM_THREADS=1 .venv/bin/python bench/batched_vs_alone.py [--part resnet|transformer|noise]

ResNet-style CNN (Conv2d without bias, BatchNorm2d, residual blocks; 640 synthetic 3×32×32
images, SGD with momentum, 40 steps):

* the plain loop, the same configuration through ``wdlab.sweep(max_batch=1)`` and in a batch of
  8 (4 weight decays × 2 seeds): final test loss and weights;
* the plain loop again from initial weights moved by one part in 10⁷ (``w·(1 + 1e-7·ε)``): how
  much this training amplifies a rounding-sized difference;
* at each step of the plain loop, the gradient at the *same* weights through wdlab's batched
  kernels (``torch.vmap`` over 2 copies): the per-step difference between the two kernels, and
  the steps where a ReLU input within rounding of 0 passes its gradient in one computation only.

Transformer classifier on token ids (2 encoder layers, AdamW, 16 steps): batched vs
``max_batch=1`` with PyTorch's default dropout 0.1 (which includes attention's own dropout,
a float attribute of ``nn.MultiheadAttention``) and with ``dropout=0.0``, and the engine text
naming attention's key bias.

Gradients that are rounding noise (``--part noise``; AdamW, 2 epochs, batched vs alone, the
weights each configuration ends with): a Conv1d with and without a bias before BatchNorm1d, and
the Transformer's attention key bias against the rest of its weights.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import wdlab
from wdlab.func import FuncForward, stack_state

warnings.simplefilter("ignore")  # vmap's "performance drop" notes for fused attention kernels


NEAR = 3e-7  # a few float32 ulps of 1: where another kernel's rounding may flip the sign
NEAR_ZERO: list[int] | None = None  # when a list: ReLU inputs within NEAR of 0, per forward


def relu(z: torch.Tensor) -> torch.Tensor:
    """F.relu, counting inputs within ``NEAR`` of 0 when ``NEAR_ZERO`` is a list."""
    if NEAR_ZERO is not None:
        NEAR_ZERO[-1] += int((z.detach().abs() <= NEAR).sum())
    return F.relu(z)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = relu(self.bn1(self.conv1(x)))
        return relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        self.layer1 = Block(width, width, 2)
        self.layer2 = Block(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(relu(self.stem(x)))).mean((2, 3)))


def resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ResNet()


def images(n: int = 1440) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """10 classes of tinted blobs on noise, 3×32×32, standardised."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    grid = torch.linspace(-1, 1, 32)
    angle = y.float() * (2 * torch.pi / 10)
    cx, cy = 0.5 * angle.cos(), 0.5 * angle.sin()
    blob = torch.exp(
        -(
            (grid[None, None, :] - cx[:, None, None]) ** 2
            + (grid[None, :, None] - cy[:, None, None]) ** 2
        )
        / 0.1
    )
    tint = torch.rand(n, 3, 1, 1, generator=g) * 0.8 + 0.2
    X = blob[:, None] * tint + 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    X = (X - X.mean((0, 2, 3), keepdim=True)) / X.std((0, 2, 3), keepdim=True)
    return {
        "train": (X[:640], y[:640]),
        "val": (X[640:1040], y[640:1040]),
        "test": (X[1040:], y[1040:]),
    }


LR, WD, SEED, EPOCHS, BATCH = 0.02, 5e-3, 1, 2, 32


def plain_resnet(data, nudge: float = 0.0, trace: list | None = None):
    """The plain loop, drawing mini-batches as wdlab does; returns (test loss, weights)."""
    model = resnet(SEED)
    if nudge:
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + nudge * torch.randn(p.shape, generator=g))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    X, y = data["train"]
    shuffle = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for _ in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(X), generator=shuffle)
        for i in range(0, len(X), BATCH):
            idx = perm[i : i + BATCH]
            if trace is not None:
                trace.append(_kernel_gap(model, X[idx], y[idx]))
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        test = F.cross_entropy(model(data["test"][0]), data["test"][1]).item()
    return test, torch.cat([p.detach().flatten() for p in model.parameters()])


def _kernel_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """‖g_batched − g_plain‖/‖g_plain‖ at these weights: wdlab's vmap kernels (2 copies) vs
    the module's own (both on a copy: the loop's weights and statistics stay as they are)."""
    import copy

    global NEAR_ZERO
    twin = copy.deepcopy(model)
    twin.zero_grad()
    NEAR_ZERO = [0]
    F.cross_entropy(twin(x), y).backward()
    plain = torch.cat([p.grad.flatten() for p in twin.parameters()])
    rows = [copy.deepcopy(model), copy.deepcopy(model)]
    params = stack_state(rows, x.device, nn.Module.named_parameters)
    params = {n: t.requires_grad_(True) for n, t in params.items()}
    near, NEAR_ZERO = NEAR_ZERO[0], None
    out = FuncForward(model)(params, stack_state(rows, x.device), x, True)
    F.cross_entropy(out[0], y).backward()
    batched = torch.cat([params[n].grad[0].flatten() for n, _ in model.named_parameters()])
    return float((batched - plain).norm() / plain.norm()), near


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def part_resnet() -> None:
    data = images()
    kw = dict(
        optimizer="sgd",
        options={"momentum": 0.9},
        lr=LR,
        modes=["builtin"],
        rule=wdlab.DecayRule(everything=True),
        epochs=EPOCHS,
        batch_size=BATCH,
        eval_every=EPOCHS,
    )
    alone = wdlab.sweep(resnet, data, weight_decay=[WD], seeds=[SEED], max_batch=1, **kw)
    batched = wdlab.sweep(resnet, data, weight_decay=[0.0, 5e-4, WD, 5e-2], seeds=[0, 1], **kw)

    def pick(r):
        return next(x for x in r.runs if x.config.weight_decay == WD and x.config.seed == SEED)

    trace: list[tuple[float, int]] = []
    test, w = plain_resnet(data, trace=trace)
    test_nudged, w_nudged = plain_resnet(data, nudge=1e-7)
    a, b = pick(alone).final["test_loss"], pick(batched).final["test_loss"]
    steps = len(trace)
    print(f"ResNet-style CNN, SGD momentum 0.9, {steps} steps, test loss (seed {SEED}, wd {WD}):")
    print(f"  plain loop {test:.7f} | max_batch=1 {a:.7f} | batched (8 configs) {b:.7f}")
    print(f"  max_batch=1 vs plain: {rel(a, test):.1e}   batched vs max_batch=1: {rel(b, a):.1e}")
    print(
        f"  plain loop from weights moved by 1e-7: test loss {rel(test_nudged, test):.1e}"
        f", weights {float((w_nudged - w).norm() / w.norm()):.1e} apart after {steps} steps"
    )
    jumps = [i for i, (t, _) in enumerate(trace) if t > 1e-4]
    calm = sorted(t for t, _ in trace if t <= 1e-4)
    print(
        f"  gradient at the same weights, wdlab's batched kernels vs the module's own: median "
        f"{calm[len(calm) // 2]:.1e}, max {calm[-1]:.1e} over {len(calm)} steps; above 1e-4: "
        + (", ".join(f"step {i}: {trace[i][0]:.1e}" for i in jumps) or "none")
    )
    near = [n for _, n in trace]
    print(
        f"  steps with a ReLU input within {NEAR:g} of 0: {sum(n > 0 for n in near)} of {steps}; "
        f"among the steps above 1e-4: {sum(near[i] > 0 for i in jumps)} of {len(jumps)}"
    )
    print(f"  engine: {alone.engine_note} | {batched.engine_note}")


class Transformer(nn.Module):
    def __init__(self, dropout: float, vocab: int = 20, seq: int = 16, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, seq, d))
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(x.long()) + self.pos)  # ids may arrive as floats: exact
        return self.head(self.norm(h.mean(1)))


def _kept(make, data, configs):
    """Each configuration's final weights, trained in a batch and alone (``wdlab.trainer``)."""
    from wdlab.data import from_splits
    from wdlab.models import ModelSpec
    from wdlab.trainer import train

    ds = from_splits(data)
    spec = ModelSpec("custom", factory=make, in_dim=ds.in_dim, out_dim=ds.out_dim)
    kw = dict(epochs=2, batch_size=64, keep_params=True, device="cpu")
    batched = train(spec, ds, configs, **kw)
    return [
        (b.params, train(spec, ds, [c], **kw)[0].params)
        for c, b in zip(configs, batched, strict=True)
    ]


def tokens() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """label: which of tokens 1..4 occurs most often in a sequence of 16 (of 20)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (912, 16), generator=g)
    y = torch.stack([(x == t).sum(1) for t in range(1, 5)], 1).argmax(1)
    return {
        "train": (x[:512], y[:512]),
        "val": (x[512:712], y[512:712]),
        "test": (x[712:], y[712:]),
    }


def part_transformer() -> None:
    data = tokens()
    kw = dict(optimizer="adamw", lr=3e-3, modes=["builtin"], epochs=2, batch_size=64, eval_every=2)
    print("Transformer classifier, AdamW, 16 steps, val loss (seed 1, wd 0.1):")
    for p in (0.1, 0.0):

        def make(seed: int, p: float = p) -> nn.Module:
            torch.manual_seed(seed)
            return Transformer(p)

        alone = wdlab.sweep(make, data, weight_decay=[0.1], seeds=[1], max_batch=1, **kw)
        batched = wdlab.sweep(make, data, weight_decay=[0.0, 0.01, 0.1, 1.0], seeds=[0, 1], **kw)
        a, b = (
            next(r for r in res.runs if r.config.weight_decay == 0.1 and r.config.seed == 1)
            for res in (alone, batched)
        )
        a, b = a.final["val_loss"], b.final["val_loss"]
        print(
            f"  dropout {p}: max_batch=1 {a:.7f} | batched (8 configs) {b:.7f}, rel {rel(b, a):.1e}"
        )
    print(f"  engine: {batched.engine_note}")


def conv_bn(bias: bool):
    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv1d(1, 8, 5, padding=2, bias=bias),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(8, 3),
        )

    return make


def part_noise() -> None:
    from wdlab.records import RunConfig

    g = torch.Generator().manual_seed(0)
    X = torch.randn(800, 1, 32, generator=g)
    y = (X[:, 0, :16].mean(1) > 0).long() + (X[:, 0, 16:].mean(1) > 0).long()
    signals = {
        "train": (X[:576], y[:576]),
        "val": (X[576:688], y[576:688]),
        "test": (X[688:], y[688:]),
    }
    configs = [
        RunConfig("decoupled", wd, 1e-2, "adamw", seed=s)
        for wd in (0.0, 1e-2, 0.1, 1.0)
        for s in (0, 1)
    ]
    print("AdamW, 2 epochs (18 and 16 steps), batched vs alone, final weights (‖Δ‖/‖w‖):")
    for bias in (True, False):
        pairs = _kept(conv_bn(bias), signals, configs)
        gaps = [_rel(b, a) for b, a in pairs]
        print(f"  Conv1d(bias={bias}) + BatchNorm1d: {min(gaps):.1e} to {max(gaps):.1e}")
    data = tokens()

    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return Transformer(0.0)

    configs = [
        RunConfig("decoupled", wd, 3e-3, "adamw", seed=s) for wd in (0.0, 0.1) for s in (0, 1)
    ]
    key, rest = [], []
    for b, a in _kept(make, data, configs):
        key.append(_rel(_key_part(b, True), _key_part(a, True)))
        rest.append(_rel(_key_part(b, False), _key_part(a, False)))
    print(
        f"  Transformer (dropout 0): attention key biases {min(key):.1e} to {max(key):.1e}; "
        f"every other weight {min(rest):.1e} to {max(rest):.1e}"
    )


def _key_part(w: dict, key: bool) -> dict:
    """The key part (elements e..2e) of every attention input bias, or every weight but it."""
    out = {}
    for n, t in w.items():
        if not n.endswith("in_proj_bias"):
            out |= {} if key else {n: t}
            continue
        e = len(t) // 3
        out[n] = t[e : 2 * e] if key else torch.cat([t[:e], t[2 * e :]])
    return out


def _rel(a: dict, b: dict) -> float:
    names = [n for n in b if b[n].is_floating_point()]
    fa = torch.cat([a[n].double().flatten() for n in names])
    fb = torch.cat([b[n].double().flatten() for n in names])
    return float((fa - fb).norm() / fb.norm())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["resnet", "transformer", "noise", "all"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, part in (
        ("resnet", part_resnet),
        ("transformer", part_transformer),
        ("noise", part_noise),
    ):
        if args.part in (name, "all"):
            part()
