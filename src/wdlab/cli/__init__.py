"""The ``wdlab`` command line: thin wrappers over the Python API.

Each command module holds its commands (:class:`~wdlab.cli.common.Command`: flags and the
function that runs them); each command parses its flags, calls the API and renders the result as
a table, JSON or files. Adding a command is one ``Command`` in its module's ``COMMANDS`` and that
list in :data:`COMMANDS`. The experiment flags are generated from the config schema
(:mod:`wdlab.config`), the choices and help lists from the registries (modes, optimizers,
models, data sources, executors), both through :mod:`wdlab.cli.facts`, so that building the
parser imports no torch: ``--help``, ``--version``, ``transfer`` and every usage error answer at
once, and a command that needs torch says "loading torch…" on a terminal while it loads. Flags
mean the same in every command (:mod:`wdlab.cli.flags`). Bad input gets one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from wdlab.cli import audit, decay, demo, experiment, facts, search, study, transfer
from wdlab.cli.common import (
    EXIT_BAD_INPUT,
    Command,
    Parser,
    UsageError,
    UsageExit,
    emit_error_json,
    user_output_aside,
)
from wdlab.cli.flags import HelpFormatter
from wdlab.cli.signals import sigint_noted, sigterm_unwound, stopped
from wdlab.errors import user_frame
from wdlab.version import __version__

#: Every command, in the order ``wdlab --help`` lists them.
COMMANDS = [
    *demo.COMMANDS,
    *decay.COMMANDS,
    *audit.COMMANDS,
    *experiment.COMMANDS,
    *search.COMMANDS,
    *study.COMMANDS,
    *transfer.COMMANDS,
]


def build_parser() -> Parser:
    """The ``wdlab`` argument parser: one subcommand per entry of :data:`COMMANDS`."""
    parser = Parser(
        prog="wdlab",
        description="The weight-decay lab for PyTorch.",
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # every flag spelt out, here and in each command
    )
    parser.add_argument("--version", action="version", version=f"wdlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for c in COMMANDS:
        p = sub.add_parser(
            c.name,
            help=c.help,
            description=(c.run.__doc__ or c.help),
            formatter_class=HelpFormatter,
            allow_abbrev=False,
        )
        c.add_flags(p)
        p.set_defaults(command_entry=c)
    return parser


def entry() -> NoReturn:
    """The ``wdlab`` console script (and ``python -m wdlab``): :func:`main`, then exit; after
    a Ctrl-C or SIGTERM, at once. The interrupt may have landed while a DataLoader's queue held
    its lock, and the iterator's finalizer (its workers' shutdown, run when the interrupt's
    traceback is let go) then waits on that lock forever: 1 SIGTERM in about 10 under load.
    So the traceback is held (never let go) and the process ends without finalizers, once
    the study is left as it should be (its runs back to pending) and the line is written."""
    code = main(hold_interrupt=True)
    with contextlib.suppress(ValueError):  # (not the main thread: nothing to ignore)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the answer is out: the exit is not cut
    if _HELD:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


_HELD: list[BaseException] = []  # the interrupt entry() exits on, its frames never finalized


def main(argv: Sequence[str] | None = None, *, hold_interrupt: bool = False) -> int:
    """Entry point of the command line (``entry`` is the console script's).

    Exit status 0 on success (1 where a command's check fails, e.g. ``verify``), 2 with one
    line on stderr for anything that went wrong (:func:`describe_error`), 130 on Ctrl-C (one
    line too, also while torch is still being imported). ``WDLAB_DEBUG=1`` shows tracebacks.
    ``hold_interrupt``: keep an interrupt's traceback from being let go (see :func:`entry`).
    """
    prog = "wdlab"
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv  # a refusal is a JSON document too (before the flags parse)
    resumes = ""  # what an interrupted command keeps (its Command's), once it is known
    with sigint_noted() as interrupted, sigterm_unwound(interrupted):
        try:
            parser = build_parser()
            args = parse(parser, argv)  # --help, --version and usage errors exit here
            prog, as_json = f"wdlab {args.command}", bool(getattr(args, "json", False))
            resumes = args.command_entry.resumes
            code = _run(args)
            sys.stdout.flush()  # a reader that left shows up here, not at interpreter exit
            return code
        except UsageExit as exc:
            if as_json:
                emit_error_json(exc.message, EXIT_BAD_INPUT)
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
            if hold_interrupt:
                _HELD.append(exc)
            said, status = stopped(interrupted)
            return _refused(prog, f"{said}; {resumes}" if resumes else said, status, as_json, "")
        except BrokenPipeError:  # e.g. `wdlab ls | head -1`: the reader left; not ours
            _silence_stdout()
            return 0
        except Exception as exc:
            if interrupted:  # a Ctrl-C that code swallowed (an import cut short) and what broke
                if hold_interrupt:  # (a DataLoader's worker killed by the same SIGTERM, first)
                    _HELD.append(exc)
                said, status = stopped(interrupted)
                line = f"{said}; {resumes}" if resumes else said
                return _refused(prog, line, status, as_json, "")
            if os.environ.get("WDLAB_DEBUG"):
                raise
            return _refused(prog, describe_error(exc), EXIT_BAD_INPUT, as_json)


def _refused(prog: str, line: str, status: int, as_json: bool, kind: str = "error: ") -> int:
    """One line on stderr (and under ``--json`` one error document on stdout); ``status``."""
    sys.stderr.write(f"{prog}: {kind}{line}\n")
    if as_json:
        with contextlib.suppress(OSError):  # a reader that left: the status still says it
            emit_error_json(line, status)
    return status


def parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, where an unknown flag is named by its command with the flags it
    resembles (``--weigth-decay``: did you mean --weight-decay?)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = _subparser(parser, args.command)
        unknown = [a.split("=")[0] for a in extra if a.startswith("--")]
        offered = [a for a in sub._actions if a.help != argparse.SUPPRESS]  # not refused ones
        known = [o for a in offered for o in a.option_strings]
        before = [a for a in unknown if a in known]  # `wdlab --json sweep`: the command's own
        close = [m for a in unknown if a not in known for m in _resembling(a, known)]
        hint = f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""
        if before:
            hint = f" ({', '.join(before)} goes after the command: wdlab {args.command} …)"
        sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _resembling(flag: str, known: list[str]) -> list[str]:
    return difflib.get_close_matches(flag, known, n=2, cutoff=0.75)


def _subparser(parser: Parser, command: str) -> Parser:
    """The subcommand's own parser (for its flags and its prog in messages)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def _run(args: argparse.Namespace) -> int:
    """Run the command, with warnings as one ``wdlab: warning:`` line each; user code that
    calls ``sys.exit`` (a model factory) is an error, not a silent exit."""
    command: Command = args.command_entry
    func: Callable[[argparse.Namespace], int] = command.run
    if not command.light:
        load_torch()
    aside = user_output_aside() if getattr(args, "json", False) else contextlib.nullcontext()
    shown, said = warnings.formatwarning, set()

    def once(message, category, filename, lineno, line=None) -> str:  # type: ignore[no-untyped-def]
        """The line of a warning not said yet in this command (a config checked again once
        the flags are applied warns again; the filters' own once-only is reset whenever
        code leaves a ``catch_warnings`` block), else nothing."""
        text = _format_warning(message, category, filename, lineno, line)
        new = text not in said
        said.add(text)
        return text if new else ""

    with warnings.catch_warnings(), aside:
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", ResourceWarning)  # hidden by Python's own filters too
        warnings.formatwarning = once  # type: ignore[assignment]
        try:
            return func(args)
        except SystemExit as exc:
            raise UsageError(f"code called sys.exit({exc.code!r}) during {args.command}") from None
        finally:
            warnings.formatwarning = shown  # main() in a notebook leaves Python's format


def load_torch() -> None:
    """Import torch now, with a one-line "loading torch…" on a terminal (stderr) meanwhile."""
    if "torch" in sys.modules:
        return
    tty = sys.stderr.isatty()
    if tty:
        sys.stderr.write("loading torch…")
        sys.stderr.flush()
    try:
        import torch  # noqa: F401
    finally:
        if tty:
            sys.stderr.write("\r\033[K")  # the line goes away once torch is there
            sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    """One line for any exception: ours say what was wrong; the file system, SQLite, memory
    and device errors say what failed where; anything else is named as unexpected."""
    import sqlite3

    text = _one_line(str(exc))
    where = user_frame(exc)
    mine = isinstance(exc, UsageError) or not where  # (a user's own ValueError: not
    if isinstance(exc, (UsageError, ValueError)) and mine:  # a refusal, "late boom" alone)
        return _with_flag(text) or type(exc).__name__
    if isinstance(exc, MemoryError) or _is_oom(exc):
        return f"out of memory ({text or type(exc).__name__}); try a smaller --max-memory or data"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or text or type(exc).__name__}"
    if isinstance(exc, sqlite3.Error):
        return f"study store{_store_path(exc)}: {text}"
    if type(exc).__name__ == "AcceleratorError" or "CUDA" in text:
        return f"device error: {text}"
    if where:  # the user's model, data or loss raised it (or called what did)
        debug = "WDLAB_DEBUG=1 shows the traceback"
        return f"{type(exc).__name__}: {text} (raised in your code, {where}; {debug})"
    return f"{type(exc).__name__}: {text} (unexpected; WDLAB_DEBUG=1 shows the traceback)"


_KEY = re.compile(r"^([a-z]+\.[a-z_]+)(?=:)")


def _with_flag(text: str) -> str:
    """A line that opens with a config key (``train.lr: …``) names its flag too (``train.lr
    (--lr): …``): the key is what a file sets, the flag what the command line does."""
    m = _KEY.match(text)
    flag = facts.flags().get(m.group(1)) if m else None
    return text if flag is None else f"{m.group(1)} ({flag}){text[m.end() :]}"


def _store_path(exc: BaseException) -> str:
    """`` PATH``: the study store a SQLite error came from (a frame of its in the traceback),
    else nothing."""
    from wdlab.store import Store

    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Store):
            return f" {owner.path}"
        tb = tb.tb_next
    return ""


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    markers = ("can't allocate memory", "out of memory", "size calculation overflowed")
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and any(m in text.lower() for m in markers)
    )


def _one_line(text: str, limit: int = 400) -> str:
    """Every line of ``text`` joined into one, cut to ``limit`` characters."""
    one = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _format_warning(message, category, filename, lineno, line=None) -> str:
    source = warning_source(str(filename))
    said = "" if source == "wdlab" else f"[{source}] "
    return f"wdlab: warning: {said}{_one_line(str(message))}\n"


def warning_source(filename: str) -> str:
    """Who raised a warning, from the file it names: an installed package other than wdlab
    (``optuna``, ``torch``), else ``wdlab`` (whose warnings name the line of the code that
    called it, which may be the user's)."""
    parts = Path(filename).parts
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return parts[i + 1].removesuffix(".py")
    return "wdlab"
