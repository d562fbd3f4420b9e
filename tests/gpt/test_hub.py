"""Finding OpenAI's weights for the pipeline: local folder layouts, the environment variable,
the Hugging Face Hub download (through a stand-in Hub on 127.0.0.1), one-line errors, and
the SHA-256 check of a cached download. No test touches the network."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from safetensors.torch import save_file

from gpt.config import GPTConfig
from gpt.hub import download_weights, find_local_weights, find_weights, verify_cached_download
from gpt.model import GPTModel
from gpt.weights import WeightsError, load_weights_into_gpt
from tests.checkpoints import hf_gpt2, openai_state_dict, write_openai_checkpoint

SMALL = GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2)


def test_local_folder_layouts_and_environment_variable(tmp_path, monkeypatch):
    tensors = openai_state_dict(hf_gpt2(SMALL))
    with pytest.raises(WeightsError, match="no weights for gpt2-small"):
        find_local_weights("gpt2-small", tmp_path)
    nested = tmp_path / "gpt2-medium" / "model.safetensors"
    nested.parent.mkdir()
    save_file(tensors, str(nested))
    assert find_local_weights("gpt2-medium", tmp_path) == nested
    flat = tmp_path / "model.safetensors"
    save_file(tensors, str(flat))
    assert find_local_weights("gpt2-small", tmp_path) == flat
    named = tmp_path / "gpt2-small.safetensors"
    shutil.copy(flat, named)
    assert find_local_weights("gpt2-small", tmp_path) == named  # the preset's own file first
    assert find_local_weights("gpt2-small", flat) == flat  # a file is taken as it is
    monkeypatch.setenv("GPT2_WEIGHTS_DIR", str(tmp_path))
    assert find_weights("gpt2-medium") == nested
    with pytest.raises(WeightsError, match="does not exist"):
        find_local_weights("gpt2-small", tmp_path / "nowhere")


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
