"""The web page and JSON API of ``gpt-spam serve``: a FastAPI app around one trained run.

=================  ==================================================================
``GET /``          the page: type messages, see each label, its probability and why
``POST /classify`` ``{"texts": [...], "threshold"?, "explain"?}`` -> ``{"results": [...]}``,
                   each result what ``gpt-spam classify --json`` prints for that text
                   (``classifying/answers.py``; with ``explain``, its ``explanation``)
``GET /model``     the run's card (``card.py``)
``GET /health``    ``{"status": "ok", ...}`` while the server is up
``GET /plots/F``   the run's plots
``GET /openapi.json``  the API's OpenAPI description
=================  ==================================================================

Bounded by default (``Limits``): a body over ``max_body_bytes``, more than ``max_texts``
texts (``max_explained`` to explain) or a text over ``max_chars`` characters is refused
with 413; a full queue with 503
and ``Retry-After`` (``batcher.py``). Every refusal is a JSON body with one message,
``{"detail": "..."}``, never a traceback, and the server goes on serving.

The page is this package's ``page.html``, ``page.js`` and ``page.css``; its
Content-Security-Policy lets it load nothing from another host, so it works offline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ch06_classification.classifying.answers import answers
from ch06_classification.classifying.explain import predict_with_left_out
from ch06_classification.classifying.spam_classifier import (
    EmptyMessageError,
    SpamClassifier,
    two_class_only,
)
from ch06_classification.serve.batcher import Batcher, QueueFull, Stopped
from ch06_classification.serve.card import run_plots
from ch06_classification.serve.limits import Limits
from ch06_classification.storage.printable import one_line

RETRY_AFTER_SECONDS = 1
MESSAGE_WIDTH = 500  # characters: the longest message a refusal gives
# The page may load, run, show and fetch only what this server serves: nothing from elsewhere.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
FASTAPI_UNPARSED = "There was an error parsing the body"
PAGE_FILES = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}


class ClassifyRequest(BaseModel):
    """The body of ``POST /classify``."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(
        description="the messages to classify, in order (at least one)",
        examples=[["You are a winner! Claim your prize now", "Lunch at 1?"]],
    )
    threshold: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)] | None = Field(
        default=None,
        description="two-class runs: class 1 (spam) when its probability is at least "
        "this (default: the server's, 0.5 unless --threshold)",
    )
    explain: StrictBool = Field(
        default=False,
        description="add each text's explanation: how much each token moved the decision",
    )


class ClassifyResponse(BaseModel):
    """The body ``POST /classify`` answers with."""

    results: list[dict[str, Any]] = Field(
        description='one per text, in order, as `gpt-spam classify --json` prints it: {"text", '
        '"label", "spam_probability"} for a two-class run (class 1\'s probability, named '
        'after it), {"text", "label", "probability"} (the label\'s) for more classes; '
        'with explain, an "explanation": {"label", "tokens": [{"text", "start", "end", '
        '"weight"}], "strongest": [token indices]}'
    )


class Refused(HTTPException):
    """A request refused, with the status and the one message its JSON body holds."""


def create_app(
    classifier: SpamClassifier,
    card: dict[str, Any],
    threshold: float | None,
    run_dir: Path,
    limits: Limits | None = None,
    version: str = "unknown",
) -> FastAPI:
    """The app serving ``classifier`` (a run's, described by ``card``) at ``threshold``
    (None: more than two classes) under ``limits`` (default: ``Limits()``)."""
    limits = limits or Limits()
    batcher: Batcher[tuple[list[int], bool], tuple[np.ndarray, np.ndarray | None]] = Batcher(
        lambda items: classify_items(classifier, items), limits.queue_size, limits.max_batch
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="gpt-spam",
        version=version,
        summary="A GPT-2 text classifier, fine-tuned with gpt-spam: a page and a JSON API",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: not offline
        redoc_url=None,
    )
    app.state.batcher = batcher
    add_error_handlers(app)
    page = files("ch06_classification.serve")
    plots = run_plots(run_dir)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page_response(page.joinpath("page.html").read_bytes(), "text/html; charset=utf-8")

    @app.get("/page.{suffix}", include_in_schema=False)
    def page_file(suffix: str) -> Response:
        name = f"page.{suffix}"
        if name not in PAGE_FILES:
            raise Refused(404, f"no page file {name}")
        return page_response(page.joinpath(name).read_bytes(), PAGE_FILES[name])

    @app.get("/plots/{name}", include_in_schema=False)
    def plot(name: str) -> FileResponse:
        if name not in plots or not plots[name].is_file():
            raise Refused(404, f"the run has no plot {name}")
        return FileResponse(plots[name], media_type="image/png")

    @app.get("/health", summary="Is the server up?")
    def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": batcher.waiting, "batches": batcher.batches}

    @app.get("/model", summary="The run's card: base weights, training, evaluations, plots")
    def model() -> dict[str, Any]:
        return card

    @app.post(
        "/classify",
        summary="Classify texts: what `gpt-spam classify --json` prints for them",
        response_model=ClassifyResponse,
        responses={
            413: {"description": "the body, a text, or the number of texts is too large"},
            422: {"description": "not a valid request (malformed JSON, a wrong type, ...)"},
            503: {"description": "too many requests are waiting: retry after Retry-After s"},
        },
    )
    async def classify(request: ClassifyRequest) -> JSONResponse:
        texts = [readable(text) for text in request.texts]
        encoded = encode_texts(classifier, texts, request.explain, limits)
        decided_at = request_threshold(classifier.labels, threshold, request.threshold)
        try:
            rows = await batcher.submit([(ids, request.explain) for ids in encoded])
        except QueueFull as error:
            raise Refused(
                503,
                f"the server is busy ({error}); retry in {RETRY_AFTER_SECONDS} s",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        except Stopped as error:
            raise Refused(503, str(error)) from None
        probabilities = np.stack([row for row, _ in rows])
        left_out = [variants for _, variants in rows]
        results = answers(classifier, texts, probabilities, decided_at, encoded, left_out)
        return JSONResponse({"results": results})

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    return app


def classify_items(
    classifier: SpamClassifier, items: list[tuple[list[int], bool]]
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The batcher's work (in its thread): each item's class probabilities and, if it is
    to be explained, its left-out variants', all in one call."""
    probabilities, left_out = predict_with_left_out(
        classifier, [ids for ids, _ in items], [explain for _, explain in items]
    )
    return list(zip(probabilities, left_out, strict=True))


def readable(text: str) -> str:
    """``text`` with any lone surrogate (JSON allows ``"\\ud800"``, Unicode does not) as
    U+FFFD, the replacement character, as classify does with bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)


def encode_texts(
    classifier: SpamClassifier, texts: list[str], explain: bool, limits: Limits
) -> list[list[int]]:
    """The token ids of each text, or the request refused: no text, too many (to
    ``explain``), one too long, or one empty."""
    if not texts:
        raise Refused(422, "texts is empty: give at least one text to classify")
    if len(texts) > limits.max_texts:
        raise Refused(413, f"{len(texts):,} texts: at most {limits.max_texts:,} per request")
    if explain and len(texts) > limits.max_explained:
        raise Refused(
            413,
            f"{len(texts):,} texts to explain: at most {limits.max_explained:,} per request "
            "(explaining classifies each text once per token)",
        )
    encoded = []
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise Refused(
                413, f"texts[{i}] has {len(text):,} characters: at most {limits.max_chars:,}"
            )
        try:
            encoded.append(classifier.encode(text))
        except EmptyMessageError:
            raise Refused(422, f"texts[{i}] is empty: there is nothing to classify") from None
    return encoded


def request_threshold(
    class_names: tuple[str, ...], default: float | None, asked: float | None
) -> float | None:
    """The threshold a request is decided at: its own or the server's (two classes); none
    for more, where asking for one is refused."""
    if asked is None:
        return default
    if len(class_names) != 2:
        raise Refused(422, f"threshold {asked:g}: {two_class_only(class_names)}")
    return asked


def page_response(content: bytes, media_type: str) -> Response:
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"},
    )


# --- Refusals: one JSON message each ------------------------------------------------------


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"detail": "one message"}``: FastAPI's validation errors (a list
    of dicts) become their first problem, said plainly; an unexpected error is a 500 whose
    message names it (its traceback goes to the server's log only)."""

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> JSONResponse:
        detail = str(error.detail)
        if detail == FASTAPI_UNPARSED:  # FastAPI's words for a body it could not decode
            detail = "the body is not JSON text in UTF-8"
        return JSONResponse(
            {"detail": detail}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        said_json = is_json(request.headers.get("content-type", ""))
        return JSONResponse(
            {"detail": validation_message(error.errors(), said_json)}, status_code=422
        )

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        message = f"the server failed: {type(error).__name__}: {error}"
        return JSONResponse({"detail": one_line(message, MESSAGE_WIDTH)}, status_code=500)


def is_json(content_type: str) -> bool:
    """Whether a Content-Type says JSON (FastAPI reads a body as JSON only then)."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def validation_message(errors: Any, said_json: bool = True) -> str:
    """The first of pydantic's ``errors`` as one sentence, e.g. ``texts[2]: Input should
    be a valid string`` (``said_json``: whether the request said its body is JSON)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    kind, location = first.get("type"), [str(part) for part in first.get("loc", ())]
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return one_line(f"the body is not valid JSON ({reason})", MESSAGE_WIDTH)
    where = location[1:] if location[:1] == ["body"] else location
    example = '{"texts": ["a message"]}'
    if not where and not said_json:
        return f"send the body as JSON, such as {example}, with Content-Type: application/json"
    if not where and kind == "missing":
        return f"the body is empty: send a JSON object such as {example}"
    if not where:
        return f"the body must be a JSON object such as {example}"
    name = where[0] + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in where[1:])
    if kind == "missing":
        return f"{name} is missing"
    if kind == "extra_forbidden":
        return f"{name} is not a field of this request (its fields: texts, threshold, explain)"
    return one_line(f"{name}: {first.get('msg', 'invalid')}", MESSAGE_WIDTH)


class BodyTooLarge(Refused):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, whether
    its Content-Length says so (before it is read) or it turns out so as it arrives
    (chunked), so that no request makes the server hold more than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = BodyTooLarge(self.limit)
            await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # Raised inside the route's reading of the body, as an HTTPException:
                # FastAPI passes it on, and the handler above answers it.
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)
