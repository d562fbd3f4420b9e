"""Batching messages of different lengths: pad on the right, and group similar lengths.

GPT-2 reads rectangles of token ids, and messages have many lengths. Every batch is padded
on the right (under the causal mask, padding after a token never changes that token's
output). Where the order of the messages is ours to choose, sorting them by length first
puts similar lengths together, so a batch is padded only a little:

- the training loaders keep the order they draw (the book's batches): :func:`pad_right`
  pads each batch to its longest message (``collate_batch`` in ``dataset.py``);
- classifying many messages (``SpamClassifier``) sorts them, batches a fixed number of
  them, and puts the results back in the input order;
- caching the frozen blocks (``encode_prefix`` in ``fast_path.py``) sorts them and fills
  each batch up to a budget of padded tokens: many short messages, or a few long ones;
  the cached hidden states are then batched in the training loaders' order, and padded
  like token ids (``collate_features``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def pad_right(
    sequences: Sequence[Sequence[int] | torch.Tensor],
    pad_value: float = 0,
    width: int | None = None,
) -> torch.Tensor:
    """The sequences stacked as rows, each followed by ``pad_value`` up to ``width``
    (default: the longest sequence's length).

    Lists of token ids give a [batch, width] int64 tensor; tensors of shape [length, ...]
    (cached hidden states, say) give [batch, width, ...] of their dtype.
    """
    rows = [torch.as_tensor(sequence) for sequence in sequences]
    width = max(len(row) for row in rows) if width is None else width
    padded = rows[0].new_full((len(rows), width, *rows[0].shape[1:]), pad_value)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    return padded


def batches_by_length(
    lengths: Sequence[int],
    *,
    batch_size: int | None = None,
    tokens_per_batch: int | None = None,
    equal_lengths: bool = False,
    indices: Iterable[int] | None = None,
) -> list[list[int]]:
    """Indices of sequences (those in ``indices``, default all) grouped into batches of
    similar length, shortest first (ties in the given order).

    A batch holds at most ``batch_size`` sequences, or as many as fit in
    ``tokens_per_batch`` padded tokens (a longer sequence alone); with ``equal_lengths``,
    only sequences of one length share a batch (nothing is padded).
    """
    if (batch_size is None) == (tokens_per_batch is None):
        raise ValueError("give exactly one of batch_size and tokens_per_batch")
    order = sorted(range(len(lengths)) if indices is None else indices, key=lengths.__getitem__)
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is None or (equal_lengths and lengths[batch[0]] != lengths[i]):
            batches.append([i])
        elif batch_size is not None and len(batch) < batch_size:
            batch.append(i)
        elif tokens_per_batch is not None and (len(batch) + 1) * lengths[i] <= tokens_per_batch:
            batch.append(i)  # sorted: the new sequence is the batch's longest
        else:
            batches.append([i])
    return batches
