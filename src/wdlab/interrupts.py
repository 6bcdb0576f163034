"""Ctrl-C while wdlab trains: ``KeyboardInterrupt`` as Python's own handler raises it, also
where Python could only print it (a fork hook as a DataLoader starts its workers, a
``__del__``), so that the runs in flight go back to pending and the caller sees the interrupt
(the command line, :func:`wdlab.sweep`, :func:`wdlab.optuna.optimize`)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

TORCH_DATA = "torch.utils.data"  # DataLoader's modules: their clean-up after a Ctrl-C


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
    _STATES.append(state)
    try:
        yield noted
    finally:
        _STATES.remove(state)
        state["closing"] = True  # first: a Ctrl-C sent just before is only noted from here
        with lock:  # and one being sent is sent before this goes on
            pass
        if state["sent"]:  # one sent as the command ended lands here, not after its answer
            time.sleep(0.05)
        sys.unraisablehook = hook
        signal.signal(signal.SIGINT, signal.default_int_handler)


_STATES: list[dict[str, bool]] = []  # the commands under sigint_noted, innermost last


def answered() -> None:
    """The command's answer is out (its one JSON document): a Ctrl-C from here on is only
    noted, never "interrupted" after an answer that says otherwise."""
    for state in _STATES:
        state["closing"] = True


def interruptible(fn: F) -> F:
    """``fn`` (a public entry point that trains: :func:`wdlab.sweep`…) under
    :func:`sigint_noted`: a Ctrl-C a DataLoader's fork hook swallowed still interrupts it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sigint_noted():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
