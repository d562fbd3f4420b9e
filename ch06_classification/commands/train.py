"""``gpt-spam train``: fine-tune GPT-2 as a spam classifier and save the run."""

from __future__ import annotations

import argparse

from ch06_classification.commands.options import (
    add_data_dir_option,
    add_device_option,
    add_model_options,
    dropout_rate,
    non_negative_float,
    positive_float,
    positive_int,
)


def _context_length(value: str) -> str | int:
    if value in ("longest", "model"):
        return value
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"use 'longest', 'model' or a number of tokens of at least 1, not {value!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    from ch06_classification.classifier import TOKEN_POSITIONS, TRAINABLE_LAYERS
    from ch06_classification.finetune import TrainingSettings

    defaults = TrainingSettings()
    parser = subparsers.add_parser(
        "train",
        help="fine-tune GPT-2 on the training split",
        description=(
            "Fine-tune GPT-2 as a spam classifier (the book's recipe by default) and save "
            "the checkpoint, metrics, history and loss/accuracy plots in a run folder."
        ),
    )
    add_model_options(parser)
    add_data_dir_option(parser)
    parser.add_argument(
        "--trainable-layers",
        choices=TRAINABLE_LAYERS,
        default=defaults.trainable_layers,
        help="what is fine-tuned; everything else stays frozen (default: %(default)s)",
    )
    parser.add_argument(
        "--token-position",
        choices=TOKEN_POSITIONS,
        default=defaults.token_position,
        help=(
            "which token's output is classified: the last real token (flexible), the last "
            "position of the padded row (last, the book's), or the first (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--context-length",
        type=_context_length,
        default=defaults.context_length,
        metavar="{longest,model,N}",
        help=(
            "cut messages to the longest training message, the model's full context "
            "(1,024 tokens), or N tokens (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=defaults.epochs, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=defaults.lr,
        help="AdamW learning rate, above 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=defaults.weight_decay,
        help="AdamW weight decay, 0 or more (default: %(default)s)",
    )
    parser.add_argument(
        "--drop-rate",
        type=dropout_rate,
        default=defaults.drop_rate,
        help="dropout probability, from 0 to below 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-freq",
        type=positive_int,
        default=defaults.eval_freq,
        help="evaluate the loss every N steps (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-iter",
        type=positive_int,
        default=defaults.eval_iter,
        help="batches per periodic evaluation (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    add_device_option(parser)
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=defaults.precision,
        help="bf16 autocasts matrix multiplications to bfloat16 (default: %(default)s)",
    )
    parser.add_argument(
        "--fast-path",
        choices=["auto", "on", "off"],
        default=defaults.fast_path,
        help=(
            "cache the frozen blocks and compute only the classified token (on), train the "
            "book's straightforward way (off), or use the fast path where it is exact (auto, "
            "the default)"
        ),
    )
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help=(
            "where to save this run: a new or empty folder, or with --overwrite an earlier "
            "run's (default: a new runs/<timestamp>/ folder)"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace the run already in --run-dir, with its evaluations and plots "
            "(default: refuse to)"
        ),
    )
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace):
    from ch06_classification.finetune import TrainingSettings

    return TrainingSettings(
        model=args.model,
        weights=args.weights,
        weights_dir=args.weights_dir,
        trainable_layers=args.trainable_layers,
        token_position=args.token_position,
        context_length=args.context_length,
        drop_rate=args.drop_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        fast_path=args.fast_path,
        data_dir=str(args.data_dir),
    )


def run(args: argparse.Namespace) -> int:
    from ch06_classification.finetune import fine_tune
    from ch06_classification.runs import checkpoint_bytes, claim_run_dir, save_training_run
    from gpt.config import get_config

    # The run folder is claimed before training, so that a folder that is in use, already
    # holds a run, cannot be written or has no room is found now, not after the work.
    needed = checkpoint_bytes(get_config(args.model)) + 10 * 1024**2  # + metrics and plots
    with claim_run_dir(args.run_dir, args.overwrite, needed) as run_dir:
        result = fine_tune(settings_from_args(args))
        save_training_run(result, run_dir)
    print(f"Saved the run to {run_dir}/ (model.safetensors, metrics.json, history.json, plots)")
    return 0
