"""The fast path computes what the full model computes, only less of it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from ch06_classification.classifier import add_classification_head
from ch06_classification.dataset import SpamDataset
from ch06_classification.finetuning.finetune import TrainingSettings, choose_path
from ch06_classification.finetuning.loaders import create_data_loaders
from ch06_classification.finetuning.loop import make_optimizer
from ch06_classification.finetuning.model import GPTClassifier, freeze_for_classification
from ch06_classification.speed.fast_path import (
    ClassifiedTokenClassifier,
    PrefixCachedClassifier,
    RowCachedClassifier,
    cache_frozen_blocks,
    classified_sequences,
    encode_prefix,
    fast_path_unavailable_reason,
    last_position_block,
    prepare_fast_path,
)
from ch06_classification.training import (
    calc_accuracy_loader,
    calc_loss_batch,
    train_classifier_simple,
)
from gpt.config import GPTConfig
from gpt.errors import UserFacingError
from gpt.model import GPTModel, TransformerBlock
from tests.synthetic_splits import write_synthetic_splits

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = GPTConfig(context_length=64, emb_dim=32, n_heads=4, n_layers=3)


def tiny_model(trainable_layers: str = "last_block", seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(dataclasses.replace(TINY, **overrides), init="gpt2")
    return freeze_for_classification(add_classification_head(model), trainable_layers)


def test_last_position_block_equals_the_full_block_at_that_position():
    torch.manual_seed(0)
    block = TransformerBlock(TINY).eval()
    with torch.no_grad():
        for param in block.parameters():
            param.add_(0.1 * torch.randn_like(param))  # biases and norms away from 0/1
    x = torch.randn(5, 11, TINY.emb_dim)
    positions = torch.tensor([0, 10, 3, 7, 10])
    with torch.no_grad():
        full = block(x)[torch.arange(5), positions]
        fast = last_position_block(block, x, positions)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_splits(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("trainable_layers", ["last_layer", "last_block", "last_two_blocks"])
@pytest.mark.parametrize("token_position", ["flexible", "last"])
def test_cached_classifier_gives_the_full_models_logits(
    data_dir, tokenizer, trainable_layers, token_position
):
    model = tiny_model(trainable_layers).eval()
    loaders = create_data_loaders(data_dir, tokenizer, padding="fixed")
    dataset = loaders.validation.dataset
    top, (_, validation, _) = prepare_fast_path(
        model, list(loaders), torch.device("cpu"), token_position=token_position
    )
    reference = GPTClassifier(model, token_position)
    with torch.no_grad():
        for (ids, labels, lengths), (hidden, fast_labels, fast_lengths) in zip(
            loaders.validation, validation, strict=True
        ):
            assert torch.equal(labels, fast_labels)
            torch.testing.assert_close(
                top(hidden, fast_lengths), reference(ids, lengths), rtol=0, atol=1e-5
            )
    assert len(validation.dataset) == len(dataset)


def test_prefix_is_computed_on_real_tokens_only(data_dir, tokenizer):
    model = tiny_model().eval()
    loaders = create_data_loaders(data_dir, tokenizer, padding="fixed")
    dataset = loaders.train.dataset
    sequences = classified_sequences(dataset, "flexible")
    assert [len(s) for s in sequences] == dataset.lengths.tolist()
    features = encode_prefix(model, sequences, 2, torch.device("cpu"))
    with torch.no_grad():  # the same message run alone, unbatched
        x = model.embed(sequences[3].unsqueeze(0))
        for block in model.trf_blocks[:2]:
            x = block(x)
    torch.testing.assert_close(features[3], x[0], rtol=0, atol=1e-5)


def test_bf16_prefix_is_cached_in_bf16_and_close_to_float32(data_dir, tokenizer):
    model = tiny_model().eval()
    dataset = create_data_loaders(data_dir, tokenizer).train.dataset
    sequences = classified_sequences(dataset, "flexible")[:6]
    cpu = torch.device("cpu")
    fp32 = encode_prefix(model, sequences, 2, cpu)
    bf16 = encode_prefix(model, sequences, 2, cpu, precision="bf16")
    assert {f.dtype for f in fp32} == {torch.float32}
    assert {f.dtype for f in bf16} == {torch.bfloat16}  # half the memory
    for low, high in zip(bf16, fp32, strict=True):
        assert low.shape == high.shape
        torch.testing.assert_close(low.float(), high, rtol=0.05, atol=0.05)
    # The top computes from float32 whatever the cache holds: the same logits either way.
    top = PrefixCachedClassifier(model, 2, "flexible")
    hidden = torch.stack([f[:1] for f in bf16])
    lengths = torch.ones(len(bf16), dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(top(hidden, lengths), top(hidden.float(), lengths))


def run_steps(model, loader, device, steps: int):
    """Losses, gradients and parameters after each of ``steps`` AdamW steps."""
    optimizer = make_optimizer(model, lr=5e-5)
    record = []
    batches = iter(loader)
    for _ in range(steps):
        inputs, labels, lengths = next(batches)
        optimizer.zero_grad()
        loss = calc_loss_batch(inputs, labels, model, device, lengths)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        record.append((loss.item(), grads))
    return record


@pytest.mark.parametrize("trainable_layers", ["last_block", "last_two_blocks"])
def test_training_steps_match_the_full_model(data_dir, tokenizer, trainable_layers):
    """Same batches, same losses and gradients at every step, same accuracy after."""
    device = torch.device("cpu")
    reference_model = tiny_model(trainable_layers)
    fast_model = tiny_model(trainable_layers)
    loaders = create_data_loaders(data_dir, tokenizer, padding="fixed", batch_size=8)
    top, fast_loaders = prepare_fast_path(fast_model, list(loaders), device)
    reference = GPTClassifier(reference_model, "flexible")
    expected = run_steps(reference, loaders.train, device, steps=10)
    got = run_steps(top, fast_loaders[0], device, steps=10)
    for (loss, grads), (fast_loss, fast_grads) in zip(expected, got, strict=True):
        assert abs(loss - fast_loss) <= 1e-5
        # gradients are named from each trainee: gpt.* vs model.*
        assert len(grads) == len(fast_grads) > 0
        for grad, fast_grad in zip(grads.values(), fast_grads.values(), strict=True):
            torch.testing.assert_close(fast_grad, grad, rtol=0, atol=1e-5)
    for param, fast_param in zip(
        reference_model.parameters(), fast_model.parameters(), strict=True
    ):
        torch.testing.assert_close(fast_param, param, rtol=0, atol=1e-5)
    reference.eval()
    top.eval()
    assert calc_accuracy_loader(loaders.test, reference, device) == calc_accuracy_loader(
        fast_loaders[2], top, device
    )


@pytest.mark.parametrize("token_position", ["last", "flexible"])
def test_training_every_block_at_the_classified_token_matches_the_whole_model(
    data_dir, tokenizer, token_position
):
    """The full path (embeddings trainable, nothing cached) runs its last block at the
    classified token only: the same losses, gradients and parameters as the whole model."""
    device = torch.device("cpu")
    reference_model, model = tiny_model("all"), tiny_model("all")

    def batches():  # a fresh shuffled loader each: the same batches for both
        return create_data_loaders(data_dir, tokenizer, padding="fixed", batch_size=8).train

    reference = GPTClassifier(reference_model, token_position)
    trainee = ClassifiedTokenClassifier(model, token_position)
    expected = run_steps(reference, batches(), device, steps=6)
    got = run_steps(trainee, batches(), device, steps=6)
    for (loss, grads), (got_loss, got_grads) in zip(expected, got, strict=True):
        assert abs(loss - got_loss) <= 1e-5
        assert grads.keys() == got_grads.keys() and "gpt.tok_emb.weight" in grads
        for name, grad in grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-5)
    for param, got_param in zip(reference_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(got_param, param, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="without dropout"):
        ClassifiedTokenClassifier(tiny_model("all", drop_rate=0.1))


def test_fast_loader_draws_the_same_shuffled_batches(data_dir, tokenizer):
    loaders = create_data_loaders(data_dir, tokenizer, padding="batch", batch_size=8, seed=7)
    model = tiny_model().eval()
    _, fast_loaders = prepare_fast_path(model, list(loaders), torch.device("cpu"))
    for _epoch in range(2):  # and again: the generators advance in step
        for (_, labels, lengths), (_, fast_labels, fast_lengths) in zip(
            loaders.train, fast_loaders[0], strict=True
        ):
            assert torch.equal(labels, fast_labels) and torch.equal(lengths, fast_lengths)
    assert len(fast_loaders[0]) == len(loaders.train) == 96 // 8


def test_when_the_fast_path_does_not_apply():
    assert fast_path_unavailable_reason(tiny_model()) is None
    assert "dropout" in fast_path_unavailable_reason(tiny_model(drop_rate=0.1))
    assert "embeddings" in fast_path_unavailable_reason(tiny_model("all"))


def test_choose_path_says_which_runs_and_why():
    model = tiny_model()
    assert choose_path(TrainingSettings(), model)[0] == "fast"
    assert choose_path(TrainingSettings(fast_path="off"), model)[0] == "book"
    path, why = choose_path(TrainingSettings(token_position="first"), model)
    assert path == "fast" and "first token only" in why
    path, why = choose_path(TrainingSettings(trainable_layers="all"), tiny_model("all"))
    assert path == "full" and "embeddings are trainable" in why
    with pytest.raises(UserFacingError, match="--fast-path on is not possible"):
        choose_path(TrainingSettings(fast_path="on"), tiny_model("all"))


def test_cached_top_trains_the_shared_model():
    model = tiny_model()
    top = PrefixCachedClassifier(model, first_block=2)
    trainable = {id(p) for p in top.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}


# Each combination the fast path now computes, trained both ways on the same batches.
NEWLY_FAST = {
    "first token": {"token_position": "first"},
    "last token, head only": {"token_position": "last", "trainable_layers": "last_layer"},
    "last token, two blocks": {"token_position": "last", "trainable_layers": "last_two_blocks"},
    "no padding, batch 1": {"token_position": "last", "no_padding": True},
    "no padding, accumulation": {"no_padding": True, "accumulation_steps": 8},
    "accumulation, batch 8": {"accumulation_steps": 3},
    "causal mask disabled": {"token_position": "last", "disable_causal_mask": True},
    "mask disabled, first token": {"token_position": "first", "disable_causal_mask": True},
    "average embeddings": {"token_position": "last", "average_embeddings": True},
    "lora": {"trainable_layers": "lora", "lr": 1e-3},
    "lora, last token": {"trainable_layers": "lora", "token_position": "last", "lr": 1e-3},
}


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory):
    return write_synthetic_splits(tmp_path_factory.mktemp("small"), sizes=(24, 8, 8))


@pytest.mark.parametrize("options", NEWLY_FAST.values(), ids=NEWLY_FAST.keys())
def test_fast_path_trains_like_the_books_way(small_data_dir, options):
    """Same losses at every evaluation, same accuracies, same weights after training."""
    from ch06_classification.finetuning.finetune import fine_tune

    settings = TrainingSettings(
        weights="random",
        data_dir=str(small_data_dir),
        epochs=1,
        eval_freq=4,
        eval_iter=2,
        precision="fp32",  # the two paths agree to 1e-5 in float32, on any hardware
        config_overrides={"context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 3},
        **options,
    )
    fast = fine_tune(settings, log=lambda line: None)
    reference = fine_tune(dataclasses.replace(settings, fast_path="off"), log=lambda line: None)
    assert (fast.path, reference.path) == ("fast", "book")
    assert fast.history.steps == reference.history.steps
    torch.testing.assert_close(
        fast.history.train_losses, reference.history.train_losses, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        fast.history.val_losses, reference.history.val_losses, rtol=0, atol=1e-5
    )
    assert fast.accuracies == reference.accuracies
    # AdamW divides by the root of the gradient's second moment, so a parameter whose
    # gradient is zero in exact arithmetic (the key bias) moves by up to lr per step on
    # float rounding: weights agree to a few steps of lr, outputs to 1e-5.
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(
            fast.model.state_dict()[name], value, rtol=0, atol=4 * settings.lr
        )


# --- The book's training cell on a CPU: the book's model and loaders, frozen blocks cached ---


def book_loaders(data_dir, tokenizer, with_lengths: bool = False):
    """The book's DataLoaders of section 6.3 (fixed padding; shuffled by the global seed)."""
    train = SpamDataset(data_dir / "train.csv", tokenizer, with_lengths=with_lengths)
    validation = SpamDataset(
        data_dir / "validation.csv", tokenizer, train.max_length, with_lengths=with_lengths
    )
    return (
        DataLoader(train, batch_size=8, shuffle=True, drop_last=True),
        DataLoader(validation, batch_size=8),
    )


# The two compute the same sums in another order (the last block at one position, its key
# projection folded into the query), so they agree to float32 rounding, not bit for bit.
CLOSE = {"rtol": 0, "atol": 1e-5}


@pytest.mark.parametrize("trainable_layers", ["last_layer", "last_block", "last_two_blocks"])
def test_row_cache_gives_the_books_logits(data_dir, tokenizer, trainable_layers):
    model = tiny_model(trainable_layers).eval()
    cached = cache_frozen_blocks(model)
    _, validation = book_loaders(data_dir, tokenizer)
    with torch.no_grad():
        for _ in range(2):  # computed, then read from the cache
            for input_batch, _ in validation:
                expected = model(input_batch)[:, -1, :]  # the book's reading
                torch.testing.assert_close(cached(input_batch), expected, **CLOSE)
    assert len(cached.cache) == len({tuple(row) for row in validation.dataset.encoded_texts})


def test_row_cache_reads_the_last_real_token_when_flexible(data_dir, tokenizer):
    model = tiny_model().eval()
    cached = cache_frozen_blocks(model, token_position="flexible")
    _, validation = book_loaders(data_dir, tokenizer, with_lengths=True)
    reference = GPTClassifier(model, "flexible")
    with torch.no_grad():
        for input_batch, _, lengths in validation:
            expected = reference(input_batch, lengths)
            torch.testing.assert_close(cached(input_batch, lengths), expected, **CLOSE)
            # Without lengths, the real tokens are those that are not padding.
            torch.testing.assert_close(cached(input_batch), expected, **CLOSE)
    # Only the real tokens are computed and kept: the padding after them is never read.
    assert {len(hidden) for hidden in cached.cache.values()} <= set(
        validation.dataset.lengths.tolist()
    )


def test_train_classifier_simple_on_the_row_cache_matches_the_book(data_dir, tokenizer):
    """The book's training cell, once with the book's model and once with its frozen blocks
    cached: the same five lists, and the same weights after."""
    device = torch.device("cpu")
    histories, models = [], []
    for wrap in (lambda model: model, cache_frozen_blocks):
        model = tiny_model()
        torch.manual_seed(123)  # the book's loaders shuffle with the global generator
        train_loader, val_loader = book_loaders(data_dir, tokenizer)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
        history = train_classifier_simple(
            wrap(model), train_loader, val_loader, optimizer, device,
            num_epochs=3, eval_freq=5, eval_iter=2,
        )  # fmt: skip
        histories.append(list(history))
        models.append(model)
    (book_train, book_val, book_train_accs, book_val_accs, book_seen) = histories[0]
    (train, val, train_accs, val_accs, seen) = histories[1]
    assert len(train) == len(book_train) > 3
    torch.testing.assert_close(train, book_train, **CLOSE)
    torch.testing.assert_close(val, book_val, **CLOSE)
    # Accuracies count argmaxes: logits 1e-5 apart give the same ones.
    assert (train_accs, val_accs, seen) == (book_train_accs, book_val_accs, book_seen)
    # As in test_fast_path_trains_like_the_books_way: AdamW may move a parameter with an
    # exactly-zero gradient (the key bias) by up to lr per step on float rounding.
    for name, value in models[0].state_dict().items():
        torch.testing.assert_close(models[1].state_dict()[name], value, rtol=0, atol=2e-3)


def test_row_cache_refuses_what_it_cannot_cache():
    with pytest.raises(ValueError, match="dropout"):
        RowCachedClassifier(tiny_model(drop_rate=0.1))
    with pytest.raises(ValueError, match="embeddings are trainable"):
        cache_frozen_blocks(tiny_model("all"))
