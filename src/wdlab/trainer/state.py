"""The state of a batch in training: everything that makes its next epoch, as tensors and
plain data (``torch.save`` writes it, ``torch.load(weights_only=True)`` reads it back).

:func:`capture` takes it between two epochs: the engine's rows (weights, buffers, what the
engine derives from the initial weights), the optimizer's, the decay's and the lr scheduler's
state, the records so far (curves, which rows stopped and why), the random states (torch's
global generator, which Dropout draws from, CUDA's, and the mini-batch order's of tensors held
in memory; a stream's epoch depends only on its number) and the epochs trained.
:func:`restore` continues it in a trainer built from the same plan: the same configurations in
the same order, so the same rows and parameter groups. Continued, it gives the numbers the
uninterrupted training gives, bit for bit on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from wdlab.func import cuda_ids
from wdlab.records import RunResult
from wdlab.trainer.plan import check_checkpoint

Trainer = Any  # wdlab.trainer.loop.Trainer (which imports this module)

FORMAT = 1  # the layout of a state; another one is refused
CHECKPOINT_SECONDS = 300.0  # "auto": a checkpoint after every this many seconds of training


class Trained(list):
    """A batch's results (one RunResult per configuration, in order), with ``state``: the
    batch's state where it paused at a rung (else None), and ``row_steps``: the optimizer
    steps it took, summed over the rows that took them."""

    state: dict[str, Any] | None = None
    row_steps: int = 0

    def __init__(self, results: list[RunResult], state: dict | None, row_steps: int) -> None:
        super().__init__(results)
        self.state, self.row_steps = state, row_steps


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it on the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def capture(trainer: Trainer, epochs: int) -> dict[str, Any]:
    """The batch's state after ``epochs`` epochs (call between two epochs, inside the run's
    random-state fork). On the CPU it shares memory with the trainer: write it (or copy it)
    before the next step."""
    device = trainer.device
    shuffle = getattr(trainer.feed, "shuffle", None)  # held tensors: the mini-batch order
    rng = {
        "torch": torch.get_rng_state(),
        "shuffle": None if shuffle is None else shuffle.get_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = [torch.cuda.get_rng_state(d) for d in cuda_ids(device)]
    return _cpu(
        {
            "format": FORMAT,
            "epoch": epochs,
            "configs": [c.to_dict() for c in trainer.plan.configs],
            "engine": trainer.engine.state(),
            "rows": trainer.rows.state(),
            "recorder": trainer.recorder.state(),
            "pending": trainer.pending,
            "rng": rng,
            "seconds": time.perf_counter() - trainer.t_start,  # trained so far (resumed: too)
        }
    )


def restore(trainer: Trainer, state: Mapping[str, Any]) -> None:
    """Continue ``state`` (of a batch of the plan's configurations, in its order) in a freshly
    built ``trainer``: its records, then the rows still training, then their optimizer and
    decay state. A state of another layout or of other configurations is refused
    (``ValueError``, one line)."""
    check(state, [c.to_dict() for c in trainer.plan.configs])
    rec = trainer.recorder
    rec.load_state(state["recorder"])
    kept = torch.nonzero(rec.alive).flatten()
    trainer.engine.load_state(state["engine"])
    trainer.rows.keep(kept.tolist())  # rebuilt over the engine's new rows
    trainer.rows.load_state(state["rows"])
    rec.watch(trainer.rows.optimizer, trainer.rows.attach)
    trainer.pending = bool(state["pending"])
    trainer.epoch0 = int(state["epoch"])
    trainer.t_start -= float(state.get("seconds", 0.0))  # a run's seconds: every session's


KEYS = ("format", "epoch", "configs", "engine", "rows", "recorder", "pending", "rng")


def check(state: object, configs: list[dict] | None = None) -> None:
    """A one-line ``ValueError`` unless ``state`` is a batch state of this layout (and of
    ``configs``, in this order, where given)."""
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ValueError("not a wdlab batch state of this version")
    missing = [k for k in KEYS if k not in state]
    if missing or not isinstance(state["configs"], list) or not state["configs"]:
        raise ValueError(f"a batch state without {(missing or ['configurations'])[0]}")
    if configs is not None and state["configs"] != configs:
        raise ValueError("the batch state holds other configurations than this batch")


def restore_random(trainer: Trainer, state: Mapping[str, Any] | None) -> None:
    """The random states of ``state`` (inside the run's fork, after its seeding)."""
    if state is None:
        return
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    shuffle = getattr(trainer.feed, "shuffle", None)
    if shuffle is not None and rng["shuffle"] is not None:
        shuffle.set_state(rng["shuffle"])
    for d, s in zip(cuda_ids(trainer.device), rng.get("cuda", []), strict=False):
        torch.cuda.set_rng_state(s, d)


class Cadence:
    """When the next checkpoint is due: every N epochs (an int), after every
    :data:`CHECKPOINT_SECONDS` of training (``"auto"``), or never (``"off"``, or no
    receiver)."""

    def __init__(self, every: int | str, enabled: bool) -> None:
        self.every = check_checkpoint(every, "checkpoint") if enabled else "off"
        self.last = time.monotonic()

    def due(self, epochs: int) -> bool:
        """Whether a checkpoint is due after ``epochs`` epochs."""
        if self.every == "off":
            return False
        if isinstance(self.every, int):
            return epochs % self.every == 0
        now = time.monotonic()
        if now - self.last < CHECKPOINT_SECONDS:
            return False
        self.last = now
        return True
