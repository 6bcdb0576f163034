"""What differs between a stored study's config and a new one, in a few words (the line that
refuses a sweep into a folder holding another study), and the model's outputs on the first
training examples: a check of what the code's fingerprint cannot see (a global the model
reads, a helper function it calls), compared norm-wise, not hashed, so that the same model on
another CPU's kernels (or a GPU's) is the same study."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wdlab.data import Dataset, StreamedData
from wdlab.halving import Prune, rung_spacing
from wdlab.inputs import take
from wdlab.jsonsafe import dumps
from wdlab.pipelines.checks import NOT_IN_IDENTITY
from wdlab.pipelines.userdata import eval_outputs

PROBE_EXAMPLES = 8
# a changed model moves its outputs by far more; float32 kernels of other CPUs or a GPU by
# ~1e-6 relative (the same weights, the same inputs, a forward pass in eval mode)
PROBE_TOLERANCE = 1e-3


def differences(stored: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """What differs between a stored study's config and a new one, in a few words: up to
    ``limit`` dotted keys with both values (not the keys no study's identity holds, such as
    ``train.keep``: changed alone, they make no other study; nor the model's outputs on the
    first training examples where those examples differ)."""
    new = json.loads(dumps(new, sort_keys=True))
    found: list[str] = []
    unidentifying = {f"train.{k}" for k in NOT_IN_IDENTITY}

    def walk(a: Any, b: Any, path: str) -> None:
        if path in unidentifying:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}.{k}" if path else k)
        elif a != b and not (_unset(a) and _unset(b)):  # null stored, key absent now: alike
            means = _MEANS.get(path) or (_ZERO_MEANS.get(path) if 0 in (a, b) else None)
            what = f" ({means})" if means else ""
            found.append(f"{path}{what}: {_value(a)} stored, {_value(b)} now")

    walk(dict(stored), new, "")
    if any(f.startswith("data.fingerprint") for f in found):  # the probe runs on the data:
        found = [f for f in found if not f.startswith("model.probe")]  # it differs with them
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


_MISSING = object()
CODE_KEYS = (("model", "factory"), ("data", "source"))  # where a config names a user's file


def respell(stored: Mapping[str, Any], *configs: dict[str, Any]) -> None:
    """A code file ``configs`` name as the stored study spelt it, where both name the same
    file from here (``./m.py:make`` and ``m.py:make``, or its absolute path): one study,
    however its file is spelt; a file that is another from here stays another study."""
    for section, key in CODE_KEYS:
        old = (stored.get(section) or {}).get(key)
        for config in configs:
            new = (config.get(section) or {}).get(key)
            if isinstance(old, str) and isinstance(new, str) and _same_code(old, new):
                config[section][key] = old


def same_rungs(stored: Mapping[str, Any], config: dict[str, Any], *also: dict[str, Any]) -> None:
    """A first rung given as the stored study's (in ``config`` and the dicts ``also`` that
    hold it: the identity), where the two give the same rungs (``3`` where the study chose 3
    from its epochs, or the reverse): one study, as it was spelt."""
    old, train = stored.get("train") or {}, config.get("train") or {}
    a, b = old.get("prune_rung"), train.get("prune_rung")
    same = ("prune", "prune_eta", "epochs", "early_stopping", "eval_every", "steps")
    if a == b or not train.get("prune") or train.get("steps"):
        return
    if any(old.get(k) != train.get(k) for k in same):
        return
    epochs, spacing = train.get("epochs"), rung_spacing(train)
    try:
        rungs = {Prune(train["prune_eta"], r or None).rungs(epochs, spacing) for r in (a, b)}
    except (ValueError, TypeError, KeyError):  # not rungs at all: another study
        return
    if len(rungs) == 1:
        config["train"]["prune_rung"] = a
        for d in also:  # an identity: a rung chosen from the epochs (0, the default) is left out
            d.setdefault("train", {})["prune_rung"] = a
            if not a:
                del d["train"]["prune_rung"]


def _same_code(a: str, b: str) -> bool:
    (file_a, _, name_a), (file_b, _, name_b) = a.rpartition(":"), b.rpartition(":")
    if name_a != name_b or not (file_a.endswith(".py") and file_b.endswith(".py")):
        return False
    return Path(file_a).resolve() == Path(file_b).resolve()


def _unset(v: Any) -> bool:
    return v is None or v is _MISSING


_MEANS = {
    "model.fingerprint": "the model built: its structure, initial weights or code",
    "data.fingerprint": "the data: their values, splits or loaders",
    "train.loss.code": "the loss: its code or settings, such as label_smoothing",
    "decay.metric.code": "the metric: its code or the values it holds",
    "model.probe": "the model's outputs on the first training examples",
}
_ZERO_MEANS = {"train.batch_size": "0: the full batch"}  # said where one side is 0 ("0 stored,
# 7 now" read oddly)


def _value(v: Any) -> str:
    if v is _MISSING:
        return "none"
    if isinstance(v, dict) and isinstance(v.get("name"), str):  # a loss or metric of one's own
        v = v["name"]  # (its code's hash says nothing to a reader)
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 40 else text[:39] + "…"


def output_probe(model: nn.Module, ds: Dataset | StreamedData) -> list[float] | None:
    """Per example of the first training examples: the mean and the root-mean-square of
    ``model``'s outputs in eval mode (:func:`~wdlab.pipelines.userdata.eval_outputs`); None
    where the model gives no floating tensor, fails (the memory estimate says why) or gives
    NaN or ±inf (not comparable: the study then compares no probe)."""
    if isinstance(ds, StreamedData):
        x = take(ds.probe[0], slice(0, PROBE_EXAMPLES)) if ds.probe else ds.example
    else:
        x = ds.X_train[:PROBE_EXAMPLES]
    out = eval_outputs(model, x)
    if not isinstance(out, torch.Tensor) or out.dim() == 0 or not out.is_floating_point():
        return None
    v = out.detach().float().cpu().reshape(out.shape[0], -1)
    if not torch.isfinite(v).all():
        return None
    pairs = torch.stack([v.mean(1), v.pow(2).mean(1).sqrt()], 1).flatten().tolist()
    return [float(f"{p:.7g}") for p in pairs]


def probe_difference(stored: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What :func:`differences` says of two configs' model probes (:func:`output_probe`) whose
    relative distance exceeds ``PROBE_TOLERANCE`` (the model changed); "" where they agree or
    either is missing (a study stored before probes)."""
    a = (stored.get("model") or {}).get("probe")
    b = (new.get("model") or {}).get("probe")
    if not a or not b or len(a) != len(b) or not all(isinstance(v, float | int) for v in a + b):
        return ""  # (a probe stored with NaN as null: not comparable)
    diff = math.dist(a, b)
    scale = max(math.hypot(*a), math.hypot(*b), 1e-12)
    if diff <= PROBE_TOLERANCE * scale:
        return ""
    return (
        f"model.probe ({_MEANS['model.probe']}: relative difference {diff / scale:.3g}; the "
        "model's code, or a global or helper it reads, changed)"
    )
