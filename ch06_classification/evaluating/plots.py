"""The evaluation's figures: ROC and precision–recall curves, and the confusion matrix;
and saving any figure as png and pdf without ever leaving a half-written file.

Each figure has a builder that returns a :class:`matplotlib.figure.Figure` (handy in a
notebook, and what the tests inspect) and a ``plot_*`` function that saves it. The
chapter's training curves are ``ch06_classification/plots.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ch06_classification.classifier import CLASS_NAMES
from ch06_classification.evaluating.metrics import (
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from ch06_classification.storage.datafiles import atomic_output
from ch06_classification.storage.printable import NAME_WIDTH, one_line

FORMATS = ("png", "pdf")


def plot_text(name: str) -> str:
    """A class name as a figure shows it: on one line with no control character
    (``printable.one_line``; matplotlib would warn of each missing glyph, raw, on stderr),
    and each "$" a dollar sign, not the start of a formula."""
    return one_line(name, NAME_WIDTH).replace("$", r"\$")


# --- Saving -----------------------------------------------------------------------------


def save_atomically(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (format from its suffix) without ever leaving a half-written
    file there (see :func:`~ch06_classification.storage.datafiles.atomic_output`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        fig.savefig(temporary, format=path.suffix.lstrip("."))
    return path


def save_png_and_pdf(fig: Figure, path: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (for screens) and ``<stem>.pdf`` (for print), next to
    each other; the suffix of ``path`` itself is ignored. Returns the two paths.
    """
    path = Path(path)
    return [save_atomically(fig, path.with_suffix(f".{fmt}")) for fmt in FORMATS]


# --- ROC and precision–recall curves ----------------------------------------------------


def _legend_label(name: str, metric: str, value: float) -> str:
    shown = "n/a" if math.isnan(value) else f"{value:.4f}"
    return f"{plot_text(name)} ({metric} = {shown})"


def axis_labels(class_names: Sequence[str]) -> tuple[str, str, str, str]:
    """The ROC curve's x and y labels, then the precision–recall curve's, in the words of
    the classes: the SMS's (spam caught, real messages flagged), another pair's names, or,
    for more than two classes (a curve per class against the rest), words for any class."""
    if len(class_names) > 2:
        return (
            "False positive rate (one vs rest)",
            "True positive rate (one vs rest)",
            "Recall (one vs rest)",
            "Precision (one vs rest)",
        )
    if tuple(class_names) == CLASS_NAMES:
        return (
            "False positive rate (real messages flagged)",
            "True positive rate (spam caught)",
            "Recall (spam caught)",
            "Precision (flagged that are spam)",
        )
    negative, positive = (plot_text(name) for name in class_names)
    return (
        f"False positive rate ({negative} taken for {positive})",
        f"True positive rate ({positive} found)",
        f"Recall ({positive} found)",
        f"Precision (of those taken for {positive})",
    )


def roc_and_pr_figure(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], class_names: Sequence[str] = CLASS_NAMES
) -> Figure:
    """Two panels, the ROC curve and the precision–recall curve, with one line per evaluated
    set; ``curves`` maps a set's name to its ``(y_true, probability)``: 1 and the
    probability of ``class_names[1]`` for two classes, or, for more (each class against the
    rest, :func:`~ch06_classification.evaluating.evaluation.one_vs_rest`), 1 and the
    probability of the curve's class. The axes are labelled in the classes' words.
    """
    if not curves:
        raise ValueError("curves is empty: there is no evaluated set to plot")
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    roc_axis, pr_axis = fig.subplots(1, 2)

    for name, (y_true, scores) in curves.items():
        fpr, tpr, _ = roc_curve(y_true, scores)
        roc_axis.plot(fpr, tpr, label=_legend_label(name, "AUC", roc_auc(y_true, scores)))

        precision, recall, _ = precision_recall_curve(y_true, scores)
        ap = average_precision(y_true, scores)
        # Drawn as steps (as scikit-learn's PrecisionRecallDisplay does), so the area under
        # the line is exactly the average precision: each gain in recall is weighted by the
        # precision reached with it.
        pr_axis.plot(recall, precision, drawstyle="steps-post", label=_legend_label(name, "AP", ap))

    roc_axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="chance (AUC = 0.5)")
    roc_x, roc_y, pr_x, pr_y = axis_labels(class_names)
    roc_axis.set(title="ROC curve", xlabel=roc_x, ylabel=roc_y)
    pr_axis.set(title="Precision–recall curve", xlabel=pr_x, ylabel=pr_y)
    # Good ROC curves hug the top left and good PR curves the top: legends go below them.
    roc_axis.legend(loc="lower right", fontsize="small")
    pr_axis.legend(loc="lower left", fontsize="small")
    for axis in (roc_axis, pr_axis):
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
    return fig


def plot_roc_and_pr(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    out_path: str | Path,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Save :func:`roc_and_pr_figure` as a PNG at ``out_path`` (suffix set to ``.png``) and a
    PDF next to it. Returns the PNG's path.
    """
    png, _pdf = save_png_and_pdf(roc_and_pr_figure(curves, class_names), out_path)
    return png


# --- Confusion matrix -------------------------------------------------------------------


def confusion_matrix_figure(
    matrix: ArrayLike, title: str = "Confusion matrix", class_names: Sequence[str] = CLASS_NAMES
) -> Figure:
    """A heat map of the N x N counts (rows true, columns predicted; for the two SMS
    classes ``[[TN, FP], [FN, TP]]``), with the count written in each cell.
    """
    counts = np.asarray(matrix)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(
            f"matrix must be {k}x{k} (rows true, columns predicted), got shape {counts.shape}"
        )
    side = 4 + 0.35 * max(0, k - 2)  # room for every class's name
    fig = Figure(figsize=(side, side * 0.875), layout="constrained")
    axis = fig.subplots()
    axis.imshow(counts, cmap="Blues", vmin=0)

    # White text on the dark cells and black on the light ones keeps every count readable.
    darkest = counts.max()
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if darkest and count > darkest / 2 else "black"
        axis.text(column, row, str(int(count)), ha="center", va="center", color=color)

    names = [plot_text(name) for name in class_names]
    axis.set_xticks(range(k), labels=names, rotation=45 if k > 4 else 0)
    axis.set_yticks(range(k), labels=names)
    axis.set(title=title, xlabel="Predicted label", ylabel="True label")
    return fig


def plot_confusion_matrix(
    matrix: ArrayLike,
    out_path: str | Path,
    title: str = "Confusion matrix",
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Save :func:`confusion_matrix_figure` as a PNG at ``out_path`` (suffix set to ``.png``)
    and a PDF next to it. Returns the PNG's path.
    """
    png, _pdf = save_png_and_pdf(confusion_matrix_figure(matrix, title, class_names), out_path)
    return png
