"""OpenAI's released GPT-2 weights: find or download them, and map them onto ``GPTModel``.

OpenAI published GPT-2 as TensorFlow checkpoints; the ``openai-community/gpt2*`` repositories
of the Hugging Face Hub hold the same numbers as ``model.safetensors`` files, which are a
plain, safe format (no pickled code) that can be read tensor by tensor. The names inside
follow OpenAI's code (``h.0.attn.c_attn.weight`` ...), so loading is a renaming exercise
with three twists, each explained where it happens below.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from gpt.config import HF_REPOS, GPTConfig, get_config
from gpt.errors import UserFacingError
from gpt.model import GPTModel, uninitialized_gpt

WEIGHTS_DIR_ENV = "GPT2_WEIGHTS_DIR"
WEIGHTS_FILENAME = "model.safetensors"

# Buffers some checkpoints carry that are not weights: the causal mask ("bias", a
# [1, 1, 1024, 1024] lower-triangular matrix) and a masking constant. GPTModel builds its
# own mask, so these are skipped.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# What a checkpoint with the wrong tensors most likely is.
_WRONG_SIZE = "is it a GPT-2 checkpoint of this size?"


class WeightsError(UserFacingError):
    """Weights that cannot be found, downloaded, or mapped onto the model."""


class WeightsDownloadError(WeightsError):
    """The Hub did not give the weights. ``failure`` says what failed and why; the message
    adds the two ways round it: weights already on disk, or random ones."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        super().__init__(
            f"{failure}; to use weights you already have, put {WEIGHTS_FILENAME} in a folder "
            f"and give that folder as weights_dir (or set {WEIGHTS_DIR_ENV}=FOLDER), or start "
            "from random weights"
        )


# --- Finding and downloading ---------------------------------------------------------------


def find_local_weights(preset: str, weights_dir: str | Path) -> Path:
    """The weights file for ``preset`` in a local folder (or ``weights_dir`` itself if a file).

    A folder may hold ``model.safetensors`` (the Hub's name), ``<preset>.safetensors``, or
    ``<preset>/model.safetensors``, so one folder can keep several sizes side by side.
    """
    path = Path(weights_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"weights folder {path} does not exist")
    candidates = [
        path / f"{preset}.safetensors",
        path / preset / WEIGHTS_FILENAME,
        path / WEIGHTS_FILENAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"no weights for {preset} in {path}: expected one of "
        + ", ".join(str(c.relative_to(path)) for c in candidates)
    )


def download_weights(
    preset: str = "gpt2-small",
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download (or reuse from the cache) the ``model.safetensors`` of a released GPT-2.

    ``huggingface_hub`` does the work: a progress bar, a cache shared with every other
    program that uses it (``~/.cache/huggingface/hub`` unless ``HF_HOME`` says otherwise),
    resuming an interrupted download, and a size check before an ``.incomplete`` file is
    renamed into place, so a half-downloaded file is never taken for a complete one.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    get_config(preset)  # a clear error for an unknown preset
    repo_id = HF_REPOS[preset]
    # OpenAI's weights never change: a cached copy is used without asking the Hub again
    # (which, offline, would retry for half a minute before falling back to the cache).
    cached = cached_weights(preset, cache_dir)
    if cached is not None:
        return cached
    where = endpoint or "huggingface.co"
    print(f"Downloading {repo_id}/{WEIGHTS_FILENAME} from {where} (once; cached afterwards)")
    try:
        with _quiet_retry_warnings():
            path = hf_hub_download(
                repo_id=repo_id, filename=WEIGHTS_FILENAME, cache_dir=cache_dir, endpoint=endpoint
            )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise WeightsDownloadError(
            f"could not download {repo_id}/{WEIGHTS_FILENAME} from {where} ({_why(error)})"
        ) from error
    return Path(path)


def _why(error: Exception) -> str:
    """A few words on a failed download, without the library's exception names."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled) or isinstance(error.__cause__, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hub is not contacted"
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    if isinstance(error, PermissionError | IsADirectoryError | NotADirectoryError):
        return f"cannot write the cache: {error.strerror}"
    return "no connection to the server"


def cached_weights(preset: str, cache_dir: str | Path | None = None) -> Path | None:
    """The weights file of ``preset`` if the Hugging Face cache holds it, else None."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(HF_REPOS[preset], WEIGHTS_FILENAME, cache_dir=cache_dir)
    return Path(cached) if isinstance(cached, str) else None


@contextmanager
def _quiet_retry_warnings() -> Iterator[None]:
    """huggingface_hub logs each retry of a failed request; the error we raise says it all."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def find_weights(
    preset: str = "gpt2-small",
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """The weights file to load: a local folder if one is given (argument, then the
    ``GPT2_WEIGHTS_DIR`` environment variable), else the Hugging Face Hub download."""
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is not None:
        return find_local_weights(preset, weights_dir)
    return download_weights(preset, cache_dir=cache_dir, endpoint=endpoint)


def verify_cached_download(path: str | Path) -> bool | None:
    """Check a file from the Hub cache against its SHA-256, which names its cache blob.

    The Hub stores large (LFS) files under their SHA-256, so the cache names each blob by
    it: hashing the file and comparing costs no network. Returns True when it matches,
    None when the blob is not named by a SHA-256 (nothing to compare), and raises
    ``WeightsError`` on a mismatch.
    """
    blob = Path(path).resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return None
    digest = hashlib.sha256()
    with blob.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        raise WeightsError(
            f"{path} is corrupt (its SHA-256 does not match the published one); "
            f"delete {blob} and download again"
        )
    return True


# --- Mapping OpenAI's tensors onto GPTModel -------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one GPTModel parameter comes from in OpenAI's checkpoint."""

    key: str
    transpose: bool = False  # a Conv1D weight, stored [in, out]
    chunk: int | None = None  # which third of the fused query/key/value projection


def openai_parameter_sources(cfg: GPTConfig) -> dict[str, Source]:
    """For every parameter of ``GPTModel(cfg)``, the checkpoint tensor that fills it.

    The three twists: OpenAI's code used "Conv1D" layers that store weights as [in, out],
    the transpose of ``nn.Linear``; it computes query, key and value with one fused
    ``c_attn`` projection that we split in three; and there is no output head in the file,
    because GPT-2 ties it to the token embedding (``wte``).
    """
    sources = {
        "tok_emb.weight": Source("wte.weight"),
        "pos_emb.weight": Source("wpe.weight"),
        "final_norm.scale": Source("ln_f.weight"),
        "final_norm.shift": Source("ln_f.bias"),
    }
    for i in range(cfg.n_layers):
        ours, theirs = f"trf_blocks.{i}", f"h.{i}"
        for chunk, name in enumerate(("W_query", "W_key", "W_value")):
            fused = f"{theirs}.attn.c_attn"
            sources[f"{ours}.att.{name}.weight"] = Source(f"{fused}.weight", True, chunk)
            if cfg.qkv_bias:
                sources[f"{ours}.att.{name}.bias"] = Source(f"{fused}.bias", False, chunk)
        linear_layers = {
            "att.out_proj": "attn.c_proj",
            "ff.layers.0": "mlp.c_fc",
            "ff.layers.2": "mlp.c_proj",
        }
        for our_layer, their_layer in linear_layers.items():
            sources[f"{ours}.{our_layer}.weight"] = Source(f"{theirs}.{their_layer}.weight", True)
            sources[f"{ours}.{our_layer}.bias"] = Source(f"{theirs}.{their_layer}.bias")
        for our_norm, their_norm in (("norm1", "ln_1"), ("norm2", "ln_2")):
            sources[f"{ours}.{our_norm}.scale"] = Source(f"{theirs}.{their_norm}.weight")
            sources[f"{ours}.{our_norm}.shift"] = Source(f"{theirs}.{their_norm}.bias")
    return sources


def openai_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """``model``'s transformer weights named and laid out as in OpenAI's released file: the
    inverse of ``load_weights_into_gpt`` (no head: the file's is tied to ``wte``)."""
    pieces: dict[str, list[torch.Tensor | None]] = {}
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, source in openai_parameter_sources(model.cfg).items():
        tensor = params[name].detach().cpu()
        tensor = tensor.T if source.transpose else tensor
        pieces.setdefault(source.key, [None, None, None])[source.chunk or 0] = tensor
    if not model.cfg.qkv_bias:  # the file always has a query/key/value bias: zeros here
        for i in range(model.cfg.n_layers):
            zeros = torch.zeros(model.cfg.emb_dim)
            pieces[f"h.{i}.attn.c_attn.bias"] = [zeros, zeros, zeros]
    return {
        key: torch.cat([p for p in parts if p is not None], dim=-1).contiguous()
        for key, parts in pieces.items()
    }


def _strip_prefix(key: str) -> str:
    # Files saved from a GPT2LMHeadModel name tensors "transformer.h.0..."; the published
    # ones (saved from GPT2Model) have no prefix. Accept both.
    return key.removeprefix("transformer.")


def load_weights_into_gpt(model: GPTModel, params: str | Path | Mapping[str, Any]) -> None:
    """Copy OpenAI's GPT-2 weights into ``model``, in place.

    ``params`` is a safetensors file in OpenAI's layout, or the book's ``params`` dict (as
    ``download_and_load_gpt2`` returns it). Every model parameter is assigned exactly once;
    an output head of its own (the book's untied model) gets a copy of the token embedding,
    as the book's function gives it. A tensor the model lacks, a parameter the weights
    lack, or a shape that differs is a ``WeightsError`` naming the tensor.
    """
    if isinstance(params, Mapping):
        tensors = params_to_openai_tensors(params)
        _assign_weights(model, {k: k for k in tensors}, tensors.__getitem__, "params")
        return
    path = Path(params)
    with _weights_file(path) as (file, keys):
        _assign_weights(model, keys, file.get_tensor, path)


@contextmanager
def _weights_file(path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """An open safetensors file of OpenAI's weights, and its tensor names without any
    ``transformer.`` prefix (mapped to the names in the file); a bad file is a
    ``WeightsError``."""
    try:
        with safe_open(path, framework="pt") as file:
            yield file, {_strip_prefix(k): k for k in file.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as error:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({error}); is the download incomplete?"
        ) from error
    except FileNotFoundError as error:
        raise WeightsError(f"weights file {path} does not exist") from error


def _assign_weights(
    model: GPTModel,
    keys: dict[str, str],
    get_tensor: Callable[[str], torch.Tensor],
    origin: str | Path,
) -> None:
    """Fill ``model`` from tensors named as in OpenAI's checkpoint (``keys`` maps each such
    name to the name ``get_tensor`` knows it by)."""
    sources = openai_parameter_sources(model.cfg)
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = model.out_head.weight is model.tok_emb.weight
    del params["out_head.weight"]  # filled from the token embedding (GPT-2 ties them)
    if set(sources) != set(params):  # a bug in the table above, never the user's file
        raise AssertionError(f"mapping and model disagree: {set(sources) ^ set(params)}")
    _check_keys(keys, sources, origin)
    cache: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, source in sources.items():
            if source.key not in cache:
                cache.clear()  # keep at most one (fused) tensor in memory
                cache[source.key] = get_tensor(keys[source.key])
            params[name].copy_(_take(cache[source.key], source, params[name], origin))
        if "lm_head.weight" in keys:
            _check_tied_head(get_tensor(keys["lm_head.weight"]), model, origin)
        if not tied:
            if model.out_head.weight.shape != model.tok_emb.weight.shape:
                raise WeightsError(
                    f"model.out_head has shape {tuple(model.out_head.weight.shape)}, not the "
                    "token embedding's: load the weights first, then replace the head"
                )
            model.out_head.weight.copy_(model.tok_emb.weight)


def map_weights_file(model: GPTModel, path: str | Path) -> dict[str, torch.Tensor]:
    """``model``'s transformer weights (its head aside) as views into OpenAI's file, mapped
    into memory: nothing is read until used, and nothing is copied.

    For ``model.load_state_dict(tensors, strict=False, assign=True)`` on a model built
    without storage (``gpt_skeleton``). Unlike ``load_weights_into_gpt`` the weights stay
    in the file's layout: a Conv1D weight becomes the transpose of a matrix stored
    [in, out], which matrix multiplication reads as it is.
    """
    path = Path(path)
    sources = openai_parameter_sources(model.cfg)
    params = dict(model.named_parameters(remove_duplicate=False))
    with _weights_file(path) as (file, keys):
        _check_keys(keys, sources, path)
        tensors = {key: file.get_tensor(keys[key]) for key in {s.key for s in sources.values()}}
    return {
        name: _take(tensors[source.key], source, params[name], path).to(torch.float32)
        for name, source in sources.items()
    }


def _check_keys(keys: dict[str, str], sources: dict[str, Source], path: str | Path) -> None:
    needed = {source.key for source in sources.values()}
    missing = sorted(needed - keys.keys())
    if missing:
        raise WeightsError(f"{path} lacks tensor {_first_of(missing)}; {_WRONG_SIZE}")
    unexpected = sorted(
        k
        for k in keys.keys() - needed
        if not k.endswith(_IGNORED_SUFFIXES) and k != "lm_head.weight"
    )
    if unexpected:
        raise WeightsError(f"{path} has unexpected tensor {_first_of(unexpected)}; {_WRONG_SIZE}")


def _first_of(names: list[str]) -> str:
    """The first name, and how many more there are: ``'h.1.ln_1.bias' (and 3 more)``."""
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"{names[0]!r}{more}"


def _take(
    tensor: torch.Tensor, source: Source, param: torch.Tensor, path: str | Path
) -> torch.Tensor:
    """The part of a checkpoint tensor that fills ``param``, in ``nn.Linear``'s layout."""
    expected = tuple(param.shape[::-1]) if source.transpose else tuple(param.shape)
    if source.chunk is not None:
        expected = (*expected[:-1], 3 * expected[-1])  # query, key and value side by side
    if tuple(tensor.shape) != expected:
        raise WeightsError(
            f"{path}: tensor {source.key!r} has shape {tuple(tensor.shape)} but the model needs "
            f"{expected}; {_WRONG_SIZE}"
        )
    if source.chunk is not None:
        tensor = tensor.chunk(3, dim=-1)[source.chunk]
    return tensor.T if source.transpose else tensor


def _check_tied_head(lm_head: torch.Tensor, model: GPTModel, path: str | Path) -> None:
    if lm_head.shape != model.tok_emb.weight.shape or not torch.equal(
        lm_head.to(model.tok_emb.weight.dtype), model.tok_emb.weight
    ):
        raise WeightsError(
            f"{path}: 'lm_head.weight' differs from 'wte.weight', but GPT-2 ties them"
        )


def load_pretrained_gpt(
    preset: str = "gpt2-small",
    weights_dir: str | Path | None = None,
    **config_overrides: object,
) -> GPTModel:
    """A ``GPTModel`` of a released size with OpenAI's weights (local folder or download)."""
    cfg = get_config(preset, **config_overrides)
    path = find_weights(preset, weights_dir)
    model = uninitialized_gpt(cfg)  # every weight is assigned below
    load_weights_into_gpt(model, path)
    return model.eval()


# --- The book's interface: download_and_load_gpt2 -> (settings, params) -------------------

# The book names the released sizes by their parameter counts.
BOOK_MODEL_SIZES = {
    "124M": "gpt2-small",
    "355M": "gpt2-medium",
    "774M": "gpt2-large",
    "1558M": "gpt2-xl",
}

# Where each tensor sits in the book's nested ``params`` (its TensorFlow checkpoint reader
# strips "model/", puts block i under params["blocks"][i], and calls LayerNorm's weight and
# bias "g" and "b"), against the name it has in OpenAI's safetensors file.
_BLOCK_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_BLOCK_NORMS = ("ln_1", "ln_2")


def download_and_load_gpt2(
    model_size: str = "124M", models_dir: str | Path = "gpt2"
) -> tuple[dict[str, int], dict[str, Any]]:
    """The book's ``download_and_load_gpt2``: GPT-2's ``settings`` and ``params``, in the
    book's layout (numpy arrays in nested dicts), ready for ``load_weights_into_gpt``.

    The book downloads OpenAI's TensorFlow checkpoint and reads it with TensorFlow; here the
    same numbers come from the safetensors file (no TensorFlow): from
    ``models_dir/model_size/model.safetensors`` if you put one there, else as
    ``find_weights`` finds it (``GPT2_WEIGHTS_DIR``, or the Hugging Face Hub's cache,
    downloading once). ``settings`` is the book's ``hparams.json``: read from
    ``models_dir/model_size/hparams.json`` if present, else the released size's.
    """
    if model_size not in BOOK_MODEL_SIZES:
        raise WeightsError(f"model_size {model_size!r} is not one of {', '.join(BOOK_MODEL_SIZES)}")
    preset = BOOK_MODEL_SIZES[model_size]
    folder = Path(models_dir) / model_size
    local = folder / WEIGHTS_FILENAME
    path = local if local.is_file() else find_weights(preset)
    hparams = folder / "hparams.json"
    if hparams.is_file():
        settings = json.loads(hparams.read_text(encoding="utf-8"))
    else:
        cfg = get_config(preset)
        settings = {
            "n_vocab": cfg.vocab_size,
            "n_ctx": cfg.context_length,
            "n_embd": cfg.emb_dim,
            "n_head": cfg.n_heads,
            "n_layer": cfg.n_layers,
        }
    try:
        with safe_open(path, framework="pt") as file:
            tensors = {_strip_prefix(k): file.get_tensor(k) for k in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from error
    num_blocks = len({key.split(".")[1] for key in tensors if key.startswith("h.")})
    if num_blocks != settings["n_layer"]:
        raise WeightsError(
            f"{path} holds {num_blocks} blocks, but the settings say {settings['n_layer']}"
        )
    params = openai_tensors_to_params(tensors, settings["n_layer"], path)
    if params["wte"].shape != (settings["n_vocab"], settings["n_embd"]):
        raise WeightsError(
            f"{path}: 'wte.weight' has shape {params['wte'].shape}, but the settings say "
            f"{settings['n_vocab']} x {settings['n_embd']}"
        )
    return settings, params


def openai_tensors_to_params(
    tensors: Mapping[str, torch.Tensor], n_layer: int, origin: str | Path = "weights"
) -> dict[str, Any]:
    """OpenAI's flat tensor names -> the book's nested ``params`` of numpy arrays."""

    def get(key: str) -> np.ndarray:
        if key not in tensors:
            raise WeightsError(f"{origin} lacks tensor {key!r}; is it a GPT-2 checkpoint?")
        return tensors[key].float().numpy()

    params: dict[str, Any] = {
        "wte": get("wte.weight"),
        "wpe": get("wpe.weight"),
        "g": get("ln_f.weight"),
        "b": get("ln_f.bias"),
        "blocks": [],
    }
    for i in range(n_layer):
        block: dict[str, Any] = {}
        for layer in _BLOCK_LAYERS:
            group, name = layer.split(".")
            block.setdefault(group, {})[name] = {
                "w": get(f"h.{i}.{layer}.weight"),
                "b": get(f"h.{i}.{layer}.bias"),
            }
        for norm in _BLOCK_NORMS:
            block[norm] = {"g": get(f"h.{i}.{norm}.weight"), "b": get(f"h.{i}.{norm}.bias")}
        params["blocks"].append(block)
    return params


def params_to_openai_tensors(params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The book's nested ``params`` -> OpenAI's flat tensor names (the inverse of the above)."""
    try:
        tensors = {
            "wte.weight": params["wte"],
            "wpe.weight": params["wpe"],
            "ln_f.weight": params["g"],
            "ln_f.bias": params["b"],
        }
        for i, block in enumerate(params["blocks"]):
            for layer in _BLOCK_LAYERS:
                group, name = layer.split(".")
                tensors[f"h.{i}.{layer}.weight"] = block[group][name]["w"]
                tensors[f"h.{i}.{layer}.bias"] = block[group][name]["b"]
            for norm in _BLOCK_NORMS:
                tensors[f"h.{i}.{norm}.weight"] = block[norm]["g"]
                tensors[f"h.{i}.{norm}.bias"] = block[norm]["b"]
    except (KeyError, TypeError) as error:
        raise WeightsError(
            f"params lacks {error}: expected the layout download_and_load_gpt2 returns"
        ) from error
    return {key: torch.as_tensor(np.asarray(value)) for key, value in tensors.items()}
