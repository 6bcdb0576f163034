"""Devices and memory: which torch device a name means, and how much memory there is.

A leaf module (torch is imported only when a device is resolved), so the command line can check
a ``--device`` or a memory budget before anything heavy is loaded.

* :func:`check_device_name` accepts the forms wdlab knows (``cpu``, ``cuda``, ``cuda:N``,
  ``mps``) without asking the machine: a config may name a device that only a Ray worker has.
* :func:`resolve_device` also asks torch whether this process can use it, and says why not in
  one line (``ValueError``).
* :func:`available_memory` reads what the OS would still give (``MemAvailable``), and
  :func:`process_rss` what this process holds now.
* :func:`exact_float32` keeps float32 maths float32 while wdlab trains: PyTorch lets cuDNN's
  convolutions round their inputs to TF32 (10-bit mantissa) by default, which makes a
  configuration's result depend on the batch it was trained in (measured on an H100: 8e-4
  relative after 9 AdamW steps, against 1e-8 without TF32).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The default training-memory budget per batch of configurations (``--max-memory``), in MB:
#: a quarter of what a 2-core, 24 GiB CI machine has to spare.
DEFAULT_MAX_MEMORY_MB = 2048

DEVICE_FORMS = "cpu, cuda, cuda:N or mps"
_NAME = re.compile(r"^(cpu|cuda|mps)(:(\d+))?$")


def check_device_name(name: object, key: str = "device") -> str:
    """``name`` if it is a device wdlab knows by its form (cpu, cuda, cuda:N, mps), else a
    one-line ``ValueError`` naming ``key``; the machine is not asked."""
    if not isinstance(name, str) or _NAME.match(name.strip().lower()) is None:
        raise ValueError(f"{key}: unknown device {name!r}; valid: {DEVICE_FORMS}")
    if name.strip().lower().startswith(("cpu:", "mps:")):
        raise ValueError(f"{key}: unknown device {name!r}; valid: {DEVICE_FORMS}")
    return name.strip().lower()


def resolve_device(name: object = None, key: str = "device") -> torch.device:
    """The torch device ``name`` means here (``None``: CUDA when present, else the CPU), or a
    one-line ``ValueError`` when this process cannot use it (a CPU-only torch, no such GPU)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        name = str(name)
    text = check_device_name(name, key)
    kind, _, index = text.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch is a CPU-only build"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise ValueError(f"{key}: {text!r} is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ValueError(f"{key}: {text!r} is not available: this machine has {count} GPU(s)")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{key}: 'mps' is not available on this machine; use --device cpu")
    return torch.device(text)


def _meminfo(field: str) -> int | None:
    """A ``/proc/meminfo`` field in bytes (Linux), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory(device: object = None) -> int | None:
    """Bytes still free where ``device`` computes: a CUDA device's free memory, else what the
    OS could still give this process (``MemAvailable``); None where unknown."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(str(device)))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    return _meminfo("MemAvailable")


def process_rss() -> int | None:
    """Resident memory of this process in bytes (Linux ``/proc/self/statm``), or None."""
    import os

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def gib(n: float) -> str:
    """A byte count for messages: ``6.7 GiB``, ``512 MiB``, ``40 KiB``."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def check_fits(nbytes: float, what: str, device: object = None) -> None:
    """A one-line ``ValueError`` when ``what`` needs more memory than ``device`` (default: the
    host) has free (nothing is checked where that is unknown)."""
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise ValueError(
            f"{what} needs about {gib(nbytes)} of memory, more than the {gib(free)} available"
        )


@contextmanager
def exact_float32() -> Iterator[None]:
    """Turn TF32 off for cuDNN and CUDA matmuls inside the block; the caller's settings return."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
