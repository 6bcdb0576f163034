"""The study store: one SQLite file per study directory, in WAL mode.

It is the single source of truth for a sweep's results: tables, plots and exports read only
from here. Runs are written one batch at a time, in one transaction each, so a crash loses at
most the batch in flight.

**What is a wdlab store.** A store made by this wdlab carries ``PRAGMA application_id`` =
:data:`APPLICATION_ID` and ``PRAGMA user_version`` = its schema version
(:data:`SCHEMA_VERSION`). Schema 1 (wdlab 0.1 and 0.2, no application id) is recognised by its
tables: it is read as it is, and migrated to schema 2 in one transaction the first time a sweep
writes to it. Anything else — another program's SQLite file, random bytes, a store from a
newer wdlab — is refused in one line (:class:`StoreError`), before SQLite opens it for writing,
so its bytes stay as they were.

**Reading never writes.** ``Store(dir, readonly=True)`` (``show``, ``export``, ``report``,
``ls``) opens the file read-only (``immutable`` where no writer is attached), so read-only and
foreign folders can be read and nothing is changed.

**Several processes.** Each sweep process registers as a *worker* (``host:pid:start``) and
claims runs batch by batch (``running``, with itself as ``owner``); a run is claimed only while
it is ``pending``, so no configuration is ever trained twice. Runs held by a worker that is gone
(its process ended, or, on another host, its heartbeat is older than :data:`LEASE_SECONDS`) go
back to ``pending`` (:meth:`Store.reclaim`). The first opens of a new store are serialised with
a lock on the directory, so two sweeps started together create one study.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wdlab.jsonsafe import dumps
from wdlab.records import Curves, RunConfig, RunResult, is_per_epoch

DB_NAME = "study.db"
STATUSES = ("pending", "running", "done", "diverged", "failed")
APPLICATION_ID = 0x77646C62  # "wdlb": marks a file as a wdlab study store
SCHEMA_VERSION = 2  # PRAGMA user_version of the stores this wdlab writes
LEASE_SECONDS = 600.0  # a worker on another host is gone when its heartbeat is older
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL,
    created TEXT NOT NULL,
    data TEXT,
    task TEXT,
    seconds REAL NOT NULL DEFAULT 0
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
    updated REAL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS curves (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    metric TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, metric, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    beat REAL NOT NULL
);
"""

# Schema 1 kept no wall time: each batch's time (stored on each of its runs), counted once.
V1_WALL_TIME = (
    "SELECT COALESCE(SUM(s), 0) FROM "
    "(SELECT DISTINCT seconds AS s FROM runs WHERE seconds IS NOT NULL)"
)

# Schema 1 -> 2: the study's wall time, each run's owner, the workers; then the marks.
MIGRATE_1_TO_2 = f"""
ALTER TABLE study ADD COLUMN seconds REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN owner TEXT;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,
    beat REAL NOT NULL
);
UPDATE study SET seconds = ({V1_WALL_TIME});
"""

V1_TABLES = {
    "study": {"name", "config", "config_hash", "code_version", "created", "data", "task"},
    "runs": {"key", "config", "status", "attempts", "final", "best", "engine", "seconds"},
    "curves": {"run_id", "metric", "epoch", "value"},
}


class StoreError(ValueError):
    """A study store that cannot be used: foreign, corrupt, newer, unreadable (one line)."""


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


# ---------------------------------------------------------------------------------------------
# Recognising a store without writing to it.


def _header(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(100)


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that creates no file: ``immutable`` where no writer is attached
    (no ``-wal`` file), else a normal read-only open (and ``immutable`` if that fails, as in a
    read-only folder)."""
    base = f"file:{quote(str(path.resolve()))}?mode=ro"
    tries = [base, base + "&immutable=1"]
    if not path.with_name(path.name + "-wal").exists():
        tries = tries[1:]
    err: sqlite3.Error | None = None
    for uri in tries:
        db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error as exc:
            db.close()
            err = exc
    raise StoreError(f"{path}: cannot open the study store read-only ({err})")


def _tables(db: sqlite3.Connection) -> dict[str, set[str]]:
    names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {n: {row[1] for row in db.execute(f"PRAGMA table_info('{n}')")} for n in names}


def identify(path: str | Path) -> int:
    """The schema version of the wdlab store at ``path`` (0: an empty file, a new store), or a
    one-line :class:`StoreError` for anything that is not a wdlab store this wdlab reads.

    The file is only read: its header first (a foreign SQLite file's application id), then,
    for a file without an application id, its tables through a read-only connection.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return 0
    head = _header(path)
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path} is not a wdlab study store (not an SQLite database); left as is")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} belongs to another program (SQLite application id {app_id:#x}), "
            "not a wdlab study store; left as is"
        )
    db = _connect_ro(path)
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]  # through the WAL too
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = _tables(db) if app_id != APPLICATION_ID else {}
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the study store ({exc}); left as is") from None
    finally:
        db.close()
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer wdlab (store schema {version}; this wdlab reads "
                f"up to {SCHEMA_VERSION}): upgrade wdlab to read it"
            )
        return version
    if all(set(cols) <= tables.get(t, set()) for t, cols in V1_TABLES.items()):
        return 1
    found = ", ".join(sorted(tables)) or "no tables"
    raise StoreError(
        f"{path} is an SQLite database but not a wdlab study store ({found}); left as is"
    )


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (flock), so that first opens and migrations of
    one store happen one process at a time; a no-op where flock is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------------------------------------
# Workers: who holds which runs.


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] where missing."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str | None:
    """A process's start time (Linux clock ticks since boot), to tell it from a later process
    that got the same pid; None where /proc is missing."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def worker_id(pid: int | None = None) -> str:
    """This process's worker id: ``host:pid:start``."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def _alive(worker: str, beat: float, now: float) -> bool:
    """Whether a registered worker still runs: on this host, its process (same pid, same start
    time); on another host, a heartbeat within :data:`LEASE_SECONDS`."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return now - beat < LEASE_SECONDS
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # ended, not yet reaped by its parent
        return False
    return start == "?" or (len(fields) > 19 and fields[19] == start)


class Store:
    """One study's SQLite store. Use as a context manager, or call :meth:`close`.

    ``readonly=True`` opens an existing store for reading only (it never writes, migrates or
    creates anything); otherwise the directory and the store are created as needed and a
    schema-1 store is migrated. Either way a file that is not a wdlab store is refused
    (:class:`StoreError`) untouched.
    """

    def __init__(self, directory: str | Path, readonly: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no study in {self.dir} (no {DB_NAME})")
            self.version = identify(self.path)
            if self.version == 0:
                raise StoreError(f"{self.path} is empty: it holds no study")
            self.db = _connect_ro(self.path)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with _dir_lock(self.dir):
            version = identify(self.path) if self.path.exists() else 0
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                self._prepare(version)
            except BaseException:
                self.db.close()
                raise
        self.version = SCHEMA_VERSION

    def _prepare(self, version: int) -> None:
        """Create (version 0) or migrate the store, then WAL mode."""
        db = self.db
        db.execute("PRAGMA busy_timeout = 30000")
        if version == 0:  # marks first, in rollback mode: they reach the file's header at once
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        elif version == 1:
            db.executescript(
                f"BEGIN IMMEDIATE;{MIGRATE_1_TO_2}PRAGMA application_id = {APPLICATION_ID};"
                f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
            )
        db.execute("PRAGMA journal_mode=WAL")
        if version == 1:
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
        return {
            "name": name,
            "config": json.loads(config),
            "config_hash": chash,
            "code_version": version,
            "created": created,
            "data": json.loads(data) if data else {},
            "task": task,
            "seconds": secs or 0.0,
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

    # -- workers and claims ------------------------------------------------------------------

    def register(self, owner: str) -> None:
        """Record this process as a worker of the study (its heartbeat starts now)."""
        now = time.time()
        host, _, rest = owner.partition(":")
        with self._tx():
            self.db.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, started, beat) VALUES (?,?,?,?,?)",
                (owner, host, int(rest.split(":")[0]), now, now),
            )

    def beat(self, owner: str) -> None:
        """This worker is alive (for workers on other hosts)."""
        with self._tx():
            self.db.execute("UPDATE workers SET beat = ? WHERE id = ?", (time.time(), owner))

    def unregister(self, owner: str) -> int:
        """This worker leaves: runs it still holds go back to ``pending``; returns how many."""
        with self._tx():
            n = self.db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL "
                "WHERE owner = ? AND status = 'running'",
                (owner,),
            ).rowcount
            self.db.execute("DELETE FROM workers WHERE id = ?", (owner,))
        return n

    def reclaim(self) -> int:
        """Runs held by no live worker (a process killed, or a crash) go back to ``pending``;
        workers that are gone are forgotten. Returns how many runs were reclaimed."""
        now = time.time()
        with self._tx():
            workers = self.db.execute("SELECT id, beat FROM workers").fetchall()
            gone = [(w,) for w, beat in workers if not _alive(w, beat, now)]
            self.db.executemany("DELETE FROM workers WHERE id = ?", gone)
            return self.db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL WHERE status = 'running' AND "
                "(owner IS NULL OR owner NOT IN (SELECT id FROM workers))"
            ).rowcount

    def retry_failed(self) -> int:
        """Failed runs go back to ``pending`` (a rerun retries them); returns how many."""
        with self._tx():
            return self.db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL WHERE status = 'failed'"
            ).rowcount

    def claim(self, configs: Iterable[RunConfig], owner: str) -> list[RunConfig]:
        """One transaction: mark those of ``configs`` still pending as running under
        ``owner``; return them (the others are held by another worker, or finished)."""
        claimed = []
        with self._tx():
            for c in configs:
                n = self.db.execute(
                    "UPDATE runs SET status = 'running', owner = ?, attempts = attempts + 1, "
                    "updated = ? WHERE key = ? AND status = 'pending'",
                    (owner, time.time(), config_key(c)),
                ).rowcount
                if n:
                    claimed.append(c)
        return claimed

    def holders(self, exclude: str | None = None) -> dict[str, int]:
        """Live workers (other than ``exclude``) holding running runs: worker id → runs."""
        rows = self.db.execute(
            "SELECT owner, COUNT(*) FROM runs WHERE status = 'running' AND owner IS NOT NULL "
            "GROUP BY owner"
        ).fetchall()
        beats = dict(self.db.execute("SELECT id, beat FROM workers").fetchall())
        now = time.time()
        return {w: n for w, n in rows if w != exclude and w in beats and _alive(w, beats[w], now)}

    # -- runs --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many runs have each status."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    def failures(self) -> dict[str, int]:
        """Why runs failed: error message → how many runs."""
        rows = self.db.execute(
            "SELECT COALESCE(error, 'unknown error'), COUNT(*) FROM runs "
            "WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC"
        )
        return dict(rows.fetchall())

    def pending(self) -> list[RunConfig]:
        """Configurations still to train, in insertion order."""
        rows = self.db.execute("SELECT config FROM runs WHERE status = 'pending' ORDER BY id")
        return [RunConfig.from_dict(json.loads(c)) for (c,) in rows]

    def mark_failed(self, owner: str, error: str) -> int:
        """One transaction: the runs ``owner`` holds failed with ``error``; returns how many."""
        with self._tx():
            return self.db.execute(
                "UPDATE runs SET status = 'failed', error = ?, owner = NULL, updated = ? "
                "WHERE owner = ? AND status = 'running'",
                (error, time.time(), owner),
            ).rowcount

    def add_seconds(self, seconds: float) -> None:
        """Add wall time spent on the study (by the process calling)."""
        with self._tx():
            self.db.execute("UPDATE study SET seconds = seconds + ? WHERE id = 1", (seconds,))

    def save_batch(self, results: Sequence[RunResult], seconds: float = 0.0) -> None:
        """One transaction: a finished batch's runs and all their curves, and ``seconds`` of
        wall time added to the study's."""
        with self._tx():
            for r in results:
                self._save_run(r)
            self.db.execute("UPDATE study SET seconds = seconds + ? WHERE id = 1", (seconds,))

    def _save_run(self, r: RunResult) -> None:
        (run_id,) = self.db.execute(
            "SELECT id FROM runs WHERE key = ?", (config_key(r.config),)
        ).fetchone()
        self.db.execute(
            "UPDATE runs SET status = ?, final = ?, best = ?, engine = ?, diverged_epoch = ?, "
            "seconds = ?, error = NULL, owner = NULL, updated = ? WHERE id = ?",
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
        """Every run as a flat dict (config, status, attempts, error, final metrics)."""
        out = []
        for run_id, config, status, attempts, final, error in self.db.execute(
            "SELECT id, config, status, attempts, final, error FROM runs ORDER BY id"
        ):
            cfg = json.loads(config)
            row = {"run_id": run_id, "status": status, "attempts": attempts, "error": error}
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
