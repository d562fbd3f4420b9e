"""What one request to ``gpt-spam serve`` may ask, and how much may wait: the defaults of
its limits (a module of its own, so that the command line reads them without loading the
web framework)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The bounds of a server: a request beyond them is refused with 413, one that finds
    ``queue_size`` requests waiting with 503."""

    max_body_bytes: int = 1_000_000
    max_texts: int = 256  # texts per request
    max_chars: int = 10_000  # characters per text
    # Texts explained per request: explaining costs a classification per token of each.
    max_explained: int = 32
    queue_size: int = 64  # requests waiting for the model
    max_batch: int = 256  # messages the worker takes at once (1: a request at a time)
