"""The batches of a sweep that prunes, or resumes mid-training: segments, and the rungs'
decisions.

A run is trained in *segments*: from the start (or its saved state) to the next rung, or to
the end. Every batch of a study with ``prune`` pauses at each rung
(:attr:`wdlab.trainer.Plan.stop`): its runs are stored ``pending`` with their curves so far,
their epochs and the checkpoint file holding the batch's state. A rung is decided once no run
is still to reach it (:func:`decide_rungs`: none pending, running or failed below it), across
every batch and process of the study (:mod:`wdlab.halving` says how, and why there); the
decision and the runs it prunes are stored in one transaction. A run waiting at a decided rung
goes on from its checkpoint, in the batch it paused in (the same rows, so its numbers are
those of an unpruned sweep to rounding: the pruned rows leave the batch), without the rows
pruned or held by another process (:attr:`wdlab.executors.Segment.skip`). A run checkpointed
mid-segment (a killed sweep) goes on the same way, from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from wdlab.data import Dataset, StreamedData
from wdlab.executors import Segment
from wdlab.halving import Prune, check_cells, decide
from wdlab.pipelines.checkpoints import (
    CheckpointError,
    configs_of,
    folder,
    read,
    sweep_temporary,
)
from wdlab.pipelines.memory import plan_batches
from wdlab.records import RunConfig
from wdlab.selection import Criterion
from wdlab.store import Store, config_key
from wdlab.warn import warn_user

Waiting = tuple[RunConfig, int, str | None]  # a pending run: (config, epochs, checkpoint)


def has_validation(ds: Dataset | StreamedData) -> bool:
    """Whether the data has a validation split (held or streamed)."""
    return "val" in (ds.streams if isinstance(ds, StreamedData) else ds.splits())


def check_pruning(
    prune: Prune | None,
    configs: Sequence[RunConfig],
    ds: Dataset | StreamedData,
    epochs: int,
    eval_every: int = 1,
) -> tuple[int, ...]:
    """The rungs of ``prune`` for this grid and data (on evaluations every ``eval_every``
    epochs), or a one-line ``ValueError``: no rung before the last epoch, fewer than two cells
    to rank, no validation split to rank on."""
    if prune is None:
        return ()
    rungs = prune.rungs(epochs, eval_every)
    if prune.first_rung not in (None, rungs[0]):
        warn_user(
            f"prune: the first rung moves from epoch {prune.first_rung} to {rungs[0]} (rungs "
            f"after {', '.join(map(str, rungs))} epochs): with early stopping a rung falls on "
            f"an evaluation (one every {eval_every} epochs)"
        )
    check_cells(configs)
    if not has_validation(ds):
        raise ValueError(
            "prune: successive halving ranks on the validation split, and the data has none; "
            "give data with a validation split (data['val']), or sweep without pruning"
        )
    return rungs


def next_rung(epochs: int, rungs: Sequence[int]) -> int | None:
    """The first rung after ``epochs`` epochs (None: none left, train to the end)."""
    return next((r for r in rungs if r > epochs), None)


def ready(waiting: Sequence[Waiting], rungs: Sequence[int], decided: set[int]) -> list[Waiting]:
    """The pending runs that can go on now: from the start, from a checkpoint taken between
    rungs, or from a rung already decided."""
    return [w for w in waiting if w[1] == 0 or w[1] not in rungs or w[1] in decided]


def plan_segments(
    todo: Sequence[Waiting],
    configs: Sequence[RunConfig],
    rungs: Sequence[int],
    budget: tuple[int, float, int | None],
) -> list[Segment]:
    """Segments for the runs ``todo`` (ready): for runs from the start, the batches the memory
    ``budget`` (bytes per configuration, MB, max batch) makes of the study's ``configs``: the
    same batches whichever process takes them, whatever others did before, so the same
    numbers; and one segment per checkpoint file for the others (the batch they paused in; its
    state is read when the segment is taken)."""
    fresh = {config_key(c) for c, _, name in todo if name is None}
    out = []
    for b in plan_batches(configs, *budget) if fresh else []:
        live = [c for c in b if config_key(c) in fresh]
        if live:
            out.append(Segment(live, stop=next_rung(0, rungs)))
    by_file: dict[str, list[Waiting]] = {}
    for w in todo:
        if w[2] is not None:
            by_file.setdefault(w[2], []).append(w)
    for name, runs in by_file.items():
        epochs = {e for _, e, _ in runs}
        planned = epochs.pop() if len(epochs) == 1 else None
        out.append(Segment([], source=name, live=[c for c, _, _ in runs], planned=planned))
    return out


def opened(segment: Segment, directory: Path) -> Segment:
    """A segment from a checkpoint file with its state, configurations and stop filled in
    (:class:`~wdlab.pipelines.checkpoints.CheckpointError` for a file that cannot be used)."""
    state = read(directory, segment.source)
    configs = [RunConfig.from_dict(d) for d in state["configs"]]
    planned = segment.planned
    return Segment(configs, start=state, source=segment.source, live=segment.live, planned=planned)


def verify_files(store: Store, directory: Path) -> None:
    """Every checkpoint file a run to train needs (a pending one, or one a dead process held,
    which this sweep takes over) that is there is readable and holds those runs: else one
    line naming the first that is not, before the store is written to (read only)."""
    waiting = store.waiting(orphans=True)
    for name in sorted({w[2] for w in waiting if w[2] is not None}):
        path = folder(directory) / name
        if not path.exists():
            continue  # gone: check_files trains its runs again from the start
        held = {config_key(c) for c in configs_of(read(directory, name))}
        if any(w[2] == name and config_key(w[0]) not in held for w in waiting):
            raise CheckpointError(
                f"checkpoint {path} does not hold the runs the study says it does; left as it "
                "is: delete it to train its runs from the start, or restore it"
            )


def check_files(store: Store, directory: Path) -> None:
    """After :func:`verify_files`, before anything is claimed or trained: what a killed
    process left half-written is removed; the runs of a checkpoint that is gone (deleted, as
    the message for a damaged one advises) train again from the start, and a warning says
    so, as another says which runs resume from where."""
    sweep_temporary(directory)
    waiting = store.waiting()
    gone = set()
    for name in sorted({w[2] for w in waiting if w[2] is not None}):
        path = folder(directory) / name
        if not path.exists():
            gone.add(name)
            n = store.restart(name)
            runs = f"its {n} runs train" if n != 1 else "its run trains"
            warn_user(f"checkpoint {path} is missing: {runs} again from the start")
    saved = [e for _, e, name in waiting if name is not None and name not in gone]
    if saved:
        runs = (
            f"{len(saved)} runs from their checkpoints"
            if len(saved) != 1
            else "1 run from its checkpoint"
        )
        warn_user(f"resuming {runs} ({epoch_span(saved)})")


def epoch_span(epochs: Collection[int]) -> str:
    """``epoch 12``, or ``epoch 6 to 12``: where runs saved in checkpoints stand."""
    low, high = min(epochs), max(epochs)
    return f"epoch {low}" + (f" to {high}" if high > low else "")


def decide_rungs(
    store: Store, rungs: Sequence[int], prune: Prune, crit: Criterion
) -> dict[int, set[str]]:
    """Decide every rung no run is still to reach (in order; each once, whichever process
    gets there first). Returns the rungs this call decided, each with the checkpoint files
    its pruned runs were in."""
    done = set(store.decisions())
    made: dict[int, set[str]] = {}
    for rung in rungs:
        if rung in done:
            continue
        if store.behind(rung):
            break  # runs still to reach it: neither it nor a later rung can be decided
        waiting = store.runs(statuses=("pending",), epochs=rung)
        if not waiting:
            continue
        finished = store.runs(statuses=("done", "diverged"))
        detail, pruned = decide(finished, waiting, rung, prune, crit)
        files = store.decide(rung, detail, pruned)
        if files is not None:
            made[rung] = files
    return made


__all__ = [
    "Waiting",
    "check_files",
    "check_pruning",
    "decide_rungs",
    "has_validation",
    "next_rung",
    "opened",
    "plan_segments",
    "ready",
    "verify_files",
]
