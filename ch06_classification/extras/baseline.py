"""Classical baselines: how far do we get without a language model?

Two scikit-learn models, trained on the same training split and scored on the same sets
with the same metrics as ``gpt-spam evaluate``:

- ``tfidf``: TF-IDF of word unigrams and bigrams together with character 2- to 5-grams
  (they catch "£1000", "FREE!!", "txt" and misspellings), then logistic regression. The
  usual strong baseline for short texts; it trains in seconds on a CPU.
- ``majority``: always the most frequent training class; its accuracy is the floor any
  classifier must beat (50 % on the balanced splits, 86.6 % on the realistic set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ch06_classification.storage.datafiles import SPLIT_FILES

BASELINES = {
    "tfidf": "TF-IDF (word + character n-grams) + logistic regression",
    "majority": "majority class",
}


def make_baseline(kind: str, seed: int = 123) -> Any:
    """An unfitted scikit-learn model with ``fit(texts, labels)`` and ``predict_proba``."""
    # Imported here: scikit-learn takes a second to import and only this step needs it.
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    if kind == "majority":
        return DummyClassifier(strategy="most_frequent")
    if kind == "tfidf":
        features = make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        )
        return make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {kind!r}")


@dataclass
class BaselineResult:
    kind: str
    name: str
    metrics: dict[str, Any]  # evaluate's sets -> BinaryMetrics
    train_seconds: float
    seconds: float  # fitting and scoring every set

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.kind,
            "name": self.name,
            "train_seconds": round(self.train_seconds, 3),
            "seconds": round(self.seconds, 3),
            "sets": {name: value.to_dict() for name, value in self.metrics.items()},
        }


def run_baseline(
    kind: str,
    data_dir: str | Path = "data",
    threshold: float | None = None,
    log: Callable[[str], None] = print,
) -> BaselineResult:
    """Fit a baseline on ``train.csv`` and measure it on every set, as ``evaluate`` does
    (``threshold``: two classes only, default 0.5)."""
    # Imported when a baseline runs: the command line imports this module for its names.
    from ch06_classification.evaluating.evaluation import evaluate_predictor
    from ch06_classification.sources.split_files import read_split

    start = time.perf_counter()
    model = make_baseline(kind)
    train = read_split(Path(data_dir) / SPLIT_FILES["train"])
    model.fit(train["Text"].tolist(), train["Label"].to_numpy())
    train_seconds = time.perf_counter() - start
    log(f"{BASELINES[kind]}: trained on {len(train):,} messages in {train_seconds:.1f} s")
    evaluation = evaluate_predictor(model.predict_proba, data_dir, threshold, log)
    seconds = time.perf_counter() - start
    return BaselineResult(kind, BASELINES[kind], evaluation.metrics, train_seconds, seconds)
