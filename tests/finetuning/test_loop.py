"""The pipeline's loop (finetuning/loop.py) is the book's loop when nothing is added."""

from __future__ import annotations

import copy

import pytest
import torch

from ch06_classification.classifier import add_classification_head
from ch06_classification.finetuning.loop import train_classifier
from ch06_classification.finetuning.settings import TrainingSettings
from ch06_classification.training import train_classifier_simple
from gpt.model import GPTModel

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = {
    "vocab_size": 50,
    "context_length": 16,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.0,
    "qkv_bias": True,
}


def loaders() -> tuple[list, list]:
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 50, (4, 12), generator=generator), torch.randint(0, 2, (4,)))
        for _ in range(6)
    ]
    return batches[:4], batches[4:]


def test_with_nothing_added_it_computes_what_train_classifier_simple_computes() -> None:
    torch.manual_seed(123)
    model = add_classification_head(GPTModel(TINY), num_classes=2)
    other = copy.deepcopy(model)
    train_loader, val_loader = loaders()
    arguments = {"num_epochs": 2, "eval_freq": 3, "eval_iter": 2, "token_position": "last"}

    book = train_classifier_simple(
        model,
        train_loader,
        val_loader,
        torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1),
        "cpu",
        **arguments,
    )
    settings = TrainingSettings(
        epochs=2, eval_freq=3, eval_iter=2, token_position="last", precision="fp32"
    )
    ours = train_classifier(
        other,
        train_loader,
        val_loader,
        torch.optim.AdamW(other.parameters(), lr=1e-3, weight_decay=0.1),
        settings,
        device="cpu",
        log=None,
    )

    # The same operations on the same numbers, in the same order: equal to the last bit.
    assert tuple(ours) == tuple(book)
    assert ours.eval_steps == book.eval_steps == [0, 3, 6]
    assert ours.steps == book.steps == 8
    for (name, value), (_, expected) in zip(
        other.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
