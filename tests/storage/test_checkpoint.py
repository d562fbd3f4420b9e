"""Checkpoints: self-describing, atomic, safe to load, and refused when they do not fit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from ch06_classification.finetuning.model import GPTClassifier, build_classifier
from ch06_classification.storage import checkpoint as checkpoint_module
from ch06_classification.storage.checkpoint import (
    CheckpointError,
    ClassifierInfo,
    load_classifier,
    read_classifier_info,
    save_classifier,
)
from gpt.config import GPTConfig

TINY = {"emb_dim": 32, "n_layers": 2, "n_heads": 4, "context_length": 64}


@pytest.fixture
def trained(tmp_path):
    model = build_classifier("gpt2-small", weights="random", seed=3, **TINY).eval()
    with torch.no_grad():  # move the head away from its seeded initial values
        model.out_head.weight.add_(0.5)
    info = ClassifierInfo(
        config=model.cfg,
        max_length=40,
        token_position="flexible",
        weights="random",
        extra={"settings": {"epochs": 5}},
    )
    path = save_classifier(model, info, tmp_path / "run" / "model.safetensors")
    return model, info, path


def test_round_trip_gives_identical_predictions(trained):
    model, info, path = trained
    loaded, loaded_info = load_classifier(path)
    assert loaded_info == info
    assert not loaded.training
    ids = torch.randint(0, 50257, (3, 17), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([17, 5, 9])
    with torch.no_grad():
        expected = GPTClassifier(model)(ids, lengths)
        got = GPTClassifier(loaded)(ids, lengths)
    assert torch.equal(got, expected)


def test_a_run_folder_is_accepted_and_the_description_reads_alone(trained):
    _, info, path = trained
    assert read_classifier_info(path.parent) == info
    assert load_classifier(path.parent)[1].max_length == 40


def test_missing_checkpoint_says_what_to_run(tmp_path):
    with pytest.raises(CheckpointError, match="gpt-spam train"):
        load_classifier(tmp_path / "nothing-here")


def test_truncated_checkpoint_is_refused_by_name(trained):
    _, _, path = trained
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_classifier(path)
    assert str(path) in str(info.value)


def test_mismatched_tensor_is_refused_by_name(trained, tmp_path):
    model, info, _ = trained
    config = GPTConfig(**{**info.config.to_dict(), "emb_dim": 48})
    bigger = dataclasses.replace(info, config=config, config_overrides=None)
    path = save_classifier(model, bigger, tmp_path / "bad.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"does not match the model: '[\w.]+' has shape \(32,?.*the model needs \(48",
    ):
        load_classifier(path)


def test_missing_tensor_is_refused_by_name(trained, tmp_path):
    model, info, _ = trained
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "out_head.bias"}
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path), metadata={"gpt_spam": info.to_json()})
    with pytest.raises(CheckpointError, match=r"lacks 'out_head\.bias'") as error:
        load_classifier(path)
    assert str(path) in str(error.value)


def test_a_plain_safetensors_file_is_not_a_classifier(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"wte.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a gpt-spam classifier checkpoint"):
        load_classifier(path)


def test_a_crash_while_saving_leaves_no_file(trained, tmp_path, monkeypatch):
    model, info, _ = trained

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_classifier(model, info, tmp_path / "new" / "model.safetensors")
    assert list((tmp_path / "new").iterdir()) == []


def test_checkpoint_holds_no_pickled_code(trained):
    """safetensors: an 8-byte header length, then a JSON header, then raw tensor bytes."""
    _, _, path = trained
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    assert data[8:9] == b"{" and data[8 + header_length - 1 : 8 + header_length].strip() in (
        b"}",
        b"",
    )
    assert b"\x80\x04\x95" not in data[: 8 + header_length]  # no pickle protocol-4 header
