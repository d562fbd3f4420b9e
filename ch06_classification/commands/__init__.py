"""The steps of the ``gpt-spam`` command, in the order a learner runs them.

Each module has ``register(subparsers)``, which adds its subcommand and sets ``run``.
"""

from ch06_classification.commands import (
    classify,
    download,
    evaluate,
    export,
    pipeline,
    split,
    train,
)

STEPS = [download, split, train, evaluate, classify, export, pipeline]
