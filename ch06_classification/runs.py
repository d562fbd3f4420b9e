"""Run folders: where each training run keeps its checkpoint, metrics and plots."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ch06_classification.checkpoint import CHECKPOINT_NAME, save_checkpoint_folder
from ch06_classification.datafiles import atomic_output
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.finetune import TrainingResult

DEFAULT_RUNS_DIR = Path("runs")
# The fingerprints (SHA-256) of the texts a run was trained on; see evaluation.py.
TRAINING_TEXTS_FILE = "training_texts.json"


def new_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """A fresh ``runs/<timestamp>/`` folder (timestamps sort in the order runs were made)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs_dir = Path(runs_dir)
    run_dir, suffix = runs_dir / stamp, 1
    while run_dir.exists():  # two runs within one second
        suffix += 1
        run_dir = runs_dir / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def latest_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The most recent run folder that holds a finished checkpoint."""
    runs_dir = Path(runs_dir)
    finished = sorted(
        (path.parent for path in runs_dir.glob(f"*/{CHECKPOINT_NAME}")),
        key=lambda run: (run / CHECKPOINT_NAME).stat().st_mtime,
    )
    if not finished:
        raise UserFacingError(
            f"no trained model in {runs_dir}/: run `gpt-spam train` (scripts/03_train.py) "
            "first, or pass --run-dir/--checkpoint"
        )
    return finished[-1]


def find_run(path: str | Path | None, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The run named by ``--run-dir`` (a run folder or its checkpoint file), or the latest."""
    if path is None:
        return latest_run_dir(runs_dir)
    path = Path(path)
    if not path.exists():
        raise UserFacingError(f"--run-dir {path} does not exist")
    return path


def write_json(path: str | Path, values: Any) -> Path:
    """Write ``values`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_training_texts(run_dir: Path, texts: list[str], extra: dict[str, Any]) -> Path:
    """Record what the run was trained on: the SHA-256 of each distinct training text."""
    from ch06_classification.splits import text_fingerprints

    return write_json(
        run_dir / TRAINING_TEXTS_FILE,
        {
            "data_dir": extra.get("settings", {}).get("data_dir"),
            "rows": len(texts),
            "sha256": text_fingerprints(texts),
        },
    )


def read_training_texts(run_dir: Path) -> set[str] | None:
    """The fingerprints of a run's training texts; None for a run that did not record them."""
    path = Path(run_dir) / TRAINING_TEXTS_FILE
    if not path.is_file():
        return None
    try:
        return set(read_json(path)["sha256"])
    except (ValueError, KeyError, TypeError):
        raise UserFacingError(
            f"{path} is damaged (not a list of fingerprints): retrain the run"
        ) from None


def save_training_run(
    result: TrainingResult, run_dir: str | Path, save_checkpoint: bool = True
) -> Path:
    """Write a finished run: checkpoint (model.safetensors, config.json), metrics.json,
    history.json, loss and accuracy plots.

    ``save_checkpoint=False`` leaves the model out (experiments that only need the figures).
    """
    from ch06_classification.plots import plot_values

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if save_checkpoint:
        save_checkpoint_folder(result.model, result.info, run_dir)
    write_training_texts(run_dir, result.training_texts, result.info.extra)
    history = result.history
    write_json(run_dir / "history.json", history.to_dict())
    write_json(
        run_dir / "metrics.json",
        {
            "accuracy": result.accuracies,
            "metrics": result.metrics,
            "training_path": result.path,
            "training_path_description": result.path_description,
            "prefix_cache_seconds": round(result.prefix_seconds, 3),
            "training_seconds": round(result.train_seconds, 3),
            "recipe_seconds": round(result.recipe_seconds, 3),
            "examples_seen": history.examples_seen,
            "steps": history.steps,
            "device": result.device,
            "torch_version": torch.__version__,
            "settings": result.info.extra.get("settings", {}),
        },
    )
    # Evaluation points sit after a whole number of steps; epochs = steps / steps per epoch.
    steps_per_epoch = history.steps / max(1, len(history.train_accs))
    epochs_seen = [(step + 1) / steps_per_epoch for step in history.eval_steps]
    plot_values(
        epochs_seen,
        history.eval_examples_seen,
        history.train_losses,
        history.val_losses,
        label="loss",
        out_dir=run_dir,
    )
    epochs = list(range(1, len(history.train_accs) + 1))
    examples_per_epoch = history.examples_seen / max(1, len(epochs))
    plot_values(
        epochs,
        [e * examples_per_epoch for e in epochs],
        history.train_accs,
        history.val_accs,
        label="accuracy",
        out_dir=run_dir,
    )
    return run_dir
