"""Your own labelled texts: a CSV or TSV file with a text column and a label column.

What every tool that fine-tunes a classifier takes: one row per text, its label beside it,
a header naming the columns. The labels become the classes, named as the data names them,
in sorted order (numerically when every label is a whole number): class 0 is the first.
Everything a split or a training run would stumble on is found here, in one line naming
the file: a missing column, an empty text or label, a single class, or a "label" column
with so many distinct values that it cannot be one (an id, or the text column).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ch06_classification.datafiles import MAX_CLASSES, DataError
from ch06_classification.printable import listed, quoted

# (separator, quoting) of each format. A TSV has no quotes (the IANA format, and the SMS
# collection's): a '"' is an ordinary character, so a text can never run on into the next.
FORMATS = {"csv": (",", csv.QUOTE_MINIMAL), "tsv": ("\t", csv.QUOTE_NONE)}


def read_labelled_texts(
    path: str | Path, text_column: str = "text", label_column: str = "label", fmt: str = "csv"
) -> pd.DataFrame:
    """The ``Label`` (as written, surrounding spaces removed) and ``Text`` (exactly as
    written) of every row of a UTF-8 CSV or TSV file with a header line, checked.

    Raises :class:`DataError` for a missing column, a row without text or label, fewer
    than two classes, or more than ``MAX_CLASSES``.
    """
    path = Path(path)
    try:
        df = _parse(path.read_bytes(), fmt)
        return _labelled(df, text_column, label_column)
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


def _parse(raw: bytes, fmt: str) -> pd.DataFrame:
    separator, quoting = FORMATS[fmt]
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as error:
        byte = f"byte {error.start:,} is {raw[error.start]:#04x}"
        raise DataError(f"not UTF-8 text ({byte})") from None
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=separator,
            quoting=quoting,
            dtype=str,
            keep_default_na=False,  # a text "NA" or "null" is text
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty") from None
    except pd.errors.ParserError as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"not a {fmt.upper()} file ({reason})") from None


def _labelled(df: pd.DataFrame, text_column: str, label_column: str) -> pd.DataFrame:
    for option, column in (("--text-column", text_column), ("--label-column", label_column)):
        if column not in df.columns:
            found = listed(df.columns, quote=True)
            raise DataError(
                f"no column {quoted(column)} (its columns: {found}); name it with {option}"
            )
    if text_column == label_column:
        raise DataError(f"the text and the label are both the column {quoted(text_column)}")
    if df.empty:
        raise DataError("has a header but no rows")
    # Data row i is line i + 2 of a file without line breaks inside its cells.
    texts, labels = df[text_column], df[label_column].str.strip()
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
