"""One process's share of a sweep (:class:`Job`): claim batches (or segments of them, with
successive halving or a resumed checkpoint: :mod:`wdlab.pipelines.segments`), train them
through an executor, store each in one transaction; decide the rungs every run has reached;
then wait for what other processes hold, taking over what their holders lost
(:mod:`wdlab.pipelines.study` says how the processes of one study share it)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wdlab.data import Dataset, StreamedData, StreamError
from wdlab.errors import gist
from wdlab.executors import Batch, BatchError, Executor, Segment
from wdlab.halving import Prune
from wdlab.integrations.logs import Logs
from wdlab.models import ModelSpec
from wdlab.pipelines import checkpoints, weights
from wdlab.pipelines.segments import (
    check_files,
    decide_rungs,
    opened,
    plan_segments,
    ready,
    verify_files,
)
from wdlab.pipelines.weights import save_weights
from wdlab.progress import progress_bar
from wdlab.records import RunConfig, RunResult
from wdlab.selection import Criterion
from wdlab.sidebyside import RandomDraws
from wdlab.store import FINISHED, LEASE_SECONDS, Store, config_key
from wdlab.trainer import Plan
from wdlab.warn import warn_user

POLL_SECONDS = 0.5  # how often a process waiting on others' batches looks at the store
STOP_NOW = (KeyboardInterrupt, SystemExit, GeneratorExit)  # BaseExceptions that are not errors


class Job:
    """One process's share of a sweep: claim batches, train them, store them; then wait for
    what other processes hold, taking over what their holders lost."""

    def __init__(
        self,
        store: Store,
        owner: str,
        executor: Executor,
        spec: ModelSpec,
        ds: Dataset | StreamedData,
        train_kwargs: dict[str, Any],
    ) -> None:
        self.store, self.owner, self.executor = store, owner, executor
        self.spec, self.ds, self.train_kwargs = spec, ds, train_kwargs
        self.lease = LEASE_SECONDS
        self.steps_per_epoch = 1
        self.weights: Path | None = None  # the study folder, where runs' weights are kept
        self.keep = "none"  # train.keep: what the weights written are kept under
        self.bar: Any = None
        self.epochs = int(train_kwargs["epochs"])
        self.rungs: tuple[int, ...] = tuple(train_kwargs.get("rungs", ()))
        self.prune: Prune | None = None
        self.crit: Criterion | None = None
        self.directory, self.source = Path(), ""  # the study's folder; its files' source
        self.configs: list[RunConfig] = []  # the study's grid: batches are planned over it
        self.steps = 0  # optimizer steps of all configurations trained here
        self.shown: dict[int, float] = {}  # progress shown per batch (by id), in configurations
        self.told = False
        self.logs = Logs()  # where each stored run is logged (dashboards)

    def share(self, *run_args: Any) -> None:
        """Register with a lease (kept by a thread), train (:meth:`run`), and leave: what this
        process still holds goes back to pending, on Ctrl-C too. Runs of a batch that raised
        are marked failed; a ``BaseException`` of the user's code (not Ctrl-C or ``sys.exit``)
        becomes a one-line ``ValueError``."""
        store, owner = self.store, self.owner
        verify_files(store, self.directory)  # a refused checkpoint: nothing written before
        store.register(owner, self.lease)
        keeper = store.keep_lease(owner, self.lease)
        try:
            self._took_over(store.reclaim())
            store.retry_failed()
            if self.logs.logs and not store.others(owner):  # no one else logs it now
                self.logs.catch_up(store.runs())
            self.run(*run_args)
        except STOP_NOW:
            raise
        except (StreamError, RandomDraws):  # the data or how it runs, not the runs: they go
            # back to pending, nothing stored
            store.release(owner)
            raise
        except BatchError as exc:  # one of several batches in flight (Ray): only its runs
            store.mark_failed(owner, gist(exc.cause), only=exc.batch)
            store.release(owner)
            raise exc.cause from None
        except Exception as exc:
            store.mark_failed(owner, gist(exc))
            raise
        except BaseException as exc:  # a user's own BaseException subclass, while training
            why = gist(exc)
            store.mark_failed(owner, why)
            raise ValueError(f"training stopped: user code raised {why}") from None
        finally:
            keeper.stop()
            store.unregister(owner)

    def run(
        self,
        total: int,
        per_config: int,
        max_memory_mb: float,
        max_batch: int | None,
        progress: bool,
        t0: float,
    ) -> None:
        """Train every pending configuration (claiming batch by batch) until no run is pending
        or held by anyone; add this process's wall time to the study."""
        counts = self.store.counts()
        check_files(self.store, self.directory)  # read by verify_files: now claimed or trained
        weights.sweep_temporary(self.directory)
        if progress:
            self.bar = _progress(total, sum(counts.get(k, 0) for k in FINISHED))
        self.t_train = time.perf_counter()
        self.mark = t0
        try:
            while True:
                self._decide()
                todo = self._ready()
                if todo:
                    budget = (per_config, max_memory_mb, max_batch)
                    segments = plan_segments(todo, self.configs, self.rungs, budget)
                    for batch, results in self.executor.run(
                        self.spec,
                        self.ds,
                        self._claimed(segments),
                        self.train_kwargs,
                        on_epoch=self._on_epoch,
                        on_checkpoint=self._checkpoint,
                    ):
                        self._save(batch, results)
                    continue
                if not self._wait():
                    break
            for name in checkpoints.written(self.directory, self.source):
                self._forget(name)  # left by a process killed as it removed it
            self._advance(math.inf)  # every run finished: the bar ends full, then goes
        finally:
            if self.steps or self.told:  # a process that only read the study adds no time
                self.store.add_seconds(time.perf_counter() - self.mark)
            if self.bar is not None:
                self.bar.close()

    def pace(self, plan: Plan) -> None:
        """Epochs and steps per epoch of every batch (for progress and model-steps/s)."""
        self.epochs, self.steps_per_epoch = plan.epochs, plan.steps_per_epoch or 1

    def _ready(self) -> list:
        """The pending runs that can be trained now (not waiting at an undecided rung)."""
        return ready(self.store.waiting(), *self._rungs())

    def _rungs(self) -> tuple[tuple[int, ...], set[int]]:
        """The rungs, and those decided so far."""
        return self.rungs, set(self.store.decisions())

    def _decide(self) -> None:
        """Decide the rungs every run has reached (successive halving); the runs pruned there
        are finished: the bar counts them, the dashboards get them (once: here, where the
        rung was decided)."""
        if self.prune is None or self.crit is None:
            return
        for rung, files in decide_rungs(self.store, self.rungs, self.prune, self.crit).items():
            for name in files:
                self._forget(name)  # a batch whose runs were all pruned
            if self.bar is not None or self.logs.logs:
                pruned = self.store.runs(bool(self.logs.logs), ("pruned",), rung)
                self.logs.runs(pruned)
                if self.bar is not None:
                    self._advance(len(pruned) * (self.epochs - rung) / self.epochs)

    def _save(self, batch: Batch, results: list) -> None:
        """Store a trained batch (or segment) in one transaction: finished runs, and the runs
        paused at a rung with their state's file (written first, whole, under a name of its
        own: never the file the store points these runs at, which a kill before the store
        update would leave ahead of the store at an undecided rung, where no process can go
        on from it); then remove the checkpoint files no unfinished run needs any more."""
        name = None
        state = getattr(results, "state", None)
        if state is not None and isinstance(batch, Segment):
            name = checkpoints.at_epoch(batch.name, int(state["epoch"]))
            checkpoints.write(self.directory, name, state, self.source)
        if self.weights is not None:  # before the runs count as done (not those paused)
            save_weights(self.weights, _trained_here(batch, results), self.source, self.keep)
        now = time.perf_counter()
        saved = self.store.save_batch(
            results, seconds=now - self.mark, owner=self.owner, checkpoint=name
        )
        self.mark = now
        self.logs.runs([r for r in saved if r.status != "paused"])  # stored once each
        self._batch_done(batch, saved, len(getattr(batch, "live", batch)) - len(saved))
        if isinstance(batch, Segment):  # the file it started from, its own checkpoints
            for old in {batch.source, batch.name} - {None, "", name}:
                self._forget(old)

    def _checkpoint(self, batch: Batch, state: dict[str, Any]) -> None:
        """A checkpoint of a batch in training: its file written whole, then the runs it holds
        pointed at it (those this process still holds); the files they were in before go."""
        if not isinstance(batch, Segment):
            return
        checkpoints.write(self.directory, batch.name, state, self.source)
        old = self.store.note_checkpoint(batch.live, self.owner, state["epoch"], batch.name)
        for name in old - {batch.name}:
            self._forget(name)

    def _forget(self, name: str) -> None:
        """Remove checkpoint ``name`` once no unfinished run needs it."""
        if not self.store.checkpoint_used(name):
            checkpoints.remove(self.directory, name, self.source)

    def _claimed(self, segments: Sequence[Segment]) -> Iterator[Segment]:
        """Each segment as it is taken, reduced to what this process could claim (nothing that
        another process holds or has finished): a new batch of the runs claimed, or the batch
        a checkpoint holds (read now) training the runs claimed, the others skipped."""
        for seg in segments:
            if seg.source is not None:
                try:
                    seg = opened(seg, self.directory)
                except checkpoints.CheckpointError:
                    if not self._still_waiting(seg.source):
                        continue  # another process took its runs on (and removed it)
                    raise
                if not ready([(seg[0], int(seg.start["epoch"]), seg.source)], *self._rungs()):
                    continue  # another process trained it on to a rung not decided yet
            # only where the store said the runs were when this was planned (not runs another
            # process trained further); the file may be ahead of the store, written whole by a
            # process killed before it noted it: its state is those runs', later
            at = (None, None) if seg.start is None else (_planned(seg), seg.source)
            mine = self.store.claim(seg.live, self.owner, at)
            if not mine:
                continue
            if seg.start is None:
                yield Segment(mine, stop=seg.stop, name=checkpoints.name_of(mine, mine))
                continue
            keys = {config_key(c) for c in mine}
            epoch = int(seg.start["epoch"])
            yield Segment(
                seg,
                start=seg.start,
                stop=next((r for r in self.rungs if r > epoch), None),
                skip=[i for i, c in enumerate(seg) if config_key(c) not in keys],
                name=checkpoints.name_of(seg, mine),
                source=seg.source,
                live=mine,
            )

    def _still_waiting(self, name: str) -> bool:
        """Whether pending runs wait on checkpoint ``name``."""
        return any(w[2] == name for w in self.store.waiting())

    def _wait(self) -> bool:
        """Nothing to train now: take over the runs of holders that are gone, then wait a
        moment while live ones hold runs (runs waiting at a rung wait for them too). False once
        no run can be trained, here or elsewhere."""
        self._took_over(self.store.reclaim())
        counts = self.store.counts()
        if counts["pending"] and self._ready():
            return True
        if not counts["running"]:
            self._decide()  # a rung another process's last batch made decidable since
            # else runs wait at a rung another run failed to reach: rerun later
            return bool(self.store.counts()["pending"] and self._ready())
        held = self.store.holders(exclude=self.owner)
        if not held:  # running, yet held by no one else: this process's own, left over
            self.store.release(self.owner)
            return True
        if not self.told:
            who = ", ".join(f"{w.rsplit(':', 1)[0]} ({n} runs)" for w, n in held.items())
            warn_user(
                f"waiting for the runs held by {who} (taken over if a holder ends or stops "
                "renewing its lease)"
            )
            self.told = True
        time.sleep(POLL_SECONDS)
        return True

    def _took_over(self, taken: Mapping[str, tuple[int, str]]) -> None:
        """Say whose runs went back to pending, and why (its process ended, its lease)."""
        for who, (n, why) in taken.items():
            if who and who != self.owner:
                name = who.rsplit(":", 1)[0]
                warn_user(f"took over {n} run{'s' * (n != 1)} held by {name}: {why}")

    def _on_epoch(self, batch: Batch, epoch: int) -> None:
        """Per epoch of a batch (local executor): the bar advances by the batch's share (of
        the runs it trains; they finish, or wait at a rung, when it is stored)."""
        rows = len(getattr(batch, "live", batch))
        self.steps += rows * self.steps_per_epoch
        if self.bar is not None:
            step = rows / self.epochs
            self.shown[id(batch)] = self.shown.get(id(batch), 0.0) + step
            self._advance(step)
            self._rate()

    def _batch_done(self, batch: Batch, saved: Sequence[Any], dropped: int = 0) -> None:
        """A batch is stored: the bar (in configurations) stands where its runs are: 1 for a
        finished one, epochs/planned for one waiting at a rung (Ray advances here only).
        ``dropped``: runs of it another process had taken over (this one lost its lease), not
        stored."""
        if dropped:
            warn_user(
                f"{dropped} runs trained here were not stored: this process had stopped "
                f"renewing its lease for over {self.lease:g} s and another took them over"
            )
        start = int(batch.start["epoch"]) if getattr(batch, "start", None) else 0
        if id(batch) not in self.shown:
            rows = len(getattr(batch, "live", batch))
            end = getattr(batch, "stop", None) or self.epochs
            self.steps += rows * self.steps_per_epoch * (end - start)
        if self.bar is not None:
            gain = sum((r.epochs if r.status == "paused" else self.epochs) - start for r in saved)
            self._advance(gain / self.epochs - self.shown.pop(id(batch), 0.0))
            self._rate()

    def _advance(self, configs: float) -> None:
        """Move the bar by ``configs`` (a share of the grid), never past its total: shares of
        1/epochs summed in floats overshoot it (18 rows over 60 epochs: 18.00000000000002)."""
        if self.bar is not None:
            self.bar.update(min(configs, self.bar.total - self.bar.n))

    def _rate(self) -> None:
        rate = self.steps / max(time.perf_counter() - self.t_train, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} model-steps/s", refresh=False)


def _progress(total: int, done: int) -> Any:
    return progress_bar(  # configs done in shares of their epochs: 1.3 of 4, not 1
        total,
        "sweep",
        "config",
        initial=done,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} configs [{elapsed}<{remaining}{postfix}]",
    )


def _planned(seg: Segment) -> int:
    """The epochs a checkpoint's runs had in the store when its segment was planned (the
    file's own epoch where they did not agree on one)."""
    return int(seg.start["epoch"]) if seg.planned is None else seg.planned  # type: ignore[index]


def _trained_here(batch: Batch, results: Sequence[RunResult]) -> list[RunResult]:
    """The runs of ``results`` this process trained to their end: those it claimed, not
    paused at a rung (not a checkpoint's runs it skipped: pruned, or another process's)."""
    held = {config_key(c) for c in getattr(batch, "live", batch)}
    return [r for r in results if r.status != "paused" and config_key(r.config) in held]
