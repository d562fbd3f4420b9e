"""The weights fine-tuning started from, recorded precisely enough to rebuild and check them.

Fine-tuning the last block of gpt2-small changes 7.1 M of its 124 M parameters; the other
117 M are the *base*: OpenAI's released weights, or a random initialisation drawn from a
seed. A lean checkpoint stores only what training changed plus a ``BaseWeights`` record,
and loading rebuilds the base the way training built it, then proves it is the same one:

- ``pretrained``: the SHA-256 of the weights file, checked before the file is loaded;
- ``random``: the seed and the initialisation scheme, and the SHA-256 of the tensors they
  produce (a different PyTorch random generator or initialisation would give other ones).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ch06_classification.finetuning.model import RANDOM_INIT
from ch06_classification.storage.local_cache import (
    random_base_file,
    recorded_digest,
    remember_digest,
    remembered_digest,
)
from ch06_classification.storage.rules import checked, matches, one_of, text, whole_number
from ch06_classification.storage.safe_files import atomic_output
from gpt.config import PRESETS
from gpt.errors import UserFacingError
from gpt.hub import WEIGHTS_DIR_ENV, find_weights
from gpt.model import INITS, GPTModel

BASE_KINDS = ("pretrained", "random")
RANDOM_INITS = INITS  # "book" (PyTorch's defaults) or "gpt2" (GPT-2's normal(0, 0.02))
_TENSORS_DIGEST = "tensors_sha256"  # what the local cache remembers of a kept random base


class BaseWeightsError(UserFacingError):
    """The base weights a checkpoint needs are not the ones found."""


@dataclass(frozen=True)
class BaseWeights:
    """Where a fine-tuned model's frozen weights come from (each field with the rule its
    value read from a checkpoint must follow)."""

    kind: str = checked(one_of(BASE_KINDS))
    preset: str = checked(one_of(PRESETS))  # "gpt2-small", ...
    # pretrained: of the weights file; random: of the tensors the seed gives
    sha256: str = checked(matches("[0-9a-f]{64}", "a SHA-256"))
    seed: int | None = checked(whole_number(), default=None)  # random only
    # random only: the initialisation scheme
    init: str | None = checked(one_of(RANDOM_INITS), default=None)
    # pretrained only: where training found the file (a hint)
    file: str | None = checked(text(), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces (no more memory than that)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """The SHA-256 of tensors' names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # its memory, not a copy
    return digest.hexdigest()


def frozen_tensors(model: GPTModel, stored: set[str]) -> list[tuple[str, torch.Tensor]]:
    """The model's tensors that a lean checkpoint does not store: the base's."""
    return [(name, t) for name, t in model.state_dict().items() if name not in stored]


def describe_pretrained(preset: str, weights_file: str | Path) -> BaseWeights:
    """The record of OpenAI's weights file, hashed once while it is unchanged: hashing
    gpt2-xl's 6.4 GB on every training run would cost seconds (``local_cache.py``)."""
    path = Path(weights_file).resolve()
    digest = remembered_digest(path, "file_sha256", file_sha256)
    return BaseWeights("pretrained", preset, digest, file=str(path))


def describe_random(preset: str, seed: int, model: GPTModel, stored: set[str]) -> BaseWeights:
    """The record of a random base, hashed from ``model``'s frozen (never trained) tensors."""
    digest = tensors_sha256(frozen_tensors(model, stored))
    return BaseWeights("random", preset, digest, seed=seed, init=RANDOM_INIT)


def locate_pretrained(base: BaseWeights, weights_dir: str | Path | None = None) -> Path:
    """The weights file to rebuild ``base`` from, found as training found it.

    A folder given here or in ``GPT2_WEIGHTS_DIR`` comes first; else the file training
    used, if it is still there; else the Hugging Face cache (downloading if need be).
    """
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is None and base.file and Path(base.file).is_file():
        return Path(base.file)
    return find_weights(base.preset, weights_dir)


def check_pretrained_file(
    base: BaseWeights, path: Path, checkpoint: Path, verify: bool = False
) -> None:
    """Refuse a weights file other than the one ``checkpoint`` was trained on.

    Its SHA-256 is remembered while the file is unchanged (``local_cache.py``): hashing
    498 MB on every load would cost more than classifying a message. ``verify=True``
    hashes it again all the same."""
    found = remembered_digest(path, "file_sha256", file_sha256, recompute=verify)
    if found != base.sha256:
        raise BaseWeightsError(
            f"{checkpoint} was fine-tuned from {base.preset} weights with SHA-256 "
            f"{base.sha256[:12]}…, but {path} has {found[:12]}…: give the weights it was "
            "trained on with --weights-dir (or GPT2_WEIGHTS_DIR), or use a full checkpoint"
        )


def check_random_tensors(base: BaseWeights, model: GPTModel, stored: set[str], checkpoint: Path):
    """Refuse a random base that the seed no longer reproduces (other PyTorch, other init)."""
    if tensors_sha256(frozen_tensors(model, stored)) != base.sha256:
        raise BaseWeightsError(
            f"{checkpoint}: seed {base.seed} with the {base.init!r} initialisation no longer "
            f"gives the random weights it was trained from (PyTorch {torch.__version__}); "
            "retrain, or use a full checkpoint (gpt-spam train --full-checkpoint)"
        )


def kept_random_base(
    base: BaseWeights, config: dict[str, Any], verify: bool = False
) -> dict[str, torch.Tensor] | None:
    """The random base's tensors (of a model of this ``config``), memory-mapped from the
    file ``keep_random_base`` wrote, if that file is still as it was written (else None:
    draw them again).

    "As it was written" is judged by the file's size and times (``local_cache.py``), which
    bytes changed without a write (a failing disk) leave as they were; ``verify=True``
    hashes the tensors again, and refuses a file whose hash is not the run's.
    """
    path = random_base_file({"base": base.to_dict(), "config": config})
    if recorded_digest(path, _TENSORS_DIGEST) != base.sha256:
        return None
    tensors = _read_tensors(path)
    if verify and tensors is not None and tensors_sha256(tensors.items()) != base.sha256:
        raise BaseWeightsError(
            f"{path}, the random base gpt-spam keeps for seed {base.seed}, has changed "
            "although its size and times have not (a failing disk?): delete it, and the next "
            "command draws the base again from its seed"
        )
    return tensors


def _read_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a safetensors file, memory-mapped; None if it cannot be read."""
    try:
        with safe_open(path, framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError):
        return None


def keep_random_base(
    base: BaseWeights, config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    """Keep a random base, already checked against ``base.sha256``, for the next loads
    (best effort: a cache that cannot be written only means drawing them again).

    The file is read back and hashed once written: later loads trust it by its size and
    times alone (unless ``--verify``), so its digest is remembered only if it is right (a
    file whose digest is not remembered is never read: the next load draws and keeps again).
    """
    path = random_base_file({"base": base.to_dict(), "config": config})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as temporary:
            save_file({name: t.contiguous() for name, t in tensors.items()}, str(temporary))
        written = _read_tensors(path)
        if written is not None and tensors_sha256(written.items()) == base.sha256:
            remember_digest(path, _TENSORS_DIGEST, base.sha256)
    except (OSError, SafetensorError):
        pass
