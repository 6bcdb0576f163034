"""A study in TensorBoard: one run folder per wdlab run under ``DIR/<study>/``.

Each run's curves are scalars per epoch (``train_loss``, ``weight_norm``, ``val_acc``…, step =
epoch), its final metrics scalars ``final/<key>``, and its configuration hyperparameters of
TensorBoard's HParams dashboard (with the final metrics as the metrics there). The selection is
a text summary (the report's table, in Markdown) and scalars ``use_wd/<mode>/lr=<lr>`` (the
weight decay the answer says to use) and ``chosen_wd/<mode>/lr=<lr>`` (chosen on validation) in
``DIR/<study>/selection``. Written with ``torch.utils.tensorboard`` (``pip install
'wdlab[tensorboard]'``); read back with TensorBoard's own ``EventAccumulator``. Open it with
``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wdlab.extras import require
from wdlab.integrations.content import (
    finals,
    hparams,
    run_name,
    safe_name,
    scalars,
    selection_scalars,
)
from wdlab.integrations.content import selection_markdown as markdown
from wdlab.records import Result, RunResult
from wdlab.selection import selection_rule
from wdlab.warn import warn_user


class TensorBoardLog:
    """Logs a study into ``DIR/<study name>/`` (checked writable when opened). ``fresh``: that
    folder must be new or empty (an export never mixes with earlier files). Else (a live log)
    the folder records the study's ``key`` (its identity's hash): the same study resumed adds
    to it; another study of the same name logs into ``DIR/<study name>-2/`` (-3…), as
    Lightning's loggers take a new version, and a warning says where. The folder and its
    marker are made when the log is opened (a study opened next sees them taken) and removed
    again on :meth:`close` where nothing was logged into them (a sweep refused after its logs
    were opened leaves nothing)."""

    def __init__(
        self,
        directory: str,
        study: str,
        config: Mapping[str, Any],
        fresh: bool,
        key: str | None = None,
    ) -> None:
        require("tensorboard", "logging to TensorBoard")  # first: torch's module needs it
        self.tb = require("torch.utils.tensorboard", "logging to TensorBoard")
        first = Path(directory) / safe_name(study)
        self.root = first if fresh else _study_root(first, key)
        made = [p for p in (self.root, *self.root.parents) if not p.exists()]
        _check_writable(Path(directory), self.root, fresh)
        self.made, self.marked, self.logged = made, False, False
        if key is not None and _read_marker(self.root) != key:
            _write_marker(self.root, key)
            self.marked = True
        if self.root != first:
            warn_user(
                f"tensorboard: {first} holds another study's logs; this study's go to {self.root}"
            )
        self.where = str(self.root)

    def has_summary(self) -> bool:
        """Whether the folder holds this study's summary (a resumed sweep's log)."""
        return (self.root / "selection").is_dir()

    def log_run(self, run: RunResult) -> None:
        """One run folder: curves, final metrics, hyperparameters."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        self.logged = True
        writer = self.tb.SummaryWriter(str(self.root / safe_name(run_name(run.config))))
        try:
            for key, epoch, value in scalars(run):
                writer.add_scalar(key, value, epoch)
            last = max(run.curves.epoch, default=0)
            final = finals(run)
            for key, value in final.items():
                writer.add_scalar(key, value, last)
            for summary in hparams_summary(hparams(run), final):
                writer.file_writer.add_summary(summary)
        finally:
            writer.close()
        (self.root / safe_name(run_name(run.config)) / LOGGED).touch()  # the run is whole

    def unlogged(self, runs: Sequence[RunResult]) -> list[RunResult]:
        """Those of ``runs`` whose folder was not logged whole (no :data:`LOGGED` mark: a
        process killed while or before it wrote them); their event files are removed."""
        out = []
        for run in runs:
            folder = self.root / safe_name(run_name(run.config))
            if (folder / LOGGED).exists():
                continue
            for events in folder.glob("events.out.tfevents.*"):
                events.unlink()
            out.append(run)
        return out

    def log_summary(self, result: Result) -> None:
        """The selection: its table as text, each answer and chosen weight decay as a scalar."""
        self.logged = True
        writer = self.tb.SummaryWriter(str(self.root / "selection"))
        try:
            writer.add_text("selection", markdown(result), 0)
            if result.selection:
                writer.add_text("rule", selection_rule(result.selection), 0)
            for key, value in selection_scalars(result, "="):
                writer.add_scalar(key, value, 0)
        finally:
            writer.close()

    def close(self) -> None:
        """Nothing held open between runs; what opening made (the marker, the folders) is
        removed where nothing was logged, unless another process has logged there since."""
        if self.logged:
            return
        if self.marked:
            (self.root / MARKER).unlink(missing_ok=True)
        for folder in self.made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (another process's logs), or gone
                break


MARKER = ".wdlab-study"  # in a study's log folder: the key of the study it holds
LOGGED = ".wdlab-logged"  # in a run's folder: its events were written whole


def _study_root(first: Path, key: str | None) -> Path:
    """The folder a live log of study ``key`` goes to: ``first`` if it is new, empty or holds
    this study's logs, else the first of ``first-2``, ``first-3``… that is."""
    for n in range(1, 10_000):
        root = first if n == 1 else first.with_name(f"{first.name}-{n}")
        if not root.is_dir() or not any(root.iterdir()):
            return root
        if key is not None and _read_marker(root) == key:
            return root
    raise ValueError(f"tensorboard: {first}: no free folder name beside it")


def _read_marker(root: Path) -> str | None:
    try:
        return (root / MARKER).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _write_marker(root: Path, key: str) -> None:
    try:
        (root / MARKER).write_text(key + "\n", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"tensorboard: cannot write to {root} ({exc.strerror or exc})") from None


def _check_writable(directory: Path, root: Path, fresh: bool) -> None:
    """A folder files can be written to (``root``, made if missing); ``fresh``: ``root`` new or
    empty. One-line ``ValueError`` otherwise, before anything is written."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"tensorboard: {directory} is a file, not a folder")
    if fresh and root.exists() and any(root.iterdir()):
        raise ValueError(
            f"tensorboard: {root} holds logs already; export into another folder or remove it"
        )
    there = next(p for p in (root, *root.parents) if p.exists())
    if not there.is_dir():
        raise ValueError(f"tensorboard: {there} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".wdlab-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"tensorboard: cannot write to {directory} ({exc.strerror or exc})"
        ) from None
