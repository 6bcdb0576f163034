"""The trainer's loop: K configurations trained at once, one epoch after another.

Every parameter is stacked with a leading dimension K (one row per configuration), the forward
and backward run once per step for all K, and each configuration's loss is its own mean, so the
gradient of row k is exactly configuration k's gradient. A single run is a sweep of one.

The parts: the engine (:mod:`wdlab.engines`, chosen by the model kind) holds and runs the
stacked weights; the optimizer over the rows (:mod:`.rows`) is a real ``torch.optim``
optimizer with the decay driver attached; the recorder (:mod:`.recorder`) keeps the curves,
norms and diagnostics and assembles the results. One epoch: :meth:`Trainer.step` for each
(mini-)batch (forward, gradients, update), then the scheduler, the divergence check and
:meth:`Trainer.evaluate`; between epochs, rows that stop (diverged, stopped early, pruned)
leave the batch (:meth:`Trainer.stop`), and the batch's state is checkpointed when due
(:mod:`.state`). Built-in models take their gradients from a hand-written backward; custom
models and bf16 autocast use autograd.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import replace

import torch
from torch import Tensor

from wdlab.decay import surprise_warnings
from wdlab.devices import resolve_device
from wdlab.func import cuda_ids
from wdlab.tasks import get_task
from wdlab.trainer.heap import trim_heap, tune_malloc
from wdlab.trainer.plan import Plan, group_configs, order_configs
from wdlab.trainer.recorder import Recorder
from wdlab.trainer.rows import RowOptimizer
from wdlab.trainer.rowstops import RowStops
from wdlab.trainer.setup import build_engine
from wdlab.trainer.state import Cadence, Trained, capture, restore, restore_random


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return resolve_device(None)


class Trainer(RowStops):
    """One batched training of a :class:`Plan`; :meth:`run` returns one RunResult per config."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.t_start = plan, time.perf_counter()
        tune_malloc()
        self.device = resolve_device(plan.device)
        self.task = plan.task or get_task(plan.data.task)
        spec = plan.spec
        if spec.in_dim == 0:
            spec = replace(spec, in_dim=plan.data.in_dim, out_dim=plan.data.out_dim)
        self.data = plan.data.to(self.device)
        if spec.model_kind.engine.flat_inputs and self.data.X_train.dim() > 2:
            self.data = self.data.flattened()  # built-in MLPs read signals and images flat
        self.y = self.data.y_train
        self.eval_splits = {k: v for k, v in self.data.splits().items() if k != "train"}
        self.amp = plan.precision == "bf16"
        for c in plan.configs:
            name = plan.optimizer.cls_name
            for msg in surprise_warnings(c.mode, c.weight_decay, c.lr, name, dict(c.options)):
                warnings.warn(msg, UserWarning, stacklevel=3)
        self.order = order_configs(plan.configs)
        cfgs = [plan.configs[i] for i in self.order]
        groups = group_configs(cfgs, self.device)
        modes = [g.mode for g in groups]
        self.engine, table = build_engine(plan, spec, cfgs, modes, self.data, self.task)
        self.note = self.engine.note + ("; bf16 autocast" if self.amp else "")
        # a hand-written backward differentiates no loss term: l2 is applied as its gradient
        self.manual = self.engine.hand_backward and not self.amp and bool(self.task.loss_grad)
        by_gradient = set(self.engine.tensors) if self.manual else set(self.engine.by_gradient)
        self.rows = RowOptimizer(plan, self.engine, groups, table, by_gradient)
        self.recorder = Recorder(plan, cfgs, self.engine, table, self.task, self.data)
        self.recorder.watch(self.rows.optimizer, self.rows.attach)
        # models whose train and eval modes differ (BatchNorm, Dropout) are evaluated on the
        # training split in eval mode, by a pass of its own
        self.train_pass = plan.minibatch or self.engine.eval_pass
        self.pending = False  # the next full-batch forward gives the last evaluation's train
        self.epoch0, self.end = 0, plan.stop or plan.epochs  # metrics (of these weights)
        self.shuffle = torch.Generator(device="cpu").manual_seed(plan.shuffle_seed)
        self.cadence = Cadence(plan.checkpoint, plan.on_checkpoint is not None)
        if plan.start is not None:
            restore(self, plan.start)
        self.trained = self.epoch0  # epochs trained so far
        self.stop(plan.skip, "pruned")

    def run(self) -> Trained:
        """Train every epoch (to ``plan.stop``); return one RunResult per configuration, in the
        order given, with the batch's state where it paused (:class:`.state.Trained`).

        Random draws inside the model (Dropout masks) come from torch's global RNG, seeded with
        ``shuffle_seed`` for this run and restored after it: the same command gives the same
        numbers, and the caller's RNG is left alone.
        """
        plan, bar, state = self.plan, None, None
        if plan.progress:
            from tqdm import tqdm

            bar = tqdm(total=plan.epochs, desc=plan.progress_desc, unit="epoch", leave=False)
            bar.update(self.epoch0)
        # The hand-written backward needs no autograd at all: one no_grad around the loop.
        grad_off = torch.no_grad() if self.manual else contextlib.nullcontext()
        with torch.random.fork_rng(devices=cuda_ids(self.device)), grad_off:
            torch.manual_seed(plan.shuffle_seed)
            restore_random(self, plan.start)
            self.epochs(bar)
            self.record_pending()
            if self.end < plan.epochs:
                state = capture(self, self.end)
        if bar is not None:
            bar.close()
        results = self.recorder.results(self.order, self.t_start, self.note, self.end)
        return Trained(results, state, self.recorder.row_steps)

    def epochs(self, bar: object | None) -> None:
        """Every epoch: train, schedule, check divergence, evaluate; between epochs, stop rows
        and checkpoint (:meth:`between`)."""
        plan, rec = self.plan, self.recorder
        eval_set = set(plan.eval_epochs)
        for epoch in range(self.epoch0, self.end):
            if plan.minibatch:
                self.train_epoch_minibatch(epoch, self.shuffle)
            else:
                rec.epoch_loss(epoch, self.step(None, self.pending))
                self.pending = False
            rec.weight_norm(epoch)
            if self.rows.scheduler is not None:
                self.rows.scheduler.step()
            if epoch in eval_set:
                if rec.due(epoch):
                    self.stop_rows(rec.check_divergence(epoch), "diverged", epoch + 1)
                self.evaluate(with_train=self.train_pass)
                self.pending = not self.train_pass
            rec.end_epoch(epoch)
            self.trained = epoch + 1
            self.between(epoch, epoch in eval_set)
            if epoch % 100 == 99:
                trim_heap()  # keeps a long run's resident memory flat
            if bar is not None:
                bar.update(1)
            if plan.on_epoch is not None:
                plan.on_epoch(epoch)
            if not bool(rec.alive.any()):
                break  # every row stopped: nothing left to train

    def train_epoch_minibatch(self, epoch: int, shuffle: torch.Generator) -> None:
        """One pass over shuffled mini-batches; the epoch's train loss is their mean."""
        n, size = len(self.y), self.plan.batch_size
        perm = torch.randperm(n, generator=shuffle)  # on the CPU: the same order on every device
        if self.device.type == "cuda":  # pinned and asynchronous: no host sync
            perm = perm.pin_memory().to(self.device, non_blocking=True)
        epoch_loss = torch.zeros(len(self.engine), device=self.device)
        for i in range(0, n, size):
            idx = perm[i : i + size]
            epoch_loss += self.step(idx, False) * len(idx)
        self.recorder.epoch_loss(epoch, epoch_loss / n)

    def step(self, idx: Tensor | None, pending: bool) -> Tensor:
        """Forward, gradients and update on the training rows (``idx``: a mini-batch); returns
        the (K,) losses from before the update. ``pending``: also record the train metrics of
        these weights (the previous evaluation's)."""
        yb = self.y if idx is None else self.y[idx]
        if self.manual:
            out, tape = self.engine.forward_tape(idx)
            losses, dout = self.task.loss_grad(out, yb)
            if pending:  # metrics of these weights, before the backward
                self.recorder.eval_metrics("train", out, yb)
            self.engine.backward(tape, dout)
        else:
            out = self.forward("train", idx, train=True)
            losses = self.task.loss(out, yb)
            if pending:
                self.recorder.eval_metrics("train", out.detach(), yb)
            self.engine.backward_loss(self.rows.loss_term(losses))
        losses = losses.detach()
        if pending:
            self.recorder.eval_value("train_loss_eval", losses)
        self.rows.step()
        return losses

    def forward(self, split: str, idx: Tensor | None = None, train: bool = False) -> Tensor:
        """The forward pass (``train``: in training mode), under bfloat16 autocast when asked;
        outputs in float32."""
        if not self.amp:
            return self.engine.forward(split, idx=idx, train=train)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.engine.forward(split, idx=idx, train=train)
        return out.float()

    def evaluate(self, with_train: bool) -> None:
        """Metrics on every evaluation split (and, when asked, a full train pass)."""
        rec = self.recorder
        with torch.no_grad():
            for split, (_, ys) in self.eval_splits.items():
                o = self.forward(split)
                rec.eval_value(f"{split}_loss", self.task.loss(o, ys))
                rec.eval_metrics(split, o, ys)
            if with_train:
                o = self.forward("train")
                rec.eval_value("train_loss_eval", self.task.loss(o, self.y))
                rec.eval_metrics("train", o, self.y)

    def record_pending(self) -> None:
        """The train metrics of the last evaluation, if still to be recorded (after the last
        epoch, or before rows stop), from a forward pass of their own."""
        if self.pending:
            with torch.no_grad():
                out = self.forward("train")
                self.recorder.eval_value("train_loss_eval", self.task.loss(out, self.y))
                self.recorder.eval_metrics("train", out, self.y)
            self.pending = False
