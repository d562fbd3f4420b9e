"""The benchmark's arithmetic (its timings are measured by running it, not by tests)."""

from __future__ import annotations

import pytest

from ch06_classification.benchmark import block_flops, fast_path_flops


def test_block_flops_counts_weights_and_attention():
    # 3 tokens, emb 4: 2 * 3 * 12 * 16 = 1152 for the weights; 6 attended pairs: 2*2*6*4 = 96
    assert block_flops(tokens=3, attended=6, emb_dim=4) == 1152 + 96


def test_fast_path_flops_by_hand():
    d = 4
    work = fast_path_flops(
        distinct_lengths=[2, 3],
        train_batches=[[2, 3]],
        eval_batches_per_epoch=1,
        all_lengths=[2, 3, 2],
        frozen_blocks=2,
        emb_dim=d,
        epochs=3,
    )
    # prefix: 2 blocks x (length 2: 2*2*12*16 + 4*3*4 = 768 + 48; length 3: 1152 + 96)
    assert work["prefix"] == 2 * (816 + 1248)

    def top(lengths):  # keys/values + one-token layers + attention + head
        n = sum(lengths)
        return (
            2 * n * 2 * d**2 + 2 * len(lengths) * 10 * d**2 + 4 * n * d + 2 * len(lengths) * d * 2
        )

    # per epoch: forward + backward (3x forward) of the one batch, plus one evaluation batch
    # of the mean length (5 tokens over 2 messages -> 2.5 each)
    assert work["training"] == pytest.approx(3 * (3 * top([2, 3]) + top([2.5, 2.5])))
    assert work["final"] == top([2, 3, 2])
