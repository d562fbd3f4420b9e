"""GPT-2's hyperparameters, and the four sizes OpenAI released."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gpt.errors import UserFacingError

IMPLEMENTATIONS = ("manual", "fused")  # how the math is computed (see GPTConfig)


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT-2 model (the book's ``GPT_CONFIG_124M`` as a dataclass)."""

    vocab_size: int = 50257  # GPT-2's byte-pair encoding
    context_length: int = 1024  # number of learned position embeddings
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    # GPT-2 was pretrained with dropout 0.1; fine-tuning here uses 0.0, as the book's
    # chapter 6 does, which also makes the frozen part of the network deterministic.
    drop_rate: float = 0.0
    qkv_bias: bool = True  # OpenAI's checkpoints have biases on the query/key/value projections
    # How the math is computed, not what it computes: "manual" spells out every formula
    # (LayerNorm's mean and variance, GELU's tanh, attention's masked softmax): the lesson.
    # "fused" computes the same formulas with PyTorch's single-kernel versions, which on a
    # CPU run several times faster (GELU alone: ~6x). Tests hold the two equal.
    implementation: str = "fused"
    # GPT-2 is causal: a token attends to itself and earlier tokens only. False lets every
    # token attend to every other one (a bonus experiment of the book's chapter 6).
    causal: bool = True

    def __post_init__(self) -> None:
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be 'manual' or 'fused', not {self.implementation!r}"
            )

    @property
    def fused(self) -> bool:
        return self.implementation == "fused"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        return cls(**values)


# Sizes as in OpenAI's release; the parameter counts are with the output head tied to the
# token embedding, as GPT-2 has it.
PRESETS: dict[str, GPTConfig] = {
    "gpt2-small": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
}

# Where each size's weights are published, in safetensors form, on the Hugging Face Hub.
HF_REPOS: dict[str, str] = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}


def get_config(preset: str = "gpt2-small", **overrides: Any) -> GPTConfig:
    """The configuration of a released GPT-2 size, optionally with some fields changed."""
    if preset not in PRESETS:
        raise UserFacingError(f"unknown model {preset!r}: choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[preset], **overrides)
