"""A run's card: what the run folder holds, and no more; a file that cannot be read is a
note, not a failure."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ch06_classification.serve.card import json_safe, run_card, run_plots
from ch06_classification.storage.checkpoint import read_classifier_info
from tests.tiny_classifier import write_tiny_checkpoint


def test_a_trained_and_evaluated_run_has_everything(trained_run: Path) -> None:
    info = read_classifier_info(trained_run / "model.safetensors")
    metrics = json.loads((trained_run / "metrics.json").read_text())

    card = run_card(trained_run, info, 0.5, "float32")

    assert card["model"]["base"] == info.base.to_dict()
    assert card["model"]["config_overrides"] == {  # tiny, not gpt2-small's size
        "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2
    }  # fmt: skip
    assert card["training"]["settings"] == info.extra["settings"]
    assert card["training"]["steps"] == metrics["steps"]
    assert card["accuracy"] == metrics["accuracy"] and card["metrics"] == metrics["metrics"]
    [evaluation] = card["evaluations"]
    report = json.loads(next(trained_run.glob("evaluation-*.json")).read_text())
    assert evaluation["sets"] == report["sets"] and evaluation["threshold"] == 0.5
    assert [plot["name"] for plot in card["plots"]] == list(run_plots(trained_run))
    assert card["notes"] == []
    json.dumps(card, allow_nan=False)  # what the server sends must be strict JSON


def test_a_bare_checkpoint_folder_has_only_its_model(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path)

    card = run_card(tmp_path, read_classifier_info(checkpoint), 0.5, "float32")

    assert card["model"]["preset"] == "gpt2-small" and card["labels"] == ["ham", "spam"]
    assert card["training"] is None and card["accuracy"] is None
    assert card["evaluations"] == [] and card["plots"] == [] and card["notes"] == []


def test_a_damaged_file_is_a_note_and_an_undefined_metric_is_null(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path)
    info = read_classifier_info(checkpoint)  # loaded while the run was whole
    (tmp_path / "metrics.json").write_text("{not json")
    report = {"threshold": 0.5, "sets": {"test": {"accuracy": 0.5, "roc_auc": math.nan}}}
    (tmp_path / "evaluation-data-t0.5.json").write_text(
        json.dumps(report)
    )  # NaN, as Python writes it

    card = run_card(tmp_path, info, 0.5, "float32")

    assert card["accuracy"] is None
    [note] = card["notes"]
    assert note.startswith("metrics.json cannot be read")
    assert card["evaluations"][0]["sets"]["test"] == {"accuracy": 0.5, "roc_auc": None}
    json.dumps(card, allow_nan=False)


def test_json_safe_replaces_only_what_json_cannot_hold() -> None:
    value = {"a": [1.5, math.inf, -math.inf, math.nan], "b": {"c": (2, "x")}, 3: None}

    assert json_safe(value) == {"a": [1.5, None, None, None], "b": {"c": [2, "x"]}, "3": None}
