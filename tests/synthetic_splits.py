"""Tiny, learnable train/validation/test CSVs in the layout ``gpt-spam split`` writes."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

SPAM_WORDS = [
    "WIN",
    "FREE",
    "cash",
    "prize",
    "claim",
    "now",
    "urgent",
    "call",
    "txt",
    "reply",
    "STOP",
    "offer",
    "winner",
    "£1000",
]
HAM_WORDS = [
    "see",
    "you",
    "at",
    "lunch",
    "later",
    "ok",
    "thanks",
    "home",
    "mum",
    "dinner",
    "tonight",
    "love",
    "sorry",
    "busy",
]


def synthetic_message(spam: bool, rng: random.Random) -> str:
    words = SPAM_WORDS if spam else HAM_WORDS
    return " ".join(rng.choice(words) for _ in range(rng.randint(2, 14)))


def write_synthetic_splits(
    data_dir: Path, sizes: tuple[int, int, int] = (96, 24, 24), seed: int = 0
) -> Path:
    """Balanced splits whose classes use disjoint vocabularies: any working model learns them."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, size in zip(("train", "validation", "test"), sizes, strict=True):
        labels = [i % 2 for i in range(size)]
        rng.shuffle(labels)
        texts = [synthetic_message(bool(label), rng) for label in labels]
        pd.DataFrame({"Label": labels, "Text": texts}).to_csv(data_dir / f"{name}.csv", index=False)
    return data_dir
