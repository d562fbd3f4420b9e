"""A fine-tuned classifier on disk: weights plus everything needed to use them.

One ``model.safetensors`` file holds the model's tensors and, in its metadata, a JSON
description (model configuration, preset, labels, max length, classified token, tokenizer),
so evaluating or classifying needs no training flag repeated. safetensors stores plain
tensors: loading one cannot run code, unlike a pickled ``torch.save`` file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ch06_classification.classifier import LABELS, add_classification_head
from ch06_classification.datafiles import atomic_output
from gpt.config import GPTConfig
from gpt.errors import UserFacingError
from gpt.lora import replace_linear_with_lora
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID

CHECKPOINT_NAME = "model.safetensors"
_METADATA_KEY = "gpt_spam"
FORMAT_VERSION = 1


class CheckpointError(UserFacingError):
    """A checkpoint that is missing, damaged, or not for this model."""


@dataclass(frozen=True)
class ClassifierInfo:
    """What a checkpoint says about the classifier it holds."""

    config: GPTConfig
    max_length: int  # messages are cut to this many tokens
    token_position: str = "flexible"
    labels: tuple[str, ...] = LABELS
    model_preset: str = "gpt2-small"
    weights: str = "pretrained"  # what fine-tuning started from
    trainable_layers: str = "last_block"
    tokenizer: str = "gpt2"
    pad_token_id: int = END_OF_TEXT_ID
    average_embeddings: bool = False  # the outputs averaged over the row, not one token read
    lora: dict[str, float] | None = None  # {"rank", "alpha"} of LoRA adapters, if trained so
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the training settings

    def to_json(self) -> str:
        values = asdict(self)
        values["format_version"] = FORMAT_VERSION
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClassifierInfo:
        values = json.loads(text)
        version = values.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, expected {FORMAT_VERSION}")
        values["config"] = GPTConfig.from_dict(values["config"])
        values["labels"] = tuple(values["labels"])
        return cls(**values)


def save_classifier(model: GPTModel, info: ClassifierInfo, path: str | Path) -> Path:
    """Write ``model`` and ``info`` to ``path`` atomically (never a truncated file there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: info.to_json()})
    return path


def read_classifier_info(path: str | Path) -> ClassifierInfo:
    """The description stored in a checkpoint, without loading its tensors."""
    path = _existing(path)
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?)"
        ) from error
    if _METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is not a gpt-spam classifier checkpoint")
    try:
        return ClassifierInfo.from_json(metadata[_METADATA_KEY])
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # e.g. not an object
        raise CheckpointError(f"{path} has an unreadable description ({error})") from error


def load_classifier(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[GPTModel, ClassifierInfo]:
    """The model stored at ``path``, in evaluation mode, and its description."""
    path = _existing(path)
    info = read_classifier_info(path)
    # Built on the "meta" device (shapes only): its random initialisation, which would take
    # a second for gpt2-small, is never drawn, since every tensor comes from the file.
    with torch.device("meta"):
        model = add_classification_head(GPTModel(info.config), num_classes=len(info.labels))
        if info.lora:  # the checkpoint holds the adapters beside the weights they adapt
            replace_linear_with_lora(model, int(info.lora["rank"]), info.lora["alpha"])
    try:
        with safe_open(path, framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({error})") from error
    check_matches(model, tensors, path)
    model.load_state_dict(tensors, assign=True)
    return model.to(device).eval(), info


def check_matches(model: GPTModel, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors that do not fit ``model``, naming the first that does not."""
    expected = model.state_dict()
    for name in sorted(expected.keys() - tensors.keys()):
        raise CheckpointError(f"{path} does not match the model: it lacks {name!r}")
    for name in sorted(tensors.keys() - expected.keys()):
        raise CheckpointError(f"{path} does not match the model: unexpected tensor {name!r}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path} does not match the model: {name!r} has shape {tuple(tensor.shape)}, "
                f"the model needs {tuple(expected[name].shape)}"
            )


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train one first with `gpt-spam train` "
            "(or scripts/03_train.py)"
        )
    return path
