"""``gpt-spam train`` on a tiny GPT (2 blocks, 32 wide): the entry point that the
distributed tests start under torchrun.

``python tests/tiny_train.py ARGS [+ ARGS ...]`` runs ``gpt-spam train ARGS`` for each
``+``-separated group of arguments in turn (one torchrun start, several trainings).
With ``TINY_TRAIN_PID_DIR`` set, each process writes its process id to a file there
named by its rank.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ch06_classification.cli.main import main
from ch06_classification.finetuning import finetune
from tests.tiny_classifier import TINY_GPT2

# No biases on the query/key/value projections: the key bias's true gradient is exactly 0
# (softmax ignores a shift common to every score), so AdamW, which divides each gradient by
# its own running size, moves it by rounding noise alone, differently in any two runs that
# add in another order (1 thread against 2 differ as much). Without it, every weight of two
# equal runs agrees to ~1e-7.
TINY_MODEL = {**TINY_GPT2, "qkv_bias": False}


def use_tiny_models() -> None:
    """Make ``fine_tune`` build the tiny model instead of the preset's full size."""
    build = finetune.build_classifier
    finetune.build_classifier = lambda *args, **kwargs: build(*args, **{**kwargs, **TINY_MODEL})


def commands(arguments: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for argument in arguments:
        if argument == "+":
            groups.append([])
        else:
            groups[-1].append(argument)
    return groups


if __name__ == "__main__":
    if "TINY_TRAIN_PID_DIR" in os.environ:  # so that a test can interrupt one process
        rank = os.environ.get("RANK", "0")
        (Path(os.environ["TINY_TRAIN_PID_DIR"]) / rank).write_text(str(os.getpid()))
    use_tiny_models()
    for command in commands(sys.argv[1:]):
        status = main(["train", *command])
        if status:
            sys.exit(status)
