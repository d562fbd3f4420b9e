"""Honest evaluation: "unseen" means unseen by the run, whatever folder is evaluated, and
no evaluation silently replaces another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.evaluating.evaluation import evaluate_run
from ch06_classification.storage.runs import write_training_texts
from gpt.errors import UserFacingError
from tests.synthetic_splits import write_synthetic_splits
from tests.tiny_classifier import write_tiny_checkpoint

LEAKED = 7  # training texts of the run that another split puts in its test set


def with_realistic_set(data_dir: Path) -> Path:
    shutil.copyfile(data_dir / "test.csv", data_dir / "test_realistic.csv")
    return data_dir


@pytest.fixture
def run_and_splits(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run trained on split ``own``, and a split ``other`` whose test set holds LEAKED of
    the run's training texts (as another seed's split does)."""
    own = with_realistic_set(write_synthetic_splits(tmp_path / "own", seed=0))
    other = write_synthetic_splits(tmp_path / "other", seed=1)
    own_train = pd.read_csv(own / "train.csv", keep_default_na=False)
    other_test = pd.read_csv(other / "test.csv", keep_default_na=False)
    leaked = own_train[~own_train["Text"].isin(other_test["Text"])].drop_duplicates("Text")
    other_test = pd.concat([leaked.head(LEAKED), other_test.iloc[LEAKED:]], ignore_index=True)
    other_test.to_csv(other / "test.csv", index=False)
    with_realistic_set(other)

    run_dir = tmp_path / "run"
    write_tiny_checkpoint(run_dir)
    write_training_texts(run_dir, own_train["Text"].tolist(), {"settings": {"data_dir": str(own)}})
    return run_dir, own, other


def test_unseen_is_measured_against_the_runs_own_training_texts(run_and_splits):
    run_dir, own, other = run_and_splits
    log: list[str] = []
    report = evaluate_run(run_dir, other, device="cpu", log=log.append, progress=False)

    own_train = set(pd.read_csv(own / "train.csv", keep_default_na=False)["Text"])
    other_test = pd.read_csv(other / "test.csv", keep_default_na=False)["Text"]
    seen = int(other_test.isin(own_train).sum())
    assert seen >= LEAKED
    assert report["own_split"] is False
    assert report["test_rows_seen_in_training"] == seen
    assert report["sets"]["test"]["n"] == len(other_test)
    assert report["sets"]["test (unseen)"]["n"] == len(other_test) - seen
    assert report["sets"]["realistic"]["n"] == len(other_test) - seen
    assert any("is not the split this run was trained on" in line for line in log)


def test_the_runs_own_split_is_not_flagged(run_and_splits):
    run_dir, own, _ = run_and_splits
    log: list[str] = []
    report = evaluate_run(run_dir, own, device="cpu", log=log.append, progress=False)
    assert report["own_split"] is True
    assert not any("not the split" in line for line in log)


def test_each_evaluation_has_its_own_files_and_none_is_overwritten_silently(run_and_splits):
    run_dir, own, other = run_and_splits
    quiet = {"device": "cpu", "log": lambda line: None, "progress": False}
    evaluate_run(run_dir, own, **quiet)
    evaluate_run(run_dir, other, **quiet)
    evaluate_run(run_dir, own, threshold=0.9, **quiet)
    reports = sorted(path.name for path in run_dir.glob("evaluation*.json"))
    assert reports == [
        "evaluation-other-t0.5.json",
        "evaluation-own-t0.5.json",
        "evaluation-own-t0.9.json",
    ]
    for name in ("roc_pr", "confusion_matrix"):
        assert (run_dir / f"{name}-other-t0.5.png").is_file()
        assert (run_dir / f"{name}-own-t0.9.pdf").is_file()
    first = json.loads((run_dir / "evaluation-own-t0.5.json").read_text())
    assert first["data_dir"] == str(own) and first["threshold"] == 0.5

    before = (run_dir / "evaluation-own-t0.5.json").read_bytes()
    with pytest.raises(UserFacingError, match=r"already evaluated.*--overwrite"):
        evaluate_run(run_dir, own, **quiet)
    assert (run_dir / "evaluation-own-t0.5.json").read_bytes() == before
    evaluate_run(run_dir, own, overwrite=True, **quiet)


def test_a_run_without_a_record_falls_back_to_the_folder_and_says_so(run_and_splits):
    run_dir, own, _ = run_and_splits
    (run_dir / "training_texts.json").unlink()
    log: list[str] = []
    report = evaluate_run(run_dir, own, device="cpu", log=log.append, progress=False)
    assert report["own_split"] is True
    assert any("does not record its training texts" in line for line in log)
