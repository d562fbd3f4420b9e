"""Messages in and results out: reading what people give a classifier, printing its answers.

Nothing here knows about models. It is the careful plumbing between a terminal (or a file,
or a pipe) and a list of texts:

- **In**: command-line arguments, one message per line of a text file or of standard
  input, or a column of a CSV file; every message remembers where it came from
  (``"line 4 of inbox.csv"``), so a report about it can say so. Bytes that are not UTF-8
  become U+FFFD (the replacement character) instead of stopping the command, whether they
  came from a file, a pipe or ``sys.argv``. Blank lines only separate messages.
- **Out**: one line per message (label, probability, the start of the message on one line,
  control characters neutralised so that a message cannot move the cursor or recolour the
  terminal) or one JSON object per message; any stdout encoding; and a reader that goes
  away (``| head``) ends the output quietly instead of with a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def messages_from_stdin() -> list[Message]:
    """One message per line of standard input, read as bytes (any encoding it has)."""
    return messages_from_lines(decode(sys.stdin.buffer.read()), "standard input")


def messages_from_file(path: Path, column: str) -> list[Message]:
    """The lines of a text file, or the ``column`` of a ``.csv`` file."""
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


# --- Printing ---------------------------------------------------------------------------


def print_results(
    messages: Sequence[Message],
    labels: Sequence[str],
    spam_probabilities: Sequence[float],
    all_labels: Sequence[str],
    as_json: bool,
) -> None:
    """One line per message, in order: readable (label, spam probability, the start of
    the message, as wide as the terminal) or, with ``as_json``, a JSON object
    ``{"text", "label", "spam_probability"}``. For more than two classes (``all_labels``)
    the probability given is the label's own, and the JSON key is ``probability``."""
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
