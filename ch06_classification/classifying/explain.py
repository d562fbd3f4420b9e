"""Why a message got its label: how much each of its tokens moved the decision.

The method, in one sentence: **a token's weight is how much the probability of the
message's label falls when that token is left out of the message** (P(label | message) −
P(label | message without the token)). A positive weight pushed the message towards its
label, a negative one away from it; the weights of a message are measured on the tokens
the model reads (the first ``max_length``).

It needs one more classification per token: the message with its first token left out,
with its second left out, and so on. All of them go into one ``predict_proba_encoded``
call with the messages themselves (``predict_with_left_out``), where they are batched by
length like any other messages. Leaving out the only token of a one-token message leaves
nothing to read; that message's variant is the end-of-text token alone, which is what
GPT-2 reads where there is no text (and what the model pads with).

Occlusion, as this is called, needs nothing of the model but its answers, and its weights
mean what they say: the same message without that token is classified that much less
confidently. It does not see what two tokens do only together (leave out "FREE" alone and
"WIN" may still carry the message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tiktoken

    from ch06_classification.classifying.spam_classifier import SpamClassifier

STRONGEST = 5  # the tokens named as having moved the decision most


def left_out(ids: Sequence[int], pad_token_id: int) -> list[list[int]]:
    """``ids`` once per token, with that token left out (a lone token: the pad token)."""
    if len(ids) == 1:
        return [[pad_token_id]]
    return [[*ids[:i], *ids[i + 1 :]] for i in range(len(ids))]


def predict_with_left_out(
    classifier: SpamClassifier,
    encoded: Sequence[list[int]],
    explain: Sequence[bool],
    on_batch: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The class probabilities of ``encoded`` messages, [n, classes], and for each message
    to ``explain``, those of its ``left_out`` variants, [tokens, classes] (None for the
    others): all from one ``predict_proba_encoded`` call, batched by length together."""
    sequences = list(encoded)
    spans: list[tuple[int, int] | None] = []
    for ids, wanted in zip(encoded, explain, strict=True):
        if wanted:
            start = len(sequences)
            sequences += left_out(ids, classifier.info.pad_token_id)
            spans.append((start, len(sequences)))
        else:
            spans.append(None)
    probabilities = classifier.predict_proba_encoded(sequences, on_batch=on_batch)
    variants = [None if span is None else probabilities[span[0] : span[1]] for span in spans]
    return probabilities[: len(encoded)], variants


def token_spans(
    tokenizer: tiktoken.Encoding, ids: Sequence[int]
) -> tuple[str, list[tuple[int, int]]]:
    """The text ``ids`` stand for, and each token's span of characters in it.

    A character whose bytes are split over two tokens (an emoji is often) belongs to the
    token that completes it: the one before gets what it holds of whole characters, which
    may be nothing.
    """
    data = b""
    ends = []
    for piece in tokenizer.decode_tokens_bytes(list(ids)):
        data += piece
        # "ignore" drops the bytes of a character not yet complete.
        ends.append(len(data.decode("utf-8", errors="ignore")))
    starts = [0, *ends[:-1]]
    return data.decode("utf-8", errors="replace"), list(zip(starts, ends, strict=True))


def explanation(
    classifier: SpamClassifier,
    ids: Sequence[int],
    probabilities: np.ndarray,
    left_out_probabilities: np.ndarray,
    label: str,
) -> dict[str, Any]:
    """What moved a message (its token ``ids``, class ``probabilities``) to ``label``:
    ``{"label", "tokens": [{"text", "start", "end", "weight"}, ...], "strongest"}``.

    The tokens are in message order; ``start`` and ``end`` are character offsets in the
    text read (the message itself, or its start when it was cut). ``strongest`` lists the
    indices of the ``STRONGEST`` tokens of largest absolute weight, largest first (ties in
    message order), leaving out weights of 0.
    """
    column = classifier.labels.index(label)
    weights = probabilities[column] - left_out_probabilities[:, column]
    text, spans = token_spans(classifier.tokenizer, ids)
    tokens = [
        {"text": text[start:end], "start": start, "end": end, "weight": float(weight)}
        for (start, end), weight in zip(spans, weights, strict=True)
    ]
    order = sorted(range(len(tokens)), key=lambda i: (-abs(weights[i]), i))
    strongest = [i for i in order[:STRONGEST] if weights[i] != 0]
    return {"label": label, "tokens": tokens, "strongest": strongest}
