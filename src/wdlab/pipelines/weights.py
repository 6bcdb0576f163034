"""The trained models a study keeps: each kept run's final weights, one file in the study folder.

``<study>/weights/<run key>.pt`` (the key: :func:`wdlab.store.config_key`, the run's
configuration hashed) holds that configuration's state dict as training ended: parameters and
buffers on the CPU (a tied tensor once, under both names), written with ``torch.save`` and read
back with ``torch.load(weights_only=True)``: plain tensors, no pickled code runs. A file is
written to a temporary name and renamed (never half written), and recorded in
``weights/.wdlab-files.json`` (:mod:`wdlab.pipelines.outputs`); wdlab deletes only files it
recorded there for this study. Nothing is written anywhere else.

``keep`` (``wdlab.sweep(keep=)``, ``train.keep``, ``--keep``):

* ``"best"`` (default): the runs :func:`kept_runs` names, every seed of each: per (mode, lr) the
  weight decay chosen on validation and the one to use (wd = 0's runs where the chosen one
  gains nothing measurable). The choice needs every run, so each batch's files are written as
  it finishes and the others deleted once the study is whole: the folder briefly holds every
  run's weights.
* ``"all"``: every run's.
* ``"none"``: none (nothing is written; files already there stay).

With ``early_stopping`` the runs are still chosen at their best validation epoch, but the
weights kept are those at the end of training (every epoch trains; the compute is not saved).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wdlab.config import ModelConfig
from wdlab.decay import get_mode
from wdlab.models import MODEL_KINDS, ModelSpec
from wdlab.pipelines.outputs import MANIFEST, _manifest, record_outputs
from wdlab.records import RunConfig, RunResult, use_wd
from wdlab.store import config_key

FOLDER = "weights"
SUFFIX = ".pt"
KEEP = ("best", "all", "none")


def weights_path(directory: str | Path, config: RunConfig) -> Path:
    """Where a run's weights are kept in a study folder."""
    return Path(directory) / FOLDER / f"{config_key(config)}{SUFFIX}"


def save_weights(directory: str | Path, results: Iterable[RunResult], source: str) -> list[Path]:
    """Write the weights of every run in ``results`` that carries them (``params``); record
    the files as written for ``source`` (the study)."""
    folder = Path(directory) / FOLDER
    written = []
    for r in results:
        if r.params is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = weights_path(directory, r.config)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(dict(r.params), tmp)
        os.replace(tmp, path)
        written.append(path)
    if written:
        record_outputs(folder, written, source)
    return written


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict written by :func:`save_weights` (``weights_only=True``); a file that is
    missing, corrupt or not such a dict is one ``ValueError`` line."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no weights file {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: what torch says, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"weights file {p} cannot be read: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {p} holds no state dict of tensors")
    return state


def runs_at(
    runs: Sequence[RunResult], mode: str, lr: float, wd: float, seed: int | None = None
) -> list[RunResult]:
    """The runs of (mode, lr) at weight decay ``wd`` (wd = 0: the mode's own runs at 0, else
    the no-decay reference runs), of one seed or all."""
    ok = [r for r in runs if r.config.lr == lr and (seed is None or r.config.seed == seed)]
    same = [r for r in ok if r.config.mode == mode and r.config.weight_decay == wd]
    if same or wd != 0:
        return same
    return [r for r in ok if not get_mode(r.config.mode).decays]


def kept_runs(runs: Sequence[RunResult], selection: Sequence[dict[str, Any]]) -> list[RunResult]:
    """The runs ``keep="best"`` keeps: per selection row, its chosen weight decay's and its
    ``use_wd``'s, every seed."""
    out: dict[str, RunResult] = {}
    for row in selection:
        for wd in {float(row["weight_decay"]), use_wd(row)}:
            for r in runs_at(runs, row["mode"], row["lr"], wd):
                out[config_key(r.config)] = r
    return list(out.values())


def prune_weights(directory: str | Path, keep: Iterable[RunResult], source: str) -> int:
    """Delete the weights files wdlab wrote for ``source`` in the study folder except those of
    ``keep``; returns how many were deleted."""
    folder = Path(directory) / FOLDER
    kept = {weights_path(directory, r.config).name for r in keep}
    written = _manifest(folder)
    gone = []
    for name, entry in written.items():
        if name not in kept and entry.get("source") == source and name.endswith(SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
            gone.append(name)
    if gone:
        left = [folder / n for n in written if n not in gone and (folder / n).is_file()]
        (folder / MANIFEST).unlink(missing_ok=True)
        record_outputs(folder, left, source)
    return len(gone)


def pick_row(selection: Sequence[dict[str, Any]], mode: str | None, lr: float | None) -> dict:
    """The selection row of (mode, lr); unnamed, the one with the best validation score."""
    rows = [
        s
        for s in selection
        if get_mode(s["mode"]).decays
        and (mode is None or s["mode"] == mode)
        and (lr is None or s["lr"] == lr)
    ]
    if not rows:
        have = ", ".join(f"({s['mode']}, lr {s['lr']:g})" for s in selection) or "none"
        raise ValueError(f"no selection row for mode={mode!r}, lr={lr!r}; the study has {have}")
    sign = 1 if rows[0].get("higher", True) else -1
    finite = [s for s in rows if math.isfinite(s["val"])] or rows
    return max(finite, key=lambda s: sign * s["val"])


def kept_files(directory: str | Path | None, runs: Sequence[RunResult]) -> dict[int, str]:
    """{seed: weights file} of ``runs`` whose weights the study folder keeps."""
    if directory is None:
        return {}
    paths = {r.config.seed: weights_path(directory, r.config) for r in runs}
    return {s: str(p) for s, p in sorted(paths.items()) if p.is_file()}


def model_spec(result: Any, factory: Any = None) -> ModelSpec:
    """How to build the study's model: ``factory`` (a callable or ``"file.py:make"``), else
    the spec the sweep ran with (kept in this process), else the stored config's (a built-in
    kind, or a factory named ``file.py:make`` / ``module:make``)."""
    sizes = result.data.get("model_sizes") or {}
    kw = {
        "in_dim": sizes.get("in_dim", 0),
        "out_dim": sizes.get("out_dim", 1),
        "in_shape": tuple(sizes.get("in_shape") or ()),
    }
    if factory is not None:
        return ModelSpec("custom", factory=factory, label=str(factory), **kw)
    if result.spec is not None:
        return result.spec
    stored = dict(result.config.get("model") or {})
    kind, named = stored.get("kind"), stored.get("factory")
    if kind in MODEL_KINDS and kind != "custom":
        fields = {k: v for k, v in stored.items() if k in ModelConfig.__dataclass_fields__}
        cfg = ModelConfig(**fields)
        return ModelSpec(
            kind, hidden=tuple(cfg.hidden), activation=cfg.activation,
            layernorm=cfg.layernorm, batchnorm=cfg.batchnorm, dropout=cfg.dropout, **kw,
        )  # fmt: skip
    if isinstance(named, str) and ":" in named:
        return ModelSpec("custom", factory=named, label=named, **kw)
    raise ValueError(
        f"the study's model ({named or kind}) cannot be built by name: give factory=, the "
        "function that built it"
    )


def build_trained(
    result: Any,
    seed: int | None = None,
    mode: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    factory: Any = None,
) -> nn.Module:
    """The trained ``nn.Module`` of one run of a study (see ``SweepResult.model``)."""
    if result.directory is None:
        raise ValueError("this result has no study folder (out= was not given): no weights kept")
    row = pick_row(result.selection, mode, lr)
    wd = use_wd(row) if weight_decay is None else float(weight_decay)
    runs = runs_at(result.runs, row["mode"], row["lr"], wd)
    seeds = sorted(r.config.seed for r in runs)
    if not runs or (seed is not None and seed not in seeds):
        raise ValueError(
            f"no run of {row['mode']}, lr {row['lr']:g}, wd {wd:g}"
            + (f", seed {seed}" if seed is not None else "")
            + f" in the study (seeds: {', '.join(map(str, seeds)) or 'none'})"
        )
    run = next(r for r in runs if r.config.seed == (seeds[0] if seed is None else seed))
    path = weights_path(result.directory, run.config)
    if not path.is_file():
        raise ValueError(
            f"the weights of {run.config.name} wd {wd:g} seed {run.config.seed} were not kept "
            f"({path}): it was trained with keep='none', or keep='best' chose other runs"
        )
    state = load_weights(path)
    module = model_spec(result, factory).build(run.config.seed)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"the weights in {path} do not fit the model built: {first}") from None
    return module.eval()
