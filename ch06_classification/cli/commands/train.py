"""``gpt-spam train``: fine-tune GPT-2 as a spam classifier and save the run."""

from __future__ import annotations

import argparse

from ch06_classification.cli.options import (
    add_data_dir_option,
    add_device_option,
    add_model_options,
    add_run_dir_option,
    add_seed_option,
    add_training_options,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``train``, which ``pipeline`` accepts and passes on too."""
    add_model_options(parser)
    add_data_dir_option(parser)
    add_training_options(parser)
    add_seed_option(parser)
    add_device_option(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune GPT-2 on the training split",
        description=(
            "Fine-tune GPT-2 as a spam classifier (the book's recipe by default) and save "
            "the checkpoint, metrics, history, the fingerprints of the training texts and "
            "loss/accuracy plots in a run folder."
        ),
    )
    add_arguments(parser)
    add_run_dir_option(parser, reading=False)
    add_overwrite_option(parser)
    parser.add_argument(
        "--full-checkpoint",
        action="store_true",
        help=(
            "store every tensor (498 MB for gpt2-small) instead of only the trained ones and "
            "a record of the base weights (28 MB for the last block), which loading finds "
            "and checks as training did: for a machine without the base weights"
        ),
    )
    parser.set_defaults(run=run)


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: of ``train``, and of ``pipeline``, which passes it on."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace the run already in --run-dir, with its evaluations and plots "
            "(default: refuse to)"
        ),
    )


def settings_from_args(args: argparse.Namespace):
    """The ``TrainingSettings`` the parsed options give (each field by its name)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.finetuning.settings import TrainingSettings

    return TrainingSettings.from_options(vars(args))


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.cli.prerequisites import (
        require,
        splits_problem,
        tokenizer_problem,
        weights_problem,
    )
    from ch06_classification.finetuning.finetune import fine_tune
    from ch06_classification.speed.distributed import training_processes
    from ch06_classification.storage.checkpoint import CHECKPOINT_NAME
    from ch06_classification.storage.runs import checkpoint_bytes, claim_run_dir, save_training_run
    from gpt.config import get_config

    # Under torchrun, the processes it started join here (one process without it); only
    # the first (rank 0) prints, claims the run folder and saves the run.
    with training_processes(args.device) as world:
        require(
            splits_problem(args.data_dir),
            weights_problem(args.model, args.weights, args.weights_dir),
            tokenizer_problem(),
        )
        # The run folder is claimed before training, so that a folder that is in use, already
        # holds a run, cannot be written or has no room is found now, not after the work.
        stored = None if args.full_checkpoint else args.trainable_layers
        needed = checkpoint_bytes(get_config(args.model), stored) + 10 * 1024**2  # + metrics
        with world.on_main(claim_run_dir(args.run_dir, args.overwrite, needed)) as run_dir:
            result = fine_tune(settings_from_args(args))
            if run_dir is not None:
                save_training_run(result, run_dir)
    if run_dir is None:  # another process saved the run
        return 0
    stored = "every tensor" if result.info.stored == "full" else "the trained tensors"
    size = (run_dir / CHECKPOINT_NAME).stat().st_size / 1e6
    print(
        f"Saved the run to {run_dir}/: model.safetensors ({size:,.1f} MB, {stored}), "
        "config.json, metrics.json, history.json, plots"
    )
    return 0
