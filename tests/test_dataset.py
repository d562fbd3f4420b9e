"""SpamDataset, the batches it comes in, and the loaders, on small hand-made CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ch06_classification.dataset import SpamDataset
from ch06_classification.finetuning.loaders import (
    Batch,
    collate_batch,
    create_data_loader,
    create_data_loaders,
)
from ch06_classification.sources.split_files import read_split
from ch06_classification.storage.datafiles import DataError
from gpt.tokenizer import END_OF_TEXT_ID

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TEXTS = [
    "Hi",
    "Are we still meeting at six tonight?",
    'WINNER!! You have won a "free" prize, call 09061701461 now',
    "ok",
    "Sorry, I'll call later",
]


def write_csv(path: Path, texts: list[str], labels: list[int] | None = None) -> Path:
    labels = labels if labels is not None else [i % 2 for i in range(len(texts))]
    pd.DataFrame({"Label": labels, "Text": texts}).to_csv(path, index=False)
    return path


@pytest.fixture
def train_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "train.csv", TEXTS)


def test_fixed_padding_pads_every_row_to_the_longest_message(train_csv: Path, tokenizer) -> None:
    encoded = [tokenizer.encode(text) for text in TEXTS]
    dataset = SpamDataset(train_csv, tokenizer, with_lengths=True)

    assert dataset.max_length == max(map(len, encoded))
    assert dataset.lengths.tolist() == [len(ids) for ids in encoded]
    for i, ids in enumerate(encoded):
        example = dataset[i]
        assert example.input_ids.dtype == torch.int64
        assert example.input_ids.tolist() == ids + [END_OF_TEXT_ID] * (
            dataset.max_length - len(ids)
        )
        assert example.label.item() == i % 2
        assert example.length.item() == len(ids)


def test_longer_messages_are_truncated_to_max_length(train_csv: Path, tokenizer) -> None:
    dataset = SpamDataset(train_csv, tokenizer, max_length=4, padding="batch", with_lengths=True)

    full_lengths = [len(tokenizer.encode(text)) for text in TEXTS]
    assert dataset.lengths.tolist() == [min(n, 4) for n in full_lengths]
    assert dataset[2].input_ids.tolist() == tokenizer.encode(TEXTS[2])[:4]


def test_batch_padding_pads_only_to_the_longest_row_of_the_batch(
    train_csv: Path, tokenizer
) -> None:
    dataset = SpamDataset(train_csv, tokenizer, pad_token_id=0, padding="batch", with_lengths=True)
    short = [0, 3]  # "Hi" and "ok"
    batch = collate_batch([dataset[i] for i in short], pad_token_id=0)

    assert isinstance(batch, Batch)
    lengths = [len(tokenizer.encode(TEXTS[i])) for i in short]
    assert batch.input_ids.shape == (2, max(lengths))
    assert batch.lengths.tolist() == lengths
    assert batch.labels.tolist() == [0, 1]
    for row, i in enumerate(short):
        real = batch.input_ids[row, : lengths[row]].tolist()
        assert real == tokenizer.encode(TEXTS[i])
        assert batch.input_ids[row, lengths[row] :].eq(0).all()


def test_both_paddings_agree_on_the_real_tokens(train_csv: Path, tokenizer) -> None:
    def examples(padding: str) -> list:
        dataset = SpamDataset(train_csv, tokenizer, padding=padding, with_lengths=True)
        return [dataset[i] for i in range(5)]

    fixed, batch = collate_batch(examples("fixed")), collate_batch(examples("batch"))

    # The batch's longest row is the longest message, so both pad to the same width.
    torch.testing.assert_close(fixed.input_ids, batch.input_ids)
    torch.testing.assert_close(fixed.lengths, batch.lengths)
    # The last real token of each row is the message's last token, not padding.
    last = fixed.input_ids[torch.arange(5), fixed.lengths - 1]
    assert last.tolist() == [tokenizer.encode(text)[-1] for text in TEXTS]


def test_end_of_text_inside_a_message_is_plain_text(tmp_path: Path, tokenizer) -> None:
    csv = write_csv(tmp_path / "odd.csv", ["before <|endoftext|> after"], [1])

    dataset = SpamDataset(csv, tokenizer)

    assert END_OF_TEXT_ID not in dataset[0][0].tolist()


def test_empty_message_is_refused(tmp_path: Path, tokenizer) -> None:
    csv = write_csv(tmp_path / "empty.csv", ["fine", ""], [0, 1])

    with pytest.raises(ValueError, match="message 2 is empty"):  # the book's class
        SpamDataset(csv, tokenizer)
    with pytest.raises(DataError, match="row 2 has no text"):  # the pipeline's checked read
        SpamDataset(read_split(csv), tokenizer)


def test_a_checked_read_gives_the_dataset_of_the_books_read(tmp_path: Path, tokenizer) -> None:
    # The pipeline reads each split through read_split (checked, texts as written); the book
    # hands SpamDataset the file. Texts pandas would take for missing values included.
    texts = [*TEXTS, "NA", "null", "123"]
    csv = write_csv(tmp_path / "train.csv", texts)
    book, checked = SpamDataset(csv, tokenizer), SpamDataset(read_split(csv), tokenizer)

    assert len(book) == len(checked) == len(texts) and book.max_length == checked.max_length
    for i in range(len(texts)):
        for ours, theirs in zip(checked[i], book[i], strict=True):
            assert torch.equal(ours, theirs)


def test_loaders_take_max_length_from_training_and_batch_as_the_book(
    tmp_path: Path, tokenizer
) -> None:
    write_csv(tmp_path / "train.csv", [f"message number {i}" for i in range(21)])
    write_csv(tmp_path / "validation.csv", ["short", "a much longer message " * 10, "x"])
    write_csv(tmp_path / "test.csv", ["one", "two"])

    loaders = create_data_loaders(tmp_path, tokenizer, batch_size=4, padding="fixed")

    train_max = len(tokenizer.encode("message number 10"))
    assert [loader.dataset.max_length for loader in loaders] == [train_max] * 3
    assert loaders.validation.dataset.lengths.tolist()[1] == train_max  # truncated
    assert [len(loader) for loader in loaders] == [5, 1, 1]  # train drops its last row
    input_batch, target_batch, lengths = next(iter(loaders.validation))
    assert input_batch.shape == (3, train_max)
    assert target_batch.tolist() == [0, 1, 0] and lengths.shape == (3,)


def test_training_order_is_shuffled_reproducibly(tmp_path: Path, tokenizer) -> None:
    dataset = SpamDataset(
        write_csv(tmp_path / "train.csv", [f"message {i}" for i in range(32)]),
        tokenizer,
        with_lengths=True,
    )

    def order(seed: int) -> list[int]:
        loader = create_data_loader(dataset, batch_size=8, shuffle=True, seed=seed)
        return torch.cat([batch.input_ids[:, 1] for batch in loader]).tolist()

    assert order(123) == order(123)
    assert order(123) != order(7)
    assert sorted(order(123)) == sorted(dataset[i].input_ids[1].item() for i in range(32))


def test_items_are_the_books_pairs_unless_lengths_are_asked_for(train_csv: Path, tokenizer) -> None:
    book = SpamDataset(train_csv, tokenizer)
    ours = SpamDataset(train_csv, tokenizer, with_lengths=True)

    input_ids, label = book[2]  # the book's (input, target) pair
    assert input_ids.tolist() == ours[2].input_ids.tolist() and label == ours[2].label
    assert ours[2].length.item() == len(tokenizer.encode(TEXTS[2]))
    with pytest.raises(ValueError, match="with_lengths=True"):
        create_data_loader(book)


def test_missing_csv_says_to_run_the_split_step(tmp_path: Path, tokenizer) -> None:
    with pytest.raises(DataError, match=r"train\.csv does not exist: run `gpt-spam split`"):
        create_data_loaders(tmp_path, tokenizer)
