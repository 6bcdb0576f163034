"""How the command line stops: Ctrl-C (``KeyboardInterrupt``, exit 130) and SIGTERM
(:class:`Terminated`, exit 143), each unwound so that the runs in flight go back to pending,
each said in one line, also where Python could only print it (a fork hook, a ``__del__``)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from wdlab.interrupts import TORCH_DATA, sigint_noted

__all__ = ["Terminated", "sigint_noted", "sigterm_unwound", "stopped"]


def stopped(noted: Sequence[object]) -> tuple[str, int]:
    """What stopped the command, and its exit status: "terminated", 143, once a SIGTERM came
    (:class:`Terminated`); else "interrupted", 130 (Ctrl-C)."""
    return ("terminated", 143) if TERM in noted else ("interrupted", 130)


TERM = "SIGTERM"  # noted by _on_sigterm (a Ctrl-C notes True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``timeout``, ``kill``): unwound as a Ctrl-C is, so that
    the runs in flight go back to pending and the command says so (exit 143)."""


def _on_sigterm(pid: int, state: dict[str, Any], noted: list[object]) -> Callable[..., None]:
    """The SIGTERM handler of the command's process ``pid``: raises :class:`Terminated`, only
    noted once the command has ended (``state["closing"]``); one it raised that Python could
    only print comes again (``state["again"]``, :func:`sigterm_unwound`); a second SIGTERM
    from outside ends the process at once, as its default does; in a process forked from the
    command, the default. The SIGCHLD handler is set aside (``state["chld"]``): a DataLoader's
    workers killed by the same SIGTERM (a scheduler's, sent to the process group) made
    torch's raise an error of its own at any point of the clean-up, which left runs held."""

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != pid or (state.get("raised") and not state.pop("again", False)):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        state["raised"] = True
        state.setdefault("chld", signal.signal(signal.SIGCHLD, _no_op))  # (not SIG_DFL: one
        # pending already would be "ignored due to race condition", printed)
        noted.append(TERM)
        if not state["closing"]:
            raise Terminated

    return handler


def _no_op(signum: int, frame: object) -> None:
    """A signal handler that does nothing."""


@contextlib.contextmanager
def sigterm_unwound(noted: list[object]) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the command runs (:func:`_on_sigterm`), also
    where Ctrl-C is ignored (a job started in the background, under nohup or a scheduler).
    One raised where Python can only print it (an at-fork hook as a DataLoader starts its
    workers, a weakref callback) is raised again from another thread's SIGTERM, once that
    code has returned; what a DataLoader cut short raises in its clean-up is not printed.
    Only in the main thread, where SIGTERM has its default action; that, the SIGCHLD handler
    set aside and the unraisable hook are restored after."""
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    state: dict[str, Any] = {"closing": False}
    pid, main_id, hook = os.getpid(), threading.get_ident(), sys.unraisablehook

    def again() -> None:
        if not state["closing"]:
            state["again"] = True
            signal.pthread_kill(main_id, signal.SIGTERM)

    def on_unraisable(unraisable: Any) -> None:
        if TERM in noted and unraisable.exc_type is Terminated:
            if os.getpid() == pid:
                threading.Timer(0.01, again).start()
            return
        if TERM in noted and str(getattr(unraisable.object, "__module__", "")).startswith(
            TORCH_DATA
        ):
            return
        hook(unraisable)

    signal.signal(signal.SIGTERM, _on_sigterm(pid, state, noted))
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        state["closing"] = True
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if "chld" in state:
            signal.signal(signal.SIGCHLD, state["chld"])
