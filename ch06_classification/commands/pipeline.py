"""``gpt-spam pipeline``: every step of the chapter in order, with one set of options.

It runs the same steps a learner runs one by one (download, split, train, evaluate,
classify) by calling them with the options below, so its output is theirs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.commands.options import (
    add_data_dir_option,
    add_device_option,
    add_model_options,
    add_sms_source_option,
    positive_int,
)

# The book's two examples of section 6.8.
SAMPLE_MESSAGES = (
    "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
    "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="run every step: download, split, train, evaluate, classify",
        description=(
            "Run the whole chapter: download the data and weights, split, fine-tune, "
            "evaluate, and classify two sample messages. Offline, without the 500 MB "
            "download: --sms-source PATH --weights random."
        ),
    )
    add_data_dir_option(parser)
    add_model_options(parser)
    add_sms_source_option(parser)
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="where the new run folder is made (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=positive_int, default=5, help="(default: %(default)s)")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s)"
    )
    add_device_option(parser)
    parser.set_defaults(run=run)


def step_arguments(args: argparse.Namespace, run_dir: Path) -> list[list[str]]:
    """The command line of each step, in order."""
    data = ["--data-dir", str(args.data_dir)]
    model = ["--model", args.model, "--weights", args.weights]
    if args.weights_dir:
        model += ["--weights-dir", str(args.weights_dir)]
    source = ["--sms-source", str(args.sms_source)] if args.sms_source else []
    device = ["--device", args.device]
    training = ["--epochs", str(args.epochs), "--precision", args.precision]
    to_run = ["--run-dir", str(run_dir)]
    return [
        ["download", *data, *model, *source],
        ["split", *data],
        ["train", *data, *model, *device, *training, *to_run],
        ["evaluate", *data, *device, *to_run],
        ["classify", *device, "--checkpoint", str(run_dir), *SAMPLE_MESSAGES],
    ]


def run(args: argparse.Namespace) -> int:
    from ch06_classification.cli import main
    from ch06_classification.runs import new_run_dir

    run_dir = new_run_dir(args.runs_dir)
    steps = step_arguments(args, run_dir)
    try:
        for number, argv in enumerate(steps, start=1):
            print(f"\n=== Step {number}/{len(steps)}: gpt-spam {' '.join(argv)}\n", flush=True)
            status = main(argv)
            if status:
                return status
    finally:
        if not any(run_dir.iterdir()):  # a step failed before training saved anything
            run_dir.rmdir()
    print(f"\nDone. Everything this run made is in {run_dir}/")
    return 0
