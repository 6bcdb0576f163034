"""One-line errors: what an exception raised in user code, torch or a library says, cut to the
first line of its message, so that wdlab's own refusal stays one line."""

from __future__ import annotations

from pathlib import Path

USER_FRAME = "wdlab_user_frame"  # set on an exception raised elsewhere (a Ray task)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    return (str(exc).strip().splitlines() or [""])[0]


def gist(exc: BaseException) -> str:
    """``Type: first line`` of an exception, or just ``Type`` when its message is empty."""
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def user_frame(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback that is the user's (not
    wdlab's, an installed package's or Python's own), where it comes after wdlab's last; ""
    where wdlab's own code is the innermost of those. An exception raised in another process
    (a Ray task) carries it as set there (:data:`USER_FRAME`): its traceback did not come."""
    import sysconfig  # (here: not at every import of wdlab, for a command that fails)

    ours = str(Path(__file__).resolve().parent)
    stdlib = sysconfig.get_paths()["stdlib"]
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        raw = tb.tb_frame.f_code.co_filename
        name = raw if raw.startswith("<") else str(Path(raw).resolve())  # <frozen importlib…>
        if name.startswith(ours):
            found = ""
        elif not ("-packages" in name or name.startswith(stdlib) or name.startswith("<")):
            found = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found or str(getattr(exc, USER_FRAME, "") or "")
