"""The classical baselines, measured like `gpt-spam evaluate` measures the GPT classifier."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.run_cli import gpt_spam
from tests.synthetic_splits import write_synthetic_splits

pytest.importorskip("sklearn")

SETS = ["train", "validation", "test", "test (unseen)", "realistic"]


@pytest.fixture
def data_dir(tmp_path):
    folder = write_synthetic_splits(tmp_path / "data", sizes=(60, 20, 20))
    # A realistic set with one spam in five, as `split` writes it (here: from the test rows).
    test = pd.read_csv(folder / "test.csv")
    realistic = pd.concat([test[test.Label == 0], test[test.Label == 1].head(2)])
    realistic.to_csv(folder / "test_realistic.csv", index=False)
    # A test row whose text is also a training row: 'test (unseen)' leaves it out.
    train = pd.read_csv(folder / "train.csv")
    test.loc[0] = train.loc[0]
    test.to_csv(folder / "test.csv", index=False)
    return folder


def test_tfidf_learns_and_majority_is_the_floor(data_dir):
    from ch06_classification.extras.baseline import run_baseline

    tfidf = run_baseline("tfidf", data_dir, log=lambda line: None)
    majority = run_baseline("majority", data_dir, log=lambda line: None)
    assert list(tfidf.metrics) == list(majority.metrics) == SETS
    assert tfidf.metrics["test (unseen)"].n == 19
    assert tfidf.metrics["test"].accuracy >= 0.95  # the classes use disjoint words
    assert tfidf.metrics["test"].f1 >= 0.95
    # Training has 30 of each class; the dummy's tie goes to class 0, "not spam".
    assert majority.metrics["test"].recall == 0.0 and majority.metrics["test"].accuracy == 0.5
    assert majority.metrics["realistic"].accuracy == pytest.approx(10 / 12)


def test_baseline_command_prints_and_saves(data_dir, tmp_path):
    result = gpt_spam(
        "baseline", "--data-dir", data_dir, "--out-dir", tmp_path / "out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "TF-IDF (word + character n-grams) + logistic regression: trained on 60" in (
        result.stdout
    )
    saved = json.loads((tmp_path / "out" / "baseline.json").read_text())
    assert set(saved) == {"tfidf", "majority"}
    assert list(saved["tfidf"]["sets"]) == SETS


def test_missing_splits_are_a_one_line_error(tmp_path):
    result = gpt_spam("baseline", "--data-dir", tmp_path / "nothing", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.startswith("gpt-spam baseline: error:") and "Traceback" not in result.stderr
    )
