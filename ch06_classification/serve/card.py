"""A run's card: what a trained classifier is, how it was trained, and how well it did.

Everything comes from the run folder as training and evaluation left it: the checkpoint's
description (base weights, the classified token, ``max_length``, the training settings),
``metrics.json`` (accuracy and metrics on each split, how training went), every
``evaluation-*.json`` and every ``*.png`` plot. A folder that lacks some of them (a
``save_pretrained`` folder has no metrics) gives a card without them; a file that cannot
be read is named in ``notes`` instead of failing the server.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ch06_classification.storage.checkpoint import ClassifierInfo
from ch06_classification.storage.safe_files import FileReadError, read_json

# What metrics.json says about how training went (besides the settings and metrics).
TRAINING_FACTS = ("training_path", "examples_seen", "steps", "device", "training_seconds")
# The plots of training first, in the order a reader looks at them; the evaluations' after.
TRAINING_PLOTS = ("loss.png", "accuracy.png")


def run_plots(run_dir: Path) -> dict[str, Path]:
    """The run's PNG plots by file name: training's first, then the others by name."""
    found = {path.name: path for path in sorted(Path(run_dir).glob("*.png")) if path.is_file()}
    first = [name for name in TRAINING_PLOTS if name in found]
    return {name: found[name] for name in [*first, *sorted(set(found) - set(first))]}


def run_card(
    run_dir: Path,
    info: ClassifierInfo,
    threshold: float | None,
    precision: str,
    limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The card of the run in ``run_dir`` whose checkpoint ``info`` describes, served at
    ``threshold`` (None: more than two classes) in ``precision`` (e.g. "float32 (...)"),
    under ``limits`` (what a request may ask, for clients to know)."""
    notes: list[str] = []
    metrics = _read(Path(run_dir) / "metrics.json", notes)
    settings = info.extra.get("settings")
    card: dict[str, Any] = {
        "run": str(run_dir),
        "labels": list(info.labels),
        "threshold": threshold,
        "precision": precision,
        "limits": limits or {},
        "model": {
            "preset": info.model_preset,
            "weights": info.weights,
            "base": info.base.to_dict() if info.base is not None else None,
            "trainable_layers": info.trainable_layers,
            "token_position": info.token_position,
            "average_embeddings": info.average_embeddings,
            "max_length": info.max_length,
            "lora": info.lora,
            "config": info.config.to_dict(),
            # How its shape differs from the preset's (a tiny model of the tests, say).
            "config_overrides": info.config_overrides or {},
        },
        "training": None,
        "accuracy": None,
        "metrics": None,
        "evaluations": [],
        "plots": [{"name": name, "url": f"plots/{name}"} for name in run_plots(run_dir)],
        "notes": notes,
    }
    if isinstance(settings, dict) or isinstance(metrics, dict):
        facts = {key: metrics[key] for key in TRAINING_FACTS if key in metrics} if metrics else {}
        card["training"] = {"settings": settings if isinstance(settings, dict) else {}, **facts}
    if isinstance(metrics, dict):
        card["accuracy"] = metrics.get("accuracy")
        card["metrics"] = metrics.get("metrics")
    for path in sorted(Path(run_dir).glob("evaluation-*.json")):
        report = _read(path, notes)
        if isinstance(report, dict):
            card["evaluations"].append(
                {
                    "file": path.name,
                    "data_dir": report.get("data_dir"),
                    "threshold": report.get("threshold"),
                    "own_split": report.get("own_split"),
                    "sets": report.get("sets"),
                }
            )
    return json_safe(card)


def _read(path: Path, notes: list[str]) -> Any:
    """``path``'s JSON, or None (with a note when it exists but cannot be read)."""
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError, FileReadError) as error:
        notes.append(f"{path.name} cannot be read ({error}); it is left out")
        return None


def json_safe(value: Any) -> Any:
    """``value`` with every float that JSON cannot hold (NaN, infinity: a metric that is
    undefined on a set) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
