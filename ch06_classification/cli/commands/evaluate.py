"""``gpt-spam evaluate``: measure a trained run on every split, beyond accuracy."""

from __future__ import annotations

import argparse

from ch06_classification.cli.options import (
    add_base_weights_option,
    add_classifying_options,
    add_data_dir_option,
    add_device_option,
    add_precision_option,
    add_run_dir_option,
)
from ch06_classification.storage.printable import listed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a trained model on every split",
        description=(
            "Accuracy, precision, recall, F1, false-positive rate, ROC-AUC and the confusion "
            "matrix of a trained run on train, validation, test, the test messages the run "
            "never saw in training, and the realistic-prevalence set. Prints a table and saves "
            "evaluation-<data>-t<threshold>.json, roc_pr-<data>-t<threshold>.png and "
            "confusion_matrix-<data>-t<threshold>.png in the run folder. With more than two "
            "classes: per-class and macro/micro metrics, the N x N confusion matrix and "
            "one-vs-rest ROC AUC, in evaluation-<data>.json."
        ),
    )
    add_run_dir_option(parser)
    add_data_dir_option(parser)
    add_device_option(parser)
    add_precision_option(parser, classifying=True)
    add_classifying_options(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo an evaluation of this run on the same data at the same threshold "
        "(default: refuse, so that no earlier evaluation is lost)",
    )
    add_base_weights_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.classifying.spam_classifier import resolve_threshold
    from ch06_classification.cli.prerequisites import (
        require,
        run_problem,
        splits_problem,
        tokenizer_problem,
    )
    from ch06_classification.evaluating.evaluation import evaluate_run, evaluated_problem
    from ch06_classification.storage.checkpoint import CHECKPOINT_NAME, read_classifier_info
    from ch06_classification.storage.runs import choose_run
    from ch06_classification.storage.safe_files import ensure_writable_folder, folder_lock

    require(
        run_problem(args.run_dir, args.data_dir),
        splits_problem(args.data_dir),
        tokenizer_problem(),
    )
    run_dir, chosen = choose_run(args.run_dir, args.data_dir)
    checkpoint = run_dir if run_dir.is_file() else run_dir / CHECKPOINT_NAME
    labels = read_classifier_info(checkpoint).labels
    threshold = resolve_threshold(labels, args.threshold)
    require(evaluated_problem(run_dir, args.data_dir, threshold, args.overwrite))
    folder = run_dir.parent if run_dir.is_file() else run_dir  # --run-dir may name the file
    ensure_writable_folder(folder)  # before the work, not after it
    with folder_lock(folder):  # no training or other evaluation may write there meanwhile
        named = f"{run_dir}/" if chosen is None else chosen.describe()
        print(f"Evaluating {named} (classes: {listed(labels)})")
        evaluate_run(
            run_dir,
            args.data_dir,
            args.device,
            args.batch_size,
            threshold,
            overwrite=args.overwrite,
            weights_dir=args.weights_dir,
            precision=args.precision,
            verify=args.verify,
        )
    return 0
