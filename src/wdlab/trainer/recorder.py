"""The trainer's records: curves, weight norms, diagnostics, divergence, and the results.

Everything is kept on the device, one (K,) row of values per epoch or evaluation, and moved to
the host once, at the end (:meth:`Recorder.results`). A configuration whose train loss diverges
is stopped (:meth:`Recorder.check_divergence`): from its first diverged epoch on, its weights
and gradients are held at zero (:meth:`Recorder.watch`), and its curves end there.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from wdlab.decay import DecayTable
from wdlab.diagnostics import make as make_diagnostic
from wdlab.engines import Engine
from wdlab.records import Curves, RunConfig, RunResult
from wdlab.tasks import Task
from wdlab.timescale import timescales
from wdlab.trainer.feed import Feed
from wdlab.trainer.plan import Plan

DIVERGENCE_CHECK_EVERY = 100  # epochs between divergence checks (and at the end)
BLOWUP = 1000.0  # a train loss above BLOWUP × max(first epoch's loss, 1) has diverged


class Recorder:
    """The records of one batched training of ``configs`` (row k: configuration k)."""

    def __init__(
        self,
        plan: Plan,
        configs: Sequence[RunConfig],
        engine: Engine,
        table: DecayTable,
        task: Task,
        feed: Feed,
    ) -> None:
        self.plan, self.configs, self.engine = plan, list(configs), engine
        self.task, self.feed = task, feed
        device, epochs, K = feed.device, plan.epochs, len(configs)
        self.train_loss = torch.full((epochs, K), math.nan, device=device)
        decays = {r["name"]: r["decays"] for r in table.rows}
        tensors = [n for n in engine.tensors if decays[engine.parameter(n)]]
        # Σ‖w‖² is recorded as a few (K,) parts per epoch and combined at the end
        self.norm = engine.norm_probe(sorted({engine.parameter(n) for n in tensors}))
        parts = self.norm.parts
        self.norm_parts = torch.full((epochs, parts, K), math.nan, device=device) if parts else None
        self.ev: dict[str, list[Tensor]] = {}
        self.alive = torch.ones(K, dtype=torch.bool, device=device)
        self.all_alive = True
        self.diverged_at: list[int | None] = [None] * K
        self.checked = 0  # epochs before this one have been checked for divergence
        self.optimizer: torch.optim.Optimizer | None = None  # the one watch() hooks onto
        # M of τ_epoch: steps per epoch (a stream without len(): its first epoch's, counted)
        self.iters_per_epoch = plan.steps_per_epoch
        weights = [n for n in tensors if engine.tensors[n].dim() >= 3]
        self.diagnostics = [
            make_diagnostic(d, weights, self.configs, plan.optimizer) for d in plan.diagnostics
        ]

    # -- around every optimizer step -----------------------------------------------------------

    def watch(self, optimizer: torch.optim.Optimizer, attach_decay: Callable[[], None]) -> None:
        """Hook onto ``optimizer``'s step around the decay driver (``attach_decay`` hooks it
        on; hooks run in the order they are registered): the diagnostics see the weights before
        the update (after the decay's points before it) and after it (before a mode that acts
        after the update, ``cautious``, does). Once a row diverges, its gradients and weights
        are held at zero around every step (:meth:`check_divergence` adds those hooks)."""
        self.optimizer = optimizer
        if self.diagnostics:
            optimizer.register_step_post_hook(self._diagnostics_after)
        attach_decay()
        if self.diagnostics:
            optimizer.register_step_pre_hook(self._diagnostics_before)

    def _diagnostics_before(self, opt: object, args: tuple, kwargs: dict) -> None:
        for d in self.diagnostics:
            d.before_step(self.engine.tensors)

    def _diagnostics_after(self, opt: object, args: tuple, kwargs: dict) -> None:
        for d in self.diagnostics:
            d.after_step(self.engine.tensors)

    def _zero_dead_grads(self, opt: object, args: tuple, kwargs: dict) -> None:
        for t in self.engine.tensors.values():
            t.grad[~self.alive] = 0

    def _zero_dead_weights(self, opt: object, args: tuple, kwargs: dict) -> None:
        for t in self.engine.tensors.values():
            t[~self.alive] = 0

    # -- records -------------------------------------------------------------------------------

    def eval_value(self, name: str, values: Tensor) -> None:
        """Keep one evaluation's (K,) values of ``name``."""
        self.ev.setdefault(name, []).append(values.detach())

    def eval_metrics(self, split: str, out: Tensor, ys: Tensor) -> None:
        """Metrics computed from outputs (accuracy); loss-derived ones come at the end."""
        if self.task.eval_metrics is not None:
            for m, v in self.task.eval_metrics(out, ys).items():
                self.eval_value(f"{split}_{m}", v)

    def weight_norm(self, epoch: int) -> None:
        """The decayed weights' norm after ``epoch``'s update (as the engine's parts)."""
        if self.norm_parts is not None:
            with _no_grad():
                self.norm.write(self.norm_parts[epoch])

    def end_epoch(self, epoch: int) -> None:
        """The diagnostics' values of this epoch."""
        for d in self.diagnostics:
            d.end_epoch(epoch)

    def check_divergence(self, upto: int) -> None:
        """Stop every configuration whose train loss diverged up to epoch ``upto``: NaN, inf,
        or blown up while finite (above ``BLOWUP`` × max(its first epoch's loss, 1)).

        Checked every ~100 epochs (at an evaluation epoch) and at the end rather than every
        step (no per-step sync): rows never mix, so a diverged row harms no other meanwhile; it
        is then marked ``diverged`` at its first diverged epoch, and its weights and gradients
        are held at zero from there on.
        """
        block = self.train_loss[self.checked : upto + 1]
        limit = BLOWUP * self.train_loss[0].clamp_min(1.0)
        healthy = torch.isfinite(block) & (block <= limit)
        bad = ~healthy.all(0) & self.alive
        if bool(bad.any()):
            first = (~healthy).float().argmax(0)
            for k in torch.nonzero(bad).flatten().tolist():
                self.diverged_at[k] = self.checked + int(first[k])
            self.alive = self.alive & ~bad
            if self.all_alive and self.optimizer is not None:  # the first: hold dead rows
                self.optimizer.register_step_pre_hook(self._zero_dead_grads)
                self.optimizer.register_step_post_hook(self._zero_dead_weights)
            self.all_alive = False
            with torch.no_grad():
                for t in self.engine.tensors.values():
                    t[~self.alive] = 0
        self.checked = upto + 1

    def due(self, epoch: int) -> bool:
        """Whether the divergence check is due after ``epoch`` (an evaluation epoch)."""
        last = epoch == self.plan.epochs - 1
        return last or epoch + 1 - self.checked >= DIVERGENCE_CHECK_EVERY

    # -- results -------------------------------------------------------------------------------

    def results(self, order: Sequence[int], t_start: float, note: str) -> list[RunResult]:
        """One RunResult per configuration, in the order given (row ``row`` is configuration
        ``order[row]``), from the device records."""
        plan = self.plan
        seconds = time.perf_counter() - t_start
        rows_train_loss = self.train_loss.cpu().t().tolist()  # one .tolist() per curve
        if self.norm_parts is None:
            weight_norm = torch.zeros(plan.epochs, len(self.configs))
        else:
            weight_norm = self.norm.combine(self.norm_parts).clamp_min(0).sqrt().cpu()
        rows_weight_norm = weight_norm.t().tolist()
        rows_ev = {k: v.t().cpu().tolist() for k, v in self.stacked_evals().items()}
        results: list[RunResult | None] = [None] * len(self.configs)
        for row, orig in enumerate(order):
            series = {"train_loss": rows_train_loss[row], "weight_norm": rows_weight_norm[row]}
            series |= {k: v[row] for k, v in rows_ev.items()}
            for d in self.diagnostics:
                series |= d.series(row)
            curves = Curves(list(range(plan.epochs)), list(plan.eval_epochs), series)
            results[orig] = self._result(row, curves, rows_ev, seconds, note)
        return results  # type: ignore[return-value]

    def _result(
        self, row: int, curves: Curves, rows_ev: dict, seconds: float, note: str
    ) -> RunResult:
        final = {k: curves[k][-1] for k in rows_ev}
        final["train_loss"] = final.pop("train_loss_eval")
        final["weight_norm"] = curves["weight_norm"][-1]
        taus = timescales(self.configs[row], self.iters_per_epoch or 1)
        final |= taus
        status, cut = "done", self.diverged_at[row]
        if cut is not None:
            status = "diverged"
            curves.cut(cut)
            final = {k: math.nan for k in final} | taus
        return RunResult(
            config=self.configs[row],
            curves=curves,
            final=final,
            status=status,
            diverged_epoch=cut,
            best=_best(curves),
            params=self.engine.weights(row) if self.plan.keep_params else None,
            seconds=seconds,
            engine=note,
        )

    def stacked_evals(self) -> dict[str, Tensor]:
        """Every evaluated series as (n_eval, K), with loss-derived metrics (RMSE, R²)."""
        stacked = {k: torch.stack(v).float() for k, v in self.ev.items()}
        if self.task.loss_metrics is not None:
            for split in ("train", *self.feed.splits):
                key = "train_loss_eval" if split == "train" else f"{split}_loss"
                if key in stacked:
                    var = self.feed.target_var(split)
                    for m, v in self.task.loss_metrics(stacked[key], var).items():
                        stacked[f"{split}_{m}"] = v
        return stacked


def _no_grad() -> contextlib.AbstractContextManager:
    """``torch.no_grad()``, or nothing where gradients are off already (the hand-written
    backward's loop): one context less per step."""
    return torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()


def _best(curves: Curves) -> dict[str, float]:
    """The lowest finite validation (else test) loss and its epoch."""
    key = "val_loss" if "val_loss" in curves else "test_loss"
    values = curves.get(key)
    finite = [(v, i) for i, v in enumerate(values or []) if math.isfinite(v)]
    if not finite:
        return {}
    v, i = min(finite)
    return {"metric": key, "value": v, "epoch": curves["eval_epoch"][i]}
