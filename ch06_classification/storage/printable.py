"""Data made fit to print: one line, no control characters, a readable length.

Whatever comes from data (a message, a class name, a column name, a value read from a
file) may hold anything: escape sequences that recolour the terminal or retitle its window,
line breaks that make one message look like two, a hundred thousand labels. Everything
gpt-spam prints of data goes through here:

- ``one_line`` for output (a message in ``classify``'s results, a class name in a table or
  a log): runs of whitespace, line breaks included, become one space, other control
  characters "?", and a ``width`` cuts it, its end shown as "...";
- ``quoted`` and ``listed`` for error messages, which quote data to say what is wrong:
  Python's quotes and escapes (``'a\\nb'``, so that the exact value can be recognised),
  shortened, and a long list cut to its first few items and how many more.

``commands/running.py`` passes every error message through ``one_line`` too, with a
generous width: a message that quotes data without these helpers still cannot flood or
reprogram the terminal.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Sized

# The C0 and C1 control characters (Unicode category Cc), with DEL: each becomes "?".
# (Tab and line breaks are whitespace, which ``one_line`` has made a space before.)
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], "?")

NAME_WIDTH = 40  # a class or column name in a table, a log line or an error
SHOWN_ITEMS = 6  # the items of a long list that an error message names

# The standard library's repr with size limits: strings cut in the middle, long lists,
# tuples, dicts and sets to their first items, nesting to three levels.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = NAME_WIDTH
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = SHOWN_ITEMS
_SHORT_REPR.maxset = _SHORT_REPR.maxfrozenset = SHOWN_ITEMS
_SHORT_REPR.maxlevel = 3


def one_line(text: str, width: int | None = None) -> str:
    """``text`` safe to print on one line of at most ``width`` characters (any length
    without one).

    >>> one_line("WIN\\x1b[31m cash\\nnow")
    'WIN?[31m cash now'
    >>> one_line("You are a winner! Claim your prize", 20)
    'You are a winner!...'
    """
    single = " ".join(text.split())
    if width is not None and len(single) > width:
        single = single[: max(width - 3, 0)] + "..."
    return single.translate(_CONTROLS)


def quoted(value: object) -> str:
    """``value`` for an error message: as Python writes it (quotes, escapes), shortened,
    with the length of a long collection.

    >>> quoted("\\x1b]0;title\\x07")
    "'\\\\x1b]0;title\\\\x07'"
    >>> quoted([f"label {i}" for i in range(1000)])
    "['label 0', 'label 1', 'label 2', 'label 3', 'label 4', 'label 5', ...] (1,000 in all)"
    """
    # repr escapes what is not printable; one_line makes sure of it for any other type.
    text = one_line(_SHORT_REPR.repr(value))
    collection = isinstance(value, Sized) and not isinstance(value, (str, bytes))
    if collection and len(value) > SHOWN_ITEMS:
        text += f" ({len(value):,} in all)"
    return text


def listed(items: Iterable[object], quote: bool = False, shown: int = SHOWN_ITEMS) -> str:
    """The first ``shown`` of ``items``, each on one line of readable width (``quoted``
    with ``quote``), and how many more.

    >>> listed(["ham", "spam"])
    'ham, spam'
    >>> listed(["id", "sms", "date", "a", "b", "c", "d", "e"], quote=True)
    "'id', 'sms', 'date', 'a', 'b', 'c', ... (2 more)"
    """
    items = list(items)
    parts = [quoted(item) if quote else one_line(str(item), NAME_WIDTH) for item in items[:shown]]
    if len(items) > shown:
        parts.append(f"... ({len(items) - shown:,} more)")
    return ", ".join(parts)
