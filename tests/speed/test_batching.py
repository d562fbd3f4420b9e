"""Padding and grouping by length, shared by the loaders, inference and the fast path."""

from __future__ import annotations

import random

import pytest
import torch

from ch06_classification.speed.batching import batches_by_length, pad_right


def test_pad_right_token_ids():
    ids = pad_right([[1, 2, 3], [4]], pad_value=9)
    assert ids.dtype == torch.long
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert pad_right([[1, 2], torch.tensor([3])], 0, width=4).tolist() == [
        [1, 2, 0, 0],
        [3, 0, 0, 0],
    ]


def test_pad_right_hidden_states_keep_their_dtype_and_trailing_shape():
    short, long = (
        torch.ones(1, 2, dtype=torch.float64),
        torch.full((3, 2), 2.0, dtype=torch.float64),
    )
    padded = pad_right([short, long], pad_value=0.0)
    assert padded.shape == (2, 3, 2) and padded.dtype == torch.float64
    assert padded[0].tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert torch.equal(padded[1], long)


# lengths of sequences 0..4; sorted (ties in index order): 1, 3 (length 1), 4 (2), 2 (3), 0 (5)
LENGTHS = [5, 1, 3, 1, 2]


def test_a_fixed_number_per_batch_shortest_first():
    assert batches_by_length(LENGTHS, batch_size=2) == [[1, 3], [4, 2], [0]]


def test_a_budget_of_padded_tokens_per_batch():
    # [1, 3] pads to 2 x 1 tokens; adding 4 would make 3 x 2 = 6 > 4; a longer one is alone
    assert batches_by_length(LENGTHS, tokens_per_batch=4) == [[1, 3], [4], [2], [0]]
    assert batches_by_length(LENGTHS, tokens_per_batch=100) == [[1, 3, 4, 2, 0]]


def test_equal_lengths_only_share_a_batch():
    assert batches_by_length(LENGTHS, tokens_per_batch=100, equal_lengths=True) == [
        [1, 3],
        [4],
        [2],
        [0],
    ]


def test_only_the_given_indices_are_batched():
    assert batches_by_length(LENGTHS, batch_size=2, indices=[0, 2, 4]) == [[4, 2], [0]]


def test_every_sequence_once_batches_sorted_and_within_bounds():
    generator = random.Random(0)
    lengths = [generator.randint(1, 50) for _ in range(300)]
    for options in ({"batch_size": 7}, {"tokens_per_batch": 120}):
        batches = batches_by_length(lengths, **options)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(lengths)))
        assert [lengths[i] for i in flat] == sorted(lengths)
        for batch in batches:
            if "batch_size" in options:
                assert len(batch) <= 7
            elif len(batch) > 1:
                assert len(batch) * max(lengths[i] for i in batch) <= 120


def test_exactly_one_bound():
    with pytest.raises(ValueError):
        batches_by_length(LENGTHS)
    with pytest.raises(ValueError):
        batches_by_length(LENGTHS, batch_size=2, tokens_per_batch=4)
