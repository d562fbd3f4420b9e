"""`gpt-spam train` keeps the frozen blocks' output and loads it the next time, `--no-cache`
skips it, and `gpt-spam cache --list|--clear` shows and empties the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ch06_classification.cli.main import main
from ch06_classification.storage.local_cache import CACHE_DIR_ENV, DEFAULT_LIMIT_GIB, LIMIT_ENV
from tests.synthetic_splits import write_synthetic_splits


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    return tmp_path / "cache"


def train(data: Path, run_dir: Path, *options: str) -> int:
    where = ["--data-dir", str(data), "--run-dir", str(run_dir), "--device", "cpu"]
    return main(
        ["train", *where, "--weights", "random", "--epochs", "1", "--precision", "fp32", *options]
    )


def frozen_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("Frozen blocks' output")]
    return line


def test_train_keeps_then_loads_and_no_cache_skips(cache, tmp_path, tiny_models, capsys):
    data = write_synthetic_splits(tmp_path / "data", sizes=(24, 8, 8))

    assert train(data, tmp_path / "runs" / "1") == 0
    assert ": computed and kept in " in frozen_line(capsys.readouterr().out)
    assert train(data, tmp_path / "runs" / "2") == 0
    line = frozen_line(capsys.readouterr().out)
    assert ": loaded in " in line and ", computed by an earlier run on " in line
    assert train(data, tmp_path / "runs" / "3", "--no-cache") == 0
    assert frozen_line(capsys.readouterr().out).endswith(", not kept: --no-cache")
    first = load_file(tmp_path / "runs" / "1" / "model.safetensors")
    for run in ("2", "3"):  # the same model, whichever way the frozen blocks' output came
        tensors = load_file(tmp_path / "runs" / run / "model.safetensors")
        assert tensors.keys() == first.keys()
        assert all(torch.equal(tensors[name], first[name]) for name in first)


def test_a_mistyped_limit_stops_training_before_the_work(cache, tmp_path, monkeypatch, capsys):
    data = write_synthetic_splits(tmp_path / "data", sizes=(24, 8, 8))
    monkeypatch.setenv(LIMIT_ENV, "4GB")
    assert train(data, tmp_path / "run") == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"gpt-spam train: error: {LIMIT_ENV} is '4GB': expected how many GiB the frozen "
        "blocks' kept outputs may take, a number of at least 0 (0 turns the cache off), e.g. 4\n"
    )
    assert "Trainable parameters" not in captured.out  # no model was built


def test_cache_lists_and_clears_what_gpt_spam_keeps(cache, tmp_path, tiny_models, capsys):
    data = write_synthetic_splits(tmp_path / "data", sizes=(24, 8, 8))
    assert train(data, tmp_path / "run") == 0
    (kept,) = (cache / "frozen-outputs").glob("*.safetensors")
    (cache / "frozen-outputs" / "0123456789abcdef.safetensors").write_text("damaged")
    (cache / "notes.txt").write_text("the user's own file")  # not gpt-spam's: left alone
    capsys.readouterr()

    assert main(["cache", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == f"gpt-spam's cache: {cache}"
    assert listed[1].startswith("Frozen blocks' outputs: 2 files, ")
    assert listed[1].endswith(
        f"MB of at most {DEFAULT_LIMIT_GIB} GiB (${LIMIT_ENV}); least recently used first:"
    )
    described = {line.split()[0]: line for line in listed[2:4]}
    assert "(seed 123), block 0 of 2, 40 messages / " in described[kept.name[:12]]
    assert described["0123456789ab"].endswith("damaged (it will be computed again)")
    assert listed[4].startswith("Random bases and digests of weights files: ")

    assert main(["cache", "--clear"]) == 0
    cleared = capsys.readouterr().out
    assert cleared.startswith("Removed 2 kept outputs of the frozen blocks and ")
    assert cleared.rstrip().endswith(f"MB from {cache}")
    assert list((cache / "frozen-outputs").glob("*.safetensors")) == []
    assert list((cache / "random-bases").glob("*")) == []
    assert (cache / "notes.txt").read_text() == "the user's own file"

    assert main(["cache", "--list"]) == 0
    after = capsys.readouterr().out.splitlines()
    assert after[1].startswith("Frozen blocks' outputs: 0 files, 0.0 MB of at most ")
    assert after[2] == "Random bases and digests of weights files: 0 files, 0.0 MB"


def test_cache_needs_list_or_clear(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cache"])
    assert exit_.value.code == 2
    assert "one of the arguments --list --clear is required" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["cache"], ["train"]])
def test_the_help_states_the_limit(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"at most {DEFAULT_LIMIT_GIB} GiB (${LIMIT_ENV})" in text
    assert "least recently used dropped first" in text
