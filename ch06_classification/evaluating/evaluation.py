"""Evaluating a trained run honestly: every example, more than accuracy, and no leakage.

The book reports accuracy on the balanced splits. Here every metric is measured on every
example of each split and on two more sets:

- ``test (unseen)``: the test rows whose exact text never occurs in training. The SMS Spam
  Collection repeats many messages, so 36 of the 300 test rows (33 of them spam) are also
  training rows; their accuracy measures memory, not generalisation.
- ``realistic``: unseen test messages plus held-out ham, at the collection's natural spam
  rate (13.4 %), where precision and the false-positive rate mean what they will in use.

"Seen in training" means seen by *this run*: a run records the fingerprints of its
training texts (``training_texts.json``), and both sets above leave out every message the
run was trained on, whichever data folder is evaluated. Evaluating another split (another
seed, say) says so plainly: its ``train`` and ``validation`` columns are not the run's.

Each evaluation is saved under its own name, ``evaluation-<data>-t<threshold>.json`` with
its plots: one is never silently replaced by another (``overwrite=True`` redoes one).

A classifier of more than two classes (``gpt-spam split --csv``) has no threshold: each
message gets its most probable class, and the report (``evaluation-<data>.json``) holds
every class's precision, recall, F1 and one-vs-rest ROC AUC, their macro and micro
averages, and the N x N confusion matrix. The realistic set exists where the split
balanced the classes and kept what it left out (see ``splits.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ch06_classification.classifying.spam_classifier import (
    SpamClassifier,
    resolve_threshold,
    two_class_only,
)
from ch06_classification.evaluating.metrics import (
    BinaryMetrics,
    MulticlassMetrics,
    binary_metrics,
    format_confusion_matrix,
    format_metrics_table,
    multiclass_metrics,
)
from ch06_classification.evaluating.plots import plot_confusion_matrix, plot_roc_and_pr
from ch06_classification.sources.split_files import (
    evaluation_splits,
    fingerprints_seen_in,
    read_class_names,
    read_split,
    text_fingerprints,
)
from ch06_classification.speed.precision import set_classifier_precision
from ch06_classification.storage.checkpoint import CHECKPOINT_NAME, read_classifier_info
from ch06_classification.storage.datafiles import SPLIT_FILES, id2label
from ch06_classification.storage.printable import listed
from ch06_classification.storage.runs import read_training_texts
from ch06_classification.storage.safe_files import replace_together, write_json
from gpt.errors import UserFacingError


def evaluation_name(data_dir: str | Path, threshold: float | None) -> str:
    """What names an evaluation's files: the evaluated folder and the threshold,
    e.g. ``data-t0.5`` for ``evaluation-data-t0.5.json`` (no threshold: more than two
    classes)."""
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data_dir).resolve().name) or "data"
    return folder if threshold is None else f"{folder}-t{threshold:g}"


def evaluation_files(
    run_dir: str | Path, data_dir: str | Path, threshold: float | None
) -> list[Path]:
    """The JSON report and the two plots' PNGs (PDFs beside them) of one evaluation."""
    name = evaluation_name(data_dir, threshold)
    return [
        Path(run_dir) / f"{stem}-{name}.{suffix}"
        for stem, suffix in (("evaluation", "json"), ("roc_pr", "png"), ("confusion_matrix", "png"))
    ]


def evaluated_problem(
    run_dir: str | Path, data_dir: str | Path, threshold: float | None, overwrite: bool = False
) -> str | None:
    """Why this evaluation must not run: it exists, and ``overwrite`` was not asked for."""
    run_dir = Path(run_dir)
    report = evaluation_files(run_dir.parent if run_dir.is_file() else run_dir, data_dir, threshold)
    if report[0].exists() and not overwrite:
        at = "" if threshold is None else f" at threshold {threshold:g}"
        return (
            f"{report[0]} exists: this run was already evaluated on {data_dir}{at}; "
            "pass --overwrite to evaluate it again"
        )
    return None


@dataclass
class Evaluation:
    """What ``evaluate_predictor`` measured."""

    # train, validation, test, test (unseen), realistic (where the split made one)
    metrics: dict[str, BinaryMetrics | MulticlassMetrics]
    # Each set's labels and probabilities: of class 1 (spam) for two classes, [n, N] for more.
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    seen_test: int  # test rows left out of 'test (unseen)': their text was trained on
    seen_realistic: int  # realistic rows left out for the same reason


def evaluate_predictor(
    predict_proba: Callable[[list[str]], np.ndarray],
    data_dir: str | Path = "data",
    threshold: float | None = None,
    log: Callable[[str], None] = print,
    trained_on: set[str] | None = None,
) -> Evaluation:
    """Score any classifier of texts (``predict_proba(texts) -> [n, n_classes]``) on every
    set; the classes are those of the folder's split report (ham and spam by default).

    ``threshold`` applies to two classes only (None: 0.5). ``trained_on`` holds the
    fingerprints of the texts the classifier was trained on (default: those of the
    folder's train.csv). Prints the metrics table through ``log``. The GPT classifier and
    the classical baselines are measured by this one function, so their figures compare.
    """
    data_dir = Path(data_dir)
    class_names = read_class_names(data_dir)
    if threshold is not None and len(class_names) != 2:
        raise UserFacingError(f"{data_dir}: {two_class_only(class_names)}")
    splits = evaluation_splits(data_dir)
    frames = {split: read_split(data_dir / SPLIT_FILES[split]) for split in splits}
    if trained_on is None:
        trained_on = set(text_fingerprints(frames["train"]["Text"]))
    # Seen by this classifier, whatever the folder's own train.csv holds.
    seen_test = fingerprints_seen_in(frames["test"], trained_on).to_numpy()
    seen_realistic = np.zeros(0, dtype=bool)
    if "test_realistic" in frames:
        realistic = frames["test_realistic"]
        seen_realistic = fingerprints_seen_in(realistic, trained_on).to_numpy()
        frames["test_realistic"] = realistic[~seen_realistic]

    labels, scores = {}, {}
    for split, frame in frames.items():
        name = "realistic" if split == "test_realistic" else split
        log(f"Classifying {len(frame):,} {name} messages ...")
        labels[name] = frame["Label"].to_numpy()
        scores[name] = np.asarray(predict_proba(frame["Text"].tolist()))
        if scores[name].shape[1:] != (len(class_names),):
            raise UserFacingError(
                f"the classifier gives {scores[name].shape[1]} probabilities per message, but "
                f"{data_dir} has {len(class_names)} classes ({listed(class_names)})"
            )
        if len(class_names) == 2:
            scores[name] = scores[name][:, 1]
    labels["test (unseen)"], scores["test (unseen)"] = (
        labels["test"][~seen_test],
        scores["test"][~seen_test],
    )

    order = ["train", "validation", "test", "test (unseen)"]
    order += ["realistic"] if "realistic" in labels else []
    metrics = {
        name: binary_metrics(labels[name], scores[name], 0.5 if threshold is None else threshold)
        if len(class_names) == 2
        else multiclass_metrics(labels[name], scores[name], class_names)
        for name in order
    }
    log("")
    log(format_metrics_table(metrics, class_names))
    if len(class_names) > 2:
        matrix = format_confusion_matrix(metrics["test"].confusion_matrix, class_names)
        log(f"\nConfusion matrix of the test set:\n{matrix}")
    note = (
        f"\n'test (unseen)' leaves out the {int(seen_test.sum())} test messages whose exact "
        "text this run was trained on"
    )
    if "realistic" in labels:
        note += "; 'realistic' has the collection's class shares" + (
            f" (less {int(seen_realistic.sum())} messages the run was trained on)"
            if seen_realistic.any()
            else ""
        )
    log(note + ".")
    curves = {name: (labels[name], scores[name]) for name in order}
    return Evaluation(metrics, curves, int(seen_test.sum()), int(seen_realistic.sum()))


def one_vs_rest(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], split: str, class_names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ROC and precision–recall curves of an N-class set: each class against the rest,
    scored by its own probability."""
    labels, probabilities = curves[split]
    return {
        f"{name} vs rest": ((labels == c).astype(np.int64), probabilities[:, c])
        for c, name in enumerate(class_names)
    }


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path = "data",
    device: str = "auto",
    batch_size: int = 32,
    threshold: float | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    progress: bool = True,
    weights_dir: str | Path | None = None,
    precision: str = "fp32",
    verify: bool = False,
) -> dict[str, Any]:
    """Measure a run's classifier on every evaluation set; save JSON and plots beside it.

    Returns the report saved as ``evaluation-<data>-t<threshold>.json`` (``threshold``
    default 0.5; none for more than two classes: ``evaluation-<data>.json``); prints the
    metrics table through ``log``, and a progress bar per set on stderr unless
    ``progress=False``. ``weights_dir`` is where the run's base weights are, if not where
    training found them; ``verify=True`` hashes them again (see ``load_classifier``).
    ``precision`` is ``"fp32"``, ``"bf16"`` or ``"auto"`` (see ``precision.py``).
    """
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    checkpoint = run_dir if run_dir.is_file() else run_dir / CHECKPOINT_NAME
    run_dir = checkpoint.parent  # a run folder, or the folder of the checkpoint named
    class_names = read_classifier_info(checkpoint).labels
    threshold = resolve_threshold(class_names, threshold)
    if read_class_names(data_dir) != class_names:
        raise UserFacingError(
            f"{run_dir} classifies into {listed(class_names)}, but the splits in "
            f"{data_dir} have the classes {listed(read_class_names(data_dir))}: "
            "evaluate it on the data it was trained for (--data-dir)"
        )
    problem = evaluated_problem(run_dir, data_dir, threshold, overwrite)
    if problem:
        raise UserFacingError(problem)
    classifier = SpamClassifier.from_pretrained(
        checkpoint, device, batch_size, weights_dir=weights_dir, verify=verify
    )
    all_texts = [
        text
        for name in evaluation_splits(data_dir)
        for text in read_split(data_dir / SPLIT_FILES[name])["Text"]
    ]
    choice = set_classifier_precision(
        classifier,
        precision,
        sum(len(classifier.encode(text)) for text in all_texts),
        run_dir,
        [data_dir],
        log,
    )
    log(f"Precision: {choice.describe()}")
    split_fingerprints = set(text_fingerprints(read_split(data_dir / SPLIT_FILES["train"])["Text"]))
    trained_on = read_training_texts(run_dir)
    if trained_on is None:
        log(
            f"Note: {run_dir} does not record its training texts (an older run): messages "
            f"count as seen in training if they are in {data_dir / SPLIT_FILES['train']}."
        )
        trained_on = split_fingerprints
    own_split = split_fingerprints == trained_on
    if not own_split:
        shared = len(split_fingerprints & trained_on)
        log(
            f"Note: {data_dir} is not the split this run was trained on (its training split "
            f"shares {shared:,} of {len(split_fingerprints):,} texts with the run's). Its "
            "'train' and 'validation' columns are not the run's; 'test (unseen)' and "
            "'realistic' leave out every message the run was trained on."
        )
    evaluation = evaluate_predictor(
        lambda texts: classifier.predict_proba(texts, progress),
        data_dir,
        threshold,
        log,
        trained_on,
    )
    metrics = evaluation.metrics

    report_path, roc_path, confusion_path = evaluation_files(run_dir, data_dir, threshold)
    if threshold is None:  # more than two classes: each against the rest, on the test set
        curves = one_vs_rest(evaluation.curves, "test", class_names)
    else:
        shown = ("test", "test (unseen)", "realistic")
        curves = {name: evaluation.curves[name] for name in shown if name in evaluation.curves}
    report = {
        "checkpoint": str(checkpoint),
        "data_dir": str(data_dir),
        "threshold": threshold,
        "id2label": id2label(class_names),
        "precision": choice.precision,
        "precision_reason": choice.reason,
        "own_split": own_split,
        "test_rows_seen_in_training": evaluation.seen_test,
        "realistic_rows_seen_in_training": evaluation.seen_realistic,
        "sets": {name: value.to_dict() for name, value in metrics.items()},
    }
    # The evaluation and its plots replace the previous ones (if --overwrite) together.
    with replace_together(run_dir) as staging:
        plots = [
            plot_roc_and_pr(curves, staging / roc_path.name, class_names),
            plot_confusion_matrix(
                metrics["test"].confusion_matrix,
                staging / confusion_path.name,
                f"Test split ({data_dir.name}"
                + (")" if threshold is None else f", threshold {threshold:g})"),
                class_names,
            ),
        ]
        write_json(staging / report_path.name, report)
    log(f"Saved {report_path.name} and {', '.join(p.name for p in plots)} (+ PDFs) in {run_dir}/")
    return report
