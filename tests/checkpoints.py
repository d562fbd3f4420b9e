"""Small GPT-2 checkpoints in the exact layout of OpenAI's released files.

The real weights cannot be downloaded on the machines that test this project, so tests build
an independent GPT-2 (Hugging Face ``transformers``, random weights, no download) and write
its tensors the way ``openai-community/gpt2``'s ``model.safetensors`` has them: names
without the ``transformer.`` prefix, Conv1D weights as [in, out], no ``lm_head`` (tied to
``wte``), and the ``h.N.attn.bias`` causal-mask buffers of shape [1, 1, n_ctx, n_ctx].
The project's loader then reads them through the same code path a real download takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from gpt.config import GPTConfig


def hf_gpt2(cfg: GPTConfig, seed: int = 0):
    """A Hugging Face GPT-2 of the given shape with random, non-trivial weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=cfg.vocab_size - 1,
        eos_token_id=cfg.vocab_size - 1,
        # transformers' own spelled-out attention: independent of ours and of PyTorch's SDPA.
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(hf_cfg).eval()
    # transformers initialises biases to 0 and LayerNorms to 1/0; perturb every tensor so a
    # loader that dropped or swapped a bias or a norm could not go unnoticed.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model


def openai_state_dict(hf_model, *, with_prefix: bool = False, with_mask_buffers: bool = True):
    """The tensors of ``hf_model`` named and shaped as in OpenAI's released file."""
    tensors = {
        name: tensor.detach().clone().contiguous()
        for name, tensor in hf_model.transformer.state_dict().items()
        if not name.endswith((".attn.bias", ".attn.masked_bias"))
    }
    if with_mask_buffers:
        n_ctx = hf_model.config.n_positions
        mask = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
        for i in range(hf_model.config.n_layer):
            tensors[f"h.{i}.attn.bias"] = mask.clone()
    if with_prefix:
        tensors = {f"transformer.{name}": tensor for name, tensor in tensors.items()}
    return tensors


def write_openai_checkpoint(hf_model, path: Path, **layout) -> Path:
    """Save ``hf_model`` as an OpenAI-layout ``model.safetensors`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(openai_state_dict(hf_model, **layout), str(path), metadata={"format": "pt"})
    return path
