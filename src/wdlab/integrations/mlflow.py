"""A study in MLflow: an experiment named after the study, a parent run for the study and one
child run per wdlab run.

Each child run has the configuration as parameters, its curves as metrics with step = epoch
(``train_loss``, ``val_acc``…), its final metrics as ``final/<key>`` and its status as the tag
``wdlab.status`` (a diverged run ends ``FAILED``, a pruned one ``KILLED``). The parent run
holds the study's config as parameters (a mapping whose keys MLflow refuses as names, such as
``group_wd``'s patterns, as one JSON parameter), the selection (``selection.json``,
``selection.md``, and ``use_wd/<mode>/lr_<lr>``, the answer, and ``chosen_wd/<mode>/lr_<lr>``
metrics) and the report (``report/report.html`` and its figures) as artifacts, which a new
experiment on a SQLite store keeps in ``mlruns/`` beside the file.

The tracking URI is MLflow's: ``sqlite:///mlflow.db`` (a local file, no server), a server's
``http://host:5000`` (``mlflow server``; checked reachable within a few seconds before
anything is logged), or whatever ``MLFLOW_TRACKING_URI`` says when none is given. Talks to
MLflow through ``MlflowClient`` only (no global active run); ``pip install 'wdlab[mlflow]'``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wdlab.extras import require
from wdlab.integrations.content import (
    finals,
    hparams,
    run_name,
    scalars,
    selection_rows,
    selection_scalars,
)
from wdlab.integrations.content import selection_markdown as markdown
from wdlab.records import Result, RunResult
from wdlab.report.html import write_report
from wdlab.store.workers import alive

REACH_TIMEOUT = 5.0  # seconds to wait for a tracking server's answer before giving up
BATCH = 1000  # MLflow's limit of metrics per log_batch call
# a run's end as MLflow says it: a pruned run was stopped (KILLED), a diverged one FAILED
MLFLOW_STATUS = {"done": "FINISHED", "pruned": "KILLED"}
MLFLOW_TABLES = {"experiments", "runs", "metrics", "params"}


class MlflowLog:
    """Logs a study into the MLflow experiment named after it, at tracking URI ``uri`` (None:
    MLflow's default). ``fresh``: the experiment must not hold runs already (an export).
    Else (a live log) the parent run carries the study's ``key`` (its identity's hash) as the
    tag ``wdlab.study``: the same study resumed logs under the same parent run, and another
    study of the same name under a parent of its own."""

    def __init__(
        self,
        uri: str | None,
        study: str,
        config: Mapping[str, Any],
        fresh: bool,
        key: str | None = None,
    ) -> None:
        self.mlflow = require("mlflow", "logging to MLflow")
        self.entities = require("mlflow.entities", "logging to MLflow")
        self.uri = uri or self.mlflow.get_tracking_uri()
        self.new_file = new_file = check_uri(self.uri)
        self.error = self.mlflow.exceptions.MlflowException
        self.study, self.config = study or "wdlab", config
        self._client: Any = None
        found = None
        with self._errors():
            if not new_file:  # a new SQLite file is made with the first thing logged
                found = self.client.get_experiment_by_name(self.study)
            if found and found.lifecycle_stage == "deleted":  # MLflow keeps its name till gc
                uri, eid = self.uri, found.experiment_id
                raise ValueError(
                    f"mlflow: the experiment {self.study!r} at {uri} is deleted but not purged, "
                    f"and MLflow keeps its name: restore it (MlflowClient({uri!r})"
                    f".restore_experiment({eid!r})), purge it (mlflow gc --backend-store-uri "
                    f"{uri} --tracking-uri {uri} --experiment-ids {eid}) or log to another URI"
                )
            if fresh and found and self.client.search_runs([found.experiment_id], max_results=1):
                raise ValueError(
                    f"mlflow: the experiment {self.study!r} at {self.uri} holds runs already "
                    "(an earlier export?); export to another tracking URI, or delete that "
                    "experiment there and purge it (mlflow gc --backend-store-uri URI "
                    "--tracking-uri URI) first"
                )
        self.experiment = found.experiment_id if found else None
        self.key = key
        self.parent: str | None = None  # made (or found: the study resumed) on first use
        if found and key is not None:
            with self._errors():
                self.parent = self._parent_of(found.experiment_id, key)
        self.resumed = self.parent is not None
        self.where = f"{self.uri} (experiment {self.study!r})"

    @property
    def client(self) -> Any:
        """The MlflowClient (made on first use, a new SQLite store's file with it)."""
        if self._client is None:
            if self.new_file:
                with self._errors():
                    _make_store(Path(self.uri.removeprefix("sqlite:///")), self.mlflow)
            self._client = self.mlflow.MlflowClient(tracking_uri=self.uri)
        return self._client

    def _start(self) -> str:
        """The experiment (if new) and the study's parent run, made on first use."""
        if self.parent is None:
            if self.experiment is None:
                self.experiment = self.client.create_experiment(
                    self.study, artifact_location=_artifacts(self.uri)
                )
            tags = {} if self.key is None else {"wdlab.study": self.key}
            run = self.client.create_run(self.experiment, run_name=self.study, tags=tags)
            self.parent = run.info.run_id
            self._log(self.parent, params=_flatten(self.config))
        return self.parent

    def _parent_of(self, experiment: str, key: str) -> str | None:
        """The parent run a live log of study ``key`` made in ``experiment`` before, if any."""
        found = self.client.search_runs(
            [experiment], filter_string=f"tags.`wdlab.study` = '{key}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def has_summary(self) -> bool:
        """Whether this study's parent run holds its summary already (a resumed sweep's)."""
        if not self.resumed:
            return False
        with self._errors():
            return any(a.path == "selection.json" for a in self.client.list_artifacts(self.parent))

    def log_run(self, run: RunResult) -> None:
        """One child run: parameters, metrics per epoch, final metrics, status."""
        with self._errors():
            tags = {
                "mlflow.parentRunId": self._start(),
                "wdlab.status": run.status,
                "wdlab.engine": run.engine,
            }
            child = self.client.create_run(
                self.experiment, run_name=run_name(run.config), tags=tags
            )
            rid = child.info.run_id
            last = max(run.curves.epoch, default=0)
            points = [*scalars(run), *((k, last, v) for k, v in finals(run).items())]
            self._log(rid, params=hparams(run), metrics=points)
            self.client.set_terminated(rid, MLFLOW_STATUS.get(run.status, "FAILED"))

    def unlogged(self, runs: Sequence[RunResult]) -> list[RunResult]:
        """Those of ``runs`` the study's parent run has no finished child run of; a child of
        one of ``runs`` still ``RUNNING`` (a process killed while it logged it) is deleted,
        never another run's (a process that started since may be logging it)."""
        if self.parent is None:
            return list(runs)
        held, names = set(), {run_name(r.config) for r in runs}
        with self._errors():
            for child in self._children():
                if child.info.status == "RUNNING":
                    if child.info.run_name in names:
                        self.client.delete_run(child.info.run_id)
                else:
                    held.add(child.info.run_name)
        return [r for r in runs if run_name(r.config) not in held]

    def _children(self) -> list[Any]:
        """The study's child runs (every page of them)."""
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'",
                max_results=1000,
                page_token=token,
            )
            found += list(page)
            token = page.token
            if not token:
                return found

    def log_summary(self, result: Result) -> None:
        """The selection and the report, on the parent run."""
        with self._errors():
            parent = self._start()
            self.client.log_dict(parent, selection_rows(result), "selection.json")
            self.client.log_text(parent, markdown(result), "selection.md")
            if result.partial:  # a tag the runs table shows: this answer is not final
                self.client.set_tag(parent, "partial", result.partial_note())
            points = [(k, 0, v) for k, v in selection_scalars(result, "_")]
            self._log(parent, metrics=points)
            with tempfile.TemporaryDirectory(prefix="wdlab-mlflow-") as tmp:
                write_report(result, tmp)
                self.client.log_artifacts(parent, tmp, "report")

    def close(self) -> None:
        """End the parent run (if anything was logged)."""
        if self.parent is not None:
            with self._errors():
                self.client.set_terminated(self.parent, "FINISHED")

    def _log(
        self,
        run_id: str,
        params: Mapping[str, Any] | None = None,
        metrics: Sequence[tuple[str, int, float]] = (),
    ) -> None:
        """Parameters and metrics in as few calls as MLflow allows."""
        e, now = self.entities, int(time.time() * 1000)
        ps = [e.Param(k, _value(v)) for k, v in (params or {}).items()]
        ms = [e.Metric(k, v, now, step) for k, step, v in metrics]
        for chunk in _chunks(ps, 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(run_id, params=list(chunk))
        for chunk in _chunks(ms, BATCH):
            self.client.log_batch(run_id, metrics=list(chunk))

    def _errors(self) -> Any:
        return _OneLine(self.error, self.uri)


class _OneLine:
    """MLflow's errors (often several paragraphs) as one line naming the tracking URI; the
    deprecation warnings of its own dependencies (SQLAlchemy's) are not the user's concern."""

    def __init__(self, error: type[Exception], uri: str) -> None:
        self.error, self.uri = error, uri
        self.quiet = warnings.catch_warnings()

    def __enter__(self) -> None:
        self.quiet.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.quiet.__exit__(kind, exc, tb)
        if exc is not None and isinstance(exc, self.error):
            raise ValueError(f"mlflow ({self.uri}): {_gist(str(exc))}") from None


def _gist(text: str) -> str:
    """MLflow's error in one short line: its first sentence, and any sentence that names an
    ``MLFLOW_`` setting (its own advice, e.g. ``MLFLOW_ALLOW_FILE_STORE=true``)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    kept = [sentences[0], *(s for s in sentences[1:] if "MLFLOW_" in s)]
    gist = " ".join(kept)
    return gist if len(gist) <= 300 else gist[:299] + "…"


def check_uri(uri: str) -> bool:
    """A tracking URI that can take the logs, checked before anything is written: a server
    answers within :data:`REACH_TIMEOUT` seconds; a SQLite file is new (in a folder that
    exists) or MLflow's own (and what a process killed as it made it left beside it is
    removed). ``ValueError`` in one line. Returns whether it names a SQLite file that does
    not exist yet."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT):
                pass
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ValueError(
                f"mlflow: the tracking server {uri} is unreachable ({reason})"
            ) from None
    elif uri.startswith("sqlite:///"):
        return _check_sqlite(Path(uri.removeprefix("sqlite:///")), uri)
    return False


def _check_sqlite(path: Path, uri: str) -> bool:
    if not path.parent.is_dir():
        raise ValueError(f"mlflow: {uri}: the folder {path.parent} does not exist")
    _remove_leftovers(path)
    if not path.exists():
        probe = path.parent / f".wdlab-write-test-{path.name}"
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"mlflow: {uri}: cannot write there ({exc.strerror})") from None
        return True
    names = _read_tables(path, uri)
    if not names >= MLFLOW_TABLES:
        raise ValueError(f"mlflow: {uri}: {path} is not an MLflow store; left as it is")
    return False


def _make_store(path: Path, mlflow: Any) -> None:
    """A new SQLite store at ``path``, whole or not at all: MLflow makes its tables in a file
    of this process beside it, which then takes the store's name unless another process made
    the store first. A process killed meanwhile leaves only its own file, removed here by the
    next one (MLflow's tables made in place, a kill left a store it would not open again)."""
    tmp = path.with_name(f".wdlab-new-{os.getpid()}-{path.name}")
    uri = f"sqlite:///{tmp}"
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        _forget_engine(mlflow, uri)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: that one is the store
            pass
        except OSError:  # no hard links there: moved, unless made meanwhile
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for made in (tmp, tmp.with_name(tmp.name + "-journal")):
            made.unlink(missing_ok=True)


def _remove_leftovers(path: Path) -> None:
    """Remove the files :func:`_make_store` left beside the store at ``path`` in a process
    killed meanwhile (half-made tables, or a second name of the store made)."""
    for old in path.parent.glob(f".wdlab-new-*-{path.name}*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not alive(int(pid)):
            old.unlink(missing_ok=True)


def _forget_engine(mlflow: Any, uri: str) -> None:
    """Close the connections MLflow keeps to the store just made in a file of its own."""
    store = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    engines = getattr(getattr(store, "SqlAlchemyStore", None), "_engine_map", {})
    engine = engines.pop(uri, None)
    if engine is not None:
        engine.dispose()


def _read_tables(path: Path, uri: str) -> set[str]:
    """The names in a SQLite file's schema, read without writing the file. A write cut short
    (kill -9) leaves a hot journal that a read-only connection may not roll back: the names
    are then read from the file as it is (MLflow's own client rolls the journal back when it
    opens the store)."""
    hot = path.with_name(path.name + "-journal").exists()
    try:
        try:
            return _tables(path, "mode=ro")
        except sqlite3.OperationalError:
            if not hot:
                raise
            return _tables(path, "immutable=1")
    except sqlite3.Error as exc:
        raise ValueError(f"mlflow: {uri}: cannot read {path} ({exc})") from None


def _tables(path: Path, how: str) -> set[str]:
    db = sqlite3.connect(f"file:{path}?{how}", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()


def _artifacts(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store (``mlruns/`` in its
    folder, not in whatever folder the process runs in); the server's choice otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``section.key`` parameters; a mapping whose keys MLflow would refuse
    in a parameter's name (``group_wd``'s patterns: ``layers.*``) is one parameter, as JSON."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and all(_PARAM_NAME.fullmatch(str(n)) for n in v):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


_PARAM_NAME = re.compile(r"[\w\-. /:]{1,200}")  # what MLflow allows in a name (and <= 250)


def _value(v: object) -> str:
    """A parameter's value as MLflow keeps it (text, at most 6000 characters)."""
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text[:6000]


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
