"""A trained classifier for applications: the book's ``classify_review``, by the thousand.

``SpamClassifier`` is what an application would use (the book's one-message function is
``ch06_classification/inference.py``): load a checkpoint once (``from_pretrained``), then
``predict`` / ``predict_proba`` (scikit-learn's names and shapes) or call it like a Hugging
Face pipeline. Many messages are classified in batches of similar length, so that little
is spent on padding, with gradients off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import torch

from ch06_classification.finetuning.model import needs_fixed_padding
from ch06_classification.speed.batching import batches_by_length, pad_right
from ch06_classification.speed.devices import DTYPES, pick_device, reuse_freed_memory
from ch06_classification.speed.fast_path import classify_logits
from ch06_classification.storage.checkpoint import (
    ClassifierInfo,
    load_classifier,
    save_checkpoint_folder,
)
from ch06_classification.storage.printable import listed
from gpt.errors import UserFacingError
from gpt.fast_attention import use_fast_attention
from gpt.lora import merge_lora
from gpt.model import GPTModel
from gpt.tokenizer import encode_message, get_tokenizer


class EmptyMessageError(UserFacingError, ValueError):
    """A message with no text: there is no token to classify."""


def encode_for_classifier(
    text: str, tokenizer: tiktoken.Encoding, max_length: int, context_length: int
) -> list[int]:
    """Token ids of ``text``, cut to what the classifier reads (the first ``max_length``
    tokens, and never more than the model's context)."""
    if not text.strip():
        raise EmptyMessageError("the message is empty")
    return encode_message(tokenizer, text)[: min(max_length, context_length)]


class SpamClassifier:
    """A trained classifier with the faces scikit-learn and Hugging Face users expect.

    >>> classifier = SpamClassifier.from_pretrained("runs/20261125-101500")  # doctest: +SKIP
    >>> classifier.predict(["You are a winner! Claim now", "Lunch at 1?"])  # doctest: +SKIP
    array(['spam', 'ham'], dtype='<U4')
    >>> classifier("Lunch at 1?")  # doctest: +SKIP
    [{'label': 'ham', 'score': 0.98...}]

    ``classes_`` are the labels in column order of ``predict_proba``, as in scikit-learn.
    """

    def __init__(
        self,
        model: GPTModel,
        info: ClassifierInfo,
        device: torch.device | str = "cpu",
        batch_size: int = 32,
        precision: str = "fp32",
    ) -> None:
        self.model = model.to(device).eval()
        # Each batch allocates activations of the same few sizes: let the allocator keep
        # freed blocks warm for the next batch (see devices.py; a process-wide setting).
        reuse_freed_memory()
        self.info = info
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.precision = "fp32"
        self._float32_weights: dict[str, torch.Tensor] | None = None
        self.set_precision(precision)
        self.tokenizer = get_tokenizer()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "fp32",
        weights_dir: str | Path | None = None,
        verify: bool = False,
    ) -> SpamClassifier:
        """Load a folder written by ``save_pretrained`` or by training (a run folder), or its
        ``model.safetensors``. A lean checkpoint's base weights are found as training found
        them: ``weights_dir`` (or ``GPT2_WEIGHTS_DIR``) first; ``verify=True`` hashes them
        again (see ``load_classifier``)."""
        target = pick_device(device)
        model, info = load_classifier(path, device=target, weights_dir=weights_dir, verify=verify)
        # LoRA adapters are added into the weights they adapt once: the same function, with
        # no extra matrix products per message.
        return cls(merge_lora(model), info, target, batch_size, precision)

    from_checkpoint = from_pretrained  # the name this project used first

    def set_precision(self, precision: str) -> None:
        """Compute in ``"fp32"`` or ``"bf16"`` from now on (see ``precision.py``).

        bfloat16 casts the weights once, so each batch reads half the bytes and converts
        nothing; the float32 weights are kept, so that going back is exact.
        """
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {tuple(DTYPES)}, not {precision!r}")
        if precision == self.precision:
            return
        if precision == "bf16":
            self._float32_weights = self.model.state_dict()  # the tensors, not copies
            self.model.to(DTYPES["bf16"])
            use_fast_attention(self.model)  # faster on a CPU in bfloat16; the same elsewhere
        else:
            self.model.load_state_dict(self._float32_weights, assign=True)
            self._float32_weights = None
        self.precision = precision

    def save_pretrained(self, folder: str | Path, full: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with ``id2label`` / ``label2id``)
        into ``folder``, for ``from_pretrained``.

        Lean like a run folder (the trained tensors plus a record of the base weights) when
        the model was fine-tuned from a recorded base; ``full=True`` stores every tensor, for
        a machine without the base weights.
        """
        stored = "trained" if not full and self.info.base is not None else "full"
        if self.info.trainable_layers == "all":
            stored = "full"  # nothing of the base is left to share
        precision = self.precision
        self.set_precision("fp32")  # the weights as trained, not rounded to bfloat16
        try:
            return save_checkpoint_folder(self.model, replace(self.info, stored=stored), folder)
        finally:
            self.set_precision(precision)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def classes_(self) -> np.ndarray:
        """The class labels, in the column order of ``predict_proba`` (scikit-learn's name)."""
        return np.array(self.labels)

    def encode(self, text: str) -> list[int]:
        """The token ids the model reads for ``text`` (raises ``EmptyMessageError``)."""
        return encode_for_classifier(
            text, self.tokenizer, self.info.max_length, self.model.cfg.context_length
        )

    @property
    def max_tokens(self) -> int:
        """How many tokens of a message the model reads: longer ones are cut to this."""
        return min(self.info.max_length, self.model.cfg.context_length)

    def predict_proba(self, texts: str | Sequence[str], progress: bool = False) -> np.ndarray:
        """Class probabilities, shape [n_messages, n_classes] (also for one message, as in
        scikit-learn); each row sums to 1. For the SMS classifier column 1 is the spam
        probability."""
        encoded = [self.encode(text) for text in ([texts] if isinstance(texts, str) else texts)]
        return self.predict_proba_encoded(encoded, progress)

    def predict(
        self, texts: str | Sequence[str], threshold: float | None = None
    ) -> str | np.ndarray:
        """The label of each message: its most probable class, or, for two classes and a
        ``threshold``, class 1 ("spam") when its probability is at least ``threshold``.

        A label for one string; an array of labels for a list, as in scikit-learn.
        """
        labels = self.labels_of(self.predict_proba(texts), threshold)
        return labels[0] if isinstance(texts, str) else np.array(labels, dtype=self.classes_.dtype)

    def labels_of(self, probabilities: np.ndarray, threshold: float | None = None) -> list[str]:
        """The decision rule: with two classes, class 1 when its probability is at least
        ``threshold`` (default 0.5); with more, the most probable class (a threshold is a
        two-class notion: ``ValueError``)."""
        if threshold is not None and len(self.labels) != 2:
            raise ValueError(two_class_only(self.labels))
        if len(self.labels) == 2:
            return self.labels_at(probabilities[:, 1], 0.5 if threshold is None else threshold)
        return [self.labels[i] for i in np.asarray(probabilities).argmax(axis=1)]

    def labels_at(self, spam_probabilities: Sequence[float], threshold: float) -> list[str]:
        """The two-class rule: class 1 (spam) when its probability is at least ``threshold``."""
        return [self.labels[int(p >= threshold)] for p in spam_probabilities]

    def __call__(
        self, texts: str | Sequence[str], threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Like a Hugging Face text-classification pipeline: one ``{"label", "score"}`` per
        message, the score being the probability of that label."""
        probabilities = self.predict_proba(texts)
        labels = self.labels_of(probabilities, threshold)
        return [
            {"label": label, "score": float(row[self.labels.index(label)])}
            for label, row in zip(labels, probabilities, strict=True)
        ]

    @torch.inference_mode()
    def predict_proba_encoded(
        self,
        encoded: Sequence[list[int]],
        progress: bool = False,
        on_batch: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """``predict_proba`` for messages already encoded with ``encode``.

        Messages are grouped by length, so each batch is padded only a little, and the
        results are put back in the input order. ``progress`` shows a bar of the batches;
        ``on_batch`` is told how many messages each batch classified (e.g. a caller's own
        bar, over many calls).
        """
        if any(len(ids) == 0 for ids in encoded):
            # With no real token, the "flexible" position would be -1: there is nothing to read.
            raise EmptyMessageError("a message has no tokens")
        probabilities = np.zeros((len(encoded), len(self.labels)), dtype=np.float64)
        info = self.info
        # E.g. the book's `last` token needs its padding (see needs_fixed_padding).
        fixed = needs_fixed_padding(
            info.token_position, self.model.cfg.causal, info.average_embeddings
        )
        batches = batches_by_length([len(ids) for ids in encoded], batch_size=self.batch_size)
        if progress:
            from tqdm import tqdm  # imported only when shown: a quick classify needs none

            batches = tqdm(batches, desc="Classifying", unit="batch", leave=False)
        for chunk in batches:
            ids = pad_right(
                [encoded[i] for i in chunk],
                self.info.pad_token_id,
                width=self.max_tokens if fixed else None,
            )
            lengths = torch.tensor([len(encoded[i]) for i in chunk])
            logits = classify_logits(
                self.model,
                ids.to(self.device),
                lengths.to(self.device),
                info.token_position,
                info.average_embeddings,
            )
            probabilities[chunk] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if on_batch is not None:
                on_batch(len(chunk))
        return probabilities


def two_class_only(labels: Sequence[str]) -> str:
    """Why a threshold cannot apply to a classifier of ``labels``."""
    return (
        f"a threshold is for two classes, and this classifier has {len(labels)} "
        f"({listed(labels)}): each message gets its most probable class"
    )


def resolve_threshold(class_names: Sequence[str], threshold: float | None) -> float | None:
    """The threshold a classifier of ``class_names`` decides at: the one given, or 0.5, for
    two classes; none for more (giving one is an error: the most probable class wins)."""
    if len(class_names) == 2:
        return 0.5 if threshold is None else threshold
    if threshold is not None:
        raise UserFacingError(f"--threshold {threshold:g}: {two_class_only(class_names)}")
    return None


__all__ = ["EmptyMessageError", "SpamClassifier"]
