"""Your own labelled texts: a CSV or TSV file with a text column and a label column.

What every tool that fine-tunes a classifier takes: one row per text, its label beside it,
a header naming the columns. The labels become the classes, named as the data names them,
in sorted order (numerically when every label is a whole number): class 0 is the first.
Everything a split or a training run would stumble on is found here, in one line naming
the file: a row that is not one record (with its line number), a missing column, an empty
text or label, a single class, or a "label" column with so many distinct values that it
cannot be one (an id, or the text column).

A file is read as written or refused, never guessed at: a quote opens a text only at the
start of its field and must close at its end, and no quoted text may span lines of which
more than one is a row by itself (:func:`_check_no_rows_run_together`), so that a stray
quote can never merge the rows after it into one text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from ch06_classification.storage.datafiles import MAX_CLASSES, DataError
from ch06_classification.storage.printable import listed, quoted

# (separator, quoting) of each format. A TSV has no quotes (the IANA format, and the SMS
# collection's): a '"' is an ordinary character, so a text can never run on into the next.
FORMATS = {"csv": (",", csv.QUOTE_MINIMAL), "tsv": ("\t", csv.QUOTE_NONE)}


def read_labelled_texts(
    path: str | Path, text_column: str = "text", label_column: str = "label", fmt: str = "csv"
) -> pd.DataFrame:
    """The ``Label`` (as written, surrounding spaces removed) and ``Text`` (exactly as
    written) of every row of a UTF-8 CSV or TSV file with a header line, checked.

    Raises :class:`DataError` for a row that is not one record (:func:`_records`), a
    missing column, a row without text or label, fewer than two classes, or more than
    ``MAX_CLASSES``.
    """
    path = Path(path)
    try:
        header, rows = _records(path.read_bytes(), fmt)
        text_index = _column(header, text_column, "--text-column")
        label_index = _column(header, label_column, "--label-column")
        if text_column == label_column:
            raise DataError(f"the text and the label are both the column {quoted(text_column)}")
        _check_no_rows_run_together(rows, label_index, len(header), FORMATS[fmt][0])
        texts = pd.Series([row.fields[text_index] for row in rows], dtype=str)
        labels = pd.Series([row.fields[label_index] for row in rows], dtype=str)
        return _labelled(texts, labels, text_column, label_column)
    except DataError as error:
        raise DataError(f"{path}: {error}") from error


def class_names_of(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels in class-id order: sorted, numerically if they are all whole
    numbers (so "2" comes before "10"), else as text."""
    names = sorted(set(labels))
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(names)


class _Record(NamedTuple):
    fields: list[str]
    lines: list[str]  # the physical lines it was read from, line breaks included
    first_line: int  # 1 for the header


def _records(raw: bytes, fmt: str) -> tuple[list[str], list[_Record]]:
    """The header and every data record of the file, blank lines left out.

    Read strictly, so that nothing is guessed: a quote opens a field only at its start and
    must close at its end (a quote inside a field is text; doubled, ``""``, inside a quoted
    one), and every record has as many fields as the header. What breaks that is refused
    with its line number: above all a quote that is never closed, which would otherwise
    swallow the rows after it into one text.
    """
    separator, quoting = FORMATS[fmt]
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as error:
        byte = f"byte {error.start:,} is {raw[error.start]:#04x}"
        raise DataError(f"not UTF-8 text ({byte})") from None
    lines = io.StringIO(text, newline="").readlines()  # each ends with its own line break
    # Python's csv refuses a field over 128 KiB, a process-wide limit: a long review is
    # no error. No field can be longer than the file itself.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(lines, delimiter=separator, quoting=quoting, strict=True)
    records: list[_Record] = []
    while True:
        first = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(_unreadable(lines, first, reader.line_num, error, fmt)) from None
        if fields:  # a blank line
            records.append(_Record(fields, lines[first - 1 : reader.line_num], first))
    if not records:
        raise DataError("the file is empty")
    header = records[0].fields
    for record in records[1:]:
        if len(record.fields) != len(header):
            raise DataError(
                f"line {record.first_line} has {len(record.fields)} field"
                f"{'s' if len(record.fields) != 1 else ''} and the header {len(header)}"
                + (
                    ": a text with a comma in it must be in quotes"
                    if fmt == "csv" and len(record.fields) > len(header)
                    else ""
                )
            )
    return header, records[1:]


def _unreadable(lines: list[str], first: int, last: int, error: csv.Error, fmt: str) -> str:
    """What is wrong with lines ``first`` to ``last``, which the reader could not read as
    one record, in words."""
    quoted = FORMATS[fmt][1] != csv.QUOTE_NONE
    unclosed = quoted and sum(line.count('"') for line in lines[first - 1 : last]) % 2 == 1
    if unclosed or last > first:  # a quoted text ran on over the end of its line
        where = "the end of the file" if unclosed else f"line {last}"
        return (
            f"line {first}: a quote opens a text that is not closed on its line and runs on "
            f'to {where}: close it, or double it ("") if it is part of the text'
        )
    return f"line {first} is not one {fmt.upper()} record ({error})" + (
        ': a text in quotes must be quoted whole, its own quotes doubled ("")' if quoted else ""
    )


def _check_no_rows_run_together(
    rows: list[_Record], label_index: int, width: int, separator: str
) -> None:
    """Refuse a quoted text that spans lines of which two or more are rows by themselves.

    A text may span lines only in quotes; so may a quote that was never meant to open
    one, which then runs on until a later quote happens to close it, taking the rows in
    between along as text. The two look alike to a CSV reader, but not line by line: of a
    genuine text's lines, at most the one beside its label looks like a row (the header's
    number of fields, one of the file's labels in the label column); of rows run together,
    each line does.
    """
    labels = {row.fields[label_index].strip() for row in rows}

    def is_a_row(line: str) -> bool:
        reader = csv.reader([line.rstrip("\r\n")], delimiter=separator, quoting=csv.QUOTE_NONE)
        fields = next(reader, [])
        return len(fields) == width and fields[label_index].strip() in labels

    for row in rows:
        if len(row.lines) > 1 and sum(map(is_a_row, row.lines)) > 1:
            last = row.first_line + len(row.lines) - 1
            raise DataError(
                f"lines {row.first_line} to {last} read as one row, yet more than one of them "
                "is a row by itself: close the quote that opens the text on line "
                f'{row.first_line}, or double it ("") if it is part of the text'
            )


def _column(header: list[str], name: str, option: str) -> int:
    """The position of the column ``name`` (the first, if the header names it twice)."""
    if name not in header:
        found = listed(header, quote=True)
        raise DataError(f"no column {quoted(name)} (its columns: {found}); name it with {option}")
    return header.index(name)


def _labelled(
    texts: pd.Series, labels: pd.Series, text_column: str, label_column: str
) -> pd.DataFrame:
    if texts.empty:
        raise DataError("has a header but no rows")
    # Data row i is line i + 2 of a file without line breaks inside its cells.
    labels = labels.str.strip()
    empty = texts.str.strip() == ""
    if empty.any():
        raise DataError(
            f"data row {int(empty.argmax()) + 1} has an empty {quoted(text_column)} "
            f"({int(empty.sum()):,} rows do): remove them or give them text"
        )
    unlabelled = labels == ""
    if unlabelled.any():
        raise DataError(
            f"data row {int(unlabelled.argmax()) + 1} has an empty {quoted(label_column)} "
            f"({int(unlabelled.sum()):,} rows do): remove them or label them"
        )
    distinct = labels.nunique()
    if distinct > MAX_CLASSES:
        raise DataError(
            f"the label column {quoted(label_column)} has {distinct:,} distinct values, more "
            f"than the {MAX_CLASSES:,} classes allowed: is it the label column? (name it with "
            "--label-column)"
        )
    if distinct < 2:
        raise DataError(
            f"every row has the label {quoted(labels.iloc[0])}: a classifier needs two classes "
            "or more"
        )
    return pd.DataFrame({"Label": labels, "Text": texts}).reset_index(drop=True)
