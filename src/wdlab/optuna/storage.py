"""The study a search asks: loaded from an Optuna storage, or created; a SQLite file that
is not Optuna's is left as it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from wdlab.store.schema import is_optuna_file


def open_study(
    storage: str | None, name: str, direction: str, sampler: Any = None, pruner: Any = None
) -> Any:
    """The study ``name`` in ``storage``, or a new one in ``direction``.

    A study found is loaded as it is (its direction is checked later). A SQLite URL must name a
    new file or an Optuna storage; nothing is written to one that is not."""
    if storage is None:
        return optuna.create_study(
            study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )
    if "://" not in storage:
        raise ValueError(
            f"--storage {shown_url(storage)}: not a storage URL; give sqlite:///FILE or a "
            "database URL (postgresql://USER@HOST/DB, mysql://…)"
        )
    from sqlalchemy.exc import ArgumentError

    try:
        return _open(storage, name, direction, sampler, pruner)
    except ImportError as exc:  # SQLAlchemy's driver for the URL's database
        raise ValueError(_no_driver(storage, exc)) from None
    except ArgumentError as exc:  # a URL SQLAlchemy cannot parse
        raise ValueError(f"--storage {shown_url(storage)}: {exc}") from None


def _open(storage: str, name: str, direction: str, sampler: Any, pruner: Any) -> Any:
    path = _sqlite_path(storage)
    if path is None or path.exists():
        if path is not None:
            _check_optuna_file(path, storage)
        if name in optuna.study.get_all_study_names(storage):
            return optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
    return optuna.create_study(
        study_name=name, storage=storage, direction=direction, sampler=sampler, pruner=pruner
    )


def _sqlite_path(url: str, flag: str = "--storage ") -> Path | None:
    """The file of a ``sqlite:///`` URL (its folder checked), or None for other storages;
    ``flag`` opens a refusal (the flag that gave the URL, or none)."""
    if not url.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database  # (without a query string: ?timeout=30)
    if not database or database == ":memory:":
        return None
    path = Path(database)
    if not path.parent.is_dir():
        raise ValueError(f"{flag}{url}: the folder {path.parent} does not exist")
    return path


def _check_optuna_file(path: Path, url: str, flag: str = "--storage ") -> None:
    """An existing SQLite file must hold Optuna's tables: another file is left as it is."""
    if path.is_dir():
        raise ValueError(f"{flag}{url}: {path} is a folder, not a SQLite file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{flag}{url}: cannot read {path}")
    if not is_optuna_file(path):
        raise ValueError(f"{flag}{url}: {path} is not an Optuna storage; left as it is")


def read_study(url: str, name: str | None = None) -> Any:
    """The search study ``name`` in the storage at ``url`` (the one there when ``name`` is
    None), read as it is: no table is made or migrated."""
    if in_memory(url):
        raise ValueError(f"{url}: an in-memory storage holds nothing once its search ended")
    path = _sqlite_path(url, flag="")
    if path is not None:
        if not path.exists():
            raise ValueError(f"{url}: no such file")
        _check_optuna_file(path, url, flag="")
    try:
        storage = optuna.storages.RDBStorage(
            url, skip_compatibility_check=True, skip_table_creation=True
        )
        names = optuna.study.get_all_study_names(storage)
    except ImportError as exc:  # SQLAlchemy's driver for the URL's database
        raise ValueError(_no_driver(url, exc, flag="")) from None
    if name is None and len(names) != 1:
        there = f"{len(names)} studies ({', '.join(names)})" if names else "no study"
        raise ValueError(f"{shown_url(url)} holds {there}: name one with --name NAME")
    if name is not None and name not in names:
        raise ValueError(
            f"{shown_url(url)} holds no study {name!r}; it holds: {', '.join(names) or 'none'}"
        )
    return optuna.load_study(study_name=name or names[0], storage=storage)


def _no_driver(url: str, exc: ImportError, flag: str = "--storage ") -> str:
    """One line, opened by ``flag``: the database driver a storage URL needs is not installed
    (the URL's password left out)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
    module = getattr(cause, "name", None) or str(cause)
    shown = shown_url(url)
    return (
        f"{flag}{shown}: the database driver {module!r} that SQLAlchemy needs for it is not "
        f"installed (pip install it, or use sqlite:///FILE)"
    )


def in_memory(url: str) -> bool:
    """Whether a storage URL is SQLite in memory (``sqlite://``, ``sqlite:///:memory:``)."""
    return url.split("?")[0].rstrip("/") == "sqlite:" or url.split("?")[0].endswith(":memory:")


def shown_url(url: str) -> str:
    """A storage URL as printed: its ``user:password@`` part's password written as ``***``."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.partition("@")
    if not (sep and at and ":" in auth):
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"
