"""The pipeline's loaders: ``SpamDataset``'s messages in batches that carry their lengths.

GPT-2 has no padding token, so like the book we pad with ``<|endoftext|>`` (id 50256).
Because that id is also an ordinary token, every batch here says how many of each row's
tokens are real: the classifier reads the output at the last *real* token, not at
whatever padding happens to sit at the end of the row. The split files are read through
``read_split``, which checks them (``sources/split_files.py``), and handed to
``SpamDataset`` as they were read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import tiktoken
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ch06_classification.dataset import Example, Padding, SpamDataset
from ch06_classification.sources.split_files import read_split
from ch06_classification.speed.batching import pad_right
from ch06_classification.storage.datafiles import SPLIT_FILES
from gpt.tokenizer import END_OF_TEXT_ID


class Batch(NamedTuple):
    """One batch of messages: ``for input_batch, target_batch, lengths in loader``."""

    input_ids: Tensor  # [B, T] int64, padded on the right with the pad token
    labels: Tensor  # [B] int64, 0 = ham, 1 = spam
    lengths: Tensor  # [B] int64, number of real (non-padding) tokens


class DataLoaders(NamedTuple):
    """The loaders of the three splits; unpacks like the book's three variables."""

    train: DataLoader
    validation: DataLoader
    test: DataLoader


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
        return SpamDataset(
            read_split(data_dir / SPLIT_FILES[split]),  # checked where it is read
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
