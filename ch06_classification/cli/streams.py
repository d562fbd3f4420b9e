"""A stream of messages in chunks, as they arrive: classified while more is still coming.

``gpt-spam classify -`` may read a pipe that never ends (``yes "win a prize" | ...``), a
file of millions of lines, or a person typing. Reading all of it before classifying any
would print nothing for as long as the input lasts, in memory that grows with it. Instead
``chunks`` hands the messages on a chunk at a time, in their order:

- a chunk is full at ``size`` messages, enough to batch them by length well;
- or it goes as it is ``wait`` seconds after its first message arrived, so that a pipe
  that trickles, or a person typing, gets answers within about that long;
- the messages are read in a thread, ahead of the chunk being classified, but never more
  than ``size`` of them: memory stays bounded however long the stream is.

A reading error (a line that is not valid CSV, a stream with no message at all) reaches
the caller after the chunks read before it, where it would have happened had everything
been read in one go.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

CHUNK_SIZE = 256  # messages: several batches, sorted by length within the chunk
CHUNK_WAIT = 0.25  # seconds: how long the first message of a chunk waits for company


class _End:
    """What the reading thread puts last: the items ran out, or ``error`` stopped them."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def chunks(
    items: Iterable[T], size: int = CHUNK_SIZE, wait: float = CHUNK_WAIT
) -> Iterator[list[T]]:
    """Lists of ``items``, in order, each as soon as it is full (``size``) or ``wait``
    seconds after its first item arrived, whichever comes first.

    The items are read in a daemon thread, at most ``size`` ahead, so that a stream which
    blocks (a pipe) cannot hold up a chunk that is due, and an exit cannot wait for it.
    Stopping early (``break``, an error) stops the reading as soon as it asks for room.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    arrived: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():  # wait for room, but give up when the consumer is gone
            try:
                arrived.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed on to the consumer's thread
            put(_End(error))
        else:
            put(_End())

    threading.Thread(target=read, name="gpt-spam reader", daemon=True).start()
    try:
        while True:
            item = arrived.get()
            chunk: list[T] = []
            deadline = time.monotonic() + wait
            while not isinstance(item, _End):
                chunk.append(item)
                if len(chunk) == size:
                    break
                try:
                    item = arrived.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
            if chunk:
                yield chunk
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
    finally:
        stop.set()
