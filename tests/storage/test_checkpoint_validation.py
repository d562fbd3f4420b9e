"""Edited or damaged checkpoints are refused where they are read, before expensive work,
in one line naming the file and the problem (issue 19: "nothing silently wrong")."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ch06_classification.cli.main import main
from ch06_classification.finetuning.model import build_classifier
from ch06_classification.storage import checkpoint as checkpoint_module
from ch06_classification.storage.base_weights import BaseWeights
from ch06_classification.storage.checkpoint import (
    CheckpointError,
    ClassifierInfo,
    load_classifier,
    parse_description,
    read_classifier_info,
    save_checkpoint_folder,
)
from ch06_classification.storage.safe_files import FileReadError
from gpt.config import GPTConfig, get_config
from tests.run_cli import gpt_spam
from tests.tiny_classifier import write_tiny_checkpoint


def edit_description(path: Path, edit: Callable[[dict], object]) -> Path:
    """Change a checkpoint's description in place, as someone with a text editor would:
    the tensors stay as they are."""
    with safe_open(path, framework="pt") as file:
        description = json.loads(file.metadata()["gpt_spam"])
    edit(description)
    save_file(load_file(path), str(path), metadata={"gpt_spam": json.dumps(description)})
    return path


class Sentinel(Exception):
    """Raised by the expensive step, to show whether reading got that far."""


@pytest.fixture
def no_base_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    def rebuild(*args, **kwargs):
        raise Sentinel

    monkeypatch.setattr(checkpoint_module, "_rebuild_base", rebuild)


def gpt2_small_lean_checkpoint(folder: Path) -> Path:
    """A lean gpt2-small checkpoint (the 2-way head on a random base), written without
    building gpt2-small: its tensors are the head's, its description the real one's."""
    info = ClassifierInfo(
        config=get_config("gpt2-small"),
        max_length=120,
        weights="random",
        trainable_layers="last_layer",
        stored="trained",
        base=BaseWeights("random", "gpt2-small", "0" * 64, seed=123, init="gpt2"),
    )
    tensors = {"out_head.weight": torch.randn(2, 768), "out_head.bias": torch.zeros(2)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file(tensors, str(path), metadata={"gpt_spam": info.to_json()})
    return path


def test_gpt2_small_with_n_heads_edited_from_12_to_16_is_refused_before_building(
    tmp_path: Path, no_base_rebuild: None
) -> None:
    """The tensors of 16 heads of 48 have the shapes of 12 heads of 64: only the preset
    can tell, and it must, since the answers would silently change."""
    path = gpt2_small_lean_checkpoint(tmp_path)
    with pytest.raises(Sentinel):  # untouched, it passes every check up to the rebuild
        load_classifier(path)

    edit_description(path, lambda d: d["config"].update(n_heads=16))

    with pytest.raises(CheckpointError) as error:
        load_classifier(path)
    message = str(error.value)
    assert message.startswith(str(path))
    assert "config n_heads is 16 but gpt2-small has 12" in message
    assert "\n" not in message


def test_the_command_refuses_the_edited_checkpoint_in_one_line(tmp_path: Path) -> None:
    path = gpt2_small_lean_checkpoint(tmp_path / "run")
    edit_description(path, lambda d: d["config"].update(n_heads=16))

    result = gpt_spam("classify", "--checkpoint", path.parent, "hello", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"gpt-spam classify: error: {path}")
    assert "n_heads is 16" in result.stderr


def deeply_nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def drop(key: str) -> Callable[[dict], object]:
    return lambda d: d.pop(key)


def setting(key: str, value: object) -> Callable[[dict], object]:
    return lambda d: d.update({key: value})


def config(key: str, value: object) -> Callable[[dict], object]:
    return lambda d: d["config"].update({key: value})


EDITS = {
    # consistency with the preset (the tiny model records its overrides: n_heads 4)
    "n_heads doubled": (config("n_heads", 8), "config n_heads is 8 but gpt2-small"),
    "a wider model": (config("emb_dim", 64), "config emb_dim is 64 but gpt2-small"),
    "overrides to match": (
        lambda d: d["config_overrides"].update(n_heads=8),
        "config n_heads is 4 but gpt2-small with its recorded overrides has 8",
    ),
    # types and values
    "a count as text": (config("n_layers", "2"), "config n_layers is '2'"),
    "a boolean as a count": (config("n_layers", True), "config n_layers is True"),
    "no heads": (config("n_heads", 0), "config n_heads is 0"),
    "dropout 1.5": (config("drop_rate", 1.5), "drop_rate 1.5 is outside [0, 1)"),
    "qkv_bias as text": (config("qkv_bias", "yes"), "qkv_bias is 'yes'"),
    "an unknown implementation": (config("implementation", "fast"), "implementation"),
    "a config entry missing": (lambda d: d["config"].pop("vocab_size"), "config has entries"),
    "negative max_length": (setting("max_length", -1), "max_length -1"),
    "max_length as a float": (setting("max_length", 16.0), "max_length 16.0"),
    "a token position": (setting("token_position", "middle"), "token_position is 'middle'"),
    "one label": (setting("labels", ["spam"]), "labels ['spam'] are not 2 to 1000 different"),
    "the same label twice": (setting("labels", ["spam", "spam"]), "are not 2 to 1000 different"),
    "an unknown preset": (setting("model_preset", "gpt2-huge"), "model_preset is 'gpt2-huge'"),
    "unknown weights": (setting("weights", "imagined"), "weights is 'imagined'"),
    "trainable layers": (setting("trainable_layers", "some"), "trainable_layers is 'some'"),
    "another tokenizer": (setting("tokenizer", "cl100k_base"), "tokenizer 'cl100k_base'"),
    "a padding id outside the vocabulary": (setting("pad_token_id", 60000), "pad_token_id 60000"),
    "extra not an object": (setting("extra", []), "extra is not an object"),
    "an older format": (setting("format_version", 1), "format version 1, expected 2"),
    # Read by json.loads, but deep enough to break what walks it later (asdict, ==).
    "extra nested 500 deep": (
        lambda d: d["extra"].update(deep=deeply_nested(500)),
        "nested more than 100 levels deep",
    ),
    "an entry missing": (drop("max_length"), "lacks ['max_length']"),
    "an unknown entry": (setting("learning_rate", 1), "unknown entries ['learning_rate']"),
    "lean without a base": (setting("stored", "trained"), "no base is recorded"),
    "stored as something else": (setting("stored", "half"), "stored is 'half'"),
    "a base of another preset": (
        setting("base", {"kind": "random", "preset": "gpt2-xl", "sha256": "0" * 64}),
        "base preset differs",
    ),
    "a base hash that is not one": (
        setting("base", {"kind": "random", "preset": "gpt2-small", "sha256": "abc"}),
        "base sha256 'abc' is not a SHA-256",
    ),
    "a random base without seed": (
        setting("base", {"kind": "random", "preset": "gpt2-small", "sha256": "0" * 64}),
        "base seed is None",
    ),
}


@pytest.mark.parametrize("edit", list(EDITS.values()), ids=list(EDITS))
def test_an_edited_description_is_refused_by_name(tmp_path: Path, edit) -> None:
    change, expected = edit
    path = edit_description(write_tiny_checkpoint(tmp_path), change)

    with pytest.raises(CheckpointError) as error:
        read_classifier_info(path)
    message = str(error.value)
    assert message.startswith(f"{path} has an invalid description: ")
    assert expected in message
    assert "\n" not in message


# A value that each declared field refuses, by its name in error messages: "config <entry>"
# for GPTConfig's entries, "base <entry>" for BaseWeights'.
REFUSED = {
    "config": [],
    "max_length": 0,
    "token_position": "middle",
    "labels": ["spam", 1],
    "model_preset": "gpt2-huge",
    "weights": "imagined",
    "trainable_layers": "some",
    "tokenizer": "cl100k_base",
    "pad_token_id": -1,
    "average_embeddings": 1,
    "lora": {"rank": 0, "alpha": 16},  # the rule of an entry inside it
    "config_overrides": {"n_heads": "4"},  # each override is checked as config's entry is
    "stored": "half",
    "base": "random",
    "extra": [],
    "config vocab_size": 0,
    "config context_length": 1.5,
    "config emb_dim": -32,
    "config n_heads": None,
    "config n_layers": True,
    "config drop_rate": 1.0,
    "config qkv_bias": "true",
    "config implementation": "fast",
    "config causal": 0,
    "base kind": "learned",
    "base preset": "gpt2-huge",
    "base sha256": "0" * 63,
    "base seed": "123",
    "base init": "xavier",
    "base file": 3,
}


def declared_fields() -> list[str]:
    """Every field a description holds, by its name in error messages."""
    return [
        *(f.name for f in dataclasses.fields(ClassifierInfo)),
        *(f"config {f.name}" for f in dataclasses.fields(GPTConfig)),
        *(f"base {f.name}" for f in dataclasses.fields(BaseWeights)),
    ]


def test_every_field_of_a_description_has_a_value_it_refuses() -> None:
    """A new field comes with a rule (``checked``), and here with a value it refuses."""
    assert sorted(REFUSED) == sorted(declared_fields())


@pytest.mark.parametrize("name", declared_fields())
def test_each_declared_field_refuses_a_bad_value_by_name(name: str) -> None:
    info = ClassifierInfo(
        config=get_config("gpt2-small", emb_dim=32, n_heads=4, n_layers=2),
        max_length=16,
        weights="random",
        stored="trained",
        base=BaseWeights("random", "gpt2-small", "0" * 64, seed=123, init="gpt2", file="x"),
    )
    description = json.loads(info.to_json())
    assert parse_description(description) == info  # so that the edit alone is refused
    *inside, key = name.split(" ")
    (description[inside[0]] if inside else description)[key] = REFUSED[name]

    with pytest.raises(ValueError) as error:
        parse_description(description)
    assert str(error.value).startswith(f"{name} ")


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '"a string"', "null", "[" * 100_000, '{"a": ' * 100_000]
)
def test_a_description_that_is_not_a_json_object_is_refused(tmp_path: Path, text: str) -> None:
    path = write_tiny_checkpoint(tmp_path)
    save_file(load_file(path), str(path), metadata={"gpt_spam": text})

    with pytest.raises(CheckpointError, match="has an invalid description"):
        read_classifier_info(path)


@pytest.mark.parametrize(
    ("dtype", "name"), [(torch.float64, "F64"), (torch.float16, "F16"), (torch.int64, "I64")]
)
def test_a_tensor_of_another_dtype_is_refused_by_name(tmp_path: Path, dtype, name) -> None:
    path = write_tiny_checkpoint(tmp_path)
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(path)
    tensors["out_head.bias"] = tensors["out_head.bias"].to(dtype)
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(CheckpointError) as error:
        load_classifier(path)
    assert f"{path}: tensor 'out_head.bias' has dtype {name}" in str(error.value)


def test_a_lean_checkpoint_with_a_frozen_tensor_is_refused_before_building(
    tmp_path: Path, no_base_rebuild: None
) -> None:
    path = gpt2_small_lean_checkpoint(tmp_path)
    tensors = load_file(path)
    tensors["final_norm.scale"] = torch.ones(768)  # not trained by last_layer
    with safe_open(path, framework="pt") as file:
        save_file(tensors, str(path), metadata=file.metadata())

    with pytest.raises(CheckpointError, match=r"unexpected tensor 'final_norm\.scale'"):
        load_classifier(path)


def test_an_edited_config_json_is_refused(tmp_path: Path) -> None:
    model = build_classifier("gpt2-small", weights="random", emb_dim=32, n_layers=1, n_heads=4)
    info = ClassifierInfo(config=model.cfg, max_length=16, weights="random")
    folder = save_checkpoint_folder(model, info, tmp_path / "saved")
    assert read_classifier_info(folder) == info

    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "spam", "1": "ham"}  # swapped: every answer reversed
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError) as error:
        read_classifier_info(folder)
    assert str(error.value).startswith(
        f'{folder / "config.json"} says id2label is {{"0": "spam", "1": "ham"}} but '
        f'{folder / "model.safetensors"} says {{"0": "ham", "1": "spam"}}: the folder '
        "was changed after training"
    )
    assert "delete" not in str(error.value)


def swap_labels(description: dict) -> None:
    description["labels"] = description["labels"][::-1]


def test_labels_swapped_in_the_checkpoint_are_refused_naming_both_files(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The checkpoint is the edited file here: config.json is refused beside it, and once
    config.json is gone, the labels the run's metrics.json recorded still are."""
    run_dir = Path(shutil.copytree(tiny_run[0], tmp_path / "run"))
    checkpoint = edit_description(run_dir / "model.safetensors", swap_labels)

    for witness in ("config.json", "metrics.json"):
        with pytest.raises(CheckpointError) as error:
            read_classifier_info(run_dir)
        message = str(error.value)
        assert message.startswith(f"{run_dir / witness} says id2label is ")
        assert f"but {checkpoint} says" in message
        assert "changed after training" in message and "delete" not in message
        assert main(["classify", "--run-dir", str(run_dir), "WIN a prize"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == f"gpt-spam classify: error: {message}\n"
        (run_dir / witness).unlink()  # as the old advice had it: no longer a way round

    assert read_classifier_info(run_dir).labels == ("spam", "ham")  # nothing left to tell


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_a_nested_file_beside_the_checkpoint_is_refused_by_name(
    tiny_run: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    run_dir = Path(shutil.copytree(tiny_run[0], tmp_path / "run"))
    (run_dir / name).write_text("[" * 100_000)

    with pytest.raises(FileReadError) as error:
        read_classifier_info(run_dir)
    assert str(error.value) == (
        f"{run_dir / name} is not valid JSON (nested more than 100 levels deep)"
    )
