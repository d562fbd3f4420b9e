"""The ``gpt-spam`` command: one subcommand per step of the chapter.

Each step lives in its own module under ``ch06_classification/cli/commands`` and registers a
subparser; the numbered ``scripts/`` are thin entry points into the same code.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from typing import NoReturn

from ch06_classification.cli.commands import (
    baseline,
    cache,
    classify,
    download,
    evaluate,
    experiments,
    export,
    pipeline,
    serve,
    split,
    train,
)
from ch06_classification.cli.running import build_parser as build_steps_parser
from ch06_classification.cli.running import package_version, run_command

# In the order a learner runs them. Each step imports what it needs when it runs, so that
# `gpt-spam --help` loads neither PyTorch nor pandas.
STEPS = [
    download,
    split,
    train,
    evaluate,
    classify,
    serve,
    export,
    pipeline,
    experiments,
    baseline,
    cache,
]


def build_parser() -> argparse.ArgumentParser:
    parser = build_steps_parser(
        STEPS, description="Fine-tune GPT-2 as an SMS spam classifier, step by step."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; problems the user can fix, and failures of the operating system, are
    one line on stderr, not a traceback."""
    return run_command(build_parser(), argv)


def console_main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``gpt-spam`` program: run one step, then exit with its status.

    Before exiting, ``gc.freeze()`` sets aside every object alive: Python's last garbage
    collection would otherwise walk the hundreds of thousands that importing PyTorch
    created (~0.3 s, a quarter of classifying one message), only to free memory that the
    operating system reclaims with the process anyway. Exit handlers still run.
    """
    status = main(argv)
    gc.freeze()
    sys.exit(status)


def run_step(command: str) -> NoReturn:
    """Entry point of a numbered script: ``scripts/02_split.py ARGS`` = ``gpt-spam split ARGS``."""
    console_main([command, *sys.argv[1:]])


if __name__ == "__main__":
    console_main()
