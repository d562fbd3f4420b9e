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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
        if self.fused:  # the formula below, in one pass over memory
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as GPT-2 (and nn.LayerNorm)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    """GELU with the tanh approximation GPT-2 was trained with (not the exact erf form)."""

    def __init__(self, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # the formula below, in one pass over memory
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


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


def causal_mask(
    num_tokens: int,
    device: torch.device | str | None = None,
    num_queries: int | None = None,
    first_query: int = 0,
) -> torch.Tensor:
    """[num_tokens, num_tokens], True above the diagonal: where a token would look at a
    later one, which causal attention forbids.

    For a block of ``num_queries`` queries at positions ``first_query``, ... (keys still
    ``0..num_tokens-1``), the matching rows: [num_queries, num_tokens].
    """
    rows = num_tokens if num_queries is None else num_queries
    ones = torch.ones(rows, num_tokens, dtype=torch.bool, device=device)
    return ones.triu(diagonal=first_query + 1)


# Queries per block of the spelled-out causal attention: on a CPU in bfloat16, 128 was the
# fastest of 128, 256 and 512 for 512 to 1,024 tokens.
QUERY_BLOCK = 128


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
        """[batch, tokens, d_out] -> [batch, heads, tokens, head_dim]."""
        b, num_tokens, _ = x.shape
        return x.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, heads, tokens, head_dim] -> [batch, tokens, d_out]."""
        b, _, num_tokens, _ = x.shape
        return x.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = self.split_heads(self.W_query(x))
        keys = self.split_heads(self.W_key(x))
        values = self.split_heads(self.W_value(x))
        num_tokens = x.shape[1]

        # PyTorch's fused kernel computes exactly the masked softmax below without
        # materialising the [tokens x tokens] score matrix. But on a CPU in bfloat16 the
        # spelled-out products are faster (PyTorch 2.x, measured on gpt2-small's shapes):
        # ~3x in the backward pass, ~2x forward for messages of tens of tokens, and still
        # ~1.4x for 1,024 tokens once computed in blocks of queries (below).
        spelled_out_is_faster = x.device.type == "cpu" and queries.dtype == torch.bfloat16
        if self.fused and not spelled_out_is_faster:
            context = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=self.causal,
            )
        elif self.causal and spelled_out_is_faster and num_tokens > QUERY_BLOCK:
            # Under the causal mask, the queries at positions s..e-1 see keys 0..e-1 only.
            # Taken a block of queries at a time, the scores above the diagonal are then
            # mostly never computed (for 1,024 tokens, 7/16 of them are skipped), and each
            # block's scores are small enough for the allocator to reuse their memory.
            context = torch.cat(
                [
                    self.attend(
                        queries[:, :, start : start + QUERY_BLOCK],
                        keys[:, :, : start + QUERY_BLOCK],
                        values[:, :, : start + QUERY_BLOCK],
                        first_query=start,
                    )
                    for start in range(0, num_tokens, QUERY_BLOCK)
                ],
                dim=2,
            )
        else:
            context = self.attend(queries, keys, values)
        return self.out_proj(self.merge_heads(context))

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        first_query: int = 0,
    ) -> torch.Tensor:
        """The lesson: scores, causal mask, scaled softmax, weighted sum of values.

        [batch, heads, queries, head_dim] -> the same; the queries are the positions
        ``first_query``, ... of the keys (all of them, from 0, unless computing in blocks)."""
        attn_scores = queries @ keys.transpose(2, 3)
        # (The book keeps the mask as a buffer; building it here costs nothing.)
        if self.causal:
            mask = causal_mask(
                keys.shape[2], queries.device, num_queries=queries.shape[2], first_query=first_query
            )
            attn_scores = attn_scores.masked_fill(mask, float("-inf"))
        attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values


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
#   book  PyTorch's default initialisation of every layer, and an output head of its own:
#         the book's GPTModel of chapter 4, number for number (163,009,536 parameters for
#         the book's GPT_CONFIG_124M).
#   gpt2  GPT-2's own scheme: every weight normal with std 0.02, and the output head tied
#         to the token embedding, as GPT-2 has it (124,439,808 parameters for gpt2-small).
#         A far better starting point than PyTorch's default for a 50,257 x 768 embedding,
#         and the one a classifier fine-tuned from random weights starts from.
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


@contextmanager
def skip_init() -> Iterator[None]:
    """Build modules without drawing their initial weights (``torch.nn.init`` does nothing).

    For modules built on PyTorch's "meta" device, whose tensors hold no numbers to draw:
    PyTorch would still run each initialiser there, and its meta ``normal_`` imports
    PyTorch's compiler on first use (seconds on a small CPU). Hugging Face's
    ``no_init_weights`` does the same. Not thread-safe: it swaps functions of a module.
    """
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_")
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, _leave_as_is)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _leave_as_is(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


def gpt_skeleton(cfg: GPTConfig) -> GPTModel:
    """A tied ``GPTModel`` with its shapes and no storage ("meta"): nothing allocated, no
    random number drawn, not even for the 50,257-way head. Fill it with
    ``load_state_dict(tensors, assign=True)``, which takes the tensors as they are."""
    with torch.device("meta"), skip_init():
        return GPTModel(cfg, init="gpt2")  # tied, as the released weights are


def uninitialized_gpt(cfg: GPTConfig) -> GPTModel:
    """A ``GPTModel`` whose weights are left uninitialised, to be overwritten by a load.

    Drawing 124M (or 1.5B) random numbers only to replace them takes seconds; building the
    model on PyTorch's "meta" device (shapes, no storage) and then allocating empty
    storage skips that.
    """
    model = gpt_skeleton(cfg)
    model.to_empty(device="cpu")
    model.out_head.weight = model.tok_emb.weight  # to_empty gives shared weights separate storage
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
