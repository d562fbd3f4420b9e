"""From language model to classifier (section 6.5): a new head, and the token it reads.

GPT-2 ends in a 50,257-way head that scores the next token. For spam detection we replace it
with a 2-way head, train only the top of the network (the book freezes every parameter,
then unfreezes the last transformer block, the final LayerNorm and the new head), and read
the head's output at a single position of each message. Which position is the important
choice: under the causal mask, only the *last real* token has seen the whole message.
"""

from __future__ import annotations

import torch
from torch import nn

from gpt.model import GPTModel

# The classes of the SMS Spam Collection, by class id: 0 = ham, 1 = spam. Other data
# brings its own class names (`gpt-spam split --csv`).
CLASS_NAMES = ("ham", "spam")

# How the book's classify_review displays the SMS classes (ham as "not spam"); any other
# class is displayed by its name.
DISPLAY_NAMES = {"ham": "not spam", "spam": "spam"}

# Which token's output is classified:
#   flexible  the last real (non-padding) token of each message: it has attended to every
#             token of the message, and its output does not depend on how much padding
#             follows. The pipeline's choice.
#   last      the last position of the padded row, as the book does. With padding, that is
#             a padding token, so the prediction changes with the amount of padding.
#   first     the first token (the book's exercise): under the causal mask it has seen only
#             itself, so it cannot know what the message says.
TOKEN_POSITIONS = ("flexible", "last", "first")


def add_classification_head(model: GPTModel, num_classes: int = 2, seed: int = 123) -> GPTModel:
    """Replace the vocabulary-sized output head with a fresh ``num_classes``-way one.

    The new head is seeded (the book calls ``torch.manual_seed(123)`` first), but without
    touching the global random state, so the caller's later random numbers do not depend
    on whether a head was added.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.out_head = nn.Linear(model.cfg.emb_dim, num_classes)
    return model


def classified_positions(
    lengths: torch.Tensor, padded_length: int, token_position: str
) -> torch.Tensor:
    """The index of the token to classify in each row of a right-padded batch."""
    if token_position == "flexible":
        return lengths - 1
    if token_position == "last":
        return torch.full_like(lengths, padded_length - 1)
    if token_position == "first":
        return torch.zeros_like(lengths)
    raise ValueError(f"token_position must be one of {TOKEN_POSITIONS}, not {token_position!r}")
