"""The ``gpt-spam`` command: one subcommand per step of the chapter.

Each step lives in its own module under ``ch06_classification/commands`` and registers a
subparser; the numbered ``scripts/`` are thin entry points into the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpt.errors import UserFacingError, describe_os_error


def build_parser() -> argparse.ArgumentParser:
    # Imported here so that `gpt-spam --help` and each step import only what they need.
    from ch06_classification.commands import STEPS

    parser = argparse.ArgumentParser(
        prog="gpt-spam",
        description="Fine-tune GPT-2 as an SMS spam classifier, step by step.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for step in STEPS:
        step.register(subparsers)
    for step_parser in subparsers.choices.values():
        # So that a mistyped option is reported with the usage of the step it was given to.
        step_parser.set_defaults(step_parser=step_parser)
    return parser


def package_version() -> str:
    """The installed version of gpt-spam (``unknown`` when run from a checkout not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpt-spam")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; problems the user can fix, and failures of the operating system, are
    one line on stderr, not a traceback."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would show the usage of `gpt-spam` itself, not of the step
        args.step_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args) or 0
    except UserFacingError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a read-only or full disk, a file where a folder should be, ...
        print(f"{parser.prog} {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def run_step(command: str) -> None:
    """Entry point of a numbered script: ``scripts/02_split.py ARGS`` = ``gpt-spam split ARGS``."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
