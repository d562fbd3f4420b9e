"""``gpt-spam split``: balance the collection and write the training/validation/test CSVs."""

from __future__ import annotations

import argparse
from typing import Any

from ch06_classification.commands.options import (
    add_data_dir_option,
    add_seed_option,
    add_split_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "split",
        help="balance the collection and split it into train/validation/test CSVs",
        description=(
            "Keep all spam messages and as many random ham ones, split them 70/10/20, and "
            "write train.csv, validation.csv, test.csv, test_realistic.csv (spam as rare as "
            "in the whole collection) and split_report.json to the data folder."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``split``, which ``pipeline`` accepts and passes on too."""
    add_data_dir_option(parser)
    add_seed_option(parser)
    add_split_options(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `gpt-spam --help` does not load pandas.
    from ch06_classification.datafiles import SPLIT_FILES, SPLIT_REPORT
    from ch06_classification.download import load_sms_spam
    from ch06_classification.prerequisites import dataset_problem, require
    from ch06_classification.splits import write_splits

    require(dataset_problem(args.data_dir))

    report = write_splits(load_sms_spam(args.data_dir), args.data_dir, args.seed, args.dedupe)
    print(format_report(report))
    written = ", ".join([*SPLIT_FILES.values(), SPLIT_REPORT])
    print(f"Wrote {written} to {args.data_dir}")
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The split report as a few lines of text for the terminal."""
    collection, balanced = report["collection"], report["balanced"]
    lines = [
        f"Collection: {collection['rows']:,} messages ({collection['ham']:,} ham, "
        f"{collection['spam']:,} spam), {collection['distinct_texts']:,} distinct texts",
        f"Balanced{' after dropping repeated texts' if report['dedupe'] else ''}: "
        f"{balanced['rows']:,} messages ({balanced['ham']:,} ham, {balanced['spam']:,} spam), "
        f"{balanced['distinct_texts']:,} distinct texts",
        f"Splits (seed {report['seed']}):",
    ]
    for name, split in report["splits"].items():
        line = (
            f"  {name:<15}{split['rows']:>6,} rows ({split['ham']:,} ham, {split['spam']:,} spam, "
            f"{split['spam_share']:.1%} spam), {split['distinct_texts']:,} distinct texts"
        )
        if "seen_in_training" in split:
            line += (
                f", {split['seen_in_training']:,} seen in training "
                f"({split['spam_seen_in_training']:,} of them spam)"
            )
        lines.append(line)
    if not report["dedupe"] and report["splits"]["test"]["seen_in_training"]:
        lines.append(
            "Rows seen in training flatter validation and test accuracy; "
            "--dedupe removes repeated texts before splitting."
        )
    return "\n".join(lines)
