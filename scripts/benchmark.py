"""Benchmark fine-tuning: the book's straightforward path against the fast path.

Runs the default recipe (gpt2-small, 5 epochs, real SMS data, random weights) both ways,
each in a fresh process, then measures inference; prints wall times, peak memory, the
speed-up, both paths' accuracies, and the work done against this machine's matmul rate.
The logic lives in ch06_classification/benchmark.py. Offline:

    SMS_SPAM_SOURCE=../shared/data/sms_spam_collection.zip python scripts/benchmark.py
"""

import sys

from ch06_classification.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
