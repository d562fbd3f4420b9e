"""A new user's first hour: the offline command works with nothing cached, every missing
prerequisite is reported at once, and the commands speak one vocabulary."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ch06_classification.cli.main import build_parser, main
from tests.sms_data import SMS_SPAM_ZIP, real_dataset

ROOT = Path(__file__).resolve().parent.parent

# Runs `gpt-spam ARGS` with the network refused and GPT-2 shrunk to 2 blocks 32 wide (the
# vocabulary and the tokenizer are GPT-2's own), so the whole pipeline takes seconds.
OFFLINE_TINY_GPT_SPAM = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("no network on this machine")

socket.socket.connect = refuse
socket.getaddrinfo = refuse

from ch06_classification.finetuning import finetune

build = finetune.build_classifier
finetune.build_classifier = lambda *a, **k: build(
    *a, **{**k, "emb_dim": 32, "n_layers": 2, "n_heads": 4}
)
from ch06_classification.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_readmes_offline_command_needs_nothing_cached(tmp_path: Path) -> None:
    """`make pipeline ARGS="--sms-source PATH --weights random"` on a machine with no
    internet, an empty home (no Hugging Face cache), and no tokenizer cache."""
    real_dataset()
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temporary.mkdir()
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")  # and no TIKTOKEN_CACHE_DIR, no HF_HOME
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env |= {"HOME": str(home), "TMPDIR": str(temporary), "PYTHONPATH": str(ROOT)}
    env |= {"MAKELEVEL": "1", "OMP_NUM_THREADS": "1"}
    args = ["pipeline", "--sms-source", str(SMS_SPAM_ZIP), "--weights", "random", "--epochs", "1"]

    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_TINY_GPT_SPAM, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done. Everything this run made is in runs/" in result.stdout
    assert "Traceback" not in result.stderr
    # Nothing was fetched into a cache: no Hugging Face hub, no tiktoken download.
    assert not (home / ".cache" / "huggingface").exists()
    assert not list(temporary.glob("data-gym-cache*"))
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "evaluation-data-t0.5.json").is_file()


def test_train_reports_every_missing_prerequisite_at_once(tmp_path, monkeypatch, capsys):
    import gpt.hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GPT2_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(gpt.hub, "cached_weights", lambda preset, cache_dir=None: None)
    monkeypatch.setenv("MAKELEVEL", "1")  # run by `make pipeline`: options go in ARGS="..."
    (tmp_path / "data").mkdir()

    assert main(["train"]) == 1

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "gpt-spam train: error: 2 things to fix before starting:"
    assert lines[1] == (
        "  - train.csv, validation.csv, test.csv are not in data/: run `gpt-spam split` first"
    )
    weights = lines[2]
    assert weights.startswith("  - GPT-2's pretrained weights (gpt2-small) are not downloaded")
    assert 'ARGS="--weights random"' in weights and 'ARGS="--weights-dir FOLDER"' in weights
    assert "GPT2_WEIGHTS_DIR=FOLDER" in weights
    assert len(lines) == 3


def test_without_make_the_options_are_given_as_they_are(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAKELEVEL", raising=False)
    assert main(["split"]) == 1
    err = capsys.readouterr().err
    assert "(offline: add --sms-source PATH, or set SMS_SPAM_SOURCE=PATH)" in err
    assert "ARGS=" not in err


@pytest.mark.parametrize("step", ["evaluate", "classify"])
def test_a_mistyped_run_folder_is_said_not_to_exist(step, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main([step, "--run-dir", "runs/2026O101", "hello"][: 3 if step == "evaluate" else 4]) == 1
    )
    assert "--run-dir runs/2026O101 does not exist" in capsys.readouterr().err


def step_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


@pytest.mark.parametrize("step", ["download", "split", "train", "evaluate", "classify", "pipeline"])
def test_a_bad_option_prints_the_usage_of_its_step(step, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([step, "--no-such-option"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: gpt-spam {step} ")
    assert f"gpt-spam {step}: error: unrecognized arguments: --no-such-option" in err


def test_every_option_of_every_step_has_help_text():
    for step, parser in step_parsers().items():
        for action in parser._actions:
            text = (action.help or "").replace("(default: %(default)s)", "").strip()
            assert text, f"gpt-spam {step} {'/'.join(action.option_strings)} has no help"


def test_run_dir_means_the_same_in_every_step():
    parsers = step_parsers()
    for step in ("train", "evaluate", "classify", "pipeline"):
        (action,) = [a for a in parsers[step]._actions if "--run-dir" in a.option_strings]
        assert action.dest == "run_dir" and action.type is Path, step
    for step in ("evaluate", "classify"):  # what reads a run also takes the book-ish name
        args = parsers[step].parse_args(["--checkpoint", "runs/x"])
        assert args.run_dir == Path("runs/x")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("gpt-spam ")


def make_plan(target: str, tmp_path: Path) -> list[str]:
    """The commands ``make TARGET`` would run for a fresh clone (``make -n``: none is run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # not there yet, as in a fresh clone
    result = subprocess.run(
        ["make", "-n", "-s", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    return result.stdout.splitlines()


def test_make_pipeline_installs_only_what_the_commands_need(tmp_path):
    plan = make_plan("pipeline", tmp_path)
    installs = [line for line in plan if "pip install" in line]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e ."]
    assert plan[-1].strip().endswith("/bin/gpt-spam pipeline")


def test_make_test_adds_the_test_tools(tmp_path):
    installs = [line for line in make_plan("test", tmp_path) if "pip install" in line]
    assert any(line.endswith('-e ".[dev,serve]"') for line in installs)
