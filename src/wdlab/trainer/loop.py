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
(:mod:`.state`). The batches come from the feed (:mod:`.feed`: tensors held in memory, or the
user's streams); it feeds each batch to the rows still training. Built-in models take their
gradients from a hand-written backward; custom models, bf16 autocast and gradient clipping use
autograd.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import Tensor

from wdlab.decay import surprise_warnings
from wdlab.devices import resolve_device
from wdlab.func import cuda_ids
from wdlab.progress import progress_bar
from wdlab.tasks import get_task
from wdlab.trainer.clipping import clip_rows
from wdlab.trainer.feed import Rows, evaluate, feed_for
from wdlab.trainer.heap import trim_heap, tune_malloc
from wdlab.trainer.plan import Plan, group_configs, order_configs
from wdlab.trainer.recorder import Recorder
from wdlab.trainer.rows import RowOptimizer
from wdlab.trainer.rowstops import RowStops
from wdlab.trainer.schedules import parse_schedule
from wdlab.trainer.setup import build_engine
from wdlab.trainer.state import Cadence, Trained, capture, restore, restore_random
from wdlab.warn import warn_user


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
        spec, self.feed = feed_for(plan, self.device)  # the data path: held or streamed
        self.amp = plan.precision == "bf16"
        name, said = plan.optimizer.cls_name, set()  # each once: not again for every seed
        for c in plan.configs:  # lr-wd read at the weight-decay schedule's peak, if any
            args = (c.mode, c.weight_decay, c.lr, name, dict(c.options), plan.wd_schedule)
            for msg in surprise_warnings(*args):
                if msg not in said:
                    said.add(msg)
                    warn_user(msg)
        self.order = order_configs(plan.configs)
        cfgs = [plan.configs[i] for i in self.order]
        groups = group_configs(cfgs, self.device)
        modes = [g.mode for g in groups]
        self.engine, table = build_engine(plan, spec, cfgs, modes, self.feed, self.task)
        self.note = self.engine.note + ("; bf16 autocast" if self.amp else "")
        if plan.parallel > 1 and self.engine.lanes == 1:
            self.note += f"; parallel={plan.parallel} unused (not one after another on the CPU)"
        if plan.channels_last and not self.engine.takes_channels_last:
            self.note += "; channels_last unused (a built-in model)"
        # a hand-written backward takes l2 as its gradient; clipping, autograd's (l2 in them)
        hand = self.engine.hand_backward and not self.amp and bool(self.task.loss_grad)
        self.manual = hand and plan.clip_grad_norm is None
        by_gradient = set(self.engine.tensors) if self.manual else set(self.engine.by_gradient)
        self.rows = RowOptimizer(plan, self.engine, groups, table, by_gradient)
        self.recorder = Recorder(plan, cfgs, self.engine, table, self.task, self.feed)
        self.recorder.watch(self.rows.optimizer, self.rows.attach)
        per_step = parse_schedule(plan.schedule)[0].per_step
        self.step_schedule = self.rows.scheduler is not None and per_step
        # mini-batches, or modes that differ (BatchNorm, Dropout): a train pass in eval mode
        self.train_pass = self.feed.minibatch or self.engine.eval_pass
        self.pending = False  # the next full-batch forward gives the last evaluation's train
        self.epoch0, self.end = 0, plan.stop or plan.epochs  # metrics (of these weights)
        self.cadence = Cadence(plan.checkpoint, plan.on_checkpoint is not None)
        if plan.start is not None:
            restore(self, plan.start)
        self.trained = self.epoch0  # epochs trained so far
        # steps=: the steps still to train (None: every batch of every epoch)
        self.steps_left = (
            None if plan.steps is None else plan.steps - self.epoch0 * (plan.steps_per_epoch or 0)
        )
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
            bar = progress_bar(plan.epochs, plan.progress_desc, "epoch")
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
        # the epochs trained: self.end, or fewer where every row stopped before it
        results = self.recorder.results(self.order, self.t_start, self.note, self.trained)
        return Trained(results, state, self.recorder.row_steps)

    def epochs(self, bar: object | None) -> None:
        """Every epoch: train, schedule, check divergence, evaluate; between epochs, stop rows
        and checkpoint (:meth:`between`)."""
        plan, rec = self.plan, self.recorder
        eval_set = set(plan.eval_epochs)
        for epoch in range(self.epoch0, self.end):
            if self.feed.minibatch:
                self.train_epoch_minibatch(epoch)
            else:
                rec.epoch_loss(epoch, self.step(next(self.feed.epoch(epoch)), self.pending))
                self.pending = False
            rec.weight_norm(epoch)
            if self.rows.scheduler is not None and not self.step_schedule:
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
            if rec.index is not None and len(rec.index) == 0:
                break  # every row stopped: nothing left to train (no tensor op per epoch)

    def train_epoch_minibatch(self, epoch: int) -> None:
        """One pass over the epoch's mini-batches; the epoch's train loss is their mean,
        weighted by their rows."""
        epoch_loss = torch.zeros(len(self.engine), device=self.device)
        n = steps = 0
        for rows in self.feed.epoch(epoch):
            epoch_loss += self.step(rows, False) * rows.n
            n, steps = n + rows.n, steps + 1
            if self.steps_left is not None:
                self.steps_left -= 1
                if self.steps_left == 0:  # steps=: the last epoch ends here
                    break
        self.recorder.epoch_loss(epoch, epoch_loss / max(n, 1), steps)
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
        elif self.engine.one_at_a_time:  # one configuration's activations held at a time
            out, losses = self.engine.train_each(
                rows.idx, rows.x, lambda o: self.task.loss(o, yb), self._autocast
            )
            if pending:
                self.recorder.eval_metrics("train", out, yb)
            term = self.rows.loss_term(torch.zeros(1, device=self.device))  # l2's, if any
            if term.requires_grad:
                term.backward()
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

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast where asked (``precision="bf16"``), else nothing."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def forward(self, rows: Rows, train: bool = False) -> Tensor:
        """The forward pass on a batch (``train``: in training mode), under bfloat16 autocast
        when asked; outputs in float32."""
        with self._autocast():
            out = self.engine.forward(rows.split, rows.idx, train, rows.x)
        return out.float() if self.amp else out

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

    def record_pending(self) -> None:
        """The train metrics of the last evaluation, if still to be recorded (after the last
        epoch, or before rows stop), from a forward pass of their own."""
        if self.pending:
            with torch.no_grad():
                self.evaluate_split("train", "train_loss_eval")
            self.pending = False
