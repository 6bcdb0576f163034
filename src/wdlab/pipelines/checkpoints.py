"""Checkpoint files: the state of a batch in training (:mod:`wdlab.trainer.state`), kept in the
study directory as ``checkpoints/<name>.pt``.

* **Written whole or not at all**: ``torch.save`` of tensors and plain data to a temporary file
  beside it, flushed to disk, then renamed over the old one (the folder's record noting first
  that either file under that name is wdlab's, so a kill at any point leaves a file the next
  sweep may read and replace); the store records which runs it
  holds only after that (:meth:`wdlab.store.Store.note_checkpoint`, or the batch's save at a
  rung), so the store never points at a file that is not there or not whole.
* **Read safely**: ``torch.load(weights_only=True)`` (tensors and plain data only, never code),
  then checked to be a batch state of this study's configurations. A file that cannot be read
  or is not one is refused in one line (:class:`CheckpointError`) naming the file and what to
  do: wdlab neither guesses nor silently trains those runs again, and nothing stored changes
  but the release of a dead process's claim on its runs (the takeover that found the file).
* **Only wdlab's files**: every file written is recorded in ``checkpoints/.wdlab-files.json``
  (:mod:`wdlab.pipelines.outputs`) for the study; a file of that name that wdlab did not write
  there is never replaced nor removed. A file no unfinished run needs any more is removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from wdlab.pipelines.outputs import (
    MANIFEST,
    changed_since_written,
    check_outputs,
    check_record,
    expect_output,
    forget_outputs,
    load_error,
    save_to,
    settle_output,
    sweep_dead_writes,
    written_outputs,
)
from wdlab.records import RunConfig
from wdlab.store import config_key, dir_lock
from wdlab.trainer.state import check

DIRNAME = "checkpoints"


def check_checkpoint_record(directory: str | Path) -> None:
    """The record of the study's checkpoints, readable (one line before anything runs, where
    it is damaged: writing would replace it, and every checkpoint be refused)."""
    folder = Path(directory) / DIRNAME
    how = f"restore it, or delete {folder} (its runs then train from the start)"
    check_record(folder, "checkpoints", how)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (one line; nothing stored is changed but a dead
    process's claim on its runs, released)."""


def folder(directory: str | Path) -> Path:
    """The study's checkpoint folder."""
    return Path(directory) / DIRNAME


def name_of(configs: Sequence[RunConfig], live: Sequence[RunConfig]) -> str:
    """The file name of a batch of ``configs`` training ``live`` (of them): the same batch,
    the same name; batches of other runs, other names."""
    doc = [[config_key(c) for c in configs], sorted(config_key(c) for c in live)]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:20] + ".pt"


def at_epoch(name: str, epoch: int) -> str:
    """Checkpoint ``name`` of a batch paused at epoch ``epoch`` (a rung), as its own file."""
    return f"{name.removesuffix('.pt')}-epoch{epoch}.pt"


def write(directory: str | Path, name: str, state: Mapping[str, Any], source: str) -> Path:
    """Write ``state`` as checkpoint ``name`` (whole or not at all); recorded for ``source``
    (``study HASH``). A file of that name wdlab did not write for this study is refused."""
    where = folder(directory)
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    with dir_lock(where):
        check_outputs(where, [name], source, how="delete it, or choose another --out")
        tmp = where / f".{name}.{os.getpid()}.tmp"
        try:
            save_to(tmp, dict(state), path, sync=True)
            expect_output(where, name, tmp, source)  # a kill after the rename: still ours
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        settle_output(where, name)  # the hash noted before the rename: one read of the file
    return path


def read(directory: str | Path, name: str, configs: Sequence[RunConfig] | None = None) -> Any:
    """Checkpoint ``name``'s state (tensors on the CPU), checked to be a batch state (of
    ``configs``, in order, where given); :class:`CheckpointError` otherwise."""
    path = folder(directory) / name
    fix = "left as it is: delete it to train its runs from the start, or restore it"
    try:
        raw = path.read_bytes()  # read once: hashed, then loaded
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} is missing; run the sweep from a copy of the "
            "study that has it, or start a new study"
        ) from None
    if name not in written_outputs(folder(directory)):  # wdlab records a file before it is
        raise CheckpointError(  # there: one it would not replace is not its to resume from
            f"checkpoint {path} is not in wdlab's record of the checkpoints it wrote "
            f"({DIRNAME}/.wdlab-files.json); {fix}"
        )
    if changed_since_written(folder(directory), name, raw):  # flipped tensor bytes still load
        raise CheckpointError(
            f"checkpoint {path} is damaged (its bytes changed since wdlab wrote it); {fix}"
        )
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, a pickle of code: all refused
        raise CheckpointError(f"checkpoint {path} is damaged ({load_error(exc)}); {fix}") from None
    try:
        check(state, [c.to_dict() for c in configs] if configs is not None else None)
        configs_of(state)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} is not usable ({exc}); {fix}") from None
    return state


def sweep_temporary(directory: str | Path) -> None:
    """Remove the temporary files of writes a killed process left in the checkpoint folder
    (:func:`wdlab.pipelines.outputs.sweep_dead_writes`)."""
    sweep_dead_writes(folder(directory))


def configs_of(state: Mapping[str, Any]) -> list[RunConfig]:
    """The configurations of a batch state, in its order."""
    return [RunConfig.from_dict(d) for d in state["configs"]]


def written(directory: str | Path, source: str) -> list[str]:
    """The names of the checkpoint files wdlab wrote for ``source`` (still recorded)."""
    entries = written_outputs(folder(directory)).items()
    return sorted(n for n, e in entries if e.get("source") == source and n.endswith(".pt"))


def tidy(directory: str | Path) -> None:
    """Remove the checkpoint folder of a whole study where it holds nothing but wdlab's record
    of it (its last checkpoint went with the last run), once the record forgets the files a
    process killed before their rename noted and never wrote (a name no resume wrote again,
    such as a rung's); anything else keeps it."""
    where = folder(directory)
    try:
        with dir_lock(where):  # no run is left to write one: a file not there never will be
            forget_outputs(where, [n for n in written_outputs(where) if not (where / n).exists()])
        if [p.name for p in where.iterdir()] == [MANIFEST] and not written_outputs(where):
            (where / MANIFEST).unlink()
            where.rmdir()
    except (OSError, ValueError):
        return  # not there, or not as wdlab left it: left alone


def remove(directory: str | Path, name: str, source: str) -> None:
    """Remove checkpoint ``name`` if wdlab wrote it for ``source`` and it is unchanged (any
    other file is left as it is)."""
    where = folder(directory)
    path = where / name
    if not path.is_file():
        return
    with dir_lock(where):
        try:
            check_outputs(where, [name], source)
        except ValueError:
            return  # not ours (or changed since): left alone
        path.unlink(missing_ok=True)
        forget_outputs(where, [name])
