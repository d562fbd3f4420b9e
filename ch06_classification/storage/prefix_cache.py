"""The frozen blocks' output, kept on disk: a second fine-tuning costs only its training loop.

A learner fine-tunes again and again on the same data and the same GPT-2: another learning
rate, more epochs, another seed, the next row of the experiment table. The fast path
(``speed/fast_path.py``) computes the frozen blocks' output for every message once per run,
and that is most of a run: 47 of the 71 s of gpt2-small's five epochs on a 2-core CPU.
Nothing about that output changes between such runs, so the first keeps it here and the
next ones load it (:class:`PrefixCache`, which stands in for ``encode_prefix``).

**Exactly the same, or not at all.** A kept output is found by its *key*, a record of
everything that changes it (:func:`prefix_key`):

- the base weights (the SHA-256 recorded of them, or the random base's seed, initialisation
  and SHA-256), the model's shape, the number of frozen blocks and the classes that compute
  them (the attention variant: causal or not is in the shape, the blocked attention of
  bfloat16 on a CPU in the classes);
- every message's token ids, in order (hashed): the data, the tokenizer, the context
  length, the cut, the token position and the padding all show there;
- how it is computed: the precision, the device type and its kernels (the CPU's
  instruction set or the GPU's name, float32 matmul precision, a CPU's threads), the
  number of processes sharing the work (each batches its share otherwise, which moves the
  last bits), PyTorch's version and the source of the modules that compute it.

A file is named by the SHA-256 of its key, holds the key itself and the SHA-256 of its
tensors, and is used only if both match and its shapes are the run's: a truncated, edited
or foreign file is said in one line and computed again (and replaced).

**Safe like every other file here.** Written whole or not at all (``atomic_output``),
under the folder's lock: a second training that finishes at the same moment waits for the
first to write (a few seconds at most), then writes its own; one that cannot get the lock
trains on without keeping, and says so. The folder is bounded: at most 4 GiB (or
``$GPT_SPAM_CACHE_GIB``; 0 turns the cache off), the least recently used files evicted
first (loading one marks it used). ``--no-cache`` neither loads nor keeps;
``gpt-spam cache --list`` / ``--clear`` show and empty the folder. Under torchrun the main
process loads or keeps, and the others receive what it loaded, as they share the
computed output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ch06_classification.speed.distributed import World
from ch06_classification.storage.base_weights import BaseWeights, tensors_sha256
from ch06_classification.storage.local_cache import LIMIT_ENV, cache_dir
from ch06_classification.storage.safe_files import (
    FileReadError,
    FolderBusyError,
    atomic_output,
    file_exists,
    folder_lock,
    parse_json,
)
from gpt.errors import describe_os_error
from gpt.model import GPTModel

FOLDER = "frozen-outputs"  # in gpt-spam's cache folder (local_cache.cache_dir)
FORMAT = "gpt-spam frozen blocks' output, version 1"  # a new file layout is a new key
GIB = 1024**3
# How long a training waits for another to finish writing here: a write takes seconds.
LOCK_WAIT_SECONDS = 60.0
# The modules whose code computes the output from the base weights and the token ids: a
# change to any of them is a new key (the numbers could move, and a stale file is never
# worth the risk).
COMPUTING_MODULES = (
    "gpt.model",
    "gpt.fast_attention",
    "gpt.lora",
    "gpt.loading",
    "gpt.weights",
    "ch06_classification.finetuning.model",
    "ch06_classification.speed.fast_path",
    "ch06_classification.speed.batching",
    "ch06_classification.speed.devices",
    "ch06_classification.speed.distributed",
)

Encode = Callable[..., list[torch.Tensor]]  # encode_prefix's arguments and result


def kept_outputs_dir() -> Path:
    """The folder of the kept outputs (it may not exist yet)."""
    return cache_dir() / FOLDER


# --- The key ------------------------------------------------------------------------------


def token_ids_sha256(sequences: Sequence[torch.Tensor]) -> str:
    """The SHA-256 of every sequence's length and token ids, in order."""
    digest = hashlib.sha256()
    for sequence in sequences:
        ids = sequence.detach().cpu().to(torch.int64).contiguous()
        digest.update(len(ids).to_bytes(8, "little"))
        digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def code_sha256(modules: Sequence[str] | None = None) -> str:
    """The SHA-256 of the source of ``modules`` (``COMPUTING_MODULES``), found without
    importing them."""
    digest = hashlib.sha256()
    for name in COMPUTING_MODULES if modules is None else modules:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        digest.update(f"{name}\n".encode())
        if origin and os.path.isfile(origin):
            digest.update(Path(origin).read_bytes())
    return digest.hexdigest()


def device_record(device: torch.device) -> dict[str, Any]:
    """What about ``device`` decides the kernels that compute, and so the last bits."""
    record: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        record["name"] = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        record["instructions"] = torch.backends.cpu.get_cpu_capability()
        record["threads"] = torch.get_num_threads()
    record["float32_matmul"] = torch.get_float32_matmul_precision()
    return record


def prefix_key(
    model: GPTModel,
    sequences: Sequence[torch.Tensor],
    num_blocks: int,
    device: torch.device,
    precision: str,
    base: BaseWeights,
    processes: int = 1,
) -> dict[str, Any]:
    """Everything that changes the output of ``model``'s first ``num_blocks`` blocks for
    ``sequences`` (see the module's docstring), as JSON values."""
    frozen = [model.tok_emb, model.pos_emb, *model.trf_blocks[:num_blocks]]
    classes = {type(m) for part in frozen for m in part.modules()}
    key = {
        "format": FORMAT,
        # Where training found a weights file is a hint; its SHA-256 is what it holds.
        "base": {name: value for name, value in base.to_dict().items() if name != "file"},
        "model": model.cfg.to_dict(),
        "frozen_blocks": num_blocks,
        "modules": sorted(f"{c.__module__}.{c.__qualname__}" for c in classes),
        "messages": len(sequences),
        "tokens": sum(len(sequence) for sequence in sequences),
        "token_ids_sha256": token_ids_sha256(sequences),
        "precision": precision,
        "device": device_record(device),
        "processes": processes,
        "torch": torch.__version__,
        "code_sha256": code_sha256(),
    }
    return json.loads(json.dumps(key))  # as it reads back from a file: lists, not tuples


def key_file(key: dict[str, Any]) -> Path:
    """Where the output of ``key`` is kept: one file per key, named by its SHA-256."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return kept_outputs_dir() / f"{name}.safetensors"


# --- Reading and writing one file --------------------------------------------------------


class DamagedOutputError(Exception):
    """A kept file that must not be used; the message says why, after the file's name."""


def read_kept(
    path: Path, key: dict[str, Any], lengths: torch.Tensor, dtype: torch.dtype, emb_dim: int
) -> tuple[torch.Tensor, dict[str, str]]:
    """The hidden states kept in ``path`` for ``key`` ([tokens, emb], the distinct
    sequences of ``lengths`` one after the other) and the file's metadata; a
    :class:`DamagedOutputError` unless every check passes."""
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            names = set(file.keys())
            if metadata.get("format") != FORMAT or names != {"features", "lengths"}:
                raise DamagedOutputError("is not a kept output of gpt-spam's frozen blocks")
            tensors = {name: file.get_tensor(name) for name in sorted(names)}
    except (SafetensorError, OSError) as error:
        raise DamagedOutputError(f"cannot be read (truncated or damaged: {error})") from None
    try:
        recorded = parse_json(metadata.get("key", ""))
    except ValueError as error:
        raise DamagedOutputError(f"has an unreadable key ({error})") from None
    if recorded != key:
        if not isinstance(recorded, dict):
            raise DamagedOutputError("has a key that is not a record")
        differ = [name for name in key if recorded.get(name) != key[name]]
        raise DamagedOutputError(
            f"holds the output of other settings (its {', '.join(differ) or 'key'} differ)"
        )
    features, kept_lengths = tensors["features"], tensors["lengths"]
    same_lengths = kept_lengths.dtype == lengths.dtype and torch.equal(kept_lengths, lengths)
    if not same_lengths or features.dtype != dtype:
        raise DamagedOutputError("does not hold this run's messages")
    if features.shape != (int(lengths.sum()), emb_dim):
        raise DamagedOutputError(f"holds tensors of the wrong shape {tuple(features.shape)}")
    if tensors_sha256(tensors.items()) != metadata.get("content_sha256"):
        raise DamagedOutputError("has changed since it was written")
    return features, metadata


def write_kept(
    path: Path, key: dict[str, Any], features: torch.Tensor, lengths: torch.Tensor, seconds: float
) -> None:
    """Write one kept output, whole or not at all (the caller holds the folder's lock)."""
    tensors = {"features": features.contiguous(), "lengths": lengths}
    metadata = {
        "format": FORMAT,
        "key": json.dumps(key),
        "content_sha256": tensors_sha256(tensors.items()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": f"{seconds:.3f}",
    }
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


# --- The whole folder -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeptOutput:
    """One file of the folder, as ``gpt-spam cache --list`` shows it."""

    path: Path
    size: int
    last_used: float  # its modification time: written or last loaded
    metadata: dict[str, str] | None  # None: it cannot be read

    def describe(self) -> str:
        """One line: what it holds, its size, when it was computed and last used."""
        size = f"{self.size / 1e6:,.1f} MB"
        used = _local_time(datetime.fromtimestamp(self.last_used, timezone.utc))
        key = _parsed_key(self.metadata)
        if key is None:
            return f"{self.path.name[:12]}  {size}  damaged (it will be computed again)"
        base, model = key["base"], key["model"]
        start = f"seed {base.get('seed')}" if base.get("kind") == "random" else "pretrained"
        blocks = key["frozen_blocks"]
        frozen = f"blocks 0-{blocks - 1}" if blocks > 1 else "block 0" if blocks else "embeddings"
        return (
            f"{self.path.name[:12]}  {size}  {base.get('preset')} ({start}), {frozen} of "
            f"{model['n_layers']}, {key['messages']:,} messages / {key['tokens']:,} tokens, "
            f"{key['precision']} on {key['device']['type']}; computed {_created(self.metadata)}, "
            f"last used {used}"
        )


def kept_outputs(folder: Path | None = None) -> list[KeptOutput]:
    """The files kept in ``folder`` (by default the cache's), least recently used first."""
    folder = folder or kept_outputs_dir()
    found = []
    for path in folder.glob("*.safetensors") if folder.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:  # removed meanwhile
            continue
        try:
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata()
        except (SafetensorError, OSError):
            metadata = None
        found.append(KeptOutput(path, stat.st_size, stat.st_mtime, metadata))
    return sorted(found, key=lambda kept: kept.last_used)


def evict(folder: Path, room_for: int, limit: int, keep: Path | None = None) -> list[KeptOutput]:
    """Remove the least recently used files of ``folder`` until ``room_for`` more bytes fit
    under ``limit`` (``keep`` is about to be replaced: it counts for nothing). Returns the
    files removed. The caller holds the folder's lock."""
    files = [kept for kept in kept_outputs(folder) if kept.path != keep]
    total = sum(kept.size for kept in files)
    removed = []
    for kept in files:
        if total + room_for <= limit:
            break
        kept.path.unlink(missing_ok=True)
        total -= kept.size
        removed.append(kept)
    return removed


def clear_kept_outputs() -> list[KeptOutput]:
    """Remove every kept output; returns what was removed. A training that is writing one
    now is waited for (a few seconds), so that nothing is removed halfway."""
    folder = kept_outputs_dir()
    if not folder.is_dir():
        return []
    with folder_lock(folder, wait=LOCK_WAIT_SECONDS):
        removed = kept_outputs(folder)
        for kept in removed:
            kept.path.unlink(missing_ok=True)
    return removed


# --- In training ------------------------------------------------------------------------------


class PrefixCache:
    """``encode`` (``encode_prefix``'s arguments and result) with its output kept on disk.

    The first call with a key computes and keeps; later calls with the same key, in this
    process or a later one, load. ``limit`` is the most bytes the folder may hold (None:
    ``--no-cache``; 0: ``$GPT_SPAM_CACHE_GIB`` is 0; either way nothing is loaded or
    kept). ``world``: under torchrun, the main process reads and writes the file and the
    others receive what it loaded. After the call, ``loaded`` says which it did and
    :meth:`describe` gives the line training prints.
    """

    def __init__(
        self,
        encode: Encode,
        base: BaseWeights,
        limit: int | None,
        world: World | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.encode, self.base, self.limit = encode, base, limit
        self.world = world or World()
        self.log = log
        self.loaded = False
        self._details = ""  # where it is, or why it is not kept
        self._not_kept = False

    def __call__(
        self,
        model: GPTModel,
        sequences: Sequence[torch.Tensor],
        num_blocks: int,
        device: torch.device,
        precision: str = "fp32",
        progress: bool = False,
    ) -> list[torch.Tensor]:
        def compute() -> list[torch.Tensor]:
            return self.encode(
                model, sequences, num_blocks, device, precision=precision, progress=progress
            )

        if not self.limit:
            self._not_kept = True
            self._details = "--no-cache" if self.limit is None else f"${LIMIT_ENV} is 0"
            return compute()
        world = self.world
        firsts, which = distinct(sequences)
        lengths = torch.tensor([len(sequences[i]) for i in firsts], dtype=torch.long)
        key = prefix_key(model, sequences, num_blocks, device, precision, self.base, world.size)
        path = key_file(key)
        stored = torch.bfloat16 if precision == "bf16" else torch.float32  # as encode_prefix
        emb_dim = model.cfg.emb_dim

        rows = self._load(path, key, lengths, stored, emb_dim) if world.is_main else None
        if world.from_main(torch.tensor([int(rows is not None)])).item():
            if rows is None:  # not the main process: receive what it loaded
                rows = torch.empty(int(lengths.sum()), emb_dim, dtype=stored)
            pieces = world.from_main(rows).to(device).split(lengths.tolist())
            self.loaded = True
            return [pieces[i] for i in which]

        start = time.perf_counter()
        features = compute()
        if world.is_main:
            seconds = time.perf_counter() - start
            if features:
                rows = torch.cat([features[i].cpu() for i in firsts])
            else:
                rows = torch.empty(0, emb_dim, dtype=stored)
            self._keep(path, key, rows, lengths, seconds)
        return features

    def describe(self, seconds: float) -> str:
        """The line training prints once the output is ready, in ``seconds``."""
        if self.loaded:
            done = f"loaded in {seconds:.1f} s, {self._details}"
        elif self._not_kept:
            done = f"computed in {seconds:.1f} s, not kept: {self._details}"
        else:
            done = f"computed and kept in {seconds:.1f} s ({self._details})"
        return f"Frozen blocks' output for every message: {done}"

    def _load(
        self, path: Path, key: dict[str, Any], lengths: torch.Tensor, dtype: torch.dtype, emb: int
    ) -> torch.Tensor | None:
        try:
            if not file_exists(path):
                return None
            features, metadata = read_kept(path, key, lengths, dtype, emb)
        except (FileReadError, DamagedOutputError) as problem:
            said = str(problem).removeprefix(f"{path} ")
            self.log(
                f"Not using {path}, a kept output of the frozen blocks: it {said}; "
                "computing it again"
            )
            return None
        with suppress(OSError):
            os.utime(path)  # used now: the last to be evicted
        self._details = (
            f"computed by an earlier run on {_created(metadata)}{_took(metadata)} "
            f"({path}, {_size(path)})"
        )
        return features

    def _keep(
        self,
        path: Path,
        key: dict[str, Any],
        rows: torch.Tensor,
        lengths: torch.Tensor,
        seconds: float,
    ) -> None:
        """Keep the output, or say in ``_details`` why it is not kept."""
        assert self.limit
        size = rows.nbytes + lengths.nbytes
        self._not_kept = True
        if size > self.limit:
            self._details = (
                f"its {size / 1e6:,.0f} MB are over the cache's limit of "
                f"{self.limit / GIB:g} GiB (${LIMIT_ENV})"
            )
            return
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with folder_lock(folder, wait=LOCK_WAIT_SECONDS):
                evicted = evict(folder, size, self.limit, keep=path)
                free = shutil.disk_usage(folder).free
                if free < size + 100 * 1024**2:  # leave the disk some room
                    self._details = f"only {free / 1e6:,.0f} MB free in {folder}"
                    return
                write_kept(path, key, rows, lengths, seconds)
        except FolderBusyError:
            self._details = f"another gpt-spam command is writing to {folder}"
            return
        except (OSError, SafetensorError) as error:
            if isinstance(error, OSError):
                self._details = describe_os_error(error, folder)
            else:
                self._details = f"{path}: {error}"
            return
        self._not_kept = False
        self._details = f"{path}, {size / 1e6:,.1f} MB"
        if evicted:
            freed = sum(kept.size for kept in evicted) / 1e6
            self._details += (
                f"; {len(evicted)} older output{'s' if len(evicted) > 1 else ''} "
                f"({freed:,.0f} MB) removed to stay under {self.limit / GIB:g} GiB"
            )


def distinct(sequences: Sequence[torch.Tensor]) -> tuple[list[int], list[int]]:
    """Where each distinct sequence first appears, and which distinct one each sequence is
    (an index into the first list)."""
    numbers: dict[tuple[int, ...], int] = {}
    firsts: list[int] = []
    which = []
    for i, sequence in enumerate(sequences):
        ids = tuple(sequence.tolist())
        if ids not in numbers:
            numbers[ids] = len(firsts)
            firsts.append(i)
        which.append(numbers[ids])
    return firsts, which


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1e6:,.1f} MB"
    except OSError:
        return "size unknown"


def _parsed_key(metadata: dict[str, str] | None) -> dict[str, Any] | None:
    if not metadata or metadata.get("format") != FORMAT:
        return None
    try:
        key = parse_json(metadata.get("key", ""))
        return key if isinstance(key, dict) else None
    except ValueError:
        return None


def _created(metadata: dict[str, str] | None) -> str:
    try:
        return _local_time(datetime.fromisoformat((metadata or {})["created"]))
    except (KeyError, ValueError):
        return "an unknown date"


def _took(metadata: dict[str, str]) -> str:
    try:
        return f" in {float(metadata['seconds']):.1f} s"
    except (KeyError, ValueError):
        return ""


def _local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")
