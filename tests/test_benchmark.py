"""The benchmark's arithmetic (its timings are measured by running it, not by tests)."""

from __future__ import annotations

from ch06_classification.benchmark import block_flops, fast_path_flops


def test_block_flops_counts_weights_and_attention():
    # 3 tokens, emb 4: 2 * 3 * 12 * 16 = 1152 for the weights; 6 attended pairs: 2*2*6*4 = 96
    assert block_flops(tokens=3, attended=6, emb_dim=4) == 1152 + 96


def test_fast_path_flops_by_hand():
    d, heads = 4, 2
    work = fast_path_flops(
        distinct_lengths=[2, 3],
        train_batches=[[2, 3]],
        eval_batches_per_epoch=1,
        final_batches=[[2, 3], [2]],
        frozen_blocks=2,
        emb_dim=d,
        n_heads=heads,
        epochs=3,
    )
    # prefix: 2 blocks x (length 2: 2*2*12*16 + 4*3*4 = 768 + 48; length 3: 1152 + 96)
    assert work["prefix"] == 2 * (816 + 1248)

    def per_message(width):  # 12 d^2 weights, scores + averages per head, the 2-way head
        return 2 * 12 * d**2 + 2 * 2 * heads * width * d + 2 * d * 2

    batch = 2 * per_message(3)  # two messages, padded width 3
    # per epoch: forward + backward (3x forward) of the batch, plus one evaluation batch
    assert work["training"] == 3 * (3 * batch + batch)
    assert work["final"] == batch + per_message(2)
