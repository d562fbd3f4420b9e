"""The tokenizer and the text-generation helpers of the chapter's sanity check."""

from __future__ import annotations

import pytest
import torch

from gpt.config import GPTConfig
from gpt.generate import generate, generate_text, text_to_token_ids, token_ids_to_text
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID
from gpt.weights import load_weights_into_gpt
from tests.checkpoints import hf_gpt2, write_openai_checkpoint

TINY = GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=2)  # GPT-2's vocabulary


@pytest.mark.parametrize(
    "text",
    [
        "Every effort moves you",
        "WINNER!! As a valued network customer you have been selected to receive a £900 prize",
        'He said "ok"\tthen\nleft… 😀 ',
        "",
    ],
)
def test_tokenizer_round_trip(tokenizer, text):
    ids = text_to_token_ids(text, tokenizer)
    assert ids.shape == (1, len(tokenizer.encode(text)))
    assert token_ids_to_text(ids, tokenizer) == text


def test_tokenizer_is_gpt2s(tokenizer):
    assert tokenizer.n_vocab == 50257
    assert text_to_token_ids("Every effort moves you", tokenizer).tolist() == [
        [6109, 3626, 6100, 345]
    ]
    assert text_to_token_ids("<|endoftext|>", tokenizer).tolist() == [[END_OF_TEXT_ID]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Our GPT-2 and transformers' GPT-2 holding the same weights."""
    hf_model = hf_gpt2(TINY, seed=5)
    path = write_openai_checkpoint(hf_model, tmp_path_factory.mktemp("w") / "model.safetensors")
    ours = GPTModel(TINY).eval()
    load_weights_into_gpt(ours, path)
    return ours, hf_model


def test_greedy_generation_matches_transformers(models, tokenizer):
    ours, hf_model = models
    prompt = text_to_token_ids("Every effort moves you", tokenizer)
    got = generate(ours, prompt, max_new_tokens=12)
    expected = hf_model.generate(
        prompt, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt)
    )
    assert got.tolist() == expected.tolist()


def test_greedy_generation_is_deterministic(models, tokenizer):
    ours, _ = models
    first = generate_text(ours, "Every effort moves you", tokenizer, max_new_tokens=10)
    second = generate_text(ours, "Every effort moves you", tokenizer, max_new_tokens=10)
    assert first == second and first.startswith("Every effort moves you")
    assert len(tokenizer.encode(first)) >= 4 + 1


def test_sampling_is_seeded_and_respects_top_k(models):
    ours, _ = models
    prompt = torch.tensor([[6109, 3626]])
    runs = [
        generate(
            ours, prompt, 8, temperature=1.5, top_k=3, generator=torch.Generator().manual_seed(7)
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    # every sampled token was among the 3 most likely at its step
    with torch.no_grad():
        for step in range(prompt.shape[1], runs[0].shape[1]):
            logits = ours(runs[0][:, :step])[:, -1, :]
            assert runs[0][0, step] in torch.topk(logits, 3).indices[0]


def test_generation_stops_at_end_of_text_and_crops_context(models):
    ours, _ = models
    prompt = torch.tensor([[1, 2, 3]])
    first = generate(ours, prompt, 1)[0, -1].item()
    stopped = generate(ours, prompt, 10, eos_id=first)
    assert stopped.shape[1] == 4  # stopped right after producing eos_id
    long_prompt = torch.randint(0, 50257, (1, TINY.context_length + 5))
    out = generate(ours, long_prompt, 2)  # longer than the context: the oldest tokens drop off
    assert out.shape[1] == TINY.context_length + 7
