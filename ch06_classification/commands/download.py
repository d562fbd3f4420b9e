"""``gpt-spam download``: fetch and validate the SMS Spam Collection."""

from __future__ import annotations

import argparse

from ch06_classification.commands.options import add_data_dir_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download and validate the SMS Spam Collection",
        description=(
            "Put a validated copy of the SMS Spam Collection (5,574 messages) in the data "
            "folder, from the UCI site, the book's mirror, or a file you already have."
        ),
    )
    add_data_dir_option(parser)
    parser.add_argument(
        "--sms-source",
        metavar="PATH",
        help=(
            "use this local sms_spam_collection.zip, or the SMSSpamCollection file inside "
            "it, instead of downloading (default: $SMS_SPAM_SOURCE if set)"
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `gpt-spam --help` does not load pandas and requests.
    from ch06_classification.download import (
        EXPECTED_CLASS_COUNTS,
        EXPECTED_ROWS,
        download_sms_spam,
    )

    path = download_sms_spam(args.data_dir, source=args.sms_source)
    # download_sms_spam only ever returns a file it validated, so these are its counts.
    ham, spam = EXPECTED_CLASS_COUNTS["ham"], EXPECTED_CLASS_COUNTS["spam"]
    print(f"{path}: {EXPECTED_ROWS:,} messages ({ham:,} ham, {spam:,} spam)")
    return 0
