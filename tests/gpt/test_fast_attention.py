"""The fast attention for bfloat16 on a CPU computes the lesson's attention."""

from __future__ import annotations

import copy

import pytest
import torch

from gpt.config import GPTConfig
from gpt.fast_attention import (
    QUERY_BLOCK,
    FastMultiHeadAttention,
    computes_in_bfloat16_on_cpu,
    use_fast_attention,
)
from gpt.model import GPTModel, MultiHeadAttention

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

LENGTHS = [7, QUERY_BLOCK, QUERY_BLOCK + 1, 300]  # one block, exactly one, two, three


def plain_and_fast(causal: bool = True) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    """The lesson's spelled-out attention, and the fast variant with the same weights."""
    torch.manual_seed(0)
    plain = MultiHeadAttention(32, 32, 0.0, num_heads=4, qkv_bias=True, fused=False, causal=causal)
    fast = FastMultiHeadAttention(32, 32, 0.0, num_heads=4, qkv_bias=True, causal=causal)
    fast.load_state_dict(plain.state_dict())
    return plain.eval(), fast.eval()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("num_tokens", LENGTHS)
def test_blocked_bfloat16_attention_is_the_lessons(num_tokens: int, causal: bool) -> None:
    plain, fast = plain_and_fast(causal)
    x = torch.randn(2, num_tokens, 32)
    with torch.inference_mode():
        reference = plain(x)  # float32
        plain16 = plain.to(torch.bfloat16)(x.bfloat16())
        fast16 = fast.to(torch.bfloat16)(x.bfloat16())
    # The same steps in the same precision, a block of queries at a time: matrix products
    # of other shapes may round a bfloat16 result differently (one unit in the last place,
    # ~0.4 %), nothing more.
    torch.testing.assert_close(fast16.float(), plain16.float(), rtol=0.01, atol=0.01)
    # ... and float32's attention to bfloat16's precision (8 bits of mantissa).
    torch.testing.assert_close(fast16.float(), reference, rtol=0.05, atol=0.03)


@pytest.mark.parametrize("num_tokens", [7, 300])
def test_training_under_bfloat16_autocast_gives_float32s_outputs_and_gradients(
    num_tokens: int,
) -> None:
    # Training in bfloat16 autocasts: the projections run in bfloat16, so the fast path
    # is taken, forward and backward. Compared with float32 to bfloat16's precision.
    plain, fast = plain_and_fast()
    x = torch.randn(2, num_tokens, 32)
    outputs, grads = [], []
    for att, autocast in ((plain, False), (fast, True)):
        leaf = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            assert computes_in_bfloat16_on_cpu(leaf) == autocast
            out = att(leaf)
        out.float().sum().backward()
        outputs.append(out.float())
        grads.append(leaf.grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0.05, atol=0.02)
    torch.testing.assert_close(grads[1], grads[0], rtol=0.05, atol=0.05)


def test_a_later_token_never_changes_an_earlier_output_across_blocks() -> None:
    _, fast = plain_and_fast()
    fast = fast.to(torch.bfloat16)
    x = torch.randn(2, 300, 32).bfloat16()
    changed = x.clone()
    changed[:, -1] += 1.0
    with torch.inference_mode():
        before, after = fast(x), fast(changed)
    # Masked scores are -inf whatever the key: the earlier rows are computed identically.
    torch.testing.assert_close(after[:, :-1], before[:, :-1], rtol=0, atol=0)
    assert not torch.equal(after[:, -1], before[:, -1])


def test_outside_bfloat16_on_a_cpu_it_is_the_plain_module() -> None:
    torch.manual_seed(0)
    plain = MultiHeadAttention(32, 32, 0.0, num_heads=4, qkv_bias=True).eval()  # fused
    fast = FastMultiHeadAttention(32, 32, 0.0, num_heads=4, qkv_bias=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 200, 32)
    assert not computes_in_bfloat16_on_cpu(x)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)  # the same computation


def test_use_fast_attention_switches_every_attention_and_keeps_the_weights() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, context_length=200, emb_dim=32, n_heads=4, n_layers=2)
    model = GPTModel(cfg).eval()
    ids = torch.randint(0, 97, (2, 150))
    with torch.inference_mode():
        expected = model(ids)
        expected16 = copy.deepcopy(model).to(torch.bfloat16)(ids)
    parameters = list(model.parameters())
    state = model.state_dict()

    assert use_fast_attention(model) is model
    assert all(type(block.att) is FastMultiHeadAttention for block in model.trf_blocks)
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert list(model.state_dict()) == list(state)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), expected, rtol=0, atol=0)  # float32: unchanged
        fast16 = model.to(torch.bfloat16)(ids)
    # bfloat16: the fused kernel before, the blocked steps now; bfloat16 rounding over two
    # blocks and the 97-way head.
    torch.testing.assert_close(fast16.float(), expected16.float(), rtol=0.05, atol=0.05)
