"""Seeds of the streams: independent draws per split, purpose and epoch (:func:`derive`), and
the process-wide random state a Dataset's transforms draw from, held apart from the caller's
(:class:`GlobalRandom`). See :mod:`wdlab.data.stream` for what they guarantee."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def derive(seed: int, *labels: object) -> int:
    """A 63-bit seed from ``seed`` and labels (split, purpose, epoch): independent draws for
    each split, purpose and epoch, the same on every machine."""
    text = repr((int(seed), *labels)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _capture() -> tuple[Any, ...]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _restore(state: tuple[Any, ...]) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


@contextmanager
def kept_random() -> Iterator[None]:
    """Inside: anything may draw from or seed the process-wide random state (torch's CPU
    generator, Python's ``random``, NumPy's global); after: the caller's, as it was."""
    outer = _capture()
    try:
        yield
    finally:
        _restore(outer)


class GlobalRandom:
    """The process-wide random state a Dataset's transforms draw from in the main process
    (torch's CPU generator, Python's ``random``, NumPy's global), held apart from the caller's:
    :meth:`active` swaps it in and out again. CUDA generators are never touched."""

    def __init__(self, seed: int) -> None:
        outer = _capture()
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self.state = _capture()
        _restore(outer)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside: this stream's random state; after: the caller's, as it was. All three, even
        where workers do the reading: the sampler draws in this process (about 0.2 ms a read,
        NumPy's state the most of it)."""
        outer = _capture()
        _restore(self.state)
        try:
            yield
        finally:
            self.state = _capture()
            _restore(outer)
