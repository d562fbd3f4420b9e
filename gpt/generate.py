"""Text in, text out: the helpers of the book's chapters 4 and 5 (``generate_text_simple``,
``text_to_token_ids``, ``token_ids_to_text``), used here as a sanity check that loaded
weights are GPT-2's (the pretrained model continues "Every effort moves you" sensibly).
"""

from __future__ import annotations

import tiktoken
import torch

from gpt.model import GPTModel


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding) -> torch.Tensor:
    """Encode ``text`` as a batch of one: shape [1, tokens]."""
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding) -> str:
    """Decode a batch of one (or a flat sequence) of token ids."""
    return tokenizer.decode(token_ids.flatten().tolist())


@torch.inference_mode()
def generate(
    model: GPTModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to ``idx`` [batch, tokens], one at a time.

    ``temperature == 0`` is greedy decoding (always the most likely token, deterministic).
    Otherwise the logits are divided by the temperature (below 1 sharpens, above 1
    flattens), optionally cut to the ``top_k`` most likely tokens, and sampled from.
    Generation stops early when every row has just produced ``eos_id``.
    """
    context_size = context_size or model.cfg.context_length
    for _ in range(max_new_tokens):
        # The model sees at most its context length; older tokens fall off the front.
        logits = model(idx[:, -context_size:])[:, -1, :]
        if top_k is not None:
            kth_largest = torch.topk(logits, top_k).values[:, -1:]
            logits = logits.masked_fill(logits < kth_largest, float("-inf"))
        if temperature > 0.0:
            probs = torch.softmax(logits / temperature, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
        else:
            idx_next = logits.argmax(dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
        if eos_id is not None and bool((idx_next == eos_id).all()):
            break
    return idx


def generate_text_simple(
    model: GPTModel, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """The book's greedy generation of chapter 4: ``idx`` [batch, tokens] followed by the
    ``max_new_tokens`` most likely next tokens, the model seeing at most ``context_size``."""
    return generate(model, idx, max_new_tokens, context_size)


def generate_text(
    model: GPTModel,
    prompt: str,
    tokenizer: tiktoken.Encoding,
    max_new_tokens: int = 20,
    **sampling: object,
) -> str:
    """``prompt`` followed by what the model writes next (greedy unless told otherwise)."""
    device = next(model.parameters()).device
    idx = text_to_token_ids(prompt, tokenizer).to(device)
    out = generate(model, idx, max_new_tokens, **sampling)  # type: ignore[arg-type]
    return token_ids_to_text(out, tokenizer)
