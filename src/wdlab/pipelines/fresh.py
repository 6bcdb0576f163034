"""A study that a sweep created and that failed before storing anything of value (no run
finished, none checkpointed) is removed again, so ``out=`` is as the user left it: fixing the
data or the model and running the same command is not refused as another study (its identity
would differ from the one left behind). A study with a checkpoint stays: a failure that was
not the study's (memory, a full disk) resumes from it when the same command runs again."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from wdlab.store import DB_NAME as DB
from wdlab.store import Store, StoreError


@contextmanager
def undone_on_failure(directory: Path) -> Iterator[None]:
    """Run the block; where it raises (an ``Exception``: not Ctrl-C, which leaves a study to
    resume), ``directory`` held no study before and its new study stored nothing of value
    (every run pending or failed, none with a checkpoint, no process registered), remove what
    the block made there."""
    directory = Path(directory)
    if (directory / DB).exists():
        yield
        return
    before = set(os.listdir(directory)) if directory.is_dir() else None
    try:
        yield
    except Exception:
        if _empty(directory / DB):
            _remove(directory, before)
        raise


def _empty(db: Path) -> bool:
    """Whether the study in ``db`` holds nothing of value (:meth:`Store.untouched`); False
    where it cannot be read."""
    if not db.exists():
        return False
    try:
        with Store(db.parent, readonly=True) as store:
            return store.untouched()
    except (StoreError, sqlite3.Error):
        return False


def _remove(directory: Path, before: set[str] | None) -> None:
    """Remove what was made in ``directory`` since ``before`` (None: the folder itself)."""
    if before is None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in set(os.listdir(directory)) - before:
        path = directory / name
        with suppress(OSError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
