"""Messages in and results out: reading what people give a classifier, printing its answers.

Nothing here knows about models. It is the careful plumbing between a terminal (or a file,
or a pipe) and the texts a classifier reads:

- **In**: command-line arguments, one message per line of a text file or of standard
  input, or a column of a CSV file; every message remembers where it came from
  (``"line 4 of inbox.csv"``), so a report about it can say so. A file or standard input
  is read lazily, a line (or a CSV record) at a time, as the classifier asks for more: a
  pipe that never ends is classified as it arrives, in memory that does not grow with it
  (``streams.py`` hands the messages on in chunks). Bytes that are not UTF-8 become U+FFFD
  (the replacement character) instead of stopping the command, whether they came from a
  file, a pipe or ``sys.argv``. Blank lines only separate messages.
- **Out**: one line per message (label, probability, the start of the message on one line,
  control characters neutralised by ``printable.one_line`` so that neither a message nor
  a label can move the cursor or recolour the terminal; with an explanation, a line of
  the tokens that moved the decision most) or one JSON object per message;
  any stdout encoding; each batch of lines flushed at once, so that a reader at the other
  end of a pipe sees them as they are classified. The columns are as wide as the
  classifier's longest label (not the longest one in the input, which a stream does not
  know in advance), so that every batch lines up with the ones before it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ch06_classification.storage.printable import NAME_WIDTH, listed, one_line, quoted
from gpt.errors import UserFacingError

STDIN = "-"  # the argument that means "read standard input"


@dataclass(frozen=True)
class Message:
    """A message to classify, and where it came from, for reports about it."""

    text: str
    origin: str  # e.g. "line 4 of inbox.csv", "message 2"; "" for a lone argument


# --- Reading ----------------------------------------------------------------------------


def messages_from_arguments(arguments: Sequence[str]) -> list[Message]:
    """One message per command-line argument (numbered when there are several)."""
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


def messages_from_stdin() -> Iterator[Message]:
    """One message per line of standard input, read as bytes (any encoding it has), line
    by line as it arrives."""
    return messages_from_lines(text_stream(stdin_bytes()), "standard input")


def stdin_bytes() -> BinaryIO:
    """Standard input's bytes, through a file object of its own.

    The messages may be read in a thread (``streams.py``) that is still waiting for a line
    when the command ends. Python's own ``sys.stdin`` would then be locked by that thread
    when the interpreter closes it at exit, which is a fatal error; a second file object
    over the same file descriptor is closed by no one.
    """
    try:
        return open(sys.stdin.fileno(), "rb", closefd=False)  # never closed: see above
    except (AttributeError, OSError, ValueError):  # no descriptor, e.g. a test's io.BytesIO
        return sys.stdin.buffer


def messages_from_file(path: Path, column: str) -> Iterator[Message]:
    """The lines of a text file, or the ``column`` of a ``.csv`` file, read as they are
    asked for. A file that cannot be opened, and a CSV file without that column, are
    refused at once, before anything is classified."""
    text = text_stream(open_file(path), newline="" if is_csv(path) else None)
    try:
        if is_csv(path):
            messages = messages_from_csv(text, path, column)
        else:
            messages = messages_from_lines(text, path)
    except BaseException:
        text.close()
        raise
    return closed_at_the_end(messages, text)


def closed_at_the_end(messages: Iterator[Message], stream: io.TextIOBase) -> Iterator[Message]:
    """``messages``, then ``stream`` closed (also when they are not read to the end)."""
    with stream:
        yield from messages


def text_stream(stream: BinaryIO, newline: str | None = None) -> io.TextIOWrapper:
    """``stream`` decoded as UTF-8 as it is read, without a leading byte-order mark;
    invalid bytes become U+FFFD. ``newline=None`` makes "\r\n" and "\r" end lines as
    "\n" does; the csv module wants ``newline=""`` (a quoted cell may hold line breaks)."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=newline)


def messages_from_lines(lines: Iterable[str], source: str | Path) -> Iterator[Message]:
    """One message per line; blank lines (empty or only spaces) only separate messages.
    Having none at all is an error, raised when the lines run out."""
    found = False
    for number, line in enumerate(lines, start=1):
        text = line.removesuffix("\n")
        if text.strip():
            found = True
            yield Message(text, f"line {number} of {source}")
    if not found:
        raise UserFacingError(f"{source} has no messages: it is empty or only blank lines")


def messages_from_csv(text: Iterable[str], path: Path, column: str) -> Iterator[Message]:
    """The ``column`` cell of each row; an empty cell stays, to be reported as empty. The
    header is read at once (to refuse a missing column before any work), the rows as they
    are asked for."""
    records = csv_records(text, path)
    first = next(records, None)
    if first is None:
        raise UserFacingError(f"{path} is empty: nothing to classify")
    names = [name.strip() for name in first[1]]
    if column not in names:
        raise UserFacingError(
            f"{path} has no column {quoted(column)} (its columns: {listed(names, quote=True)}); "
            "name the one that holds the messages with --column"
        )
    return column_cells(records, names.index(column), path)


def column_cells(
    records: Iterator[tuple[int, list[str]]], index: int, path: Path
) -> Iterator[Message]:
    """The cell at ``index`` of each record, as a message from its line."""
    found = False
    for line, row in records:
        found = True
        yield Message(row[index] if index < len(row) else "", f"line {line} of {path}")
    if not found:
        raise UserFacingError(f"{path} has a header but no messages")


def csv_records(text: Iterable[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """The non-blank records of a CSV file, each with the line it starts on (a quoted
    cell may hold line breaks, so records and lines are not the same)."""
    reader = csv.reader(text)
    start = 1
    try:
        for record in reader:
            if record:  # csv gives [] for a blank line
                yield start, record
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserFacingError(f"{path}, line {reader.line_num}: not valid CSV ({error})") from None


def open_file(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes; a one-line error if it cannot be."""
    if path.is_dir():
        raise UserFacingError(f"{path} is a folder; --file takes a text or .csv file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UserFacingError(f"{path}: no such file") from None
    except OSError as error:
        raise UserFacingError(f"cannot read {path}: {error.strerror or error}") from None


def decode(data: bytes) -> str:
    """UTF-8 text, without a leading byte-order mark; invalid bytes become U+FFFD."""
    return data.decode("utf-8-sig", errors="replace")


def is_csv(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() == ".csv"


# --- Printing ---------------------------------------------------------------------------


def print_results(
    results: Sequence[dict[str, Any]], all_labels: Sequence[str], as_json: bool
) -> None:
    """One line per answer (``classifying/answers.py``), in order: readable (label, the
    probability it gives, the start of the message, as wide as the terminal; below it, the
    tokens that moved the decision most when it has an explanation) or, with ``as_json``,
    the answer as a JSON object. The lines are flushed at once: called for each chunk of
    a stream, its answers are out before the next chunk is classified."""
    if as_json:
        lines = [json_line(result) for result in results]
    else:
        # Imported here: `gpt-spam --help` imports this module, and needs no numpy.
        from ch06_classification.classifying.answers import probability_key

        key = probability_key(all_labels)
        # The labels line up in a column as wide as the classifier's longest label.
        label_width = max(len(one_line(label, NAME_WIDTH)) for label in all_labels) + 2
        # What is left of the terminal's width after "spam      0.982  ", and one column.
        text_width = max(20, shutil.get_terminal_size().columns - label_width - 8)
        lines = []
        for result in results:
            lines.append(
                readable_line(result["text"], result["label"], result[key], label_width, text_width)
            )
            if "explanation" in result:
                lines.append(" " * label_width + why_line(result["explanation"]))
    print_lines(lines)


def readable_line(
    text: str, label: str, spam_probability: float, label_width: int, text_width: int
) -> str:
    """E.g. ``spam      0.982  You are a winner! Claim your prize now``: the label and the
    message each on one line, with no control character (``printable.one_line``)."""
    shown_label = one_line(label, NAME_WIDTH)
    return f"{shown_label:<{label_width}}{spam_probability:.3f}  {one_line(text, text_width)}"


def why_line(explanation: dict[str, Any]) -> str:
    """E.g. ``why: ' WIN' +0.412, ' FREE' +0.210, ' lunch' -0.051``: the tokens that moved
    the decision most, each with its weight (``classifying/explain.py``), strongest first."""
    tokens = explanation["tokens"]
    strongest = [
        f"{quoted(tokens[i]['text'])} {tokens[i]['weight']:+.3f}" for i in explanation["strongest"]
    ]
    return "why: " + (", ".join(strongest) or "no token moved it")


def json_line(result: dict[str, Any]) -> str:
    # json.dumps writes control and non-ASCII characters as \u escapes: the line is one
    # line, and any stdout can take it.
    return json.dumps(result)


def print_lines(lines: Sequence[str]) -> None:
    """Print to stdout, in any encoding it has, and flush.

    A reader that went away (``| head``) raises ``BrokenPipeError`` here, which
    ``commands/running.py`` turns into a quiet end of the command.
    """
    encoding = sys.stdout.encoding or "utf-8"
    for line in lines:
        # A character that stdout's encoding lacks (an emoji on a Windows pipe) is "?".
        print(line.encode(encoding, errors="replace").decode(encoding))
    sys.stdout.flush()
