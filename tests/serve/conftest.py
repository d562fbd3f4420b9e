"""What the tests of ``gpt-spam serve`` share: a trained and evaluated tiny run, the app the
command builds for a run, and that app served for real on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ch06_classification.cli.commands import serve
from ch06_classification.cli.main import build_parser
from ch06_classification.serve.server import listen, url_of

if TYPE_CHECKING:
    from fastapi import FastAPI

# Each test module of the server starts with these (a module-level skip, with its reason).
NEEDS_SERVE_EXTRA = "the serve extra is not installed: pip install -e '.[dev,serve]'"

START_SECONDS = 30  # a safety net: a server thread starts in well under a second


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run as a user's looks after `train` and `evaluate`: its checkpoint,
    metrics.json, an evaluation and every plot."""
    from ch06_classification.evaluating.evaluation import evaluate_run
    from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
    from ch06_classification.storage.runs import save_training_run
    from tests.synthetic_splits import write_synthetic_splits
    from tests.tiny_classifier import TINY

    data_dir = write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(24, 8, 8))
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=1, config_overrides=TINY
    )
    run_dir = tmp_path_factory.mktemp("run")
    save_training_run(fine_tune(settings, log=lambda line: None), run_dir)
    evaluate_run(run_dir, data_dir, device="cpu", log=lambda line: None, progress=False)
    return run_dir


def build_app(*arguments: str | Path) -> FastAPI:
    """The app `gpt-spam serve ARGUMENTS` serves (on the CPU), built as the command builds it."""
    args = build_parser().parse_args(["serve", "--device", "cpu", *map(str, arguments)])
    checkpoint, info, threshold, _ = serve.find_trained_run(args)
    return serve.build_app(args, checkpoint, info, threshold, version="test")


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn, as the command serves it, on a free port of 127.0.0.1 (in
    a thread of this process, so that a test can look inside); yields its URL."""
    import uvicorn

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(START_SECONDS)
        sock.close()
