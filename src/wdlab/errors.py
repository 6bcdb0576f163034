"""One-line errors: what an exception raised in user code, torch or a library says, cut to the
first line of its message, so that wdlab's own refusal stays one line."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    return (str(exc).strip().splitlines() or [""])[0]


def gist(exc: BaseException) -> str:
    """``Type: first line`` of an exception, or just ``Type`` when its message is empty."""
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
