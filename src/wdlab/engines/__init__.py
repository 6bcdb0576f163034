"""How K configurations' weights are held and run: one protocol (:class:`Engine`, see
:mod:`.base`), one implementation per kind of model (:mod:`.mlp` over :mod:`.layers`, :mod:`.gram`,
:mod:`.grouped`, :mod:`.torchfunc`)."""

from wdlab.engines.base import EVAL_CHUNK, Engine, NormProbe, Setup, Stacked, Tape
from wdlab.engines.gram import GramEngine
from wdlab.engines.grouped import GroupedCNNEngine
from wdlab.engines.layers import ACTIVATIONS, Act, Head, Layout, Linear, Norm
from wdlab.engines.mlp import MLPEngine
from wdlab.engines.torchfunc import FuncEngine

__all__ = [
    "ACTIVATIONS",
    "EVAL_CHUNK",
    "Act",
    "Engine",
    "FuncEngine",
    "GramEngine",
    "GroupedCNNEngine",
    "Head",
    "Layout",
    "Linear",
    "MLPEngine",
    "Norm",
    "NormProbe",
    "Setup",
    "Stacked",
    "Tape",
]
