"""LoRA, low-rank adaptation (appendix E of the book), written out by hand.

Instead of updating a frozen weight matrix W (in x out), LoRA learns a low-rank update
A @ B with A: in x rank and B: rank x out, so a layer computes

    x @ W + (alpha / rank) * (x @ A @ B)

B starts at zero, so at initialisation the model computes exactly what it did before;
only A and B are trained, a small fraction of the parameters (2,666,528 of 124M for
GPT-2 small at rank 16 with every ``nn.Linear`` wrapped). After training, the update can
be added to W once (``merge_lora``), so inference costs nothing extra.

The scaling is the appendix's ``alpha / rank``; the book's chapter-6 bonus script scales
by ``alpha`` alone, a ``rank`` times stronger update for the same flags.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALayer(nn.Module):
    """The low-rank update ``(alpha / rank) * x @ A @ B``: [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, not {rank}")
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        # As nn.Linear initialises its weight: A random, so the gradient of B is not zero.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # zero: the update starts at 0
        self.rank = rank
        self.alpha = alpha

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * (x @ self.A @ self.B)

    def delta_weight(self) -> torch.Tensor:
        """The update in ``nn.Linear``'s layout (out_dim x in_dim): ``scaling * (A @ B)^T``."""
        return self.scaling * (self.A @ self.B).T


class LinearWithLoRA(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable ``LoRALayer`` beside it."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.lora(x)

    # The effective weight and bias, so that code reading ``layer.weight`` directly (the
    # fast path folds the key projection into the query) sees what ``forward`` computes.
    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight + self.lora.delta_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> None:
    """Wrap every ``nn.Linear`` in ``model`` (recursively, in place) with a LoRA adapter.

    As in appendix E, freeze the model first (``model.requires_grad_(False)``): the
    adapters are created trainable, so they are then all that trains.
    """
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        else:
            replace_linear_with_lora(module, rank, alpha)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W + scaling * (A @ B)^T), in place; returns
    ``model``, now of plain ``nn.Linear`` layers that compute the same function faster."""
    for name, module in model.named_children():
        if isinstance(module, LinearWithLoRA):
            merged = module.linear
            merged.weight.add_(module.lora.delta_weight().to(merged.weight.dtype))
            setattr(model, name, merged)
        else:
            merge_lora(module)
    return model


def lora_config(model: nn.Module) -> dict[str, float] | None:
    """``{"rank": r, "alpha": a}`` of the adapters in ``model``, or None if it has none."""
    for module in model.modules():
        if isinstance(module, LoRALayer):
            return {"rank": module.rank, "alpha": module.alpha}
    return None
