"""Run the benchmarks in benchmarks/ and keep their figures.

    python scripts/benchmark.py --sms-source path/to/sms_spam_collection.zip
    make benchmark ARGS="--sms-source path/to/sms_spam_collection.zip --models gpt2-small,gpt2-xl"

Each benchmark prints its report; all the figures are also written as JSON to
runs/benchmarks/<date-time>.json. ``--only`` picks benchmarks; ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed

from benchmarks import classify, finetune
from benchmarks.common import prepare_data, say

# Each module: add_arguments(parser) for its options, run(args, data_dir) -> its figures.
BENCHMARKS = {"finetune": finetune, "classify": classify}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Measure gpt-spam on this machine: " + ", ".join(BENCHMARKS) + ".",
    )
    parser.add_argument("--data-dir", help="a folder with the default splits (default: made anew)")
    parser.add_argument(
        "--sms-source", help="local SMS Spam Collection zip/TSV (default: $SMS_SPAM_SOURCE)"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated benchmarks to run (default: %(default)s)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs/benchmarks"),
        help="where the figures are written as JSON (default: %(default)s)",
    )
    for module in BENCHMARKS.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: use {', '.join(BENCHMARKS)}")

    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = prepare_data(args.data_dir, args.sms_source, Path(scratch))
        for name in chosen:
            report[name] = BENCHMARKS[name].run(args, data_dir)
            say()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    say(f"Figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
