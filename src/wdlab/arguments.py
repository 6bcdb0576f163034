"""A user's argument that takes one value or several: ``exclude="head.*"`` or
``exclude=("head.*", "*.bias")``, ``optimizers=0`` or ``optimizers=[0, 1]``."""

from __future__ import annotations


def one_or_several(value: object, kind: type, where: str, what: str) -> tuple:
    """``value`` as a tuple of ``kind``: one alone is a tuple of one (a str or bytes too: a
    word, not its letters); anything else that is not an iterable of ``kind`` (a bool is no
    int) is one ``ValueError`` line, ``{where}: {item!r} is not {what}``."""
    items = (value,) if isinstance(value, (kind, str, bytes)) else value
    try:
        out = tuple(items)  # type: ignore[call-overload]
    except TypeError:
        out = (value,)
    wrong = [v for v in out if not isinstance(v, kind) or (isinstance(v, bool) and kind is int)]
    if wrong:
        raise ValueError(f"{where}: {wrong[0]!r} is not {what}")
    return out
