"""Progress bars: tqdm's, as the environment draws them (a widget in a notebook, text on a
terminal: ``tqdm.auto``); each closes when its work ends (``leave=False``). Whether to draw
one is the caller's (``progress=``; the command line: on a terminal only)."""

from __future__ import annotations

from typing import Any


def progress_bar(total: float | None, desc: str, unit: str, **kwargs: Any) -> Any:
    """A tqdm bar of ``total`` ``unit``s under ``desc`` (tqdm's other keywords as given)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, **kwargs)
