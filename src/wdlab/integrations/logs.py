"""The dashboards a study is logged to: TensorBoard and MLflow, one registry.

A log receives each run as it finishes (its configuration as hyperparameters, its curves as
scalars per epoch, its final metrics), then the study's selection as a summary (and, for
MLflow, the report as an artifact). ``wdlab export STUDY --to tensorboard DIR`` feeds it every
stored run; ``wdlab sweep --log tensorboard:DIR`` (``wdlab.sweep(..., log=...)``) the runs as
their batches are stored. A log is opened before anything is trained or read, so a target that
cannot be written (an unwritable folder, an unreachable MLflow server) is one line, and nothing
is stored. Each dashboard's library is imported only when its log is opened: ``import wdlab``
never imports TensorBoard or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wdlab.records import Result, RunResult


class RunLog(Protocol):
    """Where one study is logged: runs one by one, then the summary."""

    where: str

    def log_run(self, run: RunResult) -> None:
        """One finished run: hyperparameters, curves, final metrics. (A log may also offer
        ``unlogged(runs)``: those of ``runs`` it does not hold whole; see :meth:`Logs.catch_up`.)"""

    def log_summary(self, result: Result) -> None:
        """The study's selection (and report) once its runs are logged."""

    def close(self) -> None:
        """Flush and release."""


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: the extra that installs it, what its target is (and whether one must be
    given), and how to open a log (target, study name, its config, fresh)."""

    name: str
    extra: str
    target: str
    needs_target: bool
    open: Callable[[str | None, str, Mapping[str, Any], bool, str | None], RunLog]


def _tensorboard(
    target: str | None, name: str, config: Mapping, fresh: bool, key: str | None
) -> RunLog:
    from wdlab.integrations.tensorboard import TensorBoardLog

    return TensorBoardLog(str(target), name, config, fresh, key)


def _mlflow(target: str | None, name: str, config: Mapping, fresh: bool, key: str | None) -> RunLog:
    from wdlab.integrations.mlflow import MlflowLog

    return MlflowLog(target, name, config, fresh, key)


DASHBOARDS = {
    d.name: d
    for d in (
        Dashboard(
            "tensorboard", "tensorboard", "a folder (tensorboard --logdir DIR)", True, _tensorboard
        ),
        Dashboard(
            "mlflow",
            "mlflow",
            "a tracking URI (default: MLflow's own, e.g. sqlite:///mlflow.db)",
            False,
            _mlflow,
        ),
    )
}


def parse_log(spec: str) -> tuple[str, str | None]:
    """``tensorboard:DIR`` or ``mlflow[:URI]`` → (dashboard, target). ``ValueError`` naming
    the valid forms."""
    name, _, target = str(spec).partition(":")
    forms = "; ".join(
        f"{d.name}{':TARGET' if d.needs_target else '[:TARGET]'} ({d.target})"
        for d in DASHBOARDS.values()
    )
    dash = DASHBOARDS.get(name.strip().lower())
    if dash is None:
        raise ValueError(f"--log {spec}: unknown dashboard {name!r}; valid: {forms}")
    if dash.needs_target and not target:
        raise ValueError(f"--log {spec}: {dash.name} needs {dash.target}: {dash.name}:TARGET")
    return dash.name, target or None


def open_log(
    to: str,
    target: str | None,
    name: str,
    config: Mapping[str, Any],
    fresh: bool = False,
    key: str | None = None,
) -> RunLog:
    """A log of study ``name`` (``key``: its identity's hash) on dashboard ``to`` at
    ``target``. ``fresh``: the target must not hold this study's logs already (an export).
    Else a study's logs are added to when it is resumed (its ``key`` recorded with them), and
    another study of the same name logs beside them, never into them."""
    dash = DASHBOARDS.get(to)
    if dash is None:
        raise ValueError(f"unknown dashboard {to!r}; valid: {', '.join(DASHBOARDS)}")
    if dash.needs_target and not target:
        raise ValueError(f"{dash.name} needs {dash.target}")
    return dash.open(target, name, config, fresh, key)


class Logs:
    """The logs of one sweep (none, one or several): each run to each, then the summary."""

    def __init__(self, logs: Sequence[RunLog] = ()) -> None:
        self.logs = list(logs)
        self.logged = False  # whether a run was logged by this sweep

    def runs(self, runs: Sequence[RunResult]) -> None:
        """Runs just stored."""
        for log in self.logs:
            for run in runs:
                log.log_run(run)
        self.logged = self.logged or bool(runs)

    def catch_up(self, runs: Sequence[RunResult]) -> int:
        """Stored runs a log does not hold whole (a sweep killed between storing runs and
        logging them, or while logging one), logged now, where the log can tell (its
        ``unlogged``: what it lacks, with any half-logged trace of them removed). The caller
        makes sure no other process was logging this study when it read ``runs``. A log's
        summary is not logged again for it (a summary there was logged once the study was
        whole). Returns how many runs were logged."""
        n = 0
        for log in self.logs:
            unlogged = getattr(log, "unlogged", None)
            missing = list(unlogged(runs)) if unlogged is not None else []
            for run in missing:
                log.log_run(run)
            n += len(missing)
        return n

    def summary(self, result: Result) -> None:
        """The study, whole: logged where this sweep logged runs, or where the log holds no
        summary of the study yet (a sweep that found every run stored logs it once)."""
        for log in self.logs:
            held = getattr(log, "has_summary", lambda: False)()
            if self.logged or not held:
                log.log_summary(result)

    def close(self) -> None:
        """Close every log."""
        for log in self.logs:
            log.close()

    def __enter__(self) -> Logs:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        """On an error, close (the caller closes after the summary otherwise)."""
        if exc is not None:
            self.close()

    def where(self) -> dict[str, str]:
        """Where each log went."""
        return {type(log).__name__: log.where for log in self.logs}


#: What ``log=`` takes: a spec like ``"tensorboard:DIR"``, a RunLog, a list of them, or None.
LogSpec = str | RunLog | Sequence[str | RunLog] | None


def open_logs(log: LogSpec, name: str, config: Mapping[str, Any], key: str | None = None) -> Logs:
    """The logs a sweep's ``log=`` names: ``"tensorboard:DIR"``, ``"mlflow[:URI]"``, a
    :class:`RunLog`, or a list of them, for the study ``name`` whose identity hashes to
    ``key``. Each is opened (and checked) now."""
    items = [] if log is None else [log] if isinstance(log, str) or _is_log(log) else log
    ok = isinstance(items, list | tuple) and all(isinstance(i, str) or _is_log(i) for i in items)
    if not ok:
        raise ValueError(
            "log: expected 'tensorboard:DIR', 'mlflow[:URI]', a log object (log_run, "
            f"log_summary) or a list of them, got {log!r:.60}"
        )
    opened: list[RunLog] = []
    try:
        for item in items:
            if _is_log(item):
                opened.append(item)  # type: ignore[arg-type]
                continue
            to, target = parse_log(item)  # type: ignore[arg-type]
            opened.append(open_log(to, target, name, config, key=key))
    except BaseException:
        Logs(opened).close()
        raise
    return Logs(opened)


def _is_log(obj: object) -> bool:
    return hasattr(obj, "log_run") and hasattr(obj, "log_summary")
