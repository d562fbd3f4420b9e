"""Requests that arrive together, classified together: a bounded queue and one worker.

A model classifies 32 messages in one batch in far less than 32 times the time of one
(the matrix products are wider, not more numerous), so a server that classified each
request on its own would leave most of that on the table as soon as two clients call it
at once. Here every request puts its messages in one queue and waits; a single worker
takes every request waiting (while it holds fewer than ``max_batch`` messages), hands
them to ``process`` in one call (the classifier groups them by length, as ``classify``
does), and gives each request its own part of the answers.

The queue is bounded: a request that finds ``queue_size`` requests already waiting is
refused at once (``QueueFull``: the server answers 503 with Retry-After) instead of
waiting behind a backlog that only grows. ``process`` runs in a thread of its own, so the
server keeps accepting, refusing and answering requests while the model computes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """Too many requests are waiting: come back later."""


class Stopped(Exception):
    """The batcher stopped (the server is shutting down) before the request was answered."""


@dataclass
class Job(Generic[Item, Result]):
    """One request's items, and the future its answers are set on."""

    items: Sequence[Item]
    future: asyncio.Future[list[Result]] = field(repr=False)


class Batcher(Generic[Item, Result]):
    """Calls ``process(items)`` (a list of answers, one per item, in order) in a worker
    thread on the items of every request waiting, taking requests while it holds fewer
    than ``max_batch`` items (so a request is never split; ``max_batch=1`` classifies one
    request at a time).

    Start it with ``start()`` inside a running event loop, and ``stop()`` it there.
    """

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        queue_size: int = 64,
        max_batch: int = 256,
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be at least 1")
        self.process = process
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.batches = 0  # how many calls of process, for /health and the tests
        self._queue: asyncio.Queue[Job[Item, Result]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start taking work (again, after ``stop``: an app may be served more than once)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop taking work: the batch being classified finishes, the requests still
        queued get ``Stopped``."""
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Stopped("the server is shutting down"))
        self._queue = None
        if self._thread is not None:  # waited for in another thread: the loop goes on
            await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)

    @property
    def waiting(self) -> int:
        """How many requests are queued (not yet taken by the worker)."""
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The answers to ``items``, in order, once the worker has classified them.

        Raises ``QueueFull`` at once when ``queue_size`` requests are already waiting.
        """
        if self._queue is None:
            raise Stopped("the batcher is not running")
        job: Job[Item, Result] = Job(items, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue_size} requests are already waiting") from None
        return await job.future

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            count = len(jobs[0].items)
            # Every request waiting now, while fewer than max_batch messages are taken.
            while not self._queue.empty() and count < self.max_batch:
                jobs.append(self._queue.get_nowait())
                count += len(jobs[-1].items)
            items = [item for job in jobs for item in job.items]
            try:
                results = await loop.run_in_executor(self._thread, self.process, items)
            except asyncio.CancelledError:  # stopping: the batch still finishes in its thread
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(Stopped("the server is shutting down"))
                raise
            except Exception as error:  # every request of the batch learns of it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            finally:
                self.batches += 1
            start = 0
            for job in jobs:
                if not job.future.done():  # (a client that went away cancelled it)
                    job.future.set_result(list(results[start : start + len(job.items)]))
                start += len(job.items)
