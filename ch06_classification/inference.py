"""Using the fine-tuned model on a new message (section 6.8): the book's ``classify_review``.

An application that classifies many messages wants ``SpamClassifier``
(``ch06_classification/classifying/spam_classifier.py``): it loads a trained run, batches
messages of similar length and answers with scikit-learn's and Hugging Face's faces.
"""

from __future__ import annotations

from collections.abc import Sequence

import tiktoken
import torch

from ch06_classification.classifier import CLASS_NAMES, DISPLAY_NAMES
from ch06_classification.training import classification_logits
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID, encode_message


def classify_review(
    text: str,
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    device: torch.device | str,
    max_length: int | None = None,
    pad_token_id: int = END_OF_TEXT_ID,
    token_position: str = "last",
    class_names: Sequence[str] = CLASS_NAMES,
) -> str:
    """The book's ``classify_review`` (listing 6.12): "spam" or "not spam" (the book's name
    for ham) for one message; for a model of other classes (``class_names``), the name of
    the most probable one.

    As in the book, the message is cut to the model's context and to ``max_length``
    (default: the context), padded to ``max_length``, and classified at the last position,
    which is a padding token whenever the message is shorter. ``token_position="flexible"``
    reads the last *real* token instead, so that the answer does not depend on the padding.
    """
    model.eval()
    input_ids = encode_message(tokenizer, text)
    supported_context_length = model.pos_emb.weight.shape[0]
    max_length = min(max_length or supported_context_length, supported_context_length)
    input_ids = input_ids[:max_length]
    if not input_ids:
        raise ValueError("the message is empty: it has no token to classify")
    length = len(input_ids)
    input_ids += [pad_token_id] * (max_length - length)
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)  # a batch of one

    with torch.no_grad():
        lengths = torch.tensor([length], device=device)
        logits = classification_logits(model, input_tensor, lengths, token_position)
    predicted_label = torch.argmax(logits, dim=-1).item()
    name = class_names[predicted_label]
    return DISPLAY_NAMES.get(name, name) if tuple(class_names) == CLASS_NAMES else name
