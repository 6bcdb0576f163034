"""Equivalence checks: wdlab's decay modes against torch.optim and scikit-learn (``wdlab
verify``): :mod:`.oracles` (torch's own weight decay, AdamW, Ridge, the engine's rows alone),
:mod:`.papers` (cautious and corrected written out, timm's AdamC). Each check compares final
weights bitwise where bits are promised, else norm-wise within a bound of
:mod:`wdlab.numerics`."""

from __future__ import annotations

from collections.abc import Callable

from wdlab.data.seeds import kept_random
from wdlab.progress import progress_bar
from wdlab.records import Check
from wdlab.report.text import checks_table
from wdlab.verify.compare import compare, max_diffs
from wdlab.verify.oracles import (
    ROUNDING,
    STEPS,
    _oracle,
    check_adam_l2_differs_from_decoupled,
    check_engine_rows,
    check_independent,
    check_l2_vs_coupled,
    check_ridge,
    check_to_init,
    ridge_reference,
    train_module,
)
from wdlab.verify.papers import (
    PAPER_CHECKS,
    adamc_as_timm,
    check_corrected_timm,
    check_paper,
    paper_update,
    schedule_lrs,
)

__all__ = [
    "ROUNDING",
    "STEPS",
    "Check",
    "adamc_as_timm",
    "all_checks",
    "check_adam_l2_differs_from_decoupled",
    "check_corrected_timm",
    "check_engine_rows",
    "check_independent",
    "check_l2_vs_coupled",
    "check_paper",
    "check_ridge",
    "check_to_init",
    "checks_table",
    "compare",
    "max_diffs",
    "paper_update",
    "ridge_reference",
    "run_checks",
    "schedule_lrs",
    "train_module",
]


_LN = {"problem": "ln"}
_ADAMW = {"problem": "ln", "reference_optimizer": "adamw", "lr": 0.01, "wd": 0.1}

#: The oracles against torch's own weight_decay: (name, mode, optimizer, reference, bound —
#: 0 where bits are promised —, keywords of the check).
ORACLES = [
    ("coupled + SGD", "coupled", "sgd", "SGD(weight_decay)", 0.0, {}),
    (
        "coupled + SGD momentum",
        "coupled",
        "sgd",
        "SGD(momentum=0.9, weight_decay)",
        0.0,
        {**_LN, "options": {"momentum": 0.9}},
    ),
    (
        "coupled + SGD nesterov",
        "coupled",
        "sgd",
        "SGD(nesterov, weight_decay)",
        0.0,
        {**_LN, "options": {"momentum": 0.9, "nesterov": True}},
    ),
    ("coupled + Adam", "coupled", "adam", "Adam(weight_decay)", ROUNDING, {**_LN, "lr": 0.01}),
    ("coupled + RMSprop", "coupled", "rmsprop", "RMSprop(weight_decay)", ROUNDING, {"lr": 0.01}),
    ("coupled + Adagrad", "coupled", "adagrad", "Adagrad(weight_decay)", ROUNDING, {}),
    ("decoupled + Adam", "decoupled", "adam", "AdamW(weight_decay)", ROUNDING, _ADAMW),
    (
        "decoupled + Adam, StepLR",
        "decoupled",
        "adam",
        "AdamW + StepLR",
        ROUNDING,
        {**_ADAMW, "schedule": "step:20:0.5"},
    ),
    (
        "decoupled + Adam, cosine",
        "decoupled",
        "adam",
        "AdamW + cosine",
        ROUNDING,
        {**_ADAMW, "schedule": "cosine"},
    ),
]


def all_checks() -> list[Callable[[], Check]]:
    """Every check ``wdlab verify`` runs, in order."""
    return [
        *[lambda o=o: _oracle(*o[:5], **o[5]) for o in ORACLES],
        check_l2_vs_coupled,
        check_adam_l2_differs_from_decoupled,
        check_ridge,
        check_independent,
        check_to_init,
        check_engine_rows,
        *[lambda args=args: check_paper(*args) for args in PAPER_CHECKS],
        check_corrected_timm,
    ]


def run_checks(progress: bool = False) -> list[Check]:
    """Run every check and return the results (the ``wdlab verify`` API); the caller's random
    state (torch's CPU generator, ``random``, NumPy's) is as it was after."""
    checks = all_checks()
    out = []
    bar = None
    if progress:
        bar = progress_bar(len(checks), "verify", "check")
    for fn in checks:
        with kept_random():
            out.append(fn())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out
