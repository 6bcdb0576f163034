"""One configuration's memory in a batch, estimated before training, and the batches that
fit a memory budget (:func:`bytes_per_config`, :func:`plan_batches`, :func:`check_budget`).

The estimate covers the stacked weights, their gradients and the optimizer's state
(:attr:`wdlab.optimizers.OptimizerSpec.state_size`), the activations of the larger of a
training step and an evaluation pass, and the per-epoch and per-evaluation records; not the
process itself (Python, torch and the data: :data:`PROCESS_BASELINE_MB`). Streamed data
(:class:`~wdlab.data.StreamedData`) count the rows of one batch, whatever the data's size: a
step's batch is its training stream's, an evaluation's the largest batch of the streams (each
split is read batch by batch); a user's own metric also keeps each split's outputs (out × rows
× 4 bytes per configuration), which this does not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from wdlab.data import Dataset, StreamedData, TensorStream
from wdlab.data.streamed import SAMPLE
from wdlab.devices import available_memory, gib
from wdlab.errors import gist
from wdlab.inputs import Inputs, apply, shapes
from wdlab.models import ModelSpec, activations_per_example
from wdlab.optimizers import optimizer_spec
from wdlab.records import RunConfig

PROCESS_BASELINE_MB = 500  # Python + torch + wdlab + a small data set, outside the budget
# One configuration's memory in a batch, measured (bench figures in the README): bytes per
# parameter (weights, gradient, temporaries; plus 4 per optimizer-state value), per activation
# value of a training step (kept for the backward: hand-written, or autograd's graph), per
# activation value of an evaluation pass, per per-epoch record and per evaluated record (on the
# device, then as Python floats).
BYTES_PER_PARAM = 20
BYTES_PER_ACTIVATION = {"manual": 16, "autograd": 24, "eval": 8}
BYTES_PER_EPOCH_VALUE = 48
BYTES_PER_EVAL_VALUE = 32


def meta_build(spec: ModelSpec) -> torch.nn.Module:
    """The model with no memory behind it (the meta device) where that works; else a real one
    (a user's factory may need real tensors)."""
    if spec.kind != "custom":
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                return spec.build()
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            pass
    return _real(spec)


def bytes_per_config(
    spec: ModelSpec,
    data: Dataset | StreamedData,
    batch_size: int | None,
    epochs: int = 1,
    eval_every: int = 10,
    optimizer: str = "adam",
    precision: str = "fp32",
    model: torch.nn.Module | None = None,
) -> int:
    """One configuration's memory in a batch, as measured on the engine.

    It counts the weights, their gradients and the optimizer's state; the activations of the
    larger of a training step (its rows, kept for the backward) and an evaluation pass (the
    largest split); and the per-epoch and per-evaluation records. Activations are counted on one
    example (:func:`wdlab.models.activations_per_example`, on the meta device where it runs).
    ``model``: the spec's model when the caller has built it already."""
    args = (spec, data, batch_size, epochs, eval_every, optimizer, precision, model)
    return sum(memory_need(*args))


def memory_need(
    spec: ModelSpec,
    data: Dataset | StreamedData,
    batch_size: int | None,
    epochs: int = 1,
    eval_every: int = 10,
    optimizer: str = "adam",
    precision: str = "fp32",
    model: torch.nn.Module | None = None,
    device: torch.device | None = None,
    parallel: int = 1,
) -> tuple[int, int]:
    """(bytes of each configuration, bytes the batch holds once) as :func:`bytes_per_config`
    counts them: where the engine trains one configuration at a time on ``device``
    (:meth:`~wdlab.engines.base.Stacked.shares_activations`), the activations are the batch's
    once (``parallel`` times: so many side by side); elsewhere every configuration holds its
    own, and the second is 0."""
    model = meta_build(spec) if model is None else model
    n_params = sum(p.numel() for p in model.parameters())
    states = optimizer_spec(optimizer).state_size
    per_example = _activations(model, spec, data)
    step_rows, eval_rows = _rows(data, batch_size)
    chunk = spec.model_kind.engine.eval_chunk  # rows per evaluation forward, if chunked
    if chunk is not None:
        eval_rows = min(eval_rows, chunk)
    autograd = not spec.model_kind.hand_backward or precision != "fp32"
    per_step = BYTES_PER_ACTIVATION["autograd" if autograd else "manual"]
    activations = max(
        per_step * step_rows * per_example, BYTES_PER_ACTIVATION["eval"] * eval_rows * per_example
    )
    n_evals = math.ceil(epochs / max(eval_every, 1)) + 1
    own = (
        (BYTES_PER_PARAM + 4 * states) * n_params
        + BYTES_PER_EPOCH_VALUE * 2 * epochs
        + BYTES_PER_EVAL_VALUE * 8 * n_evals  # loss and metrics of each split
    )
    shared = device is not None and spec.model_kind.engine.shares_activations(model, device)
    return (own, activations * parallel) if shared else (own + activations, 0)


def planning_bytes(per_config: int, shared: int, max_memory_mb: float) -> int:
    """The bytes per configuration to plan batches with (:func:`plan_batches`) when the batch
    also holds ``shared`` bytes once: as many configurations as fit beside it."""
    if not shared:
        return per_config
    budget = max_memory_mb * 2**20
    fit = max(1, int((budget - shared) // max(per_config, 1)))
    return max(1, int(budget // fit))  # budget // this == fit (budget ≥ fit·(fit + 1) bytes)


def _rows(data: Dataset | StreamedData, batch_size: int | None) -> tuple[int, int]:
    """(rows of a training step, rows of the largest evaluation forward before chunking)."""
    if isinstance(data, StreamedData):  # one batch at a time, the training split evaluated too
        sizes = [_batch_rows(s, batch_size) for s in data.streams.values()]
        return _batch_rows(data.streams["train"], batch_size), max(sizes)
    n_train = len(data.y_train)
    minibatch = bool(batch_size) and batch_size < n_train
    step_rows = batch_size if minibatch else n_train
    eval_rows = max(len(data.y_test), len(data.y_val) if data.y_val is not None else 0)
    if minibatch:  # the training split is evaluated in a pass of its own
        eval_rows = max(eval_rows, n_train)
    return step_rows, eval_rows  # type: ignore[return-value]


def _batch_rows(stream: object, batch_size: int | None) -> int:
    """Rows of one of a stream's batches: its own batch size; an in-memory split's whole
    evaluation; else the sweep's batch size (a sampler of batches, a factory: unknown)."""
    if isinstance(stream, TensorStream):
        return max(stream.batch_size or stream.n, stream.n)
    return getattr(stream, "batch_size", None) or batch_size or SAMPLE


def _example(data: Dataset | StreamedData, flat: bool) -> Inputs:
    """One training example as the model reads it (``flat``: per row, as a built-in MLP does:
    the trainer's feed flattens signals and images for it)."""
    x = data.example if isinstance(data, StreamedData) else data.X_train[:1]
    return x.flatten(1) if flat and isinstance(x, torch.Tensor) and x.dim() > 2 else x


def _activations(model: torch.nn.Module, spec: ModelSpec, data: Dataset | StreamedData) -> int:
    """Activation values per example (on the meta device when the model is there)."""
    example = _example(data, spec.model_kind.engine.flat_inputs)
    if next(iter(model.parameters()), torch.empty(0)).is_meta:
        try:
            return activations_per_example(model, apply(lambda t: t.to("meta"), example))
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            model = _real(spec)  # a module the meta device cannot run
    try:
        return activations_per_example(model, example)
    except Exception as exc:  # the user's module and data: say which failed, in one line
        where = shapes(example)
        raise ValueError(f"the model fails on inputs of shape {where}: {gist(exc)}") from None


def _real(spec: ModelSpec) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        return spec.build()


def plan_batches(
    configs: Sequence[RunConfig],
    per_config: int,
    max_memory_mb: float,
    max_batch: int | None = None,
) -> list[list[RunConfig]]:
    """Split configurations into batches: one optimizer class each, within the budget."""
    if not max_memory_mb > 0:
        raise ValueError(f"max_memory_mb= (--max-memory) must be > 0 MB, got {max_memory_mb}")
    if max_batch is not None and max_batch < 1:  # would plan no batch, and wait forever
        raise ValueError(f"max_batch must be >= 1 (or None), got {max_batch}")
    k = max(1, int(max_memory_mb * 2**20 // max(per_config, 1)))
    if max_batch:
        k = min(k, max_batch)
    by_opt: dict[str, list[RunConfig]] = {}
    for c in configs:
        by_opt.setdefault(optimizer_spec(c.optimizer).cls_name, []).append(c)
    out = []
    for group in by_opt.values():
        out += [list(group[i : i + k]) for i in range(0, len(group), k)]
    return out


def check_budget(
    per_config: int, max_memory_mb: float, device: object = None, lanes: int = 1
) -> None:
    """A one-line ``ValueError`` when one configuration alone (``lanes`` side by side: they
    hold their activations at once) exceeds the budget, or the memory ``device`` has free (the
    host's by default; not checked where unknown)."""
    budget = max_memory_mb * 2**20
    who = "one configuration needs" if lanes == 1 else f"{lanes} configurations side by side need"
    fix = "" if lanes == 1 else f", or lower parallel={lanes}"
    if per_config > budget:
        raise ValueError(
            f"{who} about {gib(per_config)} (weights, optimizer state, activations, records), "
            f"more than max_memory_mb={max_memory_mb:g} (--max-memory); raise it{fix}, or make the "
            "model, the data or the epochs smaller"
        )
    free = available_memory(device)
    if free is not None and per_config > free:
        where = f" on {device}" if device is not None else ""
        raise ValueError(
            f"{who} about {gib(per_config)}, more than the {gib(free)} of memory free{where}"
        )
