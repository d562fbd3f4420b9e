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
    from ch06_classification.finetuning.settings import TrainingSettings

    return TrainingSettings(
        model=args.model,
        weights=args.weights,
        weights_dir=args.weights_dir,
        trainable_layers=args.trainable_layers,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        token_position=args.token_position,
        average_embeddings=args.average_embeddings,
        disable_causal_mask=args.disable_causal_mask,
        no_padding=args.no_padding,
        context_length=args.context_length,
        drop_rate=args.drop_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        accumulation_steps=args.accumulation_steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        fast_path=args.fast_path,
        no_cache=args.no_cache,
        data_dir=str(args.data_dir),
        full_checkpoint=args.full_checkpoint,
    )


def run(args: argparse.Namespace) -> int:
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
