"""Token ids for the classifier: ``SpamDataset``, the batch it comes in, and the loaders.

GPT-2 has no padding token, so like the book we pad with ``<|endoftext|>`` (id 50256).
Because that id is also an ordinary token, every batch says how many of each row's
tokens are real: the classifier must read the output at the last *real* token, not at
whatever padding happens to sit at the end of the row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import tiktoken
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ch06_classification.speed.batching import pad_right
from ch06_classification.storage.datafiles import SPLIT_FILES, DataError
from gpt.tokenizer import END_OF_TEXT_ID

Padding = Literal["fixed", "batch"]


class Batch(NamedTuple):
    """One batch of messages: ``for input_batch, target_batch, lengths in loader``."""

    input_ids: Tensor  # [B, T] int64, padded on the right with the pad token
    labels: Tensor  # [B] int64, 0 = ham, 1 = spam
    lengths: Tensor  # [B] int64, number of real (non-padding) tokens


class Example(NamedTuple):
    """One message as ``SpamDataset(..., with_lengths=True)`` hands it out, before batching."""

    input_ids: Tensor  # [T] int64
    label: Tensor  # [] int64
    length: Tensor  # [] int64, number of real tokens at the start of input_ids


class DataLoaders(NamedTuple):
    """The loaders of the three splits; unpacks like the book's three variables."""

    train: DataLoader
    validation: DataLoader
    test: DataLoader


def encode_message(tokenizer: tiktoken.Encoding, text: str) -> list[int]:
    """A message's GPT-2 token ids.

    An SMS is untrusted text: if one contains ``<|endoftext|>``, that is encoded as the
    characters it is, not as the special token (tiktoken would otherwise refuse it).
    """
    return tokenizer.encode(text, disallowed_special=())


class SpamDataset(Dataset):
    """The messages of one split CSV, tokenized once, up front.

    ``max_length=None`` uses the longest message in this file, which is right for the
    training set; the validation and test sets must be given the training set's
    ``max_length`` instead. Longer messages are cut to ``max_length`` tokens (their number
    is ``num_truncated``). ``context_length``, the model's, caps the longest message: one
    longer than the model can read is cut to fit rather than crash the model.

    ``padding="fixed"`` pads every message to ``max_length`` tokens, as the book does;
    ``padding="batch"`` stores no padding, and :func:`collate_batch` pads each batch only
    to its own longest message, which saves computing on padding.

    Item ``i`` is ``(input_ids, label)``, as in the book, so a plain ``DataLoader`` yields
    ``(input_batch, target_batch)``. ``with_lengths=True`` adds each message's number of
    real tokens (an :class:`Example`): the last real token is found from it, whatever the
    padding. The project's loaders (:func:`create_data_loader`) use that.
    """

    def __init__(
        self,
        csv_file: str | Path,
        tokenizer: tiktoken.Encoding,
        max_length: int | None = None,
        pad_token_id: int = END_OF_TEXT_ID,
        padding: Padding = "fixed",
        with_lengths: bool = False,
        context_length: int | None = None,
    ) -> None:
        if padding not in ("fixed", "batch"):
            raise ValueError(f"padding must be 'fixed' or 'batch', not {padding!r}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        # Imported here: pandas takes a while to import, and classifying needs only
        # encode_message from this module.
        from ch06_classification.splits import read_split

        self.data = read_split(Path(csv_file))
        encoded_texts = [encode_message(tokenizer, text) for text in self.data["Text"]]
        self.max_length = (
            self._longest_encoded_length(encoded_texts) if max_length is None else max_length
        )
        if context_length is not None:
            self.max_length = min(self.max_length, context_length)
        self.num_truncated = sum(len(ids) > self.max_length for ids in encoded_texts)
        self.pad_token_id = pad_token_id
        self.padding = padding
        self.with_lengths = with_lengths
        self.encoded_texts = [encoded_text[: self.max_length] for encoded_text in encoded_texts]
        self.lengths = torch.tensor([len(ids) for ids in self.encoded_texts], dtype=torch.long)
        self.labels = torch.tensor(self.data["Label"].to_numpy(), dtype=torch.long)
        if (self.lengths == 0).any():
            # The classifier reads the last real token; an empty message has none.
            row = int((self.lengths == 0).int().argmax()) + 1
            raise DataError(f"{csv_file}: message {row} is empty; remove it or give it text")
        if padding == "fixed":
            self.encoded_texts = [
                ids + [pad_token_id] * (self.max_length - len(ids)) for ids in self.encoded_texts
            ]

    @staticmethod
    def _longest_encoded_length(encoded_texts: Sequence[list[int]]) -> int:
        return max(len(ids) for ids in encoded_texts)

    def __getitem__(self, index: int) -> Example | tuple[Tensor, Tensor]:
        input_ids = torch.tensor(self.encoded_texts[index], dtype=torch.long)
        if not self.with_lengths:
            return input_ids, self.labels[index]
        return Example(input_ids, self.labels[index], self.lengths[index])

    def __len__(self) -> int:
        return len(self.data)


def collate_batch(examples: Sequence[Example], pad_token_id: int = END_OF_TEXT_ID) -> Batch:
    """Stack examples into a :class:`Batch`, padding each row to the longest in the batch.

    Rows that are already padded to a common length (``padding="fixed"``) stay as they are.
    """
    return Batch(
        input_ids=pad_right([example.input_ids for example in examples], pad_token_id),
        labels=torch.stack([example.label for example in examples]),
        lengths=torch.stack([example.length for example in examples]),
    )


def create_data_loader(
    dataset: SpamDataset,
    batch_size: int = 8,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int = 123,
    num_workers: int = 0,
) -> DataLoader:
    """A loader over ``dataset`` yielding :class:`Batch` es; a shuffled one is seeded.

    ``dataset`` must hand out lengths (``SpamDataset(..., with_lengths=True)``).
    """
    if not getattr(dataset, "with_lengths", True):
        raise ValueError(
            "create_data_loader needs SpamDataset(..., with_lengths=True); for the book's "
            "(input_batch, target_batch) batches, use torch.utils.data.DataLoader(dataset)"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=functools.partial(collate_batch, pad_token_id=dataset.pad_token_id),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def create_data_loaders(
    data_dir: str | Path,
    tokenizer: tiktoken.Encoding,
    batch_size: int = 8,
    max_length: int | None = None,
    padding: Padding = "batch",
    seed: int = 123,
    num_workers: int = 0,
    context_length: int | None = None,
) -> DataLoaders:
    """Loaders for ``train.csv``, ``validation.csv`` and ``test.csv`` in ``data_dir``.

    ``max_length`` (default: the longest training message) is settled on the training
    set alone and reused for the other two, so that nothing about them shapes the setup.
    The training loader shuffles (seeded) and drops the last incomplete batch, as the
    book's does; the others keep every row, in order. ``context_length`` (the model's)
    caps ``max_length``; see :class:`SpamDataset`.
    """
    data_dir = Path(data_dir)

    def load(split: str, max_length: int | None) -> SpamDataset:
        path = data_dir / SPLIT_FILES[split]
        return SpamDataset(
            path,
            tokenizer,
            max_length,
            padding=padding,
            with_lengths=True,
            context_length=context_length,
        )

    train_dataset = load("train", max_length)
    validation_dataset = load("validation", train_dataset.max_length)
    test_dataset = load("test", train_dataset.max_length)
    return DataLoaders(
        train=create_data_loader(
            train_dataset,
            batch_size,
            shuffle=True,
            drop_last=True,
            seed=seed,
            num_workers=num_workers,
        ),
        validation=create_data_loader(validation_dataset, batch_size, num_workers=num_workers),
        test=create_data_loader(test_dataset, batch_size, num_workers=num_workers),
    )
