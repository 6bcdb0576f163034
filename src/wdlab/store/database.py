"""The study store: one SQLite file per study directory, in WAL mode.

It is the single source of truth for a sweep's results: tables, plots and exports read only
from here. Runs are written one batch at a time, in one transaction each, so a crash loses at
most the batch in flight.

The file's format and how it is recognised are in :mod:`wdlab.store.schema`; workers and
their leases in :mod:`wdlab.store.workers`; the runs' epochs, checkpoints and the rungs'
decisions in :mod:`wdlab.store.progress`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from wdlab.records import Curves, RunConfig, RunResult, is_per_epoch
from wdlab.store.progress import Progress
from wdlab.store.schema import (
    APPLICATION_ID,
    DB_NAME,
    FINISHED,
    MIGRATE_1_TO_2,
    MIGRATE_2_TO_3,
    SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    V1_WALL_TIME,
    StoreError,
    _connect_ro,
    _finite_or_null,
    _json,
    _rebuilt,
    _unnan,
    config_key,
    flat_run,
    hash_config,
    identify,
)
from wdlab.store.workers import Workers, dir_lock


class Store(Workers, Progress):
    """One study's SQLite store. Use as a context manager, or call :meth:`close`.

    ``readonly=True`` opens an existing store for reading only (it never writes, migrates or
    creates anything); otherwise the directory and the store are created as needed and a
    store of an older schema is migrated. Either way a file that is not a wdlab store is refused
    (:class:`StoreError`) untouched.
    """

    def __init__(self, directory: str | Path, readonly: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        self.readonly = readonly
        if readonly:
            if self.path.exists() and not self.path.is_file():
                raise StoreError(f"{self.path} is not a regular file: it holds no study")
            if not self.path.is_file():
                why = "a file, not a folder" if self.dir.is_file() else f"no {DB_NAME}"
                why = why if self.dir.exists() else "no such folder"
                raise StoreError(f"no study in {self.dir} ({why})")
            self.version = identify(self.path)
            if self.version == 0:
                raise StoreError(f"{self.path} is empty: it holds no study")
            self.db = _connect_ro(self.path)
            self._check_intact()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with dir_lock(self.dir):
            version = identify(self.path) if self.path.exists() else 0
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                if version:
                    self._check_intact()
                self._prepare(version)
            except BaseException:
                self.db.close()
                raise
        self.version = SCHEMA_VERSION

    def _check_intact(self) -> None:
        """SQLite's ``quick_check`` (every page's structure, in time linear in the file): a
        damaged store is one :class:`StoreError` before anything reads a part of it or writes;
        it is closed and left as is."""
        try:
            found = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as exc:
            found = str(exc)
        if found != "ok":
            self.db.close()
            raise StoreError(f"{self.path}: the study store is damaged ({found}); left as is")

    def _prepare(self, version: int) -> None:
        """Create (version 0) or migrate the store, then WAL mode."""
        db = self.db
        db.execute("PRAGMA busy_timeout = 30000")
        if version == 0:  # marks first, in rollback mode: they reach the file's header at once
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        elif version < SCHEMA_VERSION:  # one transaction: every step from its version on
            steps = (MIGRATE_1_TO_2 if version == 1 else "") + MIGRATE_2_TO_3
            db.executescript(
                f"BEGIN IMMEDIATE;{steps}PRAGMA application_id = {APPLICATION_ID};"
                f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
            )
        columns = {row[1] for row in db.execute("PRAGMA table_info('workers')")}
        if "lease" not in columns:  # a schema-2 store of an earlier wdlab: leases are added
            db.executescript("BEGIN IMMEDIATE;ALTER TABLE workers ADD COLUMN lease REAL;COMMIT;")
        db.execute("PRAGMA journal_mode=WAL")
        if 0 < version < SCHEMA_VERSION:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the new marks into the header
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        if isinstance(exc, sqlite3.Error):  # one line naming the store, never a traceback
            raise StoreError(f"{self.path}: study store error ({exc})") from None

    def _tx(self) -> _Transaction:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        return _Transaction(self.db)

    # -- the study ---------------------------------------------------------------------------

    def study(self) -> dict[str, Any] | None:
        """The study row (config, data, task, wall seconds, …), or None for an empty store."""
        seconds = "seconds" if self.version >= 2 else "0"
        row = self.db.execute(
            "SELECT name, config, config_hash, code_version, created, data, task, "
            f"{seconds} FROM study"
        ).fetchone()
        if row is None:
            return None
        name, config, chash, version, created, data, task, secs = row
        if self.version < 2:
            secs = self.db.execute(V1_WALL_TIME).fetchone()[0]
        with _rebuilt(self.path, "the study row"):
            return {
                "name": name,
                "config": dict(json.loads(config)),
                "config_hash": chash,
                "code_version": version,
                "created": created,
                "data": dict(json.loads(data)) if data else {},
                "task": task,
                "seconds": float(secs or 0.0),
            }

    def init_study(
        self,
        name: str,
        config: dict[str, Any],
        configs: Sequence[RunConfig],
        code_version: str,
        identity: dict[str, Any] | None = None,
    ) -> None:
        """Create the study (or check it is the same one) and add its runs as pending.

        ``identity`` (default: ``config``) is what identifies the study, hashed; ``config`` is
        what is stored. Raises ``ValueError`` when the directory holds another study.
        """
        chash = hash_config(identity if identity is not None else config)
        with self._tx():  # read and insert in one transaction: two first opens make one study
            row = self.db.execute("SELECT config_hash FROM study").fetchone()
            if row is not None and row[0] != chash:
                raise ValueError(
                    f"{self.dir} holds another study (config {row[0]}, this one {chash}); "
                    "choose another --out to start a new one"
                )
            if row is None:
                self.db.execute(
                    "INSERT INTO study (id, name, config, config_hash, code_version, created) "
                    "VALUES (1, ?, ?, ?, ?, ?)",
                    (name, _json(config), chash, code_version, time.strftime("%Y-%m-%d %H:%M:%S")),
                )
            self.db.executemany(
                "INSERT OR IGNORE INTO runs (key, config) VALUES (?, ?)",
                [(config_key(c), _json(c.to_dict())) for c in configs],
            )

    def set_data(self, data: dict[str, Any], task: str) -> None:
        """Record facts about the data (name, sizes, Bayes-optimal alpha…) and the task."""
        with self._tx():
            self.db.execute("UPDATE study SET data = ?, task = ? WHERE id = 1", (_json(data), task))

    # -- claims ------------------------------------------------------------------------------

    def retry_failed(self) -> int:
        """Failed runs go back to ``pending`` (a rerun retries them); returns how many."""
        with self._tx():
            return self.db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL WHERE status = 'failed'"
            ).rowcount

    def claim(
        self,
        configs: Iterable[RunConfig],
        owner: str,
        at: tuple[int | None, str | None] | None = None,
    ) -> list[RunConfig]:
        """One transaction: mark those of ``configs`` still pending as running under
        ``owner`` (a start from the beginning counts as an attempt; going on from a rung or a
        checkpoint does not); return them (the others are held by another worker, or finished). With
        ``at`` (epochs trained, or None for any; checkpoint file, or None for none), only
        those still where the caller planned to go on from: not a run that another process
        has trained further since."""
        where, extra = "", []
        if at is not None:
            where, extra = " AND checkpoint IS ?", [at[1]]
            if at[0] is not None:
                where, extra = where + " AND COALESCE(epochs, 0) = ?", [*extra, at[0]]
        claimed = []
        with self._tx():
            for c in configs:
                n = self.db.execute(
                    "UPDATE runs SET status = 'running', owner = ?, attempts = attempts + "
                    "(checkpoint IS NULL), "  # a start, not a rung's or checkpoint's going on
                    f"updated = ? WHERE key = ? AND status = 'pending'{where}",
                    (owner, time.time(), config_key(c), *extra),
                ).rowcount
                if n:
                    claimed.append(c)
        return claimed

    # -- runs --------------------------------------------------------------------------------

    def counts(self, live: bool = False) -> dict[str, int]:
        """How many runs have each status (``pruned`` only in a study that pruned some); with
        ``live``, runs no live worker holds (:meth:`holders`) count as pending, as the next
        sweep takes them (a view never shows a dead sweep's runs as being trained)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        held = sum(self.holders().values()) if live and out["running"] else out["running"]
        return out | {"running": held, "pending": out["pending"] + out["running"] - held}

    def failures(self) -> dict[str, int]:
        """Why runs failed: error message → how many runs."""
        rows = self.db.execute(
            "SELECT COALESCE(error, 'unknown error'), COUNT(*) FROM runs "
            "WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC"
        )
        return dict(rows.fetchall())

    def pending(self) -> list[RunConfig]:
        """Configurations still to train, in insertion order."""
        rows = self.db.execute("SELECT id, config FROM runs WHERE status = 'pending' ORDER BY id")
        out = []
        for run_id, c in rows:
            with _rebuilt(self.path, f"run {run_id}"):
                out.append(RunConfig.from_dict(json.loads(c)))
        return out

    def mark_failed(self, owner: str, error: str, only: Iterable[RunConfig] | None = None) -> int:
        """One transaction: the runs ``owner`` holds (of ``only``, if given) failed with
        ``error``; returns how many."""
        sql = "UPDATE runs SET status = 'failed', error = ?, owner = NULL, updated = ? WHERE "
        sql += "owner = ? AND status = 'running'" + ("" if only is None else " AND key = ?")
        keys = [()] if only is None else [(config_key(c),) for c in only]
        with self._tx():
            return sum(self.db.execute(sql, (error, time.time(), owner, *k)).rowcount for k in keys)

    def add_seconds(self, seconds: float) -> None:
        """Add wall time spent on the study (by the process calling)."""
        with self._tx():
            self.db.execute("UPDATE study SET seconds = seconds + ? WHERE id = 1", (seconds,))

    def save_batch(
        self,
        results: Sequence[RunResult],
        seconds: float = 0.0,
        owner: str | None = None,
        checkpoint: str | None = None,
    ) -> list[RunResult]:
        """One transaction: a finished batch's runs and all their curves, and ``seconds`` of
        wall time added to the study's. With ``owner``, only the runs it still holds are
        written (a worker that lost its lease does not overwrite the runs another took over).
        A run ``paused`` at a rung is stored ``pending`` with its curves so far, its epochs
        and ``checkpoint`` (the file holding its state). Returns the runs written."""
        with self._tx():
            saved = [r for r in results if self._save_run(r, owner, checkpoint)]
            self.db.execute("UPDATE study SET seconds = seconds + ? WHERE id = 1", (seconds,))
        return saved

    def _save_run(self, r: RunResult, owner: str | None, checkpoint: str | None = None) -> bool:
        held = "" if owner is None else " AND owner = ? AND status = 'running'"
        row = self.db.execute(
            f"SELECT id FROM runs WHERE key = ?{held}",
            (config_key(r.config),) if owner is None else (config_key(r.config), owner),
        ).fetchone()
        if row is None:
            if owner is None:
                raise StoreError(f"{self.path}: no run {r.config.name!r} in this study")
            return False
        (run_id,) = row
        paused = r.status == "paused"
        self.db.execute(
            "UPDATE runs SET status = ?, final = ?, best = ?, engine = ?, diverged_epoch = ?, "
            "seconds = ?, error = NULL, owner = NULL, updated = ?, epochs = ?, checkpoint = ? "
            "WHERE id = ?",
            (
                "pending" if paused else r.status,
                _json(r.final),
                _json(r.best),
                r.engine,
                r.diverged_epoch,
                r.seconds,
                time.time(),
                r.epochs,
                checkpoint if paused else None,
                run_id,
            ),
        )
        self.db.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
        c = r.curves
        rows = [
            (run_id, metric, e, _finite_or_null(v))
            for metric, values in c.series.items()
            for e, v in zip(c.axis(metric), values, strict=True)
        ]
        self.db.executemany(
            "INSERT INTO curves (run_id, metric, epoch, value) VALUES (?, ?, ?, ?)", rows
        )
        return True

    def runs(
        self,
        with_curves: bool = True,
        statuses: Sequence[str] = FINISHED,
        epochs: int | None = None,
    ) -> list[RunResult]:
        """Every finished (done, diverged or pruned) run, rebuilt as RunResults, in insertion
        order; or those of ``statuses`` (with ``epochs`` trained, where given: the runs
        waiting at a rung are ``pending`` with their curves so far)."""
        marks = ", ".join("?" * len(statuses))
        where, args = f"status IN ({marks})", list(statuses)
        if epochs is not None:
            where, args = where + f" AND {self._v3('epochs')} = ?", [*args, epochs]
        rows = self.db.execute(
            "SELECT id, config, status, final, best, engine, diverged_epoch, seconds, "
            f"{self._v3('epochs')} FROM runs WHERE {where} ORDER BY id",
            args,
        ).fetchall()
        out = []
        for row in rows:
            with _rebuilt(self.path, f"run {row[0]}"):
                out.append(self._run(row, with_curves))
        return out

    def _run(self, row: tuple, with_curves: bool) -> RunResult:
        run_id, config, status, final, best, engine_note, div, seconds, epochs = row
        curves = Curves()
        if with_curves:
            for metric, epoch, value in self.db.execute(
                "SELECT metric, epoch, value FROM curves WHERE run_id = ? ORDER BY metric, epoch",
                (run_id,),
            ):
                if metric not in curves.series:
                    curves.series[metric] = []
                    axis = curves.epoch if is_per_epoch(metric) else curves.eval_epoch
                    fill = not axis
                if fill:
                    axis.append(epoch)
                curves.series[metric].append(math.nan if value is None else value)
        return RunResult(
            config=RunConfig.from_dict(json.loads(config)),
            curves=curves,
            final=_unnan(dict(json.loads(final))) if final else {},
            status=status,
            diverged_epoch=div,
            best=dict(json.loads(best)) if best else {},
            seconds=seconds or 0.0,
            engine=engine_note or "",
            epochs=epochs,
        )

    def run_rows(self) -> list[dict[str, Any]]:
        """Every run as a flat dict (config, status, attempts, error, the epoch it diverged at,
        final metrics, and the best epoch's: with early stopping, the numbers it is reported at)."""
        out = []
        for run_id, config, status, attempts, final, error, epochs, best, div in self.db.execute(
            f"SELECT id, config, status, attempts, final, error, {self._v3('epochs')}, best, "
            "diverged_epoch FROM runs ORDER BY id"
        ):
            row = {"run_id": run_id, "status": status, "attempts": attempts, "error": error}
            row |= {"epochs": epochs, "diverged_epoch": div}
            with _rebuilt(self.path, f"run {run_id}"):
                row |= flat_run(config, final, best)
            out.append(row)
        return out

    def curve_rows(self) -> list[tuple]:
        """Tidy curves: (run_id, metric, epoch, value)."""
        return self.db.execute(
            "SELECT run_id, metric, epoch, value FROM curves ORDER BY run_id, metric, epoch"
        ).fetchall()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not exc_type:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite may have rolled back already (a full disk)
            self.db.execute("ROLLBACK")


def find_studies(root: str | Path) -> list[Path]:
    """Study directories (holding a study.db) under ``root``, newest first; folders that
    cannot be listed are skipped."""
    root = Path(root)
    found = []
    for here, dirs, files in os.walk(root, onerror=lambda e: None):
        if DB_NAME in files:
            found.append(Path(here))
        dirs.sort()

    def mtime(p: Path) -> float:
        try:
            return (p / DB_NAME).stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=mtime, reverse=True)
