"""Tests of ch06_classification.evaluating.metrics.

Every expected value is worked out by hand in the comments, never from running the code
under test; on real evaluation outputs, the saved metrics are checked against
scikit-learn's (the curves and areas are scikit-learn's own, so they are not re-derived).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from ch06_classification.evaluating.metrics import (
    BinaryMetrics,
    average_precision,
    binary_metrics,
    confusion_matrix,
    format_metrics_table,
    multiclass_metrics,
    precision_recall_curve,
    predict_spam,
    roc_auc,
    roc_curve,
)

# The worked example: six real messages (0) and four spam (1). One spam message (0.3) ties
# with one real message (0.3), which exercises the tie handling of every curve.
#            ---------------- not spam ----------------  ------------ spam -----------
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
PROBS = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.3, 0.55, 0.8, 0.9]
# At threshold 0.5 (spam when p >= 0.5):
#   not spam: 0.1 0.2 0.3 0.4 -> TN = 4;   0.6 0.7 -> FP = 2
#   spam:     0.3             -> FN = 1;   0.55 0.8 0.9 -> TP = 3
PREDICTED_AT_HALF = [0, 0, 0, 0, 1, 1, 0, 1, 1, 1]

# ROC AUC by counting the 4 * 6 = 24 (spam, not spam) pairs, a tie counting a half:
#   spam 0.3  beats 0.1 0.2, ties 0.3         -> 2.5
#   spam 0.55 beats 0.1 0.2 0.3 0.4           -> 4
#   spam 0.8  beats all six (0.7 < 0.8)       -> 6
#   spam 0.9  beats all six                   -> 6
#   AUC = (2.5 + 4 + 6 + 6) / 24 = 18.5 / 24 = 37 / 48
AUC = 37 / 48

# Precision and recall at each distinct score, from the highest (4 spam in all):
#   t     flagged (spam/real)  precision  recall
#   0.9   1 / 0                1          1/4
#   0.8   2 / 0                1          2/4
#   0.7   2 / 1                2/3        2/4
#   0.6   2 / 2                2/4        2/4
#   0.55  3 / 2                3/5        3/4
#   0.4   3 / 3                3/6        3/4
#   0.3   4 / 4  (the tie)     4/8        4/4
#   0.2   4 / 5                4/9        4/4
#   0.1   4 / 6                4/10       4/4
PR_THRESHOLDS = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1]
PRECISION = [1, 1, 2 / 3, 2 / 4, 3 / 5, 3 / 6, 4 / 8, 4 / 9, 4 / 10]
RECALL = [1 / 4, 2 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 1, 1, 1]
# Average precision: each rise in recall times the precision reached with it:
#   1/4 * 1 (0.9) + 1/4 * 1 (0.8) + 1/4 * 3/5 (0.55) + 1/4 * 4/8 (0.3)
#   = 0.25 + 0.25 + 0.15 + 0.125 = 0.775
AP = 0.775


# --- confusion_matrix and predict_spam --------------------------------------------------


def test_confusion_matrix_of_worked_example():
    assert confusion_matrix(Y_TRUE, PREDICTED_AT_HALF).tolist() == [[4, 2], [1, 3]]


@pytest.mark.parametrize(
    ("true", "predicted", "cell"),
    [(0, 0, (0, 0)), (0, 1, (0, 1)), (1, 0, (1, 0)), (1, 1, (1, 1))],
    ids=["TN", "FP", "FN", "TP"],
)
def test_confusion_matrix_rows_are_true_class_and_columns_predicted(true, predicted, cell):
    expected = np.zeros((2, 2), dtype=int)
    expected[cell] = 1
    assert confusion_matrix([true], [predicted]).tolist() == expected.tolist()


def test_predict_spam_flags_probabilities_at_or_above_the_threshold():
    assert predict_spam([0.49, 0.5, 0.51], threshold=0.5).tolist() == [0, 1, 1]


# --- binary_metrics ---------------------------------------------------------------------


def test_binary_metrics_of_worked_example():
    metrics = binary_metrics(Y_TRUE, PROBS)
    assert metrics.n == 10
    assert metrics.n_spam == 4
    assert metrics.confusion_matrix == [[4, 2], [1, 3]]
    assert metrics.accuracy == pytest.approx(7 / 10)  # (TN 4 + TP 3) / 10
    assert metrics.precision == pytest.approx(3 / 5)  # TP 3 / (TP 3 + FP 2)
    assert metrics.recall == pytest.approx(3 / 4)  # TP 3 / (TP 3 + FN 1)
    # F1 = 2 P R / (P + R) = 2 * 0.6 * 0.75 / 1.35 = 0.9 / 1.35 = 2/3
    assert metrics.f1 == pytest.approx(2 / 3)
    assert metrics.false_positive_rate == pytest.approx(2 / 6)  # FP 2 / (FP 2 + TN 4)
    assert metrics.specificity == pytest.approx(4 / 6)  # TN 4 / (FP 2 + TN 4)
    assert metrics.roc_auc == pytest.approx(AUC)
    assert metrics.average_precision == pytest.approx(AP)
    assert metrics.threshold == 0.5


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # Everything is spam: all 6 real messages are false positives.
        (0.0, [[0, 6], [0, 4]]),
        # Real 0.3 0.4 0.6 0.7 flagged; every spam message (lowest 0.3) caught.
        (0.3, [[2, 4], [0, 4]]),
        # Exactly on a score: 0.55 counts as spam (>=).
        (0.55, [[4, 2], [1, 3]]),
        # Just above it: spam 0.55 is missed now.
        (0.56, [[4, 2], [2, 2]]),
        # Only 0.9 is flagged.
        (0.85, [[6, 0], [3, 1]]),
        # No probability reaches 1: nothing is flagged.
        (1.0, [[6, 0], [4, 0]]),
    ],
)
def test_threshold_moves_predictions(threshold, expected):
    assert binary_metrics(Y_TRUE, PROBS, threshold).confusion_matrix == expected


def test_threshold_does_not_change_ranking_metrics():
    low, high = binary_metrics(Y_TRUE, PROBS, 0.1), binary_metrics(Y_TRUE, PROBS, 0.9)
    assert low.roc_auc == high.roc_auc == pytest.approx(AUC)
    assert low.average_precision == high.average_precision == pytest.approx(AP)


def test_nothing_predicted_spam_gives_zero_precision_recall_and_f1():
    metrics = binary_metrics(Y_TRUE, PROBS, threshold=0.95)  # highest probability is 0.9
    assert metrics.confusion_matrix == [[6, 0], [4, 0]]
    assert metrics.precision == 0.0  # 0 / 0 -> 0.0 by definition
    assert metrics.recall == 0.0  # 0 / 4
    assert metrics.f1 == 0.0
    assert metrics.accuracy == pytest.approx(6 / 10)
    assert metrics.false_positive_rate == 0.0  # 0 / 6
    assert metrics.specificity == 1.0  # 6 / 6


def test_set_without_spam_has_zero_recall_and_undefined_ranking_metrics():
    # Real messages only; 0.7 is flagged: TN = 2, FP = 1, FN = TP = 0.
    metrics = binary_metrics([0, 0, 0], [0.2, 0.7, 0.4])
    assert metrics.n_spam == 0
    assert metrics.confusion_matrix == [[2, 1], [0, 0]]
    assert metrics.precision == 0.0  # 0 / 1
    assert metrics.recall == 0.0  # 0 / 0 -> 0.0 by definition
    assert metrics.f1 == 0.0
    assert metrics.false_positive_rate == pytest.approx(1 / 3)
    assert math.isnan(metrics.roc_auc)
    assert math.isnan(metrics.average_precision)


def test_set_without_real_messages_has_zero_false_positive_rate():
    # Spam only; 0.9 is caught and 0.2 missed: TP = 1, FN = 1, TN = FP = 0.
    metrics = binary_metrics([1, 1], [0.2, 0.9])
    assert metrics.confusion_matrix == [[0, 0], [1, 1]]
    assert metrics.false_positive_rate == 0.0  # 0 / 0 -> 0.0 by definition
    assert metrics.specificity == 0.0  # 0 / 0 -> 0.0 by definition
    assert metrics.precision == 1.0  # 1 / 1
    assert metrics.recall == pytest.approx(1 / 2)
    assert metrics.f1 == pytest.approx(2 / 3)  # 2 TP / (2 TP + FP + FN) = 2 / 3
    assert math.isnan(metrics.roc_auc)
    # Every flagged message is spam at both thresholds: 1/2 * 1 + 1/2 * 1 = 1.
    assert metrics.average_precision == pytest.approx(1.0)


def test_to_dict_is_json_ready_with_every_documented_key():
    data = binary_metrics(Y_TRUE, PROBS).to_dict()
    assert set(data) == {
        "n",
        "n_spam",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "false_positive_rate",
        "specificity",
        "roc_auc",
        "average_precision",
        "confusion_matrix",
        "threshold",
    }
    round_trip = json.loads(json.dumps(data))
    assert round_trip["confusion_matrix"] == [[4, 2], [1, 3]]
    assert round_trip["precision"] == pytest.approx(0.6)


def test_metrics_are_frozen():
    metrics = binary_metrics(Y_TRUE, PROBS)
    with pytest.raises(AttributeError):
        metrics.accuracy = 1.0  # type: ignore[misc]


# --- ROC and precision-recall curves ----------------------------------------------------


def test_roc_auc_of_worked_example_counts_the_tie_as_half():
    assert roc_auc(Y_TRUE, PROBS) == pytest.approx(AUC)


def test_roc_auc_of_a_lone_tie_is_one_half():
    # One pair, tied: neither ranked higher, so it counts a half.
    assert roc_auc([0, 1], [0.4, 0.4]) == pytest.approx(0.5)


def test_roc_auc_is_one_for_perfect_separation_and_zero_when_reversed():
    y = [0, 0, 0, 1, 1]
    assert roc_auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]], ids=["no spam", "only spam"])
def test_roc_auc_is_nan_with_a_single_class(y):
    assert math.isnan(roc_auc(y, [0.1, 0.5, 0.9]))


def test_roc_curve_of_worked_example():
    fpr, tpr, thresholds = roc_curve(Y_TRUE, PROBS)
    # Flagging scores >= t; 6 real messages and 4 spam (see the precision-recall table).
    assert thresholds.tolist() == [math.inf, *PR_THRESHOLDS]
    assert fpr == pytest.approx([0, 0, 0, 1 / 6, 2 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert tpr == pytest.approx([0, 1 / 4, 2 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 1, 1, 1])


def test_roc_curve_rates_of_a_missing_class_are_nan():
    fpr, tpr, _ = roc_curve([0, 0], [0.2, 0.8])
    assert fpr.tolist() == [0.0, 0.5, 1.0]
    assert np.isnan(tpr).all()


def test_precision_recall_curve_of_worked_example():
    # scikit-learn's order: increasing thresholds, then the point where nothing is flagged.
    precision, recall, thresholds = precision_recall_curve(Y_TRUE, PROBS)
    assert thresholds.tolist() == PR_THRESHOLDS[::-1]
    assert precision == pytest.approx([*PRECISION[::-1], 1.0])
    assert recall == pytest.approx([*RECALL[::-1], 0.0])


def test_precision_recall_curve_recall_without_spam_is_nan():
    precision, recall, _ = precision_recall_curve([0, 0], [0.2, 0.8])
    assert np.isnan(recall).all()
    assert precision[:-1].tolist() == [0.0, 0.0]


def test_average_precision_of_worked_example():
    assert average_precision(Y_TRUE, PROBS) == pytest.approx(AP)


def test_average_precision_is_one_for_perfect_separation_and_nan_without_spam():
    assert average_precision([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.9]) == pytest.approx(1.0)
    assert math.isnan(average_precision([0, 0], [0.1, 0.9]))


# --- Agreement with scikit-learn on real evaluation outputs -------------------------------


def test_evaluation_agrees_with_scikit_learn_on_real_outputs(real_splits, tmp_path):
    """``gpt-spam evaluate`` on the real splits: every number it saves for the validation
    and test splits is what scikit-learn computes from the same labels and probabilities
    (the counting at the threshold is ours, so this checks it against the library)."""
    from sklearn import metrics as sk

    from ch06_classification.classifying.spam_classifier import SpamClassifier
    from ch06_classification.evaluating.evaluation import evaluate_run
    from ch06_classification.sources.split_files import read_split
    from ch06_classification.storage.datafiles import SPLIT_FILES
    from tests.tiny_classifier import write_tiny_checkpoint

    run = write_tiny_checkpoint(tmp_path / "run").parent
    report = evaluate_run(run, real_splits, device="cpu", log=lambda line: None)
    classifier = SpamClassifier.from_pretrained(run, device="cpu")

    for name in ("validation", "test"):  # (the other sets leave rows out: not a split's)
        split = name
        frame = read_split(real_splits / SPLIT_FILES[split])
        y = frame["Label"].to_numpy()
        p = classifier.predict_proba(frame["Text"].tolist())[:, 1]
        flagged = (p >= 0.5).astype(int)
        saved = report["sets"][name]
        assert saved["n"] == len(y) and saved["n_spam"] == int(y.sum())
        assert saved["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
        assert saved["average_precision"] == pytest.approx(
            sk.average_precision_score(y, p), abs=1e-12
        )
        assert saved["confusion_matrix"] == sk.confusion_matrix(y, flagged).tolist()
        assert saved["accuracy"] == pytest.approx(sk.accuracy_score(y, flagged))
        for key, score in (("precision", sk.precision_score), ("recall", sk.recall_score)):
            assert saved[key] == pytest.approx(score(y, flagged, zero_division=0)), key
        assert saved["f1"] == pytest.approx(sk.f1_score(y, flagged, zero_division=0))
        assert len(np.unique(p)) > len(y) // 2  # real, varied outputs, not a constant


# --- Input checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "probs", "message"),
    [
        ([0, 2], [0.1, 0.2], "only 0"),
        ([0, 1, 1], [0.1, 0.2], "shape"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, math.nan], "finite"),
        ([], [], "empty"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_binary_metrics_rejects_bad_inputs(y_true, probs, message):
    with pytest.raises(ValueError, match=message):
        binary_metrics(y_true, probs)


def test_scores_that_are_not_finite_are_a_user_facing_error():
    """A model whose weights diverged gives NaN: one line for the person, not a traceback."""
    from gpt.errors import UserFacingError

    with pytest.raises(UserFacingError, match="but 1 of 2 are NaN or infinite: the model"):
        binary_metrics([0, 1], [0.1, math.nan])
    three = [[0.2, 0.3, 0.5], [math.inf, 0.0, 0.0]]
    with pytest.raises(UserFacingError, match="but 1 of 6 are NaN or infinite"):
        multiclass_metrics([2, 0], three, ["a", "b", "c"])


def test_binary_metrics_rejects_threshold_outside_unit_interval():
    with pytest.raises(ValueError, match="threshold"):
        binary_metrics(Y_TRUE, PROBS, threshold=1.5)


def test_confusion_matrix_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix([0, 1, 1], [0, 1])


# --- format_metrics_table ---------------------------------------------------------------


def hand_metrics(**overrides) -> dict:
    """Metrics written by hand (as read back from JSON), not computed by the code."""
    metrics = {
        "n": 300,
        "n_spam": 150,
        "accuracy": 0.956666,
        "precision": 0.966,
        "recall": 0.94666,
        "f1": 0.95,
        "false_positive_rate": 0.0333333,
        "specificity": 0.9666666,
        "roc_auc": 0.987654,
        "average_precision": 0.99,
        "confusion_matrix": [[145, 5], [8, 142]],
        "threshold": 0.5,
    }
    return {**metrics, **overrides}


def cells(table: str, row_label: str) -> list[str]:
    """The cells of the row labelled ``row_label``; cells are separated by 2+ spaces."""
    (row,) = [line for line in table.splitlines() if line.startswith(row_label + "  ")]
    return re.split(r"\s{2,}", row.strip())


def test_table_puts_sets_side_by_side_with_documented_formats():
    table = format_metrics_table(
        {
            "test": hand_metrics(),
            "test (unseen)": hand_metrics(
                n=1000,
                n_spam=134,
                accuracy=0.92,
                roc_auc=0.9,
                confusion_matrix=[[800, 66], [14, 120]],
            ),
        }
    )
    assert cells(table, "metric") == ["metric", "test", "test (unseen)"]
    assert cells(table, "messages") == ["messages", "300", "1000"]
    assert cells(table, "spam messages") == ["spam messages", "150", "134"]
    # Rates as percentages with two decimals (0.956666 -> 95.67 %).
    assert cells(table, "accuracy") == ["accuracy", "95.67%", "92.00%"]
    assert cells(table, "precision") == ["precision", "96.60%", "96.60%"]
    assert cells(table, "recall") == ["recall", "94.67%", "94.67%"]
    assert cells(table, "F1") == ["F1", "95.00%", "95.00%"]
    assert cells(table, "false positive rate") == ["false positive rate", "3.33%", "3.33%"]
    assert cells(table, "specificity") == ["specificity", "96.67%", "96.67%"]
    # AUC and AP with four decimals (0.987654 -> 0.9877).
    assert cells(table, "ROC AUC") == ["ROC AUC", "0.9877", "0.9000"]
    assert cells(table, "average precision") == ["average precision", "0.9900", "0.9900"]
    assert cells(table, "TN/FP/FN/TP") == ["TN/FP/FN/TP", "145/5/8/142", "800/66/14/120"]
    assert cells(table, "threshold") == ["threshold", "0.5", "0.5"]


def test_table_right_aligns_each_value_under_its_column_name():
    table = format_metrics_table({"train": hand_metrics(), "realistic": hand_metrics(n=5)})
    header, *rows = table.splitlines()
    for name in ("train", "realistic"):
        column_end = header.index(name) + len(name)
        for row in rows:
            assert row[column_end - 1] != " ", f"{name!r} misaligned in {row!r}"
            assert row[column_end : column_end + 2].strip() == "", row
    assert len({len(line) for line in table.splitlines()}) == 1


def test_table_shows_every_column_in_given_order():
    names = ["train", "validation", "test", "test (unseen)", "realistic"]
    table = format_metrics_table({name: hand_metrics() for name in names})
    assert cells(table, "metric") == ["metric", *names]


def test_table_marks_undefined_and_missing_values():
    table = format_metrics_table(
        {
            "ham only": hand_metrics(roc_auc=math.nan),
            "old run": {"n": 10, "accuracy": 0.5, "average_precision": None},
        }
    )
    assert cells(table, "ROC AUC") == ["ROC AUC", "n/a", "-"]
    assert cells(table, "average precision") == ["average precision", "0.9900", "-"]
    assert cells(table, "accuracy") == ["accuracy", "95.67%", "50.00%"]


def test_table_accepts_binary_metrics_directly():
    metrics = binary_metrics(Y_TRUE, PROBS)
    assert isinstance(metrics, BinaryMetrics)
    table = format_metrics_table({"worked example": metrics})
    # Hand values from the worked example above.
    assert cells(table, "accuracy")[1] == "70.00%"
    assert cells(table, "F1")[1] == "66.67%"
    assert cells(table, "ROC AUC")[1] == "0.7708"  # 37/48 = 0.770833...
    assert cells(table, "average precision")[1] == "0.7750"
    assert cells(table, "TN/FP/FN/TP")[1] == "4/2/1/3"


def test_table_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        format_metrics_table({})
