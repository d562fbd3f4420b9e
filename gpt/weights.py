"""OpenAI's GPT-2 weights, the book's way: ``download_and_load_gpt2`` and ``load_weights_into_gpt``.

The book downloads OpenAI's TensorFlow checkpoint and reads it with TensorFlow. The
``openai-community/gpt2*`` repositories of the Hugging Face Hub hold the same numbers as one
``model.safetensors`` file, a plain, safe format (no pickled code), with the names of
OpenAI's code (``h.0.attn.c_attn.weight`` ...). Here that file is read into the book's
``params`` and assigned to ``GPTModel`` as the book does it.

Tools around this lesson: ``gpt/hub.py`` finds weights in a folder or downloads them with
progress and clear errors; ``gpt/loading.py`` maps a file into a model without copying.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from gpt.config import HF_REPOS, get_config
from gpt.errors import UserFacingError
from gpt.model import GPTModel

WEIGHTS_FILENAME = "model.safetensors"
# The book names the released sizes by their parameter counts.
BOOK_MODEL_SIZES = {
    "124M": "gpt2-small",
    "355M": "gpt2-medium",
    "774M": "gpt2-large",
    "1558M": "gpt2-xl",
}
# Buffers in OpenAI's file that are not weights: each block's causal mask ("bias", a
# [1, 1, 1024, 1024] lower-triangular matrix) and a masking constant. GPTModel builds its own.
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


class WeightsError(UserFacingError):
    """Weights that cannot be found, downloaded, or mapped onto the model."""


def download_and_load_gpt2(
    model_size: str = "124M", models_dir: str | Path = "gpt2"
) -> tuple[dict[str, int], dict[str, Any]]:
    """The book's: GPT-2's ``settings`` (its ``hparams.json``) and ``params`` (numpy arrays
    in nested dicts), ready for ``load_weights_into_gpt``.

    The weights come from ``models_dir/model_size/model.safetensors`` if you put them there,
    else from the Hugging Face Hub (downloaded once, then cached by ``huggingface_hub``).
    """
    if model_size not in BOOK_MODEL_SIZES:
        raise WeightsError(f"model_size {model_size!r} is not one of {', '.join(BOOK_MODEL_SIZES)}")
    model_dir = Path(models_dir) / model_size
    file_path = model_dir / WEIGHTS_FILENAME
    if not file_path.is_file():
        file_path = download_from_hub(BOOK_MODEL_SIZES[model_size], file_path)

    hparams = model_dir / "hparams.json"
    if hparams.is_file():
        try:
            settings = json.loads(hparams.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as error:  # malformed, or nested too deep
            raise WeightsError(f"{hparams} is not readable JSON ({type(error).__name__})") from None
    else:  # the released size's, as OpenAI's hparams.json has them
        cfg = get_config(BOOK_MODEL_SIZES[model_size])
        settings = {
            "n_vocab": cfg.vocab_size,
            "n_ctx": cfg.context_length,
            "n_embd": cfg.emb_dim,
            "n_head": cfg.n_heads,
            "n_layer": cfg.n_layers,
        }
    params = load_gpt2_params_from_safetensors(file_path, settings)
    return settings, params


def download_from_hub(preset: str, local_path: Path) -> Path:
    """The Hugging Face Hub's ``model.safetensors`` of ``preset``, downloaded into its cache
    (``~/.cache/huggingface/hub`` unless ``HF_HOME`` says otherwise) unless already there."""
    # Imported only to download: classifying, which reads weights on disk, needs none of it.
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=HF_REPOS[preset], filename=WEIGHTS_FILENAME))
    except OSError as error:  # no connection, HF_HUB_OFFLINE, an HTTP error, a full disk
        raise WeightsError(
            f"could not download {HF_REPOS[preset]}/{WEIGHTS_FILENAME} from the Hugging Face "
            f"Hub; to use a copy you have, put it at {local_path}"
        ) from error


def load_gpt2_params_from_safetensors(path: str | Path, settings: Mapping[str, Any]) -> dict:
    """The book's ``load_gpt2_params_from_tf_ckpt``, reading OpenAI's safetensors file: every
    tensor goes into the book's nested ``params`` by its TensorFlow name (``tf_name``)."""
    params: dict[str, Any] = {"blocks": [{} for _ in range(settings["n_layer"])]}
    try:
        with safe_open(path, framework="pt") as file:
            # Files saved from a GPT2LMHeadModel prefix every name with "transformer."; the
            # published ones (from GPT2Model) do not. Their head is wte again: not read.
            names = {k.removeprefix("transformer."): k for k in file.keys()}  # noqa: SIM118
            names = {n: k for n, k in names.items() if not n.endswith(MASK_BUFFERS)}
            names.pop("lm_head.weight", None)
            num_blocks = len({name.split(".")[1] for name in names if name.startswith("h.")})
            if num_blocks != settings["n_layer"]:
                raise WeightsError(
                    f"{path} holds {num_blocks} blocks, but the settings say {settings['n_layer']}"
                )
            for name, key in names.items():
                variable_array = file.get_tensor(key).float().numpy()
                variable_name_parts = tf_name(name)
                target_dict = params
                if variable_name_parts[0].startswith("h"):
                    layer_number = int(variable_name_parts[0][1:])
                    target_dict = params["blocks"][layer_number]
                for key_part in variable_name_parts[1:-1]:
                    target_dict = target_dict.setdefault(key_part, {})
                target_dict[variable_name_parts[-1]] = variable_array
    except FileNotFoundError as error:
        raise WeightsError(f"weights file {path} does not exist") from error
    except (SafetensorError, OSError) as error:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({error}); is the download incomplete?"
        ) from error
    return params


def tf_name(name: str) -> list[str]:
    """The name a tensor of OpenAI's safetensors file has in its TensorFlow checkpoint (less
    ``model/``), as parts: ``h.0.attn.c_attn.weight`` -> ``h0/attn/c_attn/w``,
    ``h.0.ln_1.weight`` -> ``h0/ln_1/g`` (LayerNorm's weight and bias are ``g`` and ``b``),
    ``ln_f.bias`` -> ``ln_f/b``, ``wte.weight`` -> ``wte``."""
    parts = name.split(".")
    if parts[0] == "h":
        parts = [f"h{parts[1]}", *parts[2:]]
    if len(parts) < 2 or parts[0] in ("wte", "wpe"):
        return parts[:1]
    is_norm = parts[-2].startswith("ln_")
    return [*parts[:-1], {"weight": "g" if is_norm else "w", "bias": "b"}.get(parts[-1], parts[-1])]


def assign(left: torch.Tensor, right: np.ndarray) -> None:
    """The book's ``assign``, in place: copy ``right`` into the parameter ``left`` after
    checking that their shapes agree. (The book makes a new parameter; copying keeps the
    model's device and dtype, and a head tied to the token embedding tied.)"""
    if tuple(left.shape) != tuple(right.shape):
        raise WeightsError(
            f"shape mismatch: the model has {tuple(left.shape)}, the weights "
            f"{tuple(right.shape)}; is the model's config the weights' size?"
        )
    with torch.no_grad():
        left.copy_(torch.as_tensor(right))


def load_weights_into_gpt(gpt: GPTModel, params: Mapping[str, Any] | str | Path) -> None:
    """The book's: copy OpenAI's weights into ``gpt``, in place.

    ``params`` is what ``download_and_load_gpt2`` returns, or (our addition) a safetensors
    file of OpenAI's, read the same way. An output head of its own (the book's untied
    model) gets a copy of the token embedding, as in the book; a tied one stays tied.
    """
    if not isinstance(params, Mapping):  # a file: read as download_and_load_gpt2 reads it
        params = load_gpt2_params_from_safetensors(params, {"n_layer": gpt.cfg.n_layers})
    try:
        if len(params["blocks"]) != len(gpt.trf_blocks):
            raise WeightsError(
                f"params has {len(params['blocks'])} blocks, the model {len(gpt.trf_blocks)}"
            )
        assign(gpt.pos_emb.weight, params["wpe"])
        assign(gpt.tok_emb.weight, params["wte"])
        for block, b in zip(gpt.trf_blocks, params["blocks"], strict=True):
            att, ff = block.att, block.ff
            # OpenAI's layers are "Conv1D": weights stored [in, out], the transpose of
            # nn.Linear's (hence .T); and one projection, c_attn, gives query, key and value.
            q_w, k_w, v_w = np.split(b["attn"]["c_attn"]["w"], 3, axis=-1)
            assign(att.W_query.weight, q_w.T)
            assign(att.W_key.weight, k_w.T)
            assign(att.W_value.weight, v_w.T)
            if att.W_query.bias is not None:  # qkv_bias=False models have none to take
                q_b, k_b, v_b = np.split(b["attn"]["c_attn"]["b"], 3, axis=-1)
                assign(att.W_query.bias, q_b)
                assign(att.W_key.bias, k_b)
                assign(att.W_value.bias, v_b)
            assign(att.out_proj.weight, b["attn"]["c_proj"]["w"].T)
            assign(att.out_proj.bias, b["attn"]["c_proj"]["b"])
            assign(ff.layers[0].weight, b["mlp"]["c_fc"]["w"].T)
            assign(ff.layers[0].bias, b["mlp"]["c_fc"]["b"])
            assign(ff.layers[2].weight, b["mlp"]["c_proj"]["w"].T)
            assign(ff.layers[2].bias, b["mlp"]["c_proj"]["b"])
            assign(block.norm1.scale, b["ln_1"]["g"])
            assign(block.norm1.shift, b["ln_1"]["b"])
            assign(block.norm2.scale, b["ln_2"]["g"])
            assign(block.norm2.shift, b["ln_2"]["b"])
        assign(gpt.final_norm.scale, params["g"])
        assign(gpt.final_norm.shift, params["b"])
        if gpt.out_head.weight is not gpt.tok_emb.weight:  # GPT-2 reuses wte as its head
            assign(gpt.out_head.weight, params["wte"])
    except (KeyError, TypeError, ValueError) as error:  # ValueError: np.split's, uneven c_attn
        raise WeightsError(
            f"params lacks {error} or has it in another shape: expected the layout "
            "download_and_load_gpt2 returns"
        ) from error
