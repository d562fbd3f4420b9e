"""The pipeline's fast loading: a file streamed into a model (``load_weights_file``), or mapped
into memory (``map_weights_file``), gives the model the book's ``download_and_load_gpt2`` and
``load_weights_into_gpt`` give, and a wrong file is a clear error naming the tensor."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from gpt.config import GPTConfig, get_config
from gpt.loading import (
    gpt_skeleton,
    load_pretrained_gpt,
    load_weights_file,
    map_weights_file,
    openai_state_dict,
    uninitialized_gpt,
)
from gpt.model import GPTModel
from gpt.weights import WeightsError, download_and_load_gpt2, load_weights_into_gpt
from tests.checkpoints import hf_gpt2, write_openai_checkpoint
from tests.checkpoints import openai_state_dict as hf_openai_state_dict

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

SMALL = GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2)


@pytest.fixture
def book_model(tmp_path):
    """The book's way, on a tiny GPT-2 in the layout of OpenAI's released file (no prefix, no
    lm_head, the attn.bias mask buffers): the model, and the file (in models_dir/124M/)."""
    hf_model = hf_gpt2(SMALL, seed=1)
    path = write_openai_checkpoint(hf_model, tmp_path / "gpt2" / "124M" / "model.safetensors")
    hparams = '{"n_vocab": 512, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}'
    (path.parent / "hparams.json").write_text(hparams)
    _, params = download_and_load_gpt2("124M", tmp_path / "gpt2")
    model = GPTModel(SMALL, init="gpt2")  # tied, as the fast loaders' models are
    load_weights_into_gpt(model, params)
    return model, path


def test_streaming_a_file_gives_the_books_model_exactly(book_model):
    model, path = book_model
    streamed = uninitialized_gpt(SMALL)
    load_weights_file(streamed, path)
    assert streamed.out_head.weight is streamed.tok_emb.weight
    expected = model.state_dict()
    for name, tensor in streamed.state_dict().items():
        assert torch.equal(tensor, expected[name]), name  # the same numbers, copied


def test_mapping_a_file_gives_the_books_weights_exactly(book_model):
    model, path = book_model
    skeleton = gpt_skeleton(SMALL)
    mapped = map_weights_file(skeleton, path)
    expected = model.state_dict()
    assert set(mapped) == set(expected) - {"out_head.weight"}  # the head is the embedding
    for name, tensor in mapped.items():
        assert torch.equal(tensor, expected[name]), name
    skeleton.load_state_dict(mapped, strict=False, assign=True)
    skeleton.out_head.weight = skeleton.tok_emb.weight
    ids = torch.randint(0, SMALL.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # The same numbers, but a Conv1D weight is read through its transpose in place:
        # matrix products in another memory order round differently (~1e-7 relative).
        torch.testing.assert_close(skeleton.eval()(ids), model.eval()(ids), rtol=0, atol=1e-5)


def test_load_pretrained_gpt_gives_the_books_model(book_model, monkeypatch):
    model, path = book_model
    monkeypatch.delenv("GPT2_WEIGHTS_DIR", raising=False)
    shape = {"vocab_size": 512, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2}
    loaded = load_pretrained_gpt("gpt2-small", path.parent, **shape)
    assert not loaded.training
    expected = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_openai_state_dict_is_the_files_tensors(book_model):
    model, path = book_model
    from safetensors.torch import load_file

    in_file = {k: v for k, v in load_file(path).items() if not k.endswith(".attn.bias")}
    ours = openai_state_dict(model)
    assert set(ours) == set(in_file)
    for key, tensor in ours.items():
        assert torch.equal(tensor, in_file[key]), key


def max_logit_difference(cfg: GPTConfig, tmp_path, batch: int, tokens: int) -> float:
    hf_model = hf_gpt2(cfg, seed=1)
    path = write_openai_checkpoint(hf_model, tmp_path / "model.safetensors")
    ours = GPTModel(cfg).eval()
    load_weights_file(ours, path)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, cfg.vocab_size, (batch, tokens), generator=generator)
    with torch.no_grad():
        expected = hf_model(ids).logits
        got = ours(ids)
    return (got - expected).abs().max().item()


def test_small_config_matches_transformers(tmp_path):
    # transformers' GPT-2 is an independent implementation of the same float32 arithmetic.
    assert max_logit_difference(SMALL, tmp_path, batch=3, tokens=64) <= 1e-4


@pytest.mark.slow
def test_gpt2_small_shape_matches_transformers(gpt2_small_checkpoint):
    hf_model, path = gpt2_small_checkpoint
    ours = GPTModel(get_config("gpt2-small")).eval()
    load_weights_file(ours, path)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50257, (2, 128), generator=generator)
    with torch.no_grad():
        difference = (ours(ids) - hf_model(ids).logits).abs().max().item()
    assert difference <= 1e-4


def test_every_parameter_is_assigned(tmp_path):
    """Fill the model with NaN first: any parameter the loader skipped would stay NaN."""
    path = write_openai_checkpoint(hf_gpt2(SMALL), tmp_path / "model.safetensors")
    ours = GPTModel(SMALL)
    with torch.no_grad():
        for param in ours.parameters():
            param.fill_(float("nan"))
    load_weights_file(ours, path)
    assert all(not p.isnan().any() for p in ours.parameters())


@pytest.fixture
def small_tensors():
    return hf_openai_state_dict(hf_gpt2(SMALL))


def save(tensors, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


def test_missing_tensor_is_a_clear_error(small_tensors, tmp_path):
    del small_tensors["h.1.mlp.c_fc.bias"]
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"lacks tensor 'h\.1\.mlp\.c_fc\.bias'") as info:
        load_weights_file(GPTModel(SMALL), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_extra_tensor_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["h.2.ln_1.weight"] = torch.ones(SMALL.emb_dim)  # a third block
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"unexpected tensor 'h\.2\.ln_1\.weight'") as info:
        load_weights_file(GPTModel(SMALL), path)
    assert str(path) in str(info.value)


def test_wrong_shape_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["wpe.weight"] = torch.zeros(32, SMALL.emb_dim)
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"'wpe\.weight' has shape \(32, 64\).*needs \(64, 64\)"):
        load_weights_file(GPTModel(SMALL), path)


def test_fused_qkv_of_the_wrong_width_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["h.0.attn.c_attn.weight"] = torch.zeros(SMALL.emb_dim, 2 * SMALL.emb_dim)
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"'h\.0\.attn\.c_attn\.weight' has shape \(64, 128\)"):
        load_weights_file(GPTModel(SMALL), path)


def test_untied_lm_head_is_refused(small_tensors, tmp_path):
    small_tensors["lm_head.weight"] = torch.zeros_like(small_tensors["wte.weight"])
    with pytest.raises(WeightsError, match=r"lm_head\.weight' differs"):
        load_weights_file(GPTModel(SMALL), save(small_tensors, tmp_path))


def test_truncated_file_is_a_clear_error(small_tensors, tmp_path):
    path = save(small_tensors, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights_file(GPTModel(SMALL), path)


def test_load_pretrained_gpt_from_a_local_folder(tmp_path):
    """The path a user with downloaded files takes, at the full gpt2-small vocabulary."""
    cfg = GPTConfig(emb_dim=32, n_heads=2, n_layers=1, context_length=1024)
    hf_model = hf_gpt2(cfg, seed=3)
    write_openai_checkpoint(hf_model, tmp_path / "model.safetensors")
    # gpt2-small's preset with the shape overridden to the tiny checkpoint's
    model = load_pretrained_gpt("gpt2-small", tmp_path, emb_dim=32, n_heads=2, n_layers=1)
    assert not model.training
    assert model.out_head.weight is model.tok_emb.weight  # still tied after a load
    ids = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_model(ids).logits, rtol=0, atol=1e-4)


def test_loading_a_different_size_names_the_tensor(tmp_path):
    path = write_openai_checkpoint(hf_gpt2(SMALL), tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"lacks tensor 'h\.\d+\..*this size\?") as info:
        load_pretrained_gpt("gpt2-small", path)  # 12 blocks expected, the file has 2
    assert str(path) in str(info.value)
