"""Evaluating a trained run honestly: every example, more than accuracy, and no leakage.

The book reports accuracy on the balanced splits. Here every metric is measured on every
example of each split and on two more sets:

- ``test (unseen)``: the test rows whose exact text never occurs in training. The SMS Spam
  Collection repeats many messages, so 36 of the 300 test rows (33 of them spam) are also
  training rows; their accuracy measures memory, not generalisation.
- ``realistic``: unseen test messages plus held-out ham, at the collection's natural spam
  rate (13.4 %), where precision and the false-positive rate mean what they will in use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ch06_classification.checkpoint import CHECKPOINT_NAME
from ch06_classification.datafiles import SPLIT_FILES
from ch06_classification.inference import SpamClassifier
from ch06_classification.metrics import binary_metrics, format_metrics_table
from ch06_classification.plots import plot_confusion_matrix, plot_roc_and_pr
from ch06_classification.runs import write_json
from ch06_classification.safe_files import replace_together
from ch06_classification.splits import read_split, texts_seen_in

EVALUATION_FILE = "evaluation.json"


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path = "data",
    device: str = "auto",
    batch_size: int = 32,
    threshold: float = 0.5,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure a run's classifier on every evaluation set; save JSON and plots beside it.

    Returns the contents of ``evaluation.json``; prints the metrics table through ``log``.
    """
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    classifier = SpamClassifier.from_checkpoint(run_dir / CHECKPOINT_NAME, device, batch_size)
    frames = {split: read_split(data_dir / SPLIT_FILES[split]) for split in SPLIT_FILES}
    unseen = ~texts_seen_in(frames["test"], frames["train"]).to_numpy()

    labels, scores = {}, {}
    for split, frame in frames.items():
        name = "realistic" if split == "test_realistic" else split
        log(f"Classifying {len(frame):,} {name} messages ...")
        labels[name] = frame["Label"].to_numpy()
        scores[name] = classifier.predict_proba(frame["Text"].tolist())[:, 1]
    labels["test (unseen)"], scores["test (unseen)"] = (
        labels["test"][unseen],
        scores["test"][unseen],
    )

    order = ["train", "validation", "test", "test (unseen)", "realistic"]
    metrics = {name: binary_metrics(labels[name], scores[name], threshold) for name in order}
    log("")
    log(format_metrics_table(metrics))
    log(
        f"\n'test (unseen)' leaves out the {int((~unseen).sum())} test messages whose exact text "
        "is also in the training split; 'realistic' has the collection's 13.4% spam rate."
    )

    curves = {name: (labels[name], scores[name]) for name in ("test", "test (unseen)", "realistic")}
    report = {
        "checkpoint": str(run_dir / CHECKPOINT_NAME),
        "data_dir": str(data_dir),
        "threshold": threshold,
        "test_rows_seen_in_training": int((~unseen).sum()),
        "sets": {name: metrics[name].to_dict() for name in order},
    }
    # The evaluation and its plots replace the previous ones together.
    with replace_together(run_dir) as staging:
        plots = [
            plot_roc_and_pr(curves, staging / "roc_pr.png"),
            plot_confusion_matrix(
                metrics["test"].confusion_matrix, staging / "confusion_matrix.png", "Test split"
            ),
        ]
        write_json(staging / EVALUATION_FILE, report)
    log(f"Saved {EVALUATION_FILE} and {', '.join(p.name for p in plots)} (+ PDFs) in {run_dir}/")
    return report
