"""Faults a command meets at its edges: bad options, run folders, and the operating system.

Options are refused by the parser, before anything runs; a run folder is claimed before
training; read-only or full disks, missing permissions and files where folders should be
are one line naming the path, found before the long work wherever they can be. Tests run
as root in CI, so an unusable folder is a path under a regular file, and a read-only or
full disk is an injected error.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.cli.main import main
from ch06_classification.evaluating import evaluation
from ch06_classification.finetuning import finetune
from ch06_classification.sources.sms import download_sms_spam
from ch06_classification.storage import safe_files
from tests.faults import contents, synthetic_data, train_args
from tests.sms_data import synthetic_collection, zip_archive

# --- Every option is checked by the parser -----------------------------------------------

BAD_OPTIONS = [
    (["train", "--lr", "-1"], "argument --lr: expected a number greater than 0, not '-1'"),
    (["train", "--lr", "0"], "argument --lr: expected a number greater than 0"),
    (["train", "--lr", "nan"], "argument --lr: expected a number greater than 0"),
    (["train", "--drop-rate", "1.5"], "argument --drop-rate: expected a number from 0 to below 1"),
    (["train", "--drop-rate", "1"], "argument --drop-rate: expected a number from 0 to below 1"),
    (["train", "--drop-rate", "-0.1"], "argument --drop-rate: expected a number from 0"),
    (["train", "--weight-decay", "-1"], "argument --weight-decay: expected a number of at least 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a whole number of at least"),
    (["train", "--epochs", "0"], "argument --epochs: expected a whole number of at least 1"),
    (["train", "--context-length", "0"], "argument --context-length: use 'longest', 'model' or"),
    (["train", "--device", "meta"], "argument --device: cannot compute on device 'meta'"),
    (["train", "--device", "gpu0"], "argument --device: unknown device 'gpu0'"),
    (["train", "--device", "cuda:99"], "argument --device: device 'cuda:99' is not available"),
    (["evaluate", "--device", "meta"], "argument --device: cannot compute on device 'meta'"),
    (["evaluate", "--batch-size", "0"], "argument --batch-size: expected a whole number"),
    (["classify", "--threshold", "2", "hi"], "argument --threshold: expected a number between"),
    (["classify", "--device", "nonsense", "hi"], "argument --device: unknown device 'nonsense'"),
    (["classify", "--device", "cuda:99", "hi"], "argument --device: device 'cuda:99' is not"),
    (["pipeline", "--device", "meta"], "argument --device: cannot compute on device 'meta'"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS]
)
def test_bad_option_is_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert f"gpt-spam {argv[0]}: error: {message}" in error and "Traceback" not in error


def test_xpu_is_refused_where_pytorch_has_none(capsys: pytest.CaptureFixture) -> None:
    import torch

    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        pytest.skip("this machine has an Intel GPU")
    with pytest.raises(SystemExit):
        main(["train", "--device", "xpu"])
    assert "argument --device: device 'xpu' is not available on this machine" in (
        capsys.readouterr().err
    )


def float_options() -> list[tuple[str, str]]:
    """(step, flag) of every option of every step whose value is a fractional number,
    found by asking each option's own type to read "0.5"."""
    import argparse

    from ch06_classification.cli.main import build_parser

    steps = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for step, parser in steps.choices.items():
        for action in parser._actions:
            if not action.option_strings or not callable(action.type):
                continue
            try:
                value = action.type("0.5")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue
            if isinstance(value, float):
                found.append((step, action.option_strings[0]))
    return found


FLOAT_OPTIONS = float_options()


def test_the_float_options_are_found() -> None:
    flags = {flag for _, flag in FLOAT_OPTIONS}
    assert {"--lr", "--weight-decay", "--drop-rate", "--lora-alpha", "--threshold"} <= flags
    assert ("pipeline", "--lora-alpha") in FLOAT_OPTIONS  # every step that takes it


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize(
    ("step", "flag"), FLOAT_OPTIONS, ids=[f"{step} {flag}" for step, flag in FLOAT_OPTIONS]
)
def test_every_float_option_refuses_nan_and_infinity(
    step: str, flag: str, value: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit:
        main([step, f"{flag}={value}"])
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert f"gpt-spam {step}: error: argument {flag}: expected " in error
    assert error.rstrip().endswith(f"not {value!r}") and "Traceback" not in error


@pytest.mark.parametrize("fractions", ["nan,0.5,0.5", "0.7,0.1,inf", "-inf,0.5,0.5"])
def test_split_fractions_refuse_nan_and_infinity(
    fractions: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["split", f"--fractions={fractions}"])
    assert exit.value.code == 2
    assert "argument --fractions: expected three numbers above 0" in capsys.readouterr().err


# --- A run folder is claimed before training -----------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a refused command gets as far as building the model."""

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started although the run folder was unusable")

    monkeypatch.setattr(finetune, "build_classifier", must_not_run)


@pytest.mark.usefixtures("tiny_models")
def test_retraining_into_a_run_folder_needs_overwrite_and_then_leaves_nothing_old(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir)) == 0
    assert main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data)]) == 0
    evaluated = contents(run_dir)
    evaluation = {
        "evaluation-data-t0.5.json",
        "roc_pr-data-t0.5.png",
        "confusion_matrix-data-t0.5.pdf",
    }
    assert evaluation <= set(evaluated)
    capsys.readouterr()

    assert main(train_args(data, run_dir, "--seed", "7")) == 1
    error = capsys.readouterr().err
    assert error == (
        f"gpt-spam train: error: {run_dir} already holds a run: pass --overwrite to replace "
        "it (its evaluations and plots go with it), or choose another --run-dir\n"
    )
    assert contents(run_dir) == evaluated

    assert main(train_args(data, run_dir, "--seed", "7", "--overwrite")) == 0
    retrained = contents(run_dir)
    assert sorted(retrained) == sorted(
        ["model.safetensors", "config.json", "metrics.json", "history.json"]
        + ["training_texts.json"]
        + [f"{plot}.{ext}" for plot in ("loss", "accuracy") for ext in ("png", "pdf")]
    )
    assert retrained["model.safetensors"] != evaluated["model.safetensors"]
    assert json.loads(retrained["metrics.json"])["settings"]["seed"] == 7


@pytest.mark.usefixtures("no_training")
def test_overwrite_never_empties_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, folder = synthetic_data(tmp_path / "data"), tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    assert main(train_args(data, folder, "--overwrite")) == 1
    assert "holds files but no run (thesis.tex)" in capsys.readouterr().err
    assert contents(folder) == {"thesis.tex": b"months of work"}


def test_a_failed_training_leaves_no_empty_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = synthetic_data(tmp_path / "data")
    (data / "train.csv").write_text("Label,Text\n0,only ham\n")  # found once training starts
    assert main(["train", "--data-dir", str(data), "--weights", "random"]) == 1
    assert "train.csv: no spam message" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


# --- Training that learns nothing is not a finished run -----------------------------------


@pytest.mark.usefixtures("tiny_models")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        # The first update blows the weights up: the next step's loss is not a number.
        (
            ["--lr", "1e6", "--epochs", "3"],
            r"the training loss became (nan|inf) at step 1 \(epoch 1\), so training stopped "
            r"and nothing was saved: the learning rate 1e\+06 is likely too high",
        ),
        # One step in all (one epoch of one batch): no loss follows its update; the final
        # evaluation finds what it did.
        (
            ["--lr", "1e6", "--batch-size", "96"],
            r"the trained model's outputs are NaN or infinite for \d+ of the 96 training "
            r"messages, so nothing was saved: the learning rate 1e\+06 is likely too high",
        ),
    ],
    ids=["diverges", "diverges in its last step"],
)
def test_a_diverging_training_stops_in_one_line_and_saves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir, *options)) == 1
    out, error = capsys.readouterr()
    assert "Traceback" not in error
    [line] = [line for line in error.splitlines() if "error:" in line]  # beside progress bars
    assert re.fullmatch(f"gpt-spam train: error: {message}", line), line
    assert "Epoch 1/" not in out or "--epochs" not in options  # at once, not at an epoch's end
    assert "Saved the run" not in out
    assert not run_dir.exists()  # made for this run, and removed again: no finished run


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--batch-size", "97"],
            "--batch-size 97 is larger than the training split (96 messages): an epoch "
            "trains on whole batches only, so it would train on nothing; use a --batch-size "
            "of at most 96",
        ),
        (
            ["--batch-size", "100000"],
            "--batch-size 100000 is larger than the training split (96 messages)",
        ),
        (
            ["--accumulation-steps", "13"],
            "--accumulation-steps 13 is more than the 12 batches of an epoch (96 training "
            "messages, 8 per batch): an update would sum the gradients of 12 batches, each "
            "scaled by 1/13; use at most 12",
        ),
        (
            ["--batch-size", "40", "--accumulation-steps", "3"],
            "--accumulation-steps 3 is more than the 2 batches of an epoch",
        ),
        (  # one message per batch without padding, whatever --batch-size says
            ["--no-padding", "--batch-size", "200", "--accumulation-steps", "97"],
            "--accumulation-steps 97 is more than the 96 batches of an epoch (96 training "
            "messages, 1 per batch)",
        ),
    ],
)
def test_batches_that_do_not_fit_the_training_split_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir, *options)) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"gpt-spam train: error: {message}") and error.count("\n") == 1
    assert not run_dir.exists()


# --- Operating-system failures: one line with the path, before the work ---------------------


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize("where", ["run folder", "its parent", "the runs folder"])
def test_a_file_where_the_run_folder_should_be(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    data = synthetic_data(tmp_path / "data")
    blocker = tmp_path / ("runs" if where == "the runs folder" else "blocker")
    blocker.write_text("a file")
    run_dir = {"run folder": blocker, "its parent": blocker / "run", "the runs folder": None}
    args = ["train", "--data-dir", str(data), "--weights", "random"]
    if run_dir[where] is not None:
        args += ["--run-dir", str(run_dir[where])]

    assert main(args) == 1

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    named = "runs/" if where == "the runs folder" else str(blocker)  # runs/<timestamp>
    assert error.startswith(f"gpt-spam train: error: {named}")
    assert "a file is in the way" in error or "is a file, not a folder" in error
    assert blocker.read_text() == "a file"


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EROFS, "the disk is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOSPC, "the disk is full"),
    ],
)
def test_an_unwritable_run_folder_is_found_before_training(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    reason: str,
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"

    def refused(*args: object, dir: str, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(Path(dir) / "tmpfile"))

    monkeypatch.setattr(safe_files.tempfile, "TemporaryFile", refused)
    assert main(train_args(data, run_dir)) == 1
    assert capsys.readouterr().err == (f"gpt-spam train: error: {run_dir / 'tmpfile'}: {reason}\n")


@pytest.mark.usefixtures("no_training")
def test_too_little_room_for_the_checkpoint_is_found_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    usage = safe_files.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        safe_files.shutil, "disk_usage", lambda path: usage._replace(free=10 * 10**6)
    )
    assert main(train_args(data, run_dir)) == 1
    error = capsys.readouterr().err
    # gpt2-small's last block, final norm and head: 28 MB, plus room for metrics and plots.
    assert re.search(rf"error: {re.escape(str(run_dir))}: only 10 MB free, and 3\d MB are", error)


@pytest.mark.usefixtures("tiny_models")
def test_evaluate_finds_an_unwritable_run_folder_before_classifying(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir)) == 0
    monkeypatch.setattr(evaluation, "SpamClassifier", None)  # any use would fail loudly

    def read_only(*args: object, dir: str, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", dir)

    monkeypatch.setattr(safe_files.tempfile, "TemporaryFile", read_only)
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data)]) == 1
    assert (
        capsys.readouterr().err == f"gpt-spam evaluate: error: {run_dir}: the disk is read-only\n"
    )


@pytest.mark.parametrize("where", ["data folder", "its parent"])
def test_download_into_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, where: str
) -> None:
    source = tmp_path / "sms.zip"
    source.write_bytes(zip_archive({"SMSSpamCollection": synthetic_collection()}))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    data_dir = blocker if where == "data folder" else blocker / "data"
    args = ["download", "--data-dir", str(data_dir), "--sms-source", str(source)]

    assert main([*args, "--weights", "random"]) == 1

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"gpt-spam download: error: {data_dir}")


def test_disk_full_during_split_is_one_line_and_keeps_the_old_split(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "sms.zip"
    source.write_bytes(zip_archive({"SMSSpamCollection": synthetic_collection()}))
    data = tmp_path / "data"
    download_sms_spam(data, source=source, urls=[])
    assert main(["split", "--data-dir", str(data)]) == 0
    before = contents(data)
    to_csv = pd.DataFrame.to_csv

    def full_disk(self: pd.DataFrame, path: object, *args: object, **kwargs: object) -> None:
        if Path(str(path)).name == "test.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    capsys.readouterr()
    assert main(["split", "--data-dir", str(data), "--seed", "5"]) == 1

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.endswith("test.csv: the disk is full\n")
    assert contents(data) == before
