"""Parse a ``gpt-spam`` command line and run the step it names, reporting problems as one line.

``cli.py`` runs every step through here; ``pipeline`` and ``experiments``, which chain
steps, run them the same way with a parser of only the steps they chain, so no step
imports ``cli`` (which imports every step).

An error is one line on stderr, of readable length, whatever data it quotes
(``printable.one_line``). A reader of stdout that goes away (``gpt-spam classify - |
head``) ends the step quietly, as it ends ``cat``: no error, no traceback, exit status 141
(128 + SIGPIPE, what a shell reports for a program stopped by a closed pipe).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

from ch06_classification.storage.printable import one_line
from gpt.errors import UserFacingError, describe_os_error

PROG = "gpt-spam"
MAX_ERROR_LINES = 20  # a list of problems longer than this is cut
ERROR_WIDTH = 1000  # characters: any error a person needs to read fits
CLOSED_PIPE_STATUS = 141  # 128 + SIGPIPE (13)


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
        status = args.run(args) or 0
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failure is reported, not at exit
        return status
    except BrokenPipeError:  # the rest of the output is not wanted
        discard_stdout()
        return CLOSED_PIPE_STATUS
    except UserFacingError as error:
        report(parser, args, error_message(error))
        return 1
    except OSError as error:  # a read-only or full disk, a file where a folder should be, ...
        report(parser, args, describe_os_error(error))
        discard_stdout(unless_it_flushes=True)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def package_version() -> str:
    """The installed version of gpt-spam (``unknown`` when run from a checkout not installed)."""

    try:
        return version("gpt-spam")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def report(parser: argparse.ArgumentParser, args: argparse.Namespace, message: str) -> None:
    """``message`` on stderr as one line, printable and of readable length (see
    ``ERROR_WIDTH``): or, for the list of everything a step found missing (``require``),
    a line and then a problem a line (at most ``MAX_ERROR_LINES``)."""
    lines: list[str] = []
    for line in message.splitlines():
        if lines and not line.lstrip().startswith("- "):
            lines[-1] += " " + line  # not an item of a list: the same line goes on
        elif line.strip():
            lines.append(line)
    lines = [one_line(line, ERROR_WIDTH) for line in lines] or [""]
    if len(lines) > MAX_ERROR_LINES:
        lines = [*lines[: MAX_ERROR_LINES - 1], f"- ... ({len(lines) - MAX_ERROR_LINES + 1} more)"]
    items = "".join(f"\n  {line}" for line in lines[1:])
    print(f"{parser.prog} {args.command}: error: {lines[0]}{items}", file=sys.stderr)


def discard_stdout(unless_it_flushes: bool = False) -> None:
    """Point stdout at nothing, so that Python's last flush at exit cannot fail again with
    a traceback (the pattern Python's documentation gives for SIGPIPE); with
    ``unless_it_flushes``, only if what it holds cannot be written (a full disk)."""
    if sys.stdout is None:
        return
    if unless_it_flushes:
        try:
            sys.stdout.flush()
            return
        except OSError:
            pass
    with suppress(OSError, ValueError):  # ValueError: no descriptor (a test's StringIO)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def error_message(error: UserFacingError) -> str:
    """What to print for ``error``: its message, or, where the ``gpt`` package (which knows
    nothing of this command) says how to fix it from Python, how to fix it here."""
    # An error of gpt.hub can only come from a run that imported it: no need to load
    # PyTorch to print any other error.
    hub = sys.modules.get("gpt.hub")
    if hub is not None and isinstance(error, hub.WeightsDownloadError):
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.storage.datafiles import option

        return (
            f"{error.failure}; to use weights you already have, put {hub.WEIGHTS_FILENAME} "
            f"in a folder and pass {option('--weights-dir FOLDER')} (or set "
            f"{hub.WEIGHTS_DIR_ENV}=FOLDER), or start from random weights with "
            f"{option('--weights random')}"
        )
    return str(error)
