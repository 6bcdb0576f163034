"""Configurations side by side on the CPU: a batch that runs its configurations one after
another (a convolutional model on the CPU, :mod:`wdlab.engines.torchfunc`) runs them in
``n`` threads instead, each with its share of torch's threads (``parallel=n``).

Why: a small convolution does not keep two cores busy. ``bench/bench_kernels.py`` measured the
pipeline bench's ResNet step at 1.20–1.65× faster (four runs) as two configurations side by
side with one thread each than one after another with torch's two threads.

What it keeps: lane ``w`` runs configurations ``w, w + n, w + 2n, …`` in order, each through its
own copy of the module (``functional_call`` swaps tensors into the module it is given, so two
threads cannot share one), with the calling thread's grad mode and CPU autocast. Each
configuration's numbers are those of the same configuration run alone with the lane's share of
threads (``torch.set_num_threads``), bit for bit: a configuration's kernels run in one thread
of Python, and its gradient lands in its own rows of the stacked tensors (the other rows get
exact zeros, whatever the order). What it cannot keep: random draws inside the model (Dropout)
come from torch's one global generator, in whichever order the lanes reach it; such a model is
refused (:class:`RandomDraws`, in training or evaluation) rather than trained irreproducibly.
Nor can it see what a model keeps in Python (a counter it increments, a generator of its own):
each lane's copy keeps its own, where one after another all configurations share one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

_POOL: list[ThreadPoolExecutor] = []  # one pool for the process, grown as asked
_POOL_LOCK = threading.Lock()


def _forked() -> None:
    """In a forked child: the parent's lane threads are not there (a pool that thinks they
    are idle would never run a job), so the child makes its own when it needs them."""
    global _POOL_LOCK
    _POOL.clear()
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forked)


class RandomDraws(ValueError):
    """A model run side by side drew from torch's global generator (Dropout): its numbers would
    depend on which lane drew first."""


def check_parallel(parallel: object, what: str = "parallel") -> int:
    """``parallel`` as a positive int, else one ``ValueError`` naming ``what``."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {parallel!r}")
    return parallel


class SideBySide:
    """``n`` lanes over copies of one module (the first is the module itself)."""

    def __init__(self, template: nn.Module, n: int, copy: Callable[[nn.Module], nn.Module]) -> None:
        self.templates = [template] + [copy(template) for _ in range(n - 1)]
        self.threads = max(1, torch.get_num_threads() // n)  # each lane's share

    def __len__(self) -> int:
        return len(self.templates)

    def note(self) -> str:
        """The engine text: how many lanes, with how many threads each."""
        each = "1 thread" if self.threads == 1 else f"{self.threads} threads"
        return f"{len(self)} configurations side by side, {each} each (parallel={len(self)})"

    def map(self, count: int, job: Callable[[int, nn.Module], T]) -> list[T]:
        """``job(k, module)`` for k in ``range(count)``, lane ``k % n`` running it on its copy
        of the module (set to the first one's mode); results in the order of k. Jobs that drew
        from torch's global generator are a :class:`RandomDraws`, in training or evaluation."""
        n, mode = len(self), self.templates[0].training
        out: list = [None] * count
        stop = threading.Event()
        carried = _carried()

        def lane(w: int) -> None:
            torch.set_num_threads(self.threads)
            module = self.templates[w]
            module.train(mode)
            with carried():
                for k in range(w, count, n):
                    if stop.is_set():
                        return
                    out[k] = job(k, module)

        before = torch.get_num_threads()
        rng = torch.default_generator.get_state()
        futures: list[Future] = [_pool(n - 1).submit(lane, w) for w in range(1, min(n, count))]
        try:
            lane(0)
        except BaseException:
            stop.set()
            raise
        finally:
            wait(futures)
            torch.set_num_threads(before)
        for f in futures:
            f.result()  # a lane's error, raised here
        if not torch.equal(rng, torch.default_generator.get_state()):
            raise RandomDraws(
                "the model draws random numbers in its forward (Dropout?): side by side "
                "(parallel > 1) their order would change from run to run; use parallel=1"
            )
        return out


def _carried() -> Callable[[], contextlib.AbstractContextManager]:
    """The calling thread's grad mode and CPU autocast, to enter in a lane's thread (both are
    per thread in torch)."""
    grad = torch.is_grad_enabled()
    amp = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu")

    @contextlib.contextmanager
    def carried() -> Iterator[None]:
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=dtype, enabled=amp):
            yield

    return carried


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's lane threads, at least ``workers`` of them."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < workers:
            if _POOL:
                _POOL[0].shutdown(wait=False)  # its idle threads end
            _POOL[:] = [ThreadPoolExecutor(max(workers, 1), thread_name_prefix="wdlab-lane")]
        return _POOL[0]
