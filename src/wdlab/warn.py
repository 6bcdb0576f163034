"""Warnings that point at the user's own line: the first frame outside wdlab, torch and the
trainer that calls wdlab for the user (Lightning's ``trainer.fit`` running the ``WeightDecay``
callback), however deep inside them the warning is raised (a sweep's data, its store, an
optimizer's hook)."""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import torch

_OURS = (str(Path(__file__).parent), str(Path(torch.__file__).parent))
_PACKAGES = ("wdlab", "torch", "lightning", "pytorch_lightning", "lightning_fabric")


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn ``message``, attributed to the innermost caller outside wdlab, torch and
    Lightning."""
    frame, level = sys._getframe(1), 2
    while frame is not None and _ours(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)


def _ours(frame: types.FrameType) -> bool:
    """A frame of wdlab's or torch's (by its file, or by its module where code was generated
    with no file of its own: a dataclass's ``__init__``, file ``<string>``), or Lightning's
    (by its module)."""
    module = str(frame.f_globals.get("__name__", ""))
    return frame.f_code.co_filename.startswith(_OURS) or module.split(".")[0] in _PACKAGES
