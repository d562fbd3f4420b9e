"""Evaluation metrics for the spam classifier, independent of any model.

Everything here takes plain arrays: the true labels (0 = "ham", 1 = "spam") and the
model's spam probabilities. Spam is the *positive* class, so a "true positive" is a spam
message caught, and a "false positive" is a real message wrongly sent to the spam folder.

Accuracy alone hides what matters for spam: about 13 % of the SMS Spam Collection is spam,
so a model that never says "spam" is already 87 % accurate. Besides accuracy we report:

* precision: of the messages flagged as spam, how many were spam;
* recall: of the spam messages, how many were flagged;
* false positive rate: of the real messages, how many were wrongly flagged;
* ROC AUC and average precision, which judge the *ranking* of the probabilities over all
  thresholds at once, so they do not depend on the 0.5 cut-off.

The counting at one threshold and the table are ours; the curves over all thresholds and
the areas under them are scikit-learn's (``sklearn.metrics``).

With more than two classes there is no positive class and no threshold: each message gets
its most probable class, and :func:`multiclass_metrics` reports precision, recall and F1
of every class, their macro averages (each class counts the same) and micro averages
(each message counts the same: for one label per message, all three equal the accuracy),
the N x N confusion matrix and one-vs-rest ROC AUC (each class against all the others).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sklearn.metrics
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning

from ch06_classification.storage.printable import NAME_WIDTH, one_line
from gpt.errors import UserFacingError

# --- Input checks -----------------------------------------------------------------------


def _as_labels(y: ArrayLike, what: str = "y_true") -> np.ndarray:
    """``y`` as a 1-D integer array of 0s and 1s; anything else is a caller's bug."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{what} is empty: there is nothing to evaluate")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{what} must contain only 0 (ham) and 1 (spam)")
    return labels.astype(np.int64)


class NonFiniteScoresError(UserFacingError, ValueError):
    """Scores that are NaN or infinite: not a caller's bug but a broken model, whose
    weights diverged in training, say. One line at the command line, like any
    ``UserFacingError``; still a ``ValueError`` to code that checks its inputs."""


def _as_scores(scores: ArrayLike, n: int, what: str = "scores") -> np.ndarray:
    """``scores`` as a 1-D float array of ``n`` finite numbers."""
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) like the labels, got {values.shape}")
    _check_finite(values, what)
    return values


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise NonFiniteScoresError(
            f"{what} must be finite numbers, but {bad:,} of {values.size:,} are NaN or "
            "infinite: the model that gave them does not compute finite numbers (its weights "
            "may have diverged in training: retrain it with a smaller learning rate)"
        )


def _as_probabilities(probabilities: ArrayLike, n: int) -> np.ndarray:
    values = _as_scores(probabilities, n, what="spam_probability")
    if ((values < 0.0) | (values > 1.0)).any():
        raise ValueError("spam_probability must lie in [0, 1]")
    return values


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (see binary_metrics)."""
    return float(numerator / denominator) if denominator else 0.0


# --- Counting at one threshold ----------------------------------------------------------


def predict_spam(spam_probability: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Hard labels: 1 (spam) where the probability is at least ``threshold``, else 0."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return (np.asarray(spam_probability, dtype=np.float64) >= threshold).astype(np.int64)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """The 2x2 count matrix ``[[TN, FP], [FN, TP]]``: rows are the true class, columns the
    predicted one, in the order (ham, spam).
    """
    truth = _as_labels(y_true)
    predicted = _as_labels(y_pred, what="y_pred")
    if predicted.shape != truth.shape:
        raise ValueError(f"y_pred has {predicted.size} labels but y_true has {truth.size}")
    # Each (true, predicted) pair becomes one of four cells: 2 * true + predicted = 0..3.
    counts = np.bincount(2 * truth + predicted, minlength=4)
    return counts.reshape(2, 2)


# --- Curves over all thresholds: scikit-learn's ------------------------------------------
#
# The curves and the areas under them come from ``sklearn.metrics``, which readers know and
# which handles ties correctly (messages with equal scores are on the same side of every
# threshold). What is added here: the inputs are checked as everywhere in this module, and a
# value that is undefined because a class is absent is NaN, quietly, instead of a warning
# next to a number (sklearn's 0.0 average precision without spam would read as measured).


def _checked(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_labels(y_true)
    return labels, _as_scores(scores, labels.size)


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The receiver operating characteristic: ``(fpr, tpr, thresholds)``, as
    ``sklearn.metrics.roc_curve`` with every threshold kept.

    Point ``i`` is the false and true positive rate when flagging ``scores >= thresholds[i]``.
    The thresholds are the distinct scores in decreasing order, preceded by ``+inf`` so the
    curve starts at (0, 0), where nothing is flagged; it ends at (1, 1), where everything is.
    A rate whose class is absent from ``y_true`` is undefined: NaN.
    """
    labels, values = _checked(y_true, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # it returns NaN for them
        fpr, tpr, thresholds = sklearn.metrics.roc_curve(labels, values, drop_intermediate=False)
    return fpr, tpr, thresholds


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``): the chance that a random
    spam message scores higher than a random real message, counting ties as half.

    1.0 is a perfect ranking, 0.5 is chance, 0.0 is perfectly reversed. With only one class
    present there are no (spam, ham) pairs to compare: NaN.
    """
    labels, values = _checked(y_true, scores)
    if not _both_classes(labels):
        return math.nan
    return float(sklearn.metrics.roc_auc_score(labels, values))


def precision_recall_curve(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` when flagging ``scores >= thresholds[i]``, as
    ``sklearn.metrics.precision_recall_curve`` gives them.

    The thresholds are the distinct scores in *increasing* order, so recall falls from left
    to right; the last point, (precision 1, recall 0), has no threshold (nothing flagged).
    Recall is NaN everywhere when ``y_true`` holds no spam (sklearn would say 1).
    """
    labels, values = _checked(y_true, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No positive class found": handled below
        precision, recall, thresholds = sklearn.metrics.precision_recall_curve(
            labels, values, drop_intermediate=False
        )
    if labels.sum() == 0:
        recall = np.full(recall.shape, np.nan)
    return precision, recall, thresholds


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Precision averaged over recall (``sklearn.metrics.average_precision_score``):
    ``sum_n (R_n - R_{n-1}) * P_n`` over the thresholds.

    A step-wise area under the precision–recall curve (no interpolation, which would be
    optimistic). 1.0 means every spam message scores above every real one. Undefined (NaN)
    when there is no spam in ``y_true``.
    """
    labels, values = _checked(y_true, scores)
    if labels.sum() == 0:
        return math.nan
    return float(sklearn.metrics.average_precision_score(labels, values))


# --- Everything for one evaluated set ---------------------------------------------------


@dataclass(frozen=True)
class BinaryMetrics:
    """The metrics of one evaluated set (see :func:`binary_metrics`)."""

    n: int
    n_spam: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    false_positive_rate: float
    specificity: float
    roc_auc: float
    average_precision: float
    confusion_matrix: list[list[int]]
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the confusion matrix as nested lists)."""
        return asdict(self)


def binary_metrics(
    y_true: ArrayLike, spam_probability: ArrayLike, threshold: float = 0.5
) -> BinaryMetrics:
    """Evaluate spam probabilities against the true labels.

    A message counts as predicted spam when its probability is ``>= threshold``. The
    threshold-free metrics (``roc_auc``, ``average_precision``) use the probabilities
    themselves.

    Zero divisions: a rate whose denominator is zero is reported as 0.0, not NaN. So
    precision is 0.0 when nothing is predicted spam, recall is 0.0 when the set holds no
    spam, F1 is 0.0 when there are no true positives, and the false positive rate and
    specificity are 0.0 when the set holds no real messages. ``roc_auc`` and
    ``average_precision`` are NaN when they are undefined (see their functions): a number
    there would read as a real, measured ranking quality.
    """
    labels = _as_labels(y_true)
    probabilities = _as_probabilities(spam_probability, labels.size)
    (tn, fp), (fn, tp) = confusion_matrix(labels, predict_spam(probabilities, threshold))
    return BinaryMetrics(
        n=int(labels.size),
        n_spam=int(tp + fn),
        accuracy=_ratio(tp + tn, labels.size),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        # The harmonic mean of precision and recall, written with counts so that it needs
        # no special case when one of them is 0.
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        false_positive_rate=_ratio(fp, fp + tn),
        specificity=_ratio(tn, fp + tn),
        roc_auc=roc_auc(labels, probabilities),
        average_precision=average_precision(labels, probabilities),
        confusion_matrix=[[int(tn), int(fp)], [int(fn), int(tp)]],
        threshold=float(threshold),
    )


# --- More than two classes ---------------------------------------------------------------


@dataclass(frozen=True)
class MulticlassMetrics:
    """The metrics of one evaluated set of an N-class classifier (see
    :func:`multiclass_metrics`). ``precision``, ``recall``, ``f1`` and ``roc_auc`` are
    macro averages; ``per_class`` holds each class's own, and its ``support`` (rows)."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    class_names: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def multiclass_metrics(
    y_true: ArrayLike, probabilities: ArrayLike, class_names: Sequence[str]
) -> MulticlassMetrics:
    """Evaluate ``probabilities`` ([n, N], rows summing to 1) against class ids ``y_true``.

    Each message is predicted its most probable class. A class's precision, recall or F1
    with a zero denominator is 0.0, as in :func:`binary_metrics`; its one-vs-rest ROC AUC
    is NaN when the set holds none of it (or only it), and the macro ROC AUC averages the
    classes where it is defined (NaN if none).
    """
    k = len(class_names)
    truth = np.asarray(y_true)
    if truth.ndim != 1 or truth.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {truth.shape}")
    if not np.isin(truth, np.arange(k)).all():
        raise ValueError(f"y_true must hold class ids 0 to {k - 1}")
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.shape != (truth.size, k):
        raise ValueError(f"probabilities must have shape ({truth.size}, {k}), got {scores.shape}")
    _check_finite(scores, "probabilities")
    predicted = scores.argmax(axis=1)
    ids = list(range(k))
    precision, recall, f1, support = sklearn.metrics.precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0.0
    )
    micro = sklearn.metrics.precision_recall_fscore_support(
        truth, predicted, labels=ids, average="micro", zero_division=0.0
    )
    # One vs rest: class c against every other class, scored by its own probability.
    auc = [roc_auc((truth == c).astype(np.int64), scores[:, c]) for c in ids]
    defined = [value for value in auc if not math.isnan(value)]
    per_class = {
        name: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "roc_auc": auc[c],
            "support": int(support[c]),
        }
        for c, name in enumerate(class_names)
    }
    matrix = sklearn.metrics.confusion_matrix(truth, predicted, labels=ids)
    return MulticlassMetrics(
        n=int(truth.size),
        accuracy=float((predicted == truth).mean()),
        precision=float(np.mean(precision)),
        recall=float(np.mean(recall)),
        f1=float(np.mean(f1)),
        roc_auc=float(np.mean(defined)) if defined else math.nan,
        micro_precision=float(micro[0]),
        micro_recall=float(micro[1]),
        micro_f1=float(micro[2]),
        per_class=per_class,
        confusion_matrix=matrix.astype(int).tolist(),
        class_names=list(class_names),
    )


def classification_metrics(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    class_names: Sequence[str],
    threshold: float | None = None,
) -> BinaryMetrics | MulticlassMetrics:
    """:func:`binary_metrics` of class 1's probability for two classes (``threshold``
    default 0.5), :func:`multiclass_metrics` for more."""
    scores = np.asarray(probabilities)
    if len(class_names) == 2:
        return binary_metrics(y_true, scores[:, 1], 0.5 if threshold is None else threshold)
    return multiclass_metrics(y_true, scores, class_names)


# --- A table to read in the terminal ----------------------------------------------------


def _count(value: Any) -> str:
    return str(int(value))


def _percent(value: Any) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}%"


def _four_decimals(value: Any) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _confusion_cells(matrix: Any) -> str:
    (tn, fp), (fn, tp) = matrix
    return f"{int(tn)}/{int(fp)}/{int(fn)}/{int(tp)}"


def _threshold(value: Any) -> str:
    return f"{value:g}"


# (key in the metrics, row label, how to format the value)
TABLE_ROWS: Sequence[tuple[str, str, Callable[[Any], str]]] = (
    ("n", "messages", _count),
    ("n_spam", "spam messages", _count),
    ("accuracy", "accuracy", _percent),
    ("precision", "precision", _percent),
    ("recall", "recall", _percent),
    ("f1", "F1", _percent),
    ("false_positive_rate", "false positive rate", _percent),
    ("specificity", "specificity", _percent),
    ("roc_auc", "ROC AUC", _four_decimals),
    ("average_precision", "average precision", _four_decimals),
    ("confusion_matrix", "TN/FP/FN/TP", _confusion_cells),
    ("threshold", "threshold", _threshold),
)
MISSING = "-"


# The rows of an N-class table, then each class's own (only its F1 past PER_CLASS_IN_FULL).
MULTICLASS_ROWS: Sequence[tuple[str, str, Callable[[Any], str]]] = (
    ("n", "messages", _count),
    ("accuracy", "accuracy", _percent),
    ("precision", "macro precision", _percent),
    ("recall", "macro recall", _percent),
    ("f1", "macro F1", _percent),
    ("micro_f1", "micro F1", _percent),
    ("roc_auc", "macro ROC AUC (1 vs rest)", _four_decimals),
)
PER_CLASS_ROWS = (
    ("f1", "F1", _percent),
    ("precision", "precision", _percent),
    ("recall", "recall", _percent),
    ("roc_auc", "ROC AUC", _four_decimals),
)
PER_CLASS_IN_FULL = 10


def format_metrics_table(
    results: Mapping[str, Mapping[str, Any] | BinaryMetrics | MulticlassMetrics],
    class_names: Sequence[str] | None = None,
) -> str:
    """A fixed-width table with one column per evaluated set and one row per metric.

    ``results`` maps a set's name ("train", "test", "test (unseen)", ...) to its metrics,
    a :class:`BinaryMetrics` or :class:`MulticlassMetrics` or its ``to_dict()`` (e.g. read
    back from JSON). Columns keep the mapping's order, so sets to compare can sit side by
    side. Counts are integers, rates percentages with two decimals, ROC AUC and average
    precision four decimals; an undefined (NaN) value shows as "n/a" and a missing (or JSON
    null) one as "-". ``class_names`` name the positive class's row of a two-class table
    (default: spam).
    """
    if not results:
        raise ValueError("results is empty: there is no evaluated set to show")
    columns = {
        name: metrics if isinstance(metrics, Mapping) else metrics.to_dict()
        for name, metrics in results.items()
    }

    def cell(m: Mapping[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
        return MISSING if m.get(key) is None else fmt(m[key])

    if any("per_class" in m for m in columns.values()):
        names = next(m["class_names"] for m in columns.values() if "class_names" in m)
        rows = [
            [label, *(cell(m, key, fmt) for m in columns.values())]
            for key, label, fmt in MULTICLASS_ROWS
        ]
        shown = PER_CLASS_ROWS if len(names) <= PER_CLASS_IN_FULL else PER_CLASS_ROWS[:1]
        for name in names:
            for key, what, fmt in shown:
                label = f"{one_line(name, NAME_WIDTH)}: {what}"
                rows.append(
                    [
                        label,
                        *(cell(m["per_class"].get(name, {}), key, fmt) for m in columns.values()),
                    ]
                )
    else:
        positive = one_line(class_names[1], NAME_WIDTH) if class_names else "spam"
        rows = [
            [f"{positive} messages" if key == "n_spam" else label,
             *(cell(m, key, fmt) for m in columns.values())]
            for key, label, fmt in TABLE_ROWS
        ]  # fmt: skip
    header = ["metric", *columns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Row labels read best left-aligned, numbers right-aligned under their column name.
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def format_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The N x N counts as text: a row per true class, a column per predicted class."""
    names = [one_line(str(name), NAME_WIDTH) for name in class_names]
    cells = [[str(int(count)) for count in row] for row in matrix]
    first = max(len("true \\ predicted"), *map(len, names))
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(names)]
    lines = [
        "  ".join(
            [
                "true \\ predicted".ljust(first),
                *(n.rjust(w) for n, w in zip(names, widths, strict=True)),
            ]
        )
    ]
    for name, row in zip(names, cells, strict=True):
        lines.append(
            "  ".join([name.ljust(first), *(c.rjust(w) for c, w in zip(row, widths, strict=True))])
        )
    return "\n".join(lines)
