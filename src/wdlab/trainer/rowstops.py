"""Between two epochs of a batch: rows that stop leave it, and its state is checkpointed.

A row stops when it diverged, when early stopping stops it, or when successive halving (or
Optuna) prunes it (:meth:`RowStops.stop`). It leaves the batch at once: the engine keeps the
other rows (:meth:`wdlab.engines.Engine.keep`), the optimizer is rebuilt over them with their
state (:meth:`wdlab.trainer.rows.RowOptimizer.keep`), and the recorder keeps its records up to
there (:meth:`wdlab.trainer.recorder.Recorder.stop`). Later steps compute the others alone: the
compute of a stopped row is saved, and the others' numbers are those they get unstopped (bit
for bit where the engine's kernels do not depend on the number of rows; else to rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

from wdlab.trainer.state import capture


class RowStops:
    """The :class:`~wdlab.trainer.loop.Trainer`'s part between epochs (see the module)."""

    def between(self, epoch: int, evaluated: bool) -> None:
        """After epoch ``epoch``: early stopping's rows stop (at an evaluation), and the batch's
        state goes to ``plan.on_checkpoint`` when due (not after the last epoch trained)."""
        plan, trained = self.plan, epoch + 1
        if plan.early_stop is not None and evaluated:
            es = plan.early_stop
            self.stop_rows(
                self.recorder.no_improvement(es.metric, es.higher, es.patience), "early", trained
            )
        if trained < self.end and self.cadence.due(trained) and bool(self.recorder.alive.any()):
            plan.on_checkpoint(capture(self, trained))

    def stop(self, configs: Sequence[int], why: str = "pruned") -> None:
        """Stop training configurations ``configs`` (indices into the plan's) after the epochs
        trained so far (call between epochs, e.g. from ``on_epoch``): they leave the batch,
        whose later steps compute the others alone, their numbers unchanged."""
        row_of = {orig: row for row, orig in enumerate(self.order)}
        self.stop_rows([row_of[i] for i in configs], why, self.trained)

    def stop_rows(self, rows: Sequence[int], why: str, epochs: int) -> None:
        """Rows ``rows`` (of the trainer's order) stop after ``epochs`` epochs, ``why``:
        diverged, early or pruned; the engine and the optimizer keep the others."""
        rows = [r for r in rows if bool(self.recorder.alive[r])]
        if not rows:
            return
        self.record_pending()
        keep = self.recorder.stop(rows, why, epochs)
        if len(keep) == 0:
            return  # nothing left to train: the loop ends
        self.engine.keep(keep)
        self.rows.keep(keep.tolist())
        self.recorder.watch(self.rows.optimizer, self.rows.attach)
