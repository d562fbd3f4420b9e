"""The frozen blocks' output kept on disk (prefix_cache.py): loaded only when it is exactly
what the run would compute, written whole, checked where read, bounded, and shared by the
processes of a torchrun."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.speed.distributed import World
from ch06_classification.speed.fast_path import encode_prefix
from ch06_classification.storage import prefix_cache
from ch06_classification.storage.base_weights import BaseWeights
from ch06_classification.storage.local_cache import (
    CACHE_DIR_ENV,
    DEFAULT_LIMIT_GIB,
    LIMIT_ENV,
    cache_limit_bytes,
)
from ch06_classification.storage.prefix_cache import (
    PrefixCache,
    kept_outputs,
    kept_outputs_dir,
    prefix_key,
)
from ch06_classification.storage.safe_files import LOCK_NAME
from gpt.config import GPTConfig
from gpt.errors import UserFacingError
from gpt.fast_attention import use_fast_attention
from gpt.model import GPTModel
from tests.synthetic_splits import write_synthetic_splits

TINY = GPTConfig(context_length=32, emb_dim=32, n_heads=4, n_layers=2)
CPU = torch.device("cpu")
BASE = BaseWeights("random", "gpt2-small", "ab" * 32, seed=123, init="gpt2")
GIB = 1024**3


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    return tmp_path / "cache"


def tiny_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(dataclasses.replace(TINY, **overrides), init="gpt2").eval()


# Repeated messages (the collection has many) and lengths from 1 to the context.
SEQUENCES = [
    torch.tensor(ids)
    for ids in ([5, 6, 7], [9] * 20, [5, 6, 7], [1], list(range(100, 132)), [9] * 20, [2, 3])
]


@dataclasses.dataclass
class Encoded:
    features: list[torch.Tensor]
    kept: PrefixCache
    logged: list[str]
    computed: int  # how many times encode_prefix ran


def encode(
    model: GPTModel | None = None,
    sequences: list[torch.Tensor] = SEQUENCES,
    num_blocks: int = 1,
    precision: str = "fp32",
    base: BaseWeights = BASE,
    world: World | None = None,
    limit: int | None = GIB,
) -> Encoded:
    """The frozen blocks' output through the cache, and what the cache did."""
    calls: list[int] = []

    def counting_encode(*args, **kwargs) -> list[torch.Tensor]:
        calls.append(1)
        return encode_prefix(*args, **kwargs)

    logged: list[str] = []
    kept = PrefixCache(counting_encode, base, limit, world, logged.append)
    features = kept(model or tiny_model(), sequences, num_blocks, CPU, precision=precision)
    return Encoded(features, kept, logged, len(calls))


def kept_files() -> list[Path]:
    return sorted(kept_outputs_dir().glob("*.safetensors"))


def test_a_second_call_loads_exactly_what_the_first_computed():
    first = encode()
    assert (first.computed, first.kept.loaded) == (1, False)
    assert len(kept_files()) == 1
    assert "computed and kept in 0.5 s" in first.kept.describe(0.5)

    second = encode()
    assert (second.computed, second.kept.loaded) == (0, True)
    assert second.logged == []
    assert len(second.features) == len(SEQUENCES)
    for computed, loaded in zip(first.features, second.features, strict=True):
        assert loaded.dtype == computed.dtype and torch.equal(loaded, computed)
    line = second.kept.describe(0.1)
    assert line.startswith("Frozen blocks' output for every message: loaded in 0.1 s, ")
    assert "computed by an earlier run on " in line and str(kept_files()[0]) in line


def test_bfloat16_outputs_are_kept_in_bfloat16():
    first = encode(precision="bf16")
    second = encode(precision="bf16")
    assert second.kept.loaded and second.features[0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(first.features, second.features, strict=True))


def reordered(sequences: list[torch.Tensor]) -> list[torch.Tensor]:
    return [sequences[1], sequences[0], *sequences[2:]]


def one_id_changed(sequences: list[torch.Tensor]) -> list[torch.Tensor]:
    changed = sequences[4].clone()
    changed[17] += 1
    return [*sequences[:4], changed, *sequences[5:]]


def cut_shorter(sequences: list[torch.Tensor]) -> list[torch.Tensor]:  # another context length
    return [*sequences[:4], sequences[4][:16], *sequences[5:]]


def padded(sequences: list[torch.Tensor]) -> list[torch.Tensor]:  # another token position
    return [torch.cat([s, torch.full((2,), 50256)])[:32] for s in sequences]


# Each changes one thing the frozen blocks' output depends on (the test below keeps the
# output of the unchanged call first). ``probe`` is a module counted as computing code.
Change = Callable[[pytest.MonkeyPatch, pytest.FixtureRequest, Path], dict]


def other_threads(monkeypatch, request, probe) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    return {}


def other_matmul_precision(monkeypatch, request, probe) -> dict:
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium" if precision != "medium" else "highest")
    request.addfinalizer(lambda: torch.set_float32_matmul_precision(precision))
    return {}


def other_code(monkeypatch, request, probe) -> dict:
    probe.write_text(probe.read_text() + "# an edit\n")
    return {}


def other_torch(monkeypatch, request, probe) -> dict:
    monkeypatch.setattr(torch, "__version__", "0.0.0+another")
    return {}


CHANGES: dict[str, Change] = {
    "the base's SHA-256": lambda *_: {"base": dataclasses.replace(BASE, sha256="cd" * 32)},
    "the random base's seed": lambda *_: {"base": dataclasses.replace(BASE, seed=7)},
    "the random base's init": lambda *_: {"base": dataclasses.replace(BASE, init="book")},
    "pretrained weights": lambda *_: {"base": BaseWeights("pretrained", "gpt2-small", "ab" * 32)},
    "the model's width": lambda *_: {"model": tiny_model(emb_dim=48)},
    "the model's context": lambda *_: {"model": tiny_model(context_length=40)},
    "the number of frozen blocks": lambda *_: {"num_blocks": 2},
    "a token id": lambda *_: {"sequences": one_id_changed(SEQUENCES)},
    "the order of the messages": lambda *_: {"sequences": reordered(SEQUENCES)},
    "the cut (context length)": lambda *_: {"sequences": cut_shorter(SEQUENCES)},
    "the padding (token position)": lambda *_: {"sequences": padded(SEQUENCES)},
    "one more message": lambda *_: {"sequences": [*SEQUENCES, torch.tensor([4])]},
    "the precision": lambda *_: {"precision": "bf16"},
    "no causal mask": lambda *_: {"model": tiny_model(causal=False)},
    "the attention's class": lambda *_: {"model": use_fast_attention(tiny_model())},
    "the processes sharing the work": lambda *_: {"world": World(size=2)},
    "the CPU's threads": other_threads,
    "the float32 matmul precision": other_matmul_precision,
    "the code that computes it": other_code,
    "PyTorch's version": other_torch,
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_ingredient_of_the_key_makes_a_recomputation(
    change: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path: Path
):
    probe = tmp_path / "h10_probe_module.py"
    probe.write_text("PROBE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = (*prefix_cache.COMPUTING_MODULES, "h10_probe_module")
    monkeypatch.setattr(prefix_cache, "COMPUTING_MODULES", modules)
    assert encode().computed == 1
    assert encode().kept.loaded  # unchanged: loaded

    changed = encode(**CHANGES[change](monkeypatch, request, probe))

    assert (changed.computed, changed.kept.loaded) == (1, False)
    assert len(kept_files()) == 2  # kept beside the other


def test_the_device_and_its_kernels_are_in_the_key(monkeypatch: pytest.MonkeyPatch):
    # No other device here: the key of a CUDA device is built with its name stubbed.
    model = tiny_model()
    cpu = prefix_key(model, SEQUENCES, 1, CPU, "fp32", BASE)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    cuda = prefix_key(model, SEQUENCES, 1, torch.device("cuda"), "fp32", BASE)
    assert cuda["device"]["type"] == "cuda" and cuda["device"] != cpu["device"]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    other_cpu = prefix_key(model, SEQUENCES, 1, CPU, "fp32", BASE)
    assert other_cpu["device"]["instructions"] == "AVX512" != cpu["device"]["instructions"]
    assert prefix_cache.key_file(other_cpu) != prefix_cache.key_file(cpu)


def test_where_the_weights_file_was_found_is_not_in_the_key():
    here = BaseWeights("pretrained", "gpt2-small", "ab" * 32, file="/a/model.safetensors")
    there = dataclasses.replace(here, file="/b/model.safetensors")
    encode(base=here)
    assert encode(base=there).kept.loaded  # the same bytes, found elsewhere


def flip_a_feature_byte(path: Path) -> None:
    """Change one bit of the hidden states, leaving the header as it is."""
    data = bytearray(path.read_bytes())
    header_size = int.from_bytes(data[:8], "little")  # a safetensors file's first 8 bytes
    header = json.loads(data[8 : 8 + header_size])
    start = 8 + header_size + header["features"]["data_offsets"][0]
    data[start + 10] ^= 0x40
    path.write_bytes(bytes(data))


def edit_the_key(path: Path) -> None:  # same length: the header still parses
    data = path.read_bytes()
    assert data.count(b'frozen_blocks\\": 1') == 1
    path.write_bytes(data.replace(b'frozen_blocks\\": 1', b'frozen_blocks\\": 2'))


def put_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def put_another_output(path: Path) -> None:
    (before,) = kept_files()
    encode(sequences=SEQUENCES[:3])
    (other,) = set(kept_files()) - {before}
    shutil.copyfile(other, path)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot be"),
    "empty": (lambda p: p.write_bytes(b""), "cannot be read"),
    "not safetensors": (lambda p: p.write_text("hello\n"), "cannot be read"),
    "a tensor edited": (flip_a_feature_byte, "has changed since it was written"),
    "its key edited": (edit_the_key, "holds the output of other settings (its frozen_blocks"),
    "another key's file": (put_another_output, "holds the output of other settings (its "),
    "a folder": (put_a_folder, "is a folder"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_said_in_one_line_and_computed_again(damage: str):
    fresh = encode()
    (path,) = kept_files()
    spoil, reason = DAMAGE[damage]
    spoil(path)

    again = encode()

    assert (again.computed, again.kept.loaded) == (1, False)
    assert len(again.logged) == 1, again.logged
    assert again.logged[0].startswith(f"Not using {path}, a kept output of the frozen blocks: it ")
    assert reason in again.logged[0] and again.logged[0].endswith("; computing it again")
    assert all(torch.equal(a, b) for a, b in zip(fresh.features, again.features, strict=True))
    if damage != "a folder":  # replaced by the output just computed
        assert encode().kept.loaded


def test_a_failed_write_leaves_nothing_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch):
    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    with monkeypatch.context() as patched:
        patched.setattr(prefix_cache, "save_file", write_half_then_fail)
        failed = encode()
        assert failed.computed == 1
        assert ", not kept: " in failed.kept.describe(1.0)
        assert os.listdir(kept_outputs_dir()) == []  # no file, no half-written one

        def interrupted(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\0" * 100)
            raise KeyboardInterrupt

        patched.setattr(prefix_cache, "save_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            encode()
        assert os.listdir(kept_outputs_dir()) == []

    assert not encode().kept.loaded  # nothing was kept: computed, and kept now
    assert encode().kept.loaded


def hold_the_lock(folder: Path) -> int:
    """Lock ``folder`` as another gpt-spam command would (a lock of another open file)."""
    fcntl = pytest.importorskip("fcntl")
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_run_that_finds_the_folder_being_written_waits_for_it(monkeypatch):
    handle = hold_the_lock(kept_outputs_dir())
    monkeypatch.setattr(prefix_cache, "LOCK_WAIT_SECONDS", 30.0)
    releaser = threading.Timer(0.5, os.close, [handle])
    releaser.start()
    try:
        waited = encode()
    finally:
        releaser.join()
    assert "computed and kept" in waited.kept.describe(1.0)
    assert encode().kept.loaded


def test_a_run_that_cannot_get_the_lock_trains_on_without_keeping(monkeypatch):
    handle = hold_the_lock(kept_outputs_dir())
    monkeypatch.setattr(prefix_cache, "LOCK_WAIT_SECONDS", 0.2)
    try:
        busy = encode()
    finally:
        os.close(handle)
    assert busy.computed == 1
    assert "not kept: another gpt-spam command is writing to" in busy.kept.describe(1.0)
    assert kept_files() == []


def test_the_least_recently_used_outputs_are_evicted_first():
    encode(sequences=SEQUENCES)
    (first,) = kept_files()
    encode(sequences=one_id_changed(SEQUENCES))
    (second,) = set(kept_files()) - {first}
    now = time.time()
    os.utime(first, (now - 100, now - 100))
    os.utime(second, (now - 50, now - 50))
    assert encode(sequences=SEQUENCES).kept.loaded  # the first is the most recently used now

    limit = int(2.5 * first.stat().st_size)  # room for two
    third = encode(sequences=reordered(one_id_changed(SEQUENCES)), limit=limit)

    assert "1 older output" in third.kept.describe(1.0)
    assert first in kept_files() and second not in kept_files() and len(kept_files()) == 2


def test_an_output_over_the_limit_is_not_kept():
    over = encode(limit=1000)
    assert "not kept: its " in over.kept.describe(1.0)
    assert "over the cache's limit" in over.kept.describe(1.0)
    assert kept_files() == []


def test_no_cache_neither_loads_nor_keeps():
    encode()
    skipped = encode(limit=None)
    assert (skipped.computed, skipped.kept.loaded) == (1, False)
    assert skipped.kept.describe(1.0).endswith("computed in 1.0 s, not kept: --no-cache")
    assert encode(limit=0).kept.describe(1.0).endswith(f"not kept: ${LIMIT_ENV} is 0")
    assert len(kept_files()) == 1


def test_the_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    assert cache_limit_bytes() == DEFAULT_LIMIT_GIB * GIB
    monkeypatch.setenv(LIMIT_ENV, "0.5")
    assert cache_limit_bytes() == GIB // 2
    for wrong in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv(LIMIT_ENV, wrong)
        with pytest.raises(UserFacingError, match=f"{LIMIT_ENV} is '{wrong}'"):
            cache_limit_bytes()


def test_a_listed_output_says_what_it_holds():
    encode()
    (kept,) = kept_outputs()
    line = kept.describe()
    assert line.startswith(kept.path.name[:12])
    tokens = sum(len(sequence) for sequence in SEQUENCES)
    assert f"gpt2-small (seed 123), block 0 of 2, 7 messages / {tokens} tokens, " in line
    assert "fp32 on cpu; computed " in line and ", last used " in line


# --- In training -------------------------------------------------------------------------

TINY_OVERRIDES = {"emb_dim": 32, "n_layers": 2, "n_heads": 4, "context_length": 32}


def test_a_training_from_the_kept_output_is_the_training_that_computed_it(tmp_path: Path):
    data = write_synthetic_splits(tmp_path / "data", sizes=(48, 16, 16))
    settings = TrainingSettings(
        weights="random",
        data_dir=str(data),
        epochs=2,
        eval_freq=2,
        precision="fp32",
        config_overrides=TINY_OVERRIDES,
    )
    runs, said = [], []
    for no_cache in (False, False, True):
        lines: list[str] = []
        settings = dataclasses.replace(settings, no_cache=no_cache)
        runs.append(fine_tune(settings, log=lines.append, progress=False))
        (line,) = [line for line in lines if line.startswith("Frozen blocks' output")]
        said.append(line)

    assert " computed and kept in " in said[0]
    assert " loaded in " in said[1] and "computed by an earlier run on " in said[1]
    assert said[2].endswith("not kept: --no-cache")
    first = runs[0]
    for other in runs[1:]:  # the same computation twice: equal exactly
        assert list(other.history) == list(first.history)  # the book's five lists
        assert other.history.eval_steps == first.history.eval_steps
        assert other.accuracies == first.accuracies and other.metrics == first.metrics
        expected, got = first.model.state_dict(), other.model.state_dict()
        assert all(torch.equal(got[name], expected[name]) for name in expected)
