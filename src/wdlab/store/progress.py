"""The runs' progress through a training that pauses: the epochs each run has trained, the
checkpoint file holding its state, and successive halving's decision at each rung (schema 3).

A run waiting at a rung, or checkpointed mid-training, is ``pending`` (or ``running``, while a
process trains it on) with ``epochs`` trained and the ``checkpoint`` file (in the study's
``checkpoints/`` folder) that holds its batch's state; a run pruned at a rung is ``pruned``.
:class:`Progress` is the :class:`~wdlab.store.database.Store`'s side of this (it inherits it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wdlab.records import RunConfig
from wdlab.store.schema import _json, _rebuilt, config_key


class Progress:
    """Where each run of a study stands in its training (see the module docstring). It uses
    the store's ``db``, ``path``, ``version`` and ``_tx()``."""

    db: sqlite3.Connection
    path: Path
    version: int

    def _v3(self, column: str) -> str:
        """``column`` of schema 3, or NULL in an older store opened read-only."""
        return column if self.version >= 3 else "NULL"

    def waiting(self, orphans: bool = False) -> list[tuple[RunConfig, int, str | None]]:
        """The pending runs, in insertion order, each with the epochs it trained and the
        checkpoint file holding its state (0 and None: from the start); ``orphans``: with the
        runs held by no live worker too, which the next sweep takes over (read only)."""
        live = self.others("") if orphans else []  # type: ignore[attr-defined]
        held = f"owner IS NULL OR owner NOT IN ({', '.join('?' * len(live))})" if live else "1"
        orphaned = f" OR (status = 'running' AND ({held}))" if orphans else ""
        rows = self.db.execute(
            f"SELECT id, config, COALESCE({self._v3('epochs')}, 0), {self._v3('checkpoint')} "
            f"FROM runs WHERE status = 'pending'{orphaned} ORDER BY id",
            live,
        )
        out = []
        for run_id, c, epochs, name in rows:
            with _rebuilt(self.path, f"run {run_id}"):
                out.append((RunConfig.from_dict(json.loads(c)), int(epochs), name))
        return out

    def saved(self) -> dict[int, int]:
        """The unfinished runs (pending or running) a checkpoint holds, counted by the epochs
        they trained: where a rerun of the sweep resumes them."""
        rows = self.db.execute(
            f"SELECT {self._v3('epochs')}, COUNT(*) FROM runs WHERE status IN ('pending', "
            f"'running') AND {self._v3('checkpoint')} IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        return {int(epochs): n for epochs, n in rows}

    def behind(self, epochs: int) -> int:
        """How many runs are still to train ``epochs`` epochs: pending, running or failed with
        fewer (a rung can be decided once none is)."""
        return self.db.execute(
            "SELECT COUNT(*) FROM runs WHERE status IN ('pending', 'running', 'failed') AND "
            f"COALESCE({self._v3('epochs')}, 0) < ?",
            (epochs,),
        ).fetchone()[0]

    def decisions(self) -> dict[int, dict[str, Any]]:
        """Successive halving's decision at each rung decided so far (rung: epochs)."""
        if self.version < 3:
            return {}
        out = {}
        for rung, detail in self.db.execute("SELECT rung, detail FROM decisions ORDER BY rung"):
            with _rebuilt(self.path, f"the decision at rung {rung}"):
                out[int(rung)] = dict(json.loads(detail))
        return out

    def decide(
        self, rung: int, detail: dict[str, Any], pruned: Iterable[RunConfig]
    ) -> set[str] | None:
        """One transaction: the decision at ``rung`` is stored and the ``pruned`` runs waiting
        there become ``pruned``. Returns the checkpoint files those runs were in (for
        :meth:`checkpoint_used`); None (nothing changed) where another process decided it
        first."""
        keys = [config_key(c) for c in pruned]
        with self._tx():
            if self.db.execute("SELECT 1 FROM decisions WHERE rung = ?", (rung,)).fetchone():
                return None
            self.db.execute(
                "INSERT INTO decisions (rung, made, detail) VALUES (?, ?, ?)",
                (rung, time.time(), _json(detail)),
            )
            files = {
                n
                for k in keys
                for (n,) in self.db.execute(
                    "SELECT checkpoint FROM runs WHERE key = ? AND checkpoint IS NOT NULL", (k,)
                )
            }
            self.db.executemany(
                "UPDATE runs SET status = 'pruned', checkpoint = NULL, owner = NULL, updated = ? "
                "WHERE key = ? AND status = 'pending' AND epochs = ?",
                [(time.time(), k, rung) for k in keys],
            )
        return files

    def note_checkpoint(
        self, configs: Iterable[RunConfig], owner: str, epochs: int, name: str
    ) -> set[str]:
        """One transaction: the runs ``owner`` still holds among ``configs`` have trained
        ``epochs`` epochs and their state is in checkpoint file ``name``. Returns the files
        they were in before (for :meth:`checkpoint_used`)."""
        keys = [config_key(c) for c in configs]
        with self._tx():
            old = {
                n
                for k in keys
                for (n,) in self.db.execute(
                    "SELECT checkpoint FROM runs WHERE key = ? AND owner = ? AND "
                    "status = 'running' AND checkpoint IS NOT NULL",
                    (k, owner),
                )
            }
            self.db.executemany(
                "UPDATE runs SET epochs = ?, checkpoint = ? WHERE key = ? AND owner = ? AND "
                "status = 'running'",
                [(epochs, name, k, owner) for k in keys],
            )
        return old

    def restart(self, name: str) -> int:
        """One transaction: the pending runs whose state was in checkpoint ``name`` (gone)
        train again from the start. Returns how many."""
        with self._tx():
            return self.db.execute(
                "UPDATE runs SET epochs = 0, checkpoint = NULL, updated = ? WHERE checkpoint = ? "
                "AND status = 'pending'",
                (time.time(), name),
            ).rowcount

    def untouched(self) -> bool:
        """Whether the study holds nothing of value: no run done, pruned or diverged, none
        that trained an epoch or has a checkpoint, and no process registered (another may be
        training it)."""
        done = self.db.execute(
            "SELECT COUNT(*) FROM runs WHERE status NOT IN ('pending', 'failed') "
            f"OR {self._v3('checkpoint')} IS NOT NULL OR COALESCE({self._v3('epochs')}, 0) > 0"
        ).fetchone()[0]
        return done == 0 and self.db.execute("SELECT COUNT(*) FROM workers").fetchone()[0] == 0

    def checkpoint_used(self, name: str) -> bool:
        """Whether a run not finished yet (pending, running, failed) has its state in ``name``."""
        return bool(
            self.db.execute(
                "SELECT 1 FROM runs WHERE checkpoint = ? AND status IN "
                "('pending', 'running', 'failed') LIMIT 1",
                (name,),
            ).fetchone()
        )
