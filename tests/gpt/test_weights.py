"""The book's loading API: ``download_and_load_gpt2`` reads OpenAI's safetensors file into the
book's ``params``, ``load_weights_into_gpt`` makes a GPTModel compute what an independent
GPT-2 (transformers) computes with the same weights. No test touches the network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpt.config import GPTConfig
from gpt.model import GPTModel
from gpt.weights import (
    WeightsError,
    download_and_load_gpt2,
    load_gpt2_params_from_safetensors,
    load_weights_into_gpt,
    tf_name,
)
from tests.checkpoints import hf_gpt2, openai_state_dict, write_openai_checkpoint

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

SMALL = GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2)
SETTINGS = {"n_vocab": 512, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}


def book_folder(tmp_path: Path, hf_model, settings: dict = SETTINGS) -> Path:
    """``models_dir`` as the book leaves it: ``124M/`` with the weights and hparams.json."""
    write_openai_checkpoint(hf_model, tmp_path / "gpt2" / "124M" / "model.safetensors")
    (tmp_path / "gpt2" / "124M" / "hparams.json").write_text(json.dumps(settings))
    return tmp_path / "gpt2"


def logits_difference(model: GPTModel, hf_model) -> float:
    ids = torch.randint(
        0, model.cfg.vocab_size, (3, 40), generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        return (model.eval()(ids) - hf_model(ids).logits).abs().max().item()


@pytest.mark.parametrize("implementation", ["fused", "manual"])
def test_the_books_two_calls_give_transformers_gpt2(tmp_path, implementation):
    hf_model = hf_gpt2(SMALL, seed=1)
    settings, params = download_and_load_gpt2("124M", book_folder(tmp_path, hf_model))
    assert settings == SETTINGS
    model = GPTModel(GPTConfig(**{**SMALL.to_dict(), "implementation": implementation}))
    load_weights_into_gpt(model, params)
    # Two implementations of the same float32 arithmetic in different orders: ~1e-6 apart.
    assert logits_difference(model, hf_model) <= 1e-4


def test_params_have_the_books_layout(tmp_path):
    hf_model = hf_gpt2(SMALL)
    _, params = download_and_load_gpt2("124M", book_folder(tmp_path, hf_model))
    assert set(params) == {"wte", "wpe", "g", "b", "blocks"}  # the final norm's g, b on top
    block = params["blocks"][1]
    assert set(block) == {"attn", "mlp", "ln_1", "ln_2"}
    assert block["attn"]["c_attn"]["w"].shape == (64, 192)  # Conv1D: [in, 3 x out]
    assert isinstance(block["ln_2"]["g"], np.ndarray)
    expected = hf_model.transformer.h[1].mlp.c_fc.bias.detach().numpy()
    np.testing.assert_array_equal(block["mlp"]["c_fc"]["b"], expected)


def test_tensor_names_become_the_tensorflow_checkpoints():
    assert tf_name("h.11.attn.c_attn.weight") == ["h11", "attn", "c_attn", "w"]
    assert tf_name("h.0.ln_1.weight") == ["h0", "ln_1", "g"]
    assert tf_name("h.0.mlp.c_proj.bias") == ["h0", "mlp", "c_proj", "b"]
    assert tf_name("ln_f.weight") == ["ln_f", "g"]
    assert tf_name("wte.weight") == ["wte"]


def test_a_file_is_read_as_download_and_load_gpt2_reads_it(tmp_path):
    """``load_weights_into_gpt(model, path)``: the same model as through ``params``."""
    hf_model = hf_gpt2(SMALL, seed=2)
    models_dir = book_folder(tmp_path, hf_model)
    from_params, from_file = GPTModel(SMALL), GPTModel(SMALL, init="gpt2")
    load_weights_into_gpt(from_params, download_and_load_gpt2("124M", models_dir)[1])
    load_weights_into_gpt(from_file, models_dir / "124M" / "model.safetensors")
    assert from_file.out_head.weight is from_file.tok_emb.weight  # a tied head stays tied
    assert from_params.out_head.weight is not from_params.tok_emb.weight  # the book's own
    expected = from_params.state_dict()
    for name, tensor in from_file.state_dict().items():
        assert torch.equal(tensor, expected[name]), name  # the same numbers, copied alike


def test_prefixed_names_and_a_tied_lm_head_are_read(tmp_path):
    hf_model = hf_gpt2(SMALL)
    tensors = openai_state_dict(hf_model, with_prefix=True, with_mask_buffers=False)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = GPTModel(SMALL)
    load_weights_into_gpt(model, tmp_path / "model.safetensors")
    assert logits_difference(model, hf_model) <= 1e-4


def test_every_parameter_is_assigned(tmp_path):
    """Fill the model with NaN first: any parameter the loader skipped would stay NaN."""
    path = write_openai_checkpoint(hf_gpt2(SMALL), tmp_path / "model.safetensors")
    model = GPTModel(SMALL)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    load_weights_into_gpt(model, path)
    assert all(not p.isnan().any() for p in model.parameters())


def test_a_model_without_query_key_value_biases_takes_the_rest(tmp_path):
    # The book's GPT_CONFIG_124M has qkv_bias=False; the file's biases are then not used.
    hf_model = hf_gpt2(SMALL)
    with torch.no_grad():
        for block in hf_model.transformer.h:
            block.attn.c_attn.bias.zero_()
    model = GPTModel(GPTConfig(**{**SMALL.to_dict(), "qkv_bias": False}))
    load_weights_into_gpt(model, write_openai_checkpoint(hf_model, tmp_path / "m.safetensors"))
    assert logits_difference(model, hf_model) <= 1e-4


def test_a_shape_that_differs_is_a_one_line_error(tmp_path):
    _, params = download_and_load_gpt2("124M", book_folder(tmp_path, hf_gpt2(SMALL)))
    params["blocks"][1]["mlp"]["c_fc"]["w"] = np.zeros((64, 128), dtype=np.float32)
    mismatch = r"shape mismatch: the model has \(256, 64\), the weights \(128, 64\)"
    with pytest.raises(WeightsError, match=mismatch) as info:
        load_weights_into_gpt(GPTModel(SMALL), params)
    assert "\n" not in str(info.value)


def test_missing_or_misshapen_params_are_named(tmp_path):
    _, params = download_and_load_gpt2("124M", book_folder(tmp_path, hf_gpt2(SMALL)))
    del params["blocks"][0]["ln_2"]
    with pytest.raises(WeightsError, match="params lacks 'ln_2'"):
        load_weights_into_gpt(GPTModel(SMALL), params)
    _, params = download_and_load_gpt2("124M", tmp_path / "gpt2")
    params["blocks"][0]["attn"]["c_attn"]["w"] = np.zeros((64, 128), dtype=np.float32)
    with pytest.raises(WeightsError, match="another shape"):  # not three equal thirds
        load_weights_into_gpt(GPTModel(SMALL), params)
    with pytest.raises(WeightsError, match="params has 2 blocks, the model 3"):
        load_weights_into_gpt(GPTModel(GPTConfig(**{**SMALL.to_dict(), "n_layers": 3})), params)


def test_a_file_of_another_size_or_a_truncated_one_is_a_clear_error(tmp_path):
    path = write_openai_checkpoint(hf_gpt2(SMALL), tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match=r"holds 2 blocks, but the settings say 3"):
        load_gpt2_params_from_safetensors(path, {"n_layer": 3})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights_into_gpt(GPTModel(SMALL), path)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights_into_gpt(GPTModel(SMALL), tmp_path / "nowhere.safetensors")


def test_without_a_copy_in_models_dir_the_file_comes_from_the_hub(tmp_path, monkeypatch):
    """The Hub download (``huggingface_hub.hf_hub_download``) against a stand-in Hub on
    127.0.0.1, through huggingface_hub's real code; hub.py's download gets the same file."""
    import huggingface_hub
    from huggingface_hub import constants

    from gpt.hub import download_weights
    from tests.fake_hub import serve_hub_file

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the stand-in Hub is local
    cfg = GPTConfig(emb_dim=32, n_heads=2, n_layers=1)  # gpt2-small's vocabulary and context
    hf_model = hf_gpt2(cfg, seed=4)
    upload = write_openai_checkpoint(hf_model, tmp_path / "upload" / "model.safetensors")
    cache = tmp_path / "cache"
    real_download = huggingface_hub.hf_hub_download
    with serve_hub_file("openai-community/gpt2", "model.safetensors", upload.read_bytes()) as hub:

        def local_hub(**kwargs):
            return real_download(**kwargs, endpoint=hub["endpoint"], cache_dir=cache)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", local_hub)
        folder = tmp_path / "gpt2" / "124M"  # the book's folder, with its settings only
        folder.mkdir(parents=True)
        hparams = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 32, "n_head": 2, "n_layer": 1}
        (folder / "hparams.json").write_text(json.dumps(hparams))
        settings, params = download_and_load_gpt2("124M", tmp_path / "gpt2")
        hardened = download_weights("gpt2-small", cache_dir=cache, endpoint=hub["endpoint"])
    assert hub["gets"] == 1  # hub.py found the book's download in the cache
    assert hardened.read_bytes() == upload.read_bytes()
    assert settings == hparams
    model = GPTModel(cfg)
    load_weights_into_gpt(model, params)
    assert logits_difference(model, hf_model) <= 1e-4


def test_a_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    def offline(**kwargs):
        raise OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(WeightsError) as info:
        download_and_load_gpt2("355M", tmp_path / "gpt2")
    message = str(info.value)
    assert message.startswith("could not download openai-community/gpt2-medium/model.safetensors")
    assert message.endswith(f"put it at {tmp_path / 'gpt2' / '355M' / 'model.safetensors'}")
    assert "Error" not in message and "\n" not in message


def test_an_unknown_model_size_is_refused():
    with pytest.raises(WeightsError, match="model_size '125M' is not one of 124M, 355M"):
        download_and_load_gpt2("125M")
