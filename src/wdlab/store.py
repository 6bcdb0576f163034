"""The study store: one SQLite file per study directory, in WAL mode.

It is the single source of truth for a sweep's results: tables, plots and exports read only
from here. Runs are written one batch at a time, in one transaction each, so a crash loses at
most the batch in flight; on the next open, runs left ``running`` go back to ``pending``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from wdlab.jsonsafe import dumps
from wdlab.records import Curves, RunConfig, RunResult, is_per_epoch

DB_NAME = "study.db"
STATUSES = ("pending", "running", "done", "diverged", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL,
    created TEXT NOT NULL,
    data TEXT,
    task TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    final TEXT,
    best TEXT,
    engine TEXT,
    diverged_epoch INTEGER,
    seconds REAL,
    error TEXT,
    updated REAL
);
CREATE TABLE IF NOT EXISTS curves (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    metric TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, metric, epoch)
) WITHOUT ROWID;
"""


def config_key(cfg: RunConfig) -> str:
    """A stable identity for one configuration (its JSON, hashed)."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:20]


def hash_config(config: dict[str, Any]) -> str:
    """A stable hash of an experiment config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json(obj: Any) -> str:
    return dumps(obj, sort_keys=True)


def _unnan(obj: Any) -> Any:
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: _unnan(v) for k, v in obj.items()}
    return obj


class Store:
    """One study's SQLite store. Use as a context manager, or call :meth:`close`."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    # -- the study ---------------------------------------------------------------------------

    def study(self) -> dict[str, Any] | None:
        """The study row (config, data, task, …), or None for an empty store."""
        row = self.db.execute(
            "SELECT name, config, config_hash, code_version, created, data, task FROM study"
        ).fetchone()
        if row is None:
            return None
        name, config, chash, version, created, data, task = row
        return {
            "name": name,
            "config": json.loads(config),
            "config_hash": chash,
            "code_version": version,
            "created": created,
            "data": json.loads(data) if data else {},
            "task": task,
        }

    def init_study(
        self, name: str, config: dict[str, Any], configs: Sequence[RunConfig], code_version: str
    ) -> None:
        """Create the study (or check it is the same one) and add its runs as pending.

        Raises ``ValueError`` when the directory holds a study of another config.
        """
        chash = hash_config(config)
        existing = self.study()
        if existing is not None and existing["config_hash"] != chash:
            raise ValueError(
                f"{self.dir} holds another study (config {existing['config_hash']}, this one "
                f"{chash}); choose another --out to start a new one"
            )
        with self._tx():
            if existing is None:
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

    # -- runs --------------------------------------------------------------------------------

    def recover(self) -> int:
        """Runs left ``running`` by a crash go back to ``pending``; returns how many."""
        with self._tx():
            cur = self.db.execute("UPDATE runs SET status = 'pending' WHERE status = 'running'")
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        """How many runs have each status."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    def pending(self) -> list[RunConfig]:
        """Configurations still to train, in insertion order."""
        rows = self.db.execute("SELECT config FROM runs WHERE status = 'pending' ORDER BY id")
        return [RunConfig.from_dict(json.loads(c)) for (c,) in rows]

    def running(self) -> list[RunConfig]:
        """Configurations marked running (in flight, or left by a crash)."""
        rows = self.db.execute("SELECT config FROM runs WHERE status = 'running' ORDER BY id")
        return [RunConfig.from_dict(json.loads(c)) for (c,) in rows]

    def mark_running(self, configs: Iterable[RunConfig]) -> None:
        """One transaction: these configurations are being trained."""
        with self._tx():
            self.db.executemany(
                "UPDATE runs SET status = 'running', attempts = attempts + 1, updated = ? "
                "WHERE key = ?",
                [(time.time(), config_key(c)) for c in configs],
            )

    def mark_failed(self, configs: Iterable[RunConfig], error: str) -> None:
        """One transaction: these configurations failed with ``error``."""
        with self._tx():
            self.db.executemany(
                "UPDATE runs SET status = 'failed', error = ?, updated = ? WHERE key = ?",
                [(error, time.time(), config_key(c)) for c in configs],
            )

    def save_batch(self, results: Sequence[RunResult]) -> None:
        """One transaction: a finished batch's runs and all their curves."""
        with self._tx():
            for r in results:
                key = config_key(r.config)
                (run_id,) = self.db.execute("SELECT id FROM runs WHERE key = ?", (key,)).fetchone()
                self.db.execute(
                    "UPDATE runs SET status = ?, final = ?, best = ?, engine = ?, "
                    "diverged_epoch = ?, seconds = ?, error = NULL, updated = ? WHERE id = ?",
                    (
                        r.status,
                        _json(r.final),
                        _json(r.best),
                        r.engine,
                        r.diverged_epoch,
                        r.seconds,
                        time.time(),
                        run_id,
                    ),
                )
                self.db.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
                c = r.curves
                rows = [
                    (run_id, metric, e, _num(v))
                    for metric, values in c.series.items()
                    for e, v in zip(c.axis(metric), values, strict=True)
                ]
                self.db.executemany(
                    "INSERT INTO curves (run_id, metric, epoch, value) VALUES (?, ?, ?, ?)", rows
                )

    def runs(self, with_curves: bool = True) -> list[RunResult]:
        """Every finished (done or diverged) run, rebuilt as RunResults, in insertion order."""
        rows = self.db.execute(
            "SELECT id, config, status, final, best, engine, diverged_epoch, seconds FROM runs "
            "WHERE status IN ('done', 'diverged') ORDER BY id"
        ).fetchall()
        return [self._run(row, with_curves) for row in rows]

    def _run(self, row: tuple, with_curves: bool) -> RunResult:
        run_id, config, status, final, best, engine_note, div, seconds = row
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
            final=_unnan(json.loads(final)) if final else {},
            status=status,
            diverged_epoch=div,
            best=json.loads(best) if best else {},
            seconds=seconds or 0.0,
            engine=engine_note or "",
        )

    def run_rows(self) -> list[dict[str, Any]]:
        """Every run as a flat dict (config, status, attempts, final metrics), for exports."""
        out = []
        for run_id, config, status, attempts, final in self.db.execute(
            "SELECT id, config, status, attempts, final FROM runs ORDER BY id"
        ):
            cfg = json.loads(config)
            row = {"run_id": run_id, "status": status, "attempts": attempts}
            row.update({k: v for k, v in cfg.items() if k != "options"})
            row.update({f"opt_{k}": v for k, v in cfg.get("options", {}).items()})
            row.update({f"final_{k}": v for k, v in (json.loads(final) if final else {}).items()})
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
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def find_studies(root: str | Path) -> list[Path]:
    """Study directories (holding a study.db) under ``root``, newest first."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p.parent for p in root.rglob(DB_NAME)]
    return sorted(found, key=lambda p: (p / DB_NAME).stat().st_mtime, reverse=True)
