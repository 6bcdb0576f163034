"""``wdlab audit``: a lint for weight decay in code you already have."""

from __future__ import annotations

import argparse
from typing import Any

from wdlab.cli.common import Command, UsageError, add_factory_timeout, add_json, emit_json
from wdlab.loading import load_callable


def load_setup(target: str, timeout: float | None) -> tuple[Any, Any, Any]:
    """Call ``MODULE:FUNCTION`` (or ``path/to/file.py:FUNCTION``), a zero-argument function
    returning ``(model, optimizer)`` or ``(model, optimizer, scheduler)`` (made, it has set
    its peak lr in the groups), within ``timeout`` seconds, and return the model and the
    optimizer, and the scheduler or None (what it raises is one line naming it, as a model
    factory's is)."""
    from torch import nn

    from wdlab.usercode import call_user

    func = load_callable(target)
    result = call_user(func, target, timeout=timeout, what="setup function")
    if not (isinstance(result, tuple) and len(result) in (2, 3)):
        shape = f"{len(result)} values" if isinstance(result, tuple) else type(result).__name__
        raise UsageError(
            f"{target}() must return (model, optimizer) or (model, optimizer, scheduler), "
            f"got {shape}"
        )
    if isinstance(result[1], nn.Module) and not isinstance(result[0], nn.Module):
        raise UsageError(f"{target}() returned the model second: return (model, optimizer)")
    return result[0], result[1], (result[2] if len(result) == 3 else None)


def cmd_audit(args: argparse.Namespace) -> int:
    """Lint the weight decay of your (model, optimizer): per tensor whether and how it decays,
    and the known mistakes. Exit 1 if any warning is found."""
    from wdlab.auditing import audit

    model, optimizer, scheduler = load_setup(args.target, args.factory_timeout)
    report = audit(optimizer, model, scheduler)
    if args.json:
        emit_json(report.to_dict())
    else:
        print(report.to_text())
    return 0 if report.ok else 1


def add_audit_flags(p: argparse.ArgumentParser) -> None:
    """The function that builds the model and optimizer, and --json."""
    p.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="a zero-argument function returning (model, optimizer) or (model, optimizer, "
        "scheduler), e.g. mytrain:setup or "
        "path/to/train.py:setup",
    )
    add_factory_timeout(p)
    add_json(p)


COMMANDS = [
    Command(
        "audit", "lint the weight decay of your model and optimizer", add_audit_flags, cmd_audit
    )
]
