"""The trainer's loop: K configurations trained at once, one epoch after another.

Every parameter is stacked with a leading dimension K (one row per configuration), the forward
and backward run once per step for all K, and each configuration's loss is its own mean, so the
gradient of row k is exactly configuration k's gradient. A single run is a sweep of one.

The parts: the engine (:mod:`wdlab.engines`, chosen by the model kind) holds and runs the
stacked weights; the optimizer over the rows (:mod:`.rows`) is a real ``torch.optim``
optimizer with the decay driver attached; the recorder (:mod:`.recorder`) keeps the curves,
norms and diagnostics, stops diverged rows and assembles the results. One epoch:
:meth:`Trainer.step` for each (mini-)batch (forward, gradients, update), then the scheduler,
the divergence check and :meth:`Trainer.evaluate`; the batches come from the feed (:mod:`.feed`:
tensors held in memory, or the user's streams). Built-in models take their gradients from a
hand-written backward; custom models, bf16 autocast and gradient clipping use autograd.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import torch
from torch import Tensor

from wdlab.decay import surprise_warnings
from wdlab.devices import resolve_device
from wdlab.func import cuda_ids
from wdlab.records import RunResult
from wdlab.tasks import get_task
from wdlab.trainer.clipping import clip_rows
from wdlab.trainer.feed import Rows, evaluate, feed_for
from wdlab.trainer.heap import trim_heap, tune_malloc
from wdlab.trainer.plan import Plan, group_configs, order_configs
from wdlab.trainer.recorder import Recorder
from wdlab.trainer.rows import RowOptimizer
from wdlab.trainer.schedules import parse_schedule
from wdlab.trainer.setup import build_engine


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return resolve_device(None)


class Trainer:
    """One batched training of a :class:`Plan`; :meth:`run` returns one RunResult per config."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.t_start = plan, time.perf_counter()
        tune_malloc()
        self.device = resolve_device(plan.device)
        self.task = plan.task or get_task(plan.data.task)
        spec, self.feed = feed_for(plan, self.device)  # the data path: held or streamed
        self.amp = plan.precision == "bf16"
        for c in plan.configs:
            name = plan.optimizer.cls_name
            for msg in surprise_warnings(c.mode, c.weight_decay, c.lr, name, dict(c.options)):
                warnings.warn(msg, UserWarning, stacklevel=3)
        self.order = order_configs(plan.configs)
        cfgs = [plan.configs[i] for i in self.order]
        groups = group_configs(cfgs, self.device)
        modes = [g.mode for g in groups]
        self.engine, table = build_engine(plan, spec, cfgs, modes, self.feed, self.task)
        self.note = self.engine.note + ("; bf16 autocast" if self.amp else "")
        # a hand-written backward takes l2 as its gradient; clipping, autograd's (l2 in them)
        hand = self.engine.hand_backward and not self.amp and bool(self.task.loss_grad)
        self.manual = hand and plan.clip_grad_norm is None
        by_gradient = set(self.engine.tensors) if self.manual else set(self.engine.by_gradient)
        self.rows = RowOptimizer(plan, self.engine, groups, table, by_gradient)
        self.recorder = Recorder(plan, cfgs, self.engine, table, self.task, self.feed)
        self.recorder.watch(self.rows.optimizer, self.rows.attach)
        per_step = parse_schedule(plan.schedule)[0].per_step
        self.step_schedule = self.rows.scheduler is not None and per_step
        self.steps_left = plan.steps  # None: every batch of every epoch
        # mini-batches, or modes that differ (BatchNorm, Dropout): a train pass in eval mode
        self.train_pass = self.feed.minibatch or self.engine.eval_pass

    def run(self) -> list[RunResult]:
        """Train every epoch; return one RunResult per configuration, in the order given.

        Random draws inside the model (Dropout masks) come from torch's global RNG, seeded with
        ``shuffle_seed`` for this run and restored after it: the same command gives the same
        numbers, and the caller's RNG is left alone.
        """
        plan, bar = self.plan, None
        if plan.progress:
            from tqdm import tqdm

            bar = tqdm(total=plan.epochs, desc=plan.progress_desc, unit="epoch", leave=False)
        # The hand-written backward needs no autograd at all: one no_grad around the loop.
        grad_off = torch.no_grad() if self.manual else contextlib.nullcontext()
        with torch.random.fork_rng(devices=cuda_ids(self.device)), grad_off:
            torch.manual_seed(plan.shuffle_seed)
            pending = self.epochs(bar)
        self.finish(pending)
        if bar is not None:
            bar.close()
        return self.recorder.results(self.order, self.t_start, self.note)

    def epochs(self, bar: object | None) -> bool:
        """Every epoch: train, schedule, check divergence, evaluate. Returns whether the train
        metrics of the last evaluation are still to be recorded."""
        plan, rec = self.plan, self.recorder
        eval_set = set(plan.eval_epochs)
        pending = False  # the next full-batch forward gives the train metrics of these weights
        for epoch in range(plan.epochs):
            if self.feed.minibatch:
                self.train_epoch_minibatch(epoch)
            else:
                rec.train_loss[epoch] = self.step(next(self.feed.epoch(epoch)), pending)
                pending = False
            rec.weight_norm(epoch)
            if self.rows.scheduler is not None and not self.step_schedule:
                self.rows.scheduler.step()
            if epoch in eval_set:
                if rec.due(epoch):
                    rec.check_divergence(epoch)
                self.evaluate(with_train=self.train_pass)
                pending = not self.train_pass
            rec.end_epoch(epoch)
            if epoch % 100 == 99:
                trim_heap()  # keeps a long run's resident memory flat
            if bar is not None:
                bar.update(1)
            if plan.on_epoch is not None:
                plan.on_epoch(epoch)
        return pending

    def train_epoch_minibatch(self, epoch: int) -> None:
        """One pass over the epoch's mini-batches; the epoch's train loss is their mean,
        weighted by their rows."""
        epoch_loss = torch.zeros(len(self.order), device=self.device)
        n = steps = 0
        for rows in self.feed.epoch(epoch):
            epoch_loss += self.step(rows, False) * rows.n
            n, steps = n + rows.n, steps + 1
            if self.steps_left is not None:
                self.steps_left -= 1
                if self.steps_left == 0:  # steps=: the last epoch ends here
                    break
        self.recorder.train_loss[epoch] = epoch_loss / max(n, 1)
        if self.recorder.iters_per_epoch is None:
            self.recorder.iters_per_epoch = steps

    def step(self, rows: Rows, pending: bool) -> Tensor:
        """Forward, gradients and update on one batch of training rows; returns the (K,)
        losses from before the update. ``pending``: also record the train metrics of these
        weights (the previous evaluation's)."""
        yb = rows.y
        if self.manual:
            out, tape = self.engine.forward_tape(rows.idx, rows.x)
            losses, dout = self.task.loss_grad(out, yb)
            if pending:  # metrics of these weights, before the backward
                self.recorder.eval_metrics("train", out, yb)
            self.engine.backward(tape, dout)
        else:
            out = self.forward(rows, train=True)
            losses = self.task.loss(out, yb)
            if pending:
                self.recorder.eval_metrics("train", out.detach(), yb)
            self.engine.backward_loss(self.rows.loss_term(losses))
        losses = losses.detach()
        if pending:
            self.recorder.eval_value("train_loss_eval", losses)
        if self.plan.clip_grad_norm is not None:
            clip_rows(self.engine.tensors.values(), self.plan.clip_grad_norm)
        self.rows.step()
        if self.step_schedule:
            self.rows.scheduler.step()
        return losses

    def forward(self, rows: Rows, train: bool = False) -> Tensor:
        """The forward pass on a batch (``train``: in training mode), under bfloat16 autocast
        when asked; outputs in float32."""
        if not self.amp:
            return self.engine.forward(rows.split, rows.idx, train, rows.x)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.engine.forward(rows.split, rows.idx, train, rows.x).float()

    def evaluate(self, with_train: bool) -> None:
        """Metrics on every evaluation split (and, when asked, a train pass in eval mode)."""
        with torch.no_grad():
            for split in self.feed.splits:
                self.evaluate_split(split, f"{split}_loss")
            if with_train:
                self.evaluate_split("train", "train_loss_eval")

    def evaluate_split(self, split: str, loss_key: str) -> None:
        """One split's loss (as ``loss_key``) and metrics, over its batches."""
        values = evaluate(self.feed.evaluation(split), self.forward, self.task)
        for m, v in values.items():
            self.recorder.eval_value(loss_key if m == "loss" else f"{split}_{m}", v)

    def finish(self, pending: bool) -> None:
        """After the last epoch: the train metrics still pending (of the final weights)."""
        if pending:
            with torch.no_grad():
                self.evaluate_split("train", "train_loss_eval")
