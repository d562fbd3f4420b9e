"""What keeps ``gpt-spam classify "..."`` quick from a cold start: no heavy imports, file
digests remembered while the file is unchanged, and random bases kept (local_cache.py).
No timing is asserted: the seconds are measured by benchmarks/classify.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.cli.main import main
from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.storage import base_weights
from ch06_classification.storage import checkpoint as checkpoint_module
from ch06_classification.storage.base_weights import (
    BaseWeights,
    BaseWeightsError,
    file_sha256,
    keep_random_base,
    kept_random_base,
    tensors_sha256,
)
from ch06_classification.storage.checkpoint import read_classifier_info
from ch06_classification.storage.local_cache import (
    CACHE_DIR_ENV,
    random_base_file,
    recorded_digest,
    remember_digest,
    remembered_digest,
)
from ch06_classification.storage.runs import save_training_run
from tests.run_cli import ROOT
from tests.synthetic_splits import write_synthetic_splits
from tests.tiny_classifier import MESSAGES

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = {"emb_dim": 32, "n_layers": 2, "n_heads": 4, "context_length": 32}
# What classifying needs none of: data frames, plots, scikit-learn, downloads, compiling,
# the web framework of `serve`.
HEAVY = (
    "pandas",
    "matplotlib",
    "sklearn",
    "scipy",
    "requests",
    "huggingface_hub",
    "torch._dynamo",
    "fastapi",
    "uvicorn",
    "starlette",
)


@pytest.fixture(scope="module")
def lean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lean run from random weights: loading it rebuilds (or finds kept) its base."""
    data_dir = write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(24, 8, 8))
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=1, config_overrides=TINY
    )
    run_dir = tmp_path_factory.mktemp("run")
    save_training_run(fine_tune(settings, log=lambda line: None), run_dir)
    return run_dir


def test_classify_imports_none_of_the_heavy_modules(lean_run: Path, tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from ch06_classification.cli.main import main\n"
        f"status = main(['classify', '--run-dir', {str(lean_run)!r}, 'WINNER! claim now'])\n"
        f"print(json.dumps([status, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    # A fresh cache: the random base is drawn from its seed here, not read from a file.
    env = {**os.environ, "PYTHONPATH": str(ROOT), CACHE_DIR_ENV: str(tmp_path / "cache")}
    for _ in range(2):  # the first load keeps the base, the second reads it
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        status, imported = json.loads(result.stdout.splitlines()[-1])
        assert status == 0 and imported == []


def counting_sha256(calls: list[Path]):
    """``file_sha256`` that also records each file it hashes in ``calls``."""

    def sha256(file: Path) -> str:
        calls.append(file)
        return file_sha256(file)

    return sha256


def test_a_remembered_digest_is_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    computed: list[Path] = []
    sha256 = counting_sha256(computed)

    first = remembered_digest(path, "file_sha256", sha256)
    assert remembered_digest(path, "file_sha256", sha256) == first
    assert len(computed) == 1  # the second answer was remembered

    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the same mtime
    changed = remembered_digest(path, "file_sha256", sha256)

    assert len(computed) == 2 and changed == file_sha256(path) != first


@pytest.mark.parametrize("damage", ["[" * 100_000, '{"file_sha256:x": {}}', "{not json"])
def test_a_damaged_record_of_digests_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "digests.json").write_text(damage)
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    computed: list[Path] = []

    assert remembered_digest(path, "file_sha256", counting_sha256(computed)) == file_sha256(path)
    assert remembered_digest(path, "file_sha256", counting_sha256(computed)) == file_sha256(path)
    assert len(computed) == 1  # remembered in the record written in place of the damaged one


def test_training_hashes_an_unchanged_weights_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ch06_classification.storage import base_weights

    path = tmp_path / "gpt2-small.safetensors"
    path.write_bytes(b"not really weights" * 100)
    hashed: list[Path] = []
    monkeypatch.setattr(base_weights, "file_sha256", counting_sha256(hashed))
    first = base_weights.describe_pretrained("gpt2-small", path)
    second = base_weights.describe_pretrained("gpt2-small", path)

    assert first == second and first.sha256 == file_sha256(path)
    assert len(hashed) == 1
    path.write_bytes(b"other weights, same size!" * 72)
    assert base_weights.describe_pretrained("gpt2-small", path).sha256 == file_sha256(path)
    assert len(hashed) == 2


def test_a_random_base_is_kept_and_then_read_instead_of_drawn(
    lean_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = SpamClassifier.from_pretrained(lean_run, device="cpu")  # keeps it (or read it)
    expected = drawn.predict_proba(list(MESSAGES))

    def no_drawing(*args: object) -> None:
        raise AssertionError("the random base was drawn again")

    monkeypatch.setattr(checkpoint_module, "random_gpt", no_drawing)
    kept = SpamClassifier.from_pretrained(lean_run, device="cpu")

    np.testing.assert_array_equal(kept.predict_proba(list(MESSAGES)), expected)


def test_a_kept_random_base_that_was_changed_is_not_trusted(
    lean_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SpamClassifier.from_pretrained(lean_run, device="cpu")  # make sure it is kept
    info = read_classifier_info(lean_run / "model.safetensors")
    kept_file = random_base_file({"base": info.base.to_dict(), "config": info.config.to_dict()})
    data = bytearray(kept_file.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes infinity
    kept_file.write_bytes(bytes(data))
    drawn = []
    real_random_gpt = checkpoint_module.random_gpt

    def counting_random_gpt(*args, **kwargs):
        drawn.append(1)
        return real_random_gpt(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "random_gpt", counting_random_gpt)
    classifier = SpamClassifier.from_pretrained(lean_run, device="cpu")

    assert drawn == [1]  # drawn again, checked against the run's record, and kept again
    assert np.isfinite(classifier.predict_proba(list(MESSAGES))).all()


def test_verify_hashes_a_weights_file_again_although_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gpt2-small.safetensors"
    path.write_bytes(b"not really weights" * 100)
    hashed: list[Path] = []
    monkeypatch.setattr(base_weights, "file_sha256", counting_sha256(hashed))
    base = base_weights.describe_pretrained("gpt2-small", path)
    checkpoint = tmp_path / "model.safetensors"

    base_weights.check_pretrained_file(base, path, checkpoint)
    assert len(hashed) == 1  # remembered
    base_weights.check_pretrained_file(base, path, checkpoint, verify=True)
    assert len(hashed) == 2


def test_a_random_base_is_kept_only_if_it_reads_back_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    tensors = {"tok_emb.weight": torch.arange(12.0).reshape(3, 4)}
    base = BaseWeights("random", "gpt2-small", tensors_sha256(tensors.items()), seed=1, init="gpt2")
    config = {"emb_dim": 4}
    real_save_file = base_weights.save_file

    def save_wrongly(values: dict[str, torch.Tensor], path: str) -> None:
        real_save_file({name: t + 1 for name, t in values.items()}, path)

    monkeypatch.setattr(base_weights, "save_file", save_wrongly)
    keep_random_base(base, config, tensors)
    kept_file = random_base_file({"base": base.to_dict(), "config": config})
    assert recorded_digest(kept_file, "tensors_sha256") is None  # never trusted
    assert kept_random_base(base, config) is None  # so drawn again

    monkeypatch.setattr(base_weights, "save_file", real_save_file)
    keep_random_base(base, config, tensors)
    kept = kept_random_base(base, config)
    assert kept is not None and torch.equal(kept["tok_emb.weight"], tensors["tok_emb.weight"])


def test_a_kept_random_base_changed_in_place_is_trusted_unless_verified(
    lean_run: Path, capsys: pytest.CaptureFixture
) -> None:
    """The documented limit of the remembered hash, and --verify, which lifts it."""
    expected = SpamClassifier.from_pretrained(lean_run, device="cpu").predict_proba(
        list(MESSAGES)
    )  # and the random base is kept
    info = read_classifier_info(lean_run / "model.safetensors")
    kept_file = random_base_file({"base": info.base.to_dict(), "config": info.config.to_dict()})
    before = kept_file.stat()
    data = bytearray(kept_file.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes infinity
    kept_file.write_bytes(bytes(data))
    os.utime(kept_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    # A failing disk changes bytes and no time at all; a test cannot write without moving
    # the change time, so the record is brought up to it.
    remember_digest(kept_file, "tensors_sha256", info.base.sha256)
    try:
        trusted = SpamClassifier.from_pretrained(lean_run, device="cpu")
        assert not np.array_equal(trusted.predict_proba(list(MESSAGES)), expected)

        with pytest.raises(BaseWeightsError) as error:
            SpamClassifier.from_pretrained(lean_run, device="cpu", verify=True)
        message = str(error.value)
        assert message.startswith(f"{kept_file}, the random base gpt-spam keeps")
        assert "delete it" in message
        assert main(["classify", "--verify", "--run-dir", str(lean_run), "hi"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == f"gpt-spam classify: error: {message}\n"
    finally:
        kept_file.unlink()  # drawn and kept again by the next load
