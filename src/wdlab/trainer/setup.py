"""Setting up a batched training: every configuration's initial weights, stacked row by row,
which tensors decay, and the engine that holds and runs them (chosen by the model kind)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wdlab.data import Dataset
from wdlab.decay import DecayTable, Mode, decay_table
from wdlab.engines import Engine, Setup
from wdlab.func import stack_state, tied_names
from wdlab.models import ModelSpec, check_module
from wdlab.records import RunConfig
from wdlab.tasks import Task
from wdlab.trainer.plan import Plan
from wdlab.zerograd import engine_note, noise_gradients, probe_batches


def default_init(spec: ModelSpec) -> Callable[[int], nn.Module]:
    """Initial weights for a seed: ``torch.manual_seed(seed)`` then ``spec.build(seed)``."""

    def init(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return spec.build(seed)

    return init


def build_engine(
    plan: Plan,
    spec: ModelSpec,
    configs: Sequence[RunConfig],
    modes: Sequence[Mode],
    data: Dataset,
    task: Task,
) -> tuple[Engine, DecayTable]:
    """The engine over the configurations' initial weights (one module per distinct seed, row
    k holding configuration k's), and the decay table of the model."""
    device = data.X_train.device
    init = plan.init or default_init(spec)
    modules: dict[int, nn.Module] = {}
    for c in configs:
        if c.seed not in modules:
            modules[c.seed] = check_module(init(c.seed), c.seed)
    template = modules[configs[0].seed]
    table = decay_table(template, plan.rule)
    ties = tied_names(template)
    rows = [modules[c.seed] for c in configs]
    y = data.y_train
    setup = Setup(
        template.to(device),
        stack_state(rows, device, nn.Module.named_parameters),
        data.X_train,
        {k: v[0] for k, v in data.splits().items() if k != "train"},
        stack_state(rows, device),
        optimizer=plan.optimizer,
        modes=tuple(modes),
        full_batch=not plan.minibatch,
        reads_weights=bool(plan.diagnostics),
        fast_path=plan.fast_path,
        probe=lambda out, idx: task.loss(out, y[idx]),
        ties=ties,
    )
    engine = spec.model_kind.make_engine(spec, setup)
    if not engine.flat_inputs:  # modules wdlab did not write: say which gradients are noise
        engine.note += zero_grad_note(template, data, task)
    return engine, table


def zero_grad_note(template: nn.Module, data: Dataset, task: Task) -> str:
    """The engine text naming parameters whose float32 gradient is rounding noise
    (:mod:`wdlab.zerograd`), from two batches of training rows; '' when there are none."""
    found = noise_gradients(
        template,
        probe_batches(data.X_train, data.y_train),
        lambda out, yb: task.loss(out.unsqueeze(0), yb).sum(),
    )
    return engine_note(found)
