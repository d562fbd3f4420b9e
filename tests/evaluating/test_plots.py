"""Tests of ch06_classification.plots: what the figures contain, and how files are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from ch06_classification.evaluating.plots import (
    confusion_matrix_figure,
    plot_confusion_matrix,
    plot_roc_and_pr,
    roc_and_pr_figure,
    save_png_and_pdf,
)
from ch06_classification.plots import plot_values, values_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PDF_SIGNATURE = b"%PDF-"

# Five epochs of 1000 examples each, one point per epoch (the book evaluates more often).
EPOCHS = [1, 2, 3, 4, 5]
EXAMPLES = [1000, 2000, 3000, 4000, 5000]
TRAIN_LOSS = [0.9, 0.5, 0.3, 0.2, 0.1]
VAL_LOSS = [1.0, 0.6, 0.4, 0.35, 0.3]

# The worked example of test_metrics.py: ROC AUC 37/48 = 0.7708, average precision 0.775.
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
PROBS = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.3, 0.55, 0.8, 0.9]


def assert_png(path):
    assert path.suffix == ".png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def assert_pdf(path):
    assert path.suffix == ".pdf"
    assert path.read_bytes().startswith(PDF_SIGNATURE)


def legend_texts(axis) -> list[str]:
    return [text.get_text() for text in axis.get_legend().get_texts()]


# --- Training curves --------------------------------------------------------------------


def test_plot_values_saves_the_books_file_name_and_a_png(tmp_path):
    # The book's plot_values writes f"{label}-plot.pdf".
    paths = plot_values(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS, label="loss", out_dir=tmp_path)
    assert paths == [tmp_path / "loss-plot.png", tmp_path / "loss-plot.pdf"]
    assert_png(paths[0])
    assert_pdf(paths[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss-plot.pdf", "loss-plot.png"]


def test_plot_values_name_overrides_file_name_and_creates_folder(tmp_path):
    out_dir = tmp_path / "plots" / "run1"
    paths = plot_values(
        EPOCHS, EXAMPLES, [0.5] * 5, [0.6] * 5, label="accuracy", out_dir=out_dir, name="acc"
    )
    assert [p.name for p in paths] == ["acc.png", "acc.pdf"]
    assert all(p.parent == out_dir and p.stat().st_size > 0 for p in paths)


def test_values_figure_has_epochs_below_and_examples_seen_on_a_twin_axis_above():
    fig = values_figure(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS, label="loss")
    assert len(fig.axes) == 2
    epochs_axis, examples_axis = fig.axes
    assert epochs_axis.get_xlabel() == "Epochs"
    assert examples_axis.get_xlabel() == "Examples seen"
    assert examples_axis.xaxis.get_label_position() == "top"
    # A twin: same y-axis, its own x-axis.
    assert epochs_axis.get_shared_y_axes().joined(epochs_axis, examples_axis)
    assert epochs_axis.get_ylabel() == "Loss"
    assert legend_texts(epochs_axis) == ["Training loss", "Validation loss"]


def test_values_figure_lines_up_epochs_with_examples_seen():
    # 1000 examples per epoch: both axes must show the same span, scaled by 1000, so that
    # "epoch 3" sits exactly below "3000 examples".
    fig = values_figure(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS)
    epochs_axis, examples_axis = fig.axes
    left, right = epochs_axis.get_xlim()
    assert examples_axis.get_xlim() == pytest.approx((1000 * left, 1000 * right))


def test_values_figure_rejects_series_of_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        values_figure(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS[:-1])


def test_running_twice_overwrites_cleanly(tmp_path):
    first = [
        p.read_bytes()
        for p in plot_values(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS, out_dir=tmp_path, name="loss")
    ]
    second_paths = plot_values(
        EPOCHS, EXAMPLES, VAL_LOSS, TRAIN_LOSS, out_dir=tmp_path, name="loss"
    )
    # The new curves replaced the old ones; no temporary or extra files are left.
    assert second_paths[0].read_bytes() != first[0]
    assert_png(second_paths[0])
    assert_pdf(second_paths[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.pdf", "loss.png"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_png_and_pdf(values_figure(EPOCHS, EXAMPLES, TRAIN_LOSS, VAL_LOSS), tmp_path / "loss")
    old_png = (tmp_path / "loss.png").read_bytes()

    def write_half_then_fail(self, file, **kwargs):
        Path(file).write_bytes(PNG_SIGNATURE)  # a partial file...
        raise OSError("disk full")  # ...then the failure

    monkeypatch.setattr(Figure, "savefig", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_png_and_pdf(values_figure(EPOCHS, EXAMPLES, VAL_LOSS, TRAIN_LOSS), tmp_path / "loss")
    assert (tmp_path / "loss.png").read_bytes() == old_png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.pdf", "loss.png"]


# --- ROC and precision-recall curves ----------------------------------------------------


def test_plot_roc_and_pr_saves_png_with_pdf_next_to_it(tmp_path):
    path = plot_roc_and_pr({"test": (Y_TRUE, PROBS)}, tmp_path / "roc_pr.png")
    assert path == tmp_path / "roc_pr.png"
    assert_png(path)
    assert_pdf(tmp_path / "roc_pr.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc_pr.pdf", "roc_pr.png"]


def test_roc_and_pr_figure_has_one_line_per_set_with_its_score_in_the_legend():
    perfect = ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    only_ham = ([0, 0, 0], [0.1, 0.5, 0.9])  # AUC and AP are undefined
    fig = roc_and_pr_figure({"test": (Y_TRUE, PROBS), "perfect": perfect, "ham": only_ham})
    roc_axis, pr_axis = fig.axes
    assert roc_axis.get_title() == "ROC curve"
    assert pr_axis.get_title() == "Precision–recall curve"
    assert legend_texts(roc_axis) == [
        "test (AUC = 0.7708)",
        "perfect (AUC = 1.0000)",
        "ham (AUC = n/a)",
        "chance (AUC = 0.5)",
    ]
    assert legend_texts(pr_axis) == [
        "test (AP = 0.7750)",
        "perfect (AP = 1.0000)",
        "ham (AP = n/a)",
    ]


def test_roc_panel_has_the_diagonal_chance_line():
    fig = roc_and_pr_figure({"test": (Y_TRUE, PROBS)})
    chance = fig.axes[0].get_lines()[-1]
    assert list(chance.get_xdata()) == [0, 1]
    assert list(chance.get_ydata()) == [0, 1]


def test_pr_line_ends_at_zero_recall_with_precision_one():
    # Worked example, scikit-learn's order: from recall 1 (everything flagged, precision
    # 4/10) to the highest threshold (0.9: precision 1, recall 1/4), then recall 0.
    fig = roc_and_pr_figure({"test": (Y_TRUE, PROBS)})
    (line,) = fig.axes[1].get_lines()
    assert line.get_xdata()[0] == 1.0 and line.get_ydata()[0] == pytest.approx(0.4)
    assert line.get_xdata()[-2:] == pytest.approx([0.25, 0.0])
    assert line.get_ydata()[-2:] == pytest.approx([1.0, 1.0])


def test_pr_line_is_drawn_as_steps_whose_area_is_the_average_precision():
    # Joining the points with slopes would overstate the area; steps that hold each
    # precision over the recall it gained enclose exactly AP = 0.775 (worked example).
    fig = roc_and_pr_figure({"test": (Y_TRUE, PROBS)})
    (line,) = fig.axes[1].get_lines()
    assert line.get_drawstyle() == "steps-post"
    recall, precision = line.get_xdata(), line.get_ydata()
    assert -np.sum(np.diff(recall) * precision[:-1]) == pytest.approx(0.775)


@pytest.mark.parametrize(
    ("class_names", "words"),
    [
        (("ham", "spam"), ["real messages flagged", "spam caught", "flagged that are spam"]),
        (("neg", "pos"), ["neg taken for pos", "pos found", "of those taken for pos"]),
        (("billing", "login", "shipping"), ["one vs rest"]),
    ],
)
def test_the_axes_speak_of_the_runs_classes(class_names, words):
    fig = roc_and_pr_figure({"test": (Y_TRUE, PROBS)}, class_names)
    labels = " | ".join(
        text for axis in fig.axes for text in (axis.get_xlabel(), axis.get_ylabel())
    )
    assert all(word in labels for word in words), labels
    if "spam" not in class_names:  # no run but the SMS one is said to catch spam
        assert "spam" not in labels and "real messages" not in labels, labels


def test_roc_and_pr_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        roc_and_pr_figure({})


# --- Confusion matrix -------------------------------------------------------------------


def test_plot_confusion_matrix_saves_png_with_pdf_next_to_it(tmp_path):
    path = plot_confusion_matrix([[4, 2], [1, 3]], tmp_path / "confusion.png")
    assert path == tmp_path / "confusion.png"
    assert_png(path)
    assert_pdf(tmp_path / "confusion.pdf")


def test_confusion_matrix_figure_writes_each_count_in_its_cell():
    fig = confusion_matrix_figure([[40, 2], [1, 30]], title="Test set")
    (axis,) = fig.axes
    # Text positions are (x = predicted column, y = true row).
    written = {(text.get_position(), text.get_text()) for text in axis.texts}
    assert written == {((0, 0), "40"), ((1, 0), "2"), ((0, 1), "1"), ((1, 1), "30")}
    assert axis.get_title() == "Test set"
    assert axis.get_xlabel() == "Predicted label"
    assert axis.get_ylabel() == "True label"
    assert [t.get_text() for t in axis.get_xticklabels()] == ["ham", "spam"]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["ham", "spam"]


def test_confusion_matrix_figure_keeps_counts_readable_on_dark_cells():
    fig = confusion_matrix_figure(np.array([[100, 0], [0, 100]]))
    colors = {text.get_text(): text.get_color() for text in fig.axes[0].texts}
    assert colors == {"100": "white", "0": "black"}


def test_confusion_matrix_figure_rejects_other_shapes():
    with pytest.raises(ValueError, match="2x2"):
        confusion_matrix_figure([[1, 2, 3], [4, 5, 6]])


def test_a_one_epoch_curve_is_titled_and_its_points_are_drawn():
    fig = values_figure([1.0], [1040], [0.9], [0.85], label="accuracy")
    assert fig.get_suptitle() == "Training and validation accuracy"
    epochs_axis = fig.axes[0]
    train_line, val_line = epochs_axis.get_lines()
    # A single point has no line segment to draw: only a marker makes it visible.
    for line in (train_line, val_line):
        assert line.get_marker() not in (None, "", "None", " ")
        assert len(line.get_xdata()) == 1
