"""Lean checkpoints: what training changed, plus a record of the base weights that loading
rebuilds and checks; full checkpoints; save_pretrained / from_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.finetuning.model import build_classifier
from ch06_classification.storage.base_weights import (
    BaseWeightsError,
    describe_pretrained,
    file_sha256,
)
from ch06_classification.storage.checkpoint import (
    ClassifierInfo,
    load_classifier,
    save_checkpoint_folder,
)
from ch06_classification.storage.runs import save_training_run
from gpt.config import get_config
from gpt.errors import UserFacingError
from tests.checkpoints import hf_gpt2, write_openai_checkpoint
from tests.run_cli import gpt_spam
from tests.synthetic_splits import write_synthetic_splits
from tests.tiny_classifier import MESSAGES

TINY = {"emb_dim": 32, "n_layers": 3, "n_heads": 4, "context_length": 64}
LAST_BLOCK = {"trf_blocks.2.", "final_norm.", "out_head."}  # what last_block fine-tunes


def stored_names(folder: Path) -> set[str]:
    with safe_open(folder / "model.safetensors", framework="pt") as file:
        return set(file.keys())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(48, 16, 16))


def train(data_dir: Path, run_dir: Path, **settings) -> SpamClassifier:
    """Fine-tune a tiny random-weights model for one epoch and save the run; returns the
    classifier as training left it (in memory)."""
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=1, lr=1e-3, config_overrides=TINY,
        **settings,
    )  # fmt: skip
    result = fine_tune(settings, log=lambda line: None)
    save_training_run(result, run_dir)
    return SpamClassifier(result.model, result.info)


@pytest.fixture(scope="module")
def lean_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("run")
    return train(data_dir, run_dir), run_dir


def test_a_lean_run_stores_only_the_trained_tensors_and_loads_to_the_same_answers(lean_run):
    trained, run_dir = lean_run
    names = stored_names(run_dir)
    all_names = set(trained.model.state_dict())

    assert names == {n for n in all_names if n.startswith(tuple(LAST_BLOCK))}
    assert "tok_emb.weight" not in names and "trf_blocks.0.att.W_query.weight" not in names
    base = trained.info.base
    assert (base.kind, base.seed, base.init, trained.info.stored) == (
        "random",
        123,
        "gpt2",
        "trained",
    )

    loaded = SpamClassifier.from_pretrained(run_dir, device="cpu")
    np.testing.assert_array_equal(
        loaded.predict_proba(list(MESSAGES)), trained.predict_proba(list(MESSAGES))
    )
    for name, tensor in trained.model.state_dict().items():  # the base, rebuilt exactly
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_a_lean_run_is_a_fraction_of_a_full_one(lean_run, data_dir, tmp_path):
    _, run_dir = lean_run
    full = train(data_dir, tmp_path / "full", full_checkpoint=True)

    assert stored_names(tmp_path / "full") == set(full.model.state_dict())
    lean_size = (run_dir / "model.safetensors").stat().st_size
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    # The 50,257 x 32 token embedding alone is 6.4 MB; the last block, norm and head ~50 kB.
    assert lean_size < full_size / 50


def test_a_random_base_the_seed_no_longer_gives_is_refused(lean_run, tmp_path):
    _, run_dir = lean_run
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    path = edited / "model.safetensors"
    from tests.storage.test_checkpoint_validation import edit_description

    edit_description(path, lambda d: d["base"].update(seed=124))
    (edited / "config.json").unlink()

    with pytest.raises(BaseWeightsError, match=r"seed 124 .* no longer gives") as error:
        load_classifier(edited)
    assert str(path) in str(error.value)


# --- Pretrained base weights ---------------------------------------------------------------


@pytest.fixture
def pretrained_run(tmp_path: Path):
    """A lean checkpoint fine-tuned from a (tiny) OpenAI-layout weights file; returns the
    in-memory classifier, its folder and the weights file."""
    cfg = get_config("gpt2-small", **TINY)
    weights = write_openai_checkpoint(
        hf_gpt2(cfg, seed=5), tmp_path / "weights" / "model.safetensors"
    )
    model = build_classifier("gpt2-small", "pretrained", weights_dir=weights.parent, **TINY)
    with torch.no_grad():  # "training": move what last_block trains
        for name, param in model.named_parameters():
            if name.startswith(tuple(LAST_BLOCK)):
                param.add_(0.1 * torch.randn_like(param))
    info = ClassifierInfo(
        config=model.cfg,
        max_length=20,
        stored="trained",
        base=describe_pretrained("gpt2-small", weights),
    )
    folder = save_checkpoint_folder(model, info, tmp_path / "run")
    return SpamClassifier(model, info), folder, weights


def test_a_pretrained_base_is_found_where_training_found_it_and_hash_checked(pretrained_run):
    trained, folder, weights = pretrained_run
    assert trained.info.base.sha256 == file_sha256(weights)
    assert trained.info.base.file == str(weights.resolve())
    expected = trained.predict_proba(list(MESSAGES))

    recorded = SpamClassifier.from_pretrained(folder, device="cpu")  # the file training used
    given = SpamClassifier.from_pretrained(folder, device="cpu", weights_dir=weights.parent)

    np.testing.assert_array_equal(recorded.predict_proba(list(MESSAGES)), expected)
    np.testing.assert_array_equal(given.predict_proba(list(MESSAGES)), expected)


def test_other_base_weights_are_refused_in_one_line(pretrained_run, tmp_path, monkeypatch):
    _, folder, _ = pretrained_run
    cfg = get_config("gpt2-small", **TINY)
    other = write_openai_checkpoint(hf_gpt2(cfg, seed=6), tmp_path / "other" / "model.safetensors")

    with pytest.raises(BaseWeightsError) as error:
        load_classifier(folder, weights_dir=other.parent)
    message = str(error.value)
    assert "\n" not in message
    assert str(folder / "model.safetensors") in message and str(other) in message
    assert "SHA-256" in message

    monkeypatch.setenv("GPT2_WEIGHTS_DIR", str(other.parent))  # found as training finds it
    with pytest.raises(BaseWeightsError, match="SHA-256"):
        load_classifier(folder)


def test_the_cli_refuses_other_base_weights_in_one_line(pretrained_run, tmp_path):
    _, folder, weights = pretrained_run
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # a flipped file

    result = gpt_spam("classify", "--checkpoint", folder, "hello", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "gpt-spam classify: error:" in result.stderr and "SHA-256" in result.stderr


# --- save_pretrained / from_pretrained -----------------------------------------------------


def test_save_pretrained_writes_a_config_json_and_loads_back(pretrained_run, tmp_path):
    trained, _, _ = pretrained_run
    folder = trained.save_pretrained(tmp_path / "saved")

    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"}
    assert config["label2id"] == {"ham": 0, "spam": 1}
    assert (config["preset"], config["token_position"], config["max_length"]) == (
        "gpt2-small",
        "flexible",
        20,
    )
    loaded = SpamClassifier.from_pretrained(folder, device="cpu")
    assert loaded.info == trained.info
    np.testing.assert_array_equal(
        loaded.predict_proba(list(MESSAGES)), trained.predict_proba(list(MESSAGES))
    )


def test_a_full_save_needs_no_base_weights(pretrained_run, tmp_path):
    trained, _, weights = pretrained_run
    folder = trained.save_pretrained(tmp_path / "full", full=True)
    weights.unlink()  # the machine it moves to has no base weights

    loaded = SpamClassifier.from_pretrained(folder, device="cpu")

    assert loaded.info.stored == "full"
    assert stored_names(folder) == set(trained.model.state_dict())
    np.testing.assert_array_equal(
        loaded.predict_proba(list(MESSAGES)), trained.predict_proba(list(MESSAGES))
    )
    with pytest.raises(UserFacingError, match="no weights"):  # while the lean one needs them
        load_classifier(trained.save_pretrained(tmp_path / "lean"), weights_dir=weights.parent)
