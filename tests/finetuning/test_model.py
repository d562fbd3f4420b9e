"""Section 6.5: the class head, what is frozen, and which token is classified."""

from __future__ import annotations

import pytest
import torch

from ch06_classification.classifier import add_classification_head, classified_positions
from ch06_classification.finetuning.loop import make_optimizer
from ch06_classification.finetuning.model import (
    GPTClassifier,
    build_classifier,
    first_trainable_block,
    freeze_for_classification,
)
from gpt.config import GPTConfig
from gpt.model import GPTModel

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = GPTConfig(vocab_size=100, context_length=32, emb_dim=32, n_heads=4, n_layers=3)


def tiny_classifier(trainable_layers: str = "last_block", seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return freeze_for_classification(add_classification_head(GPTModel(TINY)), trainable_layers)


def test_gpt2_small_trains_exactly_7_090_946_parameters():
    model = build_classifier("gpt2-small", weights="random")
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == 7_090_946
    assert sum(v for n, v in trainable.items() if n.startswith("trf_blocks.11.")) == 7_087_872
    assert sum(v for n, v in trainable.items() if n.startswith("final_norm.")) == 1_536
    assert sum(v for n, v in trainable.items() if n.startswith("out_head.")) == 1_538
    assert model.out_head.out_features == 2
    assert model.out_head.weight is not model.tok_emb.weight  # untied from the embedding


@pytest.mark.parametrize(
    ("layers", "prefixes", "first_block"),
    [
        ("last_layer", ("out_head.",), 3),
        ("last_block", ("out_head.", "final_norm.", "trf_blocks.2."), 2),
        ("last_two_blocks", ("out_head.", "final_norm.", "trf_blocks.1.", "trf_blocks.2."), 1),
    ],
)
def test_only_the_chosen_layers_train(layers, prefixes, first_block):
    model = tiny_classifier(layers)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(prefixes), name
    assert first_trainable_block(model) == first_block


def test_all_layers_train():
    model = tiny_classifier("all")
    assert all(p.requires_grad for p in model.parameters())
    assert first_trainable_block(model) == 0


def test_one_optimizer_step_changes_only_trainable_parameters():
    model = tiny_classifier("last_block")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    classifier = GPTClassifier(model)
    optimizer = make_optimizer(classifier, lr=1e-2)
    ids = torch.randint(0, TINY.vocab_size, (4, 10))
    loss = torch.nn.functional.cross_entropy(classifier(ids), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == param.requires_grad, name


def test_head_is_seeded_without_touching_global_randomness():
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = add_classification_head(GPTModel(TINY), seed=123).out_head.weight.clone()
    torch.manual_seed(5)
    GPTModel(TINY)  # consume the same random numbers as above, minus the head
    assert torch.equal(add_classification_head(GPTModel(TINY), seed=123).out_head.weight, first)
    torch.manual_seed(5)
    add_classification_head(GPTModel(TINY), seed=99)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), expected_next)


def test_classified_positions():
    lengths = torch.tensor([3, 7, 1])
    assert classified_positions(lengths, 7, "flexible").tolist() == [2, 6, 0]
    assert classified_positions(lengths, 7, "last").tolist() == [6, 6, 6]
    assert classified_positions(lengths, 7, "first").tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        classified_positions(lengths, 7, "middle")


def test_flexible_logits_equal_the_unpadded_message_alone():
    model = tiny_classifier().eval()
    classifier = GPTClassifier(model, "flexible")
    messages = [
        torch.randint(0, 99, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 12, 1)
    ]
    padded = torch.nn.utils.rnn.pad_sequence(messages, batch_first=True, padding_value=99)
    lengths = torch.tensor([len(m) for m in messages])
    with torch.no_grad():
        batch_logits = classifier(padded, lengths)
        for row, message in enumerate(messages):
            alone = classifier(message.unsqueeze(0))[0]
            torch.testing.assert_close(batch_logits[row], alone, rtol=0, atol=1e-5)
        # more padding changes nothing either
        wider = torch.cat([padded, torch.full((3, 8), 99)], dim=1)
        torch.testing.assert_close(classifier(wider, lengths), batch_logits, rtol=0, atol=1e-5)


def test_last_token_prediction_depends_on_padding():
    """The book's choice reads a padding token, whose output moves with the padding."""
    model = tiny_classifier().eval()
    classifier = GPTClassifier(model, "last")
    message = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        short = classifier(torch.cat([message, torch.full((1, 2), 99)], dim=1))
        long = classifier(torch.cat([message, torch.full((1, 20), 99)], dim=1))
    assert not torch.allclose(short, long, atol=1e-4)
