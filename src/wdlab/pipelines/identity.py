"""What differs between a stored study's config and a new one, in a few words (the line that
refuses a sweep into a folder holding another study)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wdlab.jsonsafe import dumps


def differences(stored: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """What differs between a stored study's config and a new one, in a few words: up to
    ``limit`` dotted keys with both values."""
    new = json.loads(dumps(new, sort_keys=True))
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}.{k}" if path else k)
        elif a != b:
            what = f" ({_MEANS[path]})" if path in _MEANS else ""
            found.append(f"{path}{what}: {_value(a)} stored, {_value(b)} now")

    walk(dict(stored), new, "")
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


_MISSING = object()
_MEANS = {
    "model.fingerprint": "the model built: its structure, initial weights or code",
    "data.fingerprint": "the data: their values, splits or loaders",
    "train.loss.code": "the loss: its code or settings, such as label_smoothing",
    "decay.metric.code": "the metric: its code or the values it holds",
}


def _value(v: Any) -> str:
    if v is _MISSING:
        return "none"
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 40 else text[:39] + "…"
