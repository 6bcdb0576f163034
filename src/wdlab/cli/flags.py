"""Flags spelled the same way in every command: one name per concept (and the aliases it
accepts), help that shows each default, and the flags of config keys (read from
:mod:`wdlab.cli.facts`, so building them imports no torch)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from typing import Any

from wdlab.cli import facts

#: The other spellings a flag accepts, in every command that has it.
ALIASES: dict[str, tuple[str, ...]] = {"--wd": ("--weight-decay",)}


def names(flag: str) -> tuple[str, ...]:
    """``flag`` and its aliases, e.g. ``("--wd", "--weight-decay")``."""
    return (flag, *ALIASES.get(flag, ()))


def dest(flag: str) -> str:
    """The attribute a flag sets: ``--wd-schedule`` → ``wd_schedule``."""
    return flag.lstrip("-").replace("-", "_")


def shown(value: Any) -> str:
    """A default as a user would type it: ``0.1``, ``coupled,decoupled``, ``emb.*=1e-05``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={shown(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(shown(v) for v in value)
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value is False or value is argparse.SUPPRESS or value in ((), [], {})


def with_default(text: str, value: Any, note: str = "") -> str:
    """``text`` ending in ``(default: VALUE)`` (``note`` after the value), unless the value is
    empty (no default to show) or the text already states it."""
    if _empty(value) or "(default" in text or "%(default)" in text:
        return text
    return f"{text} (default: {shown(value)}{note})"


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows every flag's default, unless its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return with_default(action.help or "", action.default)


def add_key(
    group: argparse._ActionsContainer,
    dotted: str,
    default_note: str = "",
    shown_default: Any = None,
) -> None:
    """The flag of config key ``section.name`` (default None: a given flag overrides the file;
    its help shows the schema's default, or ``shown_default`` with ``default_note``)."""
    k = facts.key(dotted)
    value = k["default"] if shown_default is None else shown_default
    text = k["help"] if shown_default is None else re.sub(r"\s*\(default:[^)]*\)", "", k["help"])
    help_text = with_default(text, value, default_note).replace("%", "%%")
    flag, to = k["flag"], dest(k["flag"])
    if k["cli"] == "flag":  # --prune, and --no-prune to switch off a file's true
        on_off = argparse.BooleanOptionalAction
        group.add_argument(*names(flag), dest=to, action=on_off, default=None, help=help_text)
    elif k["cli"] == "append":
        group.add_argument(*names(flag), dest=to, action="append", help=help_text)
    else:
        kind = {"int": int, "float": float}.get(k["cli"])
        group.add_argument(*names(flag), dest=to, type=kind, choices=k["choices"], help=help_text)


def replace_helps(p: argparse.ArgumentParser, helps: Mapping[str, str]) -> None:
    """Each of ``p``'s flags whose dest ``helps`` names takes that help (``argparse.SUPPRESS``:
    parsed, to be refused with its reason, not offered)."""
    for action in p._actions:
        action.help = helps.get(action.dest, action.help)


def experiment_keys() -> list[tuple[str, str]]:
    """(section.key, argparse dest) of every config key that has a flag."""
    return [(k["key"], dest(k["flag"])) for k in facts.load()["experiment"]]


def overrides(args: argparse.Namespace, keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The flags given, as ``section.key`` overrides of the config file."""
    return {dotted: getattr(args, to, None) for dotted, to in keys}
