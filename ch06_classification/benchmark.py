"""How fast is fine-tuning, and why: the book's straightforward path against the fast path.

``python scripts/benchmark.py`` runs the default recipe (gpt2-small, last block trainable,
5 epochs, batch 8, the real SMS data; random weights, since the time does not depend on
their values) once the book's way and once the fast way, each in a fresh process so its
peak memory is its own, then measures inference. It prints wall times, peak memory, the
speed-up, the accuracies of both paths, and the floating-point work the fast path must do
against this machine's measured matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RECIPE_EPOCHS = 5
TARGETS = {"speedup": 20.0, "fast_fp32_seconds": 90.0, "fast_bf16_seconds": 45.0, "peak_gb": 3.0}


# --- This machine ------------------------------------------------------------------------


def matmul_rate(dtype: torch.dtype, tokens: int = 2048, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a GPT-2-small-shaped matrix multiplication (tokens x 768 x 3072)."""
    a = torch.randn(tokens, 768, dtype=dtype)
    w = torch.randn(3072, 768, dtype=dtype)
    for _ in range(3):  # warm-up
        torch.nn.functional.linear(a, w)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(a, w)
        runs += 1
    return 2 * tokens * 768 * 3072 * runs / (time.perf_counter() - start)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)


# --- The work the fast path must do --------------------------------------------------------


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


# --- One measurement, in a fresh process -----------------------------------------------------


def measure_training(
    data_dir: str, fast_path: str, precision: str, epochs: int, implementation: str = "fused"
) -> dict[str, Any]:
    from ch06_classification.finetune import TrainingSettings, fine_tune

    settings = TrainingSettings(
        weights="random",
        data_dir=data_dir,
        fast_path=fast_path,
        precision=precision,
        epochs=epochs,
        device="cpu",
        config_overrides={"implementation": implementation},
    )
    result = fine_tune(settings, log=lambda line: print("   ", line, file=sys.stderr))
    return {
        "path": result.path,
        "precision": precision,
        "epochs": epochs,
        "recipe_seconds": result.recipe_seconds,
        "prefix_seconds": result.prefix_seconds,
        "train_seconds": result.train_seconds,
        "accuracies": result.accuracies,
        "final_train_loss": result.history.train_losses[-1],
        "peak_gb": peak_memory_gb(),
    }


def measure_inference(data_dir: str, precision: str) -> dict[str, Any]:
    """Messages per second (300 test messages, 1,000 from the collection) and the latency of
    one message, for a gpt2-small classifier (random weights: speed does not depend on them)."""
    from ch06_classification.checkpoint import ClassifierInfo
    from ch06_classification.classifier import build_classifier
    from ch06_classification.datafiles import SMS_SPAM_TSV, SPLIT_FILES
    from ch06_classification.download import read_sms_spam
    from ch06_classification.inference import SpamClassifier
    from ch06_classification.splits import read_split

    model = build_classifier(weights="random")
    info = ClassifierInfo(config=model.cfg, max_length=120)
    classifier = SpamClassifier(model, info, "cpu", batch_size=32, precision=precision)
    test = read_split(Path(data_dir) / SPLIT_FILES["test"])["Text"].tolist()
    thousand = read_sms_spam(Path(data_dir) / SMS_SPAM_TSV)["Text"].tolist()[:1000]
    classifier.predict_proba(test[:32])  # warm-up

    def rate(texts: list[str]) -> float:
        start = time.perf_counter()
        classifier.predict_proba(texts)
        return len(texts) / (time.perf_counter() - start)

    latencies = []
    for text in test[:20]:
        start = time.perf_counter()
        classifier.predict_proba(text)
        latencies.append(time.perf_counter() - start)
    return {
        "precision": precision,
        "test_300_per_second": rate(test),
        "collection_1000_per_second": rate(thousand),
        "one_message_ms": 1000 * sorted(latencies)[len(latencies) // 2],
        "peak_gb": peak_memory_gb(),
    }


def run_measurement(kind: str, data_dir: str, **options: Any) -> dict[str, Any]:
    """Run one measurement in a child process; return what it reports."""
    command = [
        sys.executable,
        "-m",
        "ch06_classification.benchmark",
        "--measure",
        kind,
        "--data-dir",
        data_dir,
        "--options",
        json.dumps(options),
    ]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- The report ----------------------------------------------------------------------------


def prepare_data(data_dir: str | None, sms_source: str | None, scratch: Path) -> str:
    """A data folder with the default splits: ``data_dir`` if it has them, else made fresh."""
    from ch06_classification.datafiles import SMS_SPAM_TSV, SPLIT_FILES
    from ch06_classification.download import download_sms_spam, load_sms_spam
    from ch06_classification.splits import write_splits

    needed = [SMS_SPAM_TSV, *SPLIT_FILES.values()]
    if data_dir and all((Path(data_dir) / name).is_file() for name in needed):
        return data_dir
    target = scratch / "data"
    download_sms_spam(target, source=sms_source)
    write_splits(load_sms_spam(target), target)
    return str(target)


def work_of_the_fast_path(data_dir: str) -> dict[str, float]:
    from ch06_classification.dataset import create_data_loaders
    from ch06_classification.finetune import TrainingSettings, classified_sequences
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
    cfg = get_config(settings.model)
    return fast_path_flops(
        distinct_lengths=[len(s) for s in distinct],
        train_batches=train_batches,
        eval_batches_per_epoch=evaluations * settings.eval_iter,
        final_batches=final_batches,
        frozen_blocks=cfg.n_layers - 1,
        emb_dim=cfg.emb_dim,
        n_heads=cfg.n_heads,
        epochs=RECIPE_EPOCHS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py",
        description=(
            "Time the book's straightforward fine-tuning against the fast path (gpt2-small, "
            "5 epochs, real SMS data, random weights), and inference."
        ),
    )
    parser.add_argument("--data-dir", help="a folder with the default splits (default: made anew)")
    parser.add_argument(
        "--sms-source", help="local SMS Spam Collection zip/TSV (default: $SMS_SPAM_SOURCE)"
    )
    parser.add_argument(
        "--reference-epochs",
        type=int,
        default=1,
        choices=range(1, RECIPE_EPOCHS + 1),
        metavar=f"{{1..{RECIPE_EPOCHS}}}",
        help=(
            "epochs of the slow reference path to run; its 5-epoch time is scaled from them "
            "(default: %(default)s; 5 runs it in full, tens of minutes on a laptop CPU)"
        ),
    )
    parser.add_argument("--output", help="also write the figures to this JSON file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        options = json.loads(args.options)
        if args.measure == "training":
            figures = measure_training(args.data_dir, **options)
        else:
            figures = measure_inference(args.data_dir, **options)
        print(json.dumps(figures))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = prepare_data(args.data_dir, args.sms_source, Path(scratch))
        report = run_benchmark(data_dir, args.reference_epochs)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def say(line: str = "") -> None:
    print(line, flush=True)


def run_benchmark(data_dir: str, reference_epochs: int) -> dict[str, Any]:
    say("gpt-spam fine-tuning benchmark")
    say(
        f"  machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    say(
        f"  matrix multiply (2048 x 768 x 3072): fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s"
    )
    say(
        "  recipe: gpt2-small, last block + final norm + head trainable, 5 epochs, batch 8, "
        "lr 5e-5, seed 123, flexible token; random weights; timed from data and model ready"
    )
    say()

    def train(label: str, epochs: int, **options: Any) -> dict[str, Any]:
        say(f"- {label}, {epochs} epoch(s) ...")
        figures = run_measurement("training", data_dir, epochs=epochs, **options)
        say(
            f"  {figures['recipe_seconds']:.1f} s (training loop {figures['train_seconds']:.1f} s"
            f"), peak memory {figures['peak_gb']:.2f} GB, accuracy (train/val/test) "
            + _accuracies(figures["accuracies"])
        )
        return figures

    fp32 = {"precision": "fp32"}
    book = train(
        "reference: the book's way (its spelled-out LayerNorm, GELU and attention)",
        reference_epochs,
        fast_path="off",
        implementation="manual",
        **fp32,
    )
    fused = train(
        "reference with PyTorch's fused kernels", reference_epochs, fast_path="off", **fp32
    )
    fast_same = None
    if reference_epochs != RECIPE_EPOCHS:
        fast_same = train(
            "fast path, to compare accuracy", reference_epochs, fast_path="on", **fp32
        )
    fast = train("fast path, fp32", RECIPE_EPOCHS, fast_path="on", **fp32)
    fast_bf16 = train("fast path, bf16", RECIPE_EPOCHS, fast_path="on", precision="bf16")
    say("- inference ...")
    inference = {p: run_measurement("inference", data_dir, precision=p) for p in ("fp32", "bf16")}

    scale = RECIPE_EPOCHS / reference_epochs

    def five_epochs(reference: dict[str, Any]) -> float:
        # Without a cache every epoch costs the same: scale the training loop, and add the
        # final evaluation on every example, which runs once.
        loop = reference["train_seconds"]
        return loop * scale + (reference["recipe_seconds"] - loop)

    book_seconds, fused_seconds = five_epochs(book), five_epochs(fused)
    speedup = book_seconds / fast["recipe_seconds"]
    work = work_of_the_fast_path(data_dir)
    total_flops = sum(work.values())

    say()
    scaled = f", {reference_epochs} epoch timed, scaled" if scale != 1 else ""
    say(f"Fine-tuning, 5 epochs, float32 unless noted (peak = peak resident memory{scaled}):")
    rows = [
        ("reference, the book's way", book_seconds, book),
        ("reference, fused kernels", fused_seconds, fused),
        ("fast path", fast["recipe_seconds"], fast),
        ("fast path, bf16", fast_bf16["recipe_seconds"], fast_bf16),
    ]
    for label, seconds, figures in rows:
        detail = ""
        if figures["path"] == "fast":
            detail = (
                f"   (frozen-prefix cache {figures['prefix_seconds']:.1f} s, "
                f"training loop {figures['train_seconds']:.1f} s)"
            )
        say(f"  {label:<27} {seconds:7.1f} s   peak {figures['peak_gb']:.2f} GB{detail}")
    say(f"  speed-up over the book's way:     {speedup:5.1f}x")
    say(f"  speed-up over the fused reference: {fused_seconds / fast['recipe_seconds']:4.1f}x")
    say()
    compare = fast_same or fast
    same = compare["accuracies"] == fused["accuracies"]
    say(
        f"Accuracy after {reference_epochs} epoch(s) from the same weights and seed "
        f"(train/val/test): fused reference {_accuracies(fused['accuracies'])}, fast path "
        f"{_accuracies(compare['accuracies'])} -> {'identical' if same else 'DIFFERENT'}; "
        f"the book's way {_accuracies(book['accuracies'])}"
    )
    say(
        f"Accuracy after 5 epochs (train/val/test): fp32 {_accuracies(fast['accuracies'])}, "
        f"bf16 {_accuracies(fast_bf16['accuracies'])}"
    )
    say()
    say("Work the fast path must do:")
    for part, flops in work.items():
        say(f"  {part:<10} {flops / 1e12:7.2f} TFLOP")
    say(f"  total      {total_flops / 1e12:7.2f} TFLOP")
    for precision, figures in (("fp32", fast), ("bf16", fast_bf16)):
        bound = total_flops / rates[precision]
        say(
            f"  {precision}: at least {bound:.1f} s at {rates[precision] / 1e9:.0f} GFLOP/s; "
            f"measured {figures['recipe_seconds']:.1f} s, "
            f"{100 * bound / figures['recipe_seconds']:.0f}% of the matrix-multiply rate"
        )
    say()
    say("Inference (gpt2-small, batches of 32 sorted by length):")
    for precision, figures in inference.items():
        say(
            f"  {precision}: {figures['test_300_per_second']:6.1f} messages/s over the 300 test "
            f"messages, {figures['collection_1000_per_second']:6.1f} messages/s over 1,000, "
            f"one message {figures['one_message_ms']:.0f} ms"
        )
    say()
    checks = {
        f"fast path at least {TARGETS['speedup']:g}x faster than the book's way": speedup
        >= TARGETS["speedup"],
        f"fast path fp32 under {TARGETS['fast_fp32_seconds']:g} s": fast["recipe_seconds"]
        < TARGETS["fast_fp32_seconds"],
        f"fast path bf16 under {TARGETS['fast_bf16_seconds']:g} s": fast_bf16["recipe_seconds"]
        < TARGETS["fast_bf16_seconds"],
        f"fast path peak memory under {TARGETS['peak_gb']:g} GB": fast["peak_gb"]
        < TARGETS["peak_gb"],
        "identical accuracy to the reference (fp32)": same,
    }
    say("Targets:")
    for check, ok in checks.items():
        say(f"  [{'x' if ok else ' '}] {check}")
    return {
        "reference_book": book,
        "reference_fused": fused,
        "reference_seconds_5_epochs": {"book": book_seconds, "fused": fused_seconds},
        "fast": fast,
        "fast_same_epochs_as_reference": fast_same,
        "fast_bf16": fast_bf16,
        "speedup": {"book": speedup, "fused": fused_seconds / fast["recipe_seconds"]},
        "inference": inference,
        "flops": work,
        "matmul_flops_per_second": rates,
        "targets_met": checks,
    }


def _accuracies(accuracies: dict[str, float]) -> str:
    """E.g. '90.96/88.59/88.00 %' (train/validation/test)."""
    splits = ("train", "validation", "test")
    return "/".join(f"{100 * accuracies[split]:.2f}" for split in splits) + " %"


if __name__ == "__main__":
    sys.exit(main())
