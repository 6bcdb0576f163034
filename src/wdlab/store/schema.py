"""The study store's file: its tables, its marks, its migration, and how a file is
recognised as a wdlab store without writing to it.

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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wdlab.errors import gist
from wdlab.jsonsafe import dumps
from wdlab.records import RunConfig

DB_NAME = "study.db"
STATUSES = ("pending", "running", "done", "diverged", "failed")
PRUNED = "pruned"  # stopped at a rung by successive halving (counted only where there are some)
FINISHED = ("done", "diverged", PRUNED)  # the runs a study's results are read from
APPLICATION_ID = 0x77646C62  # "wdlb": marks a file as a wdlab study store
SCHEMA_VERSION = 3  # PRAGMA user_version of the stores this wdlab writes
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


def _finite_or_null(v: Any) -> Any:
    """``v``, or None (SQL NULL) for a float that is not finite (the curves' NaN and inf)."""
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
    return gist(exc)


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


def sqlite_tables(path: str | Path) -> set[str] | None:
    """The table names of the SQLite file at ``path``, read through an ``immutable``
    connection (no ``-wal`` or ``-shm`` made); None for a file that is not SQLite (or not a
    file)."""
    path = Path(path)
    try:
        if not path.is_file() or not _header(path).startswith(SQLITE_MAGIC):
            return None
        db = _connect_immutable(path)
        try:
            return set(_tables(db))
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return None


def is_optuna_file(path: str | Path) -> bool:
    """Whether ``path`` is an SQLite file holding Optuna's tables (a ``wdlab search``
    storage), read as it is."""
    return {"studies", "trials"} <= (sqlite_tables(path) or set())


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


def flat_run(config: str, final: str | None, best: str | None) -> dict[str, Any]:
    """A stored run's config, final metrics and best epoch (its numbers: with early stopping,
    those the run is reported at), from their JSON, as one flat row."""
    cfg = json.loads(config)
    row = {k: v for k, v in cfg.items() if k != "options"}
    row |= {f"opt_{k}": v for k, v in dict(cfg.get("options") or {}).items()}
    row |= {f"final_{k}": v for k, v in (json.loads(final) if final else {}).items()}
    top = json.loads(best) if best else {}
    row |= {"best_metric": top.get("metric"), "best_epoch": top.get("epoch")}
    return row | {f"best_epoch_{k}": v for k, v in (top.get("at") or {}).items()}
