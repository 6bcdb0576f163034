"""The article's experiment: random-label data, a sigmoid MLP, SGD, three decay regimes.

All three regimes start from the same initial weights; the only difference between them is the
regime:

* ``none``: no decay;
* ``manual``: ``p.grad.add_(p, alpha=wd)`` after ``backward()`` (mode ``coupled``);
* ``builtin``: ``torch.optim.SGD(weight_decay=wd)`` (mode ``builtin``).

Returns a :class:`~wdlab.pipelines.results.DemoResult`; draws nothing and writes no file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from wdlab.data import Dataset, seed_noise, seed_noise_tensors
from wdlab.decay import EVERYTHING, check_weight_decay, decay_table, get_mode
from wdlab.models import ModelSpec
from wdlab.pipelines.results import DemoResult
from wdlab.records import Check, RunConfig
from wdlab.trainer import import_optimizer_runtime, train
from wdlab.verify import compare

REGIMES: dict[str, str] = {"none": "none", "manual": "coupled", "builtin": "builtin"}


@dataclass(frozen=True)
class DemoSettings:
    """The article's numbers, each changeable."""

    epochs: int = 1000
    dim: int = 1000
    lr: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    eval_every: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "dim", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                flag = name.replace("_", "-")
                raise ValueError(f"{name} (--{flag}) must be a positive integer, got {value!r}")
        if self.dim < 4:
            raise ValueError(f"dim (--dim) must be >= 4, got {self.dim}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr (--lr) must be a positive number, got {self.lr!r}")
        check_weight_decay(self.weight_decay)


def seed_init(dim: int) -> Callable[[int], nn.Module]:
    """The article's initial weights for a seed: draw X first, then build the model."""
    spec = ModelSpec("seed-mlp", in_dim=dim)

    def init(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            seed_noise_tensors(dim, seed)
            return spec.build()

    return init


def run_demo(
    settings: DemoSettings | None = None,
    *,
    progress: bool = False,
    device: str | torch.device | None = None,
    data: Dataset | None = None,
    fast_path: bool | None = None,
    precision: str = "fp32",
) -> DemoResult:
    """Train the article's three regimes and compare manual with builtin.

    ``fast_path`` as in :func:`wdlab.trainer.train`: by default the exact Gram-matrix path runs
    wherever it applies (here: n_train 670 < d 1000, SGD), ``False`` forces the standard one.
    """
    s = settings or DemoSettings()
    # torch.optim's first optimizer imports torch._dynamo (~1 s, once per process). The
    # article's loop builds its optimizer before starting its clock; so does the demo, so that
    # the two clocks time the same work. (bench/bench_demo.py also compares whole processes.)
    import_optimizer_runtime()
    t0 = time.perf_counter()
    data = data or seed_noise(s.dim, s.seed)
    configs = [
        RunConfig(
            mode=mode,
            weight_decay=s.weight_decay if get_mode(mode).decays else 0.0,
            lr=s.lr,
            optimizer="sgd",
            seed=s.seed,
            label=regime,
        )
        for regime, mode in REGIMES.items()
    ]
    # One engine call per regime (each a sweep of one), as the article trains them: stacked
    # in one batch, rows would agree only to rounding (see engines.layers._linear), and the
    # point here is bitwise identity. At this size the work is GEMM-bound, so batching would
    # gain little.
    runs = [
        train(
            ModelSpec("seed-mlp", in_dim=s.dim),
            data,
            [config],
            epochs=s.epochs + 1,  # the article loops range(epochs + 1)
            eval_every=s.eval_every,
            rule=EVERYTHING,  # the article decays every parameter, biases included
            init=seed_init(s.dim),
            device=device,
            keep_params=True,
            progress=progress,
            progress_desc=f"demo: {config.label}",
            fast_path=fast_path,
            precision=precision,
        )[0]
        for config in configs
    ]
    by = {r.config.label: r for r in runs}
    detail = f"SGD lr {s.lr:g}, wd {s.weight_decay:g}, {s.epochs + 1} steps, same init"
    check = compare(
        "manual ≡ builtin",
        "torch.optim.SGD(weight_decay=wd)",
        by["manual"].params,
        by["builtin"].params,
        tolerance=0.0,
        detail=detail,
    )
    if gone := [k for k in ("manual", "builtin") if by[k].status == "diverged"]:
        why = f"{' and '.join(gone)} diverged (a non-finite loss; {detail}): no weights to compare"
        check = Check(check.name, check.reference, math.nan, math.nan, False, 0.0, False, why)
    table = decay_table(seed_init(s.dim)(s.seed), EVERYTHING).to_dict()
    table["note"] = "the article's rule: every tensor decays, biases included"
    return DemoResult(
        runs=runs,
        name="the article's experiment",
        task=data.task,
        config=asdict(s),
        data={"name": "seed-noise (random labels)", **data.meta},
        decay_table=table,
        checks={"manual_equals_builtin": check},
        seconds=time.perf_counter() - t0,
        engine=runs[0].engine,
    )
