"""How fast is fine-tuning, and how far from this machine's limits.

Runs ``gpt-spam train`` in a fresh process per measurement, from process start to the
run folder written, and reads the phases from the run's ``metrics.json``. Its weights are
a stand-in for OpenAI's file (``stand_in_weights``: the recipe seed's random GPT-2 in the
released layout), so each run takes the default recipe's path for its weights:

- the book's way (``--fast-path off``: every message padded to the longest, every block
  on every step), over ``--reference-epochs`` epochs scaled to five, in float32 and
  bfloat16;
- the fast path, the default recipe's 5 epochs, in float32 and bfloat16;
- optionally larger GPT-2s (``--models``), fast path, bfloat16.

Beside each measured phase it prints its floor on this machine: the floating-point work
divided by the measured matrix-multiply rate, and for the training loop also the memory
traffic of AdamW (it reads a parameter, its gradient and two moments and writes the
parameter and both moments back: 28 bytes per trained parameter per step) divided by the
measured memory bandwidth. The ratios say which phase is bound by what.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Machine, gpt_spam, load_average, run_timed, say, stand_in_weights

RECIPE_EPOCHS = 5
ADAMW_BYTES_PER_PARAMETER = 28  # reads param, grad, m, v (16 B); writes param, m, v (12 B)
MODELS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")


# --- The work the fast path must do ----------------------------------------------------


def block_flops(tokens: int, attended: int, emb_dim: int) -> float:
    """Forward FLOPs of one transformer block for ``tokens`` positions that attend to
    ``attended`` key positions in total: 12 emb_dim^2 weights per token (query, key, value
    and output projections, and the 4x-wide feed-forward), 2 FLOPs per multiply-add."""
    return 2 * tokens * 12 * emb_dim**2 + 2 * 2 * attended * emb_dim


def fast_path_flops(
    distinct_lengths: Sequence[int],
    train_batches: Sequence[Sequence[int]],
    eval_batches_per_epoch: int,
    final_batches: Sequence[Sequence[int]],
    frozen_blocks: int,
    emb_dim: int,
    n_heads: int,
    epochs: int,
) -> dict[str, float]:
    """FLOPs of the fast path, from the real token counts.

    - prefix: the frozen blocks, once over every distinct message's real tokens;
    - training: per message, the last block at its classified token (query, folded key and
      value projections, output projection, feed-forward: 12 emb^2 weights) plus attention
      scores and averages over the batch's padded width per head, and the head; backward
      counted as twice the forward;
    - evaluation: forward passes of the same for the periodic and final evaluations.
    """
    d = emb_dim

    def top_forward(lengths: Sequence[float]) -> float:
        width = max(lengths)  # scores and averages run over the batch's padded width
        per_message = 2 * 12 * d**2 + 2 * 2 * n_heads * width * d + 2 * d * 2
        return len(lengths) * per_message

    prefix = sum(frozen_blocks * block_flops(n, n * (n + 1) // 2, d) for n in distinct_lengths)
    per_epoch = sum(3 * top_forward(batch) for batch in train_batches)
    # Evaluation batches are drawn at random: count them like an average training batch.
    per_epoch += eval_batches_per_epoch * per_epoch / (3 * len(train_batches))
    final = sum(top_forward(batch) for batch in final_batches)
    return {"prefix": prefix, "training": epochs * per_epoch, "final": final}


def adamw_bytes(trained_parameters: int, steps: int) -> int:
    """Memory traffic of ``steps`` AdamW updates: its floor on any machine."""
    return ADAMW_BYTES_PER_PARAMETER * trained_parameters * steps


def trained_parameters(model: str) -> int:
    """Parameters the default recipe trains (last block, final norm, 2-way head), counted
    on a model built without storage."""
    from ch06_classification.finetuning.model import build_classifier
    from gpt.loading import skip_init
    from gpt.model import count_parameters

    with torch.device("meta"), skip_init():
        classifier = build_classifier(model, "random")
    return count_parameters(classifier, trainable_only=True)


def recipe_work(data_dir: str, model: str = "gpt2-small") -> dict[str, Any]:
    """The default recipe's FLOPs by phase and its optimizer steps, for ``model``."""
    from ch06_classification.finetuning.finetune import TrainingSettings
    from ch06_classification.finetuning.loaders import create_data_loaders
    from ch06_classification.speed.fast_path import classified_sequences
    from gpt.config import get_config
    from gpt.tokenizer import get_tokenizer

    settings = TrainingSettings()
    loaders = create_data_loaders(data_dir, get_tokenizer(), batch_size=settings.batch_size)
    sequences = [s for loader in loaders for s in classified_sequences(loader.dataset, "flexible")]
    distinct = {tuple(s.tolist()) for s in sequences}
    train_batches = [lengths.tolist() for _, _, lengths in loaders.train]
    final_batches = [lengths.tolist() for loader in loaders for _, _, lengths in loader]
    steps = len(train_batches)
    evaluations = len(range(0, steps, settings.eval_freq)) * 2 + 2  # periodic, then accuracy
    cfg = get_config(model)
    flops = fast_path_flops(
        distinct_lengths=[len(s) for s in distinct],
        train_batches=train_batches,
        eval_batches_per_epoch=evaluations * settings.eval_iter,
        final_batches=final_batches,
        frozen_blocks=cfg.n_layers - 1,
        emb_dim=cfg.emb_dim,
        n_heads=cfg.n_heads,
        epochs=RECIPE_EPOCHS,
    )
    return {"flops": flops, "optimizer_steps": steps * RECIPE_EPOCHS}


# --- Measurements ----------------------------------------------------------------------


def train(
    data_dir: str, weights_dir: Path, scratch: Path, name: str, *options: str
) -> dict[str, Any]:
    """``gpt-spam train --weights-dir WEIGHTS_DIR OPTIONS`` in a fresh process: wall time,
    peak memory, and the run's metrics.json. With ``--no-cache``: every run computes the
    frozen blocks' output, as a first run does, whatever an earlier benchmark kept."""
    run_dir = scratch / name
    command = gpt_spam(
        "train", "--weights", "pretrained", "--weights-dir", str(weights_dir), "--device",
        "cpu", "--data-dir", data_dir, "--run-dir", str(run_dir), "--no-cache", *options,
    )  # fmt: skip
    timed = run_timed(command, log=scratch / f"{name}.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "command": " ".join(["gpt-spam", *command[3:]]),
        "seconds": timed.seconds,
        "peak_gb": timed.peak_gb,
        "prefix_seconds": metrics["prefix_cache_seconds"],
        "loop_seconds": metrics["training_seconds"],
        "recipe_seconds": metrics["recipe_seconds"],
        "path": metrics["training_path"],
        "accuracy": metrics["accuracy"],
    }


def five_epochs(reference: dict[str, Any], epochs: int) -> float:
    """A reference run's 5-epoch time: without a cache every epoch costs the same, so its
    training loop is scaled; start-up and the final evaluation run once."""
    return reference["seconds"] + reference["loop_seconds"] * (RECIPE_EPOCHS / epochs - 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fine-tuning benchmark")
    group.add_argument(
        "--reference-epochs",
        type=int,
        default=1,
        choices=range(0, RECIPE_EPOCHS + 1),
        metavar=f"{{0..{RECIPE_EPOCHS}}}",
        help=(
            "epochs of the book's way to run; its 5-epoch time is scaled from them (default: "
            "%(default)s; 5 runs it in full, tens of minutes on a laptop CPU; 0 skips it)"
        ),
    )
    group.add_argument(
        "--models",
        default="gpt2-small",
        help=(
            "comma-separated GPT-2 sizes to fine-tune the fast way in bfloat16, besides "
            f"the recipe's gpt2-small in both precisions (of {', '.join(MODELS)}; "
            "default: %(default)s)"
        ),
    )


def run(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"benchmark.py: unknown model {unknown[0]!r}: use {', '.join(MODELS)}")
    say("== Fine-tuning: the default recipe (5 epochs, batch 8, last block; stand-in weights)")
    machine = Machine.measure()
    say(f"  machine: {machine.describe()}")
    report: dict[str, Any] = {"machine": machine.__dict__}
    with tempfile.TemporaryDirectory(prefix="gpt-spam-benchmark-") as folder:
        scratch = Path(folder)
        weights_dir = scratch / "weights"
        say("- writing stand-in weights (gpt2-small) ...")
        stand_in_weights("gpt2-small", weights_dir)

        def measure(name: str, label: str, *options: str) -> dict[str, Any]:
            say(f"- {label} ...")
            figures = train(data_dir, weights_dir, scratch, name, *options)
            say(
                f"  {figures['seconds']:.1f} s (prefix {figures['prefix_seconds']:.1f} s, "
                f"loop {figures['loop_seconds']:.1f} s), peak {figures['peak_gb']:.2f} GB; "
                f"{figures['command']}"
            )
            return figures

        runs: dict[str, dict[str, Any]] = {}
        epochs = args.reference_epochs
        for precision in ("fp32", "bf16"):
            if epochs:
                runs[f"book_{precision}"] = measure(
                    f"book-{precision}", f"the book's way, {precision}, {epochs} epoch(s)",
                    "--fast-path", "off", "--precision", precision, "--epochs", str(epochs),
                )  # fmt: skip
        for precision in ("fp32", "bf16"):
            runs[f"fast_{precision}"] = measure(
                f"fast-{precision}", f"fast path, {precision}", "--precision", precision
            )
        for model in models:
            if model != "gpt2-small":
                say(f"- writing stand-in weights ({model}) ...")
                weights = stand_in_weights(model, weights_dir)
                runs[f"fast_bf16_{model}"] = measure(
                    f"fast-bf16-{model}", f"fast path, bf16, {model}",
                    "--precision", "bf16", "--model", model,
                )  # fmt: skip
                weights.unlink()  # gpt2-xl's is 6.2 GB
    report["runs"] = runs
    report["load_after"] = load_average()
    report.update(summarise(runs, machine, data_dir, epochs, models))
    return report


# --- The report ------------------------------------------------------------------------


def summarise(
    runs: dict[str, dict[str, Any]],
    machine: Machine,
    data_dir: str,
    reference_epochs: int,
    models: Sequence[str],
) -> dict[str, Any]:
    rates, bandwidth = machine.matmul_flops, machine.memory_bytes_per_second
    say()
    scaled = (
        f"; the book's way: {reference_epochs} epoch(s) timed, scaled"
        if 0 < reference_epochs < RECIPE_EPOCHS
        else ""
    )
    say(f"Fine-tuning gpt2-small, 5 epochs, process start to run folder written{scaled}:")
    say(f"  {'':<34}{'float32':>22}{'bfloat16':>22}")
    rows = [("the book's way (--fast-path off)", "book"), ("fast path (the default)", "fast")]
    for label, key in rows:
        cells = []
        for precision in ("fp32", "bf16"):
            figures = runs.get(f"{key}_{precision}")
            if figures is None:
                cells.append(f"{'-':>22}")
                continue
            seconds = (
                five_epochs(figures, reference_epochs) if key == "book" else figures["seconds"]
            )
            figures["five_epoch_seconds"] = seconds
            cells.append(f"{seconds:>11,.1f} s {figures['peak_gb']:5.2f} GB")
        say(f"  {label:<34}{''.join(cells)}")
    fast32, fast16 = runs["fast_fp32"], runs["fast_bf16"]
    summary: dict[str, Any] = {"bf16_over_fp32": fast16["seconds"] / fast32["seconds"]}
    say(f"  bfloat16 / float32, fast path: {summary['bf16_over_fp32']:.2f}x")
    if "book_fp32" in runs:
        for precision in ("fp32", "bf16"):
            speedup = (
                runs[f"book_{precision}"]["five_epoch_seconds"]
                / runs[f"fast_{precision}"]["seconds"]
            )
            summary[f"speedup_{precision}"] = speedup
            say(f"  fast path over the book's way, {precision}: {speedup:.1f}x")
    say()
    say("Accuracy (train / validation / test, every example):")
    for name, figures in runs.items():
        accuracy = figures["accuracy"]
        shown = " / ".join(f"{100 * accuracy[s]:.2f}" for s in ("train", "validation", "test"))
        say(f"  {name:<24} {shown} %")

    say()
    work = recipe_work(data_dir)
    flops, steps = work["flops"], work["optimizer_steps"]
    params = trained_parameters("gpt2-small")
    traffic = adamw_bytes(params, steps)
    total = sum(flops.values())
    say(
        f"Work of the fast path: {total / 1e12:.2f} TFLOP (prefix {flops['prefix'] / 1e12:.2f}, "
        f"training {flops['training'] / 1e12:.3f}, final evaluation {flops['final'] / 1e12:.3f}); "
        f"AdamW {steps} steps x {params:,} parameters x {ADAMW_BYTES_PER_PARAMETER} B = "
        f"{traffic / 1e9:.0f} GB of memory traffic"
    )
    say(f"  {'phase':<20}{'':>4}{'measured':>10}{'FLOP floor':>12}{'memory floor':>14}{'ratio':>8}")
    floors: dict[str, Any] = {}
    for precision, figures in (("fp32", fast32), ("bf16", fast16)):
        rate = rates[precision]
        final = figures["recipe_seconds"] - figures["prefix_seconds"] - figures["loop_seconds"]
        startup = figures["seconds"] - figures["recipe_seconds"]
        adamw = traffic / bandwidth
        phases = [
            ("start-up and saving", startup, 0.0, 0.0),
            ("prefix cache", figures["prefix_seconds"], flops["prefix"] / rate, 0.0),
            (
                "training loop",
                figures["loop_seconds"],
                flops["training"] / rate,
                traffic / bandwidth,
            ),
            ("final evaluation", final, flops["final"] / rate, 0.0),
            ("whole run", figures["seconds"], total / rate, adamw),
        ]
        for phase, seconds, flop_floor, memory_floor in phases:
            floor = max(flop_floor, memory_floor)
            ratio = f"{seconds / floor:7.2f}x" if floor else f"{'':>8}"
            memory = f"{memory_floor:12.1f} s" if memory_floor else f"{'':>14}"
            flop = f"{flop_floor:10.1f} s" if flop_floor else f"{'':>12}"
            say(f"  {phase:<20}{precision:>4}{seconds:8.1f} s{flop}{memory}{ratio}")
        floors[precision] = {
            "flop_floor_seconds": total / rate,
            "adamw_floor_seconds": traffic / bandwidth,
            "over_flop_floor": figures["seconds"] / (total / rate),
        }
        say(
            f"  {precision}: the whole run at {floors[precision]['over_flop_floor']:.2f}x its "
            f"FLOP floor ({total / rate:.1f} s at {rate / 1e9:.0f} GFLOP/s)"
        )
    summary["floors"] = floors
    summary["work"] = {"flops": flops, "optimizer_steps": steps, "trained_parameters": params}

    larger = [m for m in models if m != "gpt2-small"]
    if larger:
        say()
        say("Larger GPT-2s, fast path, bfloat16, 5 epochs (last block trained):")
        sizes = {}
        for model in ["gpt2-small", *larger]:
            figures = fast16 if model == "gpt2-small" else runs[f"fast_bf16_{model}"]
            model_flops = sum(recipe_work(data_dir, model)["flops"].values())
            floor = model_flops / rates["bf16"]
            sizes[model] = {"seconds": figures["seconds"], "peak_gb": figures["peak_gb"],
                            "flop_floor_seconds": floor}  # fmt: skip
            say(
                f"  {model:<12} {figures['seconds'] / 60:6.1f} min"
                f"  peak {figures['peak_gb']:5.2f} GB"
                f"  {model_flops / 1e12:7.1f} TFLOP, floor {floor / 60:5.1f} min "
                f"({figures['seconds'] / floor:.2f}x)"
            )
        summary["sizes"] = sizes
    return summary
