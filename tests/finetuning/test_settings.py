"""TrainingSettings declares each knob once: train's options, their checks, the rows."""

from __future__ import annotations

import dataclasses

import pytest

from ch06_classification.cli.commands.train import settings_from_args
from ch06_classification.cli.main import build_parser
from ch06_classification.finetuning.settings import (
    TrainingSettings,
    knobs,
    settings_from_arguments,
)
from gpt.errors import UserFacingError


def train_args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_every_field_is_an_option_of_train_with_its_declared_default() -> None:
    args = vars(train_args())
    defaults = TrainingSettings()
    for field in dataclasses.fields(TrainingSettings):
        if field.name == "config_overrides":  # a Python-only knob (tiny models for tests)
            continue
        assert field.name in args, field.name
        assert args[field.name] == getattr(defaults, field.name) or field.name == "data_dir"
    assert settings_from_args(train_args()) == defaults


def test_help_text_comes_from_the_declaration() -> None:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # argparse's own table
    helps = {a.dest: a.help for a in train._actions}
    for name, declared in knobs().items():
        assert helps[name].startswith(declared.help), name


@pytest.mark.parametrize(
    "argv",
    [
        ["--trainable-layers", "all", "--no-padding", "--lr", "0.001"],
        ["--context-length", "model", "--accumulation-steps", "8", "--weights", "random"],
        ["--token-position", "first", "--lora-alpha", "8", "--seed", "7", "--model", "gpt2-xl"],
    ],
)
def test_a_rows_arguments_read_as_the_command_line_reads_them(argv: list[str]) -> None:
    assert settings_from_arguments(argv) == settings_from_args(train_args(*argv))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"epochs": 0}, "a whole number of at least 1"),
        ({"drop_rate": 1.0}, "from 0 to below 1"),
        ({"lr": -1e-4}, "greater than 0"),
        ({"token_position": "middle"}, "one of flexible, last, first"),
        ({"context_length": 0}, "'longest', 'model' or a number"),
        ({"lora_alpha": float("nan")}, "finite"),
    ],
)
def test_check_refuses_what_the_options_refuse(change: dict, problem: str) -> None:
    with pytest.raises(UserFacingError, match=problem):
        dataclasses.replace(TrainingSettings(), **change).check()
    TrainingSettings().check()  # the book's recipe passes
