"""The queue in front of the model: requests waiting are joined, a full queue refuses, a
failure reaches every request of its batch, and stopping answers what is left."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ch06_classification.serve.batcher import Batcher, QueueFull, Stopped

WAIT_SECONDS = 30  # a safety net; every wait here takes milliseconds


class HeldModel:
    """``process`` for a batcher: doubles each item, records each batch, and holds the
    first batch until ``release`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.taken = threading.Event()  # the first batch has reached the model
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.taken.set()
        self.release.wait(WAIT_SECONDS)
        return [2 * item for item in items]


async def until(condition) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def hold_first(batcher: Batcher, model: HeldModel) -> asyncio.Task:
    """A first request, held by the model, so that the next ones wait in the queue."""
    first = asyncio.create_task(batcher.submit([0]))
    await until(model.taken.is_set)
    return first


@pytest.mark.parametrize(
    ("max_batch", "expected"),
    [
        (100, [[0], [1, 2, 3, 4, 5, 6]]),  # everything waiting, in one batch
        (3, [[0], [1, 2, 3], [4, 5, 6]]),  # taken while fewer than 3 are held
        (1, [[0], [1, 2], [3], [4, 5], [6]]),  # a request at a time, never split
    ],
)
def test_requests_waiting_are_joined_in_order_never_split(
    max_batch: int, expected: list[list[int]]
) -> None:
    async def scenario() -> list[list[int]]:
        model = HeldModel()
        batcher = Batcher(model, queue_size=10, max_batch=max_batch)
        batcher.start()
        first = await hold_first(batcher, model)
        requests = [[1, 2], [3], [4, 5], [6]]
        waiting = [asyncio.create_task(batcher.submit(items)) for items in requests]
        await until(lambda: batcher.waiting == len(requests))
        model.release.set()
        answers = await asyncio.gather(first, *waiting)
        await batcher.stop()
        assert answers == [[0], [2, 4], [6], [8, 10], [12]]  # each its own, in order
        return model.batches

    assert asyncio.run(scenario()) == expected


def test_a_full_queue_refuses_at_once_and_takes_requests_again_once_it_has_room() -> None:
    async def scenario() -> None:
        model = HeldModel()
        batcher = Batcher(model, queue_size=2, max_batch=1)
        batcher.start()
        first = await hold_first(batcher, model)
        waiting = [asyncio.create_task(batcher.submit([n])) for n in (1, 2)]
        await until(lambda: batcher.waiting == 2)
        with pytest.raises(QueueFull, match="2 requests are already waiting"):
            await batcher.submit([3])
        model.release.set()
        assert await asyncio.gather(first, *waiting) == [[0], [2], [4]]
        assert await batcher.submit([3]) == [6]
        await batcher.stop()

    asyncio.run(scenario())


def test_a_failure_reaches_every_request_of_its_batch_and_the_next_batch_is_classified() -> None:
    async def scenario() -> None:
        model = HeldModel()

        def failing_on_two(items: list[int]) -> list[int]:
            answers = model(items)
            if len(items) == 2:
                raise RuntimeError("the model failed")
            return answers

        batcher = Batcher(failing_on_two, queue_size=10, max_batch=10)
        batcher.start()
        first = await hold_first(batcher, model)
        joined = [asyncio.create_task(batcher.submit([n])) for n in (1, 2)]
        await until(lambda: batcher.waiting == 2)
        model.release.set()
        assert await first == [0]
        for request in joined:  # both were in the batch that failed
            with pytest.raises(RuntimeError, match="the model failed"):
                await request
        assert await batcher.submit([5]) == [10]
        assert model.batches == [[0], [1, 2], [5]]
        await batcher.stop()

    asyncio.run(scenario())


def test_stopping_answers_the_requests_still_queued() -> None:
    async def scenario() -> None:
        model = HeldModel()
        batcher = Batcher(model, queue_size=10, max_batch=1)
        batcher.start()
        first = await hold_first(batcher, model)
        queued = asyncio.create_task(batcher.submit([1]))
        await until(lambda: batcher.waiting == 1)
        stopping = asyncio.create_task(batcher.stop())
        with pytest.raises(Stopped, match="shutting down"):
            await queued
        model.release.set()  # the batch in the model finishes in its thread
        await stopping
        with pytest.raises(Stopped):
            await first
        with pytest.raises(Stopped):
            await batcher.submit([2])

    asyncio.run(scenario())


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(lambda items: items, queue_size=0)
