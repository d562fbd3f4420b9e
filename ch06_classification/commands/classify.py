"""``gpt-spam classify``: spam or not, for messages typed, piped or kept in a file.

Messages come from the arguments, from ``--file`` (a text file with one message per line,
or a column of a CSV file), or, when the only argument is ``-``, from standard input (one
message per line). Each gets one output line (label, spam probability, the start of the
message) or, with ``--json``, one JSON object, in the order the messages came. Many
messages are classified in batches of similar length (``SpamClassifier``), so the model
computes little on padding. Reading the messages and printing the results is
``ch06_classification/messages.py``; this module is the command around it.

What a user can rely on:

- Blank lines of a text file or of standard input only separate messages: they are skipped.
- An empty message (an empty argument, an empty CSV cell) is refused: stderr says where
  it was, and the other messages are still classified.
- A message longer than the model reads (the run's ``max_length``) is classified on its
  first ``max_length`` tokens, as in training; a note on stderr says how many were cut.
- Bytes that are not UTF-8 become U+FFFD (the replacement character), and the message
  is still classified.
- Exit status: 0 when every message was classified; 1 when one was refused (after the
  others are printed) or on an error, which is one line on stderr; 2 for a misused option.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ch06_classification.commands.options import (
    add_base_weights_option,
    add_classifying_options,
    add_device_option,
    add_precision_option,
    add_run_dir_option,
)
from ch06_classification.messages import (
    STDIN,
    Message,
    is_csv,
    messages_from_arguments,
    messages_from_file,
    messages_from_stdin,
    print_results,
)
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.inference import SpamClassifier

PROG = "gpt-spam classify"
DEFAULT_COLUMN = "Text"  # the column of the split CSVs, so they can be classified as they are

DESCRIPTION = """\
Classify messages with a trained run: one line per message, in the order given, with its
label, its spam probability and the start of the message. A run trained on more than two
classes (split --csv) prints each message's most probable class and that class's
probability; --threshold is for two-class runs only.

Blank lines of a file or of standard input are skipped. An empty message is reported on
stderr and the others are still classified (exit status 1). A message longer than the
run's max_length is classified on its first max_length tokens, as in training.
"""

EXAMPLES = """\
examples:
  gpt-spam classify "You are a winner! Claim your prize now"
  gpt-spam classify --json "Lunch at 1?" "URGENT! Call 09061701461 to claim"
  gpt-spam classify --file inbox.txt --threshold 0.9
  gpt-spam classify --file data/test.csv --column Text --run-dir runs/20261125-101500
  cat inbox.txt | gpt-spam classify -
  gpt-spam classify -- "-50% on everything today"   (a message that starts with -)
"""


# --- The command line -----------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="label new messages ham or spam",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "messages",
        nargs="*",
        metavar="MESSAGE",
        help="a message to classify; - alone reads one message per line from standard input",
    )
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="classify the lines of a text file, or a column of a .csv file",
    )
    parser.add_argument(
        "--column",
        metavar="NAME",
        help=f"the column of the .csv file that holds the messages (default: {DEFAULT_COLUMN})",
    )
    add_run_dir_option(parser)
    add_classifying_options(parser)
    add_base_weights_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"text", "label", "spam_probability"} ("probability", '
        "of the label, for a run of more than two classes)",
    )
    add_device_option(parser)
    add_precision_option(parser, auto=True)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal and there is more "
        "than one batch)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ch06_classification.checkpoint import read_classifier_info
    from ch06_classification.devices import pick_device
    from ch06_classification.inference import SpamClassifier, resolve_threshold
    from ch06_classification.precision import set_classifier_precision
    from ch06_classification.prerequisites import require, run_problem, tokenizer_problem
    from ch06_classification.runs import find_run

    require(run_problem(args.run_dir), tokenizer_problem())
    checkpoint = find_run(args.run_dir)
    info = read_classifier_info(checkpoint)  # a damaged file fails before input is read
    threshold = resolve_threshold(info.labels, args.threshold)  # None: more than 2 classes
    if args.run_dir is None:  # say which run answers, since the user did not name one
        print(
            f"{PROG}: using the latest run, {checkpoint}/ ({describe_run(info)})", file=sys.stderr
        )
    messages = read_messages(args)
    device = pick_device(args.device)
    classifier = SpamClassifier.from_pretrained(
        checkpoint, str(device), args.batch_size, weights_dir=args.weights_dir, verify=args.verify
    )

    kept, encoded, refused = encode_messages(classifier, messages)
    for report in refused:
        print(f"{PROG}: error: {report}", file=sys.stderr)
    if kept:
        choice = set_classifier_precision(
            classifier,
            args.precision,
            sum(map(len, encoded)),
            checkpoint.parent if checkpoint.is_file() else checkpoint,
            log=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
        )
        if args.precision == "auto" and choice.weighed:  # what auto chose, and why
            print(f"{PROG}: {choice.describe()}", file=sys.stderr)
        batches = math.ceil(len(encoded) / args.batch_size)
        progress = show_progress(batches) if args.progress is None else args.progress
        probabilities = classifier.predict_proba_encoded(encoded, progress)
        labels = classifier.labels_of(probabilities, threshold)
        if threshold is None:  # more than two classes: each label's own probability
            shown = probabilities[np.arange(len(labels)), probabilities.argmax(axis=1)]
        else:  # two: class 1's (the spam probability), whichever label it gave
            shown = probabilities[:, 1]
        print_results(kept, labels, shown, classifier.labels, args.json)
        cut = sum(was_cut(classifier, m.text, ids) for m, ids in zip(kept, encoded, strict=True))
        if cut:
            print(f"{PROG}: note: {cut_note(cut, classifier.max_tokens)}", file=sys.stderr)
    return 1 if refused else 0


def describe_run(info) -> str:
    """E.g. ``gpt2-small from pretrained weights, last_block trained``."""
    return f"{info.model_preset} from {info.weights} weights, {info.trainable_layers} trained"


# --- Reading the messages ---------------------------------------------------------------


def read_messages(args: argparse.Namespace) -> list[Message]:
    """The messages named by the arguments, ``--file`` or ``-``, in their order."""
    if args.column is not None and not is_csv(args.file):
        raise UserFacingError("--column applies to a .csv --file only")
    if args.file is not None:
        if args.messages:
            raise UserFacingError("give messages as arguments or with --file, not both")
        return messages_from_file(args.file, args.column or DEFAULT_COLUMN)
    if args.messages == [STDIN]:
        return messages_from_stdin()
    if STDIN in args.messages:
        raise UserFacingError("- (read standard input) must be the only message")
    if not args.messages:
        raise UserFacingError(
            "nothing to classify: give a message, --file PATH, or - to read standard input"
        )
    return messages_from_arguments(args.messages)


# --- Classifying ------------------------------------------------------------------------


def encode_messages(
    classifier: SpamClassifier, messages: Sequence[Message]
) -> tuple[list[Message], list[list[int]], list[str]]:
    """The messages that can be classified, their token ids, and a report for each refused."""
    from ch06_classification.inference import EmptyMessageError

    kept, encoded, refused = [], [], []
    for message in messages:
        try:
            encoded.append(classifier.encode(message.text))
        except EmptyMessageError as error:
            where = f"{message.origin}: " if message.origin else ""
            suffix = "; not classified" if len(messages) > 1 else ""
            refused.append(f"{where}{error}{suffix}")
            continue
        kept.append(message)
    return kept, encoded, refused


def was_cut(classifier: SpamClassifier, text: str, ids: Sequence[int]) -> bool:
    """Whether the model read only the start of ``text``."""
    from ch06_classification.dataset import encode_message

    # Only a message that fills the limit can have been cut: re-encode just those.
    at_limit = len(ids) == classifier.max_tokens
    return at_limit and len(encode_message(classifier.tokenizer, text)) > len(ids)


def cut_note(count: int, max_tokens: int) -> str:
    if count == 1:
        return (
            f"1 message is longer than {max_tokens} tokens; "
            f"it was classified on its first {max_tokens}"
        )
    return (
        f"{count} messages are longer than {max_tokens} tokens; "
        f"each was classified on its first {max_tokens}"
    )


def show_progress(batches: int) -> bool:
    """A bar is worth showing for more than one batch, and only to a person watching."""
    return batches > 1 and sys.stderr.isatty()
