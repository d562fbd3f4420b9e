"""Faults while writing: interruptions at every moment, leftovers, two commands at once.

Whatever happens, a folder holds the previous consistent set of files or the new one,
never a mix, and what an interrupted write left behind is gone after the next command.
A kill is simulated in a child process with ``os._exit`` (no cleanup runs), an interrupt
or a full disk by raising in the middle of a write.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.cli.main import main
from ch06_classification.sources import split_files as splits
from ch06_classification.sources.split_files import make_splits, read_split, write_splits
from ch06_classification.storage import runs
from ch06_classification.storage.datafiles import SPLIT_FILES, SPLIT_REPORT
from ch06_classification.storage.safe_files import (
    LOCK_NAME,
    FolderBusyError,
    atomic_output,
    folder_lock,
)
from tests.faults import (
    FolderHolder,
    collection_frame,
    contents,
    python,
    synthetic_data,
    train_args,
)

SPLIT_SET = [*SPLIT_FILES.values(), SPLIT_REPORT]

# A child process that re-splits with seed 2 and is killed after `survive` renames.
KILLED_SPLIT = """
    import os, sys
    from ch06_classification.sources.split_files import write_splits
    from tests.faults import collection_frame

    data_dir, survive = sys.argv[1], int(sys.argv[2])
    real_replace, renames = os.replace, []

    def replace_then_die(source, destination):
        if len(renames) == survive:
            os._exit(9)  # like a kill: no finally, no cleanup
        renames.append(destination)
        real_replace(source, destination)

    os.replace = replace_then_die
    write_splits(collection_frame(), data_dir, seed=2)
"""


def assert_whole_split(data_dir: Path, seed: int) -> None:
    """The folder holds exactly the split of ``seed``: every file, and nothing else."""
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(SPLIT_SET)
    report = json.loads((data_dir / SPLIT_REPORT).read_text())
    assert report["seed"] == seed
    expected = make_splits(collection_frame(), seed=seed)
    for name, frame in expected._asdict().items():
        written = read_split(data_dir / SPLIT_FILES[name])
        pd.testing.assert_frame_equal(written, frame[["Label", "Text"]].reset_index(drop=True))
        digest = hashlib.sha256((data_dir / SPLIT_FILES[name]).read_bytes()).hexdigest()
        assert report["files"][SPLIT_FILES[name]] == digest


# Renames: the staging folder to .commit-… (the new set is decided), then the 5 files.
# 0: killed before the new set is decided; 1: just after; 3 and 5: between the moves.
@pytest.mark.parametrize("survive", [0, 1, 3, 5])
def test_split_killed_at_any_moment_leaves_one_whole_split(tmp_path: Path, survive: int) -> None:
    write_splits(collection_frame(), tmp_path, seed=1)

    child = python(KILLED_SPLIT, tmp_path, survive)
    assert child.wait(timeout=120) == 9
    assert any(p.name.startswith(".") for p in tmp_path.iterdir())  # it did leave something

    read_split(tmp_path / "train.csv")  # the next reader finishes or discards it
    assert_whole_split(tmp_path, seed=1 if survive == 0 else 2)


def test_split_interrupted_while_writing_keeps_the_old_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_splits(collection_frame(), tmp_path, seed=1)
    before = contents(tmp_path)
    to_csv, written = pd.DataFrame.to_csv, []

    def interrupted(self, path, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        return to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_splits(collection_frame(), tmp_path, seed=2)

    assert contents(tmp_path) == before


def test_interrupted_single_file_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(OSError), atomic_output(target) as temporary:
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(temporary))
    assert contents(tmp_path) == {"file.txt": b"old"}


def test_leftovers_of_killed_writes_are_removed_by_the_next_command(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_splits(collection_frame(), tmp_path, seed=1)
    before = contents(tmp_path)
    (tmp_path / ".train.csv.k3j2l1.part").write_bytes(b"x" * 1000)  # atomic_output's
    (tmp_path / ".staging-abc").mkdir()  # replace_together's, killed while writing
    (tmp_path / ".staging-abc" / "train.csv").write_text("Label,Text\n1,half")
    (tmp_path / LOCK_NAME).write_text("12345")  # the lock file of a killed command

    with folder_lock(tmp_path):
        pass

    assert contents(tmp_path) == before


@pytest.mark.usefixtures("tiny_models")
def test_train_killed_while_saving_leaves_its_partial_checkpoint_for_the_next_to_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir)) == 0
    run = contents(run_dir)
    (run_dir / ".model.safetensors.x8y7.part").write_bytes(b"\0" * 100_000)
    (run_dir / ".staging-x8y7").mkdir()

    assert main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data)]) == 0

    after = contents(run_dir)
    assert not [name for name in after if name.startswith(".")]
    assert all(after[name] == run[name] for name in run)
    evaluated = {
        "evaluation-data-t0.5.json",
        "roc_pr-data-t0.5.png",
        "confusion_matrix-data-t0.5.png",
    }
    assert evaluated <= set(after)


@pytest.mark.usefixtures("tiny_models")
def test_disk_full_while_saving_a_run_keeps_the_previous_run_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir)) == 0
    before = contents(run_dir)
    write_json = runs.write_json

    def full_at_metrics(path, values):
        if Path(path).name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_json(path, values)

    monkeypatch.setattr(runs, "write_json", full_at_metrics)
    capsys.readouterr()
    assert main(train_args(data, run_dir, "--overwrite", "--seed", "7")) == 1

    error = capsys.readouterr().err.splitlines()[-1]  # after training's progress bars
    assert error.startswith(f"gpt-spam train: error: {run_dir}/")
    assert error.endswith("metrics.json: the disk is full")
    assert contents(run_dir) == before


@pytest.mark.usefixtures("tiny_models")
def test_a_second_train_into_a_run_folder_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    run_dir.mkdir()
    with FolderHolder(run_dir) as holder:
        assert main(train_args(data, run_dir)) == 1
        error = capsys.readouterr().err
        assert f"error: {run_dir} is being written by another gpt-spam command" in error
        assert f"(process {holder.process.pid})" in error
    # Killed, the other command leaves its lock file, but the lock died with it.
    assert (run_dir / LOCK_NAME).exists()
    assert main(train_args(data, run_dir)) == 0
    assert (run_dir / "model.safetensors").is_file() and not (run_dir / LOCK_NAME).exists()


@pytest.mark.usefixtures("tiny_models")
def test_evaluate_and_split_refuse_a_folder_another_command_is_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, run_dir = synthetic_data(tmp_path / "data"), tmp_path / "run"
    assert main(train_args(data, run_dir)) == 0
    write_splits(collection_frame(), tmp_path / "split", seed=1)
    capsys.readouterr()

    with FolderHolder(run_dir):
        assert main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data)]) == 1
    assert "is being written by another gpt-spam command" in capsys.readouterr().err
    assert not list(run_dir.glob("evaluation*"))

    before = contents(tmp_path / "split")
    busy = pytest.raises(FolderBusyError, match="is being written by another gpt-spam command")
    with FolderHolder(tmp_path / "split"), busy:
        write_splits(collection_frame(), tmp_path / "split", seed=2)
    (tmp_path / "split" / LOCK_NAME).unlink()  # the killed holder's: its lock died with it
    assert contents(tmp_path / "split") == before


def test_readers_refuse_a_split_file_that_is_not_the_one_the_report_describes(
    tmp_path: Path,
) -> None:
    write_splits(collection_frame(), tmp_path / "a", seed=1)
    write_splits(collection_frame(), tmp_path / "b", seed=2)
    # A train.csv copied in from another split: the mix the issue found, by another road.
    (tmp_path / "a" / "train.csv").write_bytes((tmp_path / "b" / "train.csv").read_bytes())

    with pytest.raises(splits.DataError, match="not the file `gpt-spam split` wrote"):
        read_split(tmp_path / "a" / "train.csv")
    read_split(tmp_path / "a" / "test.csv")  # the others still match


def test_a_run_killed_while_saving_its_first_checkpoint_is_cleared_from_runs(
    tmp_path: Path,
) -> None:
    finished = tmp_path / "20261125-100000"
    finished.mkdir()
    (finished / "model.safetensors").write_bytes(b"a finished run")
    killed = tmp_path / "20261125-110000"  # train was killed while saving into it
    (killed / ".staging-q1w2").mkdir(parents=True)
    (killed / ".staging-q1w2" / "model.safetensors").write_bytes(b"\0" * 100_000)
    (killed / LOCK_NAME).write_text("4321")

    assert runs.latest_run_dir(tmp_path) == finished

    assert sorted(p.name for p in tmp_path.iterdir()) == [finished.name]
    assert contents(finished) == {"model.safetensors": b"a finished run"}
