"""``gpt-spam baseline``: classical classifiers on the same splits, for comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.cli.options import add_data_dir_option, add_threshold_option


def register(subparsers: argparse._SubParsersAction) -> None:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.baseline import BASELINES

    parser = subparsers.add_parser(
        "baseline",
        help="TF-IDF + logistic regression and a majority-class baseline (scikit-learn)",
        description=(
            "Train TF-IDF (word and character n-grams) + logistic regression and a "
            "majority-class dummy on the training split, and measure them on the same sets "
            "with the same metrics as `gpt-spam evaluate`. Seconds on a CPU."
        ),
    )
    add_data_dir_option(parser)
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=list(BASELINES),
        default=list(BASELINES),
        help="which baselines to run (default: all)",
    )
    add_threshold_option(parser)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs") / "baseline",
        metavar="DIR",
        help="where baseline.json is written (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.baseline import run_baseline
    from ch06_classification.storage.safe_files import write_json

    results = {}
    for number, kind in enumerate(args.baselines):
        if number:
            print()
        results[kind] = run_baseline(kind, args.data_dir, args.threshold).to_dict()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out_dir / "baseline.json", results)
    print(f"\nSaved {path}")
    return 0
