"""How the command line stops: Ctrl-C (``KeyboardInterrupt``, exit 130) and SIGTERM
(:class:`Terminated`, exit 143), each unwound so that the runs in flight go back to pending,
each said in one line, also where Python could only print it (a fork hook, a ``__del__``)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

TORCH_DATA = "torch.utils.data"  # DataLoader's modules: their clean-up after a Ctrl-C


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


@contextlib.contextmanager
def sigint_noted() -> Iterator[list[object]]:
    """Ctrl-C raises ``KeyboardInterrupt`` as Python's own handler does, and is noted (the
    list yielded is not empty once it came): an error that follows a Ctrl-C swallowed on the
    way, say inside an import it cut short, is the interrupt's doing. Only where Python's
    handler is the one set, in the main thread; the handler before is restored."""
    noted: list[object] = []
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield noted
        return
    lock, state = threading.Lock(), {"closing": False, "sent": False}
    main_id, pid = threading.get_ident(), os.getpid()

    def on_sigint(signum: int, frame: object) -> None:  # (what it says: :func:`stopped`)
        noted.append(True)
        if not state["closing"]:  # once the command has ended, only noted
            raise KeyboardInterrupt

    def again() -> None:
        with lock:  # never once the command has ended: its answer is given
            if not state["closing"]:
                state["sent"] = True
                signal.pthread_kill(main_id, signal.SIGINT)

    hook = sys.unraisablehook

    def on_unraisable(unraisable: Any) -> None:
        """A Ctrl-C raised where Python can only print it (a fork's hook as a DataLoader
        starts its workers, a ``__del__``): delivered again, from another thread, so that it
        interrupts the main thread's own code once that hook has returned. In a process forked
        from the command (a DataLoader's worker, which the Ctrl-C reached too) it is dropped:
        the command is interrupted, and says so. After a Ctrl-C, what a DataLoader cut short by
        it raises as it is cleaned up is the interrupt's doing, and not printed either."""
        if noted and unraisable.exc_type is KeyboardInterrupt:  # (Terminated: sigterm_unwound)
            if os.getpid() == pid:
                threading.Timer(0.01, again).start()
            return
        if noted and str(getattr(unraisable.object, "__module__", "")).startswith(TORCH_DATA):
            return
        hook(unraisable)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = on_unraisable
    try:
        yield noted
    finally:
        state["closing"] = True  # first: a Ctrl-C sent just before is only noted from here
        with lock:  # and one being sent is sent before this goes on
            pass
        if state["sent"]:  # one sent as the command ended lands here, not after its answer
            time.sleep(0.05)
        sys.unraisablehook = hook
        signal.signal(signal.SIGINT, signal.default_int_handler)
