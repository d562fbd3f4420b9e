"""``gpt-spam classify``: spam or not, for messages typed, piped or kept in a file.

Messages come from the arguments, from ``--file`` (a text file with one message per line,
or a column of a CSV file), or, when the only argument is ``-``, from standard input (one
message per line). Each gets one output line (label, spam probability, the start of the
message) or, with ``--json``, one JSON object, in the order the messages came. Reading the
messages and printing the results is ``ch06_classification/cli/messages.py``; this module is
the command around it.

A file or standard input is a stream: its messages are read, classified and printed a
chunk at a time (``cli/streams.py``), so the first answers come out while the rest is still
being read, and memory does not grow with the input. Within a chunk, messages are
classified in batches of similar length (``SpamClassifier``), so the model computes little
on padding. The readable lines of every chunk line up: their label column is as wide as
the classifier's longest label, not the input's (which a stream cannot know in advance).

What a user can rely on:

- Blank lines of a text file or of standard input only separate messages: they are skipped.
- An empty message (an empty argument, an empty CSV cell) is refused: stderr says where
  it was, and the other messages are still classified.
- A message longer than the model reads (the run's ``max_length``) is classified on its
  first ``max_length`` tokens, as in training; a note on stderr, at the end, says how many
  were cut.
- Bytes that are not UTF-8 become U+FFFD (the replacement character), and the message
  is still classified.
- ``--explain`` adds why: the tokens that moved each decision most, each with how much
  the label's probability falls without it (``classifying/explain.py``; every token's,
  with ``--json``). Each message is classified once more per token, in the same batches.
- ``--precision auto`` weighs the first chunk (all of the arguments; the first messages
  of a stream, whose length is unknown), and every chunk is classified in its choice.
- A reader that goes away (``| head``) ends the command quietly, exit status 141
  (``commands/running.py``); a stdout closed from the start is an error.
- Exit status: 0 when every message was classified; 1 when one was refused (after the
  others are printed) or on an error, which is one line on stderr; 2 for a misused option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ch06_classification.cli.messages import (
    STDIN,
    Message,
    is_csv,
    messages_from_arguments,
    messages_from_file,
    messages_from_stdin,
    print_results,
)
from ch06_classification.cli.options import (
    add_base_weights_option,
    add_classifying_options,
    add_device_option,
    add_precision_option,
    add_run_data_dir_option,
    add_run_dir_option,
)
from ch06_classification.cli.streams import CHUNK_SIZE, chunks
from ch06_classification.storage.printable import listed, one_line
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.classifying.spam_classifier import SpamClassifier
    from ch06_classification.storage.checkpoint import ClassifierInfo
    from ch06_classification.storage.runs import DefaultRun

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
  gpt-spam classify --explain "WINNER! Claim your free prize now"
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
    add_run_data_dir_option(parser)
    add_classifying_options(parser)
    add_base_weights_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"text", "label", "spam_probability"} ("probability", '
        "of the label, for a run of more than two classes)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also show why: the tokens that moved each decision most, each with how much "
        'the probability of the label falls without it (with --json, an "explanation" '
        "of every token); costs one more classification per token",
    )
    add_device_option(parser)
    add_precision_option(parser, classifying=True)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a count of the messages classified, on stderr (default: when stderr is a "
        "terminal and there is more than one batch, or a file or standard input to read)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checkpoint, info, threshold, chosen = find_trained_run(args)
    if sys.stdout is None:  # started with stdout closed (`>&-`): Python gives None
        raise UserFacingError("standard output is closed: there is nowhere to print results")
    if chosen is not None:  # say which run answers, since the user did not name one
        print(f"{PROG}: using {chosen.describe()} ({describe_run(info)})", file=sys.stderr)
    messages = read_messages(args)  # lazily, for a file or standard input
    classifier = load_classifier(args, checkpoint)
    run_dir = checkpoint.parent if checkpoint.is_file() else checkpoint
    total = len(messages) if isinstance(messages, list) else None  # a stream's is unknown
    progress = show_progress(total, args.batch_size) if args.progress is None else args.progress
    with Classification(classifier, threshold, args, run_dir, total, progress) as session:
        for chunk in chunks(messages, max(CHUNK_SIZE, args.batch_size)):
            session.classify(chunk)
    if session.cut:
        print(f"{PROG}: note: {cut_note(session.cut, classifier.max_tokens)}", file=sys.stderr)
    return 1 if session.refused else 0


def find_trained_run(
    args: argparse.Namespace,
) -> tuple[Path, ClassifierInfo, float | None, DefaultRun | None]:
    """The checkpoint of the run ``--run-dir`` names (or, without it, of the latest run
    trained on ``--data-dir``, else the latest run), what it describes, the threshold to
    decide at (None: more than two classes), and the run chosen for the user (None: they
    named it). Everything that can be refused is refused here, before the model is
    loaded. ``serve`` finds its run the same way."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.classifying.spam_classifier import resolve_threshold
    from ch06_classification.cli.prerequisites import require, run_problem, tokenizer_problem
    from ch06_classification.storage.checkpoint import read_classifier_info
    from ch06_classification.storage.runs import choose_run

    require(run_problem(args.run_dir, args.data_dir), tokenizer_problem())
    checkpoint, chosen = choose_run(args.run_dir, args.data_dir)
    info = read_classifier_info(checkpoint)  # a damaged file fails before input is read
    return checkpoint, info, resolve_threshold(info.labels, args.threshold), chosen


def load_classifier(args: argparse.Namespace, checkpoint: Path) -> SpamClassifier:
    """The run's classifier on ``--device``, in batches of ``--batch-size``, its base
    weights found with ``--weights-dir``."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.classifying.spam_classifier import SpamClassifier
    from ch06_classification.speed.devices import pick_device

    device = pick_device(args.device)
    return SpamClassifier.from_pretrained(
        checkpoint, str(device), args.batch_size, weights_dir=args.weights_dir, verify=args.verify
    )


class Classification:
    """Classifying the chunks of one command: each one's answers printed (and flushed) as
    soon as it is classified; the counts of refused and cut messages kept for the end."""

    def __init__(
        self,
        classifier: SpamClassifier,
        threshold: float | None,
        args: argparse.Namespace,
        run_dir: Path,
        total: int | None,
        progress: bool,
    ) -> None:
        self.classifier = classifier
        self.threshold = threshold
        self.args = args
        self.run_dir = run_dir
        self.refused = self.cut = 0
        self.precision_chosen = False
        self.bar = None
        if progress:
            # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
            from tqdm import tqdm  # imported only when shown: a quick classify needs none

            self.bar = tqdm(total=total, desc="Classifying", unit="message", leave=False)

    def __enter__(self) -> Classification:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def classify(self, chunk: Sequence[Message]) -> None:
        """Classify ``chunk`` and print its answers; report its empty messages on stderr."""
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.classifying.answers import answers
        from ch06_classification.classifying.explain import predict_with_left_out

        classifier = self.classifier
        kept, encoded, refused = encode_messages(classifier, chunk)
        for report in refused:  # (the origin names a file, whose name may hold anything)
            print(f"{PROG}: error: {one_line(report)}", file=sys.stderr)
        self.refused += len(refused)
        if not kept:
            return
        explain = self.args.explain
        if not self.precision_chosen:  # (explaining classifies a variant per token too)
            self.choose_precision(
                sum(len(ids) * (len(ids) + 1 if explain else 1) for ids in encoded)
            )
        if explain:  # the bar counts messages, not the variants classified with them
            probabilities, left_out = predict_with_left_out(classifier, encoded, [True] * len(kept))
            if self.bar is not None:
                self.bar.update(len(kept))
        else:
            on_batch = None if self.bar is None else self.bar.update
            probabilities = classifier.predict_proba_encoded(encoded, on_batch=on_batch)
            left_out = None
        results = answers(
            classifier, [m.text for m in kept], probabilities, self.threshold, encoded, left_out
        )
        if self.bar is None:
            print_results(results, classifier.labels, self.args.json)
        else:
            with self.bar.external_write_mode():  # the bar is cleared, then drawn again
                print_results(results, classifier.labels, self.args.json)
        self.cut += sum(
            was_cut(classifier, m.text, ids) for m, ids in zip(kept, encoded, strict=True)
        )

    def choose_precision(self, tokens: int) -> None:
        """The precision of every chunk, chosen (for ``auto``) on the first one's ``tokens``."""
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.speed.precision import set_classifier_precision

        choice = set_classifier_precision(
            self.classifier,
            self.args.precision,
            tokens,
            self.run_dir,
            log=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
        )
        if self.args.precision == "auto" and choice.weighed:  # what auto chose, and why
            print(f"{PROG}: {choice.describe()}", file=sys.stderr)
        self.precision_chosen = True


def describe_run(info) -> str:
    """E.g. ``classes: ham, spam; gpt2-small from pretrained weights, last_block trained``."""
    return (
        f"classes: {listed(info.labels)}; "
        f"{info.model_preset} from {info.weights} weights, {info.trainable_layers} trained"
    )


# --- Reading the messages ---------------------------------------------------------------


def read_messages(args: argparse.Namespace) -> list[Message] | Iterator[Message]:
    """The messages named by the arguments (a list), ``--file`` or ``-`` (a stream, read as
    it is iterated), in their order. What can be refused before reading is refused here."""
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
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.classifying.spam_classifier import EmptyMessageError

    kept, encoded, refused = [], [], []
    for message in messages:
        try:
            encoded.append(classifier.encode(message.text))
        except EmptyMessageError as error:
            # Only a lone argument has no origin: then there is no other message to classify.
            where = f"{message.origin}: " if message.origin else ""
            suffix = "; not classified" if message.origin else ""
            refused.append(f"{where}{error}{suffix}")
            continue
        kept.append(message)
    return kept, encoded, refused


def was_cut(classifier: SpamClassifier, text: str, ids: Sequence[int]) -> bool:
    """Whether the model read only the start of ``text``."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from gpt.tokenizer import encode_message

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


def show_progress(messages: int | None, batch_size: int) -> bool:
    """A bar is worth showing for more than one batch (a stream, of unknown length, may
    hold many), and only to a person watching."""
    return (messages is None or messages > batch_size) and sys.stderr.isatty()
