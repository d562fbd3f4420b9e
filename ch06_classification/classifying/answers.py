"""A classifier's answer for each message, in the one shape that ``gpt-spam classify --json``
prints and ``gpt-spam serve`` returns.

For a two-class run (the SMS classifier): ``{"text", "label", "spam_probability"}``, the
probability being class 1's whatever the label (its name is class 1's: ``spam``); for more
classes, ``{"text", "label", "probability"}``, the label's own. With an explanation
(``explain.py``), ``"explanation"`` is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ch06_classification.classifying.explain import explanation

if TYPE_CHECKING:
    from ch06_classification.classifying.spam_classifier import SpamClassifier


def probability_key(class_names: Sequence[str]) -> str:
    """``spam_probability`` for the SMS classifier (class 1's name), ``probability`` for
    a classifier of more than two classes."""
    return f"{class_names[1]}_probability" if len(class_names) == 2 else "probability"


def shown_probability(row: np.ndarray, label: str, class_names: Sequence[str]) -> float:
    """The probability an answer gives: class 1's for two classes, the label's for more."""
    column = 1 if len(class_names) == 2 else class_names.index(label)
    return float(row[column])


def answers(
    classifier: SpamClassifier,
    texts: Sequence[str],
    probabilities: np.ndarray,
    threshold: float | None,
    encoded: Sequence[Sequence[int]] | None = None,
    left_out: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, Any]]:
    """One answer per message, in order, from its class ``probabilities`` and the decision
    rule (``SpamClassifier.labels_of`` at ``threshold``). Where ``left_out`` holds a
    message's left-out probabilities (``explain.predict_with_left_out``), its answer has
    an ``explanation`` of its token ids in ``encoded``."""
    class_names = classifier.labels
    key = probability_key(class_names)
    labels = classifier.labels_of(probabilities, threshold)
    results = []
    for i, (text, label, row) in enumerate(zip(texts, labels, probabilities, strict=True)):
        answer: dict[str, Any] = {
            "text": text,
            "label": label,
            key: shown_probability(row, label, class_names),
        }
        if left_out is not None and left_out[i] is not None:
            answer["explanation"] = explanation(classifier, encoded[i], row, left_out[i], label)
        results.append(answer)
    return results
