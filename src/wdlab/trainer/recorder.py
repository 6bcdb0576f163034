"""The trainer's records: curves, weight norms, diagnostics, divergence, and the results.

Everything is kept on the device, one (K,) row of values per epoch or evaluation (K: the
batch's configurations), and moved to the host once, at the end (:meth:`Recorder.results`).

Rows stop: a configuration whose train loss diverges (:meth:`Recorder.check_divergence`), one
whose validation metric stopped improving (:meth:`Recorder.no_improvement`, early stopping), one
pruned by successive halving or by Optuna. The trainer then drops it from the engine and the
optimizer (they compute the rows still training: :attr:`Recorder.index`), and the records keep
its values up to there (NaN after: its curves end where it stopped).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from wdlab.curves import is_per_epoch
from wdlab.decay import DecayTable
from wdlab.diagnostics import make as make_diagnostic
from wdlab.engines import Engine
from wdlab.records import Curves, RunConfig, RunResult
from wdlab.tasks import Task
from wdlab.timescale import timescales
from wdlab.trainer.feed import Feed
from wdlab.trainer.plan import EarlyStop, Plan

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
        self.index: Tensor | None = None  # the rows still training, where some stopped
        self.diverged_at: list[int | None] = [None] * K
        self.ended: list[tuple[str, int] | None] = [None] * K  # (why, epochs trained)
        self.params: dict[int, dict[str, Tensor]] = {}  # stopped rows' weights (keep_params)
        # early stopping (keep_params): each row's weights at its best evaluation so far
        self.best_params: dict[int, dict[str, Tensor]] = {}
        self.checked = 0  # epochs before this one have been checked for divergence
        self.row_steps = 0  # optimizer steps taken, summed over the rows that took them
        self.best = torch.full((K,), math.nan, device=device)  # early stopping: best so far
        self.since = torch.zeros(K, dtype=torch.long, device=device)  # evaluations since
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
        after the update, ``cautious``, does). Called again on the optimizer rebuilt over the
        rows kept when some stop."""
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

    # -- records -------------------------------------------------------------------------------

    def _full(self, values: Tensor) -> Tensor:
        """Values of the rows still training as a (K,) row: NaN for the rows that stopped."""
        if self.index is None:
            return values
        out = torch.full((len(self.configs), *values.shape[1:]), math.nan, device=values.device)
        if len(self.index):  # (none left: every row stopped at once, the engine kept them all)
            out[self.index] = values.to(out.dtype)
        return out

    def eval_value(self, name: str, values: Tensor) -> None:
        """Keep one evaluation's values of ``name`` (one per row still training)."""
        self.ev.setdefault(name, []).append(self._full(values.detach()))

    def epoch_loss(self, epoch: int, losses: Tensor, steps: int = 1) -> None:
        """Epoch ``epoch``'s train loss of the rows that trained it, in ``steps`` optimizer
        steps (counted for each of those rows)."""
        self.row_steps += losses.shape[0] * steps
        if self.index is None:
            self.train_loss[epoch] = losses
        else:
            self.train_loss[epoch, self.index] = losses

    def eval_metrics(self, split: str, out: Tensor, ys: Tensor) -> None:
        """Metrics computed from outputs (accuracy); loss-derived ones come at the end."""
        if self.task.eval_metrics is not None:
            for m, v in self.task.eval_metrics(out, ys).items():
                self.eval_value(f"{split}_{m}", v)

    def weight_norm(self, epoch: int) -> None:
        """The decayed weights' norm after ``epoch``'s update (as the engine's parts)."""
        if self.norm_parts is None:
            return
        with _no_grad():
            if self.index is None:
                self.norm.write(self.norm_parts[epoch])
            else:
                parts = torch.empty(self.norm.parts, len(self.index), device=self.alive.device)
                self.norm.write(parts)
                self.norm_parts[epoch][:, self.index] = parts

    def end_epoch(self, epoch: int) -> None:
        """The diagnostics' values of this epoch."""
        for d in self.diagnostics:
            d.end_epoch(epoch)

    def check_divergence(self, upto: int) -> list[int]:
        """The rows still training whose train loss diverged up to epoch ``upto`` (NaN, inf, or
        blown up while finite: above ``BLOWUP`` × max(its first epoch's loss, 1)), each dated
        at its first diverged epoch; the trainer stops them (:meth:`stop`).

        Checked every ~100 epochs (at an evaluation epoch) and at the end rather than every
        step (no per-step sync): rows never mix, so a diverged row harms no other meanwhile.
        """
        start, self.checked = self.checked, upto + 1
        block = self.train_loss[start : upto + 1]
        limit = BLOWUP * self.train_loss[0].clamp_min(1.0)
        healthy = torch.isfinite(block) & (block <= limit)
        bad = ~healthy.all(0) & self.alive
        if not bool(bad.any()):
            return []
        first = (~healthy).float().argmax(0)
        rows = torch.nonzero(bad).flatten().tolist()
        for k in rows:
            self.diverged_at[k] = start + int(first[k])
        return rows

    def no_improvement(self, metric: str, higher: bool, patience: int) -> list[int]:
        """Early stopping: the rows still training whose last ``patience`` evaluations of
        ``metric`` (a validation series; ``val_loss`` for a metric derived from the loss, RMSE
        or R², which moves with it) did not improve on their best (strictly: a tie is no
        improvement, as the selection takes the earliest of tied epochs)."""
        if metric not in self.ev:
            metric, higher = "val_loss", False
        v = self.ev[metric][-1]
        better = (v > self.best) if higher else (v < self.best)
        better = better | (torch.isnan(self.best) & ~torch.isnan(v))
        self.best = torch.where(better, v, self.best)
        self.since = torch.where(better, torch.zeros_like(self.since), self.since + 1)
        if self.plan.keep_params:  # the weights handed back: those of the epoch chosen
            training = torch.nonzero(self.alive).flatten()
            for pos in torch.nonzero(better[training]).flatten().tolist():
                self.best_params[int(training[pos])] = self.engine.weights(pos)
        return torch.nonzero(self.alive & (self.since >= patience)).flatten().tolist()

    def stop(self, rows: Sequence[int], why: str, epochs: int) -> Tensor:
        """Rows ``rows`` stop after ``epochs`` epochs (``why``: diverged, early, pruned);
        returns the positions, among the rows training until now, of those that go on (what
        the engine and the optimizer keep). A stopped row's weights are kept first when asked
        (``keep_params``; a diverged one's are zeros, as its numbers mean nothing; with early
        stopping, those of its best evaluation, the epoch its numbers are reported at)."""
        before = torch.nonzero(self.alive).flatten()
        for k in rows:
            if self.plan.keep_params:
                pos = int((before == k).nonzero()[0, 0])
                w = self.best_params.get(k) or self.engine.weights(pos)
                self.params[k] = (
                    {n: torch.zeros_like(t) for n, t in w.items()} if (why == "diverged") else w
                )
            self.ended[k] = (why, epochs)
            self.alive[k] = False
        keep = torch.nonzero(self.alive[before]).flatten()
        self.index = torch.nonzero(self.alive).flatten()
        for d in self.diagnostics:
            d.keep(self.index, len(self.configs))
        return keep

    def due(self, epoch: int) -> bool:
        """Whether the divergence check is due after ``epoch`` (an evaluation epoch): at the
        end, at a rung (a diverged run is ``diverged`` there, not ranked on its score) and
        every :data:`DIVERGENCE_CHECK_EVERY` epochs."""
        at_end_or_rung = epoch == self.plan.epochs - 1 or epoch + 1 in self.plan.rungs
        return at_end_or_rung or epoch + 1 - self.checked >= DIVERGENCE_CHECK_EVERY

    # -- the state of a batch in training (checkpoints) --------------------------------------

    def state(self) -> dict[str, Any]:
        """The records so far (tensors and plain data, on the CPU), for :meth:`load_state`."""
        return {
            "train_loss": self.train_loss.cpu(),
            "norm_parts": None if self.norm_parts is None else self.norm_parts.cpu(),
            "ev": {k: torch.stack(v).cpu() for k, v in self.ev.items()},
            "alive": self.alive.cpu(),
            "diverged_at": list(self.diverged_at),
            "ended": [list(e) if e is not None else None for e in self.ended],
            "params": self.params,
            "best_params": self.best_params,
            "checked": self.checked,
            "row_steps": self.row_steps,
            "iters_per_epoch": self.iters_per_epoch,
            "best": self.best.cpu(),
            "since": self.since.cpu(),
            "diagnostics": [d.state() for d in self.diagnostics],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue the records of :meth:`state` (of a batch of these same configurations)."""
        dev = self.alive.device
        self.train_loss = state["train_loss"].to(dev)
        if self.norm_parts is not None:
            self.norm_parts = state["norm_parts"].to(dev)
        self.ev = {k: list(v.to(dev).unbind(0)) for k, v in state["ev"].items()}
        self.alive = state["alive"].to(dev)
        self.index = None if bool(self.alive.all()) else torch.nonzero(self.alive).flatten()
        self.diverged_at = list(state["diverged_at"])
        self.ended = [tuple(e) if e is not None else None for e in state["ended"]]
        self.params = dict(state["params"])
        self.best_params = dict(state.get("best_params") or {})  # (none in wdlab 0.2's files)
        self.checked, self.row_steps = int(state["checked"]), int(state["row_steps"])
        self.iters_per_epoch = state.get("iters_per_epoch", self.iters_per_epoch)
        self.best, self.since = state["best"].to(dev), state["since"].to(dev)
        for d, saved in zip(self.diagnostics, state["diagnostics"], strict=True):
            d.load_state(saved)
            if self.index is not None:
                d.keep(self.index, len(self.configs))

    # -- results -------------------------------------------------------------------------------

    def results(
        self, order: Sequence[int], t_start: float, note: str, epochs: int
    ) -> list[RunResult]:
        """One RunResult per configuration, in the order given (row ``row`` is configuration
        ``order[row]``), from the device records; ``epochs``: the epochs the batch trained
        (fewer than planned when it stopped at a rung: its rows are then ``paused``)."""
        plan = self.plan
        seconds = time.perf_counter() - t_start
        rows_train_loss = self.train_loss.cpu().t().tolist()  # one .tolist() per curve
        if self.norm_parts is None:
            weight_norm = torch.zeros(plan.epochs, len(self.configs))
        else:
            weight_norm = self.norm.combine(self.norm_parts).clamp_min(0).sqrt().cpu()
        rows_weight_norm = weight_norm.t().tolist()
        rows_ev = {k: v.t().cpu().tolist() for k, v in self.stacked_evals().items()}
        alive = torch.nonzero(self.alive).flatten().tolist()
        results: list[RunResult | None] = [None] * len(self.configs)
        epoch_axis, eval_axis = range(plan.epochs), plan.eval_epochs  # (computed once)
        for row, orig in enumerate(order):
            series = {"train_loss": rows_train_loss[row], "weight_norm": rows_weight_norm[row]}
            series |= {k: v[row] for k, v in rows_ev.items()}
            for d in self.diagnostics:
                series |= d.series(row)
            curves = Curves(list(epoch_axis), list(eval_axis), series)
            result = self._result(row, curves.upto(epochs), rows_ev, seconds, note)
            if plan.keep_params:
                result.params = (
                    self.params.get(row)
                    or self.best_params.get(row)
                    or self.engine.weights(alive.index(row))
                )
            results[orig] = result
        return results  # type: ignore[return-value]

    def _result(
        self, row: int, curves: Curves, rows_ev: dict, seconds: float, note: str
    ) -> RunResult:
        """Row ``row``'s result from its curves (up to the epochs the batch trained): done, or
        diverged, pruned, stopped early, or paused at a rung."""
        ended = self.ended[row]
        trained = len(curves.epoch) if ended is None else ended[1]
        status = "paused" if trained < self.plan.epochs else "done"
        if ended is not None and ended[0] != "diverged":
            curves = curves.upto(trained)
            status = "pruned" if ended[0] == "pruned" else "done"
        final = {k: curves[k][-1] for k in rows_ev}
        final["train_loss"] = final.pop("train_loss_eval")
        final["weight_norm"] = curves["weight_norm"][-1]
        taus = timescales(self.configs[row], self.iters_per_epoch or 1)
        final |= taus
        cut = self.diverged_at[row]
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
            best=_best(curves, self.plan.early_stop, self._skipped(status)),
            seconds=seconds,
            engine=note,
            epochs=trained,
        )

    def _skipped(self, status: str) -> frozenset[int]:
        """The evaluations never a run's best epoch: a finished run's rung-only ones (made for
        the decision), so a survivor's best is the unpruned sweep's; none of a run paused at a
        rung, which is stored so and pruned there or trained on (its best then taken again)."""
        return frozenset() if status in ("paused", "pruned") else self.plan.rung_only_evals

    def stacked_evals(self) -> dict[str, Tensor]:
        """Every evaluated series as (n_eval, K), with loss-derived metrics (RMSE, R²)."""
        stacked = {k: torch.stack(v).float() for k, v in self.ev.items()}
        if self.task.loss_metrics is not None:
            for split in ("train", *self.feed.splits):
                key = f"{split}_{self.task.derived_from}"
                key = "train_loss_eval" if key == "train_loss" else key
                if key in stacked:
                    var = self.feed.target_var(split)
                    for m, v in self.task.loss_metrics(stacked[key], var).items():
                        stacked[f"{split}_{m}"] = v
        return stacked


def _no_grad() -> contextlib.AbstractContextManager:
    """``torch.no_grad()``, or nothing where gradients are off already (the hand-written
    backward's loop): one context less per step."""
    return torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()


def _best(
    curves: Curves, stop: EarlyStop | None = None, skip: frozenset[int] = frozenset()
) -> dict[str, Any]:
    """The lowest finite validation (else test) loss and its epoch, among the evaluations not
    after an epoch in ``skip``; with early stopping, the best of its metric (the earliest on
    ties: the epoch the run's numbers are reported at and its weights kept), and every
    evaluated metric at that epoch (``at``)."""
    key, higher = "val_loss" if "val_loss" in curves else "test_loss", False
    if stop is not None and stop.metric in curves:
        key, higher = stop.metric, stop.higher
    values = curves.get(key)
    on = [e not in skip for e in curves["eval_epoch"]]
    finite = [
        (-v if higher else v, i) for i, v in enumerate(values or []) if math.isfinite(v) and on[i]
    ]
    if not finite:
        return {}
    _, i = min(finite)  # the smallest index among equal values: the earliest epoch
    best = {"metric": key, "value": values[i], "epoch": curves["eval_epoch"][i]}
    if stop is not None:
        at = {k: curves[k][i] for k in curves.series if not is_per_epoch(k)}
        at["train_loss"] = at.pop("train_loss_eval", math.nan)  # named as ``final`` names it
        norms, epoch = curves.get("weight_norm") or [], best["epoch"]
        if 0 <= epoch < len(norms):
            at["weight_norm"] = norms[epoch]
        best["at"] = at
    return best
