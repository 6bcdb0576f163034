"""Executors: who trains a sweep's batches. Each yields ``(batch, results)`` as batches finish;
the driver (``study.run_sweep``) writes each to the store in one transaction.

* :class:`LocalExecutor` trains batch after batch in this process.
* :class:`RayExecutor` runs one Ray task per batch — one call of the batched engine — on a local
  Ray runtime (bound to 127.0.0.1) or an existing cluster (``address``). The data goes to the
  object store once (``ray.put``); workers need no shared filesystem and no database access;
  a task whose worker dies is retried (``max_retries``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from wdlab import engine
from wdlab.data import Dataset
from wdlab.models import ModelSpec

Batch = list[engine.RunConfig]


class LocalExecutor:
    """Train each batch in this process, in order."""

    name = "local"

    def run(
        self,
        spec: ModelSpec,
        data: Dataset,
        batches: Sequence[Batch],
        train_kwargs: dict[str, Any],
        on_start: Callable[[Batch], None] = lambda b: None,
    ) -> Iterator[tuple[Batch, list[engine.RunResult]]]:
        """Yield each batch with its results, one after the other."""
        for batch in batches:
            on_start(batch)
            yield batch, engine.train(spec, data, batch, **train_kwargs)


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
) -> list[engine.RunResult]:
    """The body of one Ray task: one call of the batched engine."""
    if pid_dir:  # lets operators (and the fault test) see which worker runs which batch
        with open(os.path.join(pid_dir, f"batch-{index}-{os.getpid()}.pid"), "w") as fh:
            fh.write(str(os.getpid()))
    return engine.train(spec, data, batch, **train_kwargs)


class RayExecutor:
    """One Ray task per batch; see the module docstring.

    ``address`` joins an existing cluster (``HOST:PORT``); without it a local runtime starts,
    bound to and advertising 127.0.0.1, with usage stats off and its temp files under
    ``temp_dir``. ``num_cpus``/``num_gpus`` are each task's resources (GPUs default to 1 when
    CUDA is visible to the driver, else 0).
    """

    name = "ray"

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
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None:
            # Before Ray is imported: a local runtime then advertises and binds 127.0.0.1 only
            # (without it, Ray picks the machine's external address and listens on all).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if not ray_available():
            raise ValueError(RAY_MISSING)
        if num_cpus <= 0 or max_retries < 0:
            raise ValueError("num_cpus must be > 0 and max_retries >= 0")
        self.address, self.num_cpus, self.max_retries = address, num_cpus, max_retries
        self.num_gpus = num_gpus
        self.local_cpus, self.temp_dir, self.pid_dir = local_cpus, temp_dir, pid_dir
        self.started = False

    def _init(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            kwargs: dict[str, Any] = {
                "num_cpus": self.local_cpus or os.cpu_count() or 1,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
                "log_to_driver": False,
            }
            if self.temp_dir:
                kwargs["_temp_dir"] = self.temp_dir
            ray.init(**kwargs)
            self.started = True
        return ray

    def shutdown(self) -> None:
        """Stop the local runtime this executor started (never a cluster it joined)."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def run(
        self,
        spec: ModelSpec,
        data: Dataset,
        batches: Sequence[Batch],
        train_kwargs: dict[str, Any],
        on_start: Callable[[Batch], None] = lambda b: None,
    ) -> Iterator[tuple[Batch, list[engine.RunResult]]]:
        """Submit every batch as a task; yield each as it finishes."""
        import torch

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
        pending = {}
        for i, b in enumerate(batches):
            on_start(list(b))
            pending[task.remote(spec, data_ref, list(b), kwargs, self.pid_dir, i)] = list(b)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
