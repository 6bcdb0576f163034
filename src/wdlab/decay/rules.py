"""Which parameters decay: a rule, the readable table, and torch parameter groups.

Parameter selection is separate from the decay formula: :class:`DecayRule` decides which
tensors decay (biases, norms, embeddings, name patterns, the model's own
``no_weight_decay()``), :func:`decay_table` says so tensor by tensor, and :func:`param_groups`
turns it into torch parameter groups.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from wdlab.decay.attach import Decay

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


@dataclass(frozen=True)
class DecayRule:
    """Which parameters decay. The default: tensors with ndim ≥ 2 decay; 1-D ones do not.

    ``everything`` decays all tensors (the article decays biases too). ``exclude`` and
    ``include`` are fnmatch patterns on parameter names, ``exclude_types`` module types whose
    own parameters never decay; ``embeddings`` False keeps ``nn.Embedding`` weights from
    decaying; ``use_model_hook`` honours the model's ``no_weight_decay()`` (timm's convention).
    """

    everything: bool = False
    embeddings: bool = True
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude_types: tuple[type[nn.Module], ...] = ()
    use_model_hook: bool = True

    def describe(self) -> str:
        """One line saying what this rule decays."""
        if self.everything:
            base = "every tensor decays (biases and norms too)"
        else:
            base = "tensors with ndim >= 2 decay; biases and other 1-D tensors do not"
        extra = []
        if not self.embeddings:
            extra.append("embeddings excluded")
        if self.exclude:
            extra.append("excluded: " + ", ".join(self.exclude))
        if self.include:
            extra.append("forced: " + ", ".join(self.include))
        if self.exclude_types:
            extra.append("types excluded: " + ", ".join(t.__name__ for t in self.exclude_types))
        return base + ("; " + "; ".join(extra) if extra else "")

    def reasons(self, model: nn.Module) -> dict[str, tuple[bool, str]]:
        """For each parameter name: (decays?, why)."""
        owner: dict[str, nn.Module] = {}
        for mod_name, mod in model.named_modules():
            for p_name, _ in mod.named_parameters(recurse=False):
                owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
        hook_names: set[str] = set()
        if self.use_model_hook and hasattr(model, "no_weight_decay"):
            hook_names = set(model.no_weight_decay())
        out: dict[str, tuple[bool, str]] = {}
        for name, p in model.named_parameters():
            mod = owner.get(name)
            if any(fnmatch.fnmatchcase(name, pat) for pat in self.include):
                out[name] = (True, "include pattern")
            elif any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude):
                out[name] = (False, "exclude pattern")
            elif name in hook_names or any(fnmatch.fnmatchcase(name, h) for h in hook_names):
                out[name] = (False, "model.no_weight_decay()")
            elif mod is not None and self.exclude_types and isinstance(mod, self.exclude_types):
                out[name] = (False, f"type {type(mod).__name__}")
            elif not self.embeddings and isinstance(mod, nn.Embedding):
                out[name] = (False, "embedding")
            elif self.everything:
                out[name] = (True, "everything")
            elif p.dim() >= 2:
                out[name] = (True, "ndim >= 2")
            else:
                norm = mod is not None and isinstance(mod, NORM_TYPES)
                out[name] = (False, "norm" if norm else "ndim < 2 (bias)")
        return out


DEFAULT_RULE = DecayRule()
EVERYTHING = DecayRule(everything=True)


@dataclass
class DecayTable:
    """Which parameters decay: one row per parameter, printable and JSON-able."""

    rows: list[dict]
    rule: str

    @property
    def decayed(self) -> tuple[int, int]:
        """(tensors, elements) that decay."""
        rows = [r for r in self.rows if r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    @property
    def kept(self) -> tuple[int, int]:
        """(tensors, elements) that do not decay."""
        rows = [r for r in self.rows if not r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    def summary(self) -> str:
        """The nanoGPT-style line: how many tensors and parameters decay."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        return (
            f"decayed: {dt} tensors, {dn:,} parameters; not decayed: {kt} tensors, "
            f"{kn:,} parameters ({self.rule})"
        )

    def to_text(self) -> str:
        """A fixed-width table of the rows and the summary line."""
        w = max([len("parameter")] + [len(r["name"]) for r in self.rows])
        lines = [f"{'parameter':<{w}}  {'shape':<14} {'count':>10}  decays  why"]
        for r in self.rows:
            shape = "×".join(map(str, r["shape"])) or "scalar"
            lines.append(
                f"{r['name']:<{w}}  {shape:<14} {r['numel']:>10,}  "
                f"{'yes' if r['decays'] else 'no':<6}  {r['why']}"
            )
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        return {
            "rule": self.rule,
            "parameters": self.rows,
            "decayed_tensors": dt,
            "decayed_parameters": dn,
            "kept_tensors": kt,
            "kept_parameters": kn,
        }


def decay_table(model: nn.Module, rule: DecayRule = DEFAULT_RULE) -> DecayTable:
    """The table of which parameters of ``model`` decay under ``rule``."""
    reasons = rule.reasons(model)
    rows = [
        {
            "name": name,
            "shape": list(p.shape),
            "numel": p.numel(),
            "decays": reasons[name][0],
            "why": reasons[name][1],
        }
        for name, p in model.named_parameters()
    ]
    return DecayTable(rows, rule.describe())


def param_groups(
    model: nn.Module,
    decay: Decay | None = None,
    rule: DecayRule = DEFAULT_RULE,
    **group_options: object,
) -> tuple[list[dict], DecayTable]:
    """Torch parameter groups (decaying, not decaying) for ``model`` and the readable table.

    Each group carries ``"decay": True/False`` for :meth:`Decay.attach`, and
    ``weight_decay`` set for ``builtin`` (0 elsewhere, so AdamW's default 0.01 never sneaks in).
    """
    table = decay_table(model, rule)
    by_name = dict(model.named_parameters())
    wd = decay.optimizer_weight_decay() if decay is not None else 0.0
    groups = []
    for flag in (True, False):
        names = [r["name"] for r in table.rows if r["decays"] is flag]
        if names:
            groups.append(
                {
                    "params": [by_name[n] for n in names],
                    "names": names,
                    "decay": flag,
                    "weight_decay": wd if flag else 0.0,
                    **group_options,
                }
            )
    return groups, table
