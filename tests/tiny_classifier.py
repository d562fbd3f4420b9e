"""A tiny classifier checkpoint, for tests that classify real text.

The text goes through GPT-2's tokenizer, so the vocabulary keeps its 50,257 tokens; every
other dimension is tiny, so building, saving, loading and running it takes milliseconds.
Its weights are random: its answers mean nothing, but they are deterministic.
"""

from __future__ import annotations

from pathlib import Path

from ch06_classification.finetuning.model import build_classifier
from ch06_classification.storage.checkpoint import CHECKPOINT_NAME, ClassifierInfo, save_classifier

# gpt2-small's vocabulary (GPT-2's tokenizer reads real text), 2 blocks 32 wide.
TINY_GPT2 = {"emb_dim": 32, "n_heads": 4, "n_layers": 2}
TINY = {**TINY_GPT2, "context_length": 32}
MAX_LENGTH = 16  # below the context, so that cutting to max_length is tested on its own

# Different lengths (in tokens), so that batching by length reorders them.
MESSAGES = (
    "You are a winner! Claim your prize now",
    "ok",
    "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
    "URGENT! Call 09061701461 to claim your 900 pound reward",
    "Sorry, I'll call later",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005",
    "Lunch at 1?",
)


def write_tiny_checkpoint(
    folder: Path,
    token_position: str = "flexible",
    max_length: int = MAX_LENGTH,
    seed: int = 0,
    labels: tuple[str, ...] = ("ham", "spam"),
) -> Path:
    """Save a tiny random classifier of ``labels`` as ``folder/model.safetensors``; returns
    its path."""
    model = build_classifier("gpt2-small", weights="random", seed=seed, labels=labels, **TINY)
    info = ClassifierInfo(
        config=model.cfg,
        max_length=max_length,
        token_position=token_position,
        weights="random",
        labels=labels,
    )
    return save_classifier(model, info, Path(folder) / CHECKPOINT_NAME)
