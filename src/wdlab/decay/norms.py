"""Normalization layers, and the weights whose scale a later normalization cancels.

:class:`wdlab.decay.rules.DecayRule` reads them (norms' parameters do not decay by default;
AdamC's normalized layers), and so does the audit.
"""

from __future__ import annotations

import re

from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: A normalization layer that is not one of torch's: a class named like Hugging Face's
#: ``LlamaRMSNorm`` or ``T5LayerNorm``, apex's ``FusedLayerNorm``, timm's ``LayerNorm2d``
#: (``FrozenBatchNorm2d`` only rescales by fixed statistics: not a normalization).
NORM_NAME = re.compile(r"Norm(?:[123][dD])?$")


def is_norm_layer(module: nn.Module) -> bool:
    """Whether ``module`` normalizes its input (torch's norm layers, or one named like them)."""
    name = type(module).__name__
    named = bool(NORM_NAME.search(name)) and not name.startswith("Frozen")
    return isinstance(module, NORM_TYPES) or named


def layer_weights(module: nn.Module) -> list[str]:
    """The weight matrices of a layer whose scale a later normalization cancels: the >= 2-D
    parameters it owns whose names end in ``weight``: ``nn.Linear``'s and a convolution's
    ``weight``, transformers' ``Conv1D``'s, ``nn.MultiheadAttention``'s ``in_proj_weight``
    (or ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``); none of embeddings and
    norms."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or is_norm_layer(module):
        return []
    own = module._parameters.items()
    return [n for n, p in own if p is not None and p.dim() >= 2 and n.endswith("weight")]


def norm_fed_weights(model: nn.Module) -> list[str]:
    """AdamC's normalized layers by default: the weights of the layers that feed a normalization
    layer, i.e. the weight layers declared before the model's last normalization layer (in a
    Transformer every projection before the final norm; in a CNN every convolution before the
    last BatchNorm; never the head after it; torch's attention's ``in_proj_weight`` too).
    Modules are read in the order they are declared,
    which is forward order in ``nn.Sequential``, torchvision, timm and Hugging Face models. A
    model without normalization layers has none."""
    names: list[str] = []
    fed: list[str] = []
    for mod_name, mod in model.named_modules():
        if is_norm_layer(mod):
            fed = list(names)
        else:
            names += [f"{mod_name}.{n}" if mod_name else n for n in layer_weights(mod)]
    return fed
