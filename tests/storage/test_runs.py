"""Which run a step uses when none is named: the latest trained on the data asked about."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ch06_classification.storage.runs import default_run, find_run, trained_on
from gpt.errors import UserFacingError


def finished_run(runs: Path, name: str, data_dir: str | None, age: int) -> Path:
    """A run folder with a (stand-in) checkpoint finished ``age`` hours ago, whose
    metrics.json records the data folder it was trained on (``None``: records none)."""
    run = runs / name
    run.mkdir(parents=True)
    checkpoint = run / "model.safetensors"
    checkpoint.write_bytes(b"a finished run")
    if data_dir is not None:
        (run / "metrics.json").write_text(json.dumps({"settings": {"data_dir": data_dir}}))
    stamp = 1_800_000_000 - 3600 * age
    os.utime(checkpoint, (stamp, stamp))
    return run


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    finished_run(runs, "sms-old", "data", age=5)
    finished_run(runs, "sms", "data", age=4)
    finished_run(runs, "tickets", "data/tickets", age=2)  # the latest of all
    finished_run(runs, "unsaid", None, age=3)
    return runs


def test_the_latest_run_trained_on_the_data_folder_is_used(runs: Path):
    sms = default_run("data", runs)
    assert sms.path == runs / "sms" and sms.matches
    assert sms.describe() == f"{runs}/sms/, the latest run trained on data/"
    # The same folder however it is written.
    assert default_run(Path("data/").absolute(), runs).path == runs / "sms"
    assert default_run("data/tickets", runs).path == runs / "tickets"
    assert find_run(None, runs, data_dir="data/tickets") == runs / "tickets"


def test_without_a_run_of_that_data_the_latest_is_used_and_said_to_be_another(runs: Path):
    other = default_run("data/reviews", runs)
    assert other.path == runs / "tickets" and not other.matches
    assert other.describe() == (
        f"{runs}/tickets/, the latest run (none in {runs}/ was trained on data/reviews/; "
        "this one was trained on data/tickets/)"
    )
    (runs / "tickets" / "model.safetensors").unlink()  # no longer finished
    assert (
        default_run("data/reviews", runs)
        .describe()
        .endswith("this one does not say what it was trained on)")
    )


def test_a_run_that_does_not_say_or_says_it_badly_is_no_match(runs: Path):
    assert trained_on(runs / "unsaid") is None
    (runs / "sms" / "metrics.json").write_text("[1, 2")  # damaged
    assert trained_on(runs / "sms") is None
    (runs / "sms" / "metrics.json").write_text('{"settings": {"data_dir": 7}}')
    assert trained_on(runs / "sms") is None
    assert default_run("data", runs).path == runs / "sms-old"


def test_no_finished_run_is_one_line(tmp_path: Path):
    with pytest.raises(UserFacingError, match=r"no trained model in .*run `gpt-spam train`"):
        default_run("data", tmp_path / "runs")
