"""Figures of the chapter: training curves, ROC and precision–recall curves, and the
confusion matrix.

Each figure has a builder that returns a :class:`matplotlib.figure.Figure` (handy in a
notebook, and what the tests inspect) and a ``plot_*`` function that saves it. Figures are
made with ``Figure`` directly rather than ``pyplot``: no GUI backend, no global state and no
figures left open, so this works the same on a headless server, in CI and in a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from ch06_classification.datafiles import CLASS_NAMES, atomic_output
from ch06_classification.metrics import (
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from ch06_classification.printable import NAME_WIDTH, one_line

FORMATS = ("png", "pdf")


def plot_text(name: str) -> str:
    """A class name as a figure shows it: on one line with no control character
    (``printable.one_line``; matplotlib would warn of each missing glyph, raw, on stderr),
    and each "$" a dollar sign, not the start of a formula."""
    return one_line(name, NAME_WIDTH).replace("$", r"\$")


# --- Saving -----------------------------------------------------------------------------


def save_atomically(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (format from its suffix) without ever leaving a half-written
    file there (see :func:`~ch06_classification.datafiles.atomic_output`)."""
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


# --- Training curves (section 6.7) ------------------------------------------------------


def values_figure(
    epochs_seen: ArrayLike,
    examples_seen: ArrayLike,
    train_values: ArrayLike,
    val_values: ArrayLike,
    label: str = "loss",
) -> Figure:
    """Training and validation ``label`` against epochs (bottom axis) and examples seen (top
    axis), as in the book's ``plot_values``.
    """
    epochs, examples, train, val = (
        np.asarray(values, dtype=np.float64)
        for values in (epochs_seen, examples_seen, train_values, val_values)
    )
    if not epochs.shape == examples.shape == train.shape == val.shape:
        raise ValueError(
            "epochs_seen, examples_seen, train_values and val_values must have the same "
            f"length, got {epochs.shape}, {examples.shape}, {train.shape} and {val.shape}"
        )
    fig = Figure(figsize=(5, 3.3), layout="constrained")
    epochs_axis = fig.subplots()
    # Markers show every measured point: one epoch gives one point, which a line alone
    # would not draw at all.
    epochs_axis.plot(epochs, train, marker="o", markersize=3, label=f"Training {label}")
    epochs_axis.plot(
        epochs, val, marker="s", markersize=3, linestyle="-.", label=f"Validation {label}"
    )
    fig.suptitle(f"Training and validation {label}")  # above the top axis's label
    epochs_axis.set_xlabel("Epochs")
    epochs_axis.set_ylabel(label.capitalize())
    epochs_axis.legend()

    # A second x-axis on top, sharing the y-axis. The book's trick: plot the same values
    # invisibly against examples seen, so both axes autoscale over the same points with the
    # same margins and their ticks line up (examples grow linearly with epochs).
    examples_axis = epochs_axis.twiny()
    examples_axis.plot(examples, train, alpha=0)
    examples_axis.set_xlabel("Examples seen")
    return fig


def plot_values(
    epochs_seen: ArrayLike,
    examples_seen: ArrayLike,
    train_values: ArrayLike,
    val_values: ArrayLike,
    label: str = "loss",
    out_dir: str | Path = ".",
    name: str | None = None,
) -> list[Path]:
    """Save the training curve of ``label`` (see :func:`values_figure`) as
    ``out_dir/<name>.pdf`` and ``out_dir/<name>.png``. Returns the two paths (png first).

    ``name`` defaults to the book's file name, ``<label>-plot`` (``loss-plot.pdf``), so the
    book's call writes what the book writes; the png beside it is for notebooks and READMEs.
    """
    fig = values_figure(epochs_seen, examples_seen, train_values, val_values, label)
    return save_png_and_pdf(fig, Path(out_dir) / (name or f"{label}-plot"))


# --- ROC and precision–recall curves ----------------------------------------------------


def _legend_label(name: str, metric: str, value: float) -> str:
    shown = "n/a" if math.isnan(value) else f"{value:.4f}"
    return f"{plot_text(name)} ({metric} = {shown})"


def roc_and_pr_figure(curves: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> Figure:
    """Two panels, the ROC curve and the precision–recall curve, with one line per evaluated
    set; ``curves`` maps a set's name to its ``(y_true, spam_probability)``.
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
    roc_axis.set(
        title="ROC curve",
        xlabel="False positive rate (real messages flagged)",
        ylabel="True positive rate (spam caught)",
    )
    pr_axis.set(
        title="Precision–recall curve",
        xlabel="Recall (spam caught)",
        ylabel="Precision (flagged that are spam)",
    )
    # Good ROC curves hug the top left and good PR curves the top: legends go below them.
    roc_axis.legend(loc="lower right", fontsize="small")
    pr_axis.legend(loc="lower left", fontsize="small")
    for axis in (roc_axis, pr_axis):
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
    return fig


def plot_roc_and_pr(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], out_path: str | Path
) -> Path:
    """Save :func:`roc_and_pr_figure` as a PNG at ``out_path`` (suffix set to ``.png``) and a
    PDF next to it. Returns the PNG's path.
    """
    png, _pdf = save_png_and_pdf(roc_and_pr_figure(curves), out_path)
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
