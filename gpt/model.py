"""GPT-2, written out by hand: the model of chapters 3 and 4 of the book.

Every piece is spelled out in plain PyTorch so it can be read top to bottom:

    token ids -> token + position embeddings -> dropout
              -> n_layers x TransformerBlock (pre-LayerNorm attention and feed-forward,
                                              each wrapped in a residual connection)
              -> final LayerNorm -> output head -> logits

Parameter names follow the book (``tok_emb``, ``trf_blocks``, ``att.W_query`` ...), so state
dicts saved by the book's code load here; ``gpt/weights.py`` maps OpenAI's names onto them.
``GPTModel(cfg)`` takes the book's config dict too, and draws its random weights exactly
as the book's model does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpt.config import GPTConfig


class LayerNorm(nn.Module):
    """Normalize each vector to zero mean and unit variance, then scale and shift."""

    def __init__(self, emb_dim: int, eps: float = 1e-5, fused: bool = True) -> None:
        super().__init__()
        self.eps = eps  # GPT-2's epsilon
        self.fused = fused
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            mean = x.mean(dim=-1, keepdim=True)
            var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as GPT-2's
            return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift
        # The same formula in one pass over memory.
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with the tanh approximation GPT-2 was trained with (not the exact erf form)."""

    def __init__(self, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        return F.gelu(x, approximate="tanh")  # the same formula in one pass over memory


class FeedForward(nn.Module):
    """Position-wise MLP: expand to 4x the width, GELU, project back."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(fused=cfg.fused),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def causal_mask(num_tokens: int, device: torch.device | str | None = None) -> torch.Tensor:
    """[num_tokens, num_tokens], True above the diagonal: where a token would look at a
    later one, which causal attention forbids."""
    ones = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)
    return ones.triu(diagonal=1)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention: each position attends to itself and earlier ones."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        fused: bool = True,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.fused = fused
        self.causal = causal
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # The book keeps its causal mask as a buffer, so state dicts saved by the book's code
        # carry an "att.mask" entry; this module builds its mask per call (below) and so
        # stores nothing but learned weights. Such an entry is accepted, if it is the mask.
        self.register_load_state_dict_pre_hook(_accept_book_mask)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(b, tokens, d_out) -> (b, heads, tokens, head_dim)."""
        b, num_tokens, _ = x.shape
        return x.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(b, heads, tokens, head_dim) -> (b, tokens, d_out)."""
        b, _, num_tokens, _ = x.shape
        return x.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_tokens = x.shape[1]
        queries = self.split_heads(self.W_query(x))  # (b, heads, tokens, head_dim)
        keys = self.split_heads(self.W_key(x))  # (b, heads, tokens, head_dim)
        values = self.split_heads(self.W_value(x))  # (b, heads, tokens, head_dim)

        if not self.fused:  # the lesson, step by step
            attn_scores = queries @ keys.transpose(2, 3)  # (b, heads, tokens, tokens)
            if self.causal:  # a token may not attend to the tokens after it
                mask = causal_mask(num_tokens, x.device)
                attn_scores = attn_scores.masked_fill(mask, float("-inf"))
            attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, heads, tokens, head_dim)
        else:
            # The same masked, scaled softmax in one PyTorch kernel, which never materialises
            # the (tokens x tokens) scores. (On a CPU in bfloat16 the steps above are faster:
            # gpt/fast_attention.py.)
            context = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=self.causal,
            )
        return self.out_proj(self.merge_heads(context))  # (b, tokens, d_out)


def _accept_book_mask(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: object
) -> None:
    """Drop the book's ``mask`` buffer from a state dict being loaded, after checking that it
    is a causal mask: it holds no learned numbers, so there is nothing to load from it."""
    mask = state_dict.pop(prefix + "mask", None)
    if mask is None:
        return
    num_tokens = mask.shape[-1]
    if mask.shape != (num_tokens, num_tokens) or not torch.equal(
        mask.bool().cpu(), causal_mask(num_tokens)
    ):
        raise ValueError(
            f"{prefix}mask in the state dict is not a causal mask (ones above the diagonal)"
        )


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            fused=cfg.fused,
            causal=cfg.causal,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, fused=cfg.fused)
        self.norm2 = LayerNorm(cfg.emb_dim, fused=cfg.fused)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


# How a freshly built model draws its random weights (pretrained weights replace them):
#   book  PyTorch's defaults and an output head of its own: the book's chapter-4 model,
#         number for number (163,009,536 parameters for GPT_CONFIG_124M).
#   gpt2  GPT-2's: every weight N(0, 0.02), the head tied to the token embedding (124,439,808
#         for gpt2-small); a far better start than an embedding drawn from N(0, 1).
INITS = ("book", "gpt2")


def as_config(cfg: GPTConfig | Mapping[str, Any]) -> GPTConfig:
    """``cfg`` as a ``GPTConfig``: the book's config dict (``GPT_CONFIG_124M``, ``BASE_CONFIG``)
    has the same field names."""
    if isinstance(cfg, GPTConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a GPTConfig or a dict, not {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(GPTConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown GPT config key {unknown[0]!r}")
    return GPTConfig(**cfg)


class GPTModel(nn.Module):
    """GPT-2: token ids [batch, tokens] -> next-token logits [batch, tokens, vocab_size].

    ``cfg`` is a ``GPTConfig`` or the book's config dict; ``init`` chooses how the random
    weights are drawn (see ``INITS``): by default exactly as the book's model draws them.
    """

    def __init__(self, cfg: GPTConfig | Mapping[str, Any], init: str = "book") -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {init!r}")
        cfg = as_config(cfg)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        # A ModuleList rather than the book's nn.Sequential: same parameters and names, but
        # callers (the fast fine-tuning path) can run a slice of the blocks.
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim, fused=cfg.fused)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if init == "gpt2":
            # GPT-2 reuses the token embedding matrix as the output projection ("weight
            # tying"), which is why 124M, not 163M, parameters.
            self.out_head.weight = self.tok_emb.weight
            self.apply(_init_weights)

    def embed(self, in_idx: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings (with dropout): [batch, tokens] -> [batch, tokens, emb]."""
        num_tokens = in_idx.shape[1]
        if num_tokens > self.cfg.context_length:
            raise ValueError(
                f"{num_tokens} tokens exceed the model's context length of "
                f"{self.cfg.context_length}"
            )
        positions = torch.arange(num_tokens, device=in_idx.device)
        return self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(in_idx)
        for block in self.trf_blocks:
            x = block(x)
        return self.out_head(self.final_norm(x))


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation (normal, std 0.02): ``init="gpt2"``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
