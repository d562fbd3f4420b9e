"""Many clients at once, on 127.0.0.1: every request is answered correctly, or refused
with an explicit 503 when the queue is full, and the server is still up after. Bounded in
count (REQUESTS) and in time (TIME_LIMIT); the throughput itself is measured by
benchmarks/serve.py, not asserted here."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.serve.conftest import NEEDS_SERVE_EXTRA, build_app, running

pytest.importorskip("fastapi", reason=NEEDS_SERVE_EXTRA)
httpx = pytest.importorskip("httpx", reason=NEEDS_SERVE_EXTRA)

from ch06_classification.classifying.answers import answers  # noqa: E402
from ch06_classification.classifying.spam_classifier import SpamClassifier  # noqa: E402
from tests.tiny_classifier import MESSAGES  # noqa: E402

CLIENTS = 32
REQUESTS = 192
TIME_LIMIT = 120  # seconds, for all of them: a safety net (it takes a few)
QUEUE_SIZE = 8  # small, so that some requests meet a full queue


async def load(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """Each body posted once, by CLIENTS clients at a time."""
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIME_LIMIT) as client:
        gate = asyncio.Semaphore(CLIENTS)

        async def send(body: dict) -> httpx.Response:
            async with gate:
                return await client.post("classify", json=body)

        return await asyncio.wait_for(asyncio.gather(*map(send, bodies)), TIME_LIMIT)


def test_many_concurrent_requests_are_answered_correctly_or_refused_with_503(
    trained_run: Path,
) -> None:
    classifier = SpamClassifier.from_pretrained(trained_run, device="cpu")
    alone = answers(classifier, MESSAGES, classifier.predict_proba(MESSAGES), 0.5)
    expected = {answer["text"]: answer for answer in alone}
    draw = random.Random(0)
    bodies = [{"texts": draw.sample(MESSAGES, draw.randint(1, 3))} for _ in range(REQUESTS)]
    app = build_app("--run-dir", trained_run, "--queue-size", str(QUEUE_SIZE))

    with running(app) as url:
        responses = asyncio.run(load(url, bodies))
        health = httpx.get(f"{url}health").json()

    answered = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(answered) + len(refused) == REQUESTS and answered
    for body, response in answered:
        results = response.json()["results"]
        assert [result["text"] for result in results] == body["texts"]
        for result in results:
            want = expected[result["text"]]
            assert result["label"] == want["label"]
            # Batched with other requests' messages, or alone: equal to rounding.
            assert result["spam_probability"] == pytest.approx(want["spam_probability"], abs=1e-6)
    for response in refused:
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["detail"].startswith("the server is busy")
    assert health["status"] == "ok"
    # Requests that met in the queue were classified together.
    assert health["batches"] < len(answered)
