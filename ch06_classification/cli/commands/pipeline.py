"""``gpt-spam pipeline``: every step of the chapter in order, with one set of options.

It runs the same steps a learner runs one by one (download, split, train, evaluate,
classify) by calling them with the options below, so its output is theirs. Its options
are the steps' own, declared by the same functions, and each is passed on to the steps
that take it.
"""

from __future__ import annotations

import argparse
import shlex
from contextlib import ExitStack
from pathlib import Path

from ch06_classification.cli.commands import classify, download, evaluate, split, train
from ch06_classification.cli.options import (
    add_data_dir_option,
    add_dataset_option,
    add_device_option,
    add_imdb_source_option,
    add_model_options,
    add_run_dir_option,
    add_sms_source_option,
    add_split_options,
    option_arguments,
)
from ch06_classification.cli.running import build_parser, run_command

STEPS = (download, split, train, evaluate, classify)

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
            "download: --sms-source PATH --weights random. The options of split and train "
            "are passed on to them."
        ),
    )
    add_dataset_option(parser)
    add_sms_source_option(parser)
    add_imdb_source_option(parser)
    add_split_options(parser)
    train.add_arguments(parser)  # model, data, training, seed and device options
    add_run_dir_option(parser, reading=False)
    train.add_overwrite_option(parser)
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="where the new run folder is made, unless --run-dir names it (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def step_arguments(args: argparse.Namespace, run_dir: Path) -> list[list[str]]:
    """The command line of each step, in order."""
    data = option_arguments(add_data_dir_option, args)
    model = option_arguments(add_model_options, args)
    device = option_arguments(add_device_option, args)
    to_run = ["--run-dir", str(run_dir)]
    overwrite = option_arguments(train.add_overwrite_option, args)
    if args.csv or args.tsv:  # the texts are the user's own: no dataset to fetch
        fetch = ["download", *model, "--weights-only"]
    else:
        fetch = [
            "download",
            *data,
            *option_arguments(add_dataset_option, args),
            *model,
            *option_arguments(add_sms_source_option, args),
            *option_arguments(add_imdb_source_option, args),
        ]
    return [
        fetch,
        ["split", *option_arguments(split.add_arguments, args)],
        ["train", *option_arguments(train.add_arguments, args), *overwrite, *to_run],
        ["evaluate", *data, *device, *to_run],
        ["classify", *device, *to_run, *SAMPLE_MESSAGES],
    ]


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.cli.prerequisites import (
        local_files_problems,
        other_split_problem,
        own_texts_problem,
        require,
        tokenizer_problem,
    )
    from ch06_classification.storage.runs import claim_run_dir, replace_problem
    from ch06_classification.storage.safe_files import claim_folder

    own_file = args.csv or args.tsv
    # What the steps would refuse, found before the first of them writes anything (the
    # download step fetches what is missing): a split at step 2 must not replace the data
    # folder's split for a run that step 3 then refuses.
    require(
        *local_files_problems(args),
        tokenizer_problem(),
        own_texts_problem(args),
        other_split_problem(args.data_dir, "own" if own_file else args.dataset or "sms", own_file),
        replace_problem(args.run_dir, args.overwrite) if args.run_dir else None,
    )
    with ExitStack() as held:
        # Both folders are held until the last step ends: no other command splits into the
        # data folder under the run trained on it, or takes the run folder meanwhile.
        held.enter_context(claim_folder(args.data_dir))
        run_dir = held.enter_context(
            claim_run_dir(args.run_dir, args.overwrite, runs_dir=args.runs_dir)
        )
        steps = step_arguments(args, run_dir)
        parser = build_parser(STEPS)
        for number, argv in enumerate(steps, start=1):
            print(f"\n=== Step {number}/{len(steps)}: gpt-spam {shlex.join(argv)}\n", flush=True)
            status = run_command(parser, argv)
            if status:
                return status
    print(f"\nDone. Everything this run made is in {run_dir}/")
    return 0
