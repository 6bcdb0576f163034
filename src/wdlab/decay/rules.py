"""Which parameters decay: a rule, the readable table, and torch parameter groups.

Parameter selection is separate from the decay formula: :class:`DecayRule` decides which
tensors decay (biases, norms, embeddings, name patterns, the model's own
``no_weight_decay()``), :func:`decay_table` says so tensor by tensor, and :func:`param_groups`
turns it into torch parameter groups.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from wdlab.arguments import one_or_several
from wdlab.decay.attach import Decay
from wdlab.decay.group import Keys
from wdlab.decay.modes import check_weight_decay, get_mode
from wdlab.decay.norms import is_norm_layer, norm_fed_weights
from wdlab.decay.table import FROZEN, DecayTable
from wdlab.warn import warn_user

EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)  # the modules whose table is an embedding


def embedding_tables(model: nn.Module) -> set[int]:
    """The ``id`` of each embedding's table in ``model``, under whichever name a tie gives it
    first (a head declared before the embedding it ties to owns the name)."""
    return {id(p) for m in model.modules() if isinstance(m, EMBEDDINGS) for p in m.parameters()}


def _plain(name: str) -> str:
    """A parameter's name without ``torch.compile``'s ``_orig_mod.``: the eager model's."""
    return name.replace("_orig_mod.", "")


def _match(name: str, pattern: str) -> bool:
    """Whether a parameter's name (a compiled model's as the eager one's) matches ``pattern``."""
    return fnmatch.fnmatchcase(_plain(name), pattern) or fnmatch.fnmatchcase(name, pattern)


_PATTERN, _MODULE = "a name pattern (str)", "an nn.Module class"


@dataclass(frozen=True)
class DecayRule:
    """Which parameters decay. The default: tensors with ndim ≥ 2 decay; 1-D ones do not.

    ``everything`` decays all tensors (the article decays biases too). ``exclude`` and
    ``include`` are fnmatch patterns on parameter names, ``exclude_regex`` regular expressions
    searched in the lower-cased names (Hugging Face's convention), ``exclude_types`` module
    types whose parameters (at any depth) never decay; ``embeddings`` False keeps
    ``nn.Embedding`` weights from decaying; ``use_model_hook`` honours the model's
    ``no_weight_decay()`` (timm's convention). ``normalized`` (fnmatch patterns) marks the
    tensors AdamC treats as normalized layers (mode ``corrected``); by default the decaying
    weights that feed a normalization layer (:func:`norm_fed_weights`: in a Transformer every
    projection, transformers' ``Conv1D`` included, but not the head, as in AdamC's Llama runs;
    none in a network without normalization layers). Frozen tensors (``requires_grad=False``)
    never decay, under every rule, as in timm, nanoGPT and the Hugging Face Trainer.
    :meth:`preset` gives the rules of timm, nanoGPT and the Hugging Face Trainer.
    """

    everything: bool = False
    embeddings: bool = True
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude_types: tuple[type[nn.Module], ...] = ()
    use_model_hook: bool = True
    exclude_regex: tuple[str, ...] = ()
    normalized: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("exclude", "include", "exclude_regex", "normalized"):  # one pattern alone
            patterns = one_or_several(getattr(self, key), str, f"DecayRule {key}", _PATTERN)
            object.__setattr__(self, key, patterns)
        types = one_or_several(self.exclude_types, type, "DecayRule exclude_types", _MODULE)
        object.__setattr__(self, "exclude_types", types)
        if bad := [t for t in self.exclude_types if not issubclass(t, nn.Module)]:
            raise ValueError(f"DecayRule exclude_types: {bad[0]!r} is not {_MODULE}")
        for key in ("everything", "embeddings", "use_model_hook"):
            if not isinstance(getattr(self, key), bool):  # "no" would be true
                raise ValueError(
                    f"DecayRule {key}: expected True or False, got {getattr(self, key)!r}"
                )
        for pattern in self.exclude_regex:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"DecayRule exclude_regex: {pattern!r} is not a regular expression ({exc})"
                ) from None

    @staticmethod
    def preset(name: str) -> DecayRule:
        """The rule another library uses: ``timm``, ``nanogpt`` or ``hf`` (see :data:`PRESETS`)."""
        rule = PRESETS.get(name)
        if rule is None:
            raise ValueError(f"unknown rule preset {name!r}; valid: {', '.join(PRESETS)}")
        return rule

    def describe(self) -> str:
        """One line saying what this rule decays."""
        if self.name:
            return PRESET_TEXT[self.name]
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
        if self.exclude_regex:
            extra.append("excluded (regex): " + ", ".join(self.exclude_regex))
        if self.exclude_types:
            extra.append("types excluded: " + ", ".join(t.__name__ for t in self.exclude_types))
        return base + ("; " + "; ".join(extra) if extra else "")

    def reasons(self, model: nn.Module, unfreezing: bool = False) -> dict[str, tuple[bool, str]]:
        """For each parameter name: (decays?, why); ``unfreezing``: a frozen tensor as the rule
        says it would decay once it trains (an optimizer's groups hold it for then)."""
        owner: dict[str, nn.Module] = {}
        modules = dict(model.named_modules())
        for mod_name, mod in modules.items():
            for p_name, _ in mod.named_parameters(recurse=False):
                owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
        hook_names: set[str] = set()
        if self.use_model_hook and hasattr(model, "no_weight_decay"):
            hook_names = set(model.no_weight_decay())
        tables = embedding_tables(model)
        out: dict[str, tuple[bool, str]] = {}
        for name, p in model.named_parameters():
            mod = owner.get(name)
            if not p.requires_grad and not unfreezing:  # no gradient, no update, no decay
                out[name] = (False, FROZEN)
            elif any(_match(name, pat) for pat in self.include):
                out[name] = (True, "include pattern")
            elif any(_match(name, pat) for pat in self.exclude):
                out[name] = (False, "exclude pattern")
            elif any(re.search(pat, _plain(name).lower()) for pat in self.exclude_regex):
                out[name] = (False, "exclude regex")
            elif _plain(name) in hook_names or any(_match(name, h) for h in hook_names):
                out[name] = (False, "model.no_weight_decay()")
            elif excluded := self._excluded_type(name, modules):
                out[name] = (False, f"type {excluded}")
            elif not self.embeddings and id(p) in tables:
                out[name] = (False, "embedding")
            elif self.everything:
                out[name] = (True, "everything")
            elif p.dim() >= 2:
                out[name] = (True, "ndim >= 2")
            else:
                norm = mod is not None and is_norm_layer(mod)
                out[name] = (False, "norm" if norm else _small(name, p))
        return out

    def unmatched(self, model: nn.Module) -> list[str]:
        """One line for each of this rule's own patterns (not a preset's: timm's ``*.bias`` on
        a model without biases is the rule) that matches no parameter of ``model``, and for
        each name the model's ``no_weight_decay()`` gives that none is: a typo decays as if it
        were not there. Empty where every one matches."""
        names = [n for n, _ in model.named_parameters()]
        first = {id(p): n for n, p in model.named_parameters()}  # a tied tensor's first name
        tied = {n: first[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
        out = []
        for key, patterns in (("include", self.include), ("exclude", self.exclude)):
            for pat in patterns if not self.name else ():
                if any(_match(n, pat) for n in names):
                    continue
                alias = next((n for n in tied if _match(n, pat)), None)  # a tied second name
                out.append(
                    f"the rule's {key} pattern {pat!r} matches no parameter"
                    if alias is None
                    else f"the rule's {key} pattern {pat!r} matches only {alias!r}, a tied "
                    f"name of {tied[alias]!r}: the tensor is ruled by that name"
                )
        if self.use_model_hook and hasattr(model, "no_weight_decay"):
            for h in sorted(map(str, model.no_weight_decay())):
                if not any(_plain(n) == h or _match(n, h) for n in names):
                    out.append(f"the model's no_weight_decay() names {h!r}: no parameter is")
        hint = " (check the names with `wdlab inspect` or model.named_parameters())"
        return [line + hint for line in out]

    def _excluded_type(self, name: str, modules: dict[str, nn.Module]) -> str:
        """The name of an ``exclude_types`` class that holds parameter ``name`` at any depth
        (the Hugging Face Trainer's reading: every parameter inside a LayerNorm), else ''."""
        if not self.exclude_types:
            return ""
        parts = name.split(".")[:-1]
        for depth in range(len(parts) + 1):
            mod = modules.get(".".join(parts[:depth]))
            if mod is not None and isinstance(mod, self.exclude_types):
                return type(mod).__name__
        return ""

    def normalized_names(self, model: nn.Module, decaying: list[str]) -> set[str]:
        """The decaying tensors AdamC (mode ``corrected``) treats as normalized layers."""
        if self.normalized:
            return {n for n in decaying if any(_match(n, p) for p in self.normalized)}
        return set(norm_fed_weights(model)) & set(decaying)

    def normalized_note(self, model: nn.Module, normalized: set[str]) -> str:
        """One line saying which tensors ``corrected`` treats as normalized, and why."""
        if self.normalized:
            return (
                f"AdamC-normalized: {len(normalized)} tensors matching {', '.join(self.normalized)}"
            )
        if not any(is_norm_layer(m) for m in model.modules()):
            return (
                "AdamC-normalized: none, the model has no normalization layer; corrected "
                "decays every tensor as decoupled does"
            )
        return (
            f"AdamC-normalized: {len(normalized)} weight{'s' * (len(normalized) != 1)} that "
            f"feed{'s' * (len(normalized) == 1)} a normalization layer; the "
            "layers after the last one (the head) decay as decoupled does"
        )


DEFAULT_RULE = DecayRule()
EVERYTHING = DecayRule(everything=True)

#: Other libraries' rules, transcribed (each cited; tests hold them to the library where it
#: installs here): timm's ``param_groups_weight_decay`` (timm 1.0.31, timm/optim/_param_groups.py)
#: decays unless ``ndim <= 1``, the name ends in ``.bias`` or the model's ``no_weight_decay()``
#: lists it; nanoGPT's ``configure_optimizers`` (karpathy/nanoGPT model.py) decays exactly the
#: tensors with ``dim() >= 2``; the Hugging Face Trainer's ``get_decay_parameter_names``
#: (transformers 5.x) decays everything except LayerNorm modules' parameters and names matching
#: bias / layernorm / rmsnorm / norm. All three leave frozen (``requires_grad=False``) tensors
#: out of the optimizer, as every rule here does.
HF_NO_DECAY = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
PRESETS: dict[str, DecayRule] = {
    "timm": DecayRule(exclude=("*.bias",), name="timm"),
    "nanogpt": DecayRule(use_model_hook=False, name="nanogpt"),
    "hf": DecayRule(
        everything=True,
        use_model_hook=False,
        exclude_types=(nn.LayerNorm,),
        exclude_regex=HF_NO_DECAY,
        name="hf",
    ),
}
PRESET_TEXT = {
    "timm": "timm: tensors with ndim >= 2 decay, except names ending in .bias and the model's "
    "no_weight_decay()",
    "nanogpt": "nanoGPT: exactly the tensors with dim() >= 2 decay",
    "hf": "Hugging Face Trainer: everything decays except LayerNorm parameters and names with "
    "bias, layernorm, rmsnorm or a norm component",
}


#: The rules by name, as ``rule=`` and ``--rule`` take them.
RULE_NAMES: dict[str, DecayRule] = {"default": DEFAULT_RULE, "everything": EVERYTHING, **PRESETS}


def as_rule(rule: DecayRule | str) -> DecayRule:
    """``rule`` as a DecayRule: one, or a name of :data:`RULE_NAMES` (``"timm"``…)."""
    if isinstance(rule, DecayRule):
        return rule
    if isinstance(rule, str) and rule in RULE_NAMES:
        return RULE_NAMES[rule]
    raise ValueError(
        f"rule: {rule!r} is not a decay rule; valid: {', '.join(RULE_NAMES)}, or a wdlab.DecayRule"
    )


def _small(name: str, p: Tensor) -> str:
    """Why a tensor of ndim < 2 outside a norm layer does not decay, in the table's words."""
    if not p.dim():
        return "ndim 0 (a scalar)"
    return "ndim < 2 (bias)" if name.rsplit(".", 1)[-1] == "bias" else "ndim 1"


def decay_table(
    model: nn.Module, rule: DecayRule | str = DEFAULT_RULE, unfreezing: bool = False
) -> DecayTable:
    """The table of which parameters of ``model`` decay under ``rule`` (a DecayRule or a name).

    It also says which of them AdamC's ``corrected`` mode treats as normalized layers. A frozen
    tensor does not decay; with ``unfreezing`` (an optimizer's groups), it is placed as the rule
    says it would decay once it trains: no optimizer updates or decays it while it is frozen."""
    if not isinstance(model, nn.Module):  # the rule reads names and module types
        raise ValueError(
            f"param_groups and decay_table take the nn.Module, got {type(model).__name__}: "
            "the rule reads its parameters' names and module types"
        )
    rule = as_rule(rule)
    reasons = rule.reasons(model, unfreezing)
    for name, p in model.named_parameters() if unfreezing else ():
        if not p.requires_grad and reasons[name][0]:
            reasons[name] = (True, f"{reasons[name][1]}; frozen now: decays once it trains")
    normalized = rule.normalized_names(model, [n for n, (d, _) in reasons.items() if d])
    names: dict[int, list[str]] = {}  # a tied tensor's every name (listed once, its first)
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    rows = [
        {
            "name": name,
            "shape": list(p.shape),
            "numel": p.numel(),
            "decays": reasons[name][0],
            "why": reasons[name][1] + _tied(names[id(p)][1:]),
            "normalized": name in normalized,
        }
        for name, p in model.named_parameters()
    ]
    return DecayTable(rows, rule.describe(), rule.normalized_note(model, normalized))


def _tied(others: list[str]) -> str:
    """`` (tied: also lm_head.weight)``: the other names of a tensor shared by several
    modules, whose row is its first name's (one tensor, one decision); "" for one name."""
    return f" (tied: also {', '.join(others)})" if others else ""


def stored_table(
    model: nn.Module, rule: DecayRule, group_wd: Mapping[str, float] | None, decaying: bool = True
) -> dict:
    """:func:`decay_table`'s JSON form as a study stores it, each row of a ``group_wd``
    pattern's tensors with its ``own_wd``: [pattern, weight decay] (patterns in the order given,
    the first to match a tensor taking it; a pattern that takes none is refused). A pattern of
    the rule that matches nothing, and a rule under which nothing decays where a weight decay
    is asked for (``decaying``), are warned."""
    table = decay_table(model, rule)
    try:
        groups = own_groups(table, group_wd or {})
    except ValueError as exc:  # a study's group_wd: named by its config key (and its flag)
        raise ValueError(f"decay.group_wd: {exc}") from None
    own = {n: [p, wd] for p, names, wd in groups for n in names}
    for line in rule.unmatched(model):
        warn_user(line)
    if decaying and not table.decayed[0]:
        warn_user(
            "no tensor of the model decays under the rule: every weight decay trains as wd = 0 "
            f"({rule.describe()})"
        )
    doc = table.to_dict()
    for row in doc["parameters"]:
        if row["name"] in own:
            row["own_wd"] = own[row["name"]]
    return doc


def param_groups(
    model: nn.Module,
    decay: Decay | None = None,
    rule: DecayRule | str = DEFAULT_RULE,
    weight_decays: Mapping[str, float] | None = None,
    **group_options: object,
) -> tuple[list[dict], DecayTable]:
    """Torch parameter groups (decaying, not decaying) for ``model`` and the readable table.

    Each group carries ``"decay": True/False`` for :meth:`Decay.attach`, and ``weight_decay``
    set for ``builtin`` (0 elsewhere, so AdamW's default 0.01 never sneaks in).
    ``weight_decays`` maps fnmatch patterns of parameter names to their own weight decay (e.g.
    ``{"emb.*": 1e-5}``): the decaying tensors a pattern matches get a group of their own with
    ``"wdlab_wd"`` set. For mode ``corrected``, decaying groups are split into AdamC's normalized
    layers and the rest (``"normalized": True/False``). A pattern of the rule that matches no
    parameter is warned: a typo decays as if it were not there.
    """
    if decay is not None and not isinstance(decay, Decay):
        raise ValueError(
            f"param_groups' decay must be a wdlab.Decay, e.g. Decay('decoupled', 0.1), got "
            f"{type(decay).__name__} {decay!r}"
        )
    table = decay_table(model, rule, unfreezing=True)  # a frozen matrix decays once unfrozen
    for line in as_rule(rule).unmatched(model):
        warn_user(line)
    by_name = dict(model.named_parameters())
    base = decay.weight_decay if decay is not None else 0.0
    mode = get_mode(decay.mode) if decay is not None else None
    to_optimizer = mode is not None and mode.optimizer_wd
    split_normalized = mode is not None and mode.normalized
    groups = []
    for names, wd, extra in _group_names(table, weight_decays or {}, base, split_normalized):
        groups.append(
            {
                "params": [by_name[n] for n in names],
                "names": names,
                Keys.DECAY: wd is not None,
                "weight_decay": (wd or 0.0) if to_optimizer else 0.0,
                **extra,
                **group_options,
            }
        )
    return groups, table


def own_groups(
    table: DecayTable, weight_decays: Mapping[str, float]
) -> list[tuple[str, list[str], float]]:
    """(pattern, names, weight decay) of each pattern of ``weight_decays``, in order: the
    decaying parameters it matches that no earlier pattern took. A pattern that takes none is
    refused in one line."""
    decaying = [r for r in table.rows if r["decays"]]
    out: list[tuple[str, list[str], float]] = []
    taken: set[str] = set()
    for pattern, wd in weight_decays.items():
        check_weight_decay(wd)
        names = [r["name"] for r in decaying if _match(r["name"], pattern)]
        names = [n for n in names if n not in taken]
        if not names:
            others = [r["name"] for r in table.rows if _match(r["name"], pattern)]
            why = (
                f"it matches only {len(others)} tensors that do not decay under the rule"
                if others
                else "check the names with `wdlab inspect` or model.named_parameters()"
            )
            raise ValueError(
                f"weight decay for {pattern!r}: the pattern matches no decaying parameter "
                f"that an earlier pattern did not take ({why})"
            )
        taken |= set(names)
        out.append((pattern, names, float(wd)))
    return out


def _group_names(
    table: DecayTable, weight_decays: Mapping[str, float], base: float, split_normalized: bool
) -> list[tuple[list[str], float | None, dict]]:
    """(names, weight decay or None for no decay, extra group keys) of each group."""
    out: list[tuple[list[str], float | None, dict]] = [
        (names, wd, {Keys.OWN_WD: wd, "pattern": pattern})
        for pattern, names, wd in own_groups(table, weight_decays)
    ]
    taken = {n for names, _, _ in out for n in names}
    rest = [r for r in table.rows if r["decays"] and r["name"] not in taken]
    flags = (True, False) if split_normalized else (None,)
    for flag in flags:
        names = [r["name"] for r in rest if flag is None or r["normalized"] is flag]
        if names:
            out.append((names, base, {} if flag is None else {Keys.NORMALIZED: flag}))
    kept = [r["name"] for r in table.rows if not r["decays"]]
    if kept:
        out.append((kept, None, {}))
    if split_normalized:  # a pattern's own group: the normalized flag per tensor
        flag_of = {r["name"]: r["normalized"] for r in table.rows}
        for names, _, extra in out:
            if Keys.OWN_WD in extra:
                extra[Keys.NORMALIZED] = [flag_of[n] for n in names]
    return out
