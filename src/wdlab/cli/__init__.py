"""The ``wdlab`` command line: thin wrappers over the Python API.

Each command module holds its commands (:class:`~wdlab.cli.common.Command`: flags and the
function that runs them); each command parses its flags, calls the API and renders the result as
a table, JSON or files. The experiment flags are generated from the config schema
(:mod:`wdlab.config`), the choices and help lists from the registries (modes, optimizers,
models, data sources, executors). Bad input gets one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from wdlab.cli import audit, decay, demo, experiment, study, transfer
from wdlab.cli.common import EXIT_BAD_INPUT, Parser, UsageError
from wdlab.version import __version__

#: Every command, in the order ``wdlab --help`` lists them.
COMMANDS = [
    *demo.COMMANDS,
    *decay.COMMANDS,
    *audit.COMMANDS,
    *experiment.COMMANDS,
    *study.COMMANDS,
    *transfer.COMMANDS,
]


def build_parser() -> Parser:
    """The ``wdlab`` argument parser: one subcommand per entry of :data:`COMMANDS`."""
    parser = Parser(prog="wdlab", description="The weight-decay lab for PyTorch.")
    parser.add_argument("--version", action="version", version=f"wdlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=(c.run.__doc__ or c.help))
        c.add_flags(p)
        p.set_defaults(func=c.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wdlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.formatwarning = _format_warning  # type: ignore[assignment]
            return func(args)
    except (UsageError, ValueError) as exc:
        if os.environ.get("WDLAB_DEBUG"):
            raise
        sys.stderr.write(f"wdlab {args.command}: error: {exc}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # e.g. `wdlab ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("wdlab: interrupted\n")
        return 130


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"wdlab: warning: {message}\n"
