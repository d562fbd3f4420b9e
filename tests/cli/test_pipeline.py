"""`gpt-spam pipeline`: every step in order, end to end, on the real data and a tiny model."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd

from ch06_classification.cli.commands.pipeline import SAMPLE_MESSAGES, step_arguments
from ch06_classification.cli.main import build_parser, main
from ch06_classification.storage.local_cache import CACHE_DIR_ENV


def test_pipeline_runs_every_step(shared_data, tmp_path, monkeypatch, capsys, tiny_models):
    monkeypatch.chdir(tmp_path)
    # A cache of its own: the frozen blocks' output is computed here, not loaded.
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    source = shared_data / "sms_spam_collection.zip"
    args = ["--sms-source", str(source), "--weights", "random", "--epochs", "1"]
    assert main(["pipeline", *args]) == 0

    captured = capsys.readouterr()
    out = captured.out
    # What training says is true: the caching is part of the time, per-epoch accuracies
    # come from a few batches and say so, the final ones count every example.
    assert re.search(r"Training completed in .*, of which \d+\.\d s computing the frozen", out)
    assert "Frozen blocks' output for every message: computed and kept in " in out
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
    classified = re.findall(r"^(?:spam|ham) +[01]\.\d{3}  (.{20})", out, re.MULTILINE)
    assert classified == [message[:20] for message in SAMPLE_MESSAGES]
    assert sorted(p.name for p in (tmp_path / "data").iterdir())[:2] == [
        "SMSSpamCollection.tsv",
        "split_report.json",
    ]


def test_a_failing_step_stops_the_pipeline_and_leaves_no_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"not the collection")
    status = main(["pipeline", "--sms-source", str(damaged), "--weights", "random"])
    assert status == 1
    captured = capsys.readouterr()
    assert "=== Step 2/5" not in captured.out
    assert "gpt-spam download: error:" in captured.err
    assert list((tmp_path / "runs").iterdir()) == []


def test_everything_missing_is_reported_at_once_before_any_step(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAKELEVEL", "1")  # as under `make pipeline`
    args = ["--sms-source", "missing.zip", "--weights-dir", "no-weights"]
    assert main(["pipeline", *args]) == 1
    captured = capsys.readouterr()
    assert "=== Step" not in captured.out
    assert captured.err.splitlines() == [
        "gpt-spam pipeline: error: 2 things to fix before starting:",
        "  - --sms-source missing.zip does not exist",
        "  - weights folder no-weights does not exist (--weights-dir or GPT2_WEIGHTS_DIR)",
    ]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_pipeline_passes_split_and_train_options_on(tmp_path):
    given = "--dedupe --seed 7 --trainable-layers all --lr 1e-4 --batch-size 4"
    given += " --weights random --data-dir d --epochs 2"
    args = build_parser().parse_args(["pipeline", *given.split()])
    download, split, train, evaluate, classify = step_arguments(args, tmp_path / "run")
    assert split == ["split", "--data-dir", "d", "--seed", "7", "--dedupe"]
    assert train[0] == "train" and train[-2:] == ["--run-dir", str(tmp_path / "run")]
    options = dict(zip(train[1:-2:2], train[2:-2:2], strict=True))
    assert options == {
        "--weights": "random",
        "--data-dir": "d",
        "--trainable-layers": "all",
        "--epochs": "2",
        "--batch-size": "4",
        "--lr": "0.0001",
        "--seed": "7",
    }
    # Every option the pipeline passes on, `train` itself accepts, meaning the same.
    parsed = build_parser().parse_args(train)
    assert (parsed.seed, parsed.lr, parsed.batch_size, parsed.epochs) == (7, 1e-4, 4, 2)
    assert evaluate == ["evaluate", "--data-dir", "d", "--run-dir", str(tmp_path / "run")]
    assert classify[:3] == ["classify", "--run-dir", str(tmp_path / "run")]
    assert download == ["download", "--data-dir", "d", "--weights", "random"]


def test_own_texts_fetch_no_dataset(tmp_path, monkeypatch, capsys):
    """With --csv/--tsv the texts are the user's own: the pipeline's download step fetches
    only the weights, and a dataset source (even a missing one) is never looked at."""
    monkeypatch.setenv("SMS_SPAM_SOURCE", str(tmp_path / "missing.zip"))
    own = tmp_path / "own.csv"
    own.write_text("text,label\nfine,a\nbad,b\n")
    args = build_parser().parse_args(["pipeline", "--csv", str(own), "--weights", "random"])
    download = step_arguments(args, tmp_path / "run")[0]
    assert download == ["download", "--weights", "random", "--weights-only"]
    assert main([*download, "--data-dir", str(tmp_path / "data")]) == 0
    assert "random initialisation requested" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # no SMS Spam Collection fetched
    # Without --weights-only, the same missing source is reported before anything runs.
    assert main(["download", "--weights", "random", "--data-dir", str(tmp_path / "data")]) == 1
    assert "missing.zip does not exist" in capsys.readouterr().err


def folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def own_texts(path, broken_row: int | None = None):
    rows = [f"ticket {i} about {'billing' if i % 2 else 'login'},{'ab'[i % 2]}" for i in range(40)]
    if broken_row is not None:
        rows[broken_row] = '"never closed,a'
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_a_run_folder_in_use_is_refused_before_the_data_is_split_again(
    tmp_path, monkeypatch, capsys
):
    """`pipeline --csv … --run-dir R`, R holding a run: refused before step 1, not at
    step 3 once step 2 has replaced the data folder's split (a run beside data it was not
    trained on)."""
    monkeypatch.chdir(tmp_path)
    own = own_texts(tmp_path / "mine.csv")
    assert main(["split", "--csv", str(own), "--seed", "7"]) == 0  # into data/
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "metrics.json").write_text("{}")
    data, run = folder_bytes(tmp_path / "data"), folder_bytes(tmp_path / "R")
    capsys.readouterr()

    assert main(["pipeline", "--csv", str(own), "--weights", "random", "--run-dir", "R"]) == 1
    captured = capsys.readouterr()
    assert "=== Step" not in captured.out
    assert captured.err == (
        "gpt-spam pipeline: error: R already holds a run: pass --overwrite to replace it (its "
        "evaluations and plots go with it), or choose another --run-dir\n"
    )
    assert folder_bytes(tmp_path / "data") == data and folder_bytes(tmp_path / "R") == run
    # The pipeline takes train's --overwrite, and passes it on.
    args = build_parser().parse_args(["pipeline", "--csv", str(own), "--overwrite"])
    assert "--overwrite" in step_arguments(args, tmp_path / "R")[2]


def test_the_pipeline_never_splits_over_a_split_of_other_data(
    shared_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    own = own_texts(tmp_path / "mine.csv")
    assert main(["split", "--csv", str(own)]) == 0
    data = folder_bytes(tmp_path / "data")
    capsys.readouterr()

    sms = ["--sms-source", str(shared_data / "sms_spam_collection.zip"), "--weights", "random"]
    assert main(["pipeline", *sms]) == 1
    captured = capsys.readouterr()
    assert "=== Step" not in captured.out and captured.err.count("\n") == 1
    assert captured.err.startswith(
        f"gpt-spam pipeline: error: data holds a split of {own}, not of the SMS Spam Collection: "
        "give another --data-dir"
    )
    assert folder_bytes(tmp_path / "data") == data
    assert not (tmp_path / "runs").exists()
    # Another CSV is other data too.
    other = own_texts(tmp_path / "other.csv")
    assert main(["pipeline", "--csv", str(other), "--weights", "random"]) == 1
    assert f"data holds a split of {own}, not of {other}" in capsys.readouterr().err


def test_a_broken_csv_is_refused_before_any_step(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    own = own_texts(tmp_path / "mine.csv", broken_row=10)
    assert main(["pipeline", "--csv", str(own), "--weights", "random"]) == 1
    captured = capsys.readouterr()
    assert "=== Step" not in captured.out and captured.err.count("\n") == 1
    assert f"error: {own}: line 12: a quote opens a text" in captured.err
    assert not (tmp_path / "data").exists()
