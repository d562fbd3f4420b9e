"""``gpt-spam download``: fetch and validate the SMS Spam Collection and GPT-2's weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.cli.options import (
    add_data_dir_option,
    add_dataset_option,
    add_imdb_source_option,
    add_model_options,
    add_sms_source_option,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download the SMS Spam Collection and GPT-2's pretrained weights",
        description=(
            "Put a validated copy of the SMS Spam Collection (5,574 messages) in the data "
            "folder, from the UCI site, the book's mirror, or a file you already have; then "
            "download OpenAI's GPT-2 weights into the Hugging Face cache (or check the local "
            "copy given with --weights-dir). --dataset imdb fetches the 50,000 IMDB movie "
            "reviews of the book's bonus instead (data/imdb_reviews.csv)."
        ),
    )
    add_data_dir_option(parser)
    add_dataset_option(parser)
    add_model_options(parser)
    add_sms_source_option(parser)
    add_imdb_source_option(parser)
    parser.add_argument(
        "--weights-only",
        action="store_true",
        help=(
            "fetch GPT-2's weights and no dataset: for your own labelled texts "
            "(gpt-spam split --csv/--tsv; the pipeline does this for them)"
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.cli.prerequisites import local_files_problems, require

    require(*local_files_problems(args))
    if not args.weights_only:
        fetch_dataset(args.dataset, args.data_dir, args.sms_source, args.imdb_source)
    fetch_weights(args.model, args.weights, args.weights_dir)
    return 0


def fetch_dataset(
    dataset: str, data_dir: str | Path, sms_source: str | None, imdb_source: str | None
) -> None:
    """Put the validated dataset in ``data_dir`` (downloading it unless a source is given)."""
    # Imported here so that `gpt-spam --help` does not load pandas and requests.
    if dataset == "imdb":
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.sources.imdb import download_imdb

        path = download_imdb(data_dir, source=imdb_source)
        print(f"{path}: 50,000 reviews (25,000 neg, 25,000 pos)")  # as validated
        return
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.sources.sms import (
        EXPECTED_CLASS_COUNTS,
        EXPECTED_ROWS,
        download_sms_spam,
    )

    path = download_sms_spam(data_dir, source=sms_source)
    # download_sms_spam only ever returns a file it validated, so these are its counts.
    ham, spam = EXPECTED_CLASS_COUNTS["ham"], EXPECTED_CLASS_COUNTS["spam"]
    print(f"{path}: {EXPECTED_ROWS:,} messages ({ham:,} ham, {spam:,} spam)")


def fetch_weights(preset: str, weights: str, weights_dir: str | None) -> None:
    """Download (or find locally) the weights, and prove they load into ``GPTModel``."""
    if weights == "random":
        print("Weights: random initialisation requested, nothing to download")
        return
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from gpt.config import get_config
    from gpt.hub import find_weights, verify_cached_download
    from gpt.loading import load_weights_file, uninitialized_gpt

    path = find_weights(preset, weights_dir)
    if weights_dir is None and verify_cached_download(path):
        print(f"Weights: {path} (SHA-256 verified)")
    else:
        print(f"Weights: {path}")
    model = uninitialized_gpt(get_config(preset)).eval()  # every weight is loaded below
    load_weights_file(model, path)
    print(f"Weights: every tensor of {preset} loaded and checked")
    # The chapter's sanity check: pretrained GPT-2 continues a sentence sensibly.
    from gpt.generate import generate_text
    from gpt.tokenizer import get_tokenizer

    print(
        "Sanity check:", repr(generate_text(model, "Every effort moves you", get_tokenizer(), 15))
    )
