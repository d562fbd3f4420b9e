"""``gpt-spam serve``: a trained run as a web page and a JSON API, on this machine.

The run is found and loaded as ``classify`` finds and loads it (``--run-dir``, any number
of classes, ``--precision auto``); the app is ``ch06_classification/serve/``. It listens on
127.0.0.1 (this machine only) unless ``--host`` says otherwise, and says where once it is
ready. Ctrl-C stops it: requests in progress are answered first.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ch06_classification.cli.commands.classify import (
    describe_run,
    find_trained_run,
    load_classifier,
)
from ch06_classification.cli.options import (
    add_base_weights_option,
    add_classifying_options,
    add_device_option,
    add_precision_option,
    add_run_data_dir_option,
    add_run_dir_option,
    number_in_range,
    positive_int,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ch06_classification.storage.checkpoint import ClassifierInfo

PROG = "gpt-spam serve"
LOOPBACK = ("127.0.0.1", "::1", "localhost")

port_number = number_in_range(int, "a port number from 0 to 65535", lambda n: 0 <= n <= 65535)

DESCRIPTION = """\
Serve a trained run on this machine: a web page at / where you type or paste messages
(one per line) and see each label, its probability, the tokens that moved the decision
most, and the run's card (base weights, training settings, evaluation metrics and plots);
and a JSON API: POST /classify {"texts": [...]} answers what classify --json prints for
them; GET /model, GET /health; the OpenAPI description at /openapi.json.

Requests that arrive together are classified together, in batches by length. Each
request is bounded (body, texts, characters); when --queue-size requests are waiting, a
new one gets 503 with Retry-After. Ctrl-C stops the server.
"""

EXAMPLES = """\
examples:
  gpt-spam serve                                 (the latest run, at http://127.0.0.1:8000/)
  gpt-spam serve --run-dir runs/20261125-101500 --port 8080
  curl -s localhost:8000/classify -H 'Content-Type: application/json' \\
       -d '{"texts": ["WINNER! Claim your prize now", "Lunch at 1?"]}'
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.serve.limits import Limits

    defaults = Limits()
    parser = subparsers.add_parser(
        "serve",
        help="a web page and a JSON API for a trained run",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_dir_option(parser)
    add_run_data_dir_option(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 (or ::) "
        "every network it is on, to anyone who can reach it: there is no login "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8000,
        help="the port to listen on; 0: one the system chooses (default: %(default)s)",
    )
    add_classifying_options(parser)
    add_base_weights_option(parser)
    add_device_option(parser)
    add_precision_option(parser, classifying=True)
    limits = parser.add_argument_group("limits", "what one request may ask, how much may wait")
    limits.add_argument(
        "--max-texts",
        type=positive_int,
        default=defaults.max_texts,
        help="texts per request (default: %(default)s)",
    )
    limits.add_argument(
        "--max-chars",
        type=positive_int,
        default=defaults.max_chars,
        help="characters per text (default: %(default)s)",
    )
    limits.add_argument(
        "--max-explained",
        type=positive_int,
        default=defaults.max_explained,
        help="texts explained per request; explaining classifies each text once per token "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=defaults.max_body_bytes,
        help="bytes of a request's body (default: %(default)s)",
    )
    limits.add_argument(
        "--queue-size",
        type=positive_int,
        default=defaults.queue_size,
        help="requests waiting for the model; one more gets 503 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-batch",
        type=positive_int,
        default=defaults.max_batch,
        help="messages classified together: requests waiting are joined while fewer are "
        "taken; 1 classifies one request at a time (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.cli.prerequisites import require, serve_extra_problem
    from ch06_classification.cli.running import package_version
    from ch06_classification.serve.server import listen, serve_forever, url_of

    require(serve_extra_problem())
    sock = listen(args.host, args.port)  # first: a port already taken is said at once
    try:
        checkpoint, info, threshold, chosen = find_trained_run(args)
        app = build_app(args, checkpoint, info, threshold, package_version())
        named = checkpoint if chosen is None else chosen.describe()
        say(f"serving {named} ({describe_run(info)}) at {url_of(sock)}")
        if args.host not in LOOPBACK:
            say(
                f"warning: --host {args.host} makes it reachable from other machines, and "
                "anyone who reaches it may use it (there is no login)"
            )
        say("Ctrl-C stops it")
        # uvicorn shuts down on Ctrl-C, then passes the signal on: it has been dealt with.
        with suppress(KeyboardInterrupt):
            serve_forever(app, sock)
    finally:
        sock.close()
    say("stopped")
    return 0


def build_app(
    args: argparse.Namespace,
    checkpoint: Path,
    info: ClassifierInfo,
    threshold: float | None,
    version: str,
) -> FastAPI:
    """The app for the run: its classifier loaded, in the precision chosen for it."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.serve.app import create_app
    from ch06_classification.serve.card import run_card
    from ch06_classification.serve.limits import Limits
    from ch06_classification.speed.precision import MIN_TOKENS_FOR_BF16, set_classifier_precision

    classifier = load_classifier(args, checkpoint)
    run_dir = checkpoint.parent if checkpoint.is_file() else checkpoint
    # A server classifies many messages over its life: enough for bfloat16 to pay off.
    choice = set_classifier_precision(
        classifier, args.precision, MIN_TOKENS_FOR_BF16, run_dir, log=say
    )
    say(f"precision: {choice.describe()}")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        max_explained=args.max_explained,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
    )
    card = run_card(run_dir, info, threshold, choice.describe(), asdict(limits))
    return create_app(classifier, card, threshold, run_dir, limits, version)


def say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)
