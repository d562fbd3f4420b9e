"""The classifier the pipeline fine-tunes: section 6.5's model, with the bonus's choices.

The chapter's steps (``ch06_classification/classifier.py``: a new head, the token to read)
are the same here; added are the bonus experiments' choices of what to train
(``TRAINABLE_LAYERS``, LoRA), a module that reads its token itself (``GPTClassifier``,
for batches that carry each message's length), and building it all from a preset and a
choice of weights (``build_classifier``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ch06_classification.classifier import (
    CLASS_NAMES,
    TOKEN_POSITIONS,
    add_classification_head,
    classified_positions,
)
from ch06_classification.finetuning.settings import TRAINABLE_LAYERS
from gpt.config import GPTConfig, get_config
from gpt.loading import load_pretrained_gpt
from gpt.lora import replace_linear_with_lora
from gpt.model import GPTModel, count_parameters

# How `--weights random` draws the starting weights: GPT-2's initialisation, a far better
# start than PyTorch's defaults (see gpt/model.py). Lean checkpoints record it.
RANDOM_INIT = "gpt2"


def trainable_modules(model: GPTModel, trainable_layers: str) -> list[nn.Module]:
    """The modules that are fine-tuned for a ``TRAINABLE_LAYERS`` choice other than lora."""
    blocks = model.trf_blocks
    choices: dict[str, list[nn.Module]] = {
        "last_layer": [model.out_head],
        "last_block": [blocks[-1], model.final_norm, model.out_head],
        "last_two_blocks": [*blocks[-2:], model.final_norm, model.out_head],
        "all": [model],
    }
    if trainable_layers not in choices:
        raise ValueError(f"trainable_layers must be one of {TRAINABLE_LAYERS}")
    return choices[trainable_layers]


def trained_parameter_names(model: GPTModel, trainable_layers: str) -> set[str]:
    """The names (as in ``state_dict``) of the parameters fine-tuning changes: what a
    lean checkpoint stores. The rest is the base, rebuilt when the checkpoint is loaded."""
    if trainable_layers == "lora":  # the adapters, beside every frozen linear layer
        return {name for name, _ in model.named_parameters() if ".lora." in name}
    trained = {
        id(p) for module in trainable_modules(model, trainable_layers) for p in module.parameters()
    }
    return {name for name, p in model.named_parameters() if id(p) in trained}


def freeze_for_classification(
    model: GPTModel,
    trainable_layers: str = "last_block",
    lora_rank: int = 16,
    lora_alpha: float = 16,
    seed: int = 123,
) -> GPTModel:
    """Freeze every parameter, then unfreeze the part to fine-tune.

    Training only the top is enough: the lower blocks already compute general features of
    text, and the top block, the final norm and the new head learn to use them for spam.
    ``"lora"`` freezes everything and wraps every ``nn.Linear`` (the new head too, as in
    appendix E) with a trainable adapter of ``lora_rank``, scaled by alpha / rank; the
    adapters' random part is drawn from ``seed`` without touching the global generator.
    """
    if trainable_layers == "lora":
        model.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            replace_linear_with_lora(model, lora_rank, lora_alpha)
        return model
    modules = trainable_modules(model, trainable_layers)
    model.requires_grad_(False)
    for module in modules:
        module.requires_grad_(True)
    return model


def first_trainable_block(model: GPTModel) -> int:
    """Index of the lowest transformer block with a trainable parameter (n_layers if none)."""
    for index, block in enumerate(model.trf_blocks):
        if any(p.requires_grad for p in block.parameters()):
            return index
    return len(model.trf_blocks)


def positions_in_batch(
    input_ids: torch.Tensor, lengths: torch.Tensor | None, token_position: str
) -> torch.Tensor:
    """``classified_positions`` of a batch of token ids; ``lengths`` None means no padding
    (every row is all real tokens)."""
    if lengths is None:
        lengths = torch.full((input_ids.shape[0],), input_ids.shape[1], device=input_ids.device)
    return classified_positions(lengths, input_ids.shape[1], token_position)


def needs_fixed_padding(token_position: str, causal: bool, average_embeddings: bool) -> bool:
    """Whether every message must be padded to the same length, as the book does, for its
    result not to depend on which other messages share its batch.

    - ``last``: the last position of the row is classified; only with a common length is
      that the same (padding) position for every message.
    - no causal mask: every token attends to the padding after it, so the amount matters.
    - averaged outputs: the average runs over the whole row, padding included.
    Otherwise (the default) only real tokens reach the classified one, and a batch is
    padded only to its own longest message.
    """
    return token_position == "last" or not causal or average_embeddings


class GPTClassifier(nn.Module):
    """A GPT-2 with a class head that reads one token per message: ids -> [batch, classes].

    ``forward(input_ids, lengths)`` runs the whole model on the padded batch, as the book
    does, then keeps the logits of the classified token of each row. ``lengths`` (the
    number of real tokens per row) is what makes the ``flexible`` choice possible.
    ``average_embeddings=True`` averages the logits over every position of the row instead,
    padding included (the book's bonus experiment; the token position is then ignored).
    """

    def __init__(
        self, gpt: GPTModel, token_position: str = "flexible", average_embeddings: bool = False
    ) -> None:
        super().__init__()
        if token_position not in TOKEN_POSITIONS:
            raise ValueError(f"token_position must be one of {TOKEN_POSITIONS}")
        self.gpt = gpt
        self.token_position = token_position
        self.average_embeddings = average_embeddings

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.gpt(input_ids)  # [batch, tokens, classes]
        if self.average_embeddings:
            return logits.mean(dim=1)
        positions = positions_in_batch(input_ids, lengths, self.token_position)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return logits[rows, positions]


def build_classifier(
    model_preset: str = "gpt2-small",
    weights: str = "pretrained",
    trainable_layers: str = "last_block",
    weights_dir: str | Path | None = None,
    labels: Sequence[str] = CLASS_NAMES,
    seed: int = 123,
    lora_rank: int = 16,
    lora_alpha: float = 16,
    **config_overrides: object,
) -> GPTModel:
    """GPT-2 (pretrained, or randomly initialised from ``seed``) made into a classifier.

    Prints nothing; ``describe_trainable`` reports what is trainable.
    """
    if weights == "pretrained":
        model = load_pretrained_gpt(model_preset, weights_dir, **config_overrides)
    elif weights == "random":
        model = random_gpt(get_config(model_preset, **config_overrides), seed)
    else:
        raise ValueError(f"weights must be 'pretrained' or 'random', not {weights!r}")
    add_classification_head(model, num_classes=len(labels), seed=seed)
    return freeze_for_classification(model, trainable_layers, lora_rank, lora_alpha, seed)


def random_gpt(cfg: GPTConfig, seed: int, init: str = RANDOM_INIT) -> GPTModel:
    """A ``GPTModel`` with random weights drawn from ``seed`` by the ``init`` scheme (the
    same ones every time), leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPTModel(cfg, init=init)


def describe_trainable(model: nn.Module) -> str:
    """E.g. 'Trainable parameters: 7,090,946 of 124,441,346 (5.70%)'."""
    total = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    return f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
