"""How fast a trained run classifies: one message from a cold start, and many in batches.

    python scripts/benchmark.py --only classify --sms-source path/to/sms_spam_collection.zip
    python benchmarks/classify.py --classify-run-dir runs/20261125-101500 --data-dir data

Two figures, for a run folder (``--classify-run-dir``; without one, a gpt2-small run is
trained for one epoch from stand-in weights, the recipe seed's random GPT-2 written as
OpenAI's file (``common.stand_in_weights``): a run is as fast as any of the same size):

- **Cold start**: ``gpt-spam classify "WINNER! claim your prize"`` in a fresh process,
  from its start to its exit, several times; the first run only warms the page cache, and
  the figure is the median of the others. Everything counts: Python, importing PyTorch,
  the tokenizer, loading the run and its base weights, classifying, printing.
- **Batched**: the test split (300 messages) and ``--classify-messages`` messages of the
  collection, classified in this process in float32 and in bfloat16, each against its
  FLOP floor: the floating-point work the messages need (every real token through the
  frozen blocks; the last block at the classified token only) divided by this machine's
  measured matrix-multiply rate in that precision. floor / time is the share of the
  matrix units' speed that classification reaches (1.0: all of it).

Nothing is asserted; the figures are printed and returned to the runner.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: benchmarks/ is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    gpt_spam,
    load_average,
    matmul_rate,
    prepare_data,
    run_timed,
    say,
    stand_in_weights,
)
from benchmarks.finetune import block_flops

MESSAGE = "WINNER! claim your prize"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def classification_flops(lengths: Sequence[int], n_layers: int, emb_dim: int) -> float:
    """The work of classifying messages of these token counts at their last real token:
    the frozen blocks (all but the last) on every real token, attending causally; the last
    block at the classified token only, attending to the whole message (its key projection
    folded into the query, its value projection applied once to the attention-weighted
    average: ``fast_path.last_position_block``). The 2-way head is negligible."""
    return sum(
        (n_layers - 1) * block_flops(n, n * (n + 1) // 2, emb_dim) + block_flops(1, n, emb_dim)
        for n in lengths
    )


def cold_start(run_dir: Path, repeats: int, scratch: Path) -> list[float]:
    """Seconds of ``gpt-spam classify MESSAGE`` in fresh processes (after one that warms
    the page cache and the local cache)."""
    command = gpt_spam("classify", "--run-dir", str(run_dir), MESSAGE)
    run_timed(command, log=scratch / "classify-warm-up.log")
    return [run_timed(command, log=scratch / "classify.log").seconds for _ in range(repeats)]


def batched(run_dir: Path, texts: list[str], device: str) -> dict[str, Any]:
    """Seconds to classify ``texts`` in batches of 32 in each precision, and the floors."""
    from ch06_classification.classifying.spam_classifier import SpamClassifier

    classifier = SpamClassifier.from_pretrained(run_dir, device, batch_size=32)
    encoded = [classifier.encode(text) for text in texts]
    cfg = classifier.model.cfg
    flops = classification_flops([len(ids) for ids in encoded], cfg.n_layers, cfg.emb_dim)
    figures: dict[str, Any] = {"messages": len(texts), "tflop": flops / 1e12}
    for precision, dtype in DTYPES.items():
        start = time.perf_counter()
        classifier.set_precision(precision)
        cast = time.perf_counter() - start
        classifier.predict_proba_encoded(encoded[:32])  # warm-up
        _synchronize(device)
        start = time.perf_counter()
        classifier.predict_proba_encoded(encoded)
        _synchronize(device)
        seconds = time.perf_counter() - start
        rate = matmul_rate(dtype, device=device)
        figures[precision] = {
            "seconds": seconds,
            "cast_seconds": cast,
            "messages_per_second": len(texts) / seconds,
            "matmul_gflops": rate / 1e9,
            "floor_seconds": flops / rate,
            "floor_ratio": flops / rate / seconds,
        }
    return figures


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classification benchmark")
    group.add_argument(
        "--classify-run-dir",
        type=Path,
        help="the run to classify with (default: train one, 1 epoch from stand-in weights)",
    )
    group.add_argument(
        "--classify-messages",
        type=int,
        default=880,
        help="messages of the collection classified in batches, besides the test split "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--cold-starts", type=int, default=5, help="cold starts timed (default: %(default)s)"
    )
    group.add_argument(
        "--classify-device", default="cpu", help="where to classify (default: %(default)s)"
    )


def run(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    from ch06_classification.sources.sms import read_sms_spam
    from ch06_classification.sources.split_files import read_split
    from ch06_classification.storage.datafiles import SMS_SPAM_TSV, SPLIT_FILES

    say("== Classification: one message from a cold start; batches in float32 and bfloat16")
    say(f"  load average {load_average()}")
    test = read_split(Path(data_dir) / SPLIT_FILES["test"])["Text"].tolist()
    collection = read_sms_spam(Path(data_dir) / SMS_SPAM_TSV)["Text"].tolist()
    many = collection[: args.classify_messages]
    with tempfile.TemporaryDirectory(prefix="gpt-spam-benchmark-") as folder:
        scratch = Path(folder)
        run_dir = args.classify_run_dir
        if run_dir is None:
            say("- training a run to classify with (gpt2-small, stand-in weights, 1 epoch) ...")
            run_dir = scratch / "run"
            weights_dir = scratch / "weights"
            stand_in_weights("gpt2-small", weights_dir)
            run_timed(
                gpt_spam(
                    "train", "--weights", "pretrained", "--weights-dir", str(weights_dir),
                    "--epochs", "1",
                    "--data-dir", data_dir, "--run-dir", str(run_dir),
                    "--device", args.classify_device,
                ),
                log=scratch / "train.log",
            )  # fmt: skip
        starts = cold_start(run_dir, args.cold_starts, scratch)
        report: dict[str, Any] = {
            "cold_start_seconds": {"median": statistics.median(starts), "all": starts},
            "test": batched(run_dir, test, args.classify_device),
            "collection": batched(run_dir, many, args.classify_device),
        }
    report["load_after"] = load_average()
    say(describe(report))
    return report


def describe(report: dict[str, Any]) -> str:
    starts = report["cold_start_seconds"]
    lines = [
        f'  cold start, gpt-spam classify "{MESSAGE}": median {starts["median"]:.2f} s '
        f"(runs: {', '.join(f'{s:.2f}' for s in starts['all'])})"
    ]
    for name in ("test", "collection"):
        figures = report[name]
        lines.append(f"  {figures['messages']} messages ({figures['tflop']:.2f} TFLOP):")
        for precision in DTYPES:
            p = figures[precision]
            lines.append(
                f"    {precision}: {p['seconds']:.2f} s, {p['messages_per_second']:.0f} "
                f"messages/s (weights cast in {p['cast_seconds']:.2f} s); floor "
                f"{p['floor_seconds']:.2f} s at {p['matmul_gflops']:.0f} GFLOP/s: "
                f"{100 * p['floor_ratio']:.0f} % of it"
            )
    lines.append(f"  load average after: {report['load_after']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """This benchmark alone (``scripts/benchmark.py --only classify`` runs it too)."""
    parser = argparse.ArgumentParser(prog="benchmarks/classify.py", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--data-dir", help="a folder with the default splits (default: made)")
    parser.add_argument("--sms-source", help="local SMS Spam Collection (for --data-dir)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run(args, prepare_data(args.data_dir, args.sms_source, Path(scratch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
