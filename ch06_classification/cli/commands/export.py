"""``gpt-spam export``: a trained run as a self-contained checkpoint or a transformers model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.cli.options import add_base_weights_option, add_run_dir_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained run in another format",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Write a trained run's model into a folder of its own.

  --format hf    model.safetensors, config.json and GPT-2's tokenizer files, which Hugging
                 Face transformers loads with GPT2ForSequenceClassification.from_pretrained
                 (DIR) or pipeline("text-classification", model=DIR), giving the same spam
                 probabilities (the head's bias is folded into the final LayerNorm, which
                 changes nothing it computes; call the pipeline with truncation=True to cut
                 messages at the run's max_length, as gpt-spam does). Not exportable
                 faithfully, and refused: a model trained with --token-position last (the
                 book's padded last position: transformers reads the last real token
                 instead) or first.
  --format full  a self-contained gpt-spam checkpoint (every tensor, ~500 MB for
                 gpt2-small) for a machine without the base weights; classify and evaluate
                 read it with --checkpoint/--run-dir, Python with
                 SpamClassifier.from_pretrained(DIR).""",
    )
    add_run_dir_option(parser)
    parser.add_argument(
        "--format",
        choices=["hf", "full"],
        required=True,
        help="hf: Hugging Face transformers; full: a self-contained gpt-spam checkpoint",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the folder to write into"
    )
    add_base_weights_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.export import export_full, export_hf
    from ch06_classification.storage.checkpoint import load_classifier
    from ch06_classification.storage.runs import latest_run_dir

    run_dir = args.run_dir or latest_run_dir()
    model, info = load_classifier(run_dir, weights_dir=args.weights_dir, verify=args.verify)
    export = export_hf if args.format == "hf" else export_full
    out = export(model, info, args.out)
    print(f"Exported {run_dir}/ as {args.format} to {out}/")
    return 0
