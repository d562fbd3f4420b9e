"""Taking a trained classifier out of this codebase: a self-contained checkpoint, or a folder
that Hugging Face ``transformers`` loads as ``GPT2ForSequenceClassification``.

The Hugging Face model is the same network under other names (``gpt/weights.py`` maps them),
with two differences that the export bridges or refuses:

- Its classification head (``score``) has no bias, ours has. The bias is folded into the
  final LayerNorm's shift, whose output only the head reads: with ``W`` the head's weight,
  ``W (shift + W⁺ b) = W shift + b`` (``W⁺`` the pseudo-inverse; exact for an N x emb_dim
  ``W`` of rank N, N classes). The logits, not only the probabilities, stay the same.
- It classifies the last token that is not padding, which is our ``flexible`` position. A
  model trained on the book's ``last`` position (a padding token of a padded row) or on the
  ``first`` token computes something transformers cannot: such models are refused.

The folder also holds GPT-2's tokenizer (OpenAI's ``encoder.json`` and ``vocab.bpe``, under
the names transformers reads), with ``model_max_length`` set to the classifier's
``max_length``: ``pipeline("text-classification", model=folder)`` then works offline, and
cuts messages where this classifier does when called with ``truncation=True``.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ch06_classification.storage.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    ClassifierInfo,
    save_checkpoint_folder,
)
from ch06_classification.storage.datafiles import atomic_output, id2label
from ch06_classification.storage.safe_files import write_json
from gpt.errors import UserFacingError
from gpt.loading import openai_state_dict
from gpt.model import GPTModel
from gpt.tokenizer import BPE_DIR, ENCODER_FILE, END_OF_TEXT, MERGES_FILE

EXPORT_FORMATS = ("hf", "full")
# What transformers computes for every token position we could export, and why not others.
FAITHFUL_TOKEN_POSITION = "flexible"


class ExportError(UserFacingError):
    """A model that cannot be exported faithfully in the asked format."""


def fold_head_bias(weight: torch.Tensor, bias: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The final LayerNorm shift that makes a bias-free head compute ``weight @ x + bias``."""
    w, b = weight.double(), bias.double()
    delta = torch.linalg.pinv(w) @ b
    if not torch.allclose(w @ delta, b, atol=1e-6 * max(1.0, b.abs().max().item())):
        raise ExportError("the head's rows are linearly dependent: its bias cannot be folded")
    return (shift.double() + delta).to(shift.dtype)


def hf_config(info: ClassifierInfo) -> dict:
    """``config.json`` of a ``GPT2ForSequenceClassification`` with ``info``'s shape."""
    cfg = info.config
    return {
        "architectures": ["GPT2ForSequenceClassification"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,  # 4 x n_embd, as ours
        "activation_function": "gelu_new",  # GELU's tanh approximation, as ours
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "initializer_range": 0.02,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "pad_token_id": info.pad_token_id,  # how transformers finds the last real token
        "id2label": id2label(info.labels),
        "label2id": {label: i for i, label in enumerate(info.labels)},
        "problem_type": "single_label_classification",
        "torch_dtype": "float32",
        "gpt_spam": {
            "max_length": info.max_length,  # messages were cut to this many tokens
            "token_position": info.token_position,
            "preset": info.model_preset,
            "tokenizer": "gpt2 (vocab.json, merges.txt: GPT-2's byte-pair encoding)",
        },
    }


def hf_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """The tensors of ``GPT2ForSequenceClassification`` for ``model`` (head bias folded)."""
    tensors = {f"transformer.{k}": v for k, v in openai_state_dict(model).items()}
    head = model.out_head
    tensors["transformer.ln_f.bias"] = fold_head_bias(
        head.weight.detach().cpu(), head.bias.detach().cpu(), tensors["transformer.ln_f.bias"]
    ).contiguous()
    tensors["score.weight"] = head.weight.detach().cpu().contiguous()
    return tensors


def export_hf(model: GPTModel, info: ClassifierInfo, out_dir: str | Path) -> Path:
    """Write ``out_dir/model.safetensors`` and ``config.json`` for
    ``GPT2ForSequenceClassification.from_pretrained(out_dir)``; refuses what it cannot
    export faithfully."""
    if info.token_position != FAITHFUL_TOKEN_POSITION:
        raise ExportError(
            f"this model classifies the {info.token_position!r} token, but transformers' "
            "GPT2ForSequenceClassification reads the last real (non-padding) token, so its "
            "answers would differ; only models trained with --token-position flexible export"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / CHECKPOINT_NAME) as temporary:
        save_file(hf_state_dict(model), str(temporary), metadata={"format": "pt"})
    for ours, theirs in ((ENCODER_FILE, "vocab.json"), (MERGES_FILE, "merges.txt")):
        with atomic_output(out_dir / theirs) as temporary:
            shutil.copyfile(BPE_DIR / ours, temporary)
    write_json(out_dir / "tokenizer_config.json", hf_tokenizer_config(info))
    write_json(out_dir / CONFIG_NAME, hf_config(info))
    return out_dir


def hf_tokenizer_config(info: ClassifierInfo) -> dict:
    """GPT-2's tokenizer for transformers, padding with <|endoftext|> as we do, and cutting
    (with ``truncation=True``) where this classifier cuts."""
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": min(info.max_length, info.config.context_length),
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "add_prefix_space": False,
        "padding_side": "right",
    }


def export_full(model: GPTModel, info: ClassifierInfo, out_dir: str | Path) -> Path:
    """A self-contained checkpoint folder: every tensor, no base weights needed."""
    return save_checkpoint_folder(model, dataclasses.replace(info, stored="full"), out_dir)
