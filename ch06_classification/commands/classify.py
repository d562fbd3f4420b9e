"""``gpt-spam classify``: spam or not, for messages typed, piped or kept in a file.

Messages come from the arguments, from ``--file`` (a text file with one message per line,
or a column of a CSV file), or, when the only argument is ``-``, from standard input (one
message per line). Each gets one output line (label, spam probability, the start of the
message) or, with ``--json``, one JSON object, in the order the messages came. Many
messages are classified in batches of similar length (``SpamClassifier``), so the model
computes little on padding.

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
import csv
import io
import json
import math
import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ch06_classification.commands.options import (
    add_base_weights_option,
    add_classifying_options,
    add_device_option,
    add_run_dir_option,
)
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.inference import SpamClassifier

PROG = "gpt-spam classify"
STDIN = "-"
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


@dataclass(frozen=True)
class Message:
    """A message to classify, and where it came from, for reports about it."""

    text: str
    origin: str  # e.g. "line 4 of inbox.csv", "message 2"; "" for a lone argument


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
        checkpoint, str(device), args.batch_size, weights_dir=args.weights_dir
    )

    kept, encoded, refused = encode_messages(classifier, messages)
    for report in refused:
        print(f"{PROG}: error: {report}", file=sys.stderr)
    if kept:
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
        return messages_from_lines(decode(sys.stdin.buffer.read()), "standard input")
    if STDIN in args.messages:
        raise UserFacingError("- (read standard input) must be the only message")
    if not args.messages:
        raise UserFacingError(
            "nothing to classify: give a message, --file PATH, or - to read standard input"
        )
    return messages_from_arguments(args.messages)


def messages_from_arguments(arguments: Sequence[str]) -> list[Message]:
    texts = [argument_text(argument) for argument in arguments]
    if len(texts) == 1:
        return [Message(texts[0], "")]
    return [Message(text, f"message {number}") for number, text in enumerate(texts, start=1)]


def argument_text(argument: str) -> str:
    """A command-line argument as text, with bytes that were not UTF-8 as U+FFFD.

    Python keeps such bytes of ``sys.argv`` as lone surrogates, which cannot be printed;
    ``os.fsencode`` gives the bytes back, to be decoded like a file's.
    """
    try:
        return decode(os.fsencode(argument))
    except UnicodeEncodeError:  # a lone surrogate that did not come from a byte
        return argument.encode("utf-8", errors="replace").decode("utf-8")


def messages_from_file(path: Path, column: str) -> list[Message]:
    text = decode(read_file(path))
    return (
        messages_from_csv(text, path, column) if is_csv(path) else messages_from_lines(text, path)
    )


def messages_from_lines(text: str, source: str | Path) -> list[Message]:
    """One message per line; blank lines (empty or only spaces) only separate messages."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    messages = [
        Message(line, f"line {number} of {source}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if not messages:
        raise UserFacingError(f"{source} has no messages: it is empty or only blank lines")
    return messages


def messages_from_csv(text: str, path: Path, column: str) -> list[Message]:
    """The ``column`` cell of each row; an empty cell stays, to be reported as empty."""
    records = csv_records(text, path)
    if not records:
        raise UserFacingError(f"{path} is empty: nothing to classify")
    (_, header), rows = records[0], records[1:]
    names = [name.strip() for name in header]
    if column not in names:
        raise UserFacingError(
            f"{path} has no column {column!r} (its columns: {', '.join(names)}); "
            "name the one that holds the messages with --column"
        )
    index = names.index(column)
    if not rows:
        raise UserFacingError(f"{path} has a header but no messages")
    return [
        Message(row[index] if index < len(row) else "", f"line {line} of {path}")
        for line, row in rows
    ]


def csv_records(text: str, path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank records of a CSV file, each with the line it starts on (a quoted
    cell may hold line breaks, so records and lines are not the same)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records, start = [], 1
    try:
        for record in reader:
            if record:  # csv gives [] for a blank line
                records.append((start, record))
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserFacingError(f"{path}, line {reader.line_num}: not valid CSV ({error})") from None
    return records


def read_file(path: Path) -> bytes:
    if path.is_dir():
        raise UserFacingError(f"{path} is a folder; --file takes a text or .csv file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserFacingError(f"{path}: no such file") from None
    except OSError as error:
        raise UserFacingError(f"cannot read {path}: {error.strerror or error}") from None


def decode(data: bytes) -> str:
    """UTF-8 text, without a leading byte-order mark; invalid bytes become U+FFFD."""
    return data.decode("utf-8-sig", errors="replace")


def is_csv(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() == ".csv"


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


# --- Printing the results ---------------------------------------------------------------


def print_results(
    messages: Sequence[Message],
    labels: Sequence[str],
    spam_probabilities: Sequence[float],
    all_labels: Sequence[str],
    as_json: bool,
) -> None:
    results = list(zip(messages, labels, spam_probabilities, strict=True))
    if as_json:
        # "spam_probability" for the SMS classifier: class 1's; the label's own for more.
        key = f"{all_labels[1]}_probability" if len(all_labels) == 2 else "probability"
        lines = [json_line(message.text, label, p, key) for message, label, p in results]
    else:
        label_width = max(map(len, all_labels)) + 2  # the labels line up in a column
        # What is left of the terminal's width after "spam      0.982  ", and one column.
        text_width = max(20, shutil.get_terminal_size().columns - label_width - 8)
        lines = [
            readable_line(message.text, label, p, label_width, text_width)
            for message, label, p in results
        ]
    print_lines(lines)


def readable_line(
    text: str, label: str, spam_probability: float, label_width: int, text_width: int
) -> str:
    """E.g. ``spam      0.982  You are a winner! Claim your prize now``."""
    return f"{label:<{label_width}}{spam_probability:.3f}  {shorten(text, text_width)}"


def json_line(text: str, label: str, spam_probability: float, key: str = "spam_probability") -> str:
    # json.dumps writes non-ASCII characters as \u escapes: any stdout can take the line.
    return json.dumps({"text": text, "label": label, key: float(spam_probability)})


def shorten(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` characters.

    Runs of whitespace (line breaks included) become one space, and other control
    characters "?": a message could otherwise move the cursor or recolour the terminal.
    """
    one_line = " ".join(text.split())
    safe = "".join("?" if unicodedata.category(char) == "Cc" else char for char in one_line)
    return safe if len(safe) <= width else safe[: width - 3] + "..."


def print_lines(lines: Sequence[str]) -> None:
    """Print to stdout, in any encoding it has, and stop quietly if the reader goes away."""
    encoding = sys.stdout.encoding or "utf-8"
    try:
        for line in lines:
            # A character that stdout's encoding lacks (an emoji on a Windows pipe) is "?".
            print(line.encode(encoding, errors="replace").decode(encoding))
        sys.stdout.flush()
    except BrokenPipeError:
        # E.g. `gpt-spam classify --file inbox.txt | head`: the rest is not wanted. Point
        # stdout at nothing, so that Python's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
