"""The trained models a study keeps: each kept run's final weights, one file in the study folder.

``<study>/weights/<run key>.pt`` (the key: :func:`wdlab.store.config_key`, the run's
configuration hashed) holds that configuration's state dict as training ended: parameters and
buffers on the CPU (a tied tensor once, under both names), written with ``torch.save`` and read
back with ``torch.load(weights_only=True)``: plain tensors, no pickled code runs. A file is
written to a temporary name and renamed (never half written; the temporaries of a
process killed mid-write are swept by the next sweep of the study), and recorded in
``weights/.wdlab-files.json`` (:mod:`wdlab.pipelines.outputs`) with the ``keep`` it was written
under; wdlab deletes only files it recorded there for this study. Nothing is written anywhere
else.

``keep`` (``wdlab.sweep(keep=)``, ``train.keep``, ``--keep``) decides about the runs a call
trains, as it trains them:

* ``"best"`` (default): the runs :func:`kept_runs` names, every seed of each: per (mode, lr) the
  weight decay chosen on validation and the one to use (wd = 0's runs where the chosen one
  gains nothing measurable). The choice needs every run, so each batch's files are written as
  it finishes (recorded as written under ``keep="best"``) and, once the study is whole, those
  of them that the choice does not name are deleted: the folder briefly holds every run's
  weights.
* ``"all"``: every run's that trained to its end (not a run pruned at a rung: it stopped
  there), written by the process that trained it.
* ``"none"``: none (nothing is written).

Files already there stay whatever ``keep`` says: a study swept again with ``keep="best"``
after ``keep="all"`` deletes nothing (only files written under ``keep="best"`` and not chosen
are ever deleted), and ``keep="none"`` deletes nothing. Weights are written only while a run
trains: a study that is already whole trains nothing again, so sweeping it again with another
``keep`` adds no file (sweep into a new ``out=`` to have weights that were not kept).

With ``early_stopping`` the runs are chosen at their best validation epoch, and a run stops
training once that has not improved for ``patience`` evaluations: the weights kept are those
of its best validation epoch, the one its numbers are reported at (not those of the epoch
it stopped at, ``patience`` evaluations later).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wdlab.config import ModelConfig
from wdlab.models import MODEL_KINDS, ModelSpec, kind_options
from wdlab.pipelines.outputs import (
    changed_since_written,
    check_outputs,
    check_record,
    deleted_since_written,
    expect_output,
    forget_outputs,
    load_error,
    record_outputs,
    save_to,
    sweep_dead_writes,
    written_outputs,
)
from wdlab.records import RunConfig, RunResult, no_choice, use_wd
from wdlab.selection import decays
from wdlab.store import config_key

FOLDER = "weights"
SUFFIX = ".pt"
KEEP = ("best", "all", "none")


def check_weights_record(directory: str | Path) -> None:
    """The record of the study's kept weights, readable (one line before anything runs, where
    it is damaged: writing would replace it, and the files it names go unchecked)."""
    folder = Path(directory) / FOLDER
    how = f"restore it, or delete {folder} (the kept weights are then gone)"
    check_record(folder, "weights files", how)


def check_weights(
    directory: str | Path, configs: Iterable[RunConfig] = (), source: str = ""
) -> None:
    """Before anything trains: the record of the kept weights readable, and no file where a
    run of ``configs`` keeps its weights that wdlab did not write for this study (``source``;
    it was replaced when the run's weights were saved). One ``ValueError`` line."""
    check_weights_record(directory)
    names = [weights_path(directory, c).name for c in configs]
    how = "move it, or choose another --out"
    check_outputs(Path(directory) / FOLDER, names, source, how=how, changed_ok=True)


def weights_path(directory: str | Path, config: RunConfig) -> Path:
    """Where a run's weights are kept in a study folder."""
    return Path(directory) / FOLDER / f"{config_key(config)}{SUFFIX}"


def sweep_temporary(directory: str | Path) -> None:
    """Remove the temporary files of weights (and of their record) that a process killed
    mid-write left in the study's weights folder (their process gone)."""
    sweep_dead_writes(Path(directory) / FOLDER, SUFFIX)


def save_weights(
    directory: str | Path, results: Iterable[RunResult], source: str, keep: str = "all"
) -> list[Path]:
    """Write the weights of every run in ``results`` that carries them (``params``); record
    the files as written for ``source`` (the study) under ``keep`` (``"best"``: to be deleted
    when the study is whole unless chosen, see :func:`prune_weights`). Each file is noted as
    expected before its rename, so a process killed before the record leaves files the next
    one knows as its own (it said they were "not written by wdlab", and would not resume)."""
    folder = Path(directory) / FOLDER
    written = []
    for r in results:
        if r.params is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = weights_path(directory, r.config)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_to(tmp, dict(r.params), path)
        expect_output(folder, path.name, tmp, source)
        os.replace(tmp, path)
        written.append(path)
    if written:
        record_outputs(folder, written, source, {"keep": keep})
    return written


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict written by :func:`save_weights` (``weights_only=True``); a file that is
    missing, corrupt, not such a dict, or not the bytes wdlab recorded writing (replaced or
    edited since) is one ``ValueError`` line."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no weights file {p}")
    data = p.read_bytes()
    if changed_since_written(p.parent, p.name, data):
        raise ValueError(
            f"weights file {p} changed since wdlab wrote it (its bytes are not those recorded "
            "in weights/.wdlab-files.json): restore it, or sweep into a new out= to train again"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: what torch says, in a few words
        raise ValueError(f"weights file {p} cannot be read: {load_error(exc)}") from None
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
    return [r for r in ok if not decays(r.config.mode)]


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
    """Delete the weights files written for ``source`` under ``keep="best"`` in the study
    folder, except those of ``keep`` (the chosen runs); returns how many were deleted. Files
    written under ``keep="all"`` (or recorded without a ``keep``, by wdlab 0.2) stay."""
    folder = Path(directory) / FOLDER
    kept = {weights_path(directory, r.config).name for r in keep}
    gone = [
        name
        for name, entry in written_outputs(folder).items()
        if name not in kept
        and name.endswith(SUFFIX)
        and entry.get("source") == source
        and entry.get("keep") == "best"
    ]
    for name in gone:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    forget_outputs(folder, gone)
    return len(gone)


def pick_row(
    selection: Sequence[dict[str, Any]], mode: str | None, lr: float | None, why: str = ""
) -> dict:
    """The selection row of (mode, lr); unnamed, the one with the best validation score.
    ``why``: why nothing was chosen, for the line where the selection is empty."""
    if not selection:
        raise ValueError(f"no trained model to return: {why or 'no weight decay is chosen'}")
    rows = [
        s
        for s in selection
        if decays(s["mode"])
        and (mode is None or s["mode"] == mode)
        and (lr is None or s["lr"] == lr)
    ]
    if not rows:
        answers = [s for s in selection if decays(s["mode"])]
        have = ", ".join(f"({s['mode']}, lr {s['lr']:g})" for s in answers) or "none"
        raise ValueError(
            f"no answer for mode={mode!r}, lr={lr!r}; the study answers {have} (any run: "
            "name its mode, lr and weight_decay)"
        )
    sign = 1 if rows[0].get("higher", True) else -1
    finite = [s for s in rows if math.isfinite(s["val"])] or rows
    return max(finite, key=lambda s: sign * s["val"])


def kept_files(directory: str | Path | None, runs: Sequence[RunResult]) -> dict[int, str]:
    """{seed: weights file} of ``runs`` whose weights the study folder keeps."""
    if directory is None:
        return {}
    paths = {r.config.seed: weights_path(directory, r.config) for r in runs}
    return {s: str(p) for s, p in sorted(paths.items()) if p.is_file()}


def factory_home(spec: ModelSpec) -> dict[str, str]:
    """The data fact ``ran_in``, the directory the sweep runs from, where the model is a
    factory named by a string (a relative ``file.py:make`` is found there again, from any
    folder, by :func:`model_spec`); nothing otherwise. Not part of the study's identity."""
    return {"ran_in": os.getcwd()} if isinstance(spec.factory, str) else {}


def model_spec(result: Any, factory: Any = None) -> ModelSpec:
    """How to build the study's model: ``factory`` (a callable or ``"file.py:make"``), else
    the spec the sweep ran with (kept in this process), else the stored config's (a built-in
    kind, or a factory named ``file.py:make`` — found where the sweep ran — or
    ``module:make``)."""
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
    if kind is None and named in MODEL_KINDS:  # wdlab.sweep("mlp", ...): the kind's defaults
        kind = named
    if kind in MODEL_KINDS and kind != "custom":
        fields = {k: v for k, v in stored.items() if k in ModelConfig.__dataclass_fields__}
        cfg = ModelConfig(**fields)
        return ModelSpec(kind, **kind_options(kind, cfg), **kw)
    if isinstance(named, str) and ":" in named:
        found = factory_file(named, result.data.get("ran_in"))
        return ModelSpec("custom", factory=found, label=named, **kw)
    raise ValueError(
        f"the study's model ({named or kind}) cannot be built by name: give factory=, the "
        "function that built it"
    )


GIVE_FACTORY = "give model(factory=…), the function that built it (or 'path/to/file.py:name')"


def factory_file(named: str, ran_in: str | None) -> str:
    """A stored factory ``file.py:make`` with a relative path, as found: in ``ran_in`` (the
    directory the sweep ran from, where the study records it), else here; one ``ValueError``
    line where it is in neither. Anything else as it is."""
    where, _, name = named.rpartition(":")
    if not where.endswith(".py") or Path(where).is_absolute():
        return named
    places = [Path(ran_in)] if ran_in else []
    for place in [*places, Path.cwd()]:
        if (place / where).is_file():
            return f"{place / where}:{name}"
    looked = (
        f"in {ran_in} (where the sweep ran) or here ({Path.cwd()})"
        if ran_in
        else f"here ({Path.cwd()}), and the study does not record where its sweep ran"
    )
    raise ValueError(
        f"cannot load the study's model factory {named!r}: no file {where} {looked}; "
        + GIVE_FACTORY
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
    if result.directory is None and not result.held:
        keep = ((result.config or {}).get("train") or {}).get("keep")
        kept_any = keep in ("best", "all")
        why = f"keep={keep!r} kept none (nothing chosen)" if kept_any else "with keep='none'"
        fix = "keep='all', or out= with it" if kept_any else "keep='best' or keep='all'"
        raise ValueError(f"this result keeps no weights: it was swept without out= and {why}; "
                         f"sweep with {fix} (out= keeps them in the study)")  # fmt: skip
    if mode is not None and lr is None:  # the mode's one lr, where it has one: naming it adds
        lrs = {r.config.lr for r in result.runs if r.config.mode == mode}  # nothing
        lr = lrs.pop() if len(lrs) == 1 else None
    if mode is not None and lr is not None and (weight_decay is not None or not decays(mode)):
        wd = 0.0 if weight_decay is None else float(weight_decay)  # a run named in full
        run = the_run(result.runs, mode, lr, wd, seed)
    else:
        row = pick_row(result.selection, mode, lr, no_choice(result.runs, result.counts))
        wd = use_wd(row) if weight_decay is None else float(weight_decay)
        run = the_run(result.runs, row["mode"], row["lr"], wd, seed)
    kept = Kept(result.directory, result.held)
    if run.status in ("pruned", "diverged"):  # a diverged run's weights are zeros, if kept
        when = f"at epoch {run.epochs}" if run.status == "pruned" else "(its numbers mean nothing)"
        raise ValueError(
            f"{run_words(run.config)} was {run.status} {when}: its weights are never handed "
            "back; " + kept_words(kept, result.runs)
        )
    if not kept.has(run.config):
        raise ValueError(
            f"the weights of {run_words(run.config)} were not kept ({kept.where(run.config)}); "
            + kept_words(kept, result.runs)
        )
    state = kept.load(run.config)
    path = kept.where(run.config)
    spec = model_spec(result, factory)
    try:
        module = spec.build(run.config.seed)
    except ValueError as exc:  # a factory named by a string that no longer loads
        if factory is not None or result.spec is not None:
            raise
        raise ValueError(f"{exc}; {GIVE_FACTORY}") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # torch's heading and its first finding (a key, a shape)
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()][:2]
        why = " ".join(lines)[:300]
        raise ValueError(f"the weights in {path} do not fit the model built: {why}") from None
    return module.eval()


def the_run(
    runs: Sequence[RunResult], mode: str, lr: float, wd: float, seed: int | None
) -> RunResult:
    """The run of (mode, lr) at ``wd`` (:func:`runs_at`) with ``seed`` (unnamed: its first);
    one ``ValueError`` line naming the run asked for and what the study holds there."""
    at = sorted(runs_at(runs, mode, lr, wd), key=lambda r: r.config.seed)
    asked = f"{mode} at lr {lr:g}, wd {wd:g}"
    if at and at[0].config.mode != mode:  # wd = 0: the reference's runs
        asked += f" (wd = 0: the {at[0].config.mode} reference runs)"
    if not at:
        raise ValueError(
            f"no run of {asked}: the study's weight decays for {mode} at lr {lr:g} are "
            f"{wds_words(runs, mode, lr)}"
        )
    seeds = [r.config.seed for r in at]
    if seed is not None and seed not in seeds:
        raise ValueError(
            f"no run of {asked} with seed {seed}: its seeds are {', '.join(map(str, seeds))}"
        )
    return next(r for r in at if seed is None or r.config.seed == seed)


def wds_words(runs: Sequence[RunResult], mode: str, lr: float) -> str:
    """The weight decays the study holds for (mode, lr), in words (wd = 0 from the reference
    runs named as such); "none" where it holds no run of (mode, lr)."""
    own = sorted(
        {r.config.weight_decay for r in runs if (r.config.mode, r.config.lr) == (mode, lr)}
    )
    words = [f"{w:g}" for w in own]
    if 0.0 not in own:
        ref = [r for r in runs_at(runs, mode, lr, 0.0) if r.config.mode != mode]
        if ref:
            words.insert(0, f"0 (the {ref[0].config.mode} reference)")
    return ", ".join(words) or "none"


def run_words(c: RunConfig) -> str:
    """One run in words: ``decoupled at lr 0.003, wd 0.1, seed 2`` (``the wd = 0 run at lr
    0.003, seed 2`` for the reference, whose mode, none, decays nothing)."""
    if not decays(c.mode):
        return f"the wd = 0 run at lr {c.lr:g}, seed {c.seed}"
    return f"{c.mode} at lr {c.lr:g}, wd {c.weight_decay:g}, seed {c.seed}"


class Kept:
    """The weights a result keeps: the files of its study folder, or (a sweep without
    ``out=``) those read into memory before its temporary folder went (``held``)."""

    def __init__(self, directory: str | Path | None, held: dict[str, Any] | None = None):
        self.directory, self.held = directory, held or {}

    def has(self, config: RunConfig) -> bool:
        """Whether the run's weights are kept."""
        if self.directory is None:
            return config_key(config) in self.held
        return weights_path(self.directory, config).is_file()

    def load(self, config: RunConfig) -> dict[str, Tensor]:
        """The run's state dict (a file: checked, as :func:`load_weights` reads it)."""
        if self.directory is None:
            return self.held[config_key(config)]
        return load_weights(weights_path(self.directory, config))

    def where(self, config: RunConfig) -> str:
        """Where the run's weights are kept, in words (or, not kept, why none is there)."""
        held, path = self.has(config), weights_path(self.directory or ".", config)
        if self.directory is None:
            return f"{'' if held else 'none '}held in memory: the sweep had no out="
        gone = not held and path.name in deleted_since_written(path.parent)  # kept, then not
        return f"{'' if held else 'no file '}{path}{' (wdlab wrote it; deleted since)' * gone}"


def held_weights(directory: str | Path, runs: Sequence[RunResult]) -> dict[str, Any]:
    """{run key: state dict} of the kept weights, read (before a temporary study goes)."""
    kept = Kept(directory)
    return {config_key(r.config): kept.load(r.config) for r in runs if kept.has(r.config)}


def kept_words(kept: Kept, runs: Sequence[RunResult], limit: int = 4) -> str:
    """Which runs' weights the study keeps, in words (by mode, lr, wd: seeds), or why none."""
    groups: dict[tuple[str, float, float], list[int]] = {}
    for r in runs:  # a diverged run's file (keep="all") holds zeros: not offered
        if r.status != "diverged" and kept.has(r.config):
            c = r.config
            groups.setdefault((c.mode, c.lr, c.weight_decay), []).append(c.seed)
    if not groups and any(r.status == "diverged" and kept.has(r.config) for r in runs):
        return "the study keeps the weights of diverged runs only (never handed back)"
    if not groups:
        return (
            "the study keeps no run's weights: it was swept with keep='none' (or the files "
            "were deleted); weights are written only as runs train, so sweep into a new out= "
            "with keep='best' or 'all' to have them"
        )
    words = [
        f"mode {m} at lr {lr:g}, wd {w:g} (seeds {', '.join(map(str, sorted(seeds)))})"
        for (m, lr, w), seeds in sorted(groups.items())
    ]
    more = f"; and {len(words) - limit} more" if len(words) > limit else ""
    return "the study keeps the weights of " + "; ".join(words[:limit]) + more
