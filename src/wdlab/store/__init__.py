"""The study store: one SQLite file per study directory, in WAL mode.

It is the single source of truth for a sweep's results: tables, plots and exports read only
from here. Runs are written one batch at a time, in one transaction each, so a crash loses at
most the batch in flight.

Four modules, each importing only the ones after it: :mod:`wdlab.store.database`
(:class:`Store`: the study, its runs and their curves) → :mod:`wdlab.store.progress` (the
epochs each run trained, its checkpoint, successive halving's decisions) →
:mod:`wdlab.store.workers` (liveness: worker ids, leases, the thread that keeps them, taking
back the runs of workers that are gone) → :mod:`wdlab.store.schema` (the file: its tables, its
marks, the migration of older stores, recognising a store without writing to it).
"""

from wdlab.store.database import Store, find_studies
from wdlab.store.schema import (
    APPLICATION_ID,
    DB_NAME,
    FINISHED,
    PRUNED,
    SCHEMA_VERSION,
    STATUSES,
    StoreError,
    config_key,
    hash_config,
    identify,
)
from wdlab.store.workers import (
    LEASE_ENV,
    LEASE_SECONDS,
    LEGACY_LEASE_SECONDS,
    LeaseKeeper,
    dir_lock,
    lease_seconds,
    worker_id,
)

__all__ = [
    "APPLICATION_ID",
    "DB_NAME",
    "FINISHED",
    "LEASE_ENV",
    "LEASE_SECONDS",
    "LEGACY_LEASE_SECONDS",
    "PRUNED",
    "SCHEMA_VERSION",
    "STATUSES",
    "LeaseKeeper",
    "Store",
    "StoreError",
    "config_key",
    "dir_lock",
    "find_studies",
    "hash_config",
    "identify",
    "lease_seconds",
    "worker_id",
]
