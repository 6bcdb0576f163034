"""Weight decay as small pieces: modes (:mod:`.modes`), the one driver that applies them at
their points of a step (:mod:`.driver`, over :mod:`.group`'s decay groups), which parameters
decay (:mod:`.rules`), attaching a decay to any torch optimizer (:mod:`.attach`) and the
mistakes it warns about (:mod:`.findings`)."""

from wdlab.decay.attach import Attachment, Decay, warn_on_attach
from wdlab.decay.driver import Driver
from wdlab.decay.findings import attach_warnings, formula, surprise_warnings
from wdlab.decay.group import WD, DecayGroup, Keys
from wdlab.decay.modes import (
    FORMULAS,
    MODES,
    REFERENCE_MODE,
    Mode,
    apply_param_point,
    check_mode,
    check_weight_decay,
    coupled,
    decoupled_factor,
    get_mode,
    independent_factor,
    l2_penalty,
    shrink,
    to_init,
)
from wdlab.decay.norms import NORM_TYPES
from wdlab.decay.rules import (
    DEFAULT_RULE,
    EVERYTHING,
    PRESETS,
    DecayRule,
    DecayTable,
    decay_table,
    param_groups,
)
from wdlab.decay.schedules import WDSchedule, cosine, linear

__all__ = [
    "DEFAULT_RULE",
    "EVERYTHING",
    "FORMULAS",
    "MODES",
    "NORM_TYPES",
    "PRESETS",
    "REFERENCE_MODE",
    "WD",
    "Attachment",
    "Decay",
    "DecayGroup",
    "DecayRule",
    "DecayTable",
    "Driver",
    "Keys",
    "Mode",
    "WDSchedule",
    "apply_param_point",
    "attach_warnings",
    "check_mode",
    "check_weight_decay",
    "cosine",
    "coupled",
    "decay_table",
    "decoupled_factor",
    "formula",
    "get_mode",
    "independent_factor",
    "l2_penalty",
    "linear",
    "param_groups",
    "shrink",
    "surprise_warnings",
    "to_init",
    "warn_on_attach",
]
