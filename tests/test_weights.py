"""Loading OpenAI-layout checkpoints: numerical identity with an independent GPT-2, and
clear errors for every way a file can be wrong. No test touches the network."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from safetensors.torch import save_file

from gpt.config import GPTConfig, get_config
from gpt.model import GPTModel
from gpt.weights import (
    WeightsError,
    download_weights,
    find_local_weights,
    find_weights,
    load_pretrained_gpt,
    load_weights_into_gpt,
    verify_cached_download,
)
from tests.checkpoints import hf_gpt2, openai_state_dict, write_openai_checkpoint

SMALL = GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2)


def max_logit_difference(cfg: GPTConfig, tmp_path, batch: int, tokens: int) -> float:
    hf_model = hf_gpt2(cfg, seed=1)
    path = write_openai_checkpoint(hf_model, tmp_path / "model.safetensors")
    ours = GPTModel(cfg).eval()
    load_weights_into_gpt(ours, path)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, cfg.vocab_size, (batch, tokens), generator=generator)
    with torch.no_grad():
        expected = hf_model(ids).logits
        got = ours(ids)
    return (got - expected).abs().max().item()


def test_small_config_matches_transformers(tmp_path):
    difference = max_logit_difference(SMALL, tmp_path, batch=3, tokens=64)
    print(f"small config: max |logit difference| vs transformers = {difference:.3g}")
    assert difference <= 1e-4


@pytest.mark.slow
def test_gpt2_small_shape_matches_transformers(gpt2_small_checkpoint):
    hf_model, path = gpt2_small_checkpoint
    ours = GPTModel(get_config("gpt2-small")).eval()
    load_weights_into_gpt(ours, path)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50257, (2, 128), generator=generator)
    with torch.no_grad():
        difference = (ours(ids) - hf_model(ids).logits).abs().max().item()
    print(f"gpt2-small shape: max |logit difference| vs transformers = {difference:.3g}")
    assert difference <= 1e-4


def test_manual_implementation_also_matches_transformers(tmp_path):
    cfg = GPTConfig(**{**SMALL.to_dict(), "implementation": "manual"})
    assert max_logit_difference(cfg, tmp_path, batch=2, tokens=40) <= 1e-4


def test_prefixed_names_and_a_tied_lm_head_are_accepted(tmp_path):
    hf_model = hf_gpt2(SMALL)
    tensors = openai_state_dict(hf_model, with_prefix=True, with_mask_buffers=False)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    tensors["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    ours = GPTModel(SMALL).eval()
    load_weights_into_gpt(ours, tmp_path / "model.safetensors")
    ids = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_model(ids).logits, rtol=0, atol=1e-4)


def test_every_parameter_is_assigned(tmp_path):
    """Fill the model with NaN first: any parameter the loader skipped would stay NaN."""
    path = write_openai_checkpoint(hf_gpt2(SMALL), tmp_path / "model.safetensors")
    ours = GPTModel(SMALL)
    with torch.no_grad():
        for param in ours.parameters():
            param.fill_(float("nan"))
    load_weights_into_gpt(ours, path)
    assert all(not p.isnan().any() for p in ours.parameters())


@pytest.fixture
def small_tensors():
    return openai_state_dict(hf_gpt2(SMALL))


def save(tensors, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


def test_missing_tensor_is_a_clear_error(small_tensors, tmp_path):
    del small_tensors["h.1.mlp.c_fc.bias"]
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"lacks tensor 'h\.1\.mlp\.c_fc\.bias'") as info:
        load_weights_into_gpt(GPTModel(SMALL), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_extra_tensor_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["h.2.ln_1.weight"] = torch.ones(SMALL.emb_dim)  # a third block
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"unexpected tensor 'h\.2\.ln_1\.weight'") as info:
        load_weights_into_gpt(GPTModel(SMALL), path)
    assert str(path) in str(info.value)


def test_wrong_shape_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["wpe.weight"] = torch.zeros(32, SMALL.emb_dim)
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"'wpe\.weight' has shape \(32, 64\).*needs \(64, 64\)"):
        load_weights_into_gpt(GPTModel(SMALL), path)


def test_fused_qkv_of_the_wrong_width_is_a_clear_error(small_tensors, tmp_path):
    small_tensors["h.0.attn.c_attn.weight"] = torch.zeros(SMALL.emb_dim, 2 * SMALL.emb_dim)
    path = save(small_tensors, tmp_path)
    with pytest.raises(WeightsError, match=r"'h\.0\.attn\.c_attn\.weight' has shape \(64, 128\)"):
        load_weights_into_gpt(GPTModel(SMALL), path)


def test_untied_lm_head_is_refused(small_tensors, tmp_path):
    small_tensors["lm_head.weight"] = torch.zeros_like(small_tensors["wte.weight"])
    with pytest.raises(WeightsError, match=r"lm_head\.weight' differs"):
        load_weights_into_gpt(GPTModel(SMALL), save(small_tensors, tmp_path))


def test_truncated_file_is_a_clear_error(small_tensors, tmp_path):
    path = save(small_tensors, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights_into_gpt(GPTModel(SMALL), path)


def test_local_folder_layouts_and_environment_variable(small_tensors, tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="no weights for gpt2-small"):
        find_local_weights("gpt2-small", tmp_path)
    nested = tmp_path / "gpt2-medium" / "model.safetensors"
    nested.parent.mkdir()
    save_file(small_tensors, str(nested))
    assert find_local_weights("gpt2-medium", tmp_path) == nested
    flat = save(small_tensors, tmp_path)
    assert find_local_weights("gpt2-small", tmp_path) == flat
    named = tmp_path / "gpt2-small.safetensors"
    shutil.copy(flat, named)
    assert find_local_weights("gpt2-small", tmp_path) == named  # the preset's own file first
    assert find_local_weights("gpt2-small", flat) == flat  # a file is taken as it is
    monkeypatch.setenv("GPT2_WEIGHTS_DIR", str(tmp_path))
    assert find_weights("gpt2-medium") == nested
    with pytest.raises(WeightsError, match="does not exist"):
        find_local_weights("gpt2-small", tmp_path / "nowhere")


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


def test_unreachable_hub_is_a_one_line_error(tmp_path, monkeypatch):
    # A closed port on this machine: refused at once, and nothing leaves the machine.
    # huggingface_hub retries a refused connection five times with back-off; skip the waits.
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)
    with pytest.raises(WeightsError) as info:
        download_weights("gpt2-small", cache_dir=tmp_path, endpoint="http://127.0.0.1:9")
    message = str(info.value)
    assert "\n" not in message
    assert "openai-community/gpt2/model.safetensors" in message
    # What to do instead, in the words of the Python API: gpt/ knows of no command line.
    assert "give that folder as weights_dir (or set GPT2_WEIGHTS_DIR=FOLDER)" in message
    assert message.endswith("or start from random weights")
    assert info.value.failure in message
    assert "Error" not in message  # no library exception names: they mean nothing to a user
    assert not any(p.is_file() and p.stat().st_size for p in tmp_path.rglob("*model*"))


def test_verify_cached_download(tmp_path):
    data = b"some weights"
    good = tmp_path / hashlib.sha256(data).hexdigest()
    good.write_bytes(data)
    link = tmp_path / "model.safetensors"
    link.symlink_to(good)
    assert verify_cached_download(link) is True
    bad = tmp_path / ("0" * 64)
    bad.write_bytes(data)
    with pytest.raises(WeightsError, match="corrupt"):
        verify_cached_download(bad)
    assert verify_cached_download(tmp_path / "model.safetensors.not-a-blob-name") is None


def test_download_through_a_local_hub_then_load(tmp_path, monkeypatch):
    """The real download path (huggingface_hub) against a stand-in Hub on 127.0.0.1."""
    from huggingface_hub import constants

    from tests.fake_hub import serve_hub_file

    # The stand-in Hub is local: reach it even where HF_HUB_OFFLINE=1 is set for the shell
    # (huggingface_hub reads the variable once, at import).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    cfg = GPTConfig(emb_dim=32, n_heads=2, n_layers=1)
    hf_model = hf_gpt2(cfg, seed=4)
    checkpoint = write_openai_checkpoint(hf_model, tmp_path / "upload" / "model.safetensors")
    cache = tmp_path / "cache"
    with serve_hub_file(
        "openai-community/gpt2", "model.safetensors", checkpoint.read_bytes()
    ) as hub:
        path = download_weights("gpt2-small", cache_dir=cache, endpoint=hub["endpoint"])
        again = download_weights("gpt2-small", cache_dir=cache, endpoint=hub["endpoint"])
    assert hub["gets"] == 1  # the second call came from the cache
    assert path == again and path.read_bytes() == checkpoint.read_bytes()
    assert verify_cached_download(path) is True
    assert not list(cache.rglob("*.incomplete"))

    model = GPTModel(cfg).eval()
    load_weights_into_gpt(model, path)
    ids = torch.tensor([[6109, 3626, 6100, 345]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_model(ids).logits, rtol=0, atol=1e-4)
