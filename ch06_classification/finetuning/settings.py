"""``TrainingSettings``: every knob of the fine-tuning recipe, with the book's values.

A module of its own, importing nothing heavy, because the command line reads these
defaults to declare its options: ``gpt-spam classify`` builds the whole parser, and must
not pay for importing the training code (pandas, scikit-learn) to do it.
``ch06_classification.finetuning.finetune`` runs the recipe these settings describe.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gpt.errors import UserFacingError


@dataclass
class TrainingSettings:
    """Every knob of the recipe, with the book's values as defaults."""

    model: str = "gpt2-small"
    weights: str = "pretrained"  # or "random": same shapes, GPT-2's random initialisation
    weights_dir: str | None = None  # local OpenAI weights instead of downloading them
    trainable_layers: str = "last_block"  # or last_layer, last_two_blocks, all, lora
    lora_rank: int = 16
    lora_alpha: float = 16  # the adapters' update is scaled by lora_alpha / lora_rank
    token_position: str = "flexible"
    average_embeddings: bool = False  # average the outputs over the padded row instead
    disable_causal_mask: bool = False
    no_padding: bool = False  # each message at its own length, one per batch
    context_length: str | int = "longest"  # "longest" training message, "model" (1,024), or N
    drop_rate: float = 0.0
    epochs: int = 5
    batch_size: int = 8
    accumulation_steps: int = 1  # optimizer step every N batches
    lr: float = 5e-5
    weight_decay: float = 0.1
    eval_freq: int = 50
    eval_iter: int = 5
    seed: int = 123
    device: str = "auto"
    # "fp32", "bf16", or "auto": bfloat16 where the device has native bfloat16 units, else
    # float32 (fine_tune records the one it chose).
    precision: str = "auto"
    fast_path: str = "auto"  # "on", "off" (the book's way), or "auto" (fast where exact)
    # Compute the frozen blocks' output again, and keep nothing (storage/prefix_cache.py).
    no_cache: bool = False
    data_dir: str = "data"
    # Store every tensor instead of only the trained ones plus a record of the base weights.
    full_checkpoint: bool = False
    # Changes to the model's shape, e.g. a tiny random model for tests and CI.
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Refuse a number that is NaN or infinite (a NaN ``lora_alpha`` or ``lr`` trains on
        a NaN loss); the command line's options refuse them when parsed."""
        for knob in fields(self):
            value = getattr(self, knob.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserFacingError(
                    f"TrainingSettings.{knob.name} is {value}: it must be a finite number"
                )
