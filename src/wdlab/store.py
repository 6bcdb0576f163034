"""The study store: one SQLite file per study directory, in WAL mode.

It is the single source of truth for a sweep's results: tables, plots and exports read only
from here. Runs are written one batch at a time, in one transaction each, so a crash loses at
most the batch in flight.

**What is a wdlab store.** A store made by this wdlab carries ``PRAGMA application_id`` =
:data:`APPLICATION_ID` and ``PRAGMA user_version`` = its schema version
(:data:`SCHEMA_VERSION`). Schema 1 (wdlab 0.1 and 0.2, no application id) is recognised by its
tables; schema 2 lacks successive halving (the ``pruned`` status, each run's epochs trained and
checkpoint, the rungs' decisions). Older stores are read as they are, and migrated to schema 3
in one transaction the first time a sweep writes to them. Anything else — another program's
SQLite file, random bytes, a store from a newer wdlab — is refused in one line
(:class:`StoreError`), before SQLite opens it for writing, so its bytes stay as they were.

**Reading never writes.** A file is recognised from its header and, where that has no
wdlab mark, through an ``immutable`` connection, which opens no ``-wal`` or ``-shm`` file: a
foreign SQLite file in WAL mode keeps its ``-shm`` byte for byte. ``Store(dir, readonly=True)``
(``show``, ``export``, ``report``, ``ls``) then opens a wdlab store read-only (``immutable``
where no writer is attached), so read-only folders can be read and nothing is changed.

**Several processes.** Each sweep process registers as a *worker* (``host:pid:start``) with a
*lease* of :func:`lease_seconds` (:data:`LEASE_SECONDS` unless set) and claims runs batch by
batch (``running``, with itself as ``owner``); a run is claimed only while it is ``pending``, so
no configuration is ever trained twice at once. A :class:`LeaseKeeper` thread renews the lease
every quarter of it while the process runs, whatever it is doing (an epoch or a Ray task can
last longer than any lease). Runs held by a worker that is gone — its process ended, or it did
not renew its lease in time (stopped, frozen, on another host and unreachable) — go back to
``pending`` (:meth:`Store.reclaim`). A worker that comes back after losing its lease finds its
runs taken: what it trained is not stored (:meth:`Store.save_batch` writes only the runs the
worker still holds). The first opens of a new store are serialised with a lock on the
directory, so two sweeps started together create one study.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wdlab.jsonsafe import dumps
from wdlab.records import Curves, RunConfig, RunResult, is_per_epoch

DB_NAME = "study.db"
STATUSES = ("pending", "running", "done", "diverged", "failed")
PRUNED = "pruned"  # stopped at a rung by successive halving (counted only where there are some)
FINISHED = ("done", "diverged", PRUNED)  # the runs a study's results are read from
APPLICATION_ID = 0x77646C62  # "wdlb": marks a file as a wdlab study store
SCHEMA_VERSION = 3  # PRAGMA user_version of the stores this wdlab writes
LEASE_SECONDS = 60.0  # a worker that has not renewed its lease for this long has lost it
LEASE_ENV = "WDLAB_LEASE_SECONDS"  # sets the lease of the sweeps started with it
LEGACY_LEASE_SECONDS = 600.0  # workers of an earlier wdlab (no lease stored), on another host
SQLITE_MAGIC = b"SQLite format 3\x00"

# The runs (schema 3): a run waiting at a rung, or checkpointed mid-training, is ``pending``
# with ``epochs`` trained and the ``checkpoint`` file (in checkpoints/) that holds its state.
RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed', 'pruned')),
    attempts INTEGER NOT NULL DEFAULT 0,
    final TEXT,
    best TEXT,
    engine TEXT,
    diverged_epoch INTEGER,
    seconds REAL,
    error TEXT,
    updated REAL,
    owner TEXT,
    epochs INTEGER,
    checkpoint TEXT
);"""
# Successive halving's decision at each rung (epochs trained): what was kept, what pruned, why.
DECISIONS_TABLE = """
CREATE TABLE IF NOT EXISTS decisions (
    rung INTEGER PRIMARY KEY,
    made REAL NOT NULL,
    detail TEXT NOT NULL
);"""

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
{RUNS}
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
    beat REAL NOT NULL,
    lease REAL
);
{DECISIONS}
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
    beat REAL NOT NULL, lease REAL
);
UPDATE study SET seconds = ({V1_WALL_TIME});
"""

SCHEMA = SCHEMA.replace("{RUNS}", RUNS_TABLE.format(name="runs")).replace(
    "{DECISIONS}", DECISIONS_TABLE
)

# Schema 2 -> 3: the runs table again (SQLite cannot change a CHECK), with the 'pruned' status,
# each run's epochs and checkpoint; the decisions.
_V2_COLUMNS = (
    "id, key, config, status, attempts, final, best, engine, diverged_epoch, seconds, error, "
    "updated, owner"
)
MIGRATE_2_TO_3 = f"""
{RUNS_TABLE.format(name="runs_v3")}
INSERT INTO runs_v3 ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;
{DECISIONS_TABLE}
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


DAMAGE = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)


@contextlib.contextmanager
def _rebuilt(path: Path, what: str) -> Iterator[None]:
    """Rebuilding ``what`` from its stored text: anything wrong with it (not JSON, nested too
    deeply, another shape) is one :class:`StoreError` naming the file and the row."""
    try:
        yield
    except StoreError:
        raise
    except DAMAGE as exc:
        why = _why(exc)
        raise StoreError(
            f"{path}: {what} is damaged ({why}): it was changed outside wdlab; left as is"
        ) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _connect_immutable(path: Path) -> sqlite3.Connection:
    """A connection that reads the database file alone: it opens no ``-wal`` or ``-shm`` file
    (so it sees nothing that is only in another program's write-ahead log)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def identify(path: str | Path) -> int:
    """The schema version of the wdlab store at ``path`` (0: an empty file, a new store), or a
    one-line :class:`StoreError` for anything that is not a wdlab store this wdlab reads.

    The file is only read, and nothing beside it is opened: its header (the application id and
    schema version a wdlab store writes there before anything else), then, for a file without
    an application id, its tables through an ``immutable`` connection (a foreign file in WAL
    mode keeps its ``-wal`` and ``-shm`` as they were).
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
    if app_id == APPLICATION_ID:
        version = int.from_bytes(head[60:64], "big")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer wdlab (store schema {version}; this wdlab reads "
                f"up to {SCHEMA_VERSION}): upgrade wdlab to read it"
            )
        return version
    db = _connect_immutable(path)
    try:
        tables = _tables(db)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the study store ({exc}); left as is") from None
    finally:
        db.close()
    if tables and all(set(cols) <= tables.get(t, set()) for t, cols in V1_TABLES.items()):
        return 1
    if not tables and path.with_name(path.name + "-wal").exists():
        raise StoreError(
            f"{path} is an SQLite database whose tables are in a write-ahead log that another "
            "program is writing; not a wdlab study store as far as can be told without writing "
            "to it; left as is"
        )
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


def lease_seconds(value: float | None = None) -> float:
    """The lease a sweep process takes: ``value``, else ``$WDLAB_LEASE_SECONDS``, else
    :data:`LEASE_SECONDS`; a one-line ``ValueError`` unless it is a finite number >= 1."""
    where = "lease_seconds"
    if value is None and os.environ.get(LEASE_ENV, "").strip():
        where, value = LEASE_ENV, os.environ[LEASE_ENV]
    if value is None:
        return LEASE_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 1):
        raise ValueError(f"{where} must be a number of seconds >= 1, got {value!r}")
    return seconds


def _gone(worker: str, beat: float, lease: float | None, now: float) -> str | None:
    """Why a registered worker is gone ("its process ended", "no lease renewal for N s"), or
    None while it holds its lease: renewed within ``lease`` seconds and, on this host, its
    process (same pid, same start time) still there. A worker of an earlier wdlab (no lease):
    its process on this host, a heartbeat within :data:`LEGACY_LEASE_SECONDS` on another."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    limit = LEGACY_LEASE_SECONDS if lease is None else lease
    late = f"no lease renewal for {now - beat:.0f} s (lease {limit:g} s)"
    if host != socket.gethostname():
        return late if now - beat >= limit else None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return "its process ended"
    except (PermissionError, ValueError):
        pid = 0
    fields = _stat(pid) if pid else []
    if fields and fields[0] in ("Z", "X"):  # ended, not yet reaped by its parent
        return "its process ended"
    if pid and start != "?" and not (len(fields) > 19 and fields[19] == start):
        return "its process ended"  # the pid is another process's now
    if lease is not None and now - beat >= lease:
        return late
    return None


def _renew(db: sqlite3.Connection, owner: str, lease: float) -> bool:
    """One transaction: ``owner``'s lease runs from now. False when the worker had been
    forgotten (its lease was lost): it is registered again, holding nothing."""
    now = time.time()
    host, _, rest = owner.partition(":")
    db.execute("BEGIN IMMEDIATE")
    try:
        kept = db.execute(
            "UPDATE workers SET beat = ?, lease = ? WHERE id = ?", (now, lease, owner)
        ).rowcount
        if not kept:
            db.execute(
                "INSERT INTO workers (id, host, pid, started, beat, lease) VALUES (?,?,?,?,?,?)",
                (owner, host, int(rest.split(":")[0]), now, now, lease),
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return bool(kept)


class LeaseKeeper:
    """Renews a worker's lease from a thread of its own, on a connection of its own, every
    quarter of the lease, until :meth:`stop`.

    A thread, not the training loop: an epoch (a user's DataLoader) or a Ray task has no
    bound on its length, and the lease must hold through it. It stops renewing exactly when
    the process stops running — killed, stopped (SIGSTOP, a debugger), frozen — so another
    process takes the runs over one lease later. ``lost`` counts the renewals that found the
    lease taken (the process had been stopped for longer than the lease).
    """

    def __init__(self, path: Path, owner: str, seconds: float) -> None:
        self.path, self.owner, self.seconds = path, owner, seconds
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wdlab-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        """Start renewing; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (and wait for the thread)."""
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        period = self.seconds / 4
        db = sqlite3.connect(self.path, timeout=period, isolation_level=None)
        try:
            while not self._stop.wait(period):
                try:
                    if not _renew(db, self.owner, self.seconds):
                        self.lost += 1
                except sqlite3.Error:  # busy or full: the next period tries again
                    pass
        finally:
            db.close()


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

    # -- workers and claims ------------------------------------------------------------------

    def register(self, owner: str, lease: float = LEASE_SECONDS) -> None:
        """Record this process as a worker of the study, holding a lease of ``lease`` seconds
        from now (renewed by :meth:`beat` or a :class:`LeaseKeeper`)."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        _renew(self.db, owner, lease)

    def beat(self, owner: str, lease: float = LEASE_SECONDS) -> bool:
        """Renew ``owner``'s lease; False when it had been lost (its runs were taken over)."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        return _renew(self.db, owner, lease)

    def keep_lease(self, owner: str, lease: float) -> LeaseKeeper:
        """A started :class:`LeaseKeeper` renewing ``owner``'s lease; stop it when done."""
        return LeaseKeeper(self.path, owner, lease).start()

    def unregister(self, owner: str) -> int:
        """This worker leaves: runs it still holds go back to ``pending``; returns how many."""
        with self._tx():
            n = self._release(owner)
            self.db.execute("DELETE FROM workers WHERE id = ?", (owner,))
        return n

    def release(self, owner: str) -> int:
        """Runs ``owner`` holds go back to ``pending`` (it stays a worker); returns how many."""
        with self._tx():
            return self._release(owner)

    def _release(self, owner: str) -> int:
        return self.db.execute(
            "UPDATE runs SET status = 'pending', owner = NULL "
            "WHERE owner = ? AND status = 'running'",
            (owner,),
        ).rowcount

    def reclaim(self) -> dict[str, tuple[int, str]]:
        """Runs held by no live worker (its process ended, its lease ran out, a crash) go back
        to ``pending``; workers that are gone are forgotten. Returns, per worker whose runs
        were taken back, how many and why (``""``: runs with no owner)."""
        now = time.time()
        with self._tx():
            workers = self.db.execute("SELECT id, beat, lease FROM workers").fetchall()
            gone = {w: why for w, beat, lease in workers if (why := _gone(w, beat, lease, now))}
            self.db.executemany("DELETE FROM workers WHERE id = ?", [(w,) for w in gone])
            rows = self.db.execute(
                "SELECT COALESCE(owner, ''), COUNT(*) FROM runs WHERE status = 'running' AND "
                "(owner IS NULL OR owner NOT IN (SELECT id FROM workers)) GROUP BY 1"
            ).fetchall()
            self.db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL WHERE status = 'running' AND "
                "(owner IS NULL OR owner NOT IN (SELECT id FROM workers))"
            )
        return {w: (n, gone.get(w, "no longer registered")) for w, n in rows}

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
        ``owner``; return them (the others are held by another worker, or finished). With
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
                    "UPDATE runs SET status = 'running', owner = ?, attempts = attempts + 1, "
                    f"updated = ? WHERE key = ? AND status = 'pending'{where}",
                    (owner, time.time(), config_key(c), *extra),
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
        leases = {w: (b, ls) for w, b, ls in self.db.execute("SELECT id, beat, lease FROM workers")}
        now = time.time()
        return {
            w: n
            for w, n in rows
            if w != exclude and w in leases and _gone(w, *leases[w], now) is None
        }

    # -- runs --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many runs have each status (``pruned`` only in a study that pruned some)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        return out

    def _v3(self, column: str) -> str:
        """``column`` of schema 3, or NULL in an older store opened read-only."""
        return column if self.version >= 3 else "NULL"

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

    # -- successive halving and checkpoints --------------------------------------------------

    def waiting(self) -> list[tuple[RunConfig, int, str | None]]:
        """The pending runs, in insertion order, each with the epochs it trained and the
        checkpoint file holding its state (0 and None: from the start)."""
        rows = self.db.execute(
            f"SELECT id, config, COALESCE({self._v3('epochs')}, 0), {self._v3('checkpoint')} "
            "FROM runs WHERE status = 'pending' ORDER BY id"
        )
        out = []
        for run_id, c, epochs, name in rows:
            with _rebuilt(self.path, f"run {run_id}"):
                out.append((RunConfig.from_dict(json.loads(c)), int(epochs), name))
        return out

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

    def checkpoint_used(self, name: str) -> bool:
        """Whether a run not finished yet (pending, running, failed) has its state in ``name``."""
        return bool(
            self.db.execute(
                "SELECT 1 FROM runs WHERE checkpoint = ? AND status IN "
                "('pending', 'running', 'failed') LIMIT 1",
                (name,),
            ).fetchone()
        )

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
            (run_id, metric, e, _num(v))
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
        """Every run as a flat dict (config, status, attempts, error, final metrics)."""
        out = []
        for run_id, config, status, attempts, final, error, epochs in self.db.execute(
            f"SELECT id, config, status, attempts, final, error, {self._v3('epochs')} FROM runs "
            "ORDER BY id"
        ):
            row = {"run_id": run_id, "status": status, "attempts": attempts, "error": error}
            row["epochs"] = epochs
            with _rebuilt(self.path, f"run {run_id}"):
                cfg = json.loads(config)
                row.update({k: v for k, v in cfg.items() if k != "options"})
                row.update({f"opt_{k}": v for k, v in dict(cfg.get("options") or {}).items()})
                done = json.loads(final) if final else {}
                row.update({f"final_{k}": v for k, v in done.items()})
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
