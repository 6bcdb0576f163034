"""Executors: who trains a sweep's batches. Each yields ``(batch, results)`` as batches finish;
the driver (:func:`wdlab.pipelines.study.run_sweep`) writes each to the store in one
transaction. Every executor follows the :class:`Executor` protocol and is one entry of
:data:`EXECUTORS`, with the options the command line offers for it.

``batches`` may be any iterable, read lazily: the driver hands a generator that claims each
batch in the store just before it is taken, so two processes on one study never train the same
configuration. A batch may be a :class:`Segment`: trained from a saved batch state, to a rung
(successive halving), some of its rows skipped. ``on_epoch(batch, epoch)`` reports progress
within a batch where the executor can (the local one, after every epoch), and
``on_checkpoint(batch, state)`` receives the batch's state when a checkpoint is due (the local
one; a Ray task's batch starts again from its own start if its worker dies).

* :class:`LocalExecutor` trains batch after batch in this process.
* :class:`RayExecutor` runs one Ray task per batch — one call of the batched engine — on a local
  Ray runtime (bound to 127.0.0.1) or an existing cluster (``address``). The data goes to the
  object store once (``ray.put``); workers need no shared filesystem and no database access;
  a task whose worker dies is retried (``max_retries``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from wdlab.data import Dataset
from wdlab.errors import USER_FRAME, gist, user_frame
from wdlab.models import ModelSpec
from wdlab.records import RunConfig, RunResult
from wdlab.trainer import train

Batch = list[RunConfig]


class BatchError(Exception):
    """One batch of several in flight failed (a Ray task): only its runs failed; the others
    go back to pending. ``cause``: what the batch's training raised, as it raised it."""

    def __init__(self, batch: Batch, cause: Exception) -> None:
        super().__init__(str(cause))
        self.batch, self.cause = batch, cause


OnEpoch = Callable[[Batch, int], None]
OnCheckpoint = Callable[[Batch, dict[str, Any]], None]


class Segment(list):
    """A batch of configurations (a list of them) trained from ``start`` (a batch state of
    these configurations, in this order: :mod:`wdlab.trainer.state`; None: from the start) up
    to ``stop`` epochs (a rung; None: to the end), without the rows ``skip`` (indices: pruned,
    or held by another process). ``name``: the checkpoint file its state goes to; ``source``:
    the one it starts from; ``live``: the configurations it trains; ``planned``: the epochs
    the store said those runs had trained when the segment was planned (None: from the start,
    or not one number)."""

    def __init__(
        self,
        configs: Iterable[RunConfig],
        *,
        start: dict[str, Any] | None = None,
        stop: int | None = None,
        skip: Iterable[int] = (),
        name: str = "",
        source: str | None = None,
        live: Iterable[RunConfig] | None = None,
        planned: int | None = None,
    ) -> None:
        super().__init__(configs)
        self.start, self.stop, self.skip = start, stop, tuple(skip)
        self.name, self.source = name, source
        self.live = list(self) if live is None else list(live)
        self.planned = planned

    def train_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`wdlab.trainer.train` this segment adds."""
        out: dict[str, Any] = {}
        if self.start is not None:
            out["start"] = self.start
        if self.stop is not None:
            out["stop"] = self.stop
        if self.skip:
            out["skip"] = self.skip
        return out


def segment_kwargs(batch: Batch) -> dict[str, Any]:
    """The training keywords a batch adds (a :class:`Segment`'s; none for a plain list)."""
    return batch.train_kwargs() if isinstance(batch, Segment) else {}


@dataclass(frozen=True)
class Option:
    """One keyword of an executor's constructor, offered as ``--FLAG`` on the command line."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    flag: str = ""

    @property
    def cli_flag(self) -> str:
        """The command-line flag, e.g. ``--cpus-per-task``."""
        return "--" + (self.flag or self.name.replace("_", "-"))


class Executor(Protocol):
    """Trains batches of configurations; yields each batch with its results as it finishes."""

    name: str

    def run(
        self,
        spec: ModelSpec,
        data: Dataset,
        batches: Iterable[Batch],
        train_kwargs: dict[str, Any],
        on_epoch: OnEpoch | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> Iterator[tuple[Batch, list[RunResult]]]:
        """Yield ``(batch, results)`` for every batch, in any order."""
        ...

    def close(self) -> None:
        """Release what the executor started (a local runtime); never a cluster it joined."""
        ...


class LocalExecutor:
    """Train each batch in this process, in order."""

    name = "local"
    options: tuple[Option, ...] = ()

    def close(self) -> None:
        """Nothing to release."""

    def run(
        self,
        spec: ModelSpec,
        data: Dataset,
        batches: Iterable[Batch],
        train_kwargs: dict[str, Any],
        on_epoch: OnEpoch | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> Iterator[tuple[Batch, list[RunResult]]]:
        """Yield each batch with its results, one after the other; ``on_epoch`` after every
        epoch of each, ``on_checkpoint`` with its state when a checkpoint is due."""
        for batch in batches:
            kw = train_kwargs | segment_kwargs(batch)
            if on_epoch is not None:
                kw["on_epoch"] = lambda e, b=batch: on_epoch(b, e)
            if on_checkpoint is not None:
                kw["on_checkpoint"] = lambda state, b=batch: on_checkpoint(b, state)
            yield batch, train(spec, data, batch, **kw)


def ray_available() -> bool:
    """Whether the optional ``ray`` package is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


RAY_MISSING = "the ray backend needs Ray: pip install 'wdlab[ray]'"


def _train_task(
    spec: ModelSpec,
    data: Dataset,
    batch: Batch,
    train_kwargs: dict[str, Any],
    pid_dir: str | None,
    index: int,
    cwd: str,
) -> list[RunResult]:
    """The body of one Ray task: one call of the batched engine, in the driver's folder
    ``cwd`` where this node has it (``--model file.py:make`` and dotted modules name files
    from there), else in the worker's own."""
    if pid_dir:  # lets operators (and the fault test) see which worker runs which batch
        with open(os.path.join(pid_dir, f"batch-{index}-{os.getpid()}.pid"), "w") as fh:
            fh.write(str(os.getpid()))
    with contextlib.chdir(cwd) if os.path.isdir(cwd) else contextlib.nullcontext():
        try:
            return train(spec, data, batch, **train_kwargs)
        except Exception as exc:  # its traceback stays here: where the user's code raised it
            with contextlib.suppress(AttributeError):
                setattr(exc, USER_FRAME, user_frame(exc))
            raise


def _check_resources(num_cpus: float, num_gpus: float | None, max_retries: int) -> None:
    """A one-line ``ValueError`` naming the flag of a Ray task resource out of range."""

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (number(num_cpus) and num_cpus > 0):
        raise ValueError(f"--cpus-per-task (num_cpus) must be a finite number > 0, got {num_cpus}")
    if num_gpus is not None and not (number(num_gpus) and num_gpus >= 0):
        raise ValueError(f"--gpus-per-task (num_gpus) must be a finite number >= 0, got {num_gpus}")
    if not (isinstance(max_retries, int) and not isinstance(max_retries, bool)) or max_retries < 0:
        raise ValueError(f"--max-retries must be an integer >= 0, got {max_retries}")


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """The SIGTERM handler as it was before ``ray.init`` (in the main thread): Ray's driver
    sets its own, which exits through ``sys.exit`` (said as user code calling it) after a C++
    stack dump, where the command unwinds a SIGTERM and says "terminated" (exit 143). In a
    plain script (no handler of the command's) the default comes back: the process ends, and
    its runs go back to pending when another process finds its lease dead."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def _check_local_fit(num_cpus: float, num_gpus: float | None, cpus: int) -> None:
    """A one-line ``ValueError`` where a task's resources exceed the local runtime's (this
    machine's CPUs, and the GPUs torch sees): no task could ever start."""
    import torch

    if num_cpus > cpus:
        raise ValueError(
            f"--cpus-per-task (num_cpus) {num_cpus:g}: the local Ray runtime has {cpus} CPUs "
            "(this machine's), so no task could start; give at most that, or join a cluster "
            "(--address)"
        )
    gpus = torch.cuda.device_count()
    if num_gpus is not None and num_gpus > gpus:
        raise ValueError(
            f"--gpus-per-task (num_gpus) {num_gpus:g}: the local Ray runtime has {gpus} GPUs, so "
            "no task could start; give 0 (CPU) or at most that, or join a cluster (--address)"
        )


class RayExecutor:
    """One Ray task per batch; see the module docstring.

    ``address`` joins an existing cluster (``HOST:PORT``); without it a local runtime starts,
    bound to and advertising 127.0.0.1, with usage stats off and its temp files under
    ``temp_dir``. ``num_cpus``/``num_gpus`` are each task's resources (GPUs default to 1 when
    CUDA is visible to the driver, else 0).
    """

    name = "ray"
    options = (
        Option("address", str, None, "join this Ray cluster (HOST:PORT); default: a local runtime"),
        Option("num_cpus", float, 1.0, "CPUs per Ray task (1)", "cpus-per-task"),
        Option(
            "num_gpus",
            float,
            None,
            "GPUs per Ray task (default: 1 if CUDA is visible, else 0)",
            "gpus-per-task",
        ),
        Option("max_retries", int, 3, "retries of a task whose worker dies (3)"),
    )

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        max_retries: int = 3,
        local_cpus: int | None = None,
        temp_dir: str | None = None,
        pid_dir: str | None = None,
    ) -> None:
        _check_resources(num_cpus, num_gpus, max_retries)  # before Ray is imported or started
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None:
            # Before Ray is imported: a local runtime then advertises and binds 127.0.0.1 only
            # (without it, Ray picks the machine's external address and listens on all).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if not ray_available():
            raise ValueError(RAY_MISSING)
        if address and address != "auto":
            _check_reachable(address)  # Ray's own connect retries for minutes, silently
        if address is None:  # Ray waits for ever, silently, on a task no node can take
            _check_local_fit(num_cpus, num_gpus, local_cpus or os.cpu_count() or 1)
        self.address, self.num_cpus, self.max_retries = address, num_cpus, max_retries
        self.num_gpus = num_gpus
        self.local_cpus, self.temp_dir, self.pid_dir = local_cpus, temp_dir, pid_dir
        self.started = False

    def _init(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # no INFO lines
        with _own_sigterm():
            if self.address:
                ray.init(address=self.address, **quiet)
            else:  # "local": a new runtime, not a cluster `ray start` left recorded here
                kwargs: dict[str, Any] = quiet | {
                    "address": "local",
                    "num_cpus": self.local_cpus or os.cpu_count() or 1,
                    "include_dashboard": False,
                    "_node_ip_address": "127.0.0.1",
                }
                if self.temp_dir:
                    kwargs["_temp_dir"] = self.temp_dir
                ray.init(**kwargs)
                self.started = True
        return ray

    def close(self) -> None:
        """Stop the local runtime this executor started (never a cluster it joined)."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def run(
        self,
        spec: ModelSpec,
        data: Dataset,
        batches: Iterable[Batch],
        train_kwargs: dict[str, Any],
        on_epoch: OnEpoch | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> Iterator[tuple[Batch, list[RunResult]]]:
        """Submit every batch as a task; yield each as it finishes (progress advances per
        batch: ``on_epoch`` is not called; nor ``on_checkpoint``: a task retried after its
        worker died starts again from its batch's start). Data held in memory only: a stream
        (a user's Dataset or DataLoader) is refused in one line."""
        import torch

        if not isinstance(data, Dataset):
            raise ValueError(
                "the ray backend trains data held in memory ((X, y) tensors, built-in sources, "
                "tables); streamed data (Datasets, DataLoaders, factories) train with --backend "
                "local"
            )

        ray = self._init()
        gpus = (
            self.num_gpus if self.num_gpus is not None else (1 if torch.cuda.is_available() else 0)
        )
        task = ray.remote(_train_task).options(
            num_cpus=self.num_cpus, num_gpus=gpus, max_retries=self.max_retries
        )
        data_ref = ray.put(data)  # once, not once per task
        kwargs = dict(train_kwargs)
        if kwargs.get("device") is None:
            kwargs["device"] = "cuda" if gpus else "cpu"
        pending, cwd = {}, os.getcwd()
        for i, b in enumerate(batches):
            kw = kwargs | segment_kwargs(b)
            pending[task.remote(spec, data_ref, list(b), kw, self.pid_dir, i, cwd)] = b
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                batch = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the user's error, or a lost worker
                    for other in pending:  # as the local executor: no batch after a failure;
                        # its worker ends too: a cancel is a KeyboardInterrupt wherever the task
                        # is, and one inside an import left half a package for the next task
                        ray.cancel(other, force=True)
                    raise BatchError(batch, _cause(ray, exc, self.max_retries)) from None
                yield batch, results


def _cause(ray: Any, exc: Exception, retries: int) -> Exception:
    """What a Ray task's failure was: the user's own exception, raised in the task, or a
    ``ValueError`` line saying that the task ended without results (its worker died, it was
    cancelled: a KeyboardInterrupt in it)."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        if not isinstance(cause, ray.exceptions.RayError):  # (a KeyboardInterrupt in the
            return cause  # task is Ray's TaskCancelledError)
        exc = cause
    died = isinstance(exc, ray.exceptions.WorkerCrashedError) and retries
    tries = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if died else ""
    return ValueError(f"the batch's Ray task ended without results{tries}: {gist(exc)}")


#: Every executor by name.
EXECUTORS: dict[str, type] = {e.name: e for e in (LocalExecutor, RayExecutor)}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line ``ValueError`` where nothing answers at a Ray cluster's ``HOST:PORT`` (or
    ``ray://HOST:PORT``) within ``timeout`` seconds."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT of a Ray cluster")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise ValueError(
            f"no Ray cluster answers at {address} within {timeout:g} s ({why}); start one "
            "(ray start --head) or leave the address out for a local runtime"
        ) from None


def make_executor(name: str, **options: Any) -> Executor:
    """The executor called ``name`` with its options (``None`` keeps an option's default)."""
    cls = EXECUTORS.get(name)
    if cls is None:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(EXECUTORS)}")
    given = {k: v for k, v in options.items() if v is not None}
    owners = {o.name: (e.name, o.cli_flag) for e in EXECUTORS.values() for o in e.options}
    for key in sorted(given.keys() - {o.name for o in cls.options}):
        owner, flag = owners.get(key, ("?", key))
        raise ValueError(f"{flag} needs --backend {owner}")
    return cls(**given)
