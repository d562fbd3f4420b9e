"""The hand-written GPT-2: its pieces, its size, its causality."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from gpt.config import PRESETS, GPTConfig, get_config
from gpt.errors import UserFacingError
from gpt.model import (
    GELU,
    GPTModel,
    LayerNorm,
    MultiHeadAttention,
    causal_mask,
    count_parameters,
)

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = GPTConfig(vocab_size=97, context_length=32, emb_dim=48, n_heads=4, n_layers=3)


@pytest.mark.parametrize("fused", [False, True])
def test_layer_norm_matches_pytorch(fused):
    torch.manual_seed(0)
    ours, reference = LayerNorm(16, fused=fused), nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.scale.normal_()
        ours.shift.normal_()
        reference.weight.copy_(ours.scale)
        reference.bias.copy_(ours.shift)
    x = 3 * torch.randn(4, 5, 16) + 1
    # The spelled-out formula (fused=False) sums in another order than PyTorch's kernel:
    # float32 rounding apart, ~1e-7 relative, hence 1e-5.
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    manual = GELU(fused=False)(x)
    # the formula, evaluated independently in float64
    c = (2 / torch.pi) ** 0.5
    x64 = x.double()
    expected = 0.5 * x64 * (1 + torch.tanh(c * (x64 + 0.044715 * x64**3)))
    torch.testing.assert_close(manual.double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(GELU(fused=True)(x), manual, rtol=0, atol=1e-6)
    # ... and measurably not the exact erf GELU, which GPT-2 did not use.
    assert (manual - nn.functional.gelu(x)).abs().max() > 1e-4


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("num_tokens", [1, 7, 32])
def test_manual_and_fused_attention_agree(num_tokens, causal):
    # PyTorch's fused kernel computes the spelled-out masked softmax in another order (and
    # never forms the scores): the same in exact arithmetic, float32 rounding apart (~1e-7
    # relative per operation), hence a tolerance of 1e-5.
    torch.manual_seed(0)
    manual = MultiHeadAttention(48, 48, 0.0, 4, qkv_bias=True, fused=False, causal=causal)
    fused = MultiHeadAttention(48, 48, 0.0, 4, qkv_bias=True, fused=True, causal=causal)
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, num_tokens, 48)
    torch.testing.assert_close(manual(x), fused(x), rtol=0, atol=1e-5)


def test_the_causal_mask_hides_each_tokens_successors():
    mask = causal_mask(4)
    assert mask.tolist() == [
        [False, True, True, True],
        [False, False, True, True],
        [False, False, False, True],
        [False, False, False, False],
    ]


def test_manual_and_fused_models_give_the_same_logits():
    # Every fused kernel (LayerNorm, GELU, attention) against its formula: float32 rounding
    # in another order, over three blocks, hence a tolerance of 1e-5.
    torch.manual_seed(0)
    manual = GPTModel(dataclasses.replace(TINY, implementation="manual")).eval()
    fused = GPTModel(TINY).eval()
    fused.load_state_dict(manual.state_dict())
    ids = torch.randint(0, TINY.vocab_size, (2, 20))
    torch.testing.assert_close(manual(ids), fused(ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("implementation", ["manual", "fused"])
def test_causality_later_tokens_never_change_earlier_outputs(implementation):
    torch.manual_seed(0)
    model = GPTModel(dataclasses.replace(TINY, implementation=implementation)).eval()
    ids = torch.randint(0, TINY.vocab_size, (2, 24))
    with torch.no_grad():
        before = model(ids)
        for t in (0, 5, 22):
            changed = ids.clone()
            changed[:, t + 1 :] = torch.randint(0, TINY.vocab_size, changed[:, t + 1 :].shape)
            after = model(changed)
            torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-6)
            # and the test can fail: the outputs after t did move
            assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :])


def test_gpt2_init_ties_the_output_head_to_the_token_embedding():
    model = GPTModel(TINY, init="gpt2")
    assert model.out_head.weight is model.tok_emb.weight
    assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, TINY.vocab_size)
    # GPT-2's scheme: normal with std 0.02 (PyTorch's default for an embedding is std 1).
    assert 0.015 < model.tok_emb.weight.std().item() < 0.025
    with pytest.raises(ValueError, match="init must be one of"):
        GPTModel(TINY, init="xavier")


def test_the_books_init_gives_the_head_its_own_weights():
    model = GPTModel(TINY)
    assert model.out_head.weight is not model.tok_emb.weight
    assert 0.9 < model.tok_emb.weight.std().item() < 1.1  # nn.Embedding's default, N(0, 1)


def test_gpt2_small_has_124_439_808_parameters_tied_163_037_184_untied():
    with torch.device("meta"):  # the shapes without the memory or the initialisation time
        tied = GPTModel(get_config("gpt2-small"), init="gpt2")
        untied = GPTModel(get_config("gpt2-small"))
    assert count_parameters(tied) == 124_439_808
    # The book's model (before it discusses tying) has a 50,257 x 768 head of its own.
    assert count_parameters(untied) == 124_439_808 + 50_257 * 768 == 163_037_184


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_larger_presets_have_the_published_sizes(preset, expected):
    with torch.device("meta"):
        model = GPTModel(get_config(preset), init="gpt2")
    assert count_parameters(model) == expected


def test_presets_share_gpt2_vocabulary_and_context():
    for cfg in PRESETS.values():
        assert (cfg.vocab_size, cfg.context_length, cfg.qkv_bias) == (50257, 1024, True)
        assert cfg.emb_dim % cfg.n_heads == 0


def test_unknown_preset_and_bad_config_are_clear_errors():
    with pytest.raises(UserFacingError, match="gpt2-small, gpt2-medium"):
        get_config("gpt3")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=50, n_heads=4)
    with pytest.raises(ValueError, match="'manual' or 'fused'"):
        GPTConfig(implementation="sdpa")


def test_too_long_input_is_refused():
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match="context length of 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_count_parameters_trainable_only():
    model = GPTModel(TINY)
    for param in model.parameters():
        param.requires_grad_(False)
    model.final_norm.scale.requires_grad_(True)
    assert count_parameters(model, trainable_only=True) == TINY.emb_dim
