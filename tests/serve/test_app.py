"""`gpt-spam serve` driven over HTTP as a program would drive it: the real server (uvicorn)
on a free loopback port, the app built as the command builds it.

Most tests serve in a thread of this process, so that a test can hold the model's worker
to make requests meet in its queue; the command itself is run in a fresh process too, for
what only a process shows: where it listens, what it prints, and Ctrl-C.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import NEEDS_SERVE_EXTRA, build_app, running

pytest.importorskip("fastapi", reason=NEEDS_SERVE_EXTRA)
httpx = pytest.importorskip("httpx", reason=NEEDS_SERVE_EXTRA)

from ch06_classification.cli.main import main  # noqa: E402
from tests.run_cli import command, environment  # noqa: E402
from tests.tiny_classifier import MESSAGES, write_tiny_checkpoint  # noqa: E402

# Messages of every kind the command line also takes: long ones are cut to max_length, and
# non-ASCII, emoji and markup are text like any other.
TEXTS = [*MESSAGES, "héllo 😀 <b>WIN</b> & 'cash'", "Congratulations! " * 40]
WAIT_SECONDS = 30  # safety nets for waits that take milliseconds


@pytest.fixture(scope="module")
def app(trained_run: Path):
    return build_app("--run-dir", trained_run)


@pytest.fixture(scope="module")
def url(app) -> Iterator[str]:
    with running(app) as url:
        yield url


def post(url: str, body: object, **options) -> httpx.Response:
    return httpx.post(f"{url}classify", json=body, timeout=WAIT_SECONDS, **options)


def classify_json(capsys: pytest.CaptureFixture, *args: str | Path) -> list[dict]:
    """What `gpt-spam classify --json ARGS` prints, one object per message."""
    status = main(["classify", "--json", "--device", "cpu", *map(str, args)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return [json.loads(line) for line in out.splitlines()]


def assert_same_answers(served: list[dict], printed: list[dict]) -> None:
    """The same texts, labels and keys; probabilities and weights to 1e-6: the server
    classifies a request's texts in batches with other requests', classify in its own."""
    assert len(served) == len(printed)
    for answer, line in zip(served, printed, strict=True):
        assert answer.keys() == line.keys()
        for key, value in line.items():
            if isinstance(value, float):
                assert answer[key] == pytest.approx(value, abs=1e-6)
            elif key == "explanation":
                assert value["label"] == answer[key]["label"]
                assert [t["text"] for t in answer[key]["tokens"]] == [
                    t["text"] for t in value["tokens"]
                ]
                np.testing.assert_allclose(
                    [t["weight"] for t in answer[key]["tokens"]],
                    [t["weight"] for t in value["tokens"]],
                    atol=1e-6,
                )
            else:
                assert answer[key] == value


# --- The API answers what classify --json prints ----------------------------------------


@pytest.mark.parametrize(
    ("request_options", "classify_options"),
    [({}, []), ({"threshold": 0.3}, ["--threshold", "0.3"]), ({"explain": True}, ["--explain"])],
    ids=["default", "threshold", "explain"],
)
def test_classify_answers_what_classify_json_prints(
    url: str, trained_run: Path, capsys, request_options: dict, classify_options: list[str]
) -> None:
    response = post(url, {"texts": TEXTS, **request_options})

    assert response.status_code == 200, response.text
    printed = classify_json(capsys, "--run-dir", trained_run, *classify_options, *TEXTS)
    assert_same_answers(response.json()["results"], printed)


def test_a_run_of_more_than_two_classes_answers_its_labels_and_refuses_a_threshold(
    tmp_path: Path, capsys
) -> None:
    run = write_tiny_checkpoint(tmp_path, labels=("news", "sport", "tech")).parent
    with running(build_app("--run-dir", run)) as url:
        served = post(url, {"texts": TEXTS, "explain": True}).json()["results"]
        refused = post(url, {"texts": ["hi"], "threshold": 0.5})
        card = httpx.get(f"{url}model").json()

    assert_same_answers(served, classify_json(capsys, "--run-dir", run, "--explain", *TEXTS))
    assert {answer["label"] for answer in served} <= {"news", "sport", "tech"}
    assert refused.status_code == 422 and "two classes" in refused.json()["detail"]
    assert card["labels"] == ["news", "sport", "tech"] and card["threshold"] is None


def test_explanations_name_the_tokens_read(url: str) -> None:
    long_text = TEXTS[-1]
    [answer] = post(url, {"texts": [long_text], "explain": True}).json()["results"]

    tokens = answer["explanation"]["tokens"]
    read = "".join(token["text"] for token in tokens)
    assert long_text.startswith(read) and len(read) < len(long_text)  # cut to max_length
    assert all(long_text[t["start"] : t["end"]] == t["text"] for t in tokens)


# --- The other routes --------------------------------------------------------------------


def test_health_model_card_and_plots(url: str, trained_run: Path) -> None:
    health = httpx.get(f"{url}health")
    card = httpx.get(f"{url}model").json()

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert card["labels"] == ["ham", "spam"] and card["threshold"] == 0.5
    assert card["model"]["preset"] == "gpt2-small" and card["model"]["weights"] == "random"
    assert card["model"]["base"]["kind"] == "random"
    assert card["training"]["settings"]["epochs"] == 1
    assert set(card["accuracy"]) == {"train", "validation", "test"}
    [evaluation] = card["evaluations"]
    assert evaluation["threshold"] == 0.5 and "test" in evaluation["sets"]
    names = [plot["name"] for plot in card["plots"]]
    assert names[:2] == ["loss.png", "accuracy.png"]
    assert sorted(names) == sorted(path.name for path in trained_run.glob("*.png"))
    for plot in card["plots"]:
        image = httpx.get(url + plot["url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert httpx.get(f"{url}plots/metrics.json").status_code == 404  # only the plots


def test_the_openapi_description_covers_the_api(url: str) -> None:
    described = httpx.get(f"{url}openapi.json").json()

    assert {"/classify", "/health", "/model"} <= set(described["paths"])
    request = described["components"]["schemas"]["ClassifyRequest"]
    assert set(request["properties"]) == {"texts", "threshold", "explain"}
    assert request["required"] == ["texts"]
    # Swagger UI and ReDoc would load their scripts from a CDN: not served.
    assert httpx.get(f"{url}docs").status_code == 404


def test_the_page_loads_nothing_from_another_host(url: str) -> None:
    page = httpx.get(url)

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    linked = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert linked and all("//" not in link and not link.startswith("/") for link in linked)
    for asset in ("page.js", "page.css"):
        assert httpx.get(url + asset).status_code == 200
    script = httpx.get(f"{url}page.js").text
    assert "innerHTML" not in script  # text from users and runs is set as text only


# --- Bad requests: a 4xx with one message, and the server goes on -------------------------

BAD_REQUESTS = [
    # (body as sent, Content-Type, status, words of the message)
    (b"{texts", "application/json", 422, "not valid JSON"),
    (b"", "application/json", 422, "the body is empty"),
    (b"[1, 2]", "application/json", 422, "JSON object"),
    (b'"texts"', "application/json", 422, "JSON object"),
    (b"{}", "application/json", 422, "texts is missing"),
    (b'{"texts": []}', "application/json", 422, "texts is empty"),
    (b'{"texts": "one"}', "application/json", 422, "texts: Input should be a valid list"),
    (b'{"texts": ["a", 1]}', "application/json", 422, "texts[1]: Input should be a valid string"),
    (b'{"texts": ["a", "  "]}', "application/json", 422, "texts[1] is empty"),
    (b'{"texts": ["a"], "threshold": "0.5"}', "application/json", 422, "threshold"),
    (b'{"texts": ["a"], "threshold": 1.5}', "application/json", 422, "threshold"),
    (b'{"texts": ["a"], "threshold": NaN}', "application/json", 422, "finite"),
    (b'{"texts": ["a"], "threshold": true}', "application/json", 422, "threshold"),
    (b'{"texts": ["a"], "explain": "yes"}', "application/json", 422, "explain"),
    (b'{"texts": ["a"], "thresold": 0.5}', "application/json", 422, "thresold is not a field"),
    (b'{"texts": ["\xff"]}', "application/json", 400, "UTF-8"),
    (b'{"texts": ["a"]}', "text/plain", 422, "Content-Type: application/json"),
    (b'{"texts": ["a"]}', None, 422, "Content-Type: application/json"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), BAD_REQUESTS)
def test_a_bad_request_gets_one_clear_message(
    url: str, body: bytes, content_type: str | None, status: int, words: str
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = httpx.post(f"{url}classify", content=body, headers=headers, timeout=WAIT_SECONDS)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail and "\n" not in detail
    assert "Traceback" not in response.text
    assert post(url, {"texts": ["still serving?"]}).status_code == 200


def test_unknown_routes_and_methods_are_json_too(url: str) -> None:
    for response in (httpx.get(f"{url}nothing"), httpx.get(f"{url}classify")):
        assert response.status_code in (404, 405) and isinstance(response.json()["detail"], str)


def test_limits_on_body_texts_explanations_and_characters(trained_run: Path) -> None:
    app = build_app("--run-dir", trained_run, "--max-texts", "3", "--max-chars", "50",
                    "--max-body-bytes", "2000", "--max-explained", "2")  # fmt: skip
    with running(app) as url:
        limits = httpx.get(f"{url}model").json()["limits"]
        too_many = post(url, {"texts": ["a", "b", "c", "d"]})
        too_long = post(url, {"texts": ["a", "x" * 51]})
        too_many_to_explain = post(url, {"texts": ["a", "b", "c"], "explain": True})
        explained = post(url, {"texts": ["a", "b"], "explain": True})
        declared = post(url, {"texts": ["x" * 40] * 60})  # Content-Length says 2,500+
        # Sent in chunks, without a Content-Length: counted as it arrives.
        chunked = httpx.post(
            f"{url}classify",
            content=iter([b'{"texts": ["', b"x" * 3000, b'"]}']),
            headers={"Content-Type": "application/json"},
            timeout=WAIT_SECONDS,
        )
        within = post(url, {"texts": ["a", "b", "x" * 50]})

    assert limits == {
        "max_body_bytes": 2000, "max_texts": 3, "max_chars": 50, "max_explained": 2,
        "queue_size": 64, "max_batch": 256,
    }  # fmt: skip
    assert too_many.status_code == 413 and "at most 3" in too_many.json()["detail"]
    assert too_many_to_explain.status_code == 413
    assert too_many_to_explain.json()["detail"].startswith("3 texts to explain: at most 2")
    assert explained.status_code == 200
    assert too_long.status_code == 413 and "texts[1] has 51 characters" in too_long.json()["detail"]
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["detail"] == "the request body is larger than 2,000 bytes"
    assert within.status_code == 200 and len(within.json()["results"]) == 3


def test_a_failure_inside_is_a_500_with_one_line_and_the_server_goes_on(trained_run: Path) -> None:
    app = build_app("--run-dir", trained_run)
    batcher = app.state.batcher
    process, failures = batcher.process, [RuntimeError("out of memory, say\nsecond line")]

    def failing_once(items):
        if failures:
            raise failures.pop()
        return process(items)

    batcher.process = failing_once
    with running(app) as url:
        failed = post(url, {"texts": ["hi"]})
        after = post(url, {"texts": ["hi"]})

    assert failed.status_code == 500
    assert (
        failed.json()["detail"] == "the server failed: RuntimeError: out of memory, say second line"
    )
    assert after.status_code == 200


# --- The queue: joined when they meet, refused when it is full ----------------------------


@contextmanager
def held_worker(app) -> Iterator[tuple[threading.Event, list[int]]]:
    """The model's worker, held on its first batch until the test sets the event it
    yields; the sizes of the batches it classifies are listed."""
    batcher = app.state.batcher
    process, release, sizes = batcher.process, threading.Event(), []

    def held(items):
        sizes.append(len(items))
        release.wait(WAIT_SECONDS)
        return process(items)

    batcher.process = held
    try:
        yield release, sizes
    finally:
        release.set()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(("max_batch", "expected_batches"), [(256, [1, 7]), (1, [1] * 8)])
def test_requests_that_arrive_together_are_classified_together(
    trained_run: Path, max_batch: int, expected_batches: list[int]
) -> None:
    app = build_app("--run-dir", trained_run, "--max-batch", str(max_batch))
    alone = post_alone(app, MESSAGES)
    with held_worker(app) as (release, sizes), running(app) as url, ThreadPoolExecutor(8) as pool:
        first = pool.submit(post, url, {"texts": ["the first, held"]})
        wait_until(lambda: sizes == [1])
        waiting: list[Future] = [pool.submit(post, url, {"texts": [text]}) for text in MESSAGES]
        wait_until(lambda: app.state.batcher.waiting == len(MESSAGES))
        release.set()
        answers = [future.result().json()["results"][0] for future in waiting]
        assert first.result().status_code == 200

    assert sizes == expected_batches
    assert_same_answers(answers, alone)


def post_alone(app, texts: tuple[str, ...]) -> list[dict]:
    """Each text's answer from a request of its own, one at a time."""
    with running(app) as url:
        return [post(url, {"texts": [text]}).json()["results"][0] for text in texts]


def test_a_full_queue_is_refused_with_503_and_retry_after(trained_run: Path) -> None:
    app = build_app("--run-dir", trained_run, "--queue-size", "1", "--max-batch", "1")
    with held_worker(app) as (release, sizes), running(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, {"texts": ["taken by the worker"]})
        wait_until(lambda: sizes == [1])
        second = pool.submit(post, url, {"texts": ["waits in the queue"]})
        wait_until(lambda: app.state.batcher.waiting == 1)
        refused = post(url, {"texts": ["one too many"]})
        release.set()
        answered = [first.result(), second.result()]
        after = post(url, {"texts": ["and now?"]})

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"] == (
        "the server is busy (1 requests are already waiting); retry in 1 s"
    )
    assert [response.status_code for response in [*answered, after]] == [200, 200, 200]


# --- The command, in a process of its own --------------------------------------------------


@contextmanager
def serve_process(
    *args: str | Path, cwd: Path
) -> Iterator[tuple[subprocess.Popen, str, queue.Queue]]:
    """`gpt-spam serve ARGS --port 0` started; yields the process, the URL it said it
    serves at, and a queue of the lines it writes on stderr."""
    process = subprocess.Popen(
        [*command(("serve", "--port", "0", *args))],
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        said = []
        while not (found := re.search(r"at (http://\S+/)", "".join(said))):
            said.append(lines.get(timeout=120))  # loading PyTorch and the run, on a busy machine
        yield process, found[1], lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT_SECONDS)


def remaining(lines: queue.Queue) -> str:
    said = []
    while not lines.empty():
        said.append(lines.get())
    return "".join(said)


def test_the_command_serves_on_loopback_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, trained_run: Path
) -> None:
    with serve_process("--run-dir", trained_run, cwd=tmp_path) as (process, url, lines):
        assert url.startswith("http://127.0.0.1:")  # this machine only, by default
        assert httpx.get(f"{url}health").json()["status"] == "ok"
        assert post(url, {"texts": ["WIN a prize"]}).status_code == 200
        assert post(url, {"texts": []}).status_code == 422
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        status = process.wait(WAIT_SECONDS)
        said = remaining(lines)

    assert status == 0
    assert said.strip().splitlines()[-1] == "gpt-spam serve: stopped"
    assert "Traceback" not in said and process.stdout.read() == ""


def test_a_port_already_taken_is_one_line(tmp_path: Path, checkpoint: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            command(("serve", "--run-dir", checkpoint, "--port", str(port))),
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"gpt-spam serve: error: cannot listen on 127.0.0.1 port {port}: Address already in use"
    ]


def test_without_the_serve_extra_the_command_says_how_to_install_it(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "uvicorn" else find_spec(name, *a),
    )

    status = main(["serve", "--run-dir", str(checkpoint), "--port", "0"])

    assert status == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpt-spam serve: error: uvicorn is not installed, which the server runs on: "
        "pip install -e '.[serve]' (or pip install 'gpt-spam[serve]')"
    ]


def test_listening_beyond_this_machine_comes_with_a_warning(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from ch06_classification.serve import server

    asked = []
    listen = server.listen

    def loopback_instead(host: str, port: int):  # a test listens on loopback only
        asked.append(host)
        return listen("127.0.0.1", port)

    monkeypatch.setattr(server, "listen", loopback_instead)
    monkeypatch.setattr(server, "serve_forever", lambda app, sock: None)  # stops at once

    status = main(["serve", "--run-dir", str(checkpoint), "--host", "0.0.0.0", "--port", "0"])

    said = capsys.readouterr().err.splitlines()
    assert status == 0 and asked == ["0.0.0.0"]
    assert said[-3:] == [
        "gpt-spam serve: warning: --host 0.0.0.0 makes it reachable from other machines, and "
        "anyone who reaches it may use it (there is no login)",
        "gpt-spam serve: Ctrl-C stops it",
        "gpt-spam serve: stopped",
    ]
