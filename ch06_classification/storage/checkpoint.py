"""A fine-tuned classifier on disk: what training changed, and how to rebuild the rest.

A checkpoint is a folder (a run folder, or one written by ``SpamClassifier.save_pretrained``)
holding ``model.safetensors`` and ``config.json``. The safetensors file holds the tensors and,
in its metadata, a JSON description (model configuration, preset, labels, max length,
classified token, tokenizer, base weights), so evaluating or classifying needs no training
flag repeated; ``config.json`` is the same description for people and tools, with Hugging
Face's ``id2label`` / ``label2id``. safetensors stores plain tensors: loading one cannot run
code, unlike a pickled ``torch.save`` file.

**Lean by default.** Fine-tuning gpt2-small's last block changes 7.1 M of 124 M parameters,
so a checkpoint stores those (``stored="trained"``, 28 MB) and a record of the base weights
(``base_weights.py``); loading rebuilds the base and checks it is the same one.
``stored="full"`` keeps every tensor, for a machine without the base weights.

**Validated where it is read.** A checkpoint's description is checked before any expensive
work: every value by the rule declared beside its field (``rules.py``: type, range,
choices), its model configuration against the named preset (an edited ``n_heads`` gives
tensors of the same shapes but other answers), and the tensors' names, shapes and dtypes
against the model it describes. Any problem is one line naming the file.

**Agreeing with the files written beside it.** ``config.json`` repeats the description, a
run's ``metrics.json`` its labels; training writes them together, so a file that disagrees
with the checkpoint means the folder was changed afterwards. Which file was changed cannot
be told (the labels in either could have been swapped, reversing every answer), so the
checkpoint is refused, naming both.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ch06_classification.classifier import CLASS_NAMES, TOKEN_POSITIONS, add_classification_head
from ch06_classification.finetuning.model import (
    TRAINABLE_LAYERS,
    random_gpt,
    trained_parameter_names,
)
from ch06_classification.storage.base_weights import (
    BASE_KINDS,
    BaseWeights,
    check_pretrained_file,
    check_random_tensors,
    frozen_tensors,
    keep_random_base,
    kept_random_base,
    locate_pretrained,
)
from ch06_classification.storage.datafiles import MAX_CLASSES, atomic_output, id2label
from ch06_classification.storage.printable import quoted
from ch06_classification.storage.rules import (
    boolean,
    check_entries,
    checked,
    declared_rules,
    entries,
    mapping,
    number_in,
    one_of,
    optional,
    rule,
    text_equal,
    whole_number,
)
from ch06_classification.storage.safe_files import file_exists, parse_json, read_json, write_json
from gpt.config import IMPLEMENTATIONS, PRESETS, GPTConfig, get_config
from gpt.errors import UserFacingError
from gpt.loading import (
    gpt_skeleton,
    load_weights_file,
    map_weights_file,
    skip_init,
    uninitialized_gpt,
)
from gpt.lora import replace_linear_with_lora
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID

CHECKPOINT_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"  # a run's; it records the labels too
_METADATA_KEY = "gpt_spam"
FORMAT_VERSION = 2
STORED = ("trained", "full")  # what the tensors of a checkpoint are
TENSOR_DTYPE = torch.float32  # what training produces; anything else was not written by us
# What a preset fixes of a model configuration.
_SHAPE_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")

# The rule of each entry of a model configuration. (GPTConfig is the chapter core's,
# the book's dataclass; its entries are checked where a description is read: here.)
_CONFIG_RULES = {
    "vocab_size": whole_number(1),
    "context_length": whole_number(1),
    "emb_dim": whole_number(1),
    "n_heads": whole_number(1),
    "n_layers": whole_number(1),
    "drop_rate": number_in(0, 1),
    "qkv_bias": boolean(),
    "implementation": one_of(IMPLEMENTATIONS),
    "causal": boolean(),
}
_LABELS = rule(
    lambda v: (
        isinstance(v, list)
        and 2 <= len(v) <= MAX_CLASSES
        and all(isinstance(label, str) and label for label in v)
        and len(set(v)) == len(v)
    ),
    f"{{name}} {{value}} are not 2 to {MAX_CLASSES} different names",
)
_LORA = entries({"rank": whole_number(1), "alpha": number_in(0, math.inf)})
# A base record leaves out what is None (``BaseWeights.to_dict``).
_BASE = entries(declared_rules(BaseWeights), required=("kind", "preset", "sha256"))


class CheckpointError(UserFacingError):
    """A checkpoint that is missing, damaged, edited, or not for this model."""


@dataclass(frozen=True)
class ClassifierInfo:
    """What a checkpoint says about the classifier it holds: each field with the rule its
    value in a description must follow (``rules.py``; ``parse_description`` adds the
    rules between fields)."""

    config: GPTConfig = checked(entries(_CONFIG_RULES))
    # Messages are cut to this many tokens (and to the context, which it may exceed).
    max_length: int = checked(whole_number(1, "{name} {value} is not a whole number >= 1"))
    token_position: str = checked(one_of(TOKEN_POSITIONS), default="flexible")
    # Class names in class-id order (id2label).
    labels: tuple[str, ...] = checked(_LABELS, default=CLASS_NAMES)
    model_preset: str = checked(one_of(PRESETS), default="gpt2-small")
    weights: str = checked(one_of(BASE_KINDS), default="pretrained")  # what training began from
    trainable_layers: str = checked(one_of(TRAINABLE_LAYERS), default="last_block")
    tokenizer: str = checked(text_equal("gpt2"), default="gpt2")
    pad_token_id: int = checked(whole_number(0), default=END_OF_TEXT_ID)
    # The outputs averaged over the row, not one token read.
    average_embeddings: bool = checked(boolean(), default=False)
    # {"rank", "alpha"} of LoRA adapters, if trained so.
    lora: dict[str, float] | None = checked(optional(_LORA), default=None)
    # How ``config``'s shape differs from the preset's (e.g. the tiny models of tests and
    # CI); None: worked out from ``config``. Reading checks the two still agree.
    config_overrides: dict[str, Any] | None = checked(
        entries(_CONFIG_RULES, required=()), default=None
    )
    # "trained": only the trained tensors, the rest rebuilt from ``base``; "full": all.
    stored: str = checked(one_of(STORED), default="full")
    base: BaseWeights | None = checked(optional(_BASE), default=None)
    extra: dict[str, Any] = checked(mapping(), default_factory=dict)  # e.g. training settings

    def __post_init__(self) -> None:
        if self.config_overrides is None:
            preset = PRESETS.get(self.model_preset, self.config)
            overrides = {
                key: getattr(self.config, key)
                for key in _SHAPE_FIELDS
                if getattr(self.config, key) != getattr(preset, key)
            }
            object.__setattr__(self, "config_overrides", overrides)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["config"] = self.config.to_dict()
        values["labels"] = list(self.labels)
        values["base"] = self.base.to_dict() if self.base else None
        values["format_version"] = FORMAT_VERSION
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClassifierInfo:
        """Parse and validate a description; ``ValueError`` says what is wrong."""
        return parse_description(parse_json(text))

    def hf_config(self) -> dict[str, Any]:
        """``config.json``: the description, plus the keys Hugging Face users look for."""
        return {
            "id2label": id2label(self.labels),
            "label2id": {label: i for i, label in enumerate(self.labels)},
            "preset": self.model_preset,
            "token_position": self.token_position,
            "max_length": self.max_length,
            _METADATA_KEY: self.to_dict(),
        }


# --- Validating a description -----------------------------------------------------------

_DESCRIPTION = declared_rules(ClassifierInfo)


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def parse_description(values: Any) -> ClassifierInfo:
    """A checkpoint's description, each value checked by its field's rule, then the rules
    between fields; ``ValueError`` names the problem."""
    _require(isinstance(values, dict), "the description is not a JSON object")
    version = values.get("format_version")
    _require(
        version == FORMAT_VERSION,
        f"format version {quoted(version)}, expected {FORMAT_VERSION} (written by another "
        "gpt-spam? retrain with this one)",
    )
    values = {key: value for key, value in values.items() if key != "format_version"}
    check_entries(values, _DESCRIPTION, "the description")
    info = ClassifierInfo(
        **{
            **values,
            "config": GPTConfig.from_dict(values["config"]),  # checks emb_dim % n_heads
            "labels": tuple(values["labels"]),
            "base": BaseWeights(**values["base"]) if values["base"] is not None else None,
        }
    )
    _check_between_fields(info)
    return info


def _check_between_fields(info: ClassifierInfo) -> None:
    """The rules that no field can follow alone."""
    config, preset, base = info.config, info.model_preset, info.base
    try:
        expected = get_config(preset, **info.config_overrides)
    except ValueError as error:
        raise ValueError(f"config_overrides do not apply to {preset} ({error})") from None
    for key in _SHAPE_FIELDS:
        # The tensors' shapes cannot tell 12 heads of 64 from 16 heads of 48: the preset can.
        _require(
            getattr(config, key) == getattr(expected, key),
            f"config {key} is {quoted(getattr(config, key))} but {preset}"
            + (" with its recorded overrides" if info.config_overrides else "")
            + f" has {quoted(getattr(expected, key))} (edited?)",
        )
    _require(
        info.pad_token_id < config.vocab_size,
        f"pad_token_id {info.pad_token_id} is not a token id (of {config.vocab_size:,})",
    )
    _require(
        (info.lora is not None) == (info.trainable_layers == "lora"),
        "lora is recorded exactly when trainable_layers is 'lora'",
    )
    _require(
        info.stored == "full" or base is not None, "stored is 'trained' but no base is recorded"
    )
    if base is not None:
        _require(
            base.kind == info.weights,
            f"base is {quoted(base.kind)} but weights is {quoted(info.weights)}",
        )
        _require(
            base.preset == preset,
            f"base preset differs from model_preset ({quoted(base.preset)}, {quoted(preset)})",
        )
        for key in ("seed", "init") if base.kind == "random" else ():
            _require(getattr(base, key) is not None, f"base {key} is None: a random base needs one")


# --- Writing ----------------------------------------------------------------------------


def stored_tensor_names(model: GPTModel, info: ClassifierInfo) -> set[str]:
    """What a checkpoint described by ``info`` holds: every tensor, or the trained ones."""
    if info.stored == "full":
        return set(model.state_dict())
    return trained_parameter_names(model, info.trainable_layers)


def save_classifier(model: GPTModel, info: ClassifierInfo, path: str | Path) -> Path:
    """Write ``model`` (all of it, or what training changed: see ``info.stored``) and
    ``info`` to ``path`` atomically (never a truncated file there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = stored_tensor_names(model, info)
    tensors = {
        name: tensor.detach().to("cpu", TENSOR_DTYPE).contiguous()
        for name, tensor in model.state_dict().items()
        if name in names
    }
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: info.to_json()})
    return path


def save_checkpoint_folder(model: GPTModel, info: ClassifierInfo, folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # config.json goes first and comes back last: a stale one never sits beside a new model.
    (folder / CONFIG_NAME).unlink(missing_ok=True)
    save_classifier(model, info, folder / CHECKPOINT_NAME)
    write_json(folder / CONFIG_NAME, info.hf_config())
    return folder


# --- Reading ----------------------------------------------------------------------------


def read_classifier_info(path: str | Path) -> ClassifierInfo:
    """The validated description stored in a checkpoint, without loading its tensors.

    A ``config.json`` and a run's ``metrics.json`` beside the file must agree with it.
    """
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
        info = ClassifierInfo.from_json(metadata[_METADATA_KEY])
    except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} has an invalid description: {error}") from None
    _check_files_beside(path, info)
    return info


def _check_files_beside(path: Path, info: ClassifierInfo) -> None:
    """Refuse a checkpoint that ``config.json`` or ``metrics.json`` beside it contradicts.

    Either may be missing (the safetensors file describes itself); one that is there but
    not gpt-spam's (a Hugging Face export's ``config.json``) has nothing to compare.
    """
    for name, says in (
        (CONFIG_NAME, info.hf_config()),
        (METRICS_NAME, {"id2label": id2label(info.labels)}),
    ):
        other = path.parent / name
        if not file_exists(other):  # (a folder or a FIFO there is refused, not opened)
            continue
        found = read_json(other)
        ours = isinstance(found, dict) and (name != CONFIG_NAME or _METADATA_KEY in found)
        difference = _first_difference(found, json.loads(json.dumps(says))) if ours else None
        if difference is not None:
            field, theirs, mine = difference
            raise CheckpointError(
                f"{other} says {field} is {_shorten(theirs)} but {path} says {_shorten(mine)}: "
                "the folder was changed after training, and which file is right cannot be "
                "told; restore the run as training wrote it, or retrain"
            )


def _first_difference(found: dict, expected: dict) -> tuple[str, Any, Any] | None:
    """The first entry of ``expected`` that ``found`` has otherwise; for an object too long
    to show, the first entry of it (``gpt_spam.labels`` rather than all of ``gpt_spam``)."""
    for key, value in expected.items():
        if found.get(key) == value:
            continue
        if (
            isinstance(value, dict)
            and isinstance(found.get(key), dict)
            and _shorten(value) != _shorten(value, width=None)
        ):
            for inner in sorted(set(value) | set(found[key])):
                if found[key].get(inner) != value.get(inner):
                    return f"{key}.{inner}", found[key].get(inner), value.get(inner)
        return key, found.get(key), value
    return None


def _shorten(value: Any, width: int | None = 60) -> str:
    """``value`` as JSON, cut to ``width`` characters (None: whole)."""
    text = json.dumps(value, sort_keys=True)
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def check_tensors(
    path: Path, shapes: dict[str, tuple[tuple[int, ...], str]], expected: dict[str, torch.Size]
) -> None:
    """Refuse tensors that do not fit the model: names, shapes and dtypes, the first that
    does not named. ``shapes`` maps each name in the file to its (shape, dtype)."""
    for name in sorted(expected.keys() - shapes.keys()):
        raise CheckpointError(f"{path} does not match the model: it lacks {quoted(name)}")
    for name in sorted(shapes.keys() - expected.keys()):
        raise CheckpointError(f"{path} does not match the model: unexpected tensor {quoted(name)}")
    for name, (shape, dtype) in sorted(shapes.items()):
        if shape != tuple(expected[name]):
            raise CheckpointError(
                f"{path} does not match the model: {quoted(name)} has shape {shape}, "
                f"the model needs {tuple(expected[name])}"
            )
        if dtype != "F32":
            raise CheckpointError(
                f"{path}: tensor {quoted(name)} has dtype {dtype}, but gpt-spam writes float32 "
                "(F32)"
            )


def check_matches(model: GPTModel, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse ``tensors`` that do not fit ``model`` (see ``check_tensors``)."""
    shapes = {
        name: (tuple(t.shape), "F32" if t.dtype == TENSOR_DTYPE else str(t.dtype))
        for name, t in tensors.items()
    }
    check_tensors(path, shapes, {k: v.shape for k, v in model.state_dict().items()})


def load_classifier(
    path: str | Path,
    device: torch.device | str = "cpu",
    weights_dir: str | Path | None = None,
    verify: bool = False,
) -> tuple[GPTModel, ClassifierInfo]:
    """The model stored at ``path``, in evaluation mode, and its description.

    For a lean checkpoint, the base weights are found as training found them (``weights_dir``
    or ``GPT2_WEIGHTS_DIR`` first) and must be the very ones it recorded. ``verify=True``
    hashes them again rather than trust the digest remembered while their file seems
    unchanged (``--verify``).

    Nothing is copied that need not be: the model is built as a skeleton (shapes only, so
    GPT-2's 50,257-way head, replaced by the class head, is never allocated), and its
    tensors are those of the files, mapped into memory (safetensors), with the base's
    digest remembered between commands (``local_cache.py``). Only LoRA runs rebuild their
    base in memory, to add the adapters into it.
    """
    path = _existing(path)
    info = read_classifier_info(path)
    # The model's shapes only: enough to check every tensor of the file before anything
    # expensive happens, and, filled with the file's tensors, the model itself.
    skeleton = classifier_skeleton(info)
    stored = stored_tensor_names(skeleton, info)
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if k in stored}
    try:
        with safe_open(path, framework="pt") as file:
            header = {
                name: (tuple(file.get_slice(name).get_shape()), file.get_slice(name).get_dtype())
                for name in file.keys()  # noqa: SIM118 (not a dict)
            }
            check_tensors(path, header, expected)
            weights_file = None
            if info.stored == "trained" and info.base.kind == "pretrained":
                weights_file = locate_pretrained(info.base, weights_dir)
                check_pretrained_file(info.base, weights_file, path, verify)
            tensors = {name: file.get_tensor(name) for name in header}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({error})") from error

    if info.stored == "full":
        model = skeleton
    elif info.lora:
        model = _rebuild_base(info, weights_file)
        if info.base.kind == "random":
            check_random_tensors(info.base, model, stored, path)
    else:
        model = skeleton
        base = _base_tensors(info, skeleton, stored, weights_file, path, verify)
        tensors = {**base, **tensors}
    # A LoRA run's base, rebuilt in memory, already holds every tensor the file lacks.
    model.load_state_dict(tensors, strict=not info.lora or info.stored == "full", assign=True)
    return model.to(device).eval(), info


def classifier_skeleton(info: ClassifierInfo) -> GPTModel:
    """The classifier ``info`` describes, shapes only ("meta": nothing allocated or drawn)."""
    with torch.device("meta"), skip_init():
        model = add_classification_head(gpt_skeleton(info.config), num_classes=len(info.labels))
        return add_adapters(model, info)


def _base_tensors(
    info: ClassifierInfo,
    skeleton: GPTModel,
    stored: set[str],
    weights_file: Path | None,
    checkpoint: Path,
    verify: bool = False,
) -> dict[str, torch.Tensor]:
    """The base's tensors for a lean checkpoint without adapters, by ``skeleton``'s names:
    views into OpenAI's file, or the random base (kept from an earlier load, else drawn
    from its seed, checked, and kept)."""
    if weights_file is not None:
        return map_weights_file(skeleton, weights_file)
    kept = kept_random_base(info.base, info.config.to_dict(), verify)
    if kept is not None:
        return kept
    model = _rebuild_base(info, None)
    check_random_tensors(info.base, model, stored, checkpoint)
    frozen = dict(frozen_tensors(model, stored))
    keep_random_base(info.base, info.config.to_dict(), frozen)
    return frozen


def _rebuild_base(info: ClassifierInfo, weights_file: Path | None) -> GPTModel:
    """The model fine-tuning started from, with a fresh head (replaced by the stored one)."""
    if weights_file is not None:
        model = uninitialized_gpt(info.config)
        load_weights_file(model, weights_file)
    else:
        model = random_gpt(info.config, info.base.seed, info.base.init)
    return add_adapters(add_classification_head(model, num_classes=len(info.labels)), info)


def add_adapters(model: GPTModel, info: ClassifierInfo) -> GPTModel:
    """Wrap the linear layers with LoRA adapters if ``info`` says the model was trained so
    (their values come from the checkpoint)."""
    if info.lora:
        replace_linear_with_lora(model, int(info.lora["rank"]), info.lora["alpha"])
    return model


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not file_exists(path):  # a folder, a FIFO or a device there is named as such
        raise CheckpointError(
            f"no checkpoint at {path}: train one first with `gpt-spam train` "
            "(or scripts/03_train.py)"
        )
    return path
