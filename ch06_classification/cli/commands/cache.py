"""``gpt-spam cache``: what gpt-spam keeps on this machine between commands, shown or emptied."""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.storage.local_cache import (
    CACHE_DIR_ENV,
    DEFAULT_LIMIT_GIB,
    LIMIT_ENV,
    cache_dir,
    cache_limit_bytes,
    remembered_files,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="show or empty what gpt-spam keeps on this machine (~/.cache/gpt-spam)",
        description=(
            f"gpt-spam keeps files between commands in ~/.cache/gpt-spam (${CACHE_DIR_ENV}, "
            "or $XDG_CACHE_HOME/gpt-spam): the frozen blocks' output that training computed, "
            "which the next training with the same base weights, model, data and settings "
            f"loads instead of computing it (at most {DEFAULT_LIMIT_GIB} GiB (${LIMIT_ENV}), "
            "the least recently used dropped first; `gpt-spam train --no-cache` neither "
            "loads nor keeps it), the random bases of --weights random runs, and the SHA-256 "
            "of weights files. Anything there may be removed at any time: it is computed "
            "again when needed."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="show what is kept, and its size")
    which.add_argument(
        "--clear",
        action="store_true",
        help="remove everything gpt-spam keeps there (waiting for a training that is writing)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Here, not above: it loads PyTorch, which `gpt-spam --help` need not.
    from ch06_classification.storage.prefix_cache import clear_kept_outputs, kept_outputs

    if args.clear:
        outputs = clear_kept_outputs()
        others = remembered_files()
        size = sum(kept.size for kept in outputs) + sum(_size(path) for path in others)
        for path in others:
            path.unlink(missing_ok=True)
        print(
            f"Removed {_count(len(outputs), 'kept output')} of the frozen blocks and "
            f"{_count(len(others), 'other file')} (random bases, digests): {size / 1e6:,.1f} MB "
            f"from {cache_dir()}"
        )
        return 0
    print(f"gpt-spam's cache: {cache_dir()}")
    outputs = kept_outputs()
    size = sum(kept.size for kept in outputs)
    limit = cache_limit_bytes() / 1024**3
    print(
        f"Frozen blocks' outputs: {_count(len(outputs), 'file')}, {size / 1e6:,.1f} MB of at "
        f"most {limit:g} GiB (${LIMIT_ENV})" + ("; least recently used first:" if outputs else "")
    )
    for kept in outputs:
        print(f"  {kept.describe()}")
    others = remembered_files()
    other_size = sum(_size(path) for path in others)
    print(
        f"Random bases and digests of weights files: {_count(len(others), 'file')}, "
        f"{other_size / 1e6:,.1f} MB"
    )
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
