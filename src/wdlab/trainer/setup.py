"""Setting up a batched training: every configuration's initial weights, stacked row by row,
which tensors decay, and the engine that holds and runs them (chosen by the model kind)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from wdlab.decay import DecayTable, Mode, decay_table
from wdlab.engines import Engine, Setup
from wdlab.func import stack_state, tied_names
from wdlab.inputs import call
from wdlab.models import ModelSpec, check_module
from wdlab.records import RunConfig
from wdlab.tasks import Task
from wdlab.trainer.feed import Feed
from wdlab.trainer.plan import Plan
from wdlab.usercode import check_trainable
from wdlab.zerograd import PROBE_ROWS, engine_note, noise_gradients


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
    feed: Feed,
    task: Task,
) -> tuple[Engine, DecayTable]:
    """The engine over the configurations' initial weights (one module per distinct seed, row
    k holding configuration k's), and the decay table of the model."""
    device = feed.device
    init = plan.init or default_init(spec)
    modules: dict[int, nn.Module] = {}
    for c in configs:
        if c.seed not in modules:
            modules[c.seed] = check_trainable(check_module(init(c.seed), c.seed))
    template = modules[configs[0].seed]
    table = decay_table(template, plan.rule)
    ties = tied_names(template)
    rows = [modules[c.seed] for c in configs]
    y = feed.y
    setup = Setup(
        template.to(device),
        stack_state(rows, device, nn.Module.named_parameters),
        feed.X,
        feed.eval_X,
        stack_state(rows, device),
        optimizer=plan.optimizer,
        modes=tuple(modes),
        full_batch=not feed.minibatch,
        reads_weights=bool(plan.diagnostics) or plan.clip_grad_norm is not None,
        fast_path=plan.fast_path,
        probe=None if y is None else (lambda out, idx: task.loss(out, y[idx])),
        ties=ties,
        parallel=plan.parallel,
        channels_last=plan.channels_last,
        autocast=plan.precision == "bf16",
        frozen=frozenset(n for n, p in template.named_parameters() if not p.requires_grad),
    )
    engine = spec.model_kind.make_engine(spec, setup)
    if not engine.flat_inputs:  # modules wdlab did not write: say which gradients are noise
        engine.note += zero_grad_note(template, feed, task)
    return engine, table


def zero_grad_note(template: nn.Module, feed: Feed, task: Task) -> str:
    """The engine text naming parameters whose float32 gradient is rounding noise
    (:mod:`wdlab.zerograd`), from two batches of training rows; '' when there are none."""
    batches = feed.probe_batches(PROBE_ROWS)
    if not batches:
        return ""
    found = noise_gradients(
        template,
        batches,
        lambda out, yb: task.loss(out.unsqueeze(0), yb).sum(),
        call,
    )
    return engine_note(found)
