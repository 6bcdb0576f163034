"""Benchmark: a weight-decay sweep of a ResNet-style CNN on augmented images, wdlab against the
plain PyTorch loops that use the same DataLoader, in one run; and a 100,000-item scale case.

    .venv/bin/python bench/bench_pipeline.py                      # the figures (a quiet machine)
    .venv/bin/python bench/bench_pipeline.py --n 256 --epochs 1 --scale-n 2000   # a quick check

**The sweep**: synthetic class-conditional 3×32×32 images (10 classes: a fixed random
prototype per class plus noise, made in ``__getitem__``), a random crop (pad 4, reflect) and a
horizontal flip drawn in ``__getitem__`` each time an item is read; a ResNet-style CNN
(``Conv2d(bias=False)`` + ``BatchNorm2d``, two residual blocks, width 8); 16 configurations (4
weight decays × 2 learning rates × 2 seeds), AdamW, mini-batches of ``--batch`` from one
``DataLoader(shuffle=True, num_workers=--workers)``:

1. **plain loops**: 16 PyTorch loops one after another, each ``torch.optim.AdamW(weight_decay=
   wd)`` over that same DataLoader (each reads and augments every image itself);
2. **wdlab**: ``wdlab.sweep`` given that DataLoader: all 16 at once, each mini-batch read and
   augmented once for the 16.
3. **wdlab, side by side**: the same with ``parallel=2`` (two configurations at a time, one
   thread each: :mod:`wdlab.sidebyside`), and with ``channels_last=True`` too (the images
   handed to the model in ``torch.channels_last``). Against the last, a fourth side: the 16
   plain loops handing their model channels_last images too (the same kernels).

Both evaluate the validation and test splits (and the training split, in eval mode) after the
first and the last epoch. Each side runs in a fresh process, so its peak resident memory
(``ru_maxrss``) is its own: the plain side's is one loop's (they run one after another).

**The scale case**: 100,000 items made lazily (``--scale-n``; 1.2 GB as float32 were they
held), a small CNN, one epoch: a plain DataLoader loop (one configuration) against
``wdlab.sweep`` with 2 configurations: time per epoch and peak resident memory.

A third side splits the gain: the same 16 plain loops over mini-batches read once for all of
them (each epoch's augmented batches and the evaluation batches, read up front and held), so
the data costs what it costs wdlab and what is left is the 16 models' own kernels.

Prints model-steps/s (optimizer steps of one configuration per second), time per epoch, peak
RSS and the ratios (goals: wdlab >= 3x the plain loops with augmentation on, and a peak RSS
within 1.5x of one plain loop's). Training K configurations at once holds K models'
activations: ``--max-memory`` (wdlab's budget per batch of configurations) trades that memory
for speed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

WDS, LRS, SEEDS, CLASSES = (0.0, 1e-4, 1e-3, 1e-2), (1e-3, 3e-3), (0, 1), 10


class Images(Dataset):
    """``n`` class-conditional 3×32×32 images, made in ``__getitem__`` from the item's seed;
    ``augment``: a random crop (pad 4, reflect) and flip from torch's global RNG."""

    def __init__(self, n: int, offset: int = 0, augment: bool = False) -> None:
        self.n, self.offset, self.augment = n, offset, augment
        g = torch.Generator().manual_seed(0)
        self.protos = torch.randn(CLASSES, 3, 32, 32, generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.offset + i)
        y = int(torch.randint(0, CLASSES, (), generator=g))
        x = self.protos[y] + 1.5 * torch.randn(3, 32, 32, generator=g)
        if self.augment:
            padded = F.pad(x[None], (4, 4, 4, 4), mode="reflect")[0]
            top, left = torch.randint(0, 9, (2,)).tolist()
            x = padded[:, top : top + 32, left : left + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, y


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
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = Block(width, width, 2)
        self.layer2 = Block(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResNet()


def small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES),
    )  # fmt: skip


def splits(a: argparse.Namespace, n: int) -> dict[str, object]:
    """The training DataLoader (augmented, shuffled, workers) and the evaluation splits."""
    g = torch.Generator().manual_seed(0)
    train = DataLoader(
        Images(n, augment=True), batch_size=a.batch, shuffle=True, num_workers=a.workers,
        generator=g,
    )  # fmt: skip
    return {"train": train, "val": Images(n // 4, 10**6), "test": Images(n // 4, 2 * 10**6)}


def evaluate(model: nn.Module, data: dict, a: argparse.Namespace, fmt=torch.contiguous_format):
    model.eval()
    with torch.no_grad():
        for split, src in data.items():
            loader = src if split == "train" or isinstance(src, list) else DataLoader(
                src, batch_size=a.batch
            )  # fmt: skip
            for x, y in loader:
                F.cross_entropy(model(x.contiguous(memory_format=fmt)), y).item()
    model.train()


def read_once(a: argparse.Namespace, n: int) -> tuple[dict, list[list]]:
    """Every mini-batch the loops would read (each epoch's training batches, freshly
    augmented, and the evaluation splits' batches), read once and held in memory."""
    data = splits(a, n)
    epochs = [list(data["train"]) for _ in range(a.epochs)]
    held = {k: list(DataLoader(v, batch_size=a.batch)) for k, v in data.items() if k != "train"}
    return {"train": epochs[0], **held}, epochs


def plain(
    a: argparse.Namespace, make, n: int, configs: list[tuple], once: bool = False, cl=False
) -> int:
    """The loops, one after another over the same DataLoader; returns optimizer steps.
    ``once``: every mini-batch read once for all the loops (:func:`read_once`), so what is left
    is the 16 models' own compute: what sharing the data gains, with the same kernels.
    ``cl``: the inputs converted to ``torch.channels_last`` (what wdlab's opt-in does)."""
    fmt = torch.channels_last if cl else torch.contiguous_format  # contiguous: x itself
    data, epochs = read_once(a, n) if once else (splits(a, n), None)
    steps = 0
    for wd, lr, seed in configs:
        model = make(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        for epoch in range(a.epochs):
            for x, y in data["train"] if epochs is None else epochs[epoch]:
                opt.zero_grad()
                F.cross_entropy(model(x.contiguous(memory_format=fmt)), y).backward()
                opt.step()
                steps += 1
            if epoch in (0, a.epochs - 1):
                evaluate(model, data, a, fmt)
    return steps


def ours(a: argparse.Namespace, make, n: int, configs: list[tuple]) -> int:
    """One wdlab.sweep of the same configurations; returns optimizer steps of all of them."""
    import wdlab

    wds = sorted({c[0] for c in configs})
    lrs = sorted({c[1] for c in configs})
    seeds = sorted({c[2] for c in configs})
    r = wdlab.sweep(
        make, splits(a, n), optimizer="adamw", modes=["decoupled"], weight_decay=wds, lr=lrs,
        seeds=seeds, epochs=a.epochs, eval_every=max(1, a.epochs - 1), n_classes=CLASSES,
        keep="none", device=a.device, max_memory_mb=a.max_memory,
        parallel=1 if a.side == "wdlab" else a.parallel, channels_last=a.side == "wdlab-fast",
    )  # fmt: skip
    assert len(r.runs) == len(configs), len(r.runs)
    return len(configs) * a.epochs * -(-n // a.batch)


def side(a: argparse.Namespace) -> None:
    """One side in this (fresh) process: prints seconds, steps and peak RSS as JSON."""
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads) if a.threads else None
    scale = a.side.startswith("scale")
    n = a.scale_n if scale else a.n
    make = small if scale else resnet
    grid = [(wd, lr, s) for wd in WDS for lr in LRS for s in SEEDS]
    configs = grid[:1] if a.side == "scale-plain" else grid[:2] if scale else grid
    run = plain if a.side.endswith("plain") else ours  # wdlab, wdlab-parallel, wdlab-fast
    if a.side in ("once", "plain-cl"):
        run = lambda *args: plain(*args, once=a.side == "once", cl=a.side == "plain-cl")  # noqa: E731
    if scale:
        a.epochs = 1
    t0 = time.perf_counter()
    steps = run(a, make, n, configs)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "steps": steps, "peak_mib": peak}))


def launch(a: argparse.Namespace, which: str) -> dict:
    argv = [sys.executable, __file__, "--side", which]
    keys = ("n", "epochs", "batch", "workers", "scale_n", "threads", "device", "max_memory")
    for k in (*keys, "parallel"):
        argv += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048, help="training images of the sweep")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--scale-n", type=int, default=100_000, help="items of the scale case")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--max-memory", type=float, default=2048, help="wdlab's training memory per batch (MB)"
    )
    ap.add_argument(
        "--parallel", type=int, default=2, help="wdlab's second run: configurations side by side"
    )
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        return side(a)
    print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads")
    p, w, o = launch(a, "plain"), launch(a, "wdlab"), launch(a, "once")
    wp, wf, pc = launch(a, "wdlab-parallel"), launch(a, "wdlab-fast"), launch(a, "plain-cl")
    rate = lambda r: r["steps"] / r["seconds"]  # noqa: E731
    print(
        f"ResNet-style CNN, augmented 3x32x32, {a.n} images, {a.epochs} epochs, batch "
        f"{a.batch}, {a.workers} workers, 16 configurations:\n"
        f"  16 plain loops: {rate(p):8.1f} model-steps/s, peak RSS {p['peak_mib']:6.0f} MiB"
    )
    for name, r in [
        ("wdlab.sweep", w),
        (f"wdlab.sweep(parallel={a.parallel})", wp),
        (f"wdlab.sweep(parallel={a.parallel}, channels_last=True)", wf),
    ]:
        print(
            f"  {name}: {rate(r):.1f} model-steps/s, peak RSS {r['peak_mib']:.0f} MiB: "
            f"{rate(r) / rate(p):.2f}x the plain loops' speed (goal >= 3x), "
            f"{r['peak_mib'] / p['peak_mib']:.2f}x their peak RSS (goal <= 1.5x)"
        )
    print(
        f"  16 plain loops with channels_last inputs: {rate(pc):.1f} model-steps/s "
        f"({rate(pc) / rate(p):.2f}x the plain loops); wdlab with both {rate(wf) / rate(pc):.2f}x "
        "that\n"
        f"  16 plain loops over mini-batches read once for all of them (the data paid once, "
        f"as wdlab pays it): {rate(o):.1f} model-steps/s,\n"
        f"    {rate(o) / rate(p):.2f}x the plain loops; wdlab {rate(w) / rate(o):.2f}x that "
        "(what is left is the 16 models' own kernels)"
    )
    sp, sw = launch(a, "scale-plain"), launch(a, "scale-wdlab")
    swp = launch(a, "scale-wdlab-parallel")
    print(
        f"scale case, {a.scale_n:,} lazily made 3x32x32 items, one epoch, a small CNN:\n"
        f"  plain DataLoader loop (1 configuration): {sp['seconds']:7.1f} s per epoch, "
        f"peak RSS {sp['peak_mib']:6.0f} MiB\n"
        f"  wdlab.sweep (2 configurations):          {sw['seconds']:7.1f} s per epoch, "
        f"peak RSS {sw['peak_mib']:6.0f} MiB\n"
        f"  wdlab / plain: {sw['seconds'] / sp['seconds']:.2f}x time per epoch (2 "
        f"configurations against 1), {sw['peak_mib'] / sp['peak_mib']:.2f}x peak RSS\n"
        f"  wdlab.sweep(parallel={a.parallel}): {swp['seconds']:.1f} s per epoch, "
        f"peak RSS {swp['peak_mib']:.0f} MiB: "
        f"{swp['seconds'] / sp['seconds']:.2f}x, {swp['peak_mib'] / sp['peak_mib']:.2f}x"
    )


if __name__ == "__main__":
    main()
