"""A lint for weight decay in code you already have: :func:`audit`.

``audit(optimizer, model)`` reads any torch optimizer's parameter groups (built by hand, by
timm, Hugging Face, Lightning or :func:`wdlab.param_groups`) and says, tensor by tensor, whether
it decays, by what formula for that optimizer class (coupled for SGD and Adam, decoupled for
AdamW, … from :mod:`wdlab.optimizers`; an attached :class:`wdlab.Decay` too) and with what weight
decay. It names the known mistakes (:data:`CHECKS`):

* ``decayed-norm`` / ``decayed-bias``: norm weights or biases that decay (warnings);
  ``decayed-embedding``: embedding tables that decay (a note: recipes differ);
* ``adam-l2``: Adam-family ``weight_decay`` (L2 that Adam rescales) where AdamW was likely meant;
* ``missing``: trainable parameters of the model in no param group (never updated);
* ``duplicate``: a parameter in two groups (or twice in one, or in two optimizers);
* ``lr-wd``: lr·wd ≥ 1, so a step multiplies the weights by 1 − lr·wd ≤ 0;
* ``double-decay``: the optimizer's own ``weight_decay`` under an attached wdlab ``Decay``;
* ``bad-wd``: a group's own ``weight_decay`` that is negative, NaN or infinite (torch checks
  only the constructor's default), which grows the weights or makes them NaN;
* ``redundant-bias``: a bias that feeds only a norm which subtracts it again (a Conv's bias
  before a BatchNorm): its gradient is rounding noise (:mod:`wdlab.zerograd`);
* ``wd-overridden``: ``weight_decay`` given to the optimizer's constructor, but every group
  sets its own 0 and no ``Decay`` is attached, so nothing decays;
* ``decayed-listed``: tensors that decay although the model lists them in its
  ``no_weight_decay()`` (timm's convention: a ViT's ``cls_token``, ``pos_embed``), a note.

A frozen tensor (``requires_grad=False``) in a group does not decay now: torch's optimizers
and wdlab's decay skip a tensor without a gradient. It is listed as ``no (frozen)``, with the
weight decay it gets once it trains (gradual unfreezing), and a finding about it says it is
frozen now.

The per-group rules (``adam-l2``, ``lr-wd``, ``double-decay``, ``bad-wd``) are
:mod:`wdlab.decay.findings`, which :meth:`wdlab.Decay.attach` and the trainer warn in the same
words; the per-tensor ones (which need the model) are here.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from html import escape

import torch
from torch import nn

from wdlab.decay import NORM_TYPES, get_mode
from wdlab.decay.findings import group_findings, sources, still, unpacked_setup, with_peak
from wdlab.decay.group import attached
from wdlab.decay.rules import embedding_tables
from wdlab.optimizers import class_name, known_spec
from wdlab.zerograd import biases_before_norms

#: Every finding code and its severity (``warning``: almost surely a mistake; ``note``: a
#: choice worth knowing about).
CHECKS: dict[str, str] = {
    "decayed-norm": "warning",
    "decayed-bias": "warning",
    "decayed-embedding": "note",
    "adam-l2": "warning",
    "missing": "warning",
    "duplicate": "warning",
    "lr-wd": "warning",
    "double-decay": "warning",
    "redundant-bias": "warning",
    "bad-wd": "warning",
    "wd-overridden": "warning",
    "decayed-listed": "note",
}
_NORM_NAME = re.compile(r"norm|(?:^|\.)(?:ln|bn|gn)[_\d]*\.")
SHOWN = 4  # names listed in one finding before "…"


@dataclass(frozen=True)
class Finding:
    """One mistake found: its code (a key of :data:`CHECKS`), severity and one-line message
    (what, where, and the fix); ``params`` the tensors it concerns, ``group`` the param group."""

    code: str
    severity: str
    message: str
    params: tuple[str, ...] = ()
    group: int | None = None


@dataclass
class AuditReport:
    """What :func:`audit` found: one row per tensor, the findings, printable and JSON-able."""

    optimizer: str
    rows: list[dict]
    findings: list[Finding] = field(default_factory=list)
    #: with several optimizers, what each group number (counted across them) is, e.g.
    #: ``AdamW #1's group 0``; empty for one optimizer
    groups: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No warnings (notes allowed)."""
        return not any(f.severity == "warning" for f in self.findings)

    def codes(self) -> list[str]:
        """The finding codes, in order."""
        return [f.code for f in self.findings]

    def to_dict(self) -> dict:
        """JSON-ready form (the same content as :meth:`to_text`)."""
        return {
            "optimizer": self.optimizer,
            "parameters": self.rows,
            "findings": [asdict(f) | {"params": list(f.params)} for f in self.findings],
            "groups": self.groups,
            "ok": self.ok,
        }

    def to_text(self) -> str:
        """The per-tensor table, the formulas it refers to, and the findings."""
        cells = [
            (
                r["name"],
                "×".join(map(str, r["shape"])) or "scalar",
                ",".join(map(str, r["groups"])) or "-",
                r["kind"],
                "yes" if r["decays"] else "no (frozen)" if r["frozen"] else _no(r),
                " + ".join(f"{d['wd']:g}" for d in r["decay"]) or "0",
                " + ".join(d["mode"] for d in r["decay"]) or "-",
            )
            for r in self.rows
        ]
        head = ("parameter", "shape", "group", "kind", "decays", "wd", "how")
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [head, *cells]
        ]
        formulas = {
            f"{d['by']} is {d['mode']}: {d['formula']}" for r in self.rows for d in r["decay"]
        }
        lines += sorted(formulas)
        if self.groups:
            lines.append(
                "groups are numbered across the optimizers: "
                + "; ".join(f"{i} = {g}" for i, g in enumerate(self.groups))
            )
        n_dec = sum(r["decays"] for r in self.rows)
        lines.append(f"{self.optimizer}: {n_dec} of {len(self.rows)} tensors decay")
        lines += [f"{f.severity}: [{f.code}] {f.message}" for f in self.findings]
        lines.append("no weight-decay mistakes found" if not self.findings else self._tally())
        return "\n".join(lines)

    def _tally(self) -> str:
        n = {s: sum(f.severity == s for f in self.findings) for s in ("warning", "note")}
        return f"{n['warning']} warning(s), {n['note']} note(s)"

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        n_dec = sum(r["decays"] for r in self.rows)
        found = "no weight-decay mistakes found" if not self.findings else self._tally()
        return f"AuditReport({self.optimizer}: {n_dec} of {len(self.rows)} tensors decay; {found})"

    def _repr_html_(self) -> str:
        """The table and the findings, for notebooks."""
        return f"<pre>{escape(self.to_text())}</pre>"


def audit(
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    model: nn.Module | None = None,
    scheduler: object = None,
) -> AuditReport:
    """Lint the weight decay of ``optimizer``: how each tensor decays, and the mistakes.

    ``optimizer``: one, or several sharing ``model``, or what Lightning's
    ``configure_optimizers`` returns (``([optimizers], [schedulers])``, ``{"optimizer": …,
    "lr_scheduler": …}``, a list of such dicts); the mistakes are the module docstring's.
    ``scheduler``: lr schedulers (one or a list) that keep their peak lrs to themselves
    (CyclicLR's ``max_lrs``): ``lr-wd`` is checked at them."""
    optimizer, schedulers = unpacked_setup(optimizer, scheduler)
    opts = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts):
        given = list(model) if isinstance(model, (list, tuple)) else [model]
        optimizers = all(isinstance(o, torch.optim.Optimizer) for o in given)
        swapped = optimizers and isinstance(optimizer, nn.Module)
        order = ": audit(optimizer, model), the optimizer first" if swapped else ""
        raise ValueError(
            "audit needs a torch.optim optimizer, a list of them or what Lightning's "
            f"configure_optimizers returns; got {type(optimizer).__name__}{order}"
        )
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"audit's model must be a torch.nn.Module, got {type(model).__name__}")
    names, kinds = _names_and_kinds(model)
    rows: dict[int, dict] = {}
    findings: list[Finding] = []
    gi, where = 0, []
    for opt in opts:
        label = class_name(opt) if len(opts) == 1 else f"{class_name(opt)} #{opts.index(opt)}"
        decay = attached(opt)
        for local, group in enumerate(opt.param_groups):
            peaked = with_peak(group, schedulers, opt, local)  # (CyclicLR's max_lrs)
            every = sources(class_name(opt), group, decay)
            entries = [] if still(peaked) else every
            for j, p in enumerate(group["params"]):
                name = names.get(id(p), f"group{gi}.params[{j}]")
                row = rows.setdefault(id(p), _row(name, p, kinds.get(id(p))))
                row["groups"].append(gi)
                row["decay"] += entries
                row["lr_zero"] |= len(entries) < len(every)  # decays that its lr of 0 stills
                row["decays"] = bool(row["decay"]) and not row["frozen"]  # torch skips it
            findings += [
                _finding(code, msg, group=gi)
                for code, msg in group_findings(class_name(opt), label, gi, peaked, decay)
            ]
            where.append(f"{label}'s group {local}")
            gi += 1
    for name, p in model.named_parameters() if model is not None else ():
        if p.requires_grad and id(p) not in rows:  # in no group: listed, and a finding
            rows[id(p)] = _row(name, p, kinds.get(id(p)))
    table = list(rows.values())
    findings = _tensor_findings(table) + _listed_findings(table, model) + findings
    findings += _overridden_findings(opts, rows) + _redundant_bias_findings(model, opts)
    groups = where if len(opts) > 1 else []
    return AuditReport(" + ".join(class_name(o) for o in opts), table, findings, groups)


# ---------------------------------------------------------------------------------------------


def _names_and_kinds(model: nn.Module | None) -> tuple[dict[int, str], dict[int, str]]:
    """Each parameter's name and kind (norm, bias, embedding, 1-D, scalar, weight) by ``id``;
    an embedding's table is one under whichever name a tie gives it first."""
    if model is None:
        return {}, {}
    names, kinds = {}, {}
    tables = embedding_tables(model)
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(p) in names:
                continue
            names[id(p)] = full
            kinds[id(p)] = "embedding" if id(p) in tables else _kind(full, p, mod)
    return names, kinds


def _kind(name: str, p: torch.Tensor, owner: nn.Module) -> str:
    last = name.rsplit(".", 1)[-1].lower()
    if isinstance(owner, NORM_TYPES) or (p.dim() <= 1 and _NORM_NAME.search(name.lower())):
        return "norm"
    if last == "bias" or (p.dim() <= 1 and "bias" in last):
        return "bias"
    return _shape_kind(p)


def _shape_kind(p: torch.Tensor) -> str:
    return "weight" if p.dim() >= 2 else "1-D" if p.dim() else "scalar"


def _row(name: str, p: torch.Tensor, kind: str | None) -> dict:
    if kind is None:
        kind = _shape_kind(p)
    return {
        "name": name,
        "shape": list(p.shape),
        "numel": p.numel(),
        "kind": kind,
        "groups": [],
        "frozen": not p.requires_grad,  # no gradient: no optimizer updates or decays it
        "decays": False,
        "decay": [],
        "lr_zero": False,  # in a group whose lr is 0 (and no scheduler raises it): none acts
    }


def _no(row: dict) -> str:
    return "no (lr 0)" if row["lr_zero"] else "no"


def _finding(code: str, message: str, params: Sequence[str] = (), group: int | None = None):
    return Finding(code, CHECKS[code], message, tuple(params), group)


def _count(n: int, kind: str) -> str:
    return f"{n} {kind} tensor{'s' if n != 1 else ''}"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", … ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def _tensor_findings(rows: list[dict]) -> list[Finding]:
    """Norms, biases and embeddings that decay; parameters in no group or in two."""
    out = []
    fixes = {
        "norm": "a norm's gain (and shift) decays toward 0, against what it learns",
        "bias": "biases set offsets, not capacity; decaying them only pulls them to 0",
        "embedding": "a choice: nanoGPT and timm decay embeddings, many fine-tuning recipes "
        "do not (DecayRule(embeddings=False))",
    }
    for kind, why in fixes.items():
        hit = [r for r in rows if r["decay"] and r["kind"] == kind]  # frozen: once unfrozen
        if hit:
            n, hit_names = sum(r["numel"] for r in hit), [r["name"] for r in hit]
            keep = "" if kind == "embedding" else _keep_out(*_decay_of(hit))
            verb = "decays" if len(hit) == 1 else "decay"
            frozen = sum(r["frozen"] for r in hit)
            now = f" ({frozen} frozen now: from when they train)" if frozen else ""
            message = f"{_count(len(hit), kind)} ({n:,} parameters) {verb}{now}: "
            message += _listed(hit_names)
            out.append(_finding(f"decayed-{kind}", f"{message}; {why}{keep}", hit_names))
    twice = [r for r in rows if len(r["groups"]) > 1]
    if twice:
        where = "; ".join(f"{r['name']} in groups {r['groups']}" for r in twice[:SHOWN])
        out.append(
            _finding(
                "duplicate",
                f"{_count(len(twice), 'shared')} in more than one param group ({where}): each step "
                "updates (and decays) them once per group; keep each tensor in one group",
                [r["name"] for r in twice],
            )
        )
    missing = [r["name"] for r in rows if not r["groups"]]
    if missing:
        out.append(
            _finding(
                "missing",
                f"{_count(len(missing), 'trainable')} in no param group: {_listed(missing)}; "
                "the optimizer never updates or decays them (add them, or set "
                "requires_grad=False if they are frozen on purpose)",
                missing,
            )
        )
    return out


def _redundant_bias_findings(
    model: nn.Module | None, opts: Sequence[torch.optim.Optimizer]
) -> list[Finding]:
    """Biases that feed only a BatchNorm/LayerNorm/GroupNorm which removes them again
    (:func:`wdlab.zerograd.biases_before_norms`, read from the model's ``torch.fx`` graph)."""
    found = biases_before_norms(model) if model is not None else []
    if not found:
        return []
    names = [z.name for z in found]
    where = "; ".join(f"{z.name}: {z.why}" for z in found[:SHOWN])
    adaptive = [
        class_name(o) for o in opts if (spec := known_spec(class_name(o))) and spec.adam_family
    ]
    effect = (
        f"{', '.join(dict.fromkeys(adaptive))} turns it into lr-sized steps"
        if adaptive
        else "it trains nothing"
    )
    return [
        _finding(
            "redundant-bias",
            f"redundant bias before a norm ({where}): its gradient is rounding noise, and "
            f"{effect}; use bias=False (as torchvision and timm models do)",
            names,
        )
    ]


def _listed_findings(rows: list[dict], model: nn.Module | None) -> list[Finding]:
    """Tensors that decay although the model's ``no_weight_decay()`` lists them (timm's
    convention; :class:`wdlab.DecayRule` honours it)."""
    hook = getattr(model, "no_weight_decay", None)
    try:
        listed = set(hook()) if callable(hook) else set()
    except Exception:  # the model's own method: not ours to fail on
        listed = set()
    hit = [r for r in rows if r["decay"] and r["name"] in listed]
    if not hit:
        return []
    names = [r["name"] for r in hit]
    return [
        _finding(
            "decayed-listed",
            f"{_count(len(hit), 'listed')} decay although the model's no_weight_decay() names "
            f"them: {_listed(names)}; timm's optimizer factory and wdlab.param_groups leave "
            f"them out{_keep_out(*_decay_of(hit))}",
            names,
        )
    ]


def _overridden_findings(
    opts: Sequence[torch.optim.Optimizer], rows: dict[int, dict]
) -> list[Finding]:
    """An optimizer given ``weight_decay`` > 0 whose every group sets 0, nothing attached."""
    out = []
    for opt in opts:
        given = opt.defaults.get("weight_decay", 0)
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        decayed = any(rows[i]["decay"] or rows[i]["lr_zero"] for i in ids)  # (lr 0: stilled)
        own = isinstance(given, (int, float)) and given > 0 and given != _default_wd(opt)
        if own and not decayed and ids:  # (AdamW's default 0.01: maybe never given)
            out.append(
                _finding(
                    "wd-overridden",
                    f"{class_name(opt)}(weight_decay={given:g}) decays nothing: every param "
                    "group sets its own weight_decay=0 (wdlab.param_groups(model) without a "
                    f"Decay does){_keep_out(given, lead='to decay by it, norms and biases out')}",
                )
            )
    return out


def _default_wd(opt: torch.optim.Optimizer) -> object:
    """The ``weight_decay`` the optimizer's class takes when none is given (AdamW: 0.01)."""
    try:
        return inspect.signature(type(opt)).parameters["weight_decay"].default
    except (KeyError, TypeError, ValueError):
        return None


def _keep_out(wd: float, mode: str = "builtin", lead: str = "keep them out") -> str:
    """How to keep norms, biases and ``no_weight_decay()`` tensors out while the rest decays
    as now: by ``wd`` in ``mode`` (``builtin``: the optimizer's own ``weight_decay``; another:
    the wdlab Decay attached, which the new optimizer takes again). Nothing where ``wd`` is
    no weight decay (negative, NaN: ``bad-wd`` says so)."""
    if not (wd >= 0 and math.isfinite(wd)):
        return ""
    on_it = "" if get_mode(mode).optimizer_wd else ", the decay on it"  # (builtin: the groups)
    then = "then the optimizer on groups" + on_it
    return f'; {lead}: groups, _ = wdlab.param_groups(model, wdlab.Decay("{mode}", {wd:g})), {then}'


def _decay_of(rows: Sequence[dict]) -> tuple[float, str]:
    """The weight decay the first of ``rows`` decays by, and the mode (``builtin`` where the
    optimizer does it)."""
    decay = rows[0]["decay"] if rows else []
    ours = [d for d in decay if d.get("by") == "wdlab Decay"]  # kept in the advice
    first = (ours or decay or [{}])[0]
    mode = first.get("mode", "builtin") if first.get("by") == "wdlab Decay" else "builtin"
    return float(first.get("wd", 0.0)), mode
