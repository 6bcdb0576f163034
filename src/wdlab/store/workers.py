"""Worker liveness: who holds which runs of a study, and for how long.

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
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from wdlab.store.schema import StoreError

LEASE_SECONDS = 60.0  # a worker that has not renewed its lease for this long has lost it
LEASE_ENV = "WDLAB_LEASE_SECONDS"  # sets the lease of the sweeps started with it
LEGACY_LEASE_SECONDS = 600.0  # workers of an earlier wdlab (no lease stored), on another host


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (or not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
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


class Workers:
    """The worker side of a :class:`~wdlab.store.database.Store` (it inherits this):
    leases registered, renewed and given up, and the runs of workers that are gone taken
    back. It uses the store's ``db``, ``path``, ``readonly`` and ``_tx()``."""

    db: sqlite3.Connection
    path: Path
    readonly: bool

    def register(self, owner: str, lease: float = LEASE_SECONDS) -> None:
        """Record this process as a worker of the study, holding a lease of ``lease`` seconds
        from now (renewed by a :class:`LeaseKeeper`: :meth:`keep_lease`)."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        _renew(self.db, owner, lease)

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

    def others(self, owner: str) -> list[str]:
        """The live workers of the study other than ``owner``."""
        now = time.time()
        rows = self.db.execute("SELECT id, beat, lease FROM workers WHERE id != ?", (owner,))
        return [w for w, beat, lease in rows.fetchall() if _gone(w, beat, lease, now) is None]

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
