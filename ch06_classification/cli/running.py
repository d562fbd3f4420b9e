"""Parse a ``gpt-spam`` command line and run the step it names, reporting problems as one line.

``cli.py`` runs every step through here; ``pipeline`` and ``experiments``, which chain
steps, run them the same way with a parser of only the steps they chain, so no step
imports ``cli`` (which imports every step).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from gpt.errors import UserFacingError, describe_os_error

PROG = "gpt-spam"


def build_parser(steps: Sequence[ModuleType], **parser_options: Any) -> argparse.ArgumentParser:
    """A ``gpt-spam`` parser with a subcommand for each step module (its ``register``)."""
    parser = argparse.ArgumentParser(prog=PROG, **parser_options)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for step in steps:
        step.register(subparsers)
    for step_parser in subparsers.choices.values():
        # So that a mistyped option is reported with the usage of the step it was given to.
        step_parser.set_defaults(step_parser=step_parser)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Run the step ``argv`` names; problems the user can fix, and failures of the operating
    system, are one line on stderr, not a traceback. Returns the exit status."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would show the usage of `gpt-spam` itself, not of the step
        args.step_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args) or 0
    except UserFacingError as error:
        print(f"{parser.prog} {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # a read-only or full disk, a file where a folder should be, ...
        print(f"{parser.prog} {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def error_message(error: UserFacingError) -> str:
    """What to print for ``error``: its message, or, where the ``gpt`` package (which knows
    nothing of this command) says how to fix it from Python, how to fix it here."""
    # An error of gpt.hub can only come from a run that imported it: no need to load
    # PyTorch to print any other error.
    hub = sys.modules.get("gpt.hub")
    if hub is not None and isinstance(error, hub.WeightsDownloadError):
        from ch06_classification.storage.datafiles import option

        return (
            f"{error.failure}; to use weights you already have, put {hub.WEIGHTS_FILENAME} "
            f"in a folder and pass {option('--weights-dir FOLDER')} (or set "
            f"{hub.WEIGHTS_DIR_ENV}=FOLDER), or start from random weights with "
            f"{option('--weights random')}"
        )
    return str(error)
