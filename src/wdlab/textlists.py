"""Lists of values as the command line and a config write them: ``"a,b,c"`` (one trailing
comma allowed, an empty value refused) and log ranges ``"LO..HI:N"`` (two dots; three refused).
Each refusal is one ``ValueError`` line naming the key."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

MAX_RANGE = 1_000_000  # values in one log range or seed count (a hard limit)


def parse_float_list(text: str | float | list, key: str) -> list[float]:
    """A number, a list, ``"a,b,c"`` or a log range ``"LO..HI:N"`` → list of floats."""
    if isinstance(text, bool):
        raise ValueError(f"{key}: expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        return [float(text)]
    if isinstance(text, list):
        return [v for item in text for v in parse_float_list(item, key)]
    if not isinstance(text, str):
        raise ValueError(f"{key}: expected a number or a list, got {text!r}")
    text = text.strip()
    if ".." in text:
        rng, _, count = text.partition(":")
        lo, hi = range_ends(rng, key)
        try:
            lo_f, hi_f, n = float(lo), float(hi), int(count)
        except ValueError:
            raise ValueError(
                f"{key}: expected LO..HI:N (e.g. 1e-6..1e-1:11), got {text!r}"
            ) from None
        if not (0 < lo_f < hi_f < math.inf) or n < 2:
            raise ValueError(f"{key}: a log range needs 0 < LO < HI and N >= 2, got {text!r}")
        if n > MAX_RANGE:
            raise ValueError(f"{key}: a log range has at most {MAX_RANGE:,} values, got {n:,}")
        step = (math.log10(hi_f) - math.log10(lo_f)) / (n - 1)
        return [float(f"{10 ** (math.log10(lo_f) + i * step):.6g}") for i in range(n)]
    try:
        return [float(v) for v in comma_items(text, key)]
    except ValueError:
        raise ValueError(f"{key}: expected numbers separated by commas, got {text!r}") from None


def range_ends(text: str, key: str) -> tuple[str, str]:
    """The two ends of a range ``LO..HI`` as written; three dots are refused, in one line.

    (``1e-5...1e-1`` split at its first two dots read HI as ``.1e-1``: 0.01, silently.)"""
    if "..." in text:
        raise ValueError(f"{key}: {text!r} has three dots; a range is LO..HI, two dots")
    lo, _, hi = text.partition("..")
    return lo, hi


def comma_items(text: str, key: str) -> list[str]:
    """The values of a comma list (one trailing comma allowed: ``3,`` is the list [3]); an
    empty value between commas is refused, not dropped (``0,,1`` is not ``0,1``)."""
    if not text.strip():
        return []  # nothing given: the key's own check says so
    parts = text.split(",")
    if len(parts) > 1 and not parts[-1].strip():
        parts = parts[:-1]
    if any(not p.strip() for p in parts):
        raise ValueError(f"{key}: an empty value between commas in {text!r}")
    return [p.strip() for p in parts]


def first_repeat(values: Iterable[Hashable]) -> Hashable | None:
    """The first value that repeats an earlier one, found in one pass; None if none does."""
    seen: set[Hashable] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None
