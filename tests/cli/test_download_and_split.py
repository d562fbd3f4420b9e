"""`gpt-spam download` and `gpt-spam split`, run the way a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ch06_classification.cli.main import main
from ch06_classification.storage.datafiles import SMS_SPAM_TSV, SPLIT_FILES, SPLIT_REPORT
from tests.run_cli import ROOT, gpt_spam


def test_download_then_split(shared_data: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    zip_path = shared_data / "sms_spam_collection.zip"

    downloaded = gpt_spam(
        "download",
        "--data-dir",
        data_dir,
        "--sms-source",
        zip_path,
        "--weights",
        "random",
        cwd=tmp_path,
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert "5,574 messages (4,827 ham, 747 spam)" in downloaded.stdout
    assert (data_dir / SMS_SPAM_TSV).read_bytes() == (
        shared_data / "SMSSpamCollection"
    ).read_bytes()

    split = gpt_spam("split", "--data-dir", data_dir, cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    figures = [
        "1,382 distinct texts",
        "1,045 rows",
        "149 rows",
        "300 rows",
        "880 rows",
        "13 seen in training",
        "36 seen in training (3 ham, 33 spam)",
    ]
    for figure in figures:
        assert figure in split.stdout
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        [SMS_SPAM_TSV, SPLIT_REPORT, *SPLIT_FILES.values()]
    )
    assert json.loads((data_dir / SPLIT_REPORT).read_text())["dedupe"] is False


def test_bad_source_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.zip"

    result = gpt_spam(
        "download", "--data-dir", tmp_path / "data", "--sms-source", missing, cwd=tmp_path
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"gpt-spam download: error: --sms-source {missing} does not")
    assert not any((tmp_path / "data").glob("*"))  # found before anything was written


def test_split_before_download_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["split", "--data-dir", str(tmp_path)]) == 1
    assert f"run `gpt-spam download --data-dir {tmp_path}` first" in capsys.readouterr().err


def test_split_with_dedupe(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(
            [
                "download",
                "--data-dir",
                str(tmp_path),
                "--sms-source",
                str(shared_data / "SMSSpamCollection"),
                "--weights",
                "random",
            ]
        )
        == 0
    )
    assert main(["split", "--data-dir", str(tmp_path), "--dedupe"]) == 0

    out = capsys.readouterr().out
    assert "653 ham, 653 spam" in out and "0 seen in training" in out
    report = json.loads((tmp_path / SPLIT_REPORT).read_text())
    assert report["dedupe"] is True
    assert [report["splits"][name]["rows"] for name in ("train", "validation", "test")] == [
        914,
        130,
        262,
    ]


@pytest.mark.parametrize(
    ("step", "options"),
    [("download", ["--data-dir", "--sms-source"]), ("split", ["--data-dir", "--seed", "--dedupe"])],
)
def test_numbered_scripts_are_the_cli_steps(step: str, options: list[str]) -> None:
    script = next((ROOT / "scripts").glob(f"0?_{step}.py"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script), "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert f"usage: gpt-spam {step}" in result.stdout
    for option in options:
        assert option in result.stdout


@pytest.mark.slow
def test_download_step_loads_local_weights_and_runs_the_sanity_check(
    shared_data: Path, tmp_path: Path, gpt2_small_checkpoint, capsys: pytest.CaptureFixture
) -> None:
    _, weights = gpt2_small_checkpoint
    zip_path = str(shared_data / "sms_spam_collection.zip")
    args = ["--data-dir", str(tmp_path), "--sms-source", zip_path, "--weights-dir"]
    assert main(["download", *args, str(weights.parent)]) == 0
    out = capsys.readouterr().out
    assert f"Weights: {weights}" in out
    assert "Weights: every tensor of gpt2-small loaded and checked" in out
    assert "Sanity check: 'Every effort moves you" in out


def test_download_step_refuses_weights_of_another_size(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from gpt.config import GPTConfig
    from tests.checkpoints import hf_gpt2, write_openai_checkpoint

    tiny = write_openai_checkpoint(
        hf_gpt2(GPTConfig(vocab_size=64, context_length=16, emb_dim=16, n_heads=2, n_layers=1)),
        tmp_path / "weights" / "model.safetensors",
    )
    zip_path = str(shared_data / "sms_spam_collection.zip")
    args = ["--data-dir", str(tmp_path / "data"), "--sms-source", zip_path]
    assert main(["download", *args, "--weights-dir", str(tiny.parent)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert f"gpt-spam download: error: {tiny}" in error and "is it a GPT-2 checkpoint" in error


def test_a_failed_weights_download_names_the_options_that_avoid_it(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty Hugging Face cache; gpt_spam sets HF_HUB_OFFLINE, so the download fails at once.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("MAKELEVEL", raising=False)  # `make test` sets it: hints become ARGS="..."
    zip_path = shared_data / "sms_spam_collection.zip"
    result = gpt_spam(
        "download", "--data-dir", tmp_path / "data", "--sms-source", zip_path, cwd=tmp_path
    )
    assert result.returncode == 1
    error = result.stderr
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith(
        "gpt-spam download: error: could not download openai-community/gpt2/model.safetensors"
    )
    assert "(HF_HUB_OFFLINE is set, so the Hub is not contacted)" in error  # why, plainly
    # gpt/ says how to avoid the download from Python; the command says it with its options.
    assert "pass --weights-dir FOLDER (or set GPT2_WEIGHTS_DIR=FOLDER)" in error
    assert error.rstrip().endswith("start from random weights with --weights random")


def test_a_second_split_into_a_folder_is_refused_while_one_is_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two splits into one folder: the second, started while the first reads its texts, is
    refused in one line, as a second training into one run folder is, instead of both
    saying "Wrote" and the later silently replacing the other's split."""
    from ch06_classification.sources import labelled_texts

    own = tmp_path / "mine.csv"
    own.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    data_dir = tmp_path / "data"
    split = ["split", "--csv", str(own), "--data-dir", str(data_dir)]
    assert main(split) == 0
    before = {path.name: path.read_bytes() for path in data_dir.iterdir()}

    read = labelled_texts.read_labelled_texts
    seconds = []

    def read_while_another_split_starts(*args, **kwargs):
        seconds.append(gpt_spam(*split, "--seed", "7", cwd=tmp_path))
        return read(*args, **kwargs)

    monkeypatch.setattr(labelled_texts, "read_labelled_texts", read_while_another_split_starts)
    assert main(split) == 0  # the same split again: the same files
    (second,) = seconds
    assert second.returncode == 1 and "Wrote" not in second.stdout
    assert second.stderr.count("\n") == 1
    assert second.stderr.startswith(
        f"gpt-spam split: error: {data_dir} is being written by another gpt-spam command "
        f"(process {os.getpid()})"
    )
    assert {path.name: path.read_bytes() for path in data_dir.iterdir()} == before


def test_the_split_report_says_what_was_split(tmp_path: Path) -> None:
    from ch06_classification.sources.split_files import SplitOrigin, split_origin

    own = tmp_path / "mine.csv"
    own.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    assert main(["split", "--csv", str(own), "--data-dir", str(tmp_path / "data")]) == 0
    report = json.loads((tmp_path / "data" / SPLIT_REPORT).read_text())
    assert (report["dataset"], report["source"]) == ("own", str(own))
    assert split_origin(tmp_path / "data") == SplitOrigin("own", str(own))
    assert split_origin(tmp_path / "data").is_of("own", own)
    assert not split_origin(tmp_path / "data").is_of("own", tmp_path / "other.csv")
    assert split_origin(tmp_path / "none") is None
    # A report from before reports named their dataset: the SMS collection's, unless it
    # names a source or other classes.
    del report["dataset"], report["source"]
    report["id2label"] = {"0": "ham", "1": "spam"}
    (tmp_path / "data" / SPLIT_REPORT).write_text(json.dumps(report))
    assert split_origin(tmp_path / "data") == SplitOrigin("sms")
