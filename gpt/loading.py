"""Loading OpenAI's GPT-2 weights fast, for the pipeline: models built without drawing
random numbers, a file's tensors streamed into a model one at a time with every name and
shape checked, or mapped into memory and used in place.

The book's way (``gpt/weights.py``: ``download_and_load_gpt2`` reads every tensor into
numpy arrays, ``load_weights_into_gpt`` copies them into a model drawn at random) gives
the same model; ``tests/gpt/test_loading.py`` holds them equal. This module knows where each
parameter of ``GPTModel`` comes from in OpenAI's file (``openai_parameter_sources``) and
goes from there directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from gpt.config import GPTConfig, get_config
from gpt.hub import find_weights
from gpt.model import GPTModel
from gpt.weights import MASK_BUFFERS, WeightsError

# What a checkpoint with the wrong tensors most likely is.
_WRONG_SIZE = "is it a GPT-2 checkpoint of this size?"


# --- Models without random weights ---------------------------------------------------------


@contextmanager
def skip_init() -> Iterator[None]:
    """Build modules without drawing their initial weights (``torch.nn.init`` does nothing).

    For modules built on PyTorch's "meta" device, whose tensors hold no numbers to draw:
    PyTorch would still run each initialiser there, and its meta ``normal_`` imports
    PyTorch's compiler on first use (seconds on a small CPU). Hugging Face's
    ``no_init_weights`` does the same. Not thread-safe: it swaps functions of a module.
    """
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_")
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, _leave_as_is)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _leave_as_is(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


def gpt_skeleton(cfg: GPTConfig) -> GPTModel:
    """A tied ``GPTModel`` with its shapes and no storage ("meta"): nothing allocated, no
    random number drawn, not even for the 50,257-way head. Fill it with
    ``load_state_dict(tensors, assign=True)``, which takes the tensors as they are."""
    with torch.device("meta"), skip_init():
        return GPTModel(cfg, init="gpt2")  # tied, as the released weights are


def uninitialized_gpt(cfg: GPTConfig) -> GPTModel:
    """A ``GPTModel`` whose weights are left uninitialised, to be overwritten by a load.

    Drawing 124M (or 1.5B) random numbers only to replace them takes seconds; building the
    model on PyTorch's "meta" device (shapes, no storage) and then allocating empty
    storage skips that.
    """
    model = gpt_skeleton(cfg)
    model.to_empty(device="cpu")
    model.out_head.weight = model.tok_emb.weight  # to_empty gives shared weights separate storage
    return model


# --- Where each parameter comes from in OpenAI's file --------------------------------------


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
    inverse of ``load_weights_file`` (no head: the file's is tied to ``wte``)."""
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


# --- Reading OpenAI's file into a model ---------------------------------------------------


@contextmanager
def _weights_file(path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """An open safetensors file of OpenAI's weights, and its tensor names without any
    ``transformer.`` prefix (mapped to the names in the file); a bad file is a
    ``WeightsError``."""
    try:
        with safe_open(path, framework="pt") as file:
            # Files saved from a GPT2LMHeadModel name tensors "transformer.h.0..."; the
            # published ones (saved from GPT2Model) have no prefix. Accept both.
            names = {k.removeprefix("transformer."): k for k in file.keys()}  # noqa: SIM118
            yield file, names
    except SafetensorError as error:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({error}); is the download incomplete?"
        ) from error
    except FileNotFoundError as error:
        raise WeightsError(f"weights file {path} does not exist") from error


def load_weights_file(model: GPTModel, path: str | Path) -> None:
    """Copy the weights of OpenAI's safetensors file at ``path`` into ``model``, in place.

    What the book's ``load_weights_into_gpt`` does with ``download_and_load_gpt2``'s
    ``params``, but tensor by tensor: at most one of the file's tensors is in memory beside
    the model (gpt2-xl's file is 6 GB), and none is converted to numpy. Every parameter is
    assigned exactly once; an output head of its own gets a copy of the token embedding. A
    tensor the model lacks, one the file lacks, or a shape that differs is a
    ``WeightsError`` naming the tensor.
    """
    path = Path(path)
    sources = openai_parameter_sources(model.cfg)
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = model.out_head.weight is model.tok_emb.weight
    del params["out_head.weight"]  # filled from the token embedding (GPT-2 ties them)
    if set(sources) != set(params):  # a bug in the table above, never the user's file
        raise AssertionError(f"mapping and model disagree: {set(sources) ^ set(params)}")
    with _weights_file(path) as (file, keys), torch.no_grad():
        _check_keys(keys, sources, path)
        cache: dict[str, torch.Tensor] = {}
        for name, source in sources.items():
            if source.key not in cache:
                cache.clear()  # keep at most one (fused) tensor in memory
                cache[source.key] = file.get_tensor(keys[source.key])
            params[name].copy_(_take(cache[source.key], source, params[name], path))
        if "lm_head.weight" in keys:
            _check_tied_head(file.get_tensor(keys["lm_head.weight"]), model, path)
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
    without storage (``gpt_skeleton``). Unlike ``load_weights_file`` the weights stay
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
        k for k in keys.keys() - needed if not k.endswith(MASK_BUFFERS) and k != "lm_head.weight"
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
    load_weights_file(model, path)
    return model.eval()
