"""How fast a trained run classifies: one message from a cold start, and many in batches.

    python benchmarks/classify.py                      # the latest run in runs/
    python benchmarks/classify.py --run-dir runs/20261125-101500 --messages 880 --json

Two figures, each for a real run folder (a run from ``--weights random`` is as fast as
one from OpenAI's weights):

- **Cold start**: ``gpt-spam classify "WINNER! claim your prize"`` in a fresh process,
  from start to exit, several times (the first run warms the page cache; the figure is
  the median of the rest). Everything counts: Python, importing PyTorch, the tokenizer,
  loading the run and its base weights, classifying, printing.
- **Batched**: the run's test split (or ``--file``, or its first ``--messages`` messages,
  repeated if need be) classified in float32 and in bfloat16, in this process, against
  the FLOP floor of each precision: the floating-point work the messages need (every
  real token through the frozen blocks, the last block at the classified token only)
  divided by this machine's measured matrix-multiplication rate in that precision. The
  ratio floor / time says how close classification comes to the hardware (1.0: as fast
  as the matrix units allow).

Nothing is asserted: the figures are printed (``--json``: one JSON object, for a runner
that collects benchmarks), together with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

MESSAGE = "WINNER! claim your prize"


def matmul_rate(dtype: Any, device: str = "cpu", tokens: int = 1024, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a GPT-2-small-shaped matrix product (tokens x 768 x 3072), the
    feed-forward's, on ``device`` in ``dtype``."""
    import torch

    a = torch.randn(tokens, 768, dtype=dtype, device=device)
    w = torch.randn(3072, 768, dtype=dtype, device=device)
    for _ in range(3):  # warm-up
        torch.nn.functional.linear(a, w)
    _synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(a, w)
        runs += 1
    _synchronize(device)
    return 2 * tokens * 768 * 3072 * runs / (time.perf_counter() - start)


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def classification_flops(lengths: Sequence[int], n_layers: int, emb_dim: int) -> float:
    """The work of classifying messages of these token counts at their last real token.

    Each frozen block (all but the last) runs on every real token: 12 emb_dim^2 weights
    per token (query, key, value and output projections, the 4x-wide feed-forward) and
    attention over the tokens before it; the last block only at the classified token
    (its key projection folded into the query, its value projection applied once to the
    attention-weighted average; see fast_path.last_position_block). 2 FLOPs per
    multiply-add; the 2-way head and the embeddings are negligible.
    """
    d = emb_dim
    total = 0.0
    for n in lengths:
        attended = n * (n + 1) // 2  # causal: token i attends to i + 1 tokens
        total += (n_layers - 1) * (2 * n * 12 * d * d + 2 * 2 * attended * d)
        total += 2 * 12 * d * d + 2 * 2 * n * d
    return total


def cold_start(run_dir: Path, repeats: int) -> list[float]:
    """Seconds of ``gpt-spam classify MESSAGE`` in fresh processes; the first run only
    warms the page cache and is left out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ch06_classification", "classify", "--run-dir"]
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([*command, str(run_dir), MESSAGE], check=True, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
    return times[1:]


def batched(
    run_dir: Path, texts: list[str], device: str, batch_size: int
) -> dict[str, dict[str, float]]:
    """Seconds to classify ``texts`` in each precision, and the FLOP floor of each."""
    import torch

    from ch06_classification.inference import SpamClassifier

    classifier = SpamClassifier.from_pretrained(run_dir, device, batch_size)
    encoded = [classifier.encode(text) for text in texts]
    cfg = classifier.model.cfg
    flops = classification_flops([len(ids) for ids in encoded], cfg.n_layers, cfg.emb_dim)
    figures = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        start = time.perf_counter()
        classifier.set_precision(precision)
        cast_seconds = time.perf_counter() - start
        classifier.predict_proba_encoded(encoded[:batch_size])  # warm-up
        start = time.perf_counter()
        classifier.predict_proba_encoded(encoded)
        _synchronize(device)
        seconds = time.perf_counter() - start
        rate = matmul_rate(dtype, device)
        floor = flops / rate
        figures[precision] = {
            "seconds": seconds,
            "cast_seconds": cast_seconds,
            "messages_per_second": len(texts) / seconds,
            "matmul_gflops": rate / 1e9,
            "floor_seconds": floor,
            "floor_ratio": floor / seconds,
        }
    classifier.set_precision("fp32")
    return {"tflop": flops / 1e12, "messages": len(texts), **figures}


def messages_to_classify(run_dir: Path, file: Path | None, count: int | None) -> list[str]:
    """``file``'s Text column, or the test split of the run's data; ``count`` of them
    (repeated to make up the count if there are fewer)."""
    from ch06_classification.checkpoint import read_classifier_info
    from ch06_classification.datafiles import SPLIT_FILES
    from ch06_classification.splits import read_split

    if file is None:
        settings = read_classifier_info(run_dir / "model.safetensors").extra.get("settings", {})
        data_dir = Path(settings.get("data_dir", "data"))
        candidates = [data_dir, run_dir.parent.parent / data_dir]
        file = next(
            (c / SPLIT_FILES["test"] for c in candidates if (c / SPLIT_FILES["test"]).is_file()),
            None,
        )
        if file is None:
            raise SystemExit(f"no test split found for {run_dir}: give one with --file")
    texts = read_split(file)["Text"].tolist()
    if count is not None:
        texts = (texts * (count // len(texts) + 1))[:count]
    return texts


def measure(
    run_dir: Path,
    file: Path | None = None,
    count: int | None = None,
    repeats: int = 5,
    device: str = "cpu",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Every figure of this benchmark, as a dict (what ``--json`` prints)."""
    texts = messages_to_classify(run_dir, file, count)
    starts = cold_start(run_dir, repeats)
    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "run_dir": str(run_dir),
        "cold_start_seconds": {
            "median": statistics.median(starts),
            "min": min(starts),
            "all": starts,
        },
        "batched": batched(run_dir, texts, device, batch_size),
    }


def cpu_name() -> str:
    """The processor's model name (Linux), else what Python knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(figures: dict[str, Any]) -> str:
    cold, batch = figures["cold_start_seconds"], figures["batched"]
    lines = [
        f"Run {figures['run_dir']} on {figures['machine']} "
        f"(load average {', '.join(f'{x:.2f}' for x in figures['load_average'])})",
        f'Cold start, `gpt-spam classify "{MESSAGE}"`: median {cold["median"]:.2f} s, '
        f"min {cold['min']:.2f} s over {len(cold['all'])} runs",
        f"Batched, {batch['messages']} messages ({batch['tflop']:.2f} TFLOP of work):",
    ]
    for precision in ("fp32", "bf16"):
        p = batch[precision]
        lines.append(
            f"  {precision}: {p['seconds']:.2f} s ({p['messages_per_second']:.0f} messages/s; "
            f"weights cast in {p['cast_seconds']:.2f} s); floor {p['floor_seconds']:.2f} s at "
            f"{p['matmul_gflops']:.0f} GFLOP/s: {100 * p['floor_ratio']:.0f} % of the floor"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a run folder (default: the latest run)")
    parser.add_argument("--file", type=Path, help="a CSV with a Text column to classify")
    parser.add_argument("--messages", type=int, help="classify this many messages")
    parser.add_argument("--repeats", type=int, default=5, help="cold starts timed (default 5)")
    parser.add_argument("--device", default="cpu", help="where to classify (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    from ch06_classification.runs import find_run

    run_dir = find_run(args.run_dir)
    run_dir = run_dir.parent if run_dir.is_file() else run_dir
    figures = measure(run_dir, args.file, args.messages, args.repeats, args.device, args.batch_size)
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
