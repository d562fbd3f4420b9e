"""Command-line options that several steps share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the folder that holds the dataset and its splits."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="folder for the SMS Spam Collection and its splits (default: %(default)s)",
    )
