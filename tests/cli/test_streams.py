"""``streams.chunks``: a stream's items in chunks, as they arrive, in order, read ahead a
bounded way."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from ch06_classification.cli.streams import chunks
from gpt.errors import UserFacingError

SAFETY = 60  # seconds: a wait that only a broken test reaches


def test_items_come_in_full_chunks_in_their_order() -> None:
    # With a long wait, every chunk but the last is full.
    assert list(chunks(range(10), size=4, wait=SAFETY)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(chunks([], size=4)) == []


def test_a_chunk_goes_when_the_input_pauses() -> None:
    answered = threading.Event()

    def trickle() -> Iterator[int]:  # a pipe that pauses until the first answers are out
        yield from (0, 1, 2)
        answered.wait(SAFETY)
        yield 3

    stream = chunks(trickle(), size=100, wait=0.05)

    first = next(stream)
    answered.set()
    assert first == [0, 1, 2]  # not held back for the item that had not come
    assert list(stream) == [[3]]


def test_an_error_comes_after_the_chunks_read_before_it() -> None:
    def lines() -> Iterator[int]:
        yield from range(5)
        raise UserFacingError("inbox.csv, line 7: not valid CSV")

    received = []
    with pytest.raises(UserFacingError, match="line 7"):
        for chunk in chunks(lines(), size=2, wait=SAFETY):
            received.append(chunk)

    assert received == [[0, 1], [2, 3], [4]]


def test_reading_stays_a_chunk_ahead_and_stops_with_the_reader() -> None:
    pulled = itertools.count()
    endless = (next(pulled) for _ in itertools.count())

    before = set(threading.enumerate())
    stream = chunks(endless, size=8, wait=SAFETY)
    assert next(stream) == list(range(8))
    [reader] = set(threading.enumerate()) - before
    stream.close()  # e.g. the command stopped: its reader must stop too

    reader.join(SAFETY)
    assert not reader.is_alive()
    # The chunk given, a full queue behind it, and the item that found no room.
    assert next(pulled) <= 8 + 8 + 1
