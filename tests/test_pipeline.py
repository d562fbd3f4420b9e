"""`gpt-spam pipeline`: every step in order, end to end, on the real data and a tiny model."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from ch06_classification import finetune
from ch06_classification.cli import main
from ch06_classification.commands.pipeline import SAMPLE_MESSAGES


@pytest.fixture
def tiny_models(monkeypatch):
    """gpt2-small's vocabulary and context, but 2 blocks 32 wide: seconds, not minutes."""
    build = finetune.build_classifier

    def tiny(*args, **kwargs):
        return build(*args, **{**kwargs, "emb_dim": 32, "n_layers": 2, "n_heads": 4})

    monkeypatch.setattr(finetune, "build_classifier", tiny)


def test_pipeline_runs_every_step(shared_data, tmp_path, monkeypatch, capsys, tiny_models):
    monkeypatch.chdir(tmp_path)
    source = shared_data / "sms_spam_collection.zip"
    args = ["--sms-source", str(source), "--weights", "random", "--epochs", "1"]
    assert main(["pipeline", *args]) == 0

    captured = capsys.readouterr()
    out = captured.out
    # What training says is true: the caching is part of the time, per-epoch accuracies
    # come from a few batches and say so, the final ones count every example.
    assert re.search(r"Training completed in .*, of which \d+\.\d s caching the frozen", out)
    assert "(first 5 batches of each, as in the book)" in out
    assert re.search(r"Accuracy on every example: train .*% of 1,045 \| validation .*% of 149", out)
    # Progress bars on stderr for the long silent parts: caching, and evaluation.
    assert "Caching the frozen blocks" in captured.err
    assert "Classifying" in captured.err
    for number, step in enumerate(["download", "split", "train", "evaluate", "classify"], 1):
        assert f"=== Step {number}/5: gpt-spam {step}" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    made = {path.name for path in run_dir.iterdir()}
    assert {"model.safetensors", "metrics.json", "history.json", "training_texts.json"} <= made
    assert {"loss.png", "accuracy.png", "evaluation-data-t0.5.json"} <= made
    assert {"roc_pr-data-t0.5.png", "confusion_matrix-data-t0.5.png"} <= made
    evaluation = json.loads((run_dir / "evaluation-data-t0.5.json").read_text())
    assert evaluation["own_split"] is True
    # The run records what it was trained on: the SHA-256 of each distinct training text.
    train_texts = pd.read_csv(tmp_path / "data" / "train.csv", keep_default_na=False)["Text"]
    recorded = json.loads((run_dir / "training_texts.json").read_text())
    assert recorded["rows"] == len(train_texts) == 1045
    assert set(recorded["sha256"]) == {hashlib.sha256(t.encode()).hexdigest() for t in train_texts}
    assert evaluation["sets"]["test"]["n"] == 300
    assert evaluation["sets"]["test (unseen)"]["n"] == 264
    # the last lines classify the two sample messages, in order
    classified = re.findall(r"^(?:spam|not spam) +[01]\.\d{3}  (.{20})", out, re.MULTILINE)
    assert classified == [message[:20] for message in SAMPLE_MESSAGES]
    assert sorted(p.name for p in (tmp_path / "data").iterdir())[:2] == [
        "SMSSpamCollection.tsv",
        "split_report.json",
    ]


def test_a_failing_step_stops_the_pipeline_and_leaves_no_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(
        ["pipeline", "--sms-source", str(tmp_path / "missing.zip"), "--weights", "random"]
    )
    assert status == 1
    captured = capsys.readouterr()
    assert "=== Step 2/5" not in captured.out
    assert "gpt-spam download: error:" in captured.err
    assert list((tmp_path / "runs").iterdir()) == []
