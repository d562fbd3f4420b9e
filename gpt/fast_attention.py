"""Attention that runs faster in bfloat16 on a CPU: the lesson's steps, a block of queries at
a time.

``MultiHeadAttention`` (``gpt/model.py``) computes attention with PyTorch's fused kernel
(``F.scaled_dot_product_attention``). On a CPU in bfloat16 that kernel is slow (PyTorch 2.x,
measured on gpt2-small's shapes): the spelled-out products of the lesson are ~3x faster in
the backward pass, ~2x forward for messages of tens of tokens, and still ~1.4x for 1,024
tokens once computed in blocks of queries (below). ``use_fast_attention(model)`` switches a
model to them; everywhere else (float32, a GPU) the model computes exactly as before.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt.model import MultiHeadAttention, causal_mask

# Queries per block: on a CPU in bfloat16, 128 was the fastest of 128, 256 and 512 for 512 to
# 1,024 tokens.
QUERY_BLOCK = 128


def computes_in_bfloat16_on_cpu(x: torch.Tensor) -> bool:
    """Whether attention on ``x`` runs in bfloat16 on a CPU: ``x`` is bfloat16 (the weights
    were cast), or autocast to bfloat16 is on (the projections will give bfloat16)."""
    if x.device.type != "cpu":
        return False
    autocast = (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )
    return x.dtype == torch.bfloat16 or autocast


class FastMultiHeadAttention(MultiHeadAttention):
    """``MultiHeadAttention``, spelled out a block of ``QUERY_BLOCK`` queries at a time when
    it runs in bfloat16 on a CPU; as ``MultiHeadAttention`` everywhere else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not computes_in_bfloat16_on_cpu(x):
            return super().forward(x)
        num_tokens = x.shape[1]
        queries = self.split_heads(self.W_query(x))  # (b, heads, tokens, head_dim)
        keys = self.split_heads(self.W_key(x))
        values = self.split_heads(self.W_value(x))
        mask = causal_mask(num_tokens, x.device) if self.causal else None

        # Under the causal mask the queries at positions start..end-1 see keys 0..end-1 only:
        # taken a block at a time, most scores above the diagonal are never computed (7/16
        # of them for 1,024 tokens), and each block's scores are small enough for the
        # allocator to reuse their memory. Without the mask, one block holds every query.
        step = QUERY_BLOCK if self.causal else max(num_tokens, 1)
        blocks = []
        for start in range(0, max(num_tokens, 1), step):
            end = min(start + step, num_tokens)
            # The lesson's steps (MultiHeadAttention.forward), for this block's rows:
            attn_scores = queries[:, :, start:end] @ keys[:, :, :end].transpose(2, 3)
            if mask is not None:
                attn_scores = attn_scores.masked_fill(mask[start:end, :end], float("-inf"))
            attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            blocks.append(attn_weights @ values[:, :, :end])  # (b, heads, end - start, head_dim)
        context = torch.cat(blocks, dim=2)  # (b, heads, tokens, head_dim)
        return self.out_proj(self.merge_heads(context))


def use_fast_attention(model: nn.Module) -> nn.Module:
    """Switch every ``MultiHeadAttention`` in ``model`` to ``FastMultiHeadAttention``, in
    place, and return ``model``.

    Each module stays the same object with the same parameters (an optimizer holding them,
    a state dict, a LoRA wrapper are unaffected): only the class, and so ``forward``, changes.
    """
    for module in model.modules():
        if type(module) is MultiHeadAttention:
            module.__class__ = FastMultiHeadAttention
    return model
