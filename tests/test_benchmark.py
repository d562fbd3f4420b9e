"""The benchmark's arithmetic (its timings are measured by running it, not by tests).

The expected counts come from elsewhere than the formulas under test: from PyTorch's own
``FlopCounterMode``, which counts the matrix multiplications a forward pass really runs, or
from hand arithmetic for a tiny configuration.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.finetune import adamw_bytes, block_flops, fast_path_flops, trained_parameters
from ch06_classification.speed.fast_path import last_position_block
from gpt.config import GPTConfig
from gpt.model import TransformerBlock

EMB, HEADS = 4, 2
CONFIG = GPTConfig(vocab_size=8, context_length=8, emb_dim=EMB, n_heads=HEADS, n_layers=1)


def counted_flops(run) -> int:
    """FLOPs of the matrix multiplications ``run()`` performs, as PyTorch counts them."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        run()
    return counter.get_total_flops()


def test_block_flops_matches_pytorchs_count_of_a_block():
    torch.manual_seed(0)
    # The manual attention, whose two products PyTorch counts (its counter does not know
    # the CPU's fused attention kernel); the fused one computes the same products.
    block = TransformerBlock(GPTConfig(**{**CONFIG.to_dict(), "implementation": "manual"}))
    x = torch.randn(1, 3, EMB)
    # The full block computes every one of the 3 x 3 scores (the mask only hides some).
    assert block_flops(tokens=3, attended=9, emb_dim=EMB) == counted_flops(lambda: block(x))


def test_block_flops_by_hand():
    # 3 tokens, emb 4: 2 * 3 * 12 * 16 = 1152 for the weights; 6 attended pairs: 2*2*6*4 = 96
    assert block_flops(tokens=3, attended=6, emb_dim=4) == 1152 + 96


def test_fast_path_flops_match_pytorchs_count_of_the_top():
    torch.manual_seed(0)
    block = TransformerBlock(CONFIG)
    head = nn.Linear(EMB, 2, bias=False)  # the classification head: 2 classes

    def top_forward(lengths: list[int]) -> int:
        """Counted FLOPs of the trained top on one batch, padded to its longest message."""
        x = torch.randn(len(lengths), max(lengths), EMB)
        positions = torch.tensor(lengths) - 1
        return counted_flops(lambda: head(last_position_block(block, x, positions)))

    work = fast_path_flops(
        distinct_lengths=[2, 3],
        train_batches=[[2, 3]],
        eval_batches_per_epoch=1,
        final_batches=[[2, 3], [2]],
        frozen_blocks=2,
        emb_dim=EMB,
        n_heads=HEADS,
        epochs=3,
    )
    # prefix: 2 blocks x (length 2: 2*2*12*16 + 4*3*4 = 768 + 48; length 3: 1152 + 96),
    # counting only the causal mask's visible pairs (3 for length 2, 6 for length 3)
    assert work["prefix"] == 2 * (816 + 1248)
    batch = top_forward([2, 3])
    # per epoch: forward + backward (counted as 2x forward) of the one training batch, plus
    # one evaluation batch, counted as the average training batch's forward
    assert work["training"] == 3 * (3 * batch + batch)
    assert work["final"] == batch + top_forward([2])


def test_adamw_traffic_is_28_bytes_per_trained_parameter_per_step():
    # float32: reads parameter, gradient, first and second moment (4 x 4 B), writes
    # parameter and both moments back (3 x 4 B)
    assert adamw_bytes(trained_parameters=1000, steps=3) == (16 + 12) * 1000 * 3


def test_trained_parameters_of_the_recipe_are_the_books_count():
    # the book's section 6.5 count for gpt2-small with the last block, final norm and head
    assert trained_parameters("gpt2-small") == 7_090_946


def test_stand_in_weights_load_through_the_pretrained_path_as_the_random_weights(tmp_path):
    """The benchmark times runs from a stand-in for OpenAI's file: loading it must give the
    very tensors ``--weights random`` draws, so that the runs reach the same accuracies."""
    from benchmarks.common import stand_in_weights
    from ch06_classification.finetuning.model import build_classifier

    tiny = {"emb_dim": 16, "n_layers": 2, "n_heads": 2, "context_length": 16}
    path = stand_in_weights("gpt2-small", tmp_path, **tiny)
    loaded = build_classifier("gpt2-small", "pretrained", weights_dir=tmp_path, **tiny)
    drawn = build_classifier("gpt2-small", "random", **tiny)

    assert path == tmp_path / "gpt2-small.safetensors"
    expected = drawn.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
